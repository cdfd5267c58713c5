# -*- test-case-name: tests.http.http1.test_server_codec -*-
"""
The downstream HTTP/1.1 codec (Envoy's C{Http1::ServerConnectionImpl}).

The connection manager owns the connection's Protocol and hands every byte
to L{ServerCodec.dataReceived}. For each request the codec asks
C{callbacks.newStream(encoder)} for a decoder, then calls, on that decoder::

    decodeHeaders(requestHeaders, endStream)
    decodeData(data, endStream)
    decodeTrailers(trailers)          # only with enableTrailers

and the connection manager answers through the L{ResponseEncoder}::

    encodeHeaders(responseHeaders, endStream)
    encode100ContinueHeaders()
    encodeData(data, endStream)
    encodeTrailers(trailers)
    resetStream()

Requests are handed over one at a time, as in Envoy: request n+1 reaches
C{newStream} once the response to request n is complete, and reading is
paused while a complete request waits for its response. Writes made while
the codec is handling input are gathered and written once at the end.

Malformed input is answered by the codec itself as Envoy 1.40 answers it
(each case is pinned by a test), the connection is closed after the reply,
and C{callbacks.onCodecError(status, details)} is called with Envoy's
response code details. llhttp parses the common case; where it and Envoy's
own parser (balsa) part ways, a head is parsed again line by line and read
as balsa reads it: the request line is cut at whitespace and judged when it
ends (method, target, version form), a bare LF always ends a line (so
C{POST /c\\n HTTP/1.1} is never C{POST /c HTTP/1.1}), Transfer-Encoding
headers are one list, and other faults in a head are answered once its
empty line has come, as Envoy does. C{bench/differential.py} compares the
two on mutated requests. Only the callbacks' and decoders' own exceptions
ever leave L{ServerCodec.dataReceived}.
"""

import re
from collections import deque

from httptools import HttpParserCallbackError, HttpParserError, HttpParserUpgrade
from zope.interface import implementer

from txenvoy.http.http1.codec import (
    LAST_CHUNK,
    PLAIN_NAME_MAX_LENGTH,
    PLAIN_NAMES,
    PLAIN_NAMES_MAX,
    CodecError,
    Details,
    Http1Connection,
    StopParsing,
    joinTransferEncoding,
    localReply,
    parserError,
    sharedDateCache,
)
from txenvoy.http.headers import HeaderMap, RequestHeaders, startRequest
from txenvoy.http.http1.lenient import (
    ENVOY_METHODS,
    Forwarder,
    LenientParsing,
    Reparse,
    newParser,
)
from txenvoy.http.pool_base import GATHER_MIN_BYTES
from txenvoy.http.read_disable import CountedReadDisable
from txenvoy.http.status import statusLine
from txenvoy.interfaces import IResponseEncoder, IServerCodec

__all__ = ["ServerCodec", "ResponseEncoder"]

# Request headers with a meaning for the codec (see ServerCodec._namedHeader).
_HOST, _CONTENT_LENGTH, _TRANSFER_ENCODING, _CONNECTION, _UPGRADE, _EXPECT = range(6)
_SPECIAL = {
    b"host": _HOST,
    b"content-length": _CONTENT_LENGTH,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"connection": _CONNECTION,
    b"upgrade": _UPGRADE,
    b"expect": _EXPECT,
}
# The same, by spelling as received; filled as spellings are seen.
_SPECIAL_RAW = {}

_newObject = object.__new__

# Envoy's sanitizeConnectionHeader: tokens that nominate no header, and
# nominations that fail the request.
_CONNECTION_PLAIN = frozenset([b"close", b"keep-alive", b"upgrade", b"http2-settings"])
_CONNECTION_FORBIDDEN = frozenset(
    [b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto"])
_MAX_NOMINATED_HEADERS = 10

_ABSOLUTE_URL = re.compile(rb"([A-Za-z][A-Za-z0-9+.\-]*)://([^/?#]*)(.*)", re.S)
_AUTHORITY = re.compile(rb"[A-Za-z0-9!$&'()*+,;=\-._~:@%\[\]]*")
_PORT = re.compile(rb"[^\]]*:([0-9]+)")
# The authority of an absolute-form target, as far as Envoy's URL parser
# takes it: letters, digits, - and . or an IPv6 literal, an optional port.
_URL_AUTHORITY = re.compile(
    rb"(?:[^@/?#]*@)?(?:[A-Za-z0-9\-.]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]*)?")
# A CONNECT target: host:port.
_CONNECT_TARGET = re.compile(rb"[A-Za-z0-9\-._~]+:[0-9]{1,5}")

# Request headers that Envoy 1.40's header map keeps inline (its built-in
# ones and those its compiled-in extensions register): repeats are joined
# into one entry, so they count once against max_headers_count. Observed
# one by one against real Envoy (101 repeats: 200 for these, 431 for the
# others, e.g. cookie, accept-language, range, forwarded, traceparent).
_INLINE_HEADERS = frozenset([
    b"accept", b"accept-encoding", b"access-control-request-headers",
    b"access-control-request-method", b"access-control-request-private-network",
    b"authorization", b"cache-control", b"connection", b"content-encoding",
    b"content-length", b"content-type", b"expect", b"grpc-accept-encoding", b"grpc-timeout",
    b"if-match", b"if-modified-since", b"if-none-match", b"if-range", b"if-unmodified-since",
    b"keep-alive", b"origin", b"pragma", b"proxy-connection", b"proxy-status", b"referer",
    b"te", b"upgrade", b"user-agent", b"via", b"x-client-trace-id",
    b"x-envoy-attempt-count", b"x-envoy-decorator-operation",
    b"x-envoy-downstream-service-cluster", b"x-envoy-downstream-service-node",
    b"x-envoy-expected-rq-timeout-ms", b"x-envoy-external-address", b"x-envoy-force-trace",
    b"x-envoy-hedge-on-per-try-timeout", b"x-envoy-internal", b"x-envoy-ip-tags",
    b"x-envoy-is-timeout-retry", b"x-envoy-max-retries", b"x-envoy-original-host",
    b"x-envoy-original-path", b"x-envoy-original-url", b"x-envoy-retriable-header-names",
    b"x-envoy-retriable-status-codes", b"x-envoy-retry-grpc-on", b"x-envoy-retry-on",
    b"x-envoy-upstream-alt-stat-name", b"x-envoy-upstream-rq-per-try-timeout-ms",
    b"x-envoy-upstream-rq-timeout-alt-response", b"x-envoy-upstream-rq-timeout-ms",
    b"x-envoy-upstream-stream-duration-ms", b"x-forwarded-client-cert", b"x-forwarded-for",
    b"x-forwarded-host", b"x-forwarded-port", b"x-forwarded-proto", b"x-request-id",
])

# Parse events queued for a request that waits for its turn.
_EV_HEADERS, _EV_DATA, _EV_TRAILERS = range(3)

# Status lines without their CRLF, by code.
_STATUS_LINES = {code: statusLine(code)[:-2] for code in range(100, 600)}

# Response headers the encoder looks at while it serialises.
_RESPONSE_SPECIAL = frozenset([b"content-length", b"transfer-encoding", b"connection"])

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

_UNDERSCORE_ACTIONS = ("ALLOW", "REJECT_REQUEST", "DROP_HEADER")

# The reads since the parser was last between messages are kept (by
# reference) so that a head needing a rewrite can be parsed again; past
# this, or once a body larger than _REPLAY_BODY starts, such a head is
# answered 400 instead.
_REPLAY_LIMIT = 64 * 1024
_REPLAY_BODY = 16 * 1024


@implementer(IResponseEncoder)
class ResponseEncoder:
    """
    One request's response side (Envoy's C{ResponseEncoder}), handed to
    C{callbacks.newStream}.

    Framing follows Envoy: a C{content-length} in the headers is used as it
    is; without one, a headers-only response gets C{content-length: 0}, an
    HTTP/1.1 response with a body is chunked and an HTTP/1.0 one is ended by
    closing the connection. Responses to C{HEAD}, and 1xx, 204 and 304
    responses, carry no body (data given for them is dropped). After a 101
    to an upgrade request, or a 2xx to C{CONNECT}, data is written raw. A
    C{transfer-encoding} entry in the given headers is ignored.

    When the connection is to close after the response (the request asked
    for it, it is HTTP/1.0 without keep-alive, or the response started
    before the request was read in full) a C{connection: close} header is
    added unless the headers have a C{connection} entry.
    """

    # Defaults shared by every instance: a stream only stores what differs.
    _decoder = None
    _events = None
    _requestComplete = False
    _isHead = False
    _isConnect = False
    _upgrade = False
    _http10 = False
    _keepAlive = True
    _started = False
    _complete = False
    _chunked = False
    _noBody = False
    _raw = False
    _closeAfter = False

    #: Bytes of this response written to the connection (Envoy's
    #: downstream wire bytes sent), and of its head (header bytes sent).
    wireBytesSent = 0
    headerBytesSent = 0

    def __init__(self, codec):
        _startResponse(self, codec)

    def _send(self, data):
        self.wireBytesSent += len(data)
        self._codec.send(data)

    @property
    def responseStarted(self):
        """Whether the response head has been written."""
        return self._started

    @property
    def responseComplete(self):
        """Whether the response has been written in full."""
        return self._complete

    def setDecoder(self, decoder):
        """See L{IResponseEncoder.setDecoder}."""
        self._decoder = decoder

    def encode100ContinueHeaders(self):
        """Write C{HTTP/1.1 100 Continue}, unless the response has started."""
        if not self._started and not self._complete and not self._codec.closed:
            self._send(_CONTINUE)

    def encodeHeaders(self, headers, endStream):
        """
        Write the response head.

        @param headers: a L{ResponseHeaders}. A 1xx other than 101 is
            written as an informational head and does not start the
            response.
        @param endStream: no body follows.
        """
        codec = self._codec
        if self._started or self._complete or codec._closed:
            return
        status = headers.status
        http10 = self._http10
        close = self._closeAfter
        cl = None
        connection = None
        lines = [_STATUS_LINES.get(status) or statusLine(status)]
        append = lines.append
        for entry in headers.headers._entries:
            name = entry[0]
            if name in _RESPONSE_SPECIAL:
                if name == b"transfer-encoding":
                    continue
                if name == b"content-length":
                    cl = entry[1]
                else:
                    connection = entry[1]
                    if b"close" in connection.lower():
                        close = True
            append(b": ".join(entry))
        if http10:
            lines[0] = statusLine(status, True)[:-2]

        if status < 200 and status != 101:
            self._writeHead(lines, None)
            return
        self._started = True

        if (status == 101 and self._upgrade) or (
                self._isConnect and 200 <= status < 300):
            # The connection now carries the upgraded protocol.
            self._raw = True
            framing = None
        else:
            if self._upgrade or not self._requestComplete:
                # Answered before the request was read in full, or an
                # upgrade refused: what follows on the connection cannot be
                # parsed.
                close = True
            if cl is not None or status < 200 or status == 204 or status == 304:
                framing = None
            elif endStream:
                framing = None if self._isHead else b"content-length: 0"
            elif http10:
                close = True
                framing = None
            else:
                framing = b"transfer-encoding: chunked"
                self._chunked = not self._isHead
            if self._isHead or status == 204 or status == 304:
                self._noBody = True

        if close:
            self._closeAfter = True
            if connection is None:
                append(b"connection: close")
        elif http10 and connection is None:
            append(b"connection: keep-alive")
        if framing is not None:
            append(framing)
        # Two empty items end the last line and the head.
        append(b"")
        append(b"")
        head = b"\r\n".join(lines)
        # Envoy's header bytes are the header lines only: not the status
        # line, nor the blank line that ends the head.
        size = len(head)
        self.headerBytesSent = size - len(lines[0]) - 4
        self.wireBytesSent += size      # _send, inline
        codec.send(head)
        if endStream and not self._raw:
            self._complete = True
            codec.onResponseComplete(self)

    def _writeHead(self, lines, framing):
        if framing is not None:
            lines.append(framing)
        lines.append(b"")
        lines.append(b"")
        self._send(b"\r\n".join(lines))

    def encodeData(self, data, endStream):
        """
        Write body bytes (chunk-framed when the response is chunked).

        @param data: bytes, possibly empty.
        @param endStream: this ends the response.
        """
        codec = self._codec
        if self._complete or codec._closed:
            return
        if not self._started:
            raise ValueError("encodeData before encodeHeaders")
        if data and not self._noBody:
            if self._chunked:
                if len(data) < GATHER_MIN_BYTES:
                    self._send(codec.chunk(data, endStream))
                else:
                    pieces = codec.chunkPieces(data, endStream)
                    self.wireBytesSent += len(pieces[0]) + len(data) + len(pieces[2])
                    codec.sendSequence(pieces)
                if endStream:
                    self._complete = True
                    codec.onResponseComplete(self)
                    return
            else:
                # _send, inline: the body of every small response.
                self.wireBytesSent += len(data)
                codec.send(data)
        if endStream:
            if self._raw:
                # An upgraded stream ends with the connection.
                self._complete = True
                codec.closeConnection()
                return
            if self._chunked:
                self._send(LAST_CHUNK)
            self._complete = True
            codec.onResponseComplete(self)

    def encodeTrailers(self, trailers):
        """
        End the response with trailers. As in Envoy they are written only
        when the codec was built with C{enableTrailers} and the response is
        chunked; otherwise the response just ends.

        @param trailers: a L{HeaderMap}.
        """
        codec = self._codec
        if self._complete or codec.closed or not self._started:
            return
        if self._chunked:
            self._send(codec.lastChunk(trailers))
        self._complete = True
        codec.onResponseComplete(self)

    def readDisable(self, disable):
        """HTTP/1.1 reads one stream at a time: the connection stops reading."""
        self._codec.readDisable(disable)

    def resetStream(self):
        """
        Abandon the stream. HTTP/1 has no per-stream reset, so, as in Envoy,
        the connection is closed (after what was already written).
        """
        self._complete = True
        codec = self._codec
        if not codec.lost:
            codec.closeConnection()


def _startResponse(self, codec):
    # ResponseEncoder.__init__'s body: the codec fills a new instance with
    # it directly, without Python's class call (whose path through
    # __init__ costs about as much as filling the fields), once per request.
    self._codec = codec
    # The flags every response reads, as attributes of the instance:
    # Python reads a class-level default several times slower.
    self._decoder = None
    self._events = None
    self._requestComplete = False
    self._isHead = False
    self._isConnect = False
    self._upgrade = False
    self._http10 = False
    self._keepAlive = True
    self._started = False
    self._complete = False
    self._chunked = False
    self._noBody = False
    self._raw = False
    self._closeAfter = False
    self.wireBytesSent = 0
    self.headerBytesSent = 0
    return self


@implementer(IServerCodec)
class ServerCodec(LenientParsing, CountedReadDisable, Http1Connection):
    """
    The downstream HTTP/1.1 codec of one connection.

    @param callbacks: provides C{newStream(encoder) -> decoder} and
        C{onCodecError(status, details)}; optionally
        C{onDroppedHeaderWithUnderscores(name)} (Envoy's
        C{dropped_headers_with_underscores} counter) and
        C{codecLocalReply(status, details, emptyBody, http10)}, returning
        the bytes of the codec's own reply, or C{None} for the default.
    @param transport: the connection's transport (C{write},
        C{loseConnection}, C{pauseProducing}, C{resumeProducing}).
    @param maxRequestHeadersKb: limit on the request head (request line and
        headers, as sent), in KiB; beyond it, 431.
    @param maxHeadersCount: limit on the number of headers; beyond it, 431.
    @param acceptHttp10: serve HTTP/1.0 (and 0.9) instead of answering 426.
    @param defaultHostForHttp10: authority for HTTP/1.0 requests without a
        C{Host}.
    @param headersWithUnderscoresAction: C{"ALLOW"}, C{"REJECT_REQUEST"}
        (400) or C{"DROP_HEADER"}.
    @param serverName: the C{server} value of the codec's own replies.
    @param clock: an C{IReactorTime} for the C{date} of those replies
        (C{None}: the wall clock).
    @param enableTrailers: pass request trailers to decoders and write
        response trailers (Envoy's C{enable_trailers}); by default both are
        dropped.

    @ivar dateCache: the L{DateCache}, for the connection manager's own
        C{date} headers.
    @ivar rejectedRequest: when C{onCodecError} is called, the request the
        codec refused, if it read it (L{CodecError.request}), else C{None}.
    """

    # Its state as slots: more than 30 attributes would make its __dict__
    # a plain dict, read and written more slowly on every request.
    __slots__ = ("_callbacks", "_transport", "_maxHeadBytes", "_maxHeadersCount",
                 "_enableTrailers", "_newStream", "_onDropped", "_replyHook",
                 "_acceptHttp10", "_defaultHost", "_underscoreAction", "_serverName",
                 "dateCache", "_parser", "_forwarder", "_carry", "_lineEnd",
                 "_deferred", "_deferredBytes", "_deferredTail", "_deferredHead",
                 "_parsing", "_inHead", "_idle", "_url", "_headers", "_headSize",
                 "_extraCount", "_host", "_contentLength", "_transferEncoding",
                 "_expectAt", "_connection", "_upgradeValue", "_bodyRemaining",
                 "_trailers", "_partial", "_bodyEvents", "_h2cBody", "_lastAuthority",
                 "_current", "_active", "_pending", "_dispatching", "_upgraded",
                 "_rawOnData", "_savedFirst", "_savedMore", "_savedBytes",
                 "_completedSinceSaved", "_batching", "_out", "_loseAfterFlush",
                 "_closed", "_stopAtNext", "_lost", "_readDisableCount",
                 "_waitingForResponse")

    rejectedRequest = None
    protocol = "HTTP/1.1"

    def __init__(self, callbacks, transport, maxRequestHeadersKb=60,
                 maxHeadersCount=100, acceptHttp10=False,
                 defaultHostForHttp10=None, headersWithUnderscoresAction="ALLOW",
                 serverName=b"envoy", clock=None, enableTrailers=False):
        if headersWithUnderscoresAction not in _UNDERSCORE_ACTIONS:
            raise ValueError(
                "headersWithUnderscoresAction must be one of %s, not %r"
                % (", ".join(_UNDERSCORE_ACTIONS), headersWithUnderscoresAction))
        Http1Connection.__init__(self, callbacks, transport, maxRequestHeadersKb,
                                 maxHeadersCount, enableTrailers)
        self._newStream = callbacks.newStream
        self._onDropped = getattr(callbacks, "onDroppedHeaderWithUnderscores", None)
        self._replyHook = getattr(callbacks, "codecLocalReply", None)
        self._acceptHttp10 = acceptHttp10
        if isinstance(defaultHostForHttp10, str):
            defaultHostForHttp10 = defaultHostForHttp10.encode("ascii")
        self._defaultHost = defaultHostForHttp10 or None
        self._underscoreAction = headersWithUnderscoresAction
        if isinstance(serverName, str):
            serverName = serverName.encode("ascii")
        self._serverName = serverName
        self.dateCache = sharedDateCache(clock)

        self._parser = newParser(self)
        self._forwarder = None      # set while input is re-parsed/rewritten
        self._carry = b""           # a head line held back while rewriting
        self._lineEnd = b""         # a header line's end, held back (obs-fold)
        # An error in a head whose end has not come yet: Envoy (balsa) judges
        # a head once it is whole, so the answer waits for the empty line.
        self._deferred = None
        self._deferredBytes = 0
        self._deferredTail = b""
        self._deferredHead = None
        self._parsing = True        # False once an error stopped parsing

        # The message being parsed.
        self._inHead = False
        self._idle = True
        self._url = b""
        self._headers = None
        self._headSize = 0
        self._extraCount = 0
        self._host = None
        self._contentLength = None
        self._transferEncoding = None
        self._expectAt = None
        self._connection = None
        self._upgradeValue = None
        self._bodyRemaining = 0
        self._trailers = None
        # Whether one of the six above was set (see on_message_begin).
        self._framingSeen = False
        self._partial = 0
        self._bodyEvents = 0
        self._h2cBody = None
        self._lastAuthority = None

        # Streams.
        self._current = None        # the stream whose request is being read
        self._active = None         # the stream whose response is awaited
        self._pending = deque()     # parsed streams (and errors), in order
        self._dispatching = False
        self._upgraded = None       # the upgrade stream that owns the input
        self._rawOnData = None

        # Chunks read since the parser was last between messages at a chunk
        # boundary, for a replay.
        self._savedFirst = b""
        self._savedMore = None
        self._savedBytes = 0
        self._completedSinceSaved = 0

        # Output.
        self._batching = False
        self._out = []
        self._loseAfterFlush = False
        self._closed = False        # the connection is to close: no new work
        self._stopAtNext = False    # parse no further request
        self._lost = False          # loseConnection called, or connection lost
        self._readDisableCount = 0
        self._waitingForResponse = False

    # -- public -----------------------------------------------------------

    def dataReceived(self, data):
        """
        Parse C{data} from the connection, calling the callbacks and decoders
        as requests arrive. Only the callbacks' and decoders' own exceptions
        propagate.
        """
        if self._rawOnData is not None:
            self._rawOnData(data)
            return
        if self._closed:
            return
        if self._deferred is not None:
            self._scanDeferred(data)
            return
        if not self._parsing:
            return
        if self._upgraded is not None:
            self._upgradeData(data)
            return
        self._batching = True
        try:
            if self._forwarder is None:
                self._feedFast(data)
            else:
                self._feedRewriting(data)
        finally:
            self._batching = False
            if self._out or self._loseAfterFlush:
                self._flush()

    def connectionLost(self, reason=None):
        """
        The connection is gone: write nothing more, and forget requests that
        never reached C{newStream}.
        """
        self._closed = True
        self._stopAtNext = True
        self._lost = True
        self._parsing = False
        self._pending.clear()
        self._out = []
        # The parser calls back into this codec, and this codec's streams
        # into it: both ties dropped, nothing is left for the cyclic
        # collector once the connection is gone.
        self._parser = None
        self._current = self._active = None

    def switchToRaw(self, onData):
        """
        Hand the connection over to an upgraded protocol, typically after a
        101 to an upgrade request: from now on every byte read goes to
        C{onData(data)}, not to a decoder. Bytes of the upgrade stream that
        were read but not yet given to a decoder go to C{onData} first. The
        stream's encoder keeps writing raw bytes.
        """
        self._rawOnData = onData
        stream = self._upgraded
        self._upgraded = None
        self._parsing = False
        if stream is not None and stream._events:
            events, stream._events = stream._events, None
            for kind, a, _ in events:
                if kind == _EV_DATA and a:
                    onData(a)
        if self._waitingForResponse:
            self._waitingForResponse = False
            self.readDisable(False)

    # -- parser callbacks ---------------------------------------------------

    def on_message_begin(self):
        if self._stopAtNext:
            raise StopParsing()
        self._inHead = True
        self._idle = False
        self._url = b""
        self._headers = []
        self._headSize = 0
        self._extraCount = 0
        self._host = None
        if self._framingSeen:
            # Most requests carry none of these headers: they are set
            # back only after a request that did.
            self._framingSeen = False
            self._contentLength = None
            self._transferEncoding = None
            self._connection = None
            self._upgradeValue = None
            self._expectAt = None
            self._trailers = None

    def on_url(self, url):
        self._url += url
        self._headSize += len(url)
        if self._headSize > self._maxHeadBytes:
            raise CodecError(431, Details.HEADERS_TOO_LARGE)

    def on_header(self, name, value, _plain=PLAIN_NAMES.get, _special=_SPECIAL_RAW.get):
        # (The defaults make the two lookups local: this runs per header.)
        lname = _plain(name)
        if lname is None:
            kind = _special(name)
            if kind is None or self._trailers is not None:
                self._namedHeader(name, value)
                return
            # A header the codec reads, under a spelling seen before.
            raw = value
            value = value.rstrip(b" \t")
            self._headSize += len(name) + len(value)
            if kind == _HOST:
                if self._host is None:
                    self._host = value
                else:
                    self._host += b"," + value
                self._extraCount += 1
                return
            if kind == _CONNECTION:
                self._framingSeen = True
                self._connection = value if self._connection is None else (
                    self._connection + b"," + value)
                self._headers.append((b"connection", value))
                return
            self._special(kind, value, raw)
            return
        value = value.rstrip(b" \t")
        self._headSize += len(name) + len(value)
        self._headers.append((lname, value))

    def _namedHeader(self, name, value):
        # Every name not in the cache comes here: lower-case it, apply the
        # underscore policy, pick out the headers the codec reads.
        lname = name.lower()
        raw = value
        value = value.rstrip(b" \t")
        self._headSize += len(name) + len(value)
        if self._trailers is not None:
            self._trailers.append((lname, value))
            return
        kind = _SPECIAL.get(lname)
        if kind is not None and len(_SPECIAL_RAW) < PLAIN_NAMES_MAX:
            # Special names are short: a hit here is bounded in bytes.
            _SPECIAL_RAW[name] = kind
        if kind is None:
            if b"_" in lname:
                action = self._underscoreAction
                if action == "REJECT_REQUEST":
                    raise CodecError(400, Details.UNEXPECTED_UNDERSCORE)
                if action == "DROP_HEADER":
                    # Not in the map, so not counted against the limit.
                    if self._onDropped is not None:
                        self._onDropped(lname)
                    return
            elif len(PLAIN_NAMES) < PLAIN_NAMES_MAX and len(name) <= PLAIN_NAME_MAX_LENGTH:
                PLAIN_NAMES[name] = lname
            self._headers.append((lname, value))
        else:
            self._special(kind, value, raw)

    def _special(self, kind, value, raw=None):
        if kind == _HOST:
            # Envoy joins several Host headers into one authority.
            self._host = value if self._host is None else self._host + b"," + value
            self._extraCount += 1
            return
        self._framingSeen = True
        if kind == _TRANSFER_ENCODING:
            if raw is not None and raw[-1:] in b" \t" and self._forwarder is None:
                # llhttp takes "chunked\t" for another coding; Envoy trims
                # it. The rewriting parser trims it before llhttp sees it.
                raise Reparse()
            self._transferEncoding = joinTransferEncoding(self._transferEncoding, value)
            self._extraCount += 1
        elif kind == _CONTENT_LENGTH:
            self._contentLength = value
            self._headers.append((b"content-length", value))
        elif kind == _CONNECTION:
            self._connection = value if self._connection is None else (
                self._connection + b"," + value)
            self._headers.append((b"connection", value))
        elif kind == _UPGRADE:
            self._upgradeValue = value
            self._headers.append((b"upgrade", value))
        else:
            # Envoy joins repeated Expect headers into one value, so that
            # two 100-continue are no 100-continue.
            headers = self._headers
            at = self._expectAt
            if at is None:
                self._expectAt = len(headers)
                headers.append((b"expect", value))
            else:
                headers[at] = (b"expect", headers[at][1] + b"," + value)

    def on_headers_complete(self):
        # Checks run in the order Envoy's codec and connection manager run
        # them, so that a request with several faults gets Envoy's answer.
        if self._closed:
            raise StopParsing()
        self._inHead = False
        parser = self._parser
        method = parser.get_method()
        if method not in ENVOY_METHODS:
            # Envoy refuses, at the request line, the methods llhttp knows
            # and it does not (M-SEARCH, QUERY, ...).
            raise CodecError(400, Details.CODEC_ERROR)
        headers = self._headers
        count = len(headers) + self._extraCount
        if count > self._maxHeadersCount:
            count = _mergedCount(headers, self._host is not None,
                                 self._transferEncoding is not None)
            if count > self._maxHeadersCount:
                raise CodecError(431, Details.TOO_MANY_HEADERS)
        # Head size as sent: the request line, "name: value\r\n" per header
        # and the empty line.
        if self._headSize + len(method) + 14 + 4 * count > self._maxHeadBytes:
            raise CodecError(431, Details.HEADERS_TOO_LARGE)
        url = self._url
        cl = self._contentLength
        te = self._transferEncoding
        connection = self._connection
        isConnect = method == b"CONNECT"
        if isConnect and cl is not None and cl != b"0":
            raise CodecError(400, Details.BODY_DISALLOWED)
        if te is not None and cl is not None:
            raise CodecError(400, Details.CONTENT_LENGTH_AND_CHUNKED)
        if te is not None and (isConnect or te.lower() != b"chunked"):
            raise CodecError(501, Details.INVALID_TRANSFER_ENCODING)
        if connection is not None:
            connection = connection.lower()
            if connection != b"keep-alive" and connection != b"close":
                self._sanitizeConnection(headers, connection)

        authority = self._host
        scheme = None
        if isConnect:
            # Envoy: a CONNECT target is host:port (authority-form).
            if _CONNECT_TARGET.fullmatch(url) is None:
                raise CodecError(400, Details.INVALID_URL)
            path = None
            authority = url
        elif url[:1] == b"/":
            path = url
        elif url == b"*" and method == b"OPTIONS":
            path = url
        else:
            path, authority, scheme = _absoluteUrl(url)

        # Envoy's shouldCloseConnection: 1.1 closes on a close token; every
        # other version is served as 1.0 and stays open only with a
        # keep-alive token.
        if connection is None:
            hasClose = hasKeepAlive = False
        elif connection == b"keep-alive":
            hasClose, hasKeepAlive = False, True
        elif connection == b"close":
            hasClose, hasKeepAlive = True, False
        else:
            hasClose = _hasToken(connection, b"close")
            hasKeepAlive = _hasToken(connection, b"keep-alive")
        # (llhttp's keep-alive answer cannot tell 1.1 from 2.0: it reads
        # Proxy-Connection too.)
        if parser.get_http_version() == "1.1":
            version = "HTTP/1.1"
            http10 = False
            keepAlive = not hasClose
        elif self._acceptHttp10:
            version = "HTTP/1.0"
            http10 = True
            keepAlive = hasKeepAlive
            if authority is None:
                authority = self._defaultHost
        elif self._forwarder is None:
            # The rewriting parser judges the request line as Envoy does
            # (see _requestLine): a version not of the form HTTP/d.d (llhttp
            # takes RTSP/1.0) is 400, two parts ending in HTTP/1.1 are
            # HTTP/1.1; else 426 there.
            self._inHead = True
            raise Reparse()
        else:
            raise CodecError(426, Details.LOW_VERSION)

        if authority is None:
            if not http10:
                # Envoy's connection manager refuses it: its log shows it.
                raise CodecError(400, Details.MISSING_HOST, emptyBody=True, request=RequestHeaders(
                    method, path, None, scheme, version, HeaderMap.fromList(headers)))
        elif authority != self._lastAuthority:
            if _AUTHORITY.fullmatch(authority) is None:
                raise CodecError(400, Details.INVALID_AUTHORITY)
            self._lastAuthority = authority
        if path is not None and b"#" in path:
            raise CodecError(400, Details.PATH_NORMALIZATION_FAILED,
                             emptyBody=True, http10=http10)

        headerMap = _newObject(HeaderMap)
        headerMap._entries = headers
        request = startRequest(_newObject(RequestHeaders), method, path, authority, scheme,
                               version, headerMap)
        stream = _startResponse(_newObject(ResponseEncoder), self)
        if http10:
            stream._http10 = True
        if not keepAlive:
            # Envoy answers this request and closes: what follows is ignored.
            request.keepAlive = False
            stream._keepAlive = False
            stream._closeAfter = True
            self._stopAtNext = True
        if method == b"HEAD":
            stream._isHead = True
        # llhttp flags an upgrade only for CONNECT or an Upgrade header.
        if (isConnect or self._upgradeValue is not None) and parser.should_upgrade():
            kind = b"connect" if isConnect else self._upgradeValue.lower()
            if kind == b"h2c":
                # Envoy ignores h2c upgrades: strip them, serve HTTP/1.1.
                _stripH2c(headers)
                upgrade = False
                self._h2cBody = te is not None or (cl is not None and cl != b"0")
            else:
                upgrade = True
                request.upgrade = kind
                stream._upgrade = True
                stream._isConnect = isConnect
        else:
            upgrade = False

        if te is not None:
            request.chunked = True
            self._bodyRemaining = -1
            # Trailers, if any, are collected apart from the headers.
            self._trailers = self._headers = []
            self._headSize = 0
            endStream = False
        elif cl is not None:
            n = int(cl)
            request.contentLength = n
            self._bodyRemaining = n
            endStream = n == 0
            if n > _REPLAY_BODY:
                self._dropReplay()
        else:
            self._bodyRemaining = 0
            endStream = True
        if upgrade:
            endStream = False
        elif endStream:
            stream._requestComplete = True

        self._current = stream
        if self._active is None and not self._pending:
            self._active = stream
            decoder = stream._decoder = self._newStream(stream)
            decoder.decodeHeaders(request, endStream)
        else:
            stream._events = [(_EV_HEADERS, request, endStream)]
            self._pending.append(stream)

    def on_body(self, data):
        if self._closed:
            raise StopParsing()
        self._bodyEvents += 1
        stream = self._current
        end = False
        remaining = self._bodyRemaining
        if remaining > 0:
            remaining -= len(data)
            self._bodyRemaining = remaining
            if remaining <= 0:
                end = True
                stream._requestComplete = True
        if stream._events is None:
            stream._decoder.decodeData(data, end)
        else:
            stream._events.append((_EV_DATA, data, end))

    def on_message_complete(self):
        self._idle = True
        self._completedSinceSaved += 1
        stream = self._current
        if stream is None:
            return
        if not stream._requestComplete:
            if stream._upgrade:
                # llhttp stops at an upgrade's head: the bytes after it are
                # the upgraded stream's.
                return
            if self._h2cBody:
                # llhttp skipped an h2c request's body; it comes next.
                self._idle = False
                return
            stream._requestComplete = True
            trailers = self._trailers
            self._trailers = None
            if trailers and self._enableTrailers:
                trailers = HeaderMap.fromList(trailers)
                if stream._events is None:
                    stream._decoder.decodeTrailers(trailers)
                else:
                    stream._events.append((_EV_TRAILERS, trailers, True))
            elif stream._events is None:
                stream._decoder.decodeData(b"", True)
            else:
                stream._events.append((_EV_DATA, b"", True))
        if not stream._complete and not self._waitingForResponse and not self._closed:
            # A complete request waits for its response with reading
            # paused, as in Envoy; requests already read wait in the queue.
            self._waitingForResponse = True
            # readDisable(True), inline: once per request.
            count = self._readDisableCount = self._readDisableCount + 1
            if count == 1 and not self._lost:
                self._transport.pauseProducing()

    # -- feeding ----------------------------------------------------------

    def _feedFast(self, data):
        if self._idle:
            self._savedFirst = data
            self._savedMore = None
            self._savedBytes = len(data)
            self._completedSinceSaved = 0
            wasInHead = False
        else:
            self._saveChunk(data)
            wasInHead = self._inHead
        sizeBefore = self._headSize
        headersBefore = self._headers
        completedBefore = self._completedSinceSaved
        bodyBefore = self._bodyEvents
        # Errors are handled once out of the except clauses: handling may
        # parse again, and an error raised while another one is being
        # handled would lose the cause httptools attaches to it.
        upgradeAt = error = None
        try:
            self._parser.feed_data(data)
        except HttpParserUpgrade as e:
            upgradeAt = e.args[0]
        except HttpParserError as e:
            error = e
        else:
            if self._inHead:
                if (self._url[-8:] == b"HTTP/1.1" and self._savedFirst
                        and self._parser.get_http_version() == "0.9"):
                    # A request line of two parts ending in HTTP/1.1: for
                    # Envoy a whole request already (see _requestLine).
                    self._replay()
                    return
                # A head being read: bound what httptools accumulates for a
                # header still in progress. A chunk that completed no part
                # of the head belongs to it entirely.
                if (wasInHead and self._headers is headersBefore
                        and self._headSize == sizeBefore):
                    self._partial += len(data)
                elif self._completedSinceSaved == completedBefore:
                    # The whole chunk is this head's: what it holds past the
                    # parts it completed (less their separators and a
                    # request line's method and version, so never more than
                    # is pending).
                    done = self._headSize - (sizeBefore if self._headers is headersBefore else 0)
                    self._partial = max(0, len(data) - done - 4 * len(self._headers) - 32)
                else:
                    self._partial = 0
                if self._headSize + self._partial > self._maxHeadBytes:
                    self._protocolError(CodecError(431, Details.HEADERS_TOO_LARGE))
            elif self._trailers is not None:
                # Inside a chunked body: a chunk with no body and no header
                # in it went into trailers (or chunk extensions).
                if (self._bodyEvents == bodyBefore and self._headers is headersBefore
                        and self._headSize == sizeBefore):
                    self._partial += len(data)
                else:
                    self._partial = 0
                if self._headSize + self._partial > self._maxHeadBytes:
                    self._protocolError(CodecError(431, Details.HEADERS_TOO_LARGE))
            return
        if error is not None:
            self._onParserError(error, data)
        else:
            self._onParserUpgrade(data, upgradeAt)

    def _dropReplay(self):
        # A large body follows: its bytes are not kept for a replay (a head
        # later in the same reads can no longer be rewritten, only refused).
        self._savedFirst = b""
        self._savedMore = None
        self._savedBytes = _REPLAY_LIMIT + 1

    def _saveChunk(self, data):
        if self._savedBytes > _REPLAY_LIMIT:
            return
        self._savedBytes += len(data)
        if self._savedBytes > _REPLAY_LIMIT:
            self._savedFirst = b""
            self._savedMore = None
        elif self._savedMore is None:
            self._savedMore = [data]
        else:
            self._savedMore.append(data)

    def _onParserError(self, exc, data):
        """
        @param exc: the parser's error.
        @param data: the input from about where the error was found on (for
            an error in a head: whether the head's end is in it).
        """
        cause = exc.__context__ if isinstance(exc, HttpParserCallbackError) else None
        if cause is not None:
            if isinstance(cause, StopParsing):
                return
            if isinstance(cause, CodecError):
                self._protocolError(cause)
                return
            if isinstance(cause, Reparse):
                if self._savedFirst and self._savedBytes <= _REPLAY_LIMIT:
                    self._replay()
                else:
                    self._protocolError(CodecError(426, Details.LOW_VERSION))
                return
            # A callback or a decoder failed: not the peer's doing. Stop, and
            # let the exception reach whoever called dataReceived.
            self._parsing = False
            raise cause
        current = self._current
        if current is not None and self._idle and not current._keepAlive:
            # llhttp refuses bytes after a request that closes the
            # connection; Envoy ignores them.
            self._parsing = False
            return
        if (self._forwarder is None and self._inHead and self._savedFirst
                and self._savedBytes <= _REPLAY_LIMIT):
            # The head may only need rewriting (bare CR or LF, obs-fold):
            # parse the input again from the last message boundary.
            self._replay()
            return
        error = self._beforeTransferEncoding(parserError(str(exc)), data)
        forwarder = self._forwarder
        if forwarder is not None and (forwarder.inHead or forwarder.idle):
            self._headError(error, data)
        elif (self._trailers is not None and not self._inHead
                and "header" in str(exc)):
            # A fault in the trailers of a chunked request: Envoy, too,
            # judges them once their empty line has come (looked for after
            # the last chunk's line, when this read has it).
            last = data.rfind(b"\n0")
            self._headError(error, data[last + 1:] if last >= 0 else data)
        else:
            self._protocolError(error)

    def _onParserUpgrade(self, data, offset):
        rest = data[offset:]
        stream = self._current
        if self._h2cBody is not None:
            hasBody = self._h2cBody
            self._h2cBody = None
            if not hasBody:
                # A body-less h2c request: carry on with HTTP/1.1.
                if rest and self._parsing and not self._closed:
                    if self._forwarder is None:
                        self._feedFast(rest)
                    else:
                        self._feedRewriting(rest, replaying=True)
                return
            # llhttp skipped the body: a fresh parser gets a made-up head
            # with the request's framing, then the real bytes.
            self._forwarder = Forwarder(self, skipHead=True)
            self._parser = newParser(self._forwarder, anyVersion=True)
            self._savedFirst = b""
            if self._bodyRemaining >= 0:
                head = b"POST / HTTP/1.1\r\ncontent-length: %d\r\n\r\n" % (
                    self._bodyRemaining,)
            else:
                head = b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
            self._parser.feed_data(head)
            if rest:
                self._feedRewriting(rest, replaying=True)
            return
        if stream is None or not stream._upgrade:
            self._protocolError(CodecError(400, Details.CODEC_ERROR))
            return
        self._upgraded = stream
        if rest:
            self._upgradeData(rest)

    def _upgradeData(self, data):
        stream = self._upgraded
        if stream._events is None:
            stream._decoder.decodeData(data, False)
        else:
            stream._events.append((_EV_DATA, data, False))

    # -- request head details -------------------------------------------

    def _sanitizeConnection(self, headers, value):
        # Envoy's sanitizeConnectionHeader: drop the headers the Connection
        # header nominates; refuse nominating ten or more, X-Forwarded-* or
        # pseudo-headers.
        if value in _CONNECTION_PLAIN:
            return
        tokens = [t.strip() for t in value.split(b",")]
        if len(tokens) >= _MAX_NOMINATED_HEADERS:
            raise CodecError(400, Details.CONNECTION_HEADER_REJECTED)
        nominated = set()
        for token in tokens:
            if not token or token in _CONNECTION_PLAIN or token == b"connection":
                continue
            if token in _CONNECTION_FORBIDDEN or token[:1] == b":":
                raise CodecError(400, Details.CONNECTION_HEADER_REJECTED)
            if token != b"te":
                nominated.add(token)
        if nominated:
            headers[:] = [e for e in headers if e[0] not in nominated]

    # -- streams ----------------------------------------------------------

    def onResponseComplete(self, stream):
        """
        A stream's response was written in full: close if it asked to, else
        hand the next request over.
        """
        if stream._closeAfter or self._closed:
            self.closeConnection()
            return
        if self._active is stream:
            self._active = None
        if self._pending:
            self._dispatchPending()
        if self._active is None and self._waitingForResponse and not self._pending:
            self._waitingForResponse = False
            # readDisable(False), inline: once per request.
            count = self._readDisableCount
            if count:
                count = self._readDisableCount = count - 1
                if count == 0 and not self._lost:
                    self._transport.resumeProducing()

    def _dispatchPending(self):
        # A loop rather than recursion: a queued request answered at once
        # completes inside this loop and lets the next one through.
        if self._dispatching:
            return
        self._dispatching = True
        try:
            pending = self._pending
            while self._active is None and pending and not self._closed:
                item = pending.popleft()
                if isinstance(item, CodecError):
                    self._sendLocalReply(item)
                    break
                self._active = item
                events = item._events
                item._events = None
                decoder = item._decoder = self._newStream(item)
                for kind, a, b in events:
                    if self._closed:
                        break
                    if kind == _EV_DATA:
                        decoder.decodeData(a, b)
                    elif kind == _EV_HEADERS:
                        decoder.decodeHeaders(a, b)
                    else:
                        decoder.decodeTrailers(a)
        finally:
            self._dispatching = False

    def _protocolError(self, error):
        """Answer C{error} (a L{CodecError}) in its turn, then close."""
        if self._closed:
            return
        self._parsing = False
        self._parser = None
        self._forwarder = None
        self._inHead = False
        self._upgraded = None
        current = self._current
        if (current is not None and not current._requestComplete
                and not current._complete):
            if current._events is not None:
                # Still queued: the error takes its place.
                try:
                    self._pending.remove(current)
                except ValueError:
                    pass
            elif current is self._active:
                if current._started:
                    # Too late for a reply.
                    self.closeConnection()
                    self._callbacks.onCodecError(error.status, error.details)
                else:
                    self._sendLocalReply(error)
                return
        if self._active is None and not self._pending:
            self._sendLocalReply(error)
        else:
            self._pending.append(error)

    def _sendLocalReply(self, error):
        reply = None
        if self._replyHook is not None:
            # The connection manager may format the reply itself (its
            # local_reply_config, via).
            reply = self._replyHook(error.status, error.details, error.emptyBody, error.http10)
        if reply is None:
            reply = localReply(error.status, self.dateCache.value(),
                               self._serverName, error.emptyBody, error.http10)
        self.send(reply)
        self.closeConnection()
        self.rejectedRequest = error.request
        self._callbacks.onCodecError(error.status, error.details)

    # -- output -----------------------------------------------------------

    @property
    def closed(self):
        """Whether the connection is to close: the codec takes no new work."""
        return self._closed

    @property
    def lost(self):
        """Whether the connection was closed or lost: nothing more is written."""
        return self._lost

    def send(self, data):
        """
        Write C{data}; while the codec handles input, writes are gathered
        and written once at the end.
        """
        if self._lost:
            return
        if self._batching:
            self._out.append(data)
        else:
            self._transport.write(data)

    def sendSequence(self, buffers):
        """
        Write C{buffers} (a sequence of bytes) in order, as L{send} does,
        without joining them first.
        """
        if self._lost:
            return
        if self._batching:
            self._out.extend(buffers)
        else:
            self._transport.writeSequence(buffers)

    def closeConnection(self):
        """Close the connection after what was written (and gathered)."""
        self._closed = True
        self._stopAtNext = True
        if self._lost:
            return
        if self._batching:
            self._loseAfterFlush = True
            return
        self._lost = True
        self._transport.loseConnection()

    def _flush(self):
        out = self._out
        if out:
            self._out = []
            if not self._lost:
                self._transport.write(out[0] if len(out) == 1 else b"".join(out))
        if self._loseAfterFlush:
            self._loseAfterFlush = False
            if not self._lost:
                self._lost = True
                self._transport.loseConnection()


def _absoluteUrl(url):
    """
    Envoy's handling of an absolute-form target: the URI's authority wins
    over C{Host}, and the scheme must be http or https.

    @return: C{(path, authority, scheme)}.
    @raise CodecError: for a target that is not an absolute URI.
    """
    m = _ABSOLUTE_URL.fullmatch(url)
    if m is None:
        raise CodecError(400, Details.INVALID_URL)
    scheme, authority, rest = m.groups()
    if not authority or _URL_AUTHORITY.fullmatch(authority) is None:
        raise CodecError(400, Details.INVALID_URL)
    port = _PORT.fullmatch(authority)
    if port is not None and int(port.group(1)) > 65535:
        raise CodecError(400, Details.INVALID_URL)
    scheme = scheme.lower()
    if scheme != b"http" and scheme != b"https":
        raise CodecError(400, Details.INVALID_SCHEME)
    if not rest:
        rest = b"/"
    elif rest[:1] != b"/":
        rest = b"/" + rest
    return rest, authority, scheme


def _mergedCount(headers, host, te):
    """
    The number of request headers as Envoy counts them against
    C{max_headers_count}: the repeats of a header its header map keeps
    inline are joined into one entry (C{host: a,a,...}), the others count
    one each.

    @param headers: the request's C{(name, value)} entries.
    @param host: whether the request has a C{Host} header (kept apart).
    @param te: whether it has a C{Transfer-Encoding} header (kept apart).
    """
    inline = set()
    count = int(host) + int(te)
    for name, _ in headers:
        if name in _INLINE_HEADERS:
            inline.add(name)
        else:
            count += 1
    return count + len(inline)


def _hasToken(value, token):
    """Whether the comma-separated C{value} (lower case) has C{token}."""
    for t in value.split(b","):
        if t.strip() == token:
            return True
    return False


def _stripH2c(headers):
    """Remove an h2c upgrade's headers and C{Connection} tokens in place."""
    keep = []
    for e in headers:
        name = e[0]
        if name == b"upgrade" or name == b"http2-settings":
            continue
        if name == b"connection":
            tokens = [t.strip() for t in e[1].split(b",")]
            tokens = [t for t in tokens
                      if t.lower() not in (b"upgrade", b"http2-settings")]
            if not tokens:
                continue
            e = (name, b",".join(tokens))
        keep.append(e)
    headers[:] = keep