"""
Tests for L{txenvoy.http.mixed_conn_pool}: C{auto_config}'s pool on a
L{MemoryReactorClock}, the handshake's ALPN result set on the fake
transport (the end-to-end test negotiates it for real, over TLS).
"""

from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.http.conn_pool import ClusterPools
from txenvoy.http.http2.options import DEFAULT_HTTP2_OPTIONS
from txenvoy.http.mixed_conn_pool import ALPN_PROTOCOLS, HTTP11, HTTP2, MixedConnPool

from tests.http import test_conn_pool
from tests.http.test_conn_pool import OK, Stream


class MixedPoolTests(SynchronousTestCase):

    # The same cluster, reactor and stats as the HTTP/1.1 pool's tests.
    setUp = test_conn_pool.PoolTests.setUp
    stat = test_conn_pool.PoolTests.stat

    def mixedPool(self):
        pools = self.mixedPools = ClusterPools(self.cluster)
        pools.autoConfig = True
        pools.http2Options = DEFAULT_HTTP2_OPTIONS
        pool = pools.poolFor(self.host)
        self.assertIsInstance(pool, MixedConnPool)
        self.assertEqual(pool.socketOptions.alpnFallback, ALPN_PROTOCOLS)
        return pool

    def establish(self, index, negotiated):
        """Connect attempt C{index}, its handshake having chosen C{negotiated}."""
        factory = self.reactor.tcpClients[index][2]
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        transport.negotiatedProtocol = negotiated
        protocol.makeConnection(transport)
        return protocol, transport

    def test_http11Chosen(self):
        """
        Streams wait for the first handshake; it chose HTTP/1.1, so the
        first stream takes that connection and the others get one each.
        Every connection is counted twice in C{upstream_cx_total}, as
        Envoy's mixed pool counts it.
        """
        pool = self.mixedPool()
        streams = [Stream() for _ in range(3)]
        for s in streams:
            self.assertIsNotNone(pool.newStream(s))
        self.assertEqual(len(self.reactor.tcpClients), 1)
        protocol, transport = self.establish(0, HTTP11)
        self.assertEqual(pool.protocol, HTTP11)
        self.assertEqual([s.events for s in streams], [["ready"], [], []])
        self.assertEqual(len(self.reactor.tcpClients), 3)
        self.establish(1, HTTP11)
        self.establish(2, HTTP11)
        self.assertEqual([s.events for s in streams], [["ready"]] * 3)
        streams[0].send()
        self.assertTrue(transport.value().startswith(b"GET / HTTP/1.1\r\n"))
        protocol.dataReceived(OK)
        self.assertEqual(streams[0].events[-1], "complete")
        self.assertEqual({name: self.stat(name) for name in (
            "upstream_cx_http1_total", "upstream_cx_http2_total", "upstream_cx_total",
            "upstream_rq_pending_total", "upstream_rq_pending_active")}, {
            "upstream_cx_http1_total": 3, "upstream_cx_http2_total": 0,
            "upstream_cx_total": 6, "upstream_rq_pending_total": 3,
            "upstream_rq_pending_active": 0})

    def test_noAlpnIsHttp11(self):
        """A host that chose nothing speaks HTTP/1.1."""
        pool = self.mixedPool()
        s = Stream()
        pool.newStream(s)
        self.establish(0, None)
        self.assertEqual((pool.protocol, s.events), (HTTP11, ["ready"]))

    def test_h2Chosen(self):
        """
        The handshake chose h2: every waiting stream goes on that one
        connection, and so do later ones.
        """
        pool = self.mixedPool()
        streams = [Stream() for _ in range(3)]
        for s in streams:
            pool.newStream(s)
        _, transport = self.establish(0, HTTP2)
        self.assertEqual([s.events for s in streams], [["ready"]] * 3)
        self.assertTrue(transport.value().startswith(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
        later = Stream()
        self.assertIsNone(pool.newStream(later))
        self.assertEqual(later.events, ["ready"])
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.assertEqual((self.stat("upstream_cx_http2_total"), self.stat("upstream_cx_total")),
                         (1, 2))

    def test_connectFailed(self):
        """
        The first connection failed: its waiting streams fail with the
        reason, and the next stream tries again.
        """
        pool = self.mixedPool()
        a, b = Stream(), Stream()
        pool.newStream(a)
        pool.newStream(b)
        self.reactor.tcpClients[0][2].clientConnectionFailed(
            None, Failure(ConnectionRefusedError()))
        self.assertEqual([a.events, b.events], [[("failure", "remote connection failure")]] * 2)
        self.assertEqual(self.stat("upstream_rq_pending_failure_eject"), 2)
        self.assertIsNotNone(pool.lastFailedConnection)
        self.assertIsNone(pool.protocol)
        pool.newStream(Stream())
        self.assertEqual(len(self.reactor.tcpClients), 2)
        self.assertEqual(self.stat("upstream_cx_active"), 1)

    def test_cancelWhileNegotiating(self):
        """A stream withdrawn before the handshake is counted and never served."""
        pool = self.mixedPool()
        a, b = Stream(), Stream()
        pool.newStream(a).cancel()
        pool.newStream(b)
        self.assertEqual((self.stat("upstream_rq_cancelled"),
                          self.stat("upstream_rq_pending_active")), (1, 1))
        self.establish(0, HTTP11)
        self.assertEqual((a.events, b.events), ([], ["ready"]))
        self.assertEqual(len(self.reactor.tcpClients), 1)

    def test_droppedWhenIdle(self):
        """
        Once its connections are gone and no stream waits, the pool is
        dropped, as Envoy drops idle pools; the next stream negotiates again.
        """
        pool = self.mixedPool()
        s = Stream()
        pool.newStream(s)
        protocol, _ = self.establish(0, HTTP11)
        s.send()
        protocol.dataReceived(OK)
        self.assertIs(self.mixedPools.poolFor(self.host), pool)
        protocol.connectionLost(Failure(ConnectionDone()))
        again = self.mixedPools.poolFor(self.host)
        self.assertIsNot(again, pool)
        self.assertIsNone(again.protocol)

    def test_droppedAfterFailedConnect(self):
        """A first connection that failed leaves nothing behind."""
        pool = self.mixedPool()
        pool.newStream(Stream())
        self.reactor.tcpClients[0][2].clientConnectionFailed(
            None, Failure(ConnectionRefusedError()))
        self.assertIsNot(self.mixedPools.poolFor(self.host), pool)
