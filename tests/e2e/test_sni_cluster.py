"""
End-to-end comparison of C{envoy.filters.network.sni_cluster}: a real
C{twistd -n envoy} and a real Envoy 1.40 with the same config
(C{tls_inspector}, C{sni_cluster}, C{tcp_proxy}), connections whose
ClientHello names one cluster or another, none, or no cluster at all.
Compared: which upstream answered (each answers with its own tag) and the
C{tcp_proxy} stats.
"""

import socket
import ssl

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import SharedFixture, Upstream, adminStats, freePort, startProxy

CONFIG = """
admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: %(admin)d }
static_resources:
  listeners:
  - name: sni
    address:
      socket_address: { address: 127.0.0.1, port_value: %(port)d }
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector
    filter_chains:
    - filters:
      - name: envoy.filters.network.sni_cluster
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.sni_cluster.v3.SniCluster
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: sni
          cluster: fallback
  clusters:%(clusters)s
"""

_CLUSTER = """
  - name: %s
    connect_timeout: 1s
    load_assignment:
      cluster_name: %s
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: %d } } }"""

_NAMES = ("alpha.example", "beta.example", "fallback")


def _tagAfterHello(tag):
    """Read the ClientHello, answer C{tag}, half-close, wait for the close."""
    def handler(conn):
        conn.recv(65536)
        conn.sendall(tag)
        conn.shutdown(socket.SHUT_WR)
        while conn.recv(65536):
            pass
    return handler


def _clientHello(serverName):
    """The bytes of a TLS ClientHello naming C{serverName} (or none)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=serverName)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def _ask(port, serverName):
    """Send a ClientHello; what comes back before the close."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock.sendall(_clientHello(serverName))
        chunks = []
        while True:
            try:
                piece = sock.recv(65536)
            except ConnectionResetError:
                break
            if not piece:
                break
            chunks.append(piece)
        return b"".join(chunks)
    finally:
        sock.close()


class SniClusterSideBySideTests(SharedFixture, SynchronousTestCase):
    """Envoy 1.40 and txenvoy, the same sni_cluster config."""

    @classmethod
    def startFixture(cls):
        cls.upstreams = [Upstream(_tagAfterHello(name.encode())) for name in _NAMES]
        clusters = "".join(_CLUSTER % (name, name, upstream.port)
                           for name, upstream in zip(_NAMES, cls.upstreams))
        cls.proxies = []
        try:
            for real in (True, False):
                ports = {"admin": freePort(), "port": freePort()}
                proxy = startProxy(real, CONFIG % dict(ports, clusters=clusters), ports["port"],
                                   ports["admin"])
                cls.proxies.append((proxy, ports))
        except BaseException:
            cls.stopFixture()
            raise

    @classmethod
    def stopFixture(cls):
        for proxy, _ in cls.proxies:
            proxy.stop()
        for upstream in cls.upstreams:
            upstream.stop()

    def test_sniPicksCluster(self):
        """
        The SNI names the cluster; without SNI the configured one; an SNI
        that names no cluster closes the connection (Envoy's
        C{downstream_cx_no_route}).
        """
        results = []
        for proxy, ports in self.proxies:
            seen = [_ask(ports["port"], name)
                    for name in ("alpha.example", "beta.example", None, "gamma.example")]
            stats = {name: value for name, value in adminStats(ports["admin"]).items()
                     if name in ("tcp.sni.downstream_cx_no_route", "tcp.sni.downstream_cx_total")
                     or name.endswith(".upstream_cx_total") and name.startswith("cluster.")}
            results.append((seen, stats))
        self.assertEqual(results[0][0], [b"alpha.example", b"beta.example", b"fallback", b""])
        self.assertEqual(results[1], results[0])
