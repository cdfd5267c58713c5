"""
End-to-end comparison of C{envoy.filters.http.dynamic_forward_proxy} with
the C{envoy.clusters.dynamic_forward_proxy} cluster and its DNS cache: a
real C{twistd -n envoy} and a real Envoy 1.40 with the same config, asked
for the same hosts (by name, by IPv4 literal, by an IPv6 literal the
cache's C{V4_ONLY} family refuses, by a name that does not resolve, and
for a route whose cluster is a static one), and
C{envoy.filters.network.sni_dynamic_forward_proxy} in front of the same
cluster for TLS connections by their SNI. Compared: the replies, what
the origin received, which connections reached the upstream and the
C{dns_cache} stats. A third listener terminates C{CONNECT} (a
C{connect_matcher} route whose C{upgrade_configs} has a C{connect_config})
into TCP tunnels to the hosts the same kind of cluster resolves.
"""

import re
import socket

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.configs import bootstrap, cluster, httpFilter, httpListener
from tests.e2e.harness import (
    DeadPort,
    Recorder,
    SharedFixture,
    Upstream,
    adminStats,
    echoHandler,
    exchangeToClose,
    freePort,
    httpOrigin,
    startProxy,
)
from tests.e2e.test_ext_authz import _masked, _originHandler, _seen
from tests.e2e.test_sni_cluster import _ask, _tagAfterHello

def _dfpFilter(cache):
    return httpFilter("envoy.filters.http.dynamic_forward_proxy",
                      "envoy.extensions.filters.http.dynamic_forward_proxy.v3.FilterConfig", """
        dns_cache_config:
          name: %s
          dns_lookup_family: V4_ONLY
        """ % (cache,))


def _dfpCluster(name, cache):
    return """
        - name: %s
          lb_policy: CLUSTER_PROVIDED
          cluster_type:
            name: envoy.clusters.dynamic_forward_proxy
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.clusters.dynamic_forward_proxy.v3.ClusterConfig
              dns_cache_config:
                name: %s
                dns_lookup_family: V4_ONLY
        """ % (name, cache)


CONFIG = bootstrap(
    listeners=[
        httpListener("proxy", "%(port)d", statPrefix="dfp", routes="""
            - match: { prefix: "/static" }
              route: { cluster: origin }
            - match: { prefix: "/" }
              route: { cluster: dynamic }
            """, httpFilters=_dfpFilter("cache")),
        """
        - name: sni
          address:
            socket_address: { address: 127.0.0.1, port_value: %(sni)d }
          listener_filters:
          - name: envoy.filters.listener.tls_inspector
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector
          filter_chains:
          - filters:
            - name: envoy.filters.network.sni_dynamic_forward_proxy
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.sni_dynamic_forward_proxy.v3.FilterConfig
                port_value: %(tagged)d
                dns_cache_config:
                  name: cache
                  dns_lookup_family: V4_ONLY
            - name: envoy.filters.network.tcp_proxy
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
                stat_prefix: sni
                cluster: dynamic
        """,
        httpListener("connect", "%(connect)d", routes="""
            - match: { connect_matcher: {} }
              route:
                cluster: tunnel
                upgrade_configs:
                - upgrade_type: CONNECT
                  connect_config: {}
            - match: { prefix: "/" }
              route: { cluster: tunnel }
            """, httpFilters=_dfpFilter("tunnels"), hcm="""
            upgrade_configs:
            - upgrade_type: CONNECT
            """),
    ],
    clusters=[_dfpCluster("tunnel", "tunnels"), _dfpCluster("dynamic", "cache"),
              cluster("origin", connectTimeout=None)])


def _get(path, host):
    return ("GET %s HTTP/1.1\r\nhost: %s\r\nconnection: close\r\n\r\n" % (path, host)).encode()


class DynamicForwardProxySideBySideTests(SharedFixture, SynchronousTestCase):
    """Envoy 1.40 and txenvoy, the same dynamic forward proxy config."""

    maxDiff = None

    @classmethod
    def startFixture(cls):
        cls.originSeen = Recorder()
        cls.origin = httpOrigin(_originHandler(cls.originSeen))
        cls.tagged = Upstream(_tagAfterHello(b"tagged"))
        cls.echo = Upstream(echoHandler)
        cls.dead = DeadPort()
        cls.proxies = []
        try:
            for real in (True, False):
                ports = {"admin": freePort(), "port": freePort(), "sni": freePort(),
                         "connect": freePort(),
                         "origin": cls.origin.server_address[1], "tagged": cls.tagged.port}
                cls.proxies.append((startProxy(real, CONFIG % ports, ports["port"],
                                               ports["admin"]), ports))
        except BaseException:
            cls.stopFixture()
            raise

    @classmethod
    def stopFixture(cls):
        for proxy, _ in cls.proxies:
            proxy.stop()
        cls.tagged.stop()
        cls.echo.stop()
        cls.dead.close()
        cls.origin.shutdown()
        cls.origin.server_close()

    def test_sideBySide(self):
        """
        The same replies and origin requests for each host, then the same
        C{dns_cache.cache.*} stats.
        """
        origin = self.origin.server_address[1]
        cases = [("/a", "localhost:%d" % (origin,)), ("/b", "localhost:%d" % (origin,)),
                 ("/c", "127.0.0.1:%d" % (origin,)), ("/d", "[::1]:%d" % (origin,)),
                 ("/e", "nonexistent.invalid"), ("/static", "nonexistent.invalid")]
        results = []
        for proxy, ports in self.proxies:
            seen = []
            for path, host in cases:
                reply = _masked(exchangeToClose(ports["port"], _get(path, host)))
                reply = re.sub(rb":%d\b" % (origin,), b":ORIGIN", reply)
                seen.append((reply, _seen(self.originSeen.take())))
            # sni_dynamic_forward_proxy: the SNI and port_value pick the host.
            for name in ("localhost", "nonexistent.invalid", "localhost", None):
                seen.append(_ask(ports["sni"], name))
            stats = {name: value for name, value in adminStats(ports["admin"]).items()
                     if name.startswith("dns_cache.cache.")}
            # Envoy's c-ares resolver counts a second query of a name that
            # does not exist as a success without addresses, or not,
            # depending on the resolver's state: only the sum is compared.
            stats["answers"] = (stats.pop("dns_cache.cache.dns_query_success")
                                + stats.pop("dns_cache.cache.dns_query_failure"))
            results.append((seen, stats))
        self.assertEqual(results[1], results[0])

    def test_connect(self):
        """
        Envoy's CONNECT termination (its TCP upstream): C{200} with only
        C{date} and C{server} once the tunnel is up, the bytes relayed both
        ways; the client's FIN (HTTP/1.1 has no half-close) or the host's
        ends the tunnel, counted as a downstream reset and a local close
        with an active request; a host that refuses gets Envoy's 503
        C{remote connection failure}, a name that does not resolve the
        filter's 503 C{DNS resolution failure}. The same replies and the
        same C{cluster.tunnel} and C{http.connect} counters from both
        proxies.
        """
        echo, tagged, dead = self.echo.port, self.tagged.port, self.dead.port
        results = []
        for proxy, ports in self.proxies:
            seen = [_tunnel(ports["connect"], "127.0.0.1:%d" % (echo,), b"hello"),
                    _tunnel(ports["connect"], "127.0.0.1:%d" % (tagged,), b"hi", False),
                    _tunnel(ports["connect"], "127.0.0.1:%d" % (dead,), b""),
                    _tunnel(ports["connect"], "nonexistent.invalid:80", b"")]
            stats = {name: value for name, value in adminStats(ports["admin"]).items()
                     if value and (name.startswith(("cluster.tunnel.upstream_rq",
                                                    "http.connect.downstream_rq",
                                                    "http.connect.downstream_cx_upgrades",
                                                    "http.connect.rq_"))
                                   or name in _TUNNEL_CX_STATS)}
            results.append((seen, stats))
        self.assertEqual(results[1], results[0])
        seen, stats = results[1]
        self.assertEqual(seen[0], b"HTTP/1.1 200 OK\r\nserver: envoy\r\n\r\nhello")
        self.assertEqual(seen[1], b"HTTP/1.1 200 OK\r\nserver: envoy\r\n\r\ntagged")
        self.assertIn(b"reset reason: remote connection failure", seen[2])
        self.assertIn(b"DNS resolution failure", seen[3])
        self.assertEqual((stats["cluster.tunnel.upstream_rq_200"],
                          stats["cluster.tunnel.upstream_rq_503"],
                          stats["cluster.tunnel.upstream_cx_connect_fail"],
                          stats["cluster.tunnel.upstream_cx_tx_bytes_total"],
                          stats["http.connect.downstream_rq_rx_reset"]), (2, 1, 1, 7, 4))


_TUNNEL_CX_STATS = frozenset("cluster.tunnel.upstream_cx_" + name for name in (
    "total", "active", "connect_fail", "destroy", "destroy_local", "destroy_remote",
    "destroy_with_active_rq", "destroy_local_with_active_rq", "rx_bytes_total",
    "tx_bytes_total"))


def _tunnel(port, authority, send, halfClose=True):
    """
    C{CONNECT authority} through the proxy; once answered, send C{send}
    and read its answer, then (with C{halfClose}) send FIN, and read to
    the end. The reply, its C{date} masked.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock.sendall(("CONNECT %s HTTP/1.1\r\nhost: %s\r\n\r\n" % (authority, authority))
                     .encode())
        reply = sock.recv(65536)
        if send:
            sock.sendall(send)
            reply += sock.recv(65536)
        if halfClose:
            sock.shutdown(socket.SHUT_WR)
        while True:
            piece = sock.recv(65536)
            if not piece:
                break
            reply += piece
    finally:
        sock.close()
    return _masked(reply)
