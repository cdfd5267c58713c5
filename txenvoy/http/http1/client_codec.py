# -*- test-case-name: tests.http.http1.test_client_codec -*-
"""
The upstream HTTP/1.1 codec (Envoy's C{Http1::ClientConnectionImpl}): writes
one request at a time on an upstream connection and parses the response.

The connection's owner (a connection pool) passes every byte read to
L{ClientCodec.dataReceived} and calls L{ClientCodec.connectionLost} when the
connection goes. The codec calls, on its callbacks::

    onResponseHeaders(responseHeaders, endStream)
    onResponseData(data, endStream)
    onResponseTrailers(trailers)       # only with enableTrailers
    onResponseComplete()
    onProtocolError(details)
    onResponse1xxHeaders(responseHeaders)   # optional

1xx responses other than 101 are swallowed, as Envoy does, unless the
callbacks have C{onResponse1xxHeaders}. After a 101, everything read is
passed on raw through C{onResponseData}. Past the head of a response whose
body has a C{content-length}, the reads that do not end the body go to
C{onResponseData} as they are, without the parser (which would copy every
byte into a new string to hand it over); the codec tells its reader to read
a response head in small reads (L{HEAD_READ_BYTES}) and a body in reads as
large as the connection's buffer limit, so that a large body arrives mostly
in reads of its own. A response delimited by the end of
the connection ends in L{ClientCodec.connectionLost}. Upstream protocol
errors (a garbage status line, C{Content-Length} with C{Transfer-Encoding},
oversized or invalid headers, a bad chunk) reach C{onProtocolError}, once,
and never raise. Bytes that arrive with no request in flight (after a
complete response, even in the same read) are one too: the connection is
then unusable, although the response before them stands.
"""

import re

from httptools import (
    HttpParserCallbackError,
    HttpParserError,
    HttpParserUpgrade,
    HttpResponseParser,
)
from zope.interface import implementer

from txenvoy.http.http1.codec import (
    LAST_CHUNK,
    PLAIN_NAME_MAX_LENGTH,
    PLAIN_NAMES,
    PLAIN_NAMES_MAX,
    Details,
    Http1Connection,
    StopParsing,
    joinTransferEncoding,
    parserError,
)
from txenvoy.http.headers import HeaderMap, ResponseHeaders
from txenvoy.http.pool_base import GATHER_MIN_BYTES
from txenvoy.interfaces import IClientConnectionCodec

__all__ = ["ClientCodec"]

# Request methods that get no "content-length: 0" when sent without a body
# (Envoy's requestShouldHaveNoBody).
_NO_BODY_METHODS = frozenset([b"GET", b"HEAD", b"DELETE", b"TRACE", b"CONNECT"])

_REQUEST_SPECIAL = frozenset(
    [b"host", b"content-length", b"transfer-encoding", b"connection", b"upgrade"])

_new = object.__new__

# The empty line that ends a response head.
_HEAD_END = re.compile(rb"\n\r?\n")

#: At most this many bytes per read while a response head is due (and on
#: an idle connection): a head and the start of its body, which the parser
#: reads. Envoy reads a socket into slices of this size.
HEAD_READ_BYTES = 16384


class _NoReader:
    """Where a codec built without a reader sets its read size."""

    readLimit = 0


@implementer(IClientConnectionCodec)
class ClientCodec(Http1Connection):
    """
    The upstream HTTP/1.1 codec of one connection.

    @param callbacks: see the module docstring.
    @param transport: the connection's transport (C{write}).
    @param maxResponseHeadersKb: limit on a response head, in KiB.
    @param maxHeadersCount: limit on the number of response headers.
    @param enableTrailers: write request trailers and pass response trailers
        on (Envoy's C{enable_trailers}); by default both are dropped.
    @param reader: the connection's reader, whose C{readLimit} the codec
        sets: the most bytes the next read should take, 0 for the
        connection's buffer limit (L{txenvoy.network.read_loop}).
    """

    # Its state as slots (see ServerCodec).
    __slots__ = ("_callbacks", "_transport", "_maxHeadBytes", "_maxHeadersCount",
                 "_enableTrailers", "_reader", "_onHeaders", "_onData", "_on1xx",
                 "_parser", "_inFlight", "_requestComplete", "_requestChunked",
                 "_requestKeepAlive", "_isHead", "_inHead", "_reason", "_headers",
                 "_headSize", "_headRaw", "_extraCount", "_contentLength",
                 "_transferEncoding", "_trailers", "_bodyRemaining", "_inLengthBody",
                 "_bypass", "_endDelivered", "_informational", "_extendedConnect",
                 "_closeDelimited", "_responseKeepAlive", "_headBuffer", "_headsSeen",
                 "_upgraded", "_dead", "_reusable")

    def __init__(self, callbacks, transport, maxResponseHeadersKb=60,
                 maxHeadersCount=100, enableTrailers=False, reader=None):
        Http1Connection.__init__(self, callbacks, transport, maxResponseHeadersKb,
                                 maxHeadersCount, enableTrailers)
        self._reader = reader = reader if reader is not None else _NoReader()
        reader.readLimit = HEAD_READ_BYTES
        self._onHeaders = callbacks.onResponseHeaders
        self._onData = callbacks.onResponseData
        self._on1xx = getattr(callbacks, "onResponse1xxHeaders", None)
        self._parser = HttpResponseParser(self)

        # The request.
        self._inFlight = False          # a request was sent, its response is due
        self._requestComplete = False
        self._requestChunked = False
        self._requestKeepAlive = True
        self._isHead = False

        # The response.
        self._inHead = False
        self._reason = b""
        self._headers = None
        self._headSize = 0
        self._headRaw = 0
        self._extraCount = 0
        self._contentLength = None
        self._transferEncoding = None
        self._trailers = None
        self._bodyRemaining = 0
        # In a content-length body; its reads skip the parser (_bypass).
        self._inLengthBody = False
        self._bypass = False
        self._endDelivered = False
        self._informational = False
        self._extendedConnect = False
        self._closeDelimited = False
        self._responseKeepAlive = True
        self._headBuffer = None         # raw bytes of a HEAD response's heads
        self._headsSeen = 0

        self._upgraded = False
        self._dead = False              # after an error or the end of the connection
        self._reusable = True

    # -- requests -----------------------------------------------------------

    #: The current request's bytes written (head, framing, body), its
    #: header lines' bytes, and the bytes of its response read so far
    #: (Envoy's upstream wire and header bytes).
    wireBytesSent = 0
    headerBytesSent = 0
    wireBytesReceived = 0
    headerBytesReceived = 0

    #: The value of the current response's first C{connection} header, or
    #: C{None}: its pool need not look for one in a response without it.
    responseConnection = None

    def encodeRequest(self, request, endStream):
        """
        Write a request head.

        The authority is written as the first header, C{host}, where Envoy
        writes it; a C{host} entry in the map is then skipped. Framing
        follows Envoy: a C{content-length} in the map is used as it is;
        without one, a request ending here gets C{content-length: 0} unless
        its method takes no body (GET, HEAD, DELETE, TRACE, CONNECT), one
        with a body is chunked, and upgrades and C{CONNECT} are raw.

        @param request: a L{RequestHeaders}.
        @param endStream: no body follows.
        @raise RuntimeError: when a request is already in flight or the
            connection cannot be reused.
        """
        if self._inFlight or self._dead:
            raise RuntimeError("the connection is not ready for a request")
        method = request.method
        authority = request.authority
        isConnect = method == b"CONNECT"
        extendedConnect = isConnect and request.upgrade not in (None, b"connect")
        if extendedConnect:
            # Envoy's transformUpgradeRequestFromH2toH1: an HTTP/2 extended
            # CONNECT (RFC 8441, :protocol websocket) goes to an HTTP/1.1
            # host as the upgrade it stands for.
            method = b"GET"
            isConnect = False
        target = authority if isConnect else request.path
        lines = []
        append = lines.append
        if authority is not None:
            append(b"host: " + authority)
        cl = None
        upgradeHeader = False
        connectionUpgrade = False
        keepAlive = True
        for entry in request.headers._entries:
            if entry[0] in _REQUEST_SPECIAL:
                name = entry[0]
                if name == b"host":
                    if authority is not None:
                        continue
                elif name == b"transfer-encoding":
                    continue
                elif name == b"content-length":
                    cl = entry[1]
                elif name == b"connection":
                    value = entry[1].lower()
                    if b"close" in value:
                        keepAlive = False
                    if b"upgrade" in value:
                        connectionUpgrade = True
                else:
                    upgradeHeader = True
            append(b": ".join(entry))
        if extendedConnect:
            append(b"upgrade: " + request.upgrade)
            append(b"connection: upgrade")
            upgradeHeader = connectionUpgrade = True
        raw = isConnect or (upgradeHeader and connectionUpgrade)
        chunked = False
        if cl is not None or raw:
            pass
        elif endStream:
            if method not in _NO_BODY_METHODS:
                append(b"content-length: 0")
        else:
            append(b"transfer-encoding: chunked")
            chunked = True
        lines.append(b"\r\n")
        headerLines = b"\r\n".join(lines)
        head = b"%s %s HTTP/1.1\r\n%s" % (method, target, headerLines)
        # Envoy's upstream header bytes: the header lines only, not the
        # request line nor the blank line that ends the head.
        self.headerBytesSent = len(headerLines) - 2
        self.wireBytesSent = len(head)
        self.wireBytesReceived = 0
        self._transport.write(head)

        self._inFlight = True
        self._extendedConnect = extendedConnect
        self._requestComplete = endStream
        self._requestChunked = chunked
        self._requestKeepAlive = keepAlive
        self._isHead = method == b"HEAD"
        self._headBuffer = [] if self._isHead else None
        self._headsSeen = 0

    def encodeData(self, data, endStream):
        """
        Write request body bytes (chunk-framed when the request is chunked).
        """
        if self._requestComplete or self._dead:
            return
        write = self._write
        if self._requestChunked:
            if len(data) >= GATHER_MIN_BYTES:
                self._writeSequence(self.chunkPieces(data, endStream))
            elif data:
                write(self.chunk(data, endStream))
            elif endStream:
                write(LAST_CHUNK)
        elif data:
            write(data)
        if endStream:
            self._requestComplete = True

    def encodeTrailers(self, trailers):
        """
        End the request with trailers, written only with C{enableTrailers}
        on a chunked request, as in Envoy.
        """
        if self._requestComplete or self._dead:
            return
        if self._requestChunked:
            self._write(self.lastChunk(trailers))
        self._requestComplete = True

    def _write(self, data):
        self.wireBytesSent += len(data)
        self._transport.write(data)

    def _writeSequence(self, buffers):
        for data in buffers:
            self.wireBytesSent += len(data)
        self._transport.writeSequence(buffers)

    # -- state ----------------------------------------------------------------

    @property
    def keepAlive(self):
        """
        Whether the connection may carry another request: the last response
        is complete, neither side asked to close, the response was not
        delimited by the end of the connection, and no error happened.
        """
        return not self._inFlight and not self._dead and self._reusable

    @property
    def responseInProgress(self):
        """
        Whether a request's response has not been completed; after
        L{connectionLost} this means the upstream reset the stream.
        """
        return self._inFlight

    # -- input ----------------------------------------------------------------

    def dataReceived(self, data):
        """Parse response bytes; protocol errors go to C{onProtocolError}."""
        if self._upgraded:
            self._onData(data, False)
            return
        if self._dead:
            return
        if self._bypass:
            self._lengthBodyReceived(data)
            return
        if not self._inFlight:
            self._protocolError(Details.CODEC_ERROR)
            return
        self.wireBytesReceived += len(data)
        if self._headBuffer is not None:
            self._headBuffer.append(data)
        error = None
        try:
            self._parser.feed_data(data)
        except HttpParserUpgrade as e:
            self._upgrade(data[e.args[0]:])
            return
        except HttpParserError as e:
            error = e
        else:
            if self._inHead:
                self._headRaw += len(data)
                if self._headRaw > self._maxHeadBytes:
                    self._protocolError(Details.HEADERS_TOO_LARGE)
            elif self._inLengthBody and not self._dead:
                # The rest of this body skips the parser, left where it
                # stands; the next response gets a new one.
                self._bypass = True
            return
        # Out of the except clause, so that a callback's exception raised
        # again here is not chained to the parser's.
        cause = error.__context__ if isinstance(error, HttpParserCallbackError) else None
        if isinstance(cause, StopParsing):
            if not self._dead and self._headBuffer is not None:
                self._headResponseDone()
        elif isinstance(cause, _ProtocolError):
            self._protocolError(cause.details)
        elif cause is not None:
            self._dead = True
            raise cause
        else:
            self._protocolError(parserError(str(error)).details)

    def _lengthBodyReceived(self, data):
        """
        Bytes of a C{content-length} body past the parser: passed on as
        read (as L{on_body} and L{on_message_complete} would); what follows
        the body's end is read as the start of the next response.
        """
        remaining = self._bodyRemaining
        n = len(data)
        if n < remaining:
            self.wireBytesReceived += n
            self._bodyRemaining = remaining - n
            self._onData(data, False)
            return
        self.wireBytesReceived += remaining
        rest = None
        if n > remaining:
            rest = data[remaining:]
            data = data[:remaining]
        self._bodyRemaining = 0
        self._inLengthBody = self._bypass = False
        self._endDelivered = True
        self._parser = HttpResponseParser(self)
        self._onData(data, True)
        if self._dead:
            return
        # The end was delivered: what the parser's end would do.
        self.on_message_complete()
        if rest and not self._dead:
            self.dataReceived(rest)

    def connectionLost(self, reason=None):
        """
        The connection is gone. A response delimited by the end of the
        connection (or an upgraded stream) ends here; any other response
        still in progress stays incomplete (see L{responseInProgress}).
        """
        if self._dead:
            return
        self._dead = True
        if self._upgraded:
            self._inFlight = False
            self._onData(b"", True)
            self._callbacks.onResponseComplete()
        elif self._inFlight and self._closeDelimited and not self._inHead:
            self._inFlight = False
            self._onData(b"", True)
            self._callbacks.onResponseComplete()

    # -- parser callbacks ---------------------------------------------------

    def on_message_begin(self):
        if not self._inFlight:
            # A second response to one request.
            raise _ProtocolError(Details.CODEC_ERROR)
        self._inHead = True
        self._inLengthBody = False
        self._reason = b""
        self._headers = []
        self.responseConnection = None
        self._headSize = 0
        self.headerBytesReceived = 0
        self._headRaw = 0
        self._extraCount = 0
        self._contentLength = None
        self._transferEncoding = None
        self._trailers = None
        self._endDelivered = False
        self._informational = False
        self._closeDelimited = False

    def on_status(self, reason):
        self._reason += reason

    def on_header(self, name, value, _plain=PLAIN_NAMES.get):
        # (The default makes the lookup local: this runs per header.)
        lname = _plain(name)
        value = value.rstrip(b" \t")
        self._headSize += len(name) + len(value) + 4
        if lname is None:
            lname = name.lower()
            if self._trailers is not None:
                self._trailers.append((lname, value))
                return
            if lname == b"content-length":
                self._contentLength = value
            elif lname == b"connection":
                if self.responseConnection is None:
                    self.responseConnection = value
            elif lname == b"transfer-encoding":
                # Framing is the codec's business: the body is delivered
                # de-chunked and the header is not passed on.
                self._transferEncoding = joinTransferEncoding(
                    self._transferEncoding, value)
                self._extraCount += 1
                return
            elif b"_" not in lname and len(PLAIN_NAMES) < PLAIN_NAMES_MAX and (
                    lname not in _REQUEST_SPECIAL and len(name) <= PLAIN_NAME_MAX_LENGTH):
                PLAIN_NAMES[name] = lname
        self._headers.append((lname, value))
        if self._headSize > self._maxHeadBytes:
            raise _ProtocolError(Details.HEADERS_TOO_LARGE)

    def on_headers_complete(self):
        self._inHead = False
        parser = self._parser
        status = parser.get_status_code()
        headers = self._headers
        lines = len(headers) + self._extraCount
        if lines > self._maxHeadersCount:
            raise _ProtocolError(Details.TOO_MANY_HEADERS)
        # Envoy's header bytes received: each name and value, with the colon
        # and the line's CRLF (not the space between), so one byte less per
        # line than the head's size counts.
        self.headerBytesReceived = self._headSize - lines
        te = self._transferEncoding
        if te is not None and te.lower() != b"chunked":
            raise _ProtocolError(Details.INVALID_TRANSFER_ENCODING)
        if status < 100:
            # Envoy 1.40 resets such a response as a protocol error (502).
            raise _ProtocolError(Details.CODEC_ERROR)
        # ResponseHeaders(status, HeaderMap.fromList(headers), ...), without
        # the two calls: once per response.
        response = _new(ResponseHeaders)
        response.status = status
        response.reason = self._reason
        response.headers = headerMap = _new(HeaderMap)
        headerMap._entries = headers
        response.version = "HTTP/1.1" if parser.get_http_version() == "1.1" else "HTTP/1.0"
        response.contentLength = None
        self._headsSeen += 1
        if 100 <= status < 200 and status != 101:
            self._informational = True
            if self._on1xx is not None:
                self._on1xx(response)
            return
        cl = self._contentLength
        if cl is not None:
            response.contentLength = int(cl)
        self._responseKeepAlive = parser.should_keep_alive()
        if status == 101:
            # llhttp completes the message at the head and then reports
            # the upgrade; the stream goes on as raw data.
            self._informational = True
            if self._extendedConnect:
                # Envoy's transformUpgradeResponseFromH1toH2: the 101 that
                # accepts an HTTP/2 extended CONNECT goes back as a 200.
                response.status = 200
                response.reason = None
                response.headers.remove(b"upgrade")
                response.headers.remove(b"connection")
            self._onHeaders(response, False)
            return
        if self._isHead or status == 204 or status == 304:
            endStream = True
        elif te is not None:
            endStream = False
            self._bodyRemaining = -1
            self._trailers = self._headers = []
        elif cl is not None:
            self._bodyRemaining = response.contentLength
            endStream = self._bodyRemaining == 0
            self._inLengthBody = not endStream
        else:
            endStream = False
            self._bodyRemaining = -1
            self._closeDelimited = True
        self._endDelivered = endStream
        if not endStream:
            # A body follows: read it in large reads.
            self._reader.readLimit = 0
        self._onHeaders(response, endStream)
        if self._isHead and not self._dead:
            # llhttp would wait for the body a HEAD response announces.
            raise StopParsing()

    def on_body(self, data):
        if self._dead:
            raise StopParsing()
        if self._informational:
            # A 1xx has no body (RFC 9110 15.2); llhttp reads one for a 1xx
            # other than 100, 102 and 103 that announces it. It must not
            # reach the callbacks as the final response's data.
            raise _ProtocolError(Details.CODEC_ERROR)
        remaining = self._bodyRemaining
        end = False
        if remaining > 0:
            remaining -= len(data)
            self._bodyRemaining = remaining
            end = remaining <= 0
            self._endDelivered = end
            if end:
                self._inLengthBody = False
        self._onData(data, end)

    def on_message_complete(self):
        if self._dead:
            raise StopParsing()
        if self._informational:
            self._informational = False
            return
        if not self._endDelivered:
            trailers = self._trailers
            if trailers and self._enableTrailers:
                self._callbacks.onResponseTrailers(HeaderMap.fromList(trailers))
            else:
                self._onData(b"", True)
        self._trailers = None
        # The response is done (the end of every response, also one the
        # parser did not see to its end).
        self._inFlight = False
        self._reader.readLimit = HEAD_READ_BYTES
        if not (self._responseKeepAlive and self._requestKeepAlive
                and self._requestComplete and not self._closeDelimited):
            self._reusable = False
        self._callbacks.onResponseComplete()

    # -- internals --------------------------------------------------------

    def _headResponseDone(self):
        # The final head of a HEAD response was parsed; the parser was
        # abandoned there. Bytes beyond that head mean the upstream sent a
        # body anyway: the response is complete, the connection not reusable.
        buffered = b"".join(self._headBuffer)
        self._headBuffer = None
        end = 0
        for _ in range(self._headsSeen):
            m = _HEAD_END.search(buffered, end)
            if m is None:
                break
            end = m.end()
        if end < len(buffered):
            self._reusable = False
        self._parser = HttpResponseParser(self)
        # Its end was delivered with the head.
        self.on_message_complete()

    def _upgrade(self, rest):
        self._upgraded = True
        self._reusable = False
        self._reader.readLimit = 0
        if rest:
            self._onData(rest, False)

    def _protocolError(self, details):
        if self._dead:
            return
        self._dead = True
        self._reusable = False
        self._callbacks.onProtocolError(details)


class _ProtocolError(Exception):
    """Raised from a parser callback for an upstream protocol error."""

    def __init__(self, details):
        Exception.__init__(self, details)
        self.details = details
