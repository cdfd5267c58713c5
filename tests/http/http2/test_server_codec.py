"""
Tests for L{txenvoy.http.http2.server_codec}: the downstream HTTP/2 codec,
driven by an C{h2} client connection over a L{StringTransport}.
"""

from h2.config import H2Configuration
from h2.connection import ConnectionState, H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.settings import SettingCodes
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from txenvoy.http.headers import HeaderMap, ResponseHeaders
from txenvoy.http.http2.options import Http2Options
from txenvoy.http.http2.server_codec import (
    PREFACE,
    Http2ResponseEncoder,
    Http2ServerCodec,
    isHttp2Preface,
)
from txenvoy.interfaces import IResponseEncoder, IServerCodec
from txenvoy.stats.per_worker import StatsStruct
from txenvoy.stats.store import StatsStore
from txenvoy.http.http2 import options as optionsModule


class Decoder:
    """The connection manager's stream, as the codec sees it: records."""

    def __init__(self, owner, encoder):
        self.owner = owner
        self.encoder = encoder
        self.events = []

    def decodeHeaders(self, headers, endStream):
        self.events.append(("headers", headers, endStream))

    def decodeData(self, data, endStream):
        self.events.append(("data", data, endStream))

    def decodeTrailers(self, trailers):
        self.events.append(("trailers", list(trailers.items())))

    def onStreamReset(self):
        self.events.append(("reset",))

    def onAboveWriteBufferHighWatermark(self):
        self.events.append(("above",))

    def onBelowWriteBufferLowWatermark(self):
        self.events.append(("below",))


class Owner:
    def __init__(self):
        self.decoders = []
        self.errors = []
        self.streamErrors = []

    def newStream(self, encoder):
        decoder = Decoder(self, encoder)
        self.decoders.append(decoder)
        return decoder

    def onCodecError(self, status, details):
        self.errors.append(details)

    def onStreamError(self, details):
        self.streamErrors.append(details)


def stats():
    store = StatsStore()
    return store, StatsStruct(store.shard("worker_0"), "http2.", optionsModule._COUNTERS,
                              optionsModule._GAUGES)


class CodecTestMixin:

    def setUp(self):
        self.owner = Owner()
        self.transport = StringTransport()
        self.store, self.stats = stats()
        self.clock = Clock()

    def codec(self, clientValidates=True, **options):
        self.server = Http2ServerCodec(self.owner, self.transport, Http2Options(**options),
                                       self.stats, clock=self.clock,
                                       bufferLimit=options.pop("bufferLimit", 1 << 20)
                                       if "bufferLimit" in options else 1 << 20)
        self.client = H2Connection(H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=clientValidates,
            normalize_outbound_headers=clientValidates))
        self.client.initiate_connection()
        self.events = []
        self.pump()
        return self.server

    def pump(self):
        """Move bytes both ways until neither side has more."""
        for _ in range(20):
            out = self.client.data_to_send()
            if out:
                self.server.dataReceived(out)
            back = self.transport.value()
            self.transport.clear()
            if back:
                events = self.client.receive_data(back)
                self.events.extend(events)
                if any(isinstance(e, ConnectionTerminated) for e in events):
                    # h2 stops at a GOAWAY; the streams it spares go on.
                    self.client.state_machine.state = ConnectionState.CLIENT_OPEN
            if not out and not back:
                break

    def request(self, path=b"/", end=True, extra=(), method=b"GET"):
        sid = self.client.get_next_available_stream_id()
        self.client.send_headers(sid, [(b":method", method), (b":path", path),
                                       (b":scheme", b"http"), (b":authority", b"a")]
                                 + list(extra), end_stream=end)
        self.pump()
        return sid

    def stat(self, name):
        return self.store.snapshot().counters.get("http2." + name,
                                                  self.store.snapshot().gauges.get("http2." + name))


class Http2ServerCodecTests(CodecTestMixin, SynchronousTestCase):

    def test_interfaces(self):
        """The codec and its encoders sit behind the codec seam."""
        codec = self.codec()
        self.assertTrue(verifyObject(IServerCodec, codec))
        self.assertEqual(codec.protocol, "HTTP/2")
        self.request()
        self.assertTrue(verifyObject(IResponseEncoder, self.owner.decoders[0].encoder))

    def test_preface(self):
        """AUTO's preface detection: yes, not yet, no."""
        self.assertTrue(isHttp2Preface(PREFACE + b"x"))
        self.assertIsNone(isHttp2Preface(b"PRI * HT"))
        self.assertFalse(isHttp2Preface(b"GET / HTTP/1.1\r\n"))

    def test_settings(self):
        """Envoy's SETTINGS come first, with the connection window opened."""
        self.codec(maxConcurrentStreams=7, initialStreamWindowSize=70000)
        remote = self.client.remote_settings
        self.assertEqual(remote[SettingCodes.MAX_CONCURRENT_STREAMS], 7)
        self.assertEqual(remote[SettingCodes.INITIAL_WINDOW_SIZE], 70000)
        self.assertEqual(self.client.outbound_flow_control_window, 24 * 1024 * 1024)

    def test_envoySettingsFrame(self):
        """
        Envoy 1.40's first frames, byte for byte: SETTINGS (header table,
        extended CONNECT off, 1024 streams, a 16 MiB window) once the client
        spoke, the ACK of the client's, then the connection window to 24 MiB.
        """
        self.server = Http2ServerCodec(self.owner, self.transport, Http2Options(), self.stats,
                                       clock=self.clock)
        self.assertEqual(self.transport.value(), b"")
        self.server.dataReceived(PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        self.assertEqual(self.transport.value(), bytes.fromhex(
            "000018040000000000"
            "000100001000" "000800000000" "000300000400" "000401000000"
            "000000040100000000"
            "000004080000000000017f0001"))

    def test_requestAndResponse(self):
        """A request's head, body and trailers in; a response with trailers out."""
        self.codec()
        sid = self.request(b"/p?q", end=False, extra=[(b"x-a", b"1")])
        self.client.send_data(sid, b"body")
        self.client.send_headers(sid, [(b"x-t", b"2")], end_stream=True)
        self.pump()
        decoder = self.owner.decoders[0]
        kind, request, end = decoder.events[0]
        self.assertEqual((request.method, request.path, request.authority, request.scheme,
                          request.version), (b"GET", b"/p?q", b"a", b"http", "HTTP/2"))
        self.assertEqual(list(request.headers.items()), [(b"x-a", b"1")])
        self.assertEqual(decoder.events[1:], [("data", b"body", False),
                                              ("trailers", [(b"x-t", b"2")])])
        encoder = decoder.encoder
        encoder.encodeHeaders(ResponseHeaders(200, HeaderMap([(b"connection", b"close"),
                                                              (b"x-r", b"1")])), False)
        encoder.encodeData(b"hello", False)
        encoder.encodeTrailers(HeaderMap([(b"grpc-status", b"0")]))
        self.pump()
        kinds = [type(e) for e in self.events]
        self.assertIn(ResponseReceived, kinds)
        response = [e for e in self.events if isinstance(e, ResponseReceived)][0]
        self.assertEqual(response.headers, [(b":status", b"200"), (b"x-r", b"1")])
        self.assertEqual(b"".join(e.data for e in self.events if isinstance(e, DataReceived)),
                         b"hello")
        trailers = [e for e in self.events if isinstance(e, TrailersReceived)][0]
        self.assertEqual(trailers.headers, [(b"grpc-status", b"0")])
        self.assertEqual(self.stat("trailers"), 1)
        self.assertEqual(self.stat("streams_active"), 0)

    def test_concurrentStreams(self):
        """Several streams at once, answered out of order."""
        self.codec()
        a = self.request(b"/a")
        b = self.request(b"/b")
        self.assertEqual(self.stat("streams_active"), 2)
        second = self.owner.decoders[1].encoder
        second.encodeHeaders(ResponseHeaders(200, HeaderMap()), True)
        self.owner.decoders[0].encoder.encodeHeaders(ResponseHeaders(204, HeaderMap()), True)
        self.pump()
        ended = [e.stream_id for e in self.events if isinstance(e, StreamEnded)]
        self.assertEqual(ended, [b, a])

    def test_clientReset(self):
        """A client's RST_STREAM reaches the stream, counted as http2.rx_reset."""
        self.codec()
        sid = self.request(end=False)
        self.client.reset_stream(sid, ErrorCodes.CANCEL)
        self.pump()
        self.assertEqual(self.owner.decoders[0].events[-1], ("reset",))
        self.assertEqual(self.stat("rx_reset"), 1)

    def test_serverReset(self):
        """resetStream sends RST_STREAM, counted as http2.tx_reset."""
        self.codec()
        sid = self.request()
        self.owner.decoders[0].encoder.resetStream()
        self.pump()
        resets = [e for e in self.events if isinstance(e, StreamReset)]
        self.assertEqual([r.stream_id for r in resets], [sid])
        self.assertEqual(self.stat("tx_reset"), 1)

    def test_connectionSpecificHeaderIsProtocolError(self):
        """
        Envoy 1.40 (without override_stream_error_on_invalid_http_message)
        answers a request carrying a connection-specific header with nothing
        at all: no GOAWAY, the connection closed after the delayed close;
        counted as http2.rx_messaging_error.
        """
        self.codec()
        self.client.config.validate_outbound_headers = False
        self.client.config.normalize_outbound_headers = False
        self.request(extra=[(b"connection", b"keep-alive")])
        goaways = [e for e in self.events if isinstance(e, ConnectionTerminated)]
        self.assertEqual(goaways, [])
        self.assertEqual(self.owner.errors, ["http2.violation.of.messaging.rule"])
        self.assertEqual(self.stat("rx_messaging_error"), 1)

    def test_frameErrorSendsGoAway(self):
        """A frame-level protocol error: GOAWAY PROTOCOL_ERROR, as Envoy's."""
        self.codec()
        self.server.dataReceived(b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x")
        self.events.extend(self.client.receive_data(self.transport.value()))
        goaways = [e for e in self.events if isinstance(e, ConnectionTerminated)]
        self.assertEqual(goaways[0].error_code, ErrorCodes.PROTOCOL_ERROR)
        self.assertEqual(self.owner.errors, ["http2.codec_error"])

    def test_flowControlFollowsTheStream(self):
        """
        Body bytes are acknowledged as the stream takes them; while the
        stream is read-disabled its window stays closed, and reopens after.
        """
        self.codec(initialStreamWindowSize=65535)
        sid = self.request(end=False)
        encoder = self.owner.decoders[0].encoder
        encoder.readDisable(True)
        for _ in range(4):
            self.client.send_data(sid, b"x" * 15000)
        self.pump()
        self.assertLess(self.client.local_flow_control_window(sid), 10000)
        encoder.readDisable(False)
        self.pump()
        self.assertEqual(self.client.local_flow_control_window(sid), 65535)

    def test_responseWaitsForTheWindow(self):
        """
        Response data beyond the client's window waits; past the buffer
        limit the stream is told to pause its upstream, and resumes once the
        client opened its window.
        """
        self.server = Http2ServerCodec(self.owner, self.transport, Http2Options(), self.stats,
                                       clock=self.clock, bufferLimit=1000)
        self.client = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        self.client.initiate_connection()
        self.client.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 100})
        self.events = []
        self.pump()
        sid = self.request()
        decoder = self.owner.decoders[0]
        decoder.encoder.encodeHeaders(ResponseHeaders(200, HeaderMap()), False)
        decoder.encoder.encodeData(b"y" * 5000, True)
        self.pump()
        got = b"".join(e.data for e in self.events if isinstance(e, DataReceived))
        self.assertEqual(len(got), 100)
        self.assertIn(("above",), decoder.events)
        self.client.increment_flow_control_window(10000, sid)
        self.client.increment_flow_control_window(10000)
        self.pump()
        got = b"".join(e.data for e in self.events if isinstance(e, DataReceived))
        self.assertEqual(len(got), 5000)
        self.assertIn(("below",), decoder.events)
        self.assertTrue(any(isinstance(e, StreamEnded) for e in self.events))

    def test_emptyDataFlood(self):
        """Two empty DATA frames in a row: http2.inbound_empty_frames_flood."""
        self.codec()
        sid = self.request(end=False)
        self.client.send_data(sid, b"")
        self.client.send_data(sid, b"")
        self.pump()
        self.assertEqual(self.stat("inbound_empty_frames_flood"), 1)
        # Envoy 1.40: no GOAWAY; its connection manager closes after the
        # delayed close timeout (tests.e2e.test_http2_limits).
        self.assertFalse(any(isinstance(e, ConnectionTerminated) for e in self.events))
        self.assertEqual(self.owner.errors, ["http2.inbound_empty_frames_flood"])

    def test_invalidHeadStreamError(self):
        """
        override_stream_error_on_invalid_http_message: a forbidden request
        head resets its stream (PROTOCOL_ERROR); the connection serves on.
        """
        self.codec(clientValidates=False, streamErrorOnInvalidHttpMessage=True)
        bad = self.request(extra=[(b"connection", b"close")])
        self.assertEqual(self.owner.decoders, [])
        resets = [e for e in self.events if isinstance(e, StreamReset)]
        self.assertEqual([(e.stream_id, e.error_code) for e in resets],
                         [(bad, ErrorCodes.PROTOCOL_ERROR)])
        self.assertEqual(self.stat("rx_messaging_error"), 1)
        self.assertEqual(self.owner.streamErrors, ["http2.violation.of.messaging.rule"])
        self.request()
        self.assertEqual(len(self.owner.decoders), 1)
        self.assertEqual(self.owner.errors, [])

    def test_drainGoAway(self):
        """Drain: GOAWAY with the last stream id at its maximum, then the real one."""
        self.codec()
        sid = self.request()
        self.server.goAway()
        self.pump()
        first = [e for e in self.events if isinstance(e, ConnectionTerminated)]
        self.assertEqual(first[0].last_stream_id, 2147483647)
        self.server.goAway(final=True)
        self.pump()
        second = [e for e in self.events if isinstance(e, ConnectionTerminated)]
        self.assertEqual(second[-1].last_stream_id, sid)
        self.assertFalse(self.transport.disconnecting)
        self.owner.decoders[0].encoder.encodeHeaders(ResponseHeaders(200, HeaderMap()), True)
        self.pump()
        # The stream in flight got its response before the close.
        self.assertEqual([e.stream_id for e in self.events if isinstance(e, ResponseReceived)],
                         [sid])
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.stat("goaway_sent"), 2)

    def test_windowUpdatesCounted(self):
        """WINDOW_UPDATE frames past Envoy's allowance: a flood."""
        self.codec()
        for _ in range(30):
            self.client.increment_flow_control_window(1)
        self.pump()
        self.assertEqual(self.stat("inbound_window_update_frames_flood"), 1)

    def test_keepalive(self):
        """connection_keepalive: a PING each interval; no ACK in time closes."""
        self.codec(keepaliveInterval=10.0, keepaliveTimeout=1.0)
        self.clock.advance(10)
        ping = self.transport.value()
        self.assertTrue(ping)
        self.transport.clear()
        self.clock.advance(1)
        self.assertEqual(self.stat("keepalive_timeout"), 1)
        self.assertTrue(self.transport.disconnecting or self.transport.disconnected)


class EncoderTests(SynchronousTestCase):
    def test_provides(self):
        self.assertTrue(IResponseEncoder.implementedBy(Http2ResponseEncoder))
