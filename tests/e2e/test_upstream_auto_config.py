"""
End-to-end: C{auto_config} in a cluster's C{HttpProtocolOptions} through
Envoy 1.40 and a real C{twistd envoy} on the same YAML. Two TLS origins: one
that speaks only HTTP/2 (ALPN C{h2}, the C{h2} library), one that speaks
only HTTP/1.1 (ALPN C{http/1.1}). Both proxies offer C{h2,http/1.1} and
speak what each handshake chose.
"""

import os
import ssl
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import h2.config
import h2.connection
import h2.events
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

#: Cluster fields: TLS with SNI, the protocol chosen by ALPN.
_AUTO = """
typed_extension_protocol_options:
  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
    auto_config: {http_protocol_options: {}, http2_protocol_options: {}}
transport_socket:
  name: envoy.transport_sockets.tls
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
    sni: foo.example.com
"""


def _config(admin, port, h2Port, h1Port):
    return bootstrap(
        [httpListener(None, port, statPrefix="ing", virtualHosts="""
            - name: a
              domains: ["*"]
              routes:
              - match: {prefix: "/h2"}
                route: {cluster: h2only}
              - match: {prefix: "/"}
                route: {cluster: h1only}
            """)],
        [cluster("h2only", h2Port, _AUTO, connectTimeout="2s"),
         cluster("h1only", h1Port, _AUTO, connectTimeout="2s")],
        admin=admin)


def _serverContext(alpn):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(os.path.join(CERTS, "server.crt.pem"),
                            os.path.join(CERTS, "server.key.pem"))
    context.set_alpn_protocols([alpn])
    return context


def _handshake(context, conn):
    # A slow handshake: requests sent at once all wait for the first one,
    # before either proxy knows the origin's protocol.
    time.sleep(0.2)
    try:
        return context.wrap_socket(conn, server_side=True)
    except ssl.SSLError:
        return None


class H2Origin(Upstream):
    """A TLS origin speaking only HTTP/2 (ALPN C{h2}); records C{(alpn, path)}."""

    def __init__(self):
        self.seen = []
        self.context = _serverContext("h2")
        Upstream.__init__(self, self._answer)

    def _answer(self, conn):
        tls = _handshake(self.context, conn)
        if tls is None:
            return
        alpn = tls.selected_alpn_protocol()
        h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        h2c.initiate_connection()
        tls.sendall(h2c.data_to_send())
        while True:
            data = tls.recv(65536)
            if not data:
                return
            for event in h2c.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    path = dict(event.headers)[b":path"].decode()
                    self.seen.append((alpn, "HTTP/2", path))
                    body = b"h2 " + path.encode()
                    h2c.send_headers(event.stream_id, [(":status", "200"),
                                                       ("content-length", str(len(body)))])
                    h2c.send_data(event.stream_id, body, end_stream=True)
            tls.sendall(h2c.data_to_send())


class H1Origin(Upstream):
    """A TLS origin speaking only HTTP/1.1 (ALPN C{http/1.1}); records C{(alpn, path)}."""

    def __init__(self):
        self.seen = []
        self.context = _serverContext("http/1.1")
        Upstream.__init__(self, self._answer)

    def _answer(self, conn):
        tls = _handshake(self.context, conn)
        if tls is None:
            return
        alpn = tls.selected_alpn_protocol()
        buffered = b""
        while True:
            data = tls.recv(65536)
            if not data:
                return
            buffered += data
            while b"\r\n\r\n" in buffered:
                head, _, buffered = buffered.partition(b"\r\n\r\n")
                line = head.split(b"\r\n", 1)[0].decode()
                _, path, version = line.split(" ")
                self.seen.append((alpn, version, path))
                if path in AT_ONCE:
                    # Busy long enough for the other requests sent at once
                    # to need connections of their own.
                    time.sleep(0.4)
                body = b"h1 " + path.encode()
                tls.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s"
                            % (len(body), body))


#: Sent at once, before the first handshake is done.
AT_ONCE = ["/h1/x", "/h1/y", "/h1/z", "/h2/x", "/h2/y", "/h2/z"]

#: Then one after the other.
PATHS = ["/h2/a", "/h1/a", "/h2/b", "/h1/b", "/h2/c"]

_STATS = ("upstream_cx_http1_total", "upstream_cx_http2_total", "upstream_cx_total",
          "upstream_rq_200", "upstream_rq_total", "upstream_rq_pending_total")


def _hostCounters(adminPort):
    """The hosts' C{cx_total} and C{rq_total} from C{/clusters}, by cluster."""
    url = "http://127.0.0.1:%d/clusters" % (adminPort,)
    with urllib.request.urlopen(url, timeout=5) as r:
        lines = r.read().decode().splitlines()
    out = {}
    for line in lines:
        parts = line.split("::")
        if len(parts) == 4 and parts[2] in ("cx_total", "rq_total"):
            out["host.%s.%s" % (parts[0], parts[2])] = int(parts[3])
    return out


def _get(port, path):
    data = closingGet(port, path)
    return statusOf(data), data.split(b"\r\n\r\n", 1)[1]


def _atOnce(port, paths):
    answers = {}
    threads = [threading.Thread(target=lambda p=p: answers.__setitem__(p, _get(port, p)))
               for p in paths]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return [answers.get(p) for p in paths]


def _run(real):
    """
    The requests through Envoy (C{real}) or txenvoy: the answers, what each
    origin saw, the stats.
    """
    h2Origin, h1Origin = H2Origin(), H1Origin()
    port, admin = freePort(), freePort()
    config = _config(admin, port, h2Origin.port, h1Origin.port)
    try:
        proxy = startProxy(real, config, port, admin)
        try:
            answers = _atOnce(port, AT_ONCE)
            answers += [_get(port, path) for path in PATHS]
            stats = adminStats(admin)
            stats.update(_hostCounters(admin))
        finally:
            proxy.stop()
    finally:
        h2Origin.stop()
        h1Origin.stop()
    return answers, h2Origin.seen, h1Origin.seen, stats


class AutoConfigComparisonTests(SharedFixture, SynchronousTestCase):
    """Envoy 1.40 and txenvoy, the same requests, one pair of origins each."""

    @classmethod
    def startFixture(cls):
        # Both proxies at once, each with its own pair of origins.
        with ThreadPoolExecutor(2) as pool:
            cls.results = dict(zip((True, False), pool.map(_run, (True, False))))

    @classmethod
    def stopFixture(cls):
        pass

    def test_answers(self):
        """Every request is answered by its origin, in the origin's protocol."""
        self.assertEqual(self.results[False][0], self.results[True][0])
        self.assertEqual(self.results[True][0],
                         [(200, ("h%s %s" % (p[2], p)).encode()) for p in AT_ONCE + PATHS])

    def test_protocolSeen(self):
        """
        Envoy's mixed pool: the HTTP/2-only origin negotiated C{h2} and
        got HTTP/2, the HTTP/1.1-only one C{http/1.1} and got HTTP/1.1.
        """
        for origin in (1, 2):
            self.assertEqual(sorted(self.results[False][origin]),
                             sorted(self.results[True][origin]))
        self.assertEqual({s[:2] for s in self.results[True][1]}, {("h2", "HTTP/2")})
        self.assertEqual({s[:2] for s in self.results[True][2]}, {("http/1.1", "HTTP/1.1")})

    def test_stats(self):
        """
        C{upstream_cx_http1_total} / C{upstream_cx_http2_total} per cluster:
        requests at once share the first connection's handshake, then the
        HTTP/1.1 origin gets one connection each, the HTTP/2 origin
        carries them all on one. Envoy counts each connection twice in
        C{upstream_cx_total} (once for its ALPN client, once for the client
        of the protocol chosen), and the host's C{cx_total} too; so does
        txenvoy.
        """
        for cluster in ("h2only", "h1only"):
            names = ["cluster.%s.%s" % (cluster, name) for name in _STATS]
            names += ["host.%s.cx_total" % (cluster,), "host.%s.rq_total" % (cluster,)]
            envoy = {name: self.results[True][3].get(name) for name in names}
            txenvoy = {name: self.results[False][3].get(name) for name in names}
            self.assertEqual(txenvoy, envoy)
            self.assertEqual(envoy["host.%s.cx_total" % (cluster,)],
                             envoy["cluster.%s.upstream_cx_total" % (cluster,)])
