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
import time

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, ResponseReceived, StreamEnded, StreamReset

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
        httpListener("connect2", "%(connect2)d", routes="""
            - match: { connect_matcher: {} }
              route:
                cluster: tunnel2
                upgrade_configs:
                - upgrade_type: CONNECT
                  connect_config: {}
            - match: { prefix: "/post" }
              route:
                cluster: tunnel2
                upgrade_configs:
                - upgrade_type: CONNECT
                  connect_config: { allow_post: true }
            - match: { prefix: "/" }
              route: { cluster: tunnel2 }
            """, httpFilters=_dfpFilter("tunnels2"), hcm="""
            http2_protocol_options: { allow_connect: true }
            """),
    ],
    clusters=[_dfpCluster("tunnel", "tunnels"), _dfpCluster("dynamic", "cache"),
              _dfpCluster("tunnel2", "tunnels2"), cluster("origin", connectTimeout=None)])


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
                         "connect": freePort(), "connect2": freePort(),
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


    def test_connectOverHttp2(self):
        """
        CONNECT from an HTTP/2 client (Envoy 1.40 with C{allow_connect}):
        C{200} once the tunnel is up; the client's C{END_STREAM} half-closes
        the tunnel and the host's FIN ends the response (the host's close,
        no request active); a host that closes first ends the response and
        the stream is reset; a refused host and a name that does not
        resolve get Envoy's 503. A POST on a route whose C{connect_config}
        has C{allow_post} is relayed the same way (HTTP/1.1 and HTTP/2).
        The same frames, replies and C{cluster.tunnel2} / C{http.connect2}
        counters from both proxies.
        """
        echo, tagged, dead = self.echo.port, self.tagged.port, self.dead.port
        results = []
        for proxy, ports in self.proxies:
            port = ports["connect2"]
            seen = [_h2Tunnel(port, "127.0.0.1:%d" % (echo,), b"hello"),
                    _h2Tunnel(port, "127.0.0.1:%d" % (tagged,), b"hi", end=False),
                    _h2Tunnel(port, "127.0.0.1:%d" % (dead,), b""),
                    _h2Tunnel(port, "nonexistent.invalid:80", b""),
                    _h2Tunnel(port, "127.0.0.1:%d" % (echo,), b"posted", post=True),
                    _masked(exchangeToClose(port, (
                        "POST /post HTTP/1.1\r\nhost: 127.0.0.1:%d\r\ncontent-length: 5\r\n"
                        "connection: close\r\n\r\nhello" % (echo,)).encode()))]
            # The last tunnel's close, and the last client's, may still be
            # on their way.
            stats = _waitStats(ports["admin"], ("cluster.tunnel2.upstream_", "http.connect2."),
                               "cluster.tunnel2.upstream_cx_destroy", 5, "http.connect2.")
            results.append((seen, stats))
        self.assertEqual(results[1], results[0])
        seen, stats = results[1]
        self.assertEqual(seen[0], [("headers", [(b":status", b"200"), (b"server", b"envoy")]),
                                   ("data", b"hello"), "end"])
        self.assertEqual(seen[2][-1], ("reset", 10))     # CONNECT_ERROR
        self.assertEqual((stats["cluster.tunnel2.upstream_cx_destroy_remote"],
                          stats["cluster.tunnel2.upstream_cx_destroy_with_active_rq"]), (4, 1))


def _waitStats(admin, prefixes, name, value, closed=None, timeout=10.0):
    """
    The non-zero stats under C{prefixes}, once C{name} reaches C{value}
    (and, with C{closed}, every downstream connection of the connection
    manager with that prefix ended).
    """
    deadline = time.time() + timeout
    while True:
        stats = {k: v for k, v in adminStats(admin).items()
                 if v and k.startswith(prefixes) and "_bytes_" not in k and "_ms" not in k}
        ended = closed is None or (stats.get(closed + "downstream_cx_destroy")
                                   == stats.get(closed + "downstream_cx_total"))
        if (stats.get(name, 0) >= value and ended) or time.time() > deadline:
            return stats
        time.sleep(0.02)


def _h2Tunnel(port, authority, send, end=True, post=False):
    """
    C{CONNECT authority} (or a C{POST /post} to it) from an HTTP/2 client:
    once answered, send C{send} and read until some data comes back, then
    (with C{end}) end the stream; read until the stream ends. The frames
    seen: C{("headers", [...])} without C{date}, C{("data", bytes)},
    C{"end"}, C{("reset", code)}.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    conn.initiate_connection()
    if post:
        head = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/post"),
                (b":authority", authority.encode())]
    else:
        head = [(b":method", b"CONNECT"), (b":authority", authority.encode())]
    conn.send_headers(1, head)
    sock.sendall(conn.data_to_send())
    seen = []

    def pump(done):
        while not done():
            data = sock.recv(65536)
            if not data:
                seen.append("eof")
                return
            for event in conn.receive_data(data):
                if isinstance(event, ResponseReceived):
                    seen.append(("headers", sorted(
                        (k, v) for k, v in event.headers if k != b"date")))
                elif isinstance(event, DataReceived):
                    seen.append(("data", event.data))
                    conn.acknowledge_received_data(event.flow_controlled_length, 1)
                elif isinstance(event, StreamEnded):
                    seen.append("end")
                elif isinstance(event, StreamReset):
                    seen.append(("reset", int(event.error_code)))
            sock.sendall(conn.data_to_send())

    def finished():
        return seen and (seen[-1] in ("end", "eof") or seen[-1][0] == "reset")

    try:
        pump(lambda: seen)
        if seen[0] == ("headers", [(b":status", b"200"), (b"server", b"envoy")]) and send:
            conn.send_data(1, send)
            sock.sendall(conn.data_to_send())
            pump(lambda: any(item[0] == "data" for item in seen) or finished())
            if end and not finished():
                conn.end_stream(1)
                sock.sendall(conn.data_to_send())
        pump(finished)
    finally:
        sock.close()
    # Whether the host's last bytes and its FIN leave in one DATA frame
    # depends on whether one read finds both, for Envoy as for txenvoy.
    for i in range(len(seen) - 1, 0, -1):
        if seen[i] == ("data", b"") and i + 1 < len(seen) and seen[i + 1] == "end":
            del seen[i]
    return seen


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
