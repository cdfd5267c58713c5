"""
Tests for L{txenvoy.router.tcp_upstream}: CONNECT terminated by the router
(Envoy's TCP upstream), driven through the connection manager in memory.
The end-to-end comparison with Envoy 1.40 is
L{tests.e2e.test_dynamic_forward_proxy}.
"""

from twisted.trial.unittest import SynchronousTestCase

from tests.http.hcm_harness import Harness

ROUTES = """
- match: {connect_matcher: {}}
  route: {cluster: origin, upgrade_configs: [{upgrade_type: CONNECT, connect_config: {}}]}
- match: {prefix: "/"}
  route: {cluster: origin}
"""

CONNECT = b"CONNECT 10.0.0.1:443 HTTP/1.1\r\nhost: 10.0.0.1:443\r\n\r\n"
RESET = (b"upstream connect error or disconnect/reset before headers. reset reason: ")


class ConnectTerminationTests(SynchronousTestCase):

    def setUp(self):
        self.h = Harness(self, routes=ROUTES,
                         hcm={"upgrade_configs": [{"upgrade_type": "CONNECT"}]})
        self.down = self.h.connect()

    def test_tunnel(self):
        """
        Envoy 1.40: nothing of the request goes to the host; once connected
        the client gets C{200} with only C{date} and C{server}, then the
        bytes go both ways as they are.
        """
        self.down.send(CONNECT)
        self.assertEqual(self.down.written(), b"")
        up = self.h.upstream()
        self.assertEqual(up.received(), b"")
        head = self.down.written()
        self.assertTrue(head.startswith(b"HTTP/1.1 200 OK\r\n"), head)
        self.assertNotIn(b"x-envoy-upstream-service-time", head)
        self.assertTrue(head.endswith(b"server: envoy\r\n\r\n"), head)
        self.down.send(b"\x16\x03\x01 raw bytes")
        self.assertEqual(up.received(), b"\x16\x03\x01 raw bytes")
        up.respond(b"answer")
        self.assertTrue(self.down.written().endswith(b"\r\n\r\nanswer"))
        self.assertEqual(self.h.stat("cluster.origin.upstream_rq_200"), 1)
        self.assertEqual(self.h.stat("cluster.origin.upstream_rq_pending_total"), 1)

    def test_hostEndsTunnel(self):
        """
        The host's FIN ends the tunnel: the client's connection closes and
        the host's is closed locally, its stream active (Envoy 1.40).
        """
        self.down.send(CONNECT)
        up = self.h.upstream()
        up.respond(b"bye")
        up.protocol.readConnectionLost()
        self.assertTrue(self.down.written().endswith(b"\r\n\r\nbye"))
        self.h.advance(0)
        self.assertTrue(self.down.closed)
        self.assertEqual(self.h.stat("http.ingress.downstream_rq_rx_reset"), 1)
        self.assertTrue(up.transport.disconnecting)

    def test_refused(self):
        """Envoy 1.40: a refused connect is a 503, remote connection failure."""
        self.down.send(CONNECT)
        self.h.upstream(connect=False).fail()
        r = self.down.response()
        self.assertEqual((r.status, r.body), (503, RESET + b"remote connection failure"))
        self.assertEqual(self.h.stat("cluster.origin.upstream_rq_pending_failure_eject"), 1)
        self.assertEqual(self._tcpPools(), {})

    def _tcpPools(self):
        cluster = self.h.dispatcher.clusterManager.getThreadLocalCluster("origin")
        return cluster.httpConnPools.tcpPools

    def test_clientGoesAway(self):
        """The client closing while the host connects abandons the connect."""
        self.down.send(CONNECT)
        self.down.lose()
        self.assertEqual(self.h.stat("cluster.origin.upstream_rq_cancelled"), 1)
        self.assertEqual(self.h.stat("cluster.origin.upstream_cx_active"), 0)
        self.assertEqual(self._tcpPools(), {})

    def test_otherMethods(self):
        """A request with a path is proxied as HTTP by the other route."""
        self.down.send(b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n")
        self.assertTrue(self.h.upstream().received().startswith(b"GET /x HTTP/1.1\r\n"))


class ConnectRefusedTests(SynchronousTestCase):

    def test_notEnabled(self):
        """
        Envoy 1.40: a CONNECT that neither the connection manager's nor the
        route's C{upgrade_configs} enable gets 403 and the connection closes;
        nothing is sent to the host.
        """
        h = Harness(self, routes="""
- match: {connect_matcher: {}}
  route: {cluster: origin}
""")
        down = h.connect()
        down.send(CONNECT)
        r = down.response()
        self.assertEqual((r.status, r.body), (403, b""))
        self.assertEqual(h.upstreams(), [])
        self.assertEqual(h.stat("http.ingress.downstream_cx_upgrades_total"), 0)
