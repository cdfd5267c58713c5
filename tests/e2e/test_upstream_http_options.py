"""
End-to-end: a cluster's C{HttpProtocolOptions} (C{auto_sni},
C{auto_san_validation}, C{max_requests_per_connection}) through Envoy 1.40
and a real C{twistd envoy} on the same YAML, in front of a TLS origin that
records the SNI of each connection.
"""

import os
import ssl

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.configs import bootstrap, cluster, httpListener
from tests.e2e.harness import (
    EXAMPLES,
    SharedFixture,
    Upstream,
    adminStats,
    closingGet,
    freePort,
    startProxy,
    statusOf,
)

CERTS = os.path.join(EXAMPLES, "certs")

CONFIG = bootstrap(
    listeners=[
        httpListener(None, "%(port)d", statPrefix="ing", virtualHosts="""
            - name: a
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: tls}
            """),
    ],
    clusters=[
        cluster("tls", "%(origin)d", extra="""
            typed_extension_protocol_options:
              envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
                "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
                upstream_http_protocol_options: {auto_sni: true, auto_san_validation: true,
                                                 override_auto_sni_header: x-sni}
                common_http_protocol_options: {max_requests_per_connection: 2,
                                               headers_with_underscores_action: REJECT_REQUEST}
                explicit_http_config: {http_protocol_options: {}}
            transport_socket:
              name: envoy.transport_sockets.tls
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
                common_tls_context:
                  validation_context: {trusted_ca: {filename: %(ca)s}}
            """, connectTimeout="2s"),
    ])

#: (Host, x-sni) in order; the same sequence goes through both proxies.
REQUESTS = [
    ("foo.example.com", None),
    ("bad.test", None),
    ("127.0.0.1", None),
    ("foo.example.com:8080", None),
    ("localhost", None),
    ("foo.example.com", None),
    ("bad.test", "api.example.com"),
]


class TlsOrigin(Upstream):
    """A TLS HTTP/1.1 origin (certs/server.*) recording each connection's SNI."""

    def __init__(self):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(os.path.join(CERTS, "server.crt.pem"),
                                os.path.join(CERTS, "server.key.pem"))
        context.sni_callback = lambda sock, name, ctx: self.serverNames.append(name)
        self.context = context
        self.serverNames = []
        Upstream.__init__(self, self._answer)

    def _answer(self, conn):
        try:
            tls = self.context.wrap_socket(conn, server_side=True)
        except ssl.SSLError:
            return
        buffered = b""
        while True:
            data = tls.recv(65536)
            if not data:
                return
            buffered += data
            while b"\r\n\r\n" in buffered:
                _, _, buffered = buffered.partition(b"\r\n\r\n")
                tls.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx_under: 1\r\n\r\nok")


def get(port, host, sni):
    """One request on its own connection: (status, has x_under)."""
    data = closingGet(port, host=host, extra="x-sni: %s\r\n" % (sni,) if sni else "")
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    return statusOf(data), b"\r\nx_under: 1" in head


_STATS = ("ssl.fail_verify_san", "ssl.handshake", "upstream_cx_total",
          "upstream_cx_connect_fail", "upstream_cx_max_requests", "upstream_rq_200",
          "upstream_rq_503", "upstream_rq_pending_failure_eject")


class AutoSniComparisonTests(SharedFixture, SynchronousTestCase):
    """Envoy 1.40 and txenvoy, the same requests, one origin each."""

    @classmethod
    def startFixture(cls):
        cls.results = {}
        for real in (True, False):
            origin = TlsOrigin()
            port, admin = freePort(), freePort()
            config = CONFIG % {"admin": admin, "port": port, "origin": origin.port,
                               "ca": os.path.join(CERTS, "ca.crt.pem")}
            try:
                proxy = startProxy(real, config, port, admin)
                try:
                    answers = [get(port, host, sni) for host, sni in REQUESTS]
                    stats = adminStats(admin)
                finally:
                    proxy.stop()
            finally:
                origin.stop()
            cls.results[real] = (answers, origin.serverNames, stats)

    @classmethod
    def stopFixture(cls):
        pass

    def test_answers(self):
        """
        Same status per request: the name not in the certificate's SANs
        gets 503, an IP host is verified against the IP SAN, the override
        header replaces the host; a response header with an underscore
        passes (headers_with_underscores_action does not apply upstream).
        """
        self.assertEqual(self.results[False][0], self.results[True][0])
        self.assertEqual([status for status, _ in self.results[True][0]],
                         [200, 503, 200, 200, 200, 200, 200])

    def test_serverNames(self):
        """The origin sees the same SNIs in the same order (none for an IP host)."""
        self.assertEqual(self.results[False][1], self.results[True][1])

    def test_stats(self):
        """ssl.fail_verify_san, the pools keyed by SNI, max_requests_per_connection."""
        envoy = {name: self.results[True][2].get("cluster.tls." + name) for name in _STATS}
        txenvoy = {name: self.results[False][2].get("cluster.tls." + name) for name in _STATS}
        self.assertEqual(txenvoy, envoy)
