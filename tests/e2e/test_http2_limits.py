"""
HTTP/2 limits, stream errors and extended CONNECT side by side with Envoy
1.40 (one txenvoy and one Envoy for the module): WebSocket over HTTP/2
(RFC 8441) to an HTTP/1.1 host, a forbidden request head with
C{override_stream_error_on_invalid_http_message} resets only its stream,
the connection manager's C{stream_error_on_invalid_http_message} (the same
for HTTP/2, nothing changed for HTTP/1), too many request headers
(C{http2.header_overflow}), and the flood
protections (C{http2.inbound_empty_frames_flood},
C{http2.inbound_priority_frames_flood}), compared frame by frame and
counter by counter.
"""

import socket
import time
from concurrent.futures import ThreadPoolExecutor

from h2.config import H2Configuration
from h2.connection import H2Connection
from hyperframe.frame import DataFrame, Frame, PriorityFrame, SettingsFrame
from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import adminStats
from tests.e2e.test_http import SideBySide, exchange
from tests.e2e.test_http2 import H2Client, comparable
from txenvoy.http.http2.server_codec import PREFACE

_HEAD = [(b":method", b"GET"), (b":path", b"/direct"), (b":scheme", b"http"),
         (b":authority", b"a")]


def _client():
    conn = H2Connection(H2Configuration(
        client_side=True, header_encoding=None, validate_outbound_headers=False,
        normalize_outbound_headers=False))
    conn.initiate_connection()
    return conn


def _describe(frame):
    return (type(frame).__name__, frame.stream_id, getattr(frame, "error_code", None),
            sorted(frame.flags))


def _readFrames(sock, frames, done):
    """Read frames into C{frames} until C{done(frames)} or a close: whether it closed."""
    buf = b""
    try:
        while not done(frames):
            chunk = sock.recv(65536)
            if not chunk:
                return True
            buf += chunk
            while len(buf) >= 9:
                frame, length = Frame.parse_frame_header(memoryview(buf[:9]))
                if len(buf) < 9 + length:
                    break
                frame.parse_body(memoryview(buf[9:9 + length]))
                frames.append(_describe(frame))
                buf = buf[9 + length:]
    except OSError:
        return True
    return False


def exchangeFrames(port, data, done, later=None, timeout=5.0):
    """
    Send C{data}; read frames until C{done(frames)} holds or the proxy
    closes; then, with C{later}, send it and read until the close.

    @return: the frames as (type, stream, error code, flags), those after
        C{later}, and how long the proxy took to close after C{later}.
    """
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    frames = []
    after = []
    elapsed = None
    try:
        s.sendall(data)
        _readFrames(s, frames, done)
        if later is not None:
            start = time.monotonic()
            s.sendall(later)
            _readFrames(s, after, lambda frames: False)
            elapsed = time.monotonic() - start
    finally:
        s.close()
    return frames, after, elapsed


def _ended(streamId):
    return lambda frames: any(f[1] == streamId and "END_STREAM" in f[3] for f in frames)


def _windowOpened(frames):
    return any(f[0] == "WindowUpdateFrame" for f in frames)


class Http2LimitsTests(SideBySide, SynchronousTestCase):
    """Envoy 1.40 and txenvoy with the same HTTP/2 limits."""

    hcm = """\
          common_http_protocol_options: {max_headers_count: 20}
          upgrade_configs: [{upgrade_type: websocket}]
          http2_protocol_options:
            allow_connect: true
            override_stream_error_on_invalid_http_message: true
            max_consecutive_inbound_frames_with_empty_payload: 2
            max_inbound_priority_frames_per_stream: 3"""

    def both(self, data, done, counters, later=None):
        """
        C{data} (then C{later}) to Envoy and txenvoy at once: the same
        frames, the same changes of C{counters}.

        @return: Envoy's frames, its frames after C{later}, how long it took
            to close after C{later}, and the counters' changes.
        """
        deployments = (self.envoy, self.txenvoy)
        before = [adminStats(d.adminPort) for d in deployments]
        with ThreadPoolExecutor(2) as pool:
            runs = list(pool.map(lambda d: exchangeFrames(d.port, data, done, later),
                                 deployments))
        results = []
        for d, b, (frames, after, elapsed) in zip(deployments, before, runs):
            stats = adminStats(d.adminPort)
            results.append((frames, after, elapsed,
                            {name: stats.get(name, 0) - b.get(name, 0) for name in counters}))
        self.assertEqual([r[:2] + r[3:] for r in results[1:]],
                         [r[:2] + r[3:] for r in results[:1]])
        if later is not None:
            # Both close after the delayed close timeout (1 s), or both at once.
            self.assertEqual(results[1][2] > 0.9, results[0][2] > 0.9)
        return results[0]

    def test_invalidHeadResetsItsStream(self):
        """
        override_stream_error_on_invalid_http_message: a request head with
        a connection-specific header, an upper-case name or a te other than
        trailers gets RST_STREAM PROTOCOL_ERROR; the next stream on the
        connection is answered (Envoy's stream error, http2.rx_messaging_error).
        """
        for bad in ((b"connection", b"keep-alive"), (b"X-Up", b"1"), (b"te", b"gzip")):
            client = _client()
            client.send_headers(1, _HEAD + [bad], end_stream=True)
            client.send_headers(3, _HEAD, end_stream=True)
            frames, _, _, deltas = self.both(client.data_to_send(), _ended(3),
                                             ("http2.rx_messaging_error", "http2.tx_reset"))
            self.assertIn(("RstStreamFrame", 1, 1, []), frames)
            self.assertEqual(deltas, {"http2.rx_messaging_error": 1, "http2.tx_reset": 1})

    def test_invalidTrailersResetTheirStream(self):
        """Trailers with a pseudo-header: that stream reset, the next one served."""
        client = _client()
        client.send_headers(1, [(b":method", b"POST"), (b":path", b"/o/echo")] + _HEAD[2:])
        client.send_data(1, b"x")
        client.send_headers(1, [(b":path", b"/x")], end_stream=True)
        client.send_headers(3, _HEAD, end_stream=True)
        frames, _, _, deltas = self.both(client.data_to_send(), _ended(3),
                                         ("http2.rx_messaging_error",))
        self.assertIn(("RstStreamFrame", 1, 1, []), frames)

    def test_headerOverflow(self):
        """
        More request headers than max_headers_count: the stream is reset
        (PROTOCOL_ERROR), counted as http2.header_overflow; the connection stays.
        """
        client = _client()
        client.send_headers(1, _HEAD + [(b"x-h%d" % i, b"v") for i in range(30)],
                            end_stream=True)
        client.send_headers(3, _HEAD, end_stream=True)
        frames, _, _, deltas = self.both(client.data_to_send(), _ended(3),
                                         ("http2.header_overflow", "http2.tx_reset"))
        self.assertIn(("RstStreamFrame", 1, 2, []), frames)
        self.assertEqual(deltas["http2.header_overflow"], 1)

    def test_emptyDataFlood(self):
        """
        Empty DATA frames past max_consecutive_inbound_frames_with_empty_payload:
        Envoy 1.40 writes nothing more (no GOAWAY) and closes after the
        delayed close timeout (http2.inbound_empty_frames_flood).
        """
        client = _client()
        client.send_headers(1, [(b":method", b"POST"), (b":path", b"/o/echo")] + _HEAD[2:])
        # Exactly the frame that floods last: a proxy that stops reading
        # with bytes unread would reset the connection.
        later = b"".join(DataFrame(1).serialize() for _ in range(3))
        frames, after, elapsed, deltas = self.both(
            client.data_to_send(), _windowOpened, ("http2.inbound_empty_frames_flood",), later)
        self.assertEqual((after, elapsed > 0.9), ([], True))
        self.assertEqual(deltas["http2.inbound_empty_frames_flood"], 1)

    def test_priorityFlood(self):
        """
        PRIORITY frames past max_inbound_priority_frames_per_stream (per
        stream opened, plus one): nothing more written, a close after the
        delayed close timeout (http2.inbound_priority_frames_flood).
        """
        client = _client()
        client.send_headers(1, _HEAD, end_stream=True)
        # The limit is 3 per stream opened, plus one stream: the 7th floods.
        later = b""
        for _ in range(7):
            frame = PriorityFrame(5)
            frame.depends_on = 0
            frame.stream_weight = 15
            later += frame.serialize()
        frames, after, elapsed, deltas = self.both(
            client.data_to_send(), _ended(1), ("http2.inbound_priority_frames_flood",), later)
        self.assertEqual((after, elapsed > 0.9), ([], True))
        self.assertEqual(deltas["http2.inbound_priority_frames_flood"], 1)

    def test_websocketOverHttp2(self):
        """
        Extended CONNECT (:protocol websocket, allow_connect, upgrade_configs)
        to an HTTP/1.1 host: it gets GET with upgrade: websocket, its 101
        comes back as a 200 (Envoy's transformUpgradeResponseFromH1toH2),
        and DATA frames carry the raw bytes both ways.
        """
        counters = ("http.front_http.downstream_cx_upgrades_total",)
        results = []
        for d in (self.envoy, self.txenvoy):
            before = adminStats(d.adminPort)
            client = H2Client(d.port, validate=False)
            try:
                sid = client.send(b"/o/ws", method=b"CONNECT",
                                  headers=[(b":protocol", b"websocket"),
                                           (b"sec-websocket-version", b"13")],
                                  body=None, trailers=None, end=False)
                echoed = []
                for piece in (b"hello", b" again"):
                    client.conn.send_data(sid, piece)
                    client.sock.sendall(client.conn.data_to_send())
                    response = client.responses[sid]
                    while len(response["body"]) < sum(map(len, echoed)) + len(piece):
                        if not client.readOnce():
                            break
                    echoed.append(piece)
                response = comparable(client.responses[sid])
            finally:
                client.close()
            after = adminStats(d.adminPort)
            results.append((response, {n: after.get(n, 0) - before.get(n, 0) for n in counters}))
        self.assertEqual(results[1], results[0])
        response = results[0][0]
        self.assertEqual(response["headers"][0], (b":status", b"200"))
        self.assertEqual(response["body"], b"hello again")
        self.assertEqual(results[0][1], {"http.front_http.downstream_cx_upgrades_total": 1})


_REQUEST_COUNTERS = tuple("http.front_http." + name for name in (
    "downstream_rq_total", "downstream_rq_http2_total", "downstream_rq_rx_reset",
    "downstream_rq_completed", "downstream_rq_2xx", "downstream_rq_4xx"))


class StreamErrorOnInvalidMessageTests(SideBySide, SynchronousTestCase):
    """
    The connection manager's C{stream_error_on_invalid_http_message}, with
    no C{override_stream_error_on_invalid_http_message} in
    C{http2_protocol_options}: Envoy's HTTP/2 codec takes it.
    """

    hcm = """\
          stream_error_on_invalid_http_message: true"""

    both = Http2LimitsTests.both
    maxDiff = None

    def test_invalidHeadResetsItsStream(self):
        """
        A request head with a connection-specific header gets RST_STREAM
        PROTOCOL_ERROR and the next stream is answered, as with the HTTP/2
        override; the reset stream counts in downstream_rq_total and
        downstream_rq_http2_total as Envoy counts it.
        """
        client = _client()
        client.send_headers(1, _HEAD + [(b"connection", b"keep-alive")], end_stream=True)
        client.send_headers(3, _HEAD, end_stream=True)
        frames, _, _, deltas = self.both(
            client.data_to_send(), _ended(3),
            ("http2.rx_messaging_error", "http2.tx_reset") + _REQUEST_COUNTERS)
        self.assertIn(("RstStreamFrame", 1, 1, []), frames)
        self.assertEqual(deltas["http2.rx_messaging_error"], 1)

    def test_invalidTrailersResetTheirStream(self):
        """
        Trailers with a pseudo-header reset their stream; the request
        counters move as Envoy's.
        """
        client = _client()
        client.send_headers(1, [(b":method", b"POST"), (b":path", b"/o/echo")] + _HEAD[2:])
        client.send_data(1, b"x")
        client.send_headers(1, [(b":path", b"/x")], end_stream=True)
        client.send_headers(3, _HEAD, end_stream=True)
        frames, _, _, deltas = self.both(client.data_to_send(), _ended(3),
                                         ("http2.rx_messaging_error",) + _REQUEST_COUNTERS)
        self.assertIn(("RstStreamFrame", 1, 1, []), frames)
        self.assertEqual(deltas["http2.rx_messaging_error"], 1)

    def test_http1Unchanged(self):
        """
        Envoy 1.40's HTTP/1 codec answers a malformed request 400 with
        connection: close and closes, with or without the setting.
        """
        raw = b"GET / HTTP/1.1\r\nhost: a\r\nbad header: x\r\n\r\n"
        with ThreadPoolExecutor(2) as pool:
            expected, got = pool.map(lambda d: exchange(d.port, raw, expectClose=True),
                                     (self.envoy, self.txenvoy))
        self.assertEqual(got, expected)
        self.assertIn(("connection", "close"), expected[0]["headers"])
        self.assertEqual(expected[-1], {"closed": True})
