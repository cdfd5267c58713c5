# -*- test-case-name: tests.http.http2.test_server_codec -*-
"""
The downstream HTTP/2 codec (Envoy's C{Http2::ServerConnectionImpl}), on the
C{h2} library, behind the same L{IServerCodec} seam as the HTTP/1.1 codec:
the connection manager hands it every byte, and it calls
C{callbacks.newStream(encoder)} for each request stream, then
C{decodeHeaders}, C{decodeData}, C{decodeTrailers} on the decoder it got
back, and C{onStreamReset()} when the client resets the stream or the
connection goes.

What Envoy does and this codec copies:
 - its SETTINGS (C{max_concurrent_streams}, C{initial_stream_window_size},
   C{hpack_table_size}, C{SETTINGS_ENABLE_CONNECT_PROTOCOL} with
   C{allow_connect}) and a WINDOW_UPDATE that opens the connection window
   to C{initial_connection_window_size};
 - flow control tied to the stream: body bytes are acknowledged (a
   WINDOW_UPDATE) as they are handed to the stream, except while the stream
   asked to stop reading (its upstream is backed up), so that a client
   never sends more than a window beyond what the upstream takes; response
   bytes wait for the client's window, and past the stream's buffer limit
   the stream is told to stop reading its upstream;
 - a protocol error (including headers HTTP/2 forbids, such as
   C{connection} or upper-case names) ends the connection with a GOAWAY
   carrying Envoy's error code; a stream reset either way counts
   C{http2.rx_reset} / C{http2.tx_reset}; with
   C{override_stream_error_on_invalid_http_message} a forbidden request
   head (or trailers) resets only its stream (RST_STREAM PROTOCOL_ERROR,
   C{http2.rx_messaging_error}) and the connection goes on;
 - the flood protections with their counters (an inbound flood closes
   the connection without a word, after the delayed close, as Envoy 1.40;
   an outbound one at once, with GOAWAY ENHANCE_YOUR_CALM: C{http2.outbound_flood},
   C{http2.outbound_control_flood}, C{http2.inbound_empty_frames_flood},
   C{http2.inbound_priority_frames_flood},
   C{http2.inbound_window_update_frames_flood});
 - drain: a GOAWAY with the last stream id at its maximum first, then,
   once the streams in flight are done, the real one (L{goAway}).

Nothing the client sends makes L{dataReceived} raise: only the callbacks'
and decoders' own exceptions leave it.
"""

from h2.config import H2Configuration
from h2.connection import ConnectionState, H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    InformationalResponseReceived,
    PingAckReceived,
    PingReceived,
    PriorityUpdated,
    RemoteSettingsChanged,
    RequestReceived,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import H2Error, ProtocolError
from h2.settings import SettingCodes
from h2.utilities import HeaderValidationFlags, validate_headers
from hpack import HPACKError
from hyperframe.frame import GoAwayFrame, SettingsFrame
from zope.interface import implementer

from txenvoy.http.headers import HeaderMap, RequestHeaders
from txenvoy.http.http1.codec import sharedDateCache
from txenvoy.http.http2.options import DEFAULT_HTTP2_OPTIONS
from txenvoy.http.read_disable import CountedReadDisable
from txenvoy.interfaces import IResponseEncoder, IServerCodec

__all__ = ["Http2ServerCodec", "Http2ResponseEncoder", "PREFACE", "isHttp2Preface"]

#: The client connection preface (RFC 9113 section 3.4).
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Response headers HTTP/2 forbids (RFC 9113 section 8.2.2); Envoy's codec
# never writes them.
_CONNECTION_SPECIFIC = frozenset([b"connection", b"keep-alive", b"proxy-connection",
                                  b"transfer-encoding", b"upgrade"])

_MAX_STREAM_ID = 2147483647

_REQUEST_HEAD = HeaderValidationFlags(is_client=False, is_trailer=False,
                                      is_response_header=False, is_push_promise=False)
_TRAILERS = HeaderValidationFlags(is_client=False, is_trailer=True,
                                  is_response_header=False, is_push_promise=False)


def isHttp2Preface(data):
    """
    @return: C{True} when C{data} starts with the HTTP/2 preface, C{False}
        when it cannot, C{None} while it is a proper prefix of it.
    """
    n = min(len(data), len(PREFACE))
    if data[:n] != PREFACE[:n]:
        return False
    return True if n == len(PREFACE) else None


def _goAwayFrames(data):
    """The GOAWAY frames in C{data} (serialized frames), as bytes."""
    out = []
    while len(data) >= 9:
        length = int.from_bytes(data[:3], "big")
        if data[3] == 0x07:
            out.append(data[:9 + length])
        data = data[9 + length:]
    return b"".join(out)


def _isCompressionError(error):
    """Whether h2 refused a header block HPACK could not decode."""
    cause = error
    while cause is not None:
        if isinstance(cause, HPACKError):
            return True
        cause = cause.__cause__ or cause.__context__
    return str(error).startswith("Error decoding header block")


def _offendingStreamId(error):
    """The stream id of the frame h2 was reading when C{error} was raised."""
    tb = error.__traceback__
    found = 0
    while tb is not None:
        frame = tb.tb_frame.f_locals.get("frame")
        streamId = getattr(frame, "stream_id", None)
        if isinstance(streamId, int):
            found = streamId
        tb = tb.tb_next
    return found


def _isMessagingError(error):
    """
    Whether h2 refused a header block for its content (its header
    validation in C{h2.utilities}) rather than a frame.
    """
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(("h2/utilities.py", "h2\\utilities.py")):
            return True
        tb = tb.tb_next
    return False


class _Flood(Exception):
    """A flood limit was passed: the connection ends."""

    def __init__(self, stat):
        Exception.__init__(self, stat)
        self.stat = stat


@implementer(IResponseEncoder)
class Http2ResponseEncoder:
    """
    One stream's response side: headers, flow-controlled data and trailers
    as HTTP/2 frames.

    @ivar streamId: the HTTP/2 stream id.
    @ivar decoder: the stream's decoder (the connection manager's stream).
    """

    responseStarted = False
    responseComplete = False
    decoder = None
    #: The RST_STREAM code of a stream answered before its request ended:
    #: Envoy's CONNECT_ERROR for a CONNECT whose tunnel failed.
    earlyResetCode = ErrorCodes.NO_ERROR

    def __init__(self, codec, streamId):
        self._codec = codec
        self.streamId = streamId
        self._pending = []          # response bytes waiting for the window
        self._pendingBytes = 0
        self._pendingEnd = False
        self._pendingTrailers = None
        self._above = False
        self._readDisabled = 0
        self._unacked = 0           # request bytes received and not acknowledged
        self.remoteComplete = False
        self.closed = False
        self.priorityFrames = 0

    # IResponseEncoder

    def setDecoder(self, decoder):
        """See L{IResponseEncoder.setDecoder}."""
        self.decoder = decoder

    def connectFailed(self):
        """
        The CONNECT tunnel of this stream failed (RFC 9113 section 8.5):
        a stream answered before its request ended is reset with
        CONNECT_ERROR, as Envoy resets it.
        """
        self.earlyResetCode = ErrorCodes.CONNECT_ERROR

    def encode100ContinueHeaders(self):
        """Write a 100 Continue head."""
        if not self.responseStarted and not self.closed:
            self._codec.sendHeaders(self, [(b":status", b"100")], False)

    def encodeHeaders(self, headers, endStream):
        """Write the response head; connection-specific headers are dropped."""
        if self.responseStarted or self.closed:
            return
        status = headers.status
        block = [(b":status", b"%d" % (status,))]
        for name, value in headers.headers.items():
            if name not in _CONNECTION_SPECIFIC:
                block.append((name, value))
        if status >= 200 or status == 101:
            self.responseStarted = True
        if endStream:
            self.responseComplete = True
        self._codec.sendHeaders(self, block, endStream)

    def encodeData(self, data, endStream):
        """Write body bytes as the client's flow-control window allows."""
        if self.responseComplete or self.closed:
            return
        if endStream:
            self.responseComplete = True
        if data:
            self._pending.append(data)
            self._pendingBytes += len(data)
        if endStream:
            self._pendingEnd = True
        self._codec.flushStream(self)

    def encodeTrailers(self, trailers):
        """End the response with trailers (after any data still waiting)."""
        if self.responseComplete or self.closed:
            return
        self.responseComplete = True
        block = [(n, v) for n, v in trailers.items() if n not in _CONNECTION_SPECIFIC]
        if not block:
            self._pendingEnd = True
        else:
            self._pendingTrailers = block
        self._codec.flushStream(self)

    def resetStream(self):
        """Reset the stream (RST_STREAM), counted as C{http2.tx_reset}."""
        if self.closed:
            return
        self._codec.resetStream(self, ErrorCodes.NO_ERROR)

    # Flow control.

    def readDisable(self, disable):
        """
        Stop (C{True}) or resume (C{False}) acknowledging the request body:
        the client's window for this stream closes while disabled.
        """
        if disable:
            self._readDisabled += 1
        elif self._readDisabled:
            self._readDisabled -= 1
            if not self._readDisabled and self._unacked:
                self._codec.acknowledge(self)


@implementer(IServerCodec)
class Http2ServerCodec(CountedReadDisable):
    """
    The downstream HTTP/2 codec of one connection.

    @param callbacks: the connection manager: C{newStream(encoder)},
        C{onCodecError(status, details)}, C{onStreamError(details)},
        C{onGoAwayComplete()} optional.
    @param transport: C{write}, C{loseConnection}, C{pauseProducing},
        C{resumeProducing}.
    @param options: the L{Http2Options}.
    @param stats: the root C{http2.*} stats (L{http2StatsFor}).
    @param bufferLimit: bytes of response data a stream may hold waiting
        for the client's window before its upstream is paused.
    @param maxRequestHeadersKb: limit on a request's header list.
    @param maxHeadersCount: limit on the number of request headers.
    @param clock: the reactor (C{seconds}, C{callLater}).
    """

    protocol = "HTTP/2"

    def __init__(self, callbacks, transport, options=DEFAULT_HTTP2_OPTIONS, stats=None,
                 bufferLimit=1024 * 1024, maxRequestHeadersKb=60, maxHeadersCount=100,
                 clock=None):
        self._callbacks = callbacks
        self._transport = transport
        self._options = options
        self._stats = stats
        self._bufferLimit = bufferLimit
        self._maxHeaderBytes = maxRequestHeadersKb * 1024
        self._maxHeadersCount = maxHeadersCount
        self._clock = clock
        self.dateCache = sharedDateCache(clock)
        self._streams = {}
        self._closed = False
        self._lost = False
        self._readDisableCount = 0
        self._emptyFrames = 0
        self._dataFramesSent = 0
        self._openedStreams = 0
        self._windowUpdates = 0
        self._outboundPaused = False
        self._outboundFrames = 0
        self._outboundControlFrames = 0
        self._goAwaySent = False
        self._lastGoAwayId = None
        self._pingCall = None
        self._pingTimeoutCall = None
        # Stream errors: the heads are checked here, stream by stream, as
        # h2's own check would end the whole connection.
        self._streamErrors = options.streamErrorOnInvalidHttpMessage
        config = H2Configuration(client_side=False, header_encoding=None,
                                 validate_inbound_headers=not self._streamErrors,
                                 normalize_inbound_headers=False,
                                 validate_outbound_headers=False,
                                 normalize_outbound_headers=False)
        conn = self._conn = H2Connection(config=config)
        # Envoy's SETTINGS, in its order; h2 applies the same values once
        # the client acknowledges them.
        ordered = [
            (SettingCodes.HEADER_TABLE_SIZE, options.hpackTableSize),
            (SettingCodes.ENABLE_CONNECT_PROTOCOL, 1 if options.allowConnect else 0),
            (SettingCodes.MAX_CONCURRENT_STREAMS, options.maxConcurrentStreams),
            (SettingCodes.INITIAL_WINDOW_SIZE, options.initialStreamWindowSize),
        ]
        conn.local_settings = type(conn.local_settings)(client=False,
                                                        initial_values=dict(ordered))
        conn.initiate_connection()
        conn.data_to_send()
        frame = SettingsFrame(0)
        for code, value in ordered:
            frame.settings[code] = value
        # Written with the first answer, as Envoy makes its codec when the
        # first bytes come.
        self._preface = frame.serialize()
        if options.keepaliveInterval and clock is not None:
            self._pingCall = clock.callLater(options.keepaliveInterval, self._sendPing)

    # -- IServerCodec ---------------------------------------------------------

    def dataReceived(self, data):
        """Frames from the client; a protocol error ends the connection."""
        if self._closed:
            return
        preface = self._preface
        try:
            events = self._conn.receive_data(data)
        except (ProtocolError, HPACKError, H2Error, ValueError, IndexError,
                KeyError, UnicodeError) as e:
            self._protocolError(e)
            return
        if preface is not None:
            self._preface = None
            self._transport.write(preface)
            extra = self._options.initialConnectionWindowSize - 65535
            if extra > 0:
                # After the ACK of the client's SETTINGS, as Envoy sends it.
                self._flush()
                self._conn.increment_flow_control_window(extra)
        try:
            for event in events:
                if self._closed:
                    break
                self._handle(event)
        except _Flood as flood:
            self._floodError(flood.stat)
            return
        self._flush()

    def connectionLost(self, reason=None):
        """Every open stream is reset (connection termination)."""
        self._lost = True
        self._closed = True
        self._cancelKeepalive()
        self._resetAll()

    def _resetAll(self):
        # The connection ends: every open stream hears of it.
        streams = list(self._streams.values())
        self._streams.clear()
        for encoder in streams:
            self._closeStream(encoder, notify=True)

    # -- what the connection manager asks -------------------------------------

    @property
    def activeStreams(self):
        """The number of streams open."""
        return len(self._streams)

    def goAway(self, final=False):
        """
        Drain as Envoy does: the first GOAWAY names the largest stream id
        (every stream in flight, and any racing one, still counts); the
        second (C{final}) names the last stream really received.
        """
        if self._closed:
            return
        conn = self._conn
        if not final and self._lastGoAwayId is None:
            frame = GoAwayFrame(0)
            frame.last_stream_id = _MAX_STREAM_ID
            frame.error_code = ErrorCodes.NO_ERROR
            self._lastGoAwayId = _MAX_STREAM_ID
            self._transport.write(frame.serialize())
            if self._stats is not None:
                self._stats.goaway_sent.inc()
            return
        if self._goAwaySent:
            return
        self._goAwaySent = True
        self._lastGoAwayId = conn.highest_inbound_stream_id
        conn.close_connection(ErrorCodes.NO_ERROR, last_stream_id=self._lastGoAwayId)
        # The streams in flight still get their responses.
        self._reopenAfterGoAway()
        if not self._streams:
            self._flush()
            self._close()
            return
        if self._stats is not None:
            self._stats.goaway_sent.inc()
        self._flush()

    # -- events ---------------------------------------------------------------

    def _handle(self, event):
        kind = type(event)
        if kind is DataReceived:
            self._onData(event)
        elif kind is RequestReceived:
            self._emptyFrames = 0
            self._onRequest(event)
        elif kind is TrailersReceived:
            self._emptyFrames = 0
            self._onTrailers(event)
        elif kind is StreamReset:
            self._onRemoteReset(event)
        elif kind is WindowUpdated:
            self._onWindowUpdated(event)
        elif kind is PingReceived:
            self._countControlFrame()
        elif kind is PingAckReceived:
            self._onPingAck()
        elif kind is RemoteSettingsChanged:
            self._countControlFrame()
            size = event.changed_settings.get(SettingCodes.HEADER_TABLE_SIZE)
            if size is not None and size.new_value == size.original_value:
                # nghttp2 (Envoy's codec) announces its table size in the
                # next header block whenever the client names one, even
                # unchanged; h2 only when it changes.
                encoder = self._conn.encoder
                encoder.table_size_changes.append(size.new_value)
                encoder.header_table.resized = True
        elif kind is PriorityUpdated:
            self._onPriority(event)
        elif kind is ConnectionTerminated:
            self._onRemoteGoAway(event)
        elif kind is InformationalResponseReceived:
            pass

    def _onRequest(self, event):
        streamId = event.stream_id
        if self._goAwaySent:
            # Past the final GOAWAY: refused, never seen.
            self._conn.reset_stream(streamId, ErrorCodes.REFUSED_STREAM)
            return
        if self._streamErrors and not self._validHead(event.headers, _REQUEST_HEAD):
            self._messagingStreamError(streamId)
            self._callbacks.onStreamError("http2.violation.of.messaging.rule")
            return
        headers = []
        method = path = authority = scheme = protocol = None
        size = 0
        count = 0
        for name, value in event.headers:
            size += len(name) + len(value)
            if name[:1] == b":":
                if name == b":method":
                    method = value
                elif name == b":path":
                    path = value
                elif name == b":authority":
                    authority = value
                elif name == b":scheme":
                    scheme = value
                elif name == b":protocol":
                    protocol = value
                continue
            count += 1
            if name == b"host":
                if authority is None:
                    authority = value
                continue
            headers.append((name, value))
        if count > self._maxHeadersCount or size > self._maxHeaderBytes:
            # Envoy: the stream is reset (INTERNAL_ERROR, its codec's
            # answer to a failed header callback), counted as a header overflow.
            if self._stats is not None:
                self._stats.header_overflow.inc()
            self._conn.reset_stream(streamId, ErrorCodes.INTERNAL_ERROR)
            if self._stats is not None:
                self._stats.tx_reset.inc()
            return
        request = RequestHeaders(method, path, authority, scheme, "HTTP/2",
                                 HeaderMap.fromList(headers))
        endStream = event.stream_ended is not None
        if method == b"CONNECT":
            request.upgrade = protocol.lower() if protocol is not None else b"connect"
            if protocol is None:
                request.path = None
        self._openedStreams += 1
        encoder = Http2ResponseEncoder(self, streamId)
        encoder.remoteComplete = endStream
        self._streams[streamId] = encoder
        if self._stats is not None:
            self._stats.streams_active.inc()
        decoder = encoder.decoder = self._callbacks.newStream(encoder)
        decoder.decodeHeaders(request, endStream)

    def _onData(self, event):
        streamId = event.stream_id
        length = event.flow_controlled_length
        data = event.data
        endStream = event.stream_ended is not None
        if not data and not endStream:
            self._emptyFrames += 1
            if self._emptyFrames > self._options.maxConsecutiveInboundFramesWithEmptyPayload:
                raise _Flood("inbound_empty_frames_flood")
        else:
            self._emptyFrames = 0
        encoder = self._streams.get(streamId)
        if encoder is None or encoder.closed:
            if length:
                self._conn.acknowledge_received_data(length, streamId)
            return
        if length:
            if encoder._readDisabled:
                encoder._unacked += length
            else:
                self._conn.acknowledge_received_data(length, streamId)
        if endStream:
            encoder.remoteComplete = True
        encoder.decoder.decodeData(data, endStream)
        self._maybeDone(encoder)

    def _onTrailers(self, event):
        encoder = self._streams.get(event.stream_id)
        if encoder is None or encoder.closed:
            return
        if self._streamErrors and not self._validHead(event.headers, _TRAILERS):
            self._messagingStreamError(event.stream_id)
            self._streams.pop(event.stream_id, None)
            self._closeStream(encoder, notify=True)
            return
        if self._stats is not None:
            self._stats.trailers.inc()
        encoder.remoteComplete = True
        trailers = HeaderMap.fromList(
            [(n, v) for n, v in event.headers if n[:1] != b":"])
        encoder.decoder.decodeTrailers(trailers)
        self._maybeDone(encoder)

    def _validHead(self, headers, flags):
        """Whether h2's rules for a received head accept C{headers}."""
        try:
            for _ in validate_headers(headers, flags):
                pass
        except ProtocolError:
            return False
        return True

    def _messagingStreamError(self, streamId):
        """Envoy's stream error for a forbidden head: RST_STREAM PROTOCOL_ERROR."""
        if self._stats is not None:
            self._stats.rx_messaging_error.inc()
            self._stats.tx_reset.inc()
        try:
            self._conn.reset_stream(streamId, ErrorCodes.PROTOCOL_ERROR)
        except H2Error:
            pass
        self._countControlFrame()

    def _onRemoteReset(self, event):
        if self._stats is not None:
            self._stats.rx_reset.inc()
        encoder = self._streams.pop(event.stream_id, None)
        if encoder is not None:
            self._closeStream(encoder, notify=True)

    def _onWindowUpdated(self, event):
        self._windowUpdates += 1
        limit = self._options.maxInboundWindowUpdateFramesPerDataFrameSent
        # Envoy's rule (Http2ProtocolOptions): at most
        # 5 + 2 * (opened streams + limit * DATA frames sent) of them.
        if self._windowUpdates > 5 + 2 * (self._openedStreams + limit * self._dataFramesSent):
            raise _Flood("inbound_window_update_frames_flood")
        if event.stream_id == 0:
            for encoder in list(self._streams.values()):
                if encoder._pending or encoder._pendingEnd or encoder._pendingTrailers:
                    self.flushStream(encoder, flush=False)
        else:
            encoder = self._streams.get(event.stream_id)
            if encoder is not None:
                self.flushStream(encoder, flush=False)

    def _onPriority(self, event):
        encoder = self._streams.get(event.stream_id)
        self._priorityFrames = getattr(self, "_priorityFrames", 0) + 1
        limit = self._options.maxInboundPriorityFramesPerStream
        # Envoy's rule (Http2ProtocolOptions): at most
        # limit * (1 + opened streams) PRIORITY frames.
        if self._priorityFrames > limit * (1 + self._openedStreams):
            raise _Flood("inbound_priority_frames_flood")
        if encoder is not None:
            encoder.priorityFrames += 1

    def _onRemoteGoAway(self, event):
        # The client goes: what is in flight finishes, then the connection.
        # h2 closes its state machine on a GOAWAY; the streams it spares
        # still run to their end (RFC 9113 section 6.8), so it reopens.
        self._reopenAfterGoAway()
        self._remoteGoAway = True
        if not self._streams:
            self._close()

    def _reopenAfterGoAway(self):
        machine = self._conn.state_machine
        if machine.state == ConnectionState.CLOSED:
            machine.state = ConnectionState.SERVER_OPEN

    def _onPingAck(self):
        call = self._pingTimeoutCall
        if call is not None and call.active():
            call.cancel()
        self._pingTimeoutCall = None

    # -- keepalive ------------------------------------------------------------

    def _sendPing(self):
        self._pingCall = None
        if self._closed:
            return
        self._conn.ping(b"txenvoy\x00")
        self._flush()
        self._pingTimeoutCall = self._clock.callLater(self._options.keepaliveTimeout,
                                                      self._onPingTimeout)
        self._pingCall = self._clock.callLater(self._options.keepaliveInterval, self._sendPing)

    def _onPingTimeout(self):
        self._pingTimeoutCall = None
        if self._closed:
            return
        if self._stats is not None:
            self._stats.keepalive_timeout.inc()
        self._close(abort=True)

    def _cancelKeepalive(self):
        for call in (self._pingCall, self._pingTimeoutCall):
            if call is not None and call.active():
                call.cancel()
        self._pingCall = self._pingTimeoutCall = None

    # -- output ---------------------------------------------------------------

    def sendHeaders(self, encoder, block, endStream):
        """Write a HEADERS frame for C{encoder}'s stream."""
        if self._closed or encoder.closed:
            return
        try:
            self._conn.send_headers(encoder.streamId, block, end_stream=endStream)
        except H2Error:
            self._abandon(encoder)
            return
        self._countFrame()
        if endStream:
            self._maybeDone(encoder)
        self._flush()

    def flushStream(self, encoder, flush=True):
        """Send what the windows allow of C{encoder}'s waiting response."""
        if self._closed or encoder.closed:
            return
        conn = self._conn
        streamId = encoder.streamId
        pending = encoder._pending
        try:
            while pending:
                window = conn.local_flow_control_window(streamId)
                if window <= 0:
                    break
                chunk = pending[0]
                size = min(window, conn.max_outbound_frame_size)
                if len(chunk) > size:
                    pending[0] = chunk[size:]
                    chunk = chunk[:size]
                else:
                    pending.pop(0)
                encoder._pendingBytes -= len(chunk)
                last = (not pending and encoder._pendingEnd
                        and encoder._pendingTrailers is None)
                conn.send_data(streamId, chunk, end_stream=last)
                self._dataFramesSent += 1
                self._countFrame()
                if last:
                    encoder._pendingEnd = False
            if not pending:
                if encoder._pendingTrailers is not None:
                    block, encoder._pendingTrailers = encoder._pendingTrailers, None
                    encoder._pendingEnd = False
                    conn.send_headers(streamId, block, end_stream=True)
                    self._countFrame()
                elif encoder._pendingEnd:
                    encoder._pendingEnd = False
                    conn.end_stream(streamId)
                    self._countFrame()
        except _Flood:
            raise
        except H2Error:
            self._abandon(encoder)
            return
        self._watermark(encoder)
        self._maybeDone(encoder)
        if flush:
            self._flush()

    def _watermark(self, encoder):
        # Past the buffer limit the stream's upstream is paused, as Envoy's
        # per-stream write buffer watermarks do.
        decoder = encoder.decoder
        if not encoder._above and encoder._pendingBytes > self._bufferLimit:
            encoder._above = True
            if decoder is not None:
                decoder.onAboveWriteBufferHighWatermark()
        elif encoder._above and encoder._pendingBytes <= self._bufferLimit // 2:
            encoder._above = False
            if decoder is not None:
                decoder.onBelowWriteBufferLowWatermark()

    def acknowledge(self, encoder):
        """Send the WINDOW_UPDATE held back while the stream was read-disabled."""
        unacked, encoder._unacked = encoder._unacked, 0
        if self._closed or encoder.closed:
            return
        try:
            self._conn.acknowledge_received_data(unacked, encoder.streamId)
        except H2Error:
            return
        self._flush()

    def resetStream(self, encoder, code):
        """Reset C{encoder}'s stream with C{code}."""
        if self._closed or encoder.closed:
            return
        try:
            self._conn.reset_stream(encoder.streamId, code)
        except H2Error:
            pass
        if self._stats is not None:
            self._stats.tx_reset.inc()
        self._countControlFrame()
        self._streams.pop(encoder.streamId, None)
        self._closeStream(encoder, notify=False)
        self._flush()

    def _abandon(self, encoder):
        # The stream is gone on h2's side (the client reset it as we wrote).
        self._streams.pop(encoder.streamId, None)
        self._closeStream(encoder, notify=True)

    def _maybeDone(self, encoder):
        if (encoder.responseComplete and not encoder._pending
                and not encoder._pendingEnd and encoder._pendingTrailers is None
                and not encoder.closed):
            if not encoder.remoteComplete:
                # Envoy resets a stream whose response is sent before its
                # request ended (RST_STREAM NO_ERROR, RFC 9113 section 8.1).
                try:
                    self._conn.reset_stream(encoder.streamId, encoder.earlyResetCode)
                except H2Error:
                    return
                if self._stats is not None:
                    self._stats.tx_reset.inc()
                self._countControlFrame()
            self._streams.pop(encoder.streamId, None)
            self._closeStream(encoder, notify=False)

    def _closeStream(self, encoder, notify):
        if encoder.closed:
            return
        encoder.closed = True
        if self._stats is not None:
            self._stats.streams_active.dec()
        if notify and encoder.decoder is not None:
            encoder.decoder.onStreamReset()
        if not self._streams:
            if self._goAwaySent or getattr(self, "_remoteGoAway", False):
                self._close()
            else:
                onIdle = getattr(self._callbacks, "onCodecIdle", None)
                if onIdle is not None and not self._lost:
                    onIdle()

    def _countFrame(self):
        if self._outboundPaused:
            self._outboundFrames += 1
            if self._outboundFrames > self._options.maxOutboundFrames:
                raise _Flood("outbound_flood")

    def _countControlFrame(self):
        if self._outboundPaused:
            self._outboundControlFrames += 1
            if self._outboundControlFrames > self._options.maxOutboundControlFrames:
                raise _Flood("outbound_control_flood")
            self._countFrame()

    def outboundPaused(self, paused):
        """
        The transport's write buffer passed its high watermark (C{True}) or
        drained (C{False}): frames written while it is full count against
        C{max_outbound_frames} and C{max_outbound_control_frames}.
        """
        self._outboundPaused = paused
        if not paused:
            self._outboundFrames = 0
            self._outboundControlFrames = 0

    def _flush(self):
        data = self._conn.data_to_send()
        if data and not self._lost:
            self._transport.write(data)

    def _protocolError(self, error):
        # A request head HTTP/2 forbids (connection-specific or upper-case
        # names, bad pseudo-headers): Envoy 1.40 writes nothing more and
        # closes, its stream reset. Other protocol errors: h2 queued the
        # GOAWAY with the error's code, written after Envoy's SETTINGS when
        # they are not out yet.
        messaging = _isMessagingError(error)
        if messaging:
            if self._stats is not None:
                self._stats.rx_messaging_error.inc()
            self._conn.data_to_send()
        else:
            # Envoy writes its SETTINGS (if not out yet) and the GOAWAY, and
            # nothing else the same read would have caused (no SETTINGS ACK).
            preface, self._preface = self._preface, None
            goAway = _goAwayFrames(self._conn.data_to_send())
            if _isCompressionError(error):
                # Envoy: COMPRESSION_ERROR, naming the stream whose header
                # block failed.
                frame = GoAwayFrame(0)
                frame.last_stream_id = max(self._conn.highest_inbound_stream_id,
                                           _offendingStreamId(error))
                frame.error_code = ErrorCodes.COMPRESSION_ERROR
                goAway = frame.serialize()
            if not self._lost:
                self._transport.write((preface or b"") + goAway)
        self._closed = True
        self._cancelKeepalive()
        self._resetAll()
        self._callbacks.onCodecError(
            None, "http2.violation.of.messaging.rule" if messaging else "http2.codec_error")

    def _floodError(self, stat):
        if self._stats is not None:
            getattr(self._stats, stat).inc()
        if stat.startswith("inbound"):
            # Envoy 1.40 answers an inbound flood as a forbidden head:
            # nothing more is written (no GOAWAY), and the connection
            # closes after the delayed close timeout.
            self._conn.data_to_send()
            self._closed = True
            self._cancelKeepalive()
            self._resetAll()
            self._callbacks.onCodecError(None, "http2.%s" % (stat,))
            return
        try:
            self._conn.close_connection(ErrorCodes.ENHANCE_YOUR_CALM)
        except H2Error:
            pass
        self._flush()
        self._close(abort=stat.startswith("outbound"))
        self._callbacks.onCodecError(None, "http2.%s" % (stat,))

    def _close(self, abort=False):
        if self._closed and self._lost:
            return
        if not self._lost and not abort:
            # What is queued (a response's end, a GOAWAY) goes out first.
            self._flush()
        self._closed = True
        self._cancelKeepalive()
        self._resetAll()
        if not self._lost:
            self._lost = True
            if abort and hasattr(self._transport, "abortConnection"):
                self._transport.abortConnection()
            else:
                self._transport.loseConnection()
