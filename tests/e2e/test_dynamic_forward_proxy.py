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
C{dns_cache} stats.
"""

import re
import threading

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import SharedFixture, Upstream, adminStats, freePort, startProxy
from tests.e2e.test_sni_cluster import _ask, _tagAfterHello
from tests.e2e.test_ext_authz import _exchange, _masked, _originHandler, _QuietServer, \
    _Recorder, _seen

CONFIG = """
admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: %(admin)d }
static_resources:
  listeners:
  - name: proxy
    address:
      socket_address: { address: 127.0.0.1, port_value: %(port)d }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: dfp
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/static" }
                route: { cluster: origin }
              - match: { prefix: "/" }
                route: { cluster: dynamic }
          http_filters:
          - name: envoy.filters.http.dynamic_forward_proxy
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_forward_proxy.v3.FilterConfig
              dns_cache_config:
                name: cache
                dns_lookup_family: V4_ONLY
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
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
  clusters:
  - name: dynamic
    lb_policy: CLUSTER_PROVIDED
    cluster_type:
      name: envoy.clusters.dynamic_forward_proxy
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.clusters.dynamic_forward_proxy.v3.ClusterConfig
        dns_cache_config:
          name: cache
          dns_lookup_family: V4_ONLY
  - name: origin
    load_assignment:
      cluster_name: origin
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: %(origin)d } } }
"""


def _get(path, host):
    return ("GET %s HTTP/1.1\r\nhost: %s\r\nconnection: close\r\n\r\n" % (path, host)).encode()


class DynamicForwardProxySideBySideTests(SharedFixture, SynchronousTestCase):
    """Envoy 1.40 and txenvoy, the same dynamic forward proxy config."""

    maxDiff = None

    @classmethod
    def startFixture(cls):
        cls.originSeen = _Recorder()
        cls.origin = _QuietServer(("127.0.0.1", 0), _originHandler(cls.originSeen))
        threading.Thread(target=cls.origin.serve_forever, kwargs={"poll_interval": 0.1},
                         daemon=True).start()
        cls.tagged = Upstream(_tagAfterHello(b"tagged"))
        cls.proxies = []
        try:
            for real in (True, False):
                ports = {"admin": freePort(), "port": freePort(), "sni": freePort(),
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
                reply = _masked(_exchange(ports["port"], _get(path, host)))
                reply = re.sub(rb":%d\b" % (origin,), b":ORIGIN", reply)
                seen.append((reply, _seen(self.originSeen.take())))
            # sni_dynamic_forward_proxy: the SNI and port_value pick the host.
            for name in ("localhost", "nonexistent.invalid", "localhost", None):
                seen.append(_ask(ports["sni"], name))
            stats = {name: value for name, value in adminStats(ports["admin"]).items()
                     if name.startswith("dns_cache.")}
            # Envoy's c-ares resolver counts a second query of a name that
            # does not exist as a success without addresses, or not,
            # depending on the resolver's state: only the sum is compared.
            stats["answers"] = (stats.pop("dns_cache.cache.dns_query_success")
                                + stats.pop("dns_cache.cache.dns_query_failure"))
            results.append((seen, stats))
        self.assertEqual(results[1], results[0])
