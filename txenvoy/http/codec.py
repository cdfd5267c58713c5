# -*- test-case-name: tests.http.test_codec_server -*-
"""
The HTTP/1.1 codec, downstream side (Envoy's C{Http1::ServerConnectionImpl}),
on llhttp through httptools.

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

Requests are handed over one at a time, as Envoy does: request n+1 reaches
C{newStream} only once the response to request n is complete, and reading
is paused while a complete request waits for its response.

Malformed input is answered by the codec itself, byte for byte as Envoy
1.40 answers it (see the tests for each case), then the connection is
closed and C{callbacks.onCodecError(status, details)} is called, with
Envoy's response code details string. Nothing but the callbacks' own
exceptions ever leaves L{ServerCodec.dataReceived}.
"""

import re
import time
from collections import deque
from email.utils import formatdate

from httptools import (
    HttpParserCallbackError,
    HttpParserError,
    HttpParserUpgrade,
    HttpRequestParser,
)

from txenvoy.http.headers import HeaderMap, RequestHeaders
from txenvoy.http.status import reasonPhrase, statusLine

__all__ = [
    "CodecError", "Details", "DateCache", "ServerCodec", "ResponseEncoder",
    "NON_PROTOCOL_ERROR_DETAILS", "localReply",
]


class CodecError(Exception):
    """
    A request the codec refuses, with the reply it gets.

    @ivar status: the HTTP status of the local reply (400, 426, 431, 501).
    @ivar details: Envoy's response code details (C{http1.codec_error}...).
    @ivar emptyBody: the reply has no body and Envoy's connection manager
        layout (C{date, server, connection, content-length: 0}) rather than
        the codec's C{text/plain} body.
    """

    def __init__(self, status, details, emptyBody=False):
        Exception.__init__(self, status, details)
        self.status = status
        self.details = details
        self.emptyBody = emptyBody


class Details:
    """Envoy's response code details for what the codec rejects."""

    CODEC_ERROR = "http1.codec_error"
    TOO_MANY_HEADERS = "http1.too_many_headers"
    HEADERS_TOO_LARGE = "http1.headers_too_large"
    INVALID_CHARACTERS = "http1.invalid_characters"
    CONNECTION_HEADER_REJECTED = "http1.connection_header_rejected"
    INVALID_URL = "http1.invalid_url"
    INVALID_SCHEME = "http1.invalid_scheme"
    INVALID_TRANSFER_ENCODING = "http1.invalid_transfer_encoding"
    BODY_DISALLOWED = "http1.body_disallowed"
    UNEXPECTED_UNDERSCORE = "http1.unexpected_underscore"
    CONTENT_LENGTH_AND_CHUNKED = "http1.content_length_and_chunked_not_allowed"
    LOW_VERSION = "low_version"
    INVALID_AUTHORITY = "http.invalid_authority"
    MISSING_HOST = "missing_host_header"
    PATH_NORMALIZATION_FAILED = "path_normalization_failed"


#: Details of replies Envoy's connection manager sends for a request the
#: codec parsed fine: they are not protocol errors (no C{DPE} flag, no
#: C{downstream_cx_protocol_error}).
NON_PROTOCOL_ERROR_DETAILS = frozenset(
    [Details.MISSING_HOST, Details.PATH_NORMALIZATION_FAILED])


class DateCache:
    """
    The C{date} header value, formatted at most once per second.

    @param clock: an C{IReactorTime} (its C{seconds()} is read); C{None}
        reads the wall clock.
    """

    __slots__ = ("_seconds", "_second", "_value")

    def __init__(self, clock=None):
        self._seconds = time.time if clock is None else clock.seconds
        self._second = None
        self._value = b""

    def value(self):
        """@return: the current IMF-fixdate, e.g. C{b"Wed, 25 Nov 2026 22:21:36 GMT"}."""
        now = int(self._seconds())
        if now != self._second:
            self._second = now
            self._value = formatdate(now, usegmt=True).encode("ascii")
        return self._value


def localReply(status, date, serverName, emptyBody=False, http10=False):
    """
    Serialise the reply the codec sends for a request it refuses, closing
    the connection, in Envoy's header order.

    @param status: the HTTP status (int).
    @param date: the C{date} value (bytes).
    @param serverName: the C{server} value (bytes).
    @param emptyBody: use the connection manager's layout with no body
        (missing C{Host}, fragment in the path) instead of the codec's
        C{text/plain} reason phrase.
    @param http10: write an C{HTTP/1.0} status line.
    @return: the whole response (bytes).
    """
    line = statusLine(status, http10)
    if emptyBody:
        return b"%sdate: %s\r\nserver: %s\r\nconnection: close\r\ncontent-length: 0\r\n\r\n" % (
            line, date, serverName)
    body = reasonPhrase(status).encode("ascii")
    return (
        b"%scontent-length: %d\r\ncontent-type: text/plain\r\ndate: %s\r\n"
        b"server: %s\r\nconnection: close\r\n\r\n%s" % (
            line, len(body), date, serverName, body)
    )


# How llhttp's own error reasons map onto Envoy's answers. Anything not
# listed is a 400 with http1.codec_error.
_PARSER_ERRORS = [
    ("can't be present with", 400, Details.CONTENT_LENGTH_AND_CHUNKED),
    ("Transfer-Encoding", 501, Details.INVALID_TRANSFER_ENCODING),
    ("Invalid header value char", 400, Details.INVALID_CHARACTERS),
]


def _mapParserError(reason):
    for fragment, status, details in _PARSER_ERRORS:
        if fragment in reason:
            return CodecError(status, details)
    return CodecError(400, Details.CODEC_ERROR)


class _StopParsing(Exception):
    """Raised from a parser callback to abandon the rest of the input."""


# Raw header name -> lower-cased name, for names the codec gives no meaning
# to. Filled as names are seen; bounded so junk names cannot grow it.
_PLAIN_NAMES = {}
_PLAIN_NAMES_MAX = 4096
for _n in (
    b"accept", b"accept-encoding", b"accept-language", b"user-agent",
    b"cookie", b"content-type", b"authorization", b"cache-control",
    b"referer", b"origin", b"x-forwarded-for", b"x-forwarded-proto",
    b"x-request-id", b"pragma", b"if-none-match", b"if-modified-since",
    b"expect", b"range", b"dnt", b"x-requested-with",
):
    for _v in (_n, _n.title(), _n.upper()):
        _PLAIN_NAMES[_v] = _n
del _n, _v

# Request headers with a meaning for the codec (see ServerCodec._namedHeader).
_HOST, _CONTENT_LENGTH, _TRANSFER_ENCODING, _CONNECTION, _UPGRADE = range(5)
_SERVER_SPECIAL = {
    b"host": _HOST,
    b"content-length": _CONTENT_LENGTH,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"connection": _CONNECTION,
    b"upgrade": _UPGRADE,
}

# Connection tokens that nominate no header (Envoy's sanitizeConnectionHeader).
_CONNECTION_PLAIN = frozenset([b"close", b"keep-alive", b"upgrade", b"http2-settings"])
_CONNECTION_FORBIDDEN = frozenset(
    [b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto"])
_MAX_NOMINATED_HEADERS = 10

_ABSOLUTE_URL = re.compile(rb"([A-Za-z][A-Za-z0-9+.\-]*)://([^/?#]*)(.*)", re.S)
_AUTHORITY = re.compile(rb"[A-Za-z0-9!$&'()*+,;=\-._~:@%\[\]]*")
_PORT = re.compile(rb"(.*):([0-9]*)", re.S)

# What the sanitising feeder rewrites in a request head: an obs-fold line
# break, a CR not followed by LF, an LF not preceded by CR.
_ANOMALY = re.compile(rb"(?P<fold>\r?\n[ \t])|(?P<cr>\r(?!\n))|(?P<lf>(?<!\r)\n)")

# Parse events queued for a request that waits for its turn.
_EV_HEADERS, _EV_DATA, _EV_TRAILERS = range(3)

# Response headers the encoder looks at while serialising.
_RESPONSE_SPECIAL = frozenset([b"content-length", b"transfer-encoding", b"connection"])

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"

_UNDERSCORE_ACTIONS = ("ALLOW", "REJECT_REQUEST", "DROP_HEADER")

# Once chunks of an unfinished message add up to this, a head that needs
# rewriting can no longer be replayed from them (it is answered 400).
_REPLAY_LIMIT = 256 * 1024


def _newParser(protocol):
    parser = HttpRequestParser(protocol)
    # HTTP/1.2, 2.0 and 0.9 request lines parse, so that they get Envoy's 426
    # (or are served as 1.0) rather than a 400.
    parser.set_dangerous_leniencies(lenient_version=True)
    return parser


class _Forwarder:
    """
    Parser callbacks used while the codec replays or rewrites input: tracks
    whether the parser is inside a request head, drops every event of the
    first C{skip} messages (already handled before a replay) and, with
    C{skipHead}, the head of the next one (the made-up head that gives an
    C{h2c} request's body its framing), and forwards the rest.
    """

    def __init__(self, codec, skip=0, skipHead=False):
        self.codec = codec
        self.skip = skip
        self.skipHead = skipHead
        self.inHead = False

    def on_message_begin(self):
        self.inHead = True
        if not self.skip and not self.skipHead:
            self.codec.on_message_begin()

    def on_url(self, url):
        if not self.skip and not self.skipHead:
            self.codec.on_url(url)

    def on_header(self, name, value):
        if not self.skip and not self.skipHead:
            self.codec.on_header(name, value)

    def on_headers_complete(self):
        self.inHead = False
        if self.skip:
            return
        if self.skipHead:
            self.skipHead = False
            self.codec._h2cBodyStarted()
            return
        self.codec.on_headers_complete()

    def on_body(self, data):
        if not self.skip:
            self.codec.on_body(data)

    def on_message_complete(self):
        if self.skip:
            self.skip -= 1
        else:
            self.codec.on_message_complete()


class ResponseEncoder:
    """
    One request's response side (Envoy's C{ResponseEncoder}), handed to
    C{callbacks.newStream}.

    Framing follows Envoy: a C{content-length} in the headers is used as it
    is; without one, a headers-only response gets C{content-length: 0}, an
    HTTP/1.1 response with a body is chunked, and an HTTP/1.0 one is
    delimited by closing the connection. Responses to C{HEAD}, 1xx, 204 and
    304 carry no body (data passed for them is dropped). After a 101 (or a
    2xx to C{CONNECT}) data is written raw. A C{transfer-encoding} header in
    the given map is ignored: framing is the codec's.
    """

    # Defaults shared by every instance; __init__ sets only what differs.
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

    def __init__(self, codec):
        self._codec = codec

    def encode100ContinueHeaders(self):
        """Write C{HTTP/1.1 100 Continue}, unless the response has started."""
        if not self._started and not self._complete and not self._codec._closed:
            self._codec._send(_CONTINUE)

    def encodeHeaders(self, headers, endStream):
        """
        Write the response head.

        @param headers: a L{ResponseHeaders}; 1xx other than 101 are written
            as informational heads and do not start the response.
        @param endStream: no body follows.
        """
        codec = self._codec
        if self._started or self._complete or codec._closed:
            return
        status = headers.status
        informational = status < 200 and status != 101
        http10 = self._http10
        close = self._closeAfter
        cl = None
        connection = None
        lines = []
        append = lines.append
        for entry in headers.headers._entries:
            if entry[0] in _RESPONSE_SPECIAL:
                name = entry[0]
                if name == b"transfer-encoding":
                    continue
                if name == b"content-length":
                    cl = entry[1]
                else:
                    connection = entry[1]
                    if b"close" in connection.lower():
                        close = True
            append(b": ".join(entry))

        if informational:
            self._send(statusLine(status, http10), lines, b"")
            return
        self._started = True

        if (status == 101 and self._upgrade) or (
                self._isConnect and 200 <= status < 300):
            # The connection now carries the upgraded protocol.
            self._raw = True
            framing = b""
        else:
            if self._upgrade or not self._requestComplete:
                # Answered before the request was read in full (or an
                # upgrade refused): what follows cannot be parsed.
                close = True
            if cl is not None:
                framing = b""
            elif status < 200 or status == 204 or status == 304:
                framing = b""
            elif endStream:
                framing = b"" if self._isHead else b"content-length: 0"
            elif http10:
                close = True
                framing = b""
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
        self._send(statusLine(status, http10), lines, framing)
        if endStream and not self._raw:
            self._complete = True
            codec._responseComplete(self)

    def _send(self, first, lines, framing):
        if framing:
            lines.append(framing)
        if lines:
            self._codec._send(first + b"\r\n".join(lines) + b"\r\n\r\n")
        else:
            self._codec._send(first + b"\r\n")

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
                if endStream:
                    codec._send(b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data))
                    self._complete = True
                    codec._responseComplete(self)
                    return
                codec._send(b"%x\r\n%s\r\n" % (len(data), data))
            else:
                codec._send(data)
        if endStream:
            if self._raw:
                # The end of an upgraded stream is the end of the connection.
                codec._loseConnection()
                return
            if self._chunked:
                codec._send(_LAST_CHUNK)
            self._complete = True
            codec._responseComplete(self)

    def encodeTrailers(self, trailers):
        """
        End the response with trailers. They are written only when the codec
        was built with C{enableTrailers} and the response is chunked, as in
        Envoy; otherwise the response just ends.

        @param trailers: a L{HeaderMap}.
        """
        codec = self._codec
        if self._complete or codec._closed or not self._started:
            return
        if self._chunked:
            if codec._enableTrailers and len(trailers):
                codec._send(b"0\r\n" + b"".join(
                    [b": ".join(e) + b"\r\n" for e in trailers._entries]) + b"\r\n")
            else:
                codec._send(_LAST_CHUNK)
        self._complete = True
        codec._responseComplete(self)

    def resetStream(self):
        """
        Abandon the stream. HTTP/1 has no per-stream reset, so, as in Envoy,
        the connection is closed (after what was already written).
        """
        codec = self._codec
        self._complete = True
        if not codec._closed:
            codec._loseConnection()

    @property
    def responseStarted(self):
        """Whether the response head has been written."""
        return self._started

    @property
    def responseComplete(self):
        """Whether the response has been written in full."""
        return self._complete


class ServerCodec:
    """
    The downstream HTTP/1.1 codec of one connection.

    @param callbacks: provides C{newStream(encoder) -> decoder} and
        C{onCodecError(status, details)}; optionally
        C{onDroppedHeaderWithUnderscores(name)} (for Envoy's
        C{dropped_headers_with_underscores} counter).
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
    @param clock: an C{IReactorTime} for the C{date} of those replies.
    @param enableTrailers: pass request trailers to decoders and write
        response trailers (Envoy's C{enable_trailers}); by default both are
        dropped.

    @ivar dateCache: the L{DateCache}, for the connection manager's own
        C{date} headers.
    """

    def __init__(self, callbacks, transport, maxRequestHeadersKb=60,
                 maxHeadersCount=100, acceptHttp10=False,
                 defaultHostForHttp10=None, headersWithUnderscoresAction="ALLOW",
                 serverName=b"envoy", clock=None, enableTrailers=False):
        if headersWithUnderscoresAction not in _UNDERSCORE_ACTIONS:
            raise ValueError(
                "headersWithUnderscoresAction must be one of %s, not %r"
                % (", ".join(_UNDERSCORE_ACTIONS), headersWithUnderscoresAction))
        self._callbacks = callbacks
        self._newStream = callbacks.newStream
        self._onDropped = getattr(callbacks, "onDroppedHeaderWithUnderscores", None)
        self._transport = transport
        self._maxHeadBytes = maxRequestHeadersKb * 1024
        self._maxHeadersCount = maxHeadersCount
        self._acceptHttp10 = acceptHttp10
        if isinstance(defaultHostForHttp10, str):
            defaultHostForHttp10 = defaultHostForHttp10.encode("ascii")
        self._defaultHost = defaultHostForHttp10 or None
        self._underscoreAction = headersWithUnderscoresAction
        if isinstance(serverName, str):
            serverName = serverName.encode("ascii")
        self._serverName = serverName
        self._enableTrailers = enableTrailers
        self.dateCache = DateCache(clock)

        self._parser = _newParser(self)
        self._forwarder = None      # set while input is replayed/rewritten
        self._carry = b""           # held-back head bytes (rewriting only)

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
        self._connection = None
        self._upgradeValue = None
        self._bodyRemaining = 0
        self._trailers = None
        self._headPartial = 0
        self._h2cBody = None
        self._lastAuthority = None

        # Streams.
        self._current = None        # the stream whose request is being read
        self._active = None         # the stream whose response is awaited
        self._pending = deque()     # parsed streams (and errors) in order
        self._dispatching = False
        self._upgraded = None       # the stream that owns the connection
        self._rawOnData = None

        # Replay bookkeeping: the chunks read since the parser was last
        # between messages at a chunk boundary.
        self._savedFirst = b""
        self._savedMore = None
        self._savedBytes = 0
        self._completedSinceSaved = 0

        # Output.
        self._batching = False
        self._out = []
        self._loseAfterFlush = False
        self._closed = False        # no more parsing or writing
        self._lost = False          # loseConnection was called
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
        if self._upgraded is not None:
            self._upgradeData(data)
            return
        self._batching = True
        try:
            if self._forwarder is None:
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
                try:
                    self._parser.feed_data(data)
                except HttpParserUpgrade as e:
                    self._onParserUpgrade(data, e.args[0])
                except HttpParserError as e:
                    self._onParserError(e)
                else:
                    if self._inHead:
                        if wasInHead and self._headSize == sizeBefore:
                            self._headPartial += len(data)
                        else:
                            self._headPartial = 0
                        if self._headSize + self._headPartial > self._maxHeadBytes:
                            self._protocolError(
                                CodecError(431, Details.HEADERS_TOO_LARGE))
            else:
                self._feedRewriting(data)
        finally:
            self._batching = False
            if self._out or self._loseAfterFlush:
                self._flush()

    def connectionLost(self, reason=None):
        """
        The connection is gone: write nothing more, and drop requests that
        never reached C{newStream}.
        """
        self._closed = True
        self._lost = True
        self._pending.clear()
        self._out = []

    def readDisable(self, disable):
        """
        Stop (C{True}) or resume (C{False}) reading the connection, counted
        like Envoy's C{readDisable}: reading resumes when every disable has
        been matched. The codec uses it itself while a response is awaited.
        """
        if disable:
            self._readDisableCount += 1
            if self._readDisableCount == 1 and not self._lost:
                self._transport.pauseProducing()
        elif self._readDisableCount:
            self._readDisableCount -= 1
            if self._readDisableCount == 0 and not self._lost:
                self._transport.resumeProducing()

    def switchToRaw(self, onData):
        """
        Hand the connection over to an upgraded protocol (after a 101 to an
        upgrade request): every byte read from now on goes to
        C{onData(data)} instead of the stream's decoder. The encoder's
        C{encodeData} keeps writing raw bytes.
        """
        self._rawOnData = onData
        stream = self._upgraded
        self._upgraded = None
        if stream is not None and stream._events:
            # Bytes that arrived before the stream reached newStream.
            events, stream._events = stream._events, None
            for kind, a, _ in events:
                if kind == _EV_DATA and a:
                    onData(a)
        if self._waitingForResponse:
            self._waitingForResponse = False
            self.readDisable(False)

    # -- parser callbacks ---------------------------------------------------

    def on_message_begin(self):
        if self._closed:
            raise _StopParsing()
        self._inHead = True
        self._idle = False
        self._url = b""
        self._headers = []
        self._headSize = 0
        self._extraCount = 0
        self._host = None
        self._contentLength = None
        self._transferEncoding = None
        self._connection = None
        self._upgradeValue = None

    def on_url(self, url):
        self._url += url
        self._headSize += len(url)
        if self._headSize > self._maxHeadBytes:
            raise CodecError(431, Details.HEADERS_TOO_LARGE)

    def on_header(self, name, value):
        lname = _PLAIN_NAMES.get(name)
        if lname is None:
            self._namedHeader(name, value)
            return
        value = value.rstrip(b" \t")
        self._headSize += len(name) + len(value)
        self._headers.append((lname, value))

    def _namedHeader(self, name, value):
        # Every header name not in the cache comes here: lower-case it, apply
        # the underscore policy, pick out the headers the codec reads.
        lname = name.lower()
        value = value.rstrip(b" \t")
        self._headSize += len(name) + len(value)
        if self._trailers is not None:
            self._trailers.append((lname, value))
            return
        kind = _SERVER_SPECIAL.get(lname)
        if kind is None:
            if b"_" in lname:
                action = self._underscoreAction
                if action == "REJECT_REQUEST":
                    raise CodecError(400, Details.UNEXPECTED_UNDERSCORE)
                if action == "DROP_HEADER":
                    if self._onDropped is not None:
                        self._onDropped(lname)
                    self._extraCount += 1
                    return
            elif len(_PLAIN_NAMES) < _PLAIN_NAMES_MAX:
                _PLAIN_NAMES[name] = lname
            self._headers.append((lname, value))
        elif kind == _HOST:
            # Envoy joins several Host headers into one authority.
            self._host = value if self._host is None else self._host + b"," + value
            self._extraCount += 1
        elif kind == _TRANSFER_ENCODING:
            self._transferEncoding = value
            self._extraCount += 1
        else:
            if kind == _CONTENT_LENGTH:
                self._contentLength = value
            elif kind == _CONNECTION:
                self._connection = value
            else:
                self._upgradeValue = value
            self._headers.append((lname, value))

    def on_headers_complete(self):
        self._inHead = False
        parser = self._parser
        headers = self._headers
        count = len(headers) + self._extraCount
        if count > self._maxHeadersCount:
            raise CodecError(431, Details.TOO_MANY_HEADERS)
        method = parser.get_method()
        url = self._url
        if (self._headSize + len(method) + 13 + 4 * count) > self._maxHeadBytes:
            raise CodecError(431, Details.HEADERS_TOO_LARGE)

        keepAlive = parser.should_keep_alive()
        upgrade = parser.should_upgrade()
        cl = self._contentLength
        te = self._transferEncoding
        isConnect = method == b"CONNECT"
        if isConnect and cl is not None and cl != b"0":
            raise CodecError(400, Details.BODY_DISALLOWED)
        if te is not None and (isConnect or te.lower() != b"chunked"):
            raise CodecError(501, Details.INVALID_TRANSFER_ENCODING)
        if self._connection is not None:
            self._sanitizeConnection(headers)

        authority = self._host
        scheme = None
        if url[:1] == b"/":
            path = url
        elif isConnect:
            path = None
            authority = url
        elif url == b"*" and method == b"OPTIONS":
            path = url
        else:
            path, authority, scheme = self._absoluteUrl(url)

        if parser.get_http_version() == "1.1":
            version = "HTTP/1.1"
            http10 = False
        elif self._acceptHttp10:
            version = "HTTP/1.0"
            http10 = True
            if authority is None:
                authority = self._defaultHost
        else:
            raise CodecError(426, Details.LOW_VERSION)

        if authority is None:
            if not http10:
                raise CodecError(400, Details.MISSING_HOST, emptyBody=True)
        elif authority != self._lastAuthority:
            if _AUTHORITY.fullmatch(authority) is None:
                raise CodecError(400, Details.INVALID_AUTHORITY)
            self._lastAuthority = authority
        if path is not None and b"#" in path:
            raise CodecError(400, Details.PATH_NORMALIZATION_FAILED, emptyBody=True)

        request = RequestHeaders(method, path, authority, scheme, version,
                                 HeaderMap._fromList(headers))
        stream = ResponseEncoder(self)
        if http10:
            stream._http10 = True
        if not keepAlive:
            request.keepAlive = False
            stream._keepAlive = False
            stream._closeAfter = True
        if method == b"HEAD":
            stream._isHead = True

        if upgrade:
            kind = b"connect" if isConnect else (self._upgradeValue or b"").lower()
            if kind == b"h2c":
                # Envoy ignores h2c upgrades: strip them and serve HTTP/1.1.
                self._stripH2c(headers)
                upgrade = False
                self._h2cBody = (te is not None) or (cl is not None and cl != b"0")
            else:
                request.upgrade = kind
                stream._upgrade = True
                stream._isConnect = isConnect
        if te is not None:
            request.chunked = True
            if self._enableTrailers:
                self._trailers = []
            self._bodyRemaining = -1
            endStream = False
        elif cl is not None:
            n = int(cl)
            request.contentLength = n
            self._bodyRemaining = n
            endStream = n == 0
        else:
            self._bodyRemaining = 0
            endStream = True
        if upgrade:
            endStream = False
        if endStream:
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
            raise _StopParsing()
        stream = self._current
        remaining = self._bodyRemaining
        end = False
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
            if stream._upgrade or self._h2cBody:
                # llhttp stops at an upgrade's head; the bytes after it are
                # the upgraded stream's (or an h2c request's body).
                return
            stream._requestComplete = True
            trailers = self._trailers
            if trailers is not None:
                self._trailers = None
                if trailers:
                    if stream._events is None:
                        stream._decoder.decodeTrailers(HeaderMap._fromList(trailers))
                    else:
                        stream._events.append(
                            (_EV_TRAILERS, HeaderMap._fromList(trailers), True))
                    self._afterRequest(stream)
                    return
            if stream._events is None:
                stream._decoder.decodeData(b"", True)
            else:
                stream._events.append((_EV_DATA, b"", True))
        self._afterRequest(stream)

    def _afterRequest(self, stream):
        # A complete request waits for its response with reading paused, as
        # Envoy does; requests already in the buffer wait in the queue.
        if not stream._complete and not self._waitingForResponse and not self._closed:
            self._waitingForResponse = True
            self.readDisable(True)

    # -- request head details -------------------------------------------

    def _sanitizeConnection(self, headers):
        # Envoy's sanitizeConnectionHeader: drop the headers the Connection
        # header nominates, refuse nominating too many or X-Forwarded-*.
        value = self._connection.lower()
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
            if token == b"te":
                continue
            nominated.add(token)
        if nominated:
            headers[:] = [e for e in headers if e[0] not in nominated]

    def _absoluteUrl(self, url):
        # Envoy's handlePath for absolute-form targets: the URI's authority
        # wins over Host, and the scheme must be http or https.
        m = _ABSOLUTE_URL.fullmatch(url)
        if m is None:
            raise CodecError(400, Details.INVALID_URL)
        scheme, authority, rest = m.groups()
        if not authority:
            raise CodecError(400, Details.INVALID_URL)
        port = _PORT.fullmatch(authority)
        if port is not None and port.group(2) and not authority.endswith(b"]"):
            if int(port.group(2)) > 65535:
                raise CodecError(400, Details.INVALID_URL)
        scheme = scheme.lower()
        if scheme != b"http" and scheme != b"https":
            raise CodecError(400, Details.INVALID_SCHEME)
        if not rest:
            rest = b"/"
        elif rest[:1] != b"/":
            rest = b"/" + rest
        return rest, authority, scheme

    def _stripH2c(self, headers):
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

    # -- feeding ----------------------------------------------------------

    def _saveChunk(self, data):
        if self._savedBytes > _REPLAY_LIMIT:
            return
        self._savedBytes += len(data)
        if self._savedBytes > _REPLAY_LIMIT:
            self._savedFirst = b""
            self._savedMore = None
            return
        if self._savedMore is None:
            self._savedMore = [data]
        else:
            self._savedMore.append(data)

    def _onParserError(self, exc):
        cause = exc.__context__ if isinstance(exc, HttpParserCallbackError) else None
        if cause is not None:
            if isinstance(cause, _StopParsing):
                return
            if isinstance(cause, CodecError):
                self._protocolError(cause)
                return
            # A callback or decoder failed: not the peer's doing. Stop and
            # let the exception reach the transport's owner.
            self._closed = True
            raise cause
        if self._current is not None and self._idle and not self._current._keepAlive:
            # llhttp refuses bytes after a request that closes the
            # connection; Envoy ignores them.
            self._closed = True
            return
        if (self._forwarder is None and self._inHead and self._savedFirst
                and self._savedBytes <= _REPLAY_LIMIT):
            # The head may only need rewriting (bare CR or LF, obs-fold):
            # parse the input again from the last message boundary.
            self._replay()
            return
        self._protocolError(_mapParserError(str(exc)))

    def _replay(self):
        chunks = [self._savedFirst]
        if self._savedMore:
            chunks.extend(self._savedMore)
        skip = self._completedSinceSaved
        self._savedFirst = b""
        self._savedMore = None
        self._forwarder = _Forwarder(self, skip)
        self._parser = _newParser(self._forwarder)
        self._carry = b""
        self._inHead = False
        self._idle = True
        for chunk in chunks:
            if self._closed or self._forwarder is None:
                break
            self._feedRewriting(chunk, replaying=True)

    def _feedRewriting(self, data, replaying=False):
        """
        Feed C{data} rewriting what Envoy tolerates in a request head and
        llhttp does not: a CR not followed by LF inside a header value is
        dropped (Envoy forwards C{ab} for C{a\\rb}), a bare LF gets its CR,
        and an obs-fold line break is removed (C{a\\r\\n  b} -> C{a  b}).
        Body bytes are never touched.
        """
        forwarder = self._forwarder
        if not replaying and forwarder.inHead is False and self._idle and not self._carry:
            # Between messages at a chunk boundary: back to the fast path.
            self._forwarder = None
            self._parser = _newParser(self)
            self.dataReceived_unbatched(data)
            return
        if self._carry:
            data = self._carry + data
            self._carry = b""
        feed = self._parser.feed_data
        n = len(data)
        pos = 0
        base = 0
        try:
            for m in _ANOMALY.finditer(data):
                i = m.start()
                if i < pos:
                    continue
                if i > pos:
                    base = pos
                    feed(data[pos:i])
                    pos = i
                if not forwarder.inHead:
                    continue
                kind = m.lastgroup
                if kind == "fold":
                    if data[pos:pos + 1] == b"\r" or data[pos:pos + 1] == b"\n":
                        pos = m.end() - 1
                elif kind == "cr":
                    if i == n - 1:
                        self._carry = b"\r"
                        pos = n
                        break
                    if _crInHeaderValue(data, i):
                        pos = i + 1
                else:
                    base = pos
                    feed(b"\r")
                    base = pos
            if pos < n:
                tail = data[pos:]
                hold = _heldBack(tail) if forwarder.inHead else 0
                if hold:
                    if len(tail) > hold:
                        base = pos
                        feed(tail[:-hold])
                    if forwarder.inHead:
                        self._carry = tail[-hold:]
                    else:
                        base = n - hold
                        feed(tail[-hold:])
                else:
                    base = pos
                    feed(tail)
        except HttpParserUpgrade as e:
            self._onParserUpgrade(data, base + e.args[0])
        except HttpParserError as e:
            self._onParserError(e)
        else:
            if self._inHead and self._headSize > self._maxHeadBytes:
                self._protocolError(CodecError(431, Details.HEADERS_TOO_LARGE))

    def dataReceived_unbatched(self, data):
        # The fast path of dataReceived, entered from the rewriting feeder
        # (already inside a batch).
        self._savedFirst = data
        self._savedMore = None
        self._savedBytes = len(data)
        self._completedSinceSaved = 0
        try:
            self._parser.feed_data(data)
        except HttpParserUpgrade as e:
            self._onParserUpgrade(data, e.args[0])
        except HttpParserError as e:
            self._onParserError(e)

    def _onParserUpgrade(self, data, offset):
        rest = data[offset:]
        stream = self._current
        if self._h2cBody is not None:
            hasBody = self._h2cBody
            self._h2cBody = None
            if not hasBody:
                # A body-less h2c request: carry on with HTTP/1.1.
                if rest and not self._closed:
                    self._continueAfterUpgrade(rest)
                return
            # llhttp skipped the body; a made-up head gives a fresh parser
            # the request's framing, and the real bytes follow.
            self._forwarder = _Forwarder(self, skipHead=True)
            self._parser = _newParser(self._forwarder)
            self._savedFirst = b""
            if stream.__class__ is ResponseEncoder and self._bodyRemaining >= 0:
                head = b"POST / HTTP/1.1\r\ncontent-length: %d\r\n\r\n" % (
                    self._bodyRemaining,)
            else:
                head = b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
            self._inHead = True
            try:
                self._parser.feed_data(head)
            except HttpParserError as e:
                self._onParserError(e)
                return
            if rest and not self._closed:
                self._feedRewriting(rest, replaying=True)
            return
        if stream is None or not stream._upgrade:
            self._protocolError(CodecError(400, Details.CODEC_ERROR))
            return
        self._upgraded = stream
        if rest:
            self._upgradeData(rest)

    def _continueAfterUpgrade(self, rest):
        if self._forwarder is None:
            self.dataReceived_unbatched(rest)
        else:
            self._feedRewriting(rest, replaying=True)

    def _h2cBodyStarted(self):
        # The made-up head of an h2c request's body was parsed; its body
        # events now belong to the current stream.
        self._inHead = False

    def _upgradeData(self, data):
        stream = self._upgraded
        if stream._events is None:
            stream._decoder.decodeData(data, False)
        else:
            stream._events.append((_EV_DATA, data, False))

    # -- streams ----------------------------------------------------------

    def _responseComplete(self, stream):
        if stream._closeAfter or self._closed:
            self._loseConnection()
            return
        if self._active is stream:
            self._active = None
        if self._pending:
            self._dispatchPending()
        if self._active is None and self._waitingForResponse and not self._pending:
            self._waitingForResponse = False
            self.readDisable(False)

    def _dispatchPending(self):
        if self._dispatching:
            return
        self._dispatching = True
        try:
            pending = self._pending
            while self._active is None and pending and not self._closed:
                item = pending.popleft()
                if item.__class__ is CodecError:
                    self._sendLocalReply(item)
                    break
                self._active = item
                events = item._events
                item._events = None
                decoder = item._decoder = self._newStream(item)
                for kind, a, b in events:
                    if item._complete or self._closed:
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
        """Answer C{error} (a L{CodecError}) in turn, then close."""
        if self._closed:
            return
        self._stopParsingAfterError()
        current = self._current
        if (current is not None and not current._requestComplete
                and not current._complete and self._upgraded is None):
            if current._events is not None:
                # Still queued: the error takes its place.
                try:
                    self._pending.remove(current)
                except ValueError:
                    pass
            elif current is self._active:
                if current._started:
                    self._closed = True
                    self._loseConnection()
                    self._callbacks.onCodecError(error.status, error.details)
                else:
                    self._sendLocalReply(error)
                return
        if self._active is None and not self._pending:
            self._sendLocalReply(error)
        else:
            self._pending.append(error)

    def _stopParsingAfterError(self):
        # Parse nothing more; what is queued before the error still gets its
        # response.
        self._parser = None
        self._forwarder = None
        self._inHead = False
        self._idle = False
        self._upgraded = None
        self.dataReceived = _ignore
        self.on_message_begin = _stop

    def _sendLocalReply(self, error):
        active = self._active
        http10 = error.emptyBody and active is not None and active._http10
        self._send(localReply(error.status, self.dateCache.value(), self._serverName,
                              error.emptyBody, http10))
        self._closed = True
        self._loseConnection()
        self._callbacks.onCodecError(error.status, error.details)

    # -- output -----------------------------------------------------------

    def _send(self, data):
        if self._lost:
            return
        if self._batching:
            self._out.append(data)
        else:
            self._transport.write(data)

    def _loseConnection(self):
        self._closed = True
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
        if self._loseAfterFlush and not self._lost:
            self._loseAfterFlush = False
            self._lost = True
            self._transport.loseConnection()


def _ignore(data):
    pass


def _stop():
    raise _StopParsing()


def _crInHeaderValue(data, i):
    # Whether the CR at data[i] sits in a header value (Envoy drops it) rather
    # than in the request line or a name (where it is an error). A line that
    # began in an earlier read is judged on the part at hand.
    start = data.rfind(b"\n", 0, i) + 1
    line = data[start:i]
    if line[:1] == b" " or line[:1] == b"\t":
        return True
    colon = line.find(b":")
    return colon > 0 and b" " not in line[:colon]


def _heldBack(tail):
    # How many trailing bytes of a head to keep until more input shows
    # whether a line break is an obs-fold; never the empty line ending it.
    if tail.endswith(b"\r"):
        return 1
    if tail.endswith(b"\n"):
        if tail.endswith(b"\n\n") or tail.endswith(b"\n\r\n"):
            return 0
        return 2 if tail.endswith(b"\r\n") else 1
    return 0
