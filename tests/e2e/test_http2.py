"""
HTTP/2 downstream through a real C{twistd -n envoy}, side by side with
Envoy 1.40 on the same config (L{SideBySide}): h2c by prior knowledge
(C{codec_type: AUTO} detects the preface), several streams on one
connection, trailers, resets, protocol errors, the stats, and C{curl
--http2-prior-knowledge}.
"""

import json
import os
import socket
import subprocess
import time

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
)
from hyperframe.frame import Frame, SettingsFrame
from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.configs import bootstrap, httpListener
from tests.e2e.harness import EXAMPLES, adminStats, freePort, startProxy
from tests.e2e.test_http import SideBySide
from txenvoy.http.http2.server_codec import PREFACE

# Headers that differ from one run to the next.
_VARYING = frozenset([b"date", b"x-envoy-upstream-service-time", b"x-request-id"])


class H2Client:
    """A blocking h2c client (prior knowledge) over one socket."""

    def __init__(self, port, validate=True):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.conn = H2Connection(H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=validate,
            normalize_outbound_headers=validate))
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())
        self.responses = {}
        self.goaway = None
        self.closed = False

    def send(self, path, method=b"GET", headers=(), body=None, trailers=None,
             authority=b"example.com", end=None):
        """Open a stream; C{end=False} leaves it open with neither body nor trailers."""
        sid = self.conn.get_next_available_stream_id()
        if end is None:
            end = body is None and trailers is None
        self.conn.send_headers(sid, [(b":method", method), (b":path", path),
                                     (b":scheme", b"http"), (b":authority", authority)]
                               + list(headers), end_stream=end)
        if body is not None:
            self.conn.send_data(sid, body, end_stream=trailers is None)
        if trailers is not None:
            self.conn.send_headers(sid, trailers, end_stream=True)
        self.responses[sid] = {"headers": None, "body": b"", "trailers": None,
                               "reset": None, "ended": False}
        self.sock.sendall(self.conn.data_to_send())
        return sid

    def reset(self, sid):
        self.conn.reset_stream(sid)
        self.sock.sendall(self.conn.data_to_send())

    def wait(self, sids, timeout=10):
        """Read until every stream in C{sids} ended or was reset."""
        self.sock.settimeout(timeout)
        while not all(self.responses[s]["ended"] or self.responses[s]["reset"] is not None
                      for s in sids):
            if not self.readOnce():
                break
        return [self.responses[s] for s in sids]

    def readOnce(self):
        try:
            data = self.sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            self.closed = True
            return False
        for event in self.conn.receive_data(data):
            r = self.responses.get(getattr(event, "stream_id", None))
            if isinstance(event, ResponseReceived):
                r["headers"] = event.headers
            elif isinstance(event, DataReceived):
                r["body"] += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length,
                                                    event.stream_id)
            elif isinstance(event, TrailersReceived):
                r["trailers"] = event.headers
            elif isinstance(event, StreamEnded):
                r["ended"] = True
            elif isinstance(event, StreamReset):
                r["reset"] = event.error_code
            elif isinstance(event, ConnectionTerminated):
                self.goaway = (event.error_code, event.last_stream_id)
        out = self.conn.data_to_send()
        if out:
            try:
                self.sock.sendall(out)
            except OSError:
                pass
        return True

    def readUntilClosed(self, timeout=10):
        self.sock.settimeout(timeout)
        while self.readOnce():
            pass

    def close(self):
        self.sock.close()


def comparable(response):
    """A response without what varies from run to run."""
    headers = [(n, v) for n, v in response["headers"] or () if n not in _VARYING]
    return {"headers": headers, "body": response["body"], "trailers": response["trailers"],
            "reset": response["reset"], "ended": response["ended"]}


class Http2ComparisonTests(SideBySide, SynchronousTestCase):
    """h2c through Envoy 1.40 and txenvoy, the same config (codec_type AUTO)."""

    def exchange(self, deployment, requests, validate=True):
        client = H2Client(deployment.port, validate=validate)
        try:
            sids = [client.send(*r[:1], **r[1]) if len(r) > 1 else client.send(r[0])
                    for r in requests]
            return [comparable(r) for r in client.wait(sids)]
        finally:
            client.close()

    def compare(self, requests):
        expected = self.exchange(self.envoy, requests)
        got = self.exchange(self.txenvoy, requests)
        self.assertEqual(got, expected)
        return got

    def test_directResponse(self):
        """A direct response over h2c: same status, headers and body."""
        [r] = self.compare([(b"/direct",)])
        self.assertEqual(r["body"], b"hello\n")

    def test_severalStreamsOneConnection(self):
        """Streams to the origin, a redirect and a 404 on one connection."""
        self.compare([(b"/direct",), (b"/old",), (b"/nothing/here",), (b"/direct",)])

    def test_proxiedToHttp1Origin(self):
        """A request with a body proxied to the HTTP/1.1 origin: what the origin saw."""
        for deployment in (self.envoy, self.txenvoy):
            client = H2Client(deployment.port)
            try:
                sid = client.send(b"/x", method=b"POST", body=b"abc", authority=b"api.example.com",
                                  headers=[(b"x-a", b"1")])
                [r] = client.wait([sid])
            finally:
                client.close()
            self.assertEqual(dict(r["headers"])[b":status"], b"200")
            seen = json.loads(r["body"])
            names = [h[0].lower() for h in seen["headers"]]
            self.assertIn("x-a", names)
            self.assertIn("x-forwarded-proto", names)
            self.assertEqual(seen["bodyLength"], 3)

    def rawFrames(self, deployment, data, timeout=3.0):
        """Send C{data}, read until the proxy closes: the frames and the wait."""
        s = socket.create_connection(("127.0.0.1", deployment.port), timeout=timeout)
        start = time.time()
        buf = b""
        try:
            s.sendall(data)
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        except OSError:
            pass
        finally:
            s.close()
        elapsed = time.time() - start
        frames = []
        while len(buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(buf[:9]))
            frame.parse_body(memoryview(buf[9:9 + length]))
            frames.append(frame)
            buf = buf[9 + length:]
        return frames, elapsed

    def test_firstFrames(self):
        """
        Envoy's first frames on an h2c connection: its SETTINGS (header
        table, extended CONNECT off, 1024 streams, 16 MiB window), the ACK of
        the client's, the connection window opened to 24 MiB.
        """
        results = []
        for d in (self.envoy, self.txenvoy):
            frames, _ = self.rawFrames(d, PREFACE + SettingsFrame(0).serialize(), timeout=1.0)
            results.append([(type(f).__name__, sorted(f.flags),
                             list(getattr(f, "settings", {}).items()),
                             getattr(f, "window_increment", None)) for f in frames])
        self.assertEqual(results[1], results[0])

    def test_connectionHeaderIsMessagingError(self):
        """
        A request with a connection-specific header: Envoy 1.40 writes
        nothing (not even its SETTINGS, no GOAWAY) and closes after the
        delayed close timeout (1 s); so does txenvoy.
        """
        client = H2Connection(H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=False,
            normalize_outbound_headers=False))
        client.initiate_connection()
        client.send_headers(1, [(b":method", b"GET"), (b":path", b"/direct"),
                                (b":scheme", b"http"), (b":authority", b"a"),
                                (b"connection", b"keep-alive")], end_stream=True)
        data = client.data_to_send()
        results = [self.rawFrames(d, data) for d in (self.envoy, self.txenvoy)]
        self.assertEqual(results[1][0], results[0][0])
        self.assertEqual(results[0][0], [])
        for _, elapsed in results:
            self.assertGreater(elapsed, 0.9)

    def compareAfterPreface(self, bad):
        """
        The frames each proxy answers C{bad} with after a client preface,
        the same for both: @return: them, as (type, error code, last stream).
        """
        results = []
        for d in (self.envoy, self.txenvoy):
            frames, _ = self.rawFrames(d, PREFACE + SettingsFrame(0).serialize() + bad)
            results.append([(type(f).__name__, getattr(f, "error_code", None),
                             getattr(f, "last_stream_id", None)) for f in frames])
        self.assertEqual(results[1], results[0])
        return results[0]

    def test_frameErrorGoAway(self):
        """DATA on stream 0: SETTINGS, then GOAWAY PROTOCOL_ERROR with last stream 0."""
        frames = self.compareAfterPreface(b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x")
        self.assertEqual(frames[-1], ("GoAwayFrame", 1, 0))

    def test_badHpackGoAway(self):
        """A header block HPACK cannot decode: GOAWAY COMPRESSION_ERROR (9), stream 1."""
        frames = self.compareAfterPreface(b"\x00\x00\x04\x01\x04\x00\x00\x00\x01\xff\xff\xff\xff")
        self.assertEqual(frames[-1], ("GoAwayFrame", 9, 1))

    def test_stats(self):
        """downstream_cx_http2_total and downstream_rq_http2_total count as Envoy's."""
        before = [adminStats(d.adminPort) for d in (self.envoy, self.txenvoy)]
        for d in (self.envoy, self.txenvoy):
            self.exchange(d, [(b"/direct",), (b"/direct",)])
        after = [adminStats(d.adminPort) for d in (self.envoy, self.txenvoy)]
        for name in ("http.front_http.downstream_cx_http2_total",
                     "http.front_http.downstream_rq_http2_total"):
            deltas = [a.get(name, 0) - b.get(name, 0) for a, b in zip(after, before)]
            self.assertEqual(deltas[1], deltas[0], name)

    def test_responseBeforeRequestEnds(self):
        """
        A response sent while the request body still comes: Envoy resets
        the stream with NO_ERROR once the response is out (http2.tx_reset,
        downstream_rq_rx_reset); the connection serves on.
        """
        counters = ("http2.tx_reset", "http.front_http.downstream_rq_rx_reset",
                    "http.front_http.downstream_rq_response_before_rq_complete")
        results = []
        for d in (self.envoy, self.txenvoy):
            before = adminStats(d.adminPort)
            client = H2Client(d.port, validate=False)
            try:
                sid = client.send(b"/direct", method=b"POST", end=False)
                client.conn.send_data(sid, b"part")
                client.sock.sendall(client.conn.data_to_send())
                first = comparable(client.wait([sid])[0])
                second = comparable(client.wait([client.send(b"/direct")])[0])
            finally:
                client.close()
            after = adminStats(d.adminPort)
            results.append((first, second,
                            {n: after.get(n, 0) - before.get(n, 0) for n in counters}))
        self.assertEqual(results[1], results[0])
        self.assertEqual(results[0][0]["reset"], 0)
        self.assertEqual(results[0][2], dict.fromkeys(counters, 1))

    def test_curlPriorKnowledge(self):
        """C{curl --http2-prior-knowledge}: same status line and body."""
        outs = []
        for d in (self.envoy, self.txenvoy):
            out = subprocess.run(
                ["curl", "-s", "-i", "--http2-prior-knowledge",
                 "http://127.0.0.1:%d/direct" % (d.port,)],
                capture_output=True, timeout=20).stdout
            outs.append([line for line in out.split(b"\r\n")
                         if not line.lower().startswith(b"date:")])
        self.assertEqual(outs[1], outs[0])
        self.assertEqual(outs[0][0], b"HTTP/2 200 ")

    def test_http1StillServed(self):
        """AUTO: an HTTP/1.1 request on the same listener is served as before."""
        for d in (self.envoy, self.txenvoy):
            s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
            try:
                s.sendall(b"GET /direct HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
                data = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            finally:
                s.close()
            self.assertTrue(data.startswith(b"HTTP/1.1 200 OK\r\n"), data)


def _tlsConfig(port, adminPort, certs):
    return bootstrap(
        listeners=[
            httpListener("tls", "%(port)d", routes="""
                - match: {prefix: "/"}
                  direct_response: {status: 200, body: {inline_string: "over tls"}}
                """, filterChain="""
                transport_socket:
                  name: envoy.transport_sockets.tls
                  typed_config:
                    "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
                    common_tls_context:
                      alpn_protocols: [h2, http/1.1]
                      tls_certificates:
                      - certificate_chain: {filename: %(certs)s/server.crt.pem}
                        private_key: {filename: %(certs)s/server.key.pem}
                """),
        ]) % {"port": port, "admin": adminPort, "certs": certs}


class AlpnTests(SynchronousTestCase):
    """ALPN h2 on a TLS filter chain (alpn_protocols), through curl --http2."""

    def test_alpnH2(self):
        """curl negotiates h2 by ALPN with both; HTTP/1.1 when it asks for it."""
        certs = os.path.join(EXAMPLES, "certs")
        outs = []
        for real in (True, False):
            port, adminPort = freePort(), freePort()
            proxy = startProxy(real, _tlsConfig(port, adminPort, certs), port, adminPort)
            try:
                url = "https://127.0.0.1:%d/" % (port,)
                h2 = subprocess.run(["curl", "-sk", "--http2", "-o", "/dev/null", "-w",
                                     "%{http_version} %{http_code}", url],
                                    capture_output=True, timeout=20).stdout
                h1 = subprocess.run(["curl", "-sk", "--http1.1", "-o", "/dev/null", "-w",
                                     "%{http_version} %{http_code}", url],
                                    capture_output=True, timeout=20).stdout
                stats = adminStats(adminPort)
                outs.append((h2, h1, stats.get("http.tls.downstream_cx_http2_total"),
                             stats.get("http.tls.downstream_cx_http1_total")))
            finally:
                proxy.stop()
        self.assertEqual(outs[1], outs[0])
        self.assertEqual(outs[0], (b"2 200", b"1.1 200", 1, 1))
