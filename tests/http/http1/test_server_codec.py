"""
Tests for L{txenvoy.http.http1.server_codec}, L{txenvoy.http.http1.codec},
L{txenvoy.http.headers} and L{txenvoy.http.status}.

Each malformed-input case names the Envoy 1.40 behaviour it pins (observed
against a real Envoy on a default listener, see the reliability anchor,
section 1.4).
"""

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.http.http1 import codec
from txenvoy.http.http1.codec import (
    NON_PROTOCOL_ERROR_DETAILS,
    CodecError,
    DateCache,
    Details,
    localReply,
)
from txenvoy.http.http1.server_codec import ResponseEncoder, ServerCodec
from txenvoy.http.headers import HeaderMap, RequestHeaders, ResponseHeaders, startRequest
from txenvoy.http.pool_base import GATHER_MIN_BYTES
from txenvoy.http.status import reasonPhrase, statusLine

from tests.http.http1.sequences import recordSequences

DATE = b"Sun, 09 Sep 2001 01:46:40 GMT"


def reply(status, body, serverName=b"envoy"):
    """The codec's protocol-error reply, spelled out as Envoy sends it."""
    phrase = reasonPhrase(status).encode("ascii")
    return (b"HTTP/1.1 %d %s\r\ncontent-length: %d\r\ncontent-type: text/plain\r\n"
            b"date: %s\r\nserver: %s\r\nconnection: close\r\n\r\n%s" % (
                status, phrase, len(body), DATE, serverName, body))


BAD_REQUEST = reply(400, b"Bad Request")
NOT_IMPLEMENTED = reply(501, b"Not Implemented")
UPGRADE_REQUIRED = reply(426, b"Upgrade Required")
TOO_LARGE = reply(431, b"Request Header Fields Too Large")
EMPTY_400 = (b"HTTP/1.1 400 Bad Request\r\ndate: " + DATE +
             b"\r\nserver: envoy\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


def okHeaders():
    return ResponseHeaders(200, HeaderMap([(b"content-length", b"2")]))


class Decoder:
    """Records what the codec decodes for one stream."""

    def __init__(self, owner, encoder):
        self.owner = owner
        self.encoder = encoder
        self.headers = None
        self.endStream = None
        self.body = []
        self.trailers = None
        self.ended = False

    def decodeHeaders(self, headers, endStream):
        self.headers = headers
        self.endStream = endStream
        self.owner.events.append(("headers", headers.path))
        if endStream:
            self._end()

    def decodeData(self, data, endStream):
        self.body.append(data)
        self.owner.events.append(("data", data, endStream))
        if endStream:
            self._end()

    def decodeTrailers(self, trailers):
        self.trailers = trailers
        self.owner.events.append(("trailers",))
        self._end()

    def _end(self):
        self.ended = True
        if self.owner.autoRespond:
            self.respond()

    def respond(self, body=b"ok"):
        self.encoder.encodeHeaders(ResponseHeaders(200, HeaderMap(
            [(b"content-length", b"%d" % len(body))])), False)
        self.encoder.encodeData(body, True)


class Callbacks:
    """The connection manager side: records streams and codec errors."""

    def __init__(self, autoRespond=True):
        self.autoRespond = autoRespond
        self.decoders = []
        self.events = []
        self.errors = []
        self.dropped = []

    def newStream(self, encoder):
        decoder = Decoder(self, encoder)
        self.decoders.append(decoder)
        return decoder

    def onCodecError(self, status, details):
        self.errors.append((status, details))

    def onDroppedHeaderWithUnderscores(self, name):
        self.dropped.append(name)


class CodecTestMixin:
    """Builds a codec on a C{StringTransport} with a fixed clock."""

    def codec(self, autoRespond=True, **kwargs):
        self.clock = Clock()
        self.clock.advance(1000000000)
        self.transport = StringTransport()
        self.callbacks = Callbacks(autoRespond)
        kwargs.setdefault("clock", self.clock)
        self.server = ServerCodec(self.callbacks, self.transport, **kwargs)
        return self.server

    def feed(self, data, step=None, **kwargs):
        """Build a codec and feed it C{data}, in C{step}-byte reads if given."""
        server = self.codec(**kwargs)
        if step:
            for i in range(0, len(data), step):
                server.dataReceived(data[i:i + step])
        else:
            server.dataReceived(data)
        return self.transport.value()

    def assertRejected(self, data, expected, status, details, **kwargs):
        """
        C{data} gets exactly C{expected}, the connection is closed, nothing
        reached a decoder, and the error was reported. Also when the input
        arrives one byte at a time.
        """
        for step in (None, 1):
            self.assertEqual(self.feed(data, step, **kwargs), expected)
            self.assertTrue(self.transport.disconnecting)
            self.assertEqual(self.callbacks.decoders, [])
            self.assertEqual(self.callbacks.errors, [(status, details)])

    def assertServed(self, data, step=None, **kwargs):
        """C{data} is one request, answered 200 on an open connection."""
        self.assertEqual(self.feed(data, step, **kwargs), OK)
        self.assertFalse(self.transport.disconnecting)
        self.assertEqual(self.callbacks.errors, [])
        self.assertEqual(len(self.callbacks.decoders), 1)
        return self.callbacks.decoders[0]


class LocalReplyTests(CodecTestMixin, SynchronousTestCase):
    """The codec's own replies are byte-for-byte Envoy's."""

    def test_protocolErrorLayout(self):
        """
        Envoy's codec reply: content-length, content-type: text/plain, date,
        server, connection: close, then the reason phrase as the body.
        """
        self.assertEqual(
            localReply(400, DATE, b"envoy"),
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 11\r\n"
            b"content-type: text/plain\r\ndate: Sun, 09 Sep 2001 01:46:40 GMT\r\n"
            b"server: envoy\r\nconnection: close\r\n\r\nBad Request")

    def test_emptyBodyLayout(self):
        """
        The connection manager's empty 400 (missing Host, fragment) puts
        content-length: 0 last and has no content-type.
        """
        self.assertEqual(localReply(400, DATE, b"envoy", emptyBody=True), EMPTY_400)

    def test_serverName(self):
        """The server header carries the configured server name."""
        self.assertEqual(
            self.feed(b"FOO / HTTP/1.1\r\nHost: a\r\n\r\n", serverName=b"edge"),
            reply(400, b"Bad Request", b"edge"))

    def test_dateCachedPerSecond(self):
        """The date is formatted once per second of the clock."""
        clock = Clock()
        clock.advance(1000000000.2)
        cache = DateCache(clock)
        first = cache.value()
        self.assertEqual(first, DATE)
        clock.advance(0.5)
        self.assertIs(cache.value(), first)
        clock.advance(0.5)
        self.assertEqual(cache.value(), b"Sun, 09 Sep 2001 01:46:41 GMT")

    def test_dateWallClock(self):
        """Without a clock the wall clock is read."""
        self.assertTrue(DateCache().value().endswith(b" GMT"))

    def test_codecErrorAttributes(self):
        """L{CodecError} carries the status and Envoy's details."""
        error = CodecError(431, Details.HEADERS_TOO_LARGE)
        self.assertEqual((error.status, error.details, error.emptyBody),
                         (431, "http1.headers_too_large", False))
        self.assertIsInstance(error, Exception)

    def test_nonProtocolErrors(self):
        """Missing Host and fragments are connection-manager replies."""
        self.assertEqual(NON_PROTOCOL_ERROR_DETAILS,
                         {"missing_host_header", "path_normalization_failed"})

    def test_noImportCycle(self):
        """
        L{txenvoy.http.http1.codec} holds what both codecs share and imports
        neither: each codec derives from its L{Http1Connection}.
        """
        from txenvoy.http.http1.client_codec import ClientCodec
        self.assertFalse(hasattr(codec, "ServerCodec"))
        self.assertFalse(hasattr(codec, "ClientCodec"))
        self.assertTrue(issubclass(ServerCodec, codec.Http1Connection))
        self.assertTrue(issubclass(ClientCodec, codec.Http1Connection))


class StatusTests(SynchronousTestCase):
    """Reason phrases are Envoy's."""

    def test_known(self):
        self.assertEqual(reasonPhrase(431), "Request Header Fields Too Large")
        self.assertEqual(reasonPhrase(425), "Too Early")
        self.assertEqual(reasonPhrase(599), "Last Unassigned Server Error Code")

    def test_unknown(self):
        """Codes Envoy does not name are Unknown, even 418 and 451."""
        for code in (418, 451, 499, 509, 306, 799):
            self.assertEqual(reasonPhrase(code), "Unknown")
        self.assertEqual(statusLine(418), b"HTTP/1.1 418 Unknown\r\n")

    def test_statusLine(self):
        self.assertEqual(statusLine(200), b"HTTP/1.1 200 OK\r\n")
        self.assertEqual(statusLine(200, http10=True), b"HTTP/1.0 200 OK\r\n")
        self.assertIs(statusLine(404), statusLine(404))


class HeaderMapTests(SynchronousTestCase):
    """L{HeaderMap} keeps order and lower-cases names."""

    def test_startRequestIsTheClassCall(self):
        """
        startRequest on a bare instance (the codec's way, without the class
        call) makes what C{RequestHeaders(...)} makes.
        """
        headers = HeaderMap([(b"a", b"1")])
        made = startRequest(object.__new__(RequestHeaders), b"GET", b"/p", b"h", b"http",
                            "HTTP/1.0", headers)
        called = RequestHeaders(b"GET", b"/p", b"h", b"http", "HTTP/1.0", headers)
        for name in RequestHeaders.__slots__:
            self.assertEqual(getattr(made, name), getattr(called, name), name)
        self.assertIsInstance(RequestHeaders(b"GET", b"/").headers, HeaderMap)

    def test_getAddSet(self):
        m = HeaderMap([(b"A", b"1"), (b"b", b"2"), (b"a", b"3")])
        self.assertEqual(m.get(b"a"), b"1")
        self.assertEqual(m.get(b"A"), b"1")
        self.assertEqual(m.getAll(b"a"), [b"1", b"3"])
        self.assertIsNone(m.get(b"c"))
        self.assertEqual(m.get(b"c", b"d"), b"d")
        m.set(b"a", b"9")
        self.assertEqual(list(m), [(b"a", b"9"), (b"b", b"2")])
        m.set(b"C", b"4")
        m.add(b"b", b"5")
        self.assertEqual(m.items(), [(b"a", b"9"), (b"b", b"2"), (b"c", b"4"), (b"b", b"5")])
        self.assertEqual(len(m), 4)
        self.assertIn(b"B", m)
        self.assertNotIn(b"z", m)

    def test_remove(self):
        m = HeaderMap([(b"x-a", b"1"), (b"b", b"2"), (b"x-a", b"3"), (b"x-c", b"4")])
        self.assertEqual(m.remove(b"X-A"), 2)
        self.assertEqual(m.remove(b"nope"), 0)
        self.assertEqual(m.removePrefix(b"x-"), 1)
        self.assertEqual(list(m), [(b"b", b"2")])

    def test_setDefaultCopyEquality(self):
        m = HeaderMap()
        self.assertEqual(m.setDefault(b"a", b"1"), b"1")
        self.assertEqual(m.setDefault(b"a", b"2"), b"1")
        c = m.copy()
        c.add(b"b", b"2")
        self.assertEqual(len(m), 1)
        self.assertNotEqual(m, c)
        self.assertEqual(m, HeaderMap([(b"a", b"1")]))
        self.assertEqual(m.byteSize(), len(b"a: 1\r\n"))
        self.assertIn("HeaderMap", repr(m))

    def test_requestAndResponseHeads(self):
        r = RequestHeaders(b"GET", b"/", b"a.test")
        self.assertEqual(r.host, b"a.test")
        r.host = b"b.test"
        self.assertEqual(r.authority, b"b.test")
        self.assertEqual((r.version, r.keepAlive, r.upgrade, len(r.headers)),
                         ("HTTP/1.1", True, None, 0))
        self.assertIn("GET", repr(r))
        s = ResponseHeaders(204)
        self.assertEqual((s.status, s.reason, len(s.headers)), (204, None, 0))
        self.assertIn("204", repr(s))


class BasicServingTests(CodecTestMixin, SynchronousTestCase):
    """Well-formed requests reach the decoder as Envoy's codec passes them."""

    def test_get(self):
        """A GET is one stream, ended by its headers, Host moved to authority."""
        decoder = self.assertServed(
            b"GET /p?q=1 HTTP/1.1\r\nHost: a.test\r\nUser-Agent: t\r\nX-Mixed-Case: V\r\n\r\n")
        h = decoder.headers
        self.assertEqual((h.method, h.path, h.authority, h.scheme, h.version),
                         (b"GET", b"/p?q=1", b"a.test", None, "HTTP/1.1"))
        self.assertEqual(list(h.headers), [(b"user-agent", b"t"), (b"x-mixed-case", b"V")])
        self.assertTrue(decoder.endStream)
        self.assertTrue(h.keepAlive)
        self.assertIsNone(h.contentLength)

    def test_namesLoweredValuesKept(self):
        """Header names are lower-cased, values kept byte for byte."""
        decoder = self.assertServed(
            b"GET / HTTP/1.1\r\nHost: a\r\nX-FOO: MiXeD\r\nCONTENT-TYPE: Text/Plain\r\n\r\n")
        self.assertEqual(list(decoder.headers.headers),
                         [(b"x-foo", b"MiXeD"), (b"content-type", b"Text/Plain")])

    def test_trailingWhitespaceTrimmed(self):
        """Envoy trims whitespace around header values."""
        decoder = self.assertServed(b"GET / HTTP/1.1\r\nHost: a \r\nX-A:  v \t\r\n\r\n")
        self.assertEqual(decoder.headers.authority, b"a")
        self.assertEqual(decoder.headers.headers.get(b"x-a"), b"v")

    def test_postWithBody(self):
        """A Content-Length body is passed on; the last piece ends the stream."""
        server = self.codec()
        server.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhe")
        server.dataReceived(b"llo")
        decoder = self.callbacks.decoders[0]
        self.assertFalse(decoder.endStream)
        self.assertEqual(decoder.headers.contentLength, 5)
        self.assertEqual(decoder.headers.headers.get(b"content-length"), b"5")
        self.assertEqual(self.callbacks.events,
                         [("headers", b"/"), ("data", b"he", False), ("data", b"llo", True)])
        self.assertEqual(self.transport.value(), OK)

    def test_contentLengthZero(self):
        """Content-Length: 0 ends the stream with the headers."""
        decoder = self.assertServed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
        self.assertTrue(decoder.endStream)

    def test_everySplit(self):
        """The same request split at every byte is decoded the same way."""
        data = (b"POST /x HTTP/1.1\r\nHost: a\r\nX-Long: " + b"v" * 40 +
                b"\r\nContent-Length: 3\r\n\r\nabc")
        for cut in range(1, len(data)):
            server = self.codec()
            server.dataReceived(data[:cut])
            server.dataReceived(data[cut:])
            self.assertEqual(self.transport.value(), OK, cut)
            decoder = self.callbacks.decoders[0]
            self.assertEqual(b"".join(decoder.body), b"abc")
            self.assertEqual(decoder.headers.headers.get(b"x-long"), b"v" * 40)

    def test_doubleSpaceInRequestLine(self):
        """Envoy normalises a double space in the request line and serves it."""
        decoder = self.assertServed(b"GET  /a HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(decoder.headers.path, b"/a")

    def test_pathVerbatim(self):
        """normalize_path is off by default: /a/../b is passed verbatim."""
        self.assertEqual(self.assertServed(
            b"GET /a/../b HTTP/1.1\r\nHost: a\r\n\r\n").headers.path, b"/a/../b")

    def test_nonAsciiValue(self):
        """Bytes 0x80-0xFF in a header value are passed through (Envoy: 200)."""
        decoder = self.assertServed(b"GET / HTTP/1.1\r\nHost: a\r\nX-A: \xc3\xa9\xff\r\n\r\n")
        self.assertEqual(decoder.headers.headers.get(b"x-a"), b"\xc3\xa9\xff")

    def test_tabInValue(self):
        decoder = self.assertServed(b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\tb\r\n\r\n")
        self.assertEqual(decoder.headers.headers.get(b"x-a"), b"a\tb")

    def test_twoHostsMerged(self):
        """Envoy quirk: two differing Host headers become a.test,b.test."""
        decoder = self.assertServed(b"GET / HTTP/1.1\r\nHost: a.test\r\nhost: b.test\r\n\r\n")
        self.assertEqual(decoder.headers.authority, b"a.test,b.test")

    def test_emptyHost(self):
        """An empty Host is a valid (empty) authority for Envoy."""
        self.assertEqual(self.assertServed(
            b"GET / HTTP/1.1\r\nHost:\r\n\r\n").headers.authority, b"")

    def test_leadingEmptyLines(self):
        """Empty lines before a request line are skipped."""
        self.assertServed(b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")

    def test_expectContinue(self):
        """
        Expect: 100-continue reaches the decoder, which may answer 100
        Continue (Envoy sends exactly C{HTTP/1.1 100 Continue} and an empty
        line) and then the response.
        """
        server = self.codec(autoRespond=False)
        server.dataReceived(
            b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
        decoder = self.callbacks.decoders[0]
        self.assertEqual(decoder.headers.headers.get(b"expect"), b"100-continue")
        decoder.encoder.encode100ContinueHeaders()
        self.assertEqual(self.transport.value(), b"HTTP/1.1 100 Continue\r\n\r\n")
        server.dataReceived(b"hi")
        decoder.respond()
        self.assertEqual(self.transport.value(), b"HTTP/1.1 100 Continue\r\n\r\n" + OK)
        decoder.encoder.encode100ContinueHeaders()
        self.assertFalse(self.transport.disconnecting)

    def test_absoluteForm(self):
        """
        Envoy: C{GET http://b.test/p} reaches the upstream as path /p with
        host b.test: the URI authority wins over Host.
        """
        h = self.assertServed(b"GET http://b.test/p?q=1 HTTP/1.1\r\nHost: a\r\n\r\n").headers
        self.assertEqual((h.path, h.authority, h.scheme), (b"/p?q=1", b"b.test", b"http"))

    def test_absoluteFormNoPath(self):
        """C{GET http://b.test} gets path /, and needs no Host."""
        h = self.assertServed(b"GET HTTP://b.test:8080 HTTP/1.1\r\n\r\n").headers
        self.assertEqual((h.path, h.authority, h.scheme), (b"/", b"b.test:8080", b"http"))

    def test_absoluteFormHttps(self):
        """An https absolute URI on plaintext is served (validate_scheme off)."""
        h = self.assertServed(b"GET https://b.test/p HTTP/1.1\r\nHost: a\r\n\r\n").headers
        self.assertEqual(h.scheme, b"https")

    def test_optionsStar(self):
        """C{OPTIONS *} passes the codec (Envoy routes it)."""
        self.assertEqual(self.assertServed(
            b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").headers.path, b"*")


class SmugglingTests(CodecTestMixin, SynchronousTestCase):
    """Framing conflicts are refused before anything reaches a decoder."""

    def test_contentLengthAndChunked(self):
        """Envoy: CL with TE: chunked, in either order, is 400 and closed."""
        for head in (b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
                     b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
                     b"Content-Length: 4\r\nTransfer-Encoding: gzip\r\n"):
            self.assertRejected(b"POST / HTTP/1.1\r\nHost: a\r\n" + head + b"\r\n0\r\n\r\n",
                                BAD_REQUEST, 400, Details.CONTENT_LENGTH_AND_CHUNKED)

    def test_clTeSmuggle(self):
        """Envoy: a CL.TE smuggling attempt gets one 400 and nothing else."""
        data = (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 44\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                b"GET /admin HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertRejected(data, BAD_REQUEST, 400, Details.CONTENT_LENGTH_AND_CHUNKED)

    def test_duplicateContentLength(self):
        """
        Envoy: two Content-Length headers are 400 even when identical, and
        so is a list; stricter than RFC 9110 allows.
        """
        for head in (b"Content-Length: 5\r\nContent-Length: 6\r\n",
                     b"Content-Length: 5\r\nContent-Length: 5\r\n",
                     b"Content-Length: 5, 5\r\n"):
            self.assertRejected(b"POST / HTTP/1.1\r\nHost: a\r\n" + head + b"\r\nhello",
                                BAD_REQUEST, 400, Details.CODEC_ERROR)

    def test_badContentLength(self):
        """Envoy: CL +5, -1, abc, 2^64 and empty are 400."""
        for value in (b"+5", b"-1", b"abc", b"18446744073709551616", b"", b"5 5"):
            self.assertRejected(
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: " + value + b"\r\n\r\nhello",
                BAD_REQUEST, 400, Details.CODEC_ERROR)

    def test_unsupportedTransferEncoding(self):
        """
        Envoy: only a bare chunked is accepted; gzip, chunked / chunked,
        chunked / identity / xchunked, and two TE headers, are 501.
        """
        for value in (b"gzip, chunked", b"chunked, chunked", b"identity", b"xchunked",
                      b"chunked\r\nTransfer-Encoding: chunked"):
            self.assertRejected(
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: " + value + b"\r\n\r\n0\r\n\r\n",
                NOT_IMPLEMENTED, 501, Details.INVALID_TRANSFER_ENCODING)

    def test_transferEncodingHeadersAreOneList(self):
        """
        Envoy 1.40 judges several Transfer-Encoding headers as one list
        (RFC 9112): C{x} then C{chunked}, or C{gzip} then C{chunked}, is
        501 and the body's second request never reaches anyone (the last
        value does not win).
        """
        for first in (b"x", b"gzip", b"identity", b"chunked"):
            self.assertRejected(
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: " + first +
                b"\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
                NOT_IMPLEMENTED, 501, Details.INVALID_TRANSFER_ENCODING)

    def test_emptyTransferEncoding(self):
        """
        Envoy: an empty Transfer-Encoding alone is 501. Next to C{chunked}
        Envoy takes it as nothing (before) or frames the request by no
        length at all and closes (after); both are refused here (501), the
        safe side of Envoy.
        """
        for head in (b"Transfer-Encoding:\r\n",
                     b"Transfer-Encoding: chunked\r\nTransfer-Encoding:\r\n",
                     b"Transfer-Encoding:\r\nTransfer-Encoding: chunked\r\n"):
            self.assertRejected(
                b"POST / HTTP/1.1\r\nHost: a\r\n" + head + b"\r\n0\r\n\r\n",
                NOT_IMPLEMENTED, 501, Details.INVALID_TRANSFER_ENCODING)

    def test_chunkedCaseInsensitive(self):
        """TE: CHUNKED is chunked; the header is not passed on."""
        decoder = self.assertServed(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n0\r\n\r\n")
        self.assertTrue(decoder.headers.chunked)
        self.assertNotIn(b"transfer-encoding", decoder.headers.headers)

    def test_transferEncodingOnHttp10(self):
        """Envoy: TE: chunked on HTTP/1.0 is refused for the version first (426)."""
        self.assertRejected(
            b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            UPGRADE_REQUIRED, 426, Details.LOW_VERSION)

    def test_unsupportedTransferEncodingOnHttp10(self):
        """Envoy checks the transfer encoding before the version: 501."""
        self.assertRejected(
            b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
            NOT_IMPLEMENTED, 501, Details.INVALID_TRANSFER_ENCODING)

    def test_duplicateContentLengthOnHttp10(self):
        """Envoy: two CLs on HTTP/1.0 are a 400, not a 426."""
        self.assertRejected(
            b"POST / HTTP/1.0\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            BAD_REQUEST, 400, Details.CODEC_ERROR)

    def test_bareCrMakesOneHeader(self):
        """
        Envoy: C{X:X\\rTransfer-Encoding: chunked} plus a CL is one header
        C{x: XTransfer-Encoding: chunked}, and CL framing is used (safe).
        """
        decoder = self.assertServed(
            b"POST / HTTP/1.1\r\nHost: a\r\nX:X\rTransfer-Encoding: chunked\r\n"
            b"Content-Length: 3\r\n\r\nabc")
        self.assertEqual(decoder.headers.headers.get(b"x"), b"XTransfer-Encoding: chunked")
        self.assertEqual(b"".join(decoder.body), b"abc")
        self.assertFalse(decoder.headers.chunked)


class HeaderSyntaxTests(CodecTestMixin, SynchronousTestCase):
    """Header lines as Envoy parses them."""

    def test_spaceBeforeColon(self):
        """Envoy: C{X-Foo : bar} (also on TE) is 400."""
        for line in (b"X-Foo : bar", b"Transfer-Encoding : chunked"):
            self.assertRejected(b"GET / HTTP/1.1\r\nHost: a\r\n" + line + b"\r\n\r\n",
                                BAD_REQUEST, 400, Details.CODEC_ERROR)

    def test_badNameCharacters(self):
        """Envoy: a space, @, a brace, non-ASCII or nothing as a header name is 400."""
        for name in (b"X Foo", b"X@Foo", b"X{Foo}", b"X\xc3\xa9", b""):
            self.assertRejected(b"GET / HTTP/1.1\r\nHost: a\r\n" + name + b": v\r\n\r\n",
                                BAD_REQUEST, 400, Details.CODEC_ERROR)

    def test_nulInValue(self):
        """Envoy: NUL in a header value is 400 (CVE-2019-9900)."""
        self.assertRejected(b"GET / HTTP/1.1\r\nHost: a\r\nX-Foo: a\x00b\r\n\r\n",
                            BAD_REQUEST, 400, Details.INVALID_CHARACTERS)

    def test_controlCharactersInValue(self):
        """Envoy: 0x01, 0x1f and 0x7f in a value are 400 as well."""
        for c in (b"\x01", b"\x1f", b"\x7f"):
            self.assertRejected(b"GET / HTTP/1.1\r\nHost: a\r\nX-Foo: a" + c + b"b\r\n\r\n",
                                BAD_REQUEST, 400, Details.INVALID_CHARACTERS)

    def test_bareCrDropped(self):
        """Envoy forwards C{ab} for C{X-Foo: a\\rb}, at any read boundary."""
        data = b"GET / HTTP/1.1\r\nHost: a\r\nX-Foo: a\rb\r\n\r\n"
        for step in (None, 1, 2, 3, 7):
            decoder = self.assertServed(data, step)
            self.assertEqual(decoder.headers.headers.get(b"x-foo"), b"ab")

    def test_bareCrInNameOrRequestLine(self):
        """A CR in a name or in the request line is 400, as in Envoy."""
        for data in (b"GET / HTTP/1.1\r\nHost: a\r\nX-F\roo: ab\r\n\r\n",
                     b"GET /a\rb HTTP/1.1\r\nHost: a\r\n\r\n"):
            self.assertRejected(data, BAD_REQUEST, 400, Details.CODEC_ERROR)

    def test_obsFold(self):
        """Envoy unfolds C{X-Foo: a\\r\\n  b} to C{a  b}, at any read boundary."""
        data = b"GET / HTTP/1.1\r\nHost: a\r\nX-Foo: a\r\n  b\r\nX-Bar: c\r\n\r\n"
        for step in (None, 1, 2, 5):
            decoder = self.assertServed(data, step)
            self.assertEqual(decoder.headers.headers.get(b"x-foo"), b"a  b")
            self.assertEqual(decoder.headers.headers.get(b"x-bar"), b"c")

    def test_foldIntoHost(self):
        """
        Envoy: a line starting with a space after Host unfolds into the
        authority, which is then invalid: 400.
        """
        self.assertRejected(b"GET / HTTP/1.1\r\nHost: a\r\n X-Foo: a\r\n\r\n",
                            BAD_REQUEST, 400, Details.INVALID_AUTHORITY)

    def test_bareLfHead(self):
        """Envoy is lenient with bare LF line endings in the head (200)."""
        for step in (None, 1, 4):
            decoder = self.assertServed(b"GET / HTTP/1.1\nHost: a\nX-Foo: a\n\n", step)
            self.assertEqual(decoder.headers.headers.get(b"x-foo"), b"a")

    def test_bareLfAndBareCr(self):
        """Both rewrites at once, with a body after the head left alone."""
        decoder = self.assertServed(
            b"POST / HTTP/1.1\nHost: a\nX-Foo: a\rb\nContent-Length: 4\n\n\r\n\r\r", 1)
        self.assertEqual(decoder.headers.headers.get(b"x-foo"), b"ab")
        self.assertEqual(b"".join(decoder.body), b"\r\n\r\r")

    def test_rewrittenThenFastAgain(self):
        """After a rewritten head, the next request parses normally."""
        server = self.codec()
        server.dataReceived(b"GET /1 HTTP/1.1\nHost: a\n\n")
        server.dataReceived(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(self.transport.value(), OK + OK)
        self.assertIsNone(server._forwarder)

    def test_rewriteAfterPipelinedRequest(self):
        """
        A bare LF in the second of two requests in one read: the first is
        not decoded twice.
        """
        server = self.codec()
        server.dataReceived(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\nHost: a\n\n")
        self.assertEqual(self.transport.value(), OK + OK)
        self.assertEqual([d.headers.path for d in self.callbacks.decoders], [b"/1", b"/2"])

    def test_rewriteAcrossReads(self):
        """A head spread over reads is replayed from its first read."""
        server = self.codec()
        server.dataReceived(b"GET /1 HTTP/1.1\r\nHo")
        server.dataReceived(b"st: a\r\nX-A: 1\r\n")
        server.dataReceived(b"X-B: a\rb\r\n\r\n")
        self.assertEqual(self.transport.value(), OK)
        self.assertEqual(self.callbacks.decoders[0].headers.headers.get(b"x-b"), b"ab")

    def test_smallBodyThenRewrite(self):
        """A head that needs rewriting after a small body in the same read is served."""
        out = self.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi"
                        b"GET / HTTP/1.1\nHost: a\n\n")
        self.assertEqual(out, OK + OK)

    def test_largeBodyNotKeptForReplay(self):
        """
        Reads holding a large request body are not kept for a replay; a head
        that needs rewriting after such a body in the same read is refused
        (400), the safe side.
        """
        server = self.codec(autoRespond=False)
        server.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 20000\r\n\r\n")
        for _ in range(4):
            server.dataReceived(b"x" * 5000)
            self.assertIsNone(server._savedMore)
            self.assertEqual(server._savedFirst, b"")
        server.dataReceived(b"GET / HTTP/1.1\nHost: a\n\n")
        self.callbacks.decoders[0].respond()
        self.assertEqual(self.transport.value(), OK)
        server = self.codec(autoRespond=False)
        server.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 20000\r\n\r\n")
        server.dataReceived(b"x" * 20000 + b"GET / HTTP/1.1\nHost: a\n\n")
        self.callbacks.decoders[0].respond()
        self.assertEqual(self.transport.value(), OK + BAD_REQUEST)

    def test_versionWithoutReplay(self):
        """Without a replay, HTTP/1.2 still gets Envoy's 426."""
        out = self.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 20000\r\n\r\n" +
                        b"x" * 20000 + b"GET / HTTP/1.2\r\nHost: a\r\n\r\n")
        self.assertEqual(out, OK + UPGRADE_REQUIRED)

    def test_underscoreAllowed(self):
        """Envoy's default (ALLOW) forwards x_foo."""
        decoder = self.assertServed(b"GET / HTTP/1.1\r\nHost: a\r\nx_foo: 1\r\n\r\n")
        self.assertEqual(decoder.headers.headers.get(b"x_foo"), b"1")

    def test_underscoreRejected(self):
        """REJECT_REQUEST: 400 http1.unexpected_underscore, closed."""
        self.assertRejected(b"GET / HTTP/1.1\r\nHost: a\r\nx_foo: 1\r\n\r\n",
                            BAD_REQUEST, 400, Details.UNEXPECTED_UNDERSCORE,
                            headersWithUnderscoresAction="REJECT_REQUEST")

    def test_underscoreDropped(self):
        """DROP_HEADER: the header is dropped and the drop reported."""
        decoder = self.assertServed(
            b"GET / HTTP/1.1\r\nHost: a\r\nX_Foo: 1\r\nX-Foo: 2\r\n\r\n",
            headersWithUnderscoresAction="DROP_HEADER")
        self.assertEqual(list(decoder.headers.headers), [(b"x-foo", b"2")])
        self.assertEqual(self.callbacks.dropped, [b"x_foo"])

    def test_badUnderscoreAction(self):
        self.assertRaises(ValueError, ServerCodec, Callbacks(), StringTransport(),
                          headersWithUnderscoresAction="IGNORE")

    def test_connectionNominatedHeaderRemoved(self):
        """Envoy strips the header a Connection header nominates."""
        decoder = self.assertServed(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: x-secret\r\nX-Secret: 1\r\n\r\n")
        self.assertNotIn(b"x-secret", decoder.headers.headers)
        self.assertEqual(decoder.headers.headers.get(b"connection"), b"x-secret")

    def test_connectionTooManyTokens(self):
        """Envoy: a Connection header nominating ten or more headers is 400."""
        self.assertRejected(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: a,b,c,d,e,f,g,h,i,j,k,l,m\r\n\r\n",
            BAD_REQUEST, 400, Details.CONNECTION_HEADER_REJECTED)

    def test_connectionNominatesForwardedFor(self):
        """Nominating X-Forwarded-For (to strip it) is refused."""
        self.assertRejected(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, X-Forwarded-For\r\n\r\n",
            BAD_REQUEST, 400, Details.CONNECTION_HEADER_REJECTED)

    def test_invalidAuthority(self):
        """Envoy: a Host with a space or a quote is 400 http.invalid_authority."""
        for host in (b"a b", b'a"b'):
            self.assertRejected(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n",
                                BAD_REQUEST, 400, Details.INVALID_AUTHORITY)


class LimitTests(CodecTestMixin, SynchronousTestCase):
    """Head size and header count limits (431)."""

    def test_largeHeaderAllowed(self):
        """Envoy: one header of about 59 KiB is served."""
        self.assertServed(b"GET / HTTP/1.1\r\nHost: a\r\nX-Foo: " + b"a" * 59 * 1024 +
                          b"\r\n\r\n")

    def test_hugeHeader(self):
        """Envoy: one header of 100 KiB is 431."""
        self.assertRejected(b"GET / HTTP/1.1\r\nHost: a\r\nX-Foo: " + b"a" * 100 * 1024 +
                            b"\r\n\r\n", TOO_LARGE, 431, Details.HEADERS_TOO_LARGE)

    def test_hugeHeaderTrickled(self):
        """
        A header value that never ends is refused once it passes the limit,
        before the head completes.
        """
        server = self.codec()
        server.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\nX-Foo: ")
        for _ in range(20):
            server.dataReceived(b"a" * 4096)
        self.assertEqual(self.transport.value(), TOO_LARGE)
        self.assertTrue(self.transport.disconnecting)

    def test_hugeHeaderInOneRead(self):
        """
        Envoy: a header that passes the limit is 431 before its line ends,
        also when the first read holds the request line and most of it.
        """
        server = self.codec()
        server.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\nX-Foo: " + b"a" * 65536)
        self.assertEqual(self.transport.value(), TOO_LARGE)

    def test_pipelinedReadWithPartialHead(self):
        """
        A read of many pipelined requests that ends inside a head is not
        taken for one large head.
        """
        request = b"GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: x\r\n\r\n"
        data = request * (65536 // len(request) + 1)
        server = self.codec()
        server.dataReceived(data[:65536])
        server.dataReceived(data[65536:])
        self.assertEqual(self.callbacks.errors, [])
        self.assertEqual(self.transport.value(), OK * (65536 // len(request) + 1))

    def test_headerCount(self):
        """Envoy: 100 headers are served, 101 are 431."""
        def request(n):
            return (b"GET / HTTP/1.1\r\n" +
                    b"".join(b"X-H%d: v\r\n" % i for i in range(n - 1)) + b"Host: a\r\n\r\n")
        self.assertServed(request(100))
        self.assertRejected(request(101), TOO_LARGE, 431, Details.TOO_MANY_HEADERS)

    def test_repeatedInlineHeadersCountOnce(self):
        """
        Envoy joins the repeats of a header its map keeps inline (C{host:
        a,a,...}, user-agent, accept, x-forwarded-for...) into one entry:
        101 of them are served; 101 of any other name (cookie, x-foo) are
        431.
        """
        for name in (b"Host", b"User-Agent", b"Accept", b"X-Forwarded-For", b"Expect"):
            self.assertServed(b"GET / HTTP/1.1\r\nHost: a\r\n" +
                              (name + b": a\r\n") * 101 + b"\r\n")
        for name in (b"Cookie", b"X-Foo", b"Accept-Language"):
            self.assertRejected(b"GET / HTTP/1.1\r\nHost: a\r\n" +
                                (name + b": a\r\n") * 101 + b"\r\n",
                                TOO_LARGE, 431, Details.TOO_MANY_HEADERS)

    def test_repeatedHeadersThenTheirOwnChecks(self):
        """
        Joined, 101 Transfer-Encoding headers are one list (501) and 101
        Connection headers nominate too many (400), as in Envoy.
        """
        self.assertRejected(b"GET / HTTP/1.1\r\nHost: a\r\n" +
                            b"Transfer-Encoding: v\r\n" * 101 + b"\r\n",
                            NOT_IMPLEMENTED, 501, Details.INVALID_TRANSFER_ENCODING)
        self.assertRejected(b"GET / HTTP/1.1\r\nHost: a\r\n" +
                            b"Connection: v\r\n" * 101 + b"\r\n",
                            BAD_REQUEST, 400, Details.CONNECTION_HEADER_REJECTED)

    def test_longRequestLine(self):
        """Envoy: a 70 KiB request line is 431, not 414."""
        self.assertRejected(b"GET /" + b"a" * 70 * 1024 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
                            TOO_LARGE, 431, Details.HEADERS_TOO_LARGE)

    def test_boundary(self):
        """
        Envoy counts the head as sent, request line and line breaks
        included: 61,440 bytes are served, 61,441 are 431.
        """
        def request(size):
            data = b"GET / HTTP/1.1\r\nHost: a\r\nX-Foo: " + b"a" * (size - 36) + b"\r\n\r\n"
            self.assertEqual(len(data), size)
            return data
        self.assertServed(request(61440))
        self.assertServed(request(61440), step=4096)
        self.assertRejected(request(61441), TOO_LARGE, 431, Details.HEADERS_TOO_LARGE)

    def test_configuredLimits(self):
        """maxRequestHeadersKb and maxHeadersCount are honoured."""
        self.assertRejected(b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 1100 + b"\r\n\r\n",
                            TOO_LARGE, 431, Details.HEADERS_TOO_LARGE, maxRequestHeadersKb=1)
        self.assertRejected(b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\nY: 2\r\n\r\n",
                            TOO_LARGE, 431, Details.TOO_MANY_HEADERS, maxHeadersCount=2)

    def test_hugeTrailer(self):
        """Trailers are held to the same limit, even trickled."""
        server = self.codec()
        server.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"1\r\nx\r\n0\r\nX-T: ")
        for _ in range(20):
            server.dataReceived(b"a" * 4096)
        self.assertEqual(self.transport.value(), TOO_LARGE)


class RequestLineTests(CodecTestMixin, SynchronousTestCase):
    """Request line faults, answered as Envoy answers them."""

    def test_http10Refused(self):
        """Envoy (accept_http_10 false): HTTP/1.0 with or without Host is 426."""
        for data in (b"GET / HTTP/1.0\r\n\r\n", b"GET / HTTP/1.0\r\nHost: a\r\n\r\n",
                     b"GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n"):
            self.assertRejected(data, UPGRADE_REQUIRED, 426, Details.LOW_VERSION)

    def test_otherVersionsRefused(self):
        """Envoy: HTTP/0.9, 1.2 and 2.0 on an HTTP/1 listener are 426."""
        for data in (b"GET /\r\n\r\n", b"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
                     b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"):
            self.assertRejected(data, UPGRADE_REQUIRED, 426, Details.LOW_VERSION)

    def test_lowercase(self):
        """Envoy: lowercase http/1.1 or a lowercase method is 400."""
        for data in (b"GET / http/1.1\r\nHost: a\r\n\r\n", b"get / HTTP/1.1\r\nHost: a\r\n\r\n"):
            self.assertRejected(data, BAD_REQUEST, 400, Details.CODEC_ERROR)

    def test_unknownMethod(self):
        """Envoy: FOO (no allow_custom_methods) is 400."""
        self.assertRejected(b"FOO / HTTP/1.1\r\nHost: a\r\n\r\n",
                            BAD_REQUEST, 400, Details.CODEC_ERROR)

    def test_methodsEnvoyDoesNotKnow(self):
        """
        Envoy (balsa) accepts 34 methods; methods llhttp knows beyond them
        (M-SEARCH, QUERY, DESCRIBE, SETUP, ...) are 400, even with a body.
        """
        for method in (b"M-SEARCH", b"QUERY", b"DESCRIBE", b"SETUP", b"PRI"):
            self.assertRejected(method + b" / HTTP/1.1\r\nHost: a\r\n"
                                b"Content-Length: 0\r\n\r\n",
                                BAD_REQUEST, 400, Details.CODEC_ERROR)
        for method in (b"MKACTIVITY", b"UNSUBSCRIBE", b"PURGE", b"MOVE", b"SOURCE"):
            decoder = self.assertServed(method + b" / HTTP/1.1\r\nHost: a\r\n\r\n")
            self.assertEqual(decoder.headers.method, method)

    def test_bareLineFeedInsideRequestLine(self):
        """
        Envoy: a bare LF ends the request line wherever it is, so C{POST
        /c\\n HTTP/1.1} is an HTTP/0.9 request (426) and never
        C{POST /c HTTP/1.1}; with CRLF, the same. Nothing is forwarded.
        """
        for data in (b"POST /c\n HTTP/1.1\r\nHost: a\r\n\r\n",
                     b"POST /c\r\n HTTP/1.1\r\nHost: a\r\n\r\n",
                     b"POST /c\n\tHTTP/1.1\r\nHost: a\r\n\r\n"):
            self.assertRejected(data, UPGRADE_REQUIRED, 426, Details.LOW_VERSION)

    def test_bareLineFeedInsidePipelinedRequestLine(self):
        """The same in a request that follows another one in the same read."""
        server = self.codec()
        server.dataReceived(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n"
                            b"POST /c\n HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(self.transport.value(), OK + UPGRADE_REQUIRED)
        self.assertEqual([d.headers.path for d in self.callbacks.decoders], [b"/a"])

    def test_requestLineWhitespace(self):
        """
        Envoy (balsa) reads HTAB and CR in the request line as spaces and
        runs of them as one: tabs as separators, a space or tab before the
        line break, C{HTTP/1.1\\r\\r\\n}, all are served as C{GET /p HTTP/1.1}.
        """
        for line in (b"GET /p \tHTTP/1.1", b"GET\t/p HTTP/1.1", b"GET /p\tHTTP/1.1",
                     b"GET /p HTTP/1.1 ", b"GET /p HTTP/1.1\t", b"GET /p HTTP/1.1\r",
                     b"GET /p\rHTTP/1.1", b"GET  /p  HTTP/1.1"):
            decoder = self.assertServed(line + b"\r\nHost: a\r\n\r\n")
            self.assertEqual((decoder.headers.method, decoder.headers.path), (b"GET", b"/p"))

    def test_requestLineRefused(self):
        """
        Envoy: a request line that starts with whitespace, has four parts,
        or holds another control character is 400.
        """
        for line in (b" GET /p HTTP/1.1", b"GET /a\tb HTTP/1.1", b"GET /p\x0bHTTP/1.1",
                     b"GET /p\x0cHTTP/1.1", b"GET /p HTTP/1.1 x", b"GET /p\x00 HTTP/1.1"):
            self.assertRejected(line + b"\r\nHost: a\r\n\r\n",
                                BAD_REQUEST, 400, Details.CODEC_ERROR)

    def test_whitespaceLineContinuesTheHead(self):
        """
        Envoy: a line of only whitespace after a header is an obs-fold, not
        the end of the head: nothing is answered yet.
        """
        server = self.codec()
        server.dataReceived(b"GET /p HTTP/1.1 \r\nHost: a \r\n \r\n")
        self.assertEqual(self.transport.value(), b"")
        self.assertEqual(self.callbacks.decoders, [])
        server.dataReceived(b"\r\n")
        self.assertEqual(self.transport.value(), OK)

    def test_errorInHeadWaitsForItsEnd(self):
        """
        Envoy (balsa) judges a head once it is whole: a bad character in a
        head that has not ended is answered when the empty line comes, not
        before (until then the head timeouts run).
        """
        for head in (b"GET / HTTP/1.1\r\nHost: a\x01\r\n", b"GET / HTTP/1.1\r\nHo st: a\r\n",
                     b"GET\x0b/ HTTP/1.1\r\nHost: a\r\n",
                     b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n"):
            server = self.codec()
            server.dataReceived(head)
            server.dataReceived(b"X-More: 1\r\n\r")
            self.assertEqual((self.transport.value(), self.callbacks.errors), (b"", []))
            server.dataReceived(b"\n")
            self.assertEqual(self.transport.value(), BAD_REQUEST)
            self.assertEqual([status for status, _ in self.callbacks.errors], [400])

    def test_erroredHeadStillLimited(self):
        """A head waited for after an error still may not pass the limit (431)."""
        server = self.codec()
        server.dataReceived(b"GET / HTTP/1.1\r\nHost: a\x01\r\n")
        for _ in range(16):
            server.dataReceived(b"X: " + b"a" * 4093 + b"\r\n")
        self.assertEqual(self.transport.value(), TOO_LARGE)

    def test_unknownMethodAtOnce(self):
        """
        Envoy refuses a method it does not know once the request line
        ends, and bytes that cannot be one (a TLS hello) as soon as it
        reads them: 400 before the head ends.
        """
        for data in (b"FOO / HTTP/1.1\r\nHost: a\r\n",
                     b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03"):
            server = self.codec()
            server.dataReceived(data)
            self.assertEqual(self.transport.value(), BAD_REQUEST)

    def test_twoPartLineEndingInHttp11(self):
        """
        Envoy: a request line of two parts is a whole request with no
        headers (HTTP/0.9), and Envoy takes it for HTTP/1.1 when the line
        ends in C{HTTP/1.1}: C{GET /x?HTTP/1.1} has no Host (400, empty
        body); an absolute target is served; the next line is then a
        request of its own (400).
        """
        self.assertRejected(b"GET /x?HTTP/1.1\r\nHost: a\r\n\r\n", EMPTY_400, 400,
                            Details.MISSING_HOST)
        server = self.codec()
        server.dataReceived(b"GET http://b.test/x?HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(self.transport.value(), OK + BAD_REQUEST)
        [decoder] = self.callbacks.decoders
        self.assertEqual((decoder.headers.path, decoder.headers.authority),
                         (b"/x?HTTP/1.1", b"b.test"))

    def test_invalidTargetAtOnce(self):
        """
        Envoy checks the target's characters when the request line ends
        (400 before the head is whole): DEL or a byte past ASCII in a path,
        a bad character in a scheme, C{@@} in a host.
        """
        for line in (b"GET /p\x7f HTTP/1.1", b"GET /p?q=1HTTP\x7f/1.1", b"GET /\xc3\xa9 HTTP/1.1",
                     b"GET htt[p://b.test/p HTTP/1.1", b"GET http://a@@b/p HTTP/1.1"):
            server = self.codec()
            server.dataReceived(line + b"\r\nHost: a\r\n")
            self.assertEqual(self.transport.value(), BAD_REQUEST)

    def test_badHeaderNameBeforeTransferEncoding(self):
        """
        Envoy refuses a bad header name anywhere in the head (400) before
        it judges Transfer-Encoding (501).
        """
        self.assertRejected(b"POST / HTTP/1.1\r\nTransfer-Encoding:\r\nHost\xff: a\r\n\r\n",
                            BAD_REQUEST, 400, Details.CODEC_ERROR)

    def test_errorInTrailersWaitsForTheirEnd(self):
        """
        Envoy judges a chunked request's trailers once their empty line has
        come: a bad trailer line is answered then (400), not before.
        """
        server = self.codec(autoRespond=False)
        server.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                            b"\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n5;x=\xff\r\n")
        self.assertEqual(self.transport.value(), b"")
        self.assertEqual(len(self.callbacks.decoders), 1)
        server.dataReceived(b"\r\n")
        self.assertEqual(self.transport.value(), BAD_REQUEST)

    def test_repeatedExpectIsOneValue(self):
        """
        Envoy joins repeated Expect headers into one value: two
        C{100-continue} are C{100-continue,100-continue}, which asks for no
        100 (Envoy answers none).
        """
        decoder = self.assertServed(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                                    b"X-A: 1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi")
        self.assertEqual(decoder.headers.headers.getAll(b"expect"),
                         [b"100-continue,100-continue"])

    def test_transferEncodingTrailingWhitespace(self):
        """Envoy trims a value's trailing whitespace: C{chunked\\t} is chunked."""
        for line in (b"Transfer-Encoding: chunked\t", b"transfer-encoding: chunked \r\t"):
            decoder = self.assertServed(b"POST / HTTP/1.1\r\nHost: a\r\n" + line +
                                        b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
            self.assertEqual(b"".join(decoder.body), b"abc")

    def test_http2VersionWithProxyConnection(self):
        """
        Envoy: HTTP/2.0 on an HTTP/1 listener is 426 whatever the headers
        say (llhttp's keep-alive answer reads Proxy-Connection too).
        """
        self.assertRejected(b"GET / HTTP/2.0\r\nHost: a\r\nProxy-Connection: keep-alive\r\n\r\n",
                            UPGRADE_REQUIRED, 426, Details.LOW_VERSION)

    def test_versionNotHttp(self):
        """Envoy: a version not of the form HTTP/d.d (RTSP/1.0, which llhttp takes) is 400."""
        for version in (b"RTSP/1.0", b"HTTP/01.1", b"ICE/1.0"):
            self.assertRejected(b"GET / " + version + b"\r\nHost: a\r\n\r\n",
                                BAD_REQUEST, 400, Details.CODEC_ERROR)

    def test_twoPartLineEndingInHttp11PartialHead(self):
        """
        For Envoy such a line is a whole request already: answered (400, no
        Host) without waiting for the rest of the head.
        """
        server = self.codec()
        server.dataReceived(b"HEAD /x/hHTTP/1.1\r\nHost: a\r\nConnection: keep-a")
        self.assertEqual(self.transport.value(), EMPTY_400)

    def test_printableMethodWaitsForItsLine(self):
        """Envoy judges a method of printable bytes once the line ends."""
        server = self.codec()
        server.dataReceived(b"P_ST /x")
        self.assertEqual(self.transport.value(), b"")
        server.dataReceived(b" HTTP/1.1\r\n")
        self.assertEqual(self.transport.value(), BAD_REQUEST)

    def test_contentLengthWithAnyTransferEncoding(self):
        """Envoy: Content-Length with a Transfer-Encoding llhttp refuses is 400, not 501."""
        for te in (b"chunked, gzip", b""):
            self.assertRejected(b"POST / HTTP/1.1\r\nTransfer-Encoding: " + te +
                                b"\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
                                BAD_REQUEST, 400, Details.CONTENT_LENGTH_AND_CHUNKED)
        self.assertRejected(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n"
                            b"Content-Length: 2\t\r\n\r\nhi",
                            BAD_REQUEST, 400, Details.CONTENT_LENGTH_AND_CHUNKED)

    def test_absoluteFormAuthority(self):
        """
        Envoy parses an absolute-form target with its URL parser, which
        refuses a host with C{%} or other characters outside a reg-name (400,
        http1.invalid_url), while the same in C{Host} is taken.
        """
        for target in (b"http://b%.test/p", b"http://b%41/p", b"http://b.tes;/p",
                       b"http://b.!test/p", b"http://b_test/p"):
            self.assertRejected(b"MOVE " + target + b" HTTP/1.1\r\nHost: a\r\n\r\n",
                                BAD_REQUEST, 400, Details.INVALID_URL)

    def test_connectTargetIsAuthorityForm(self):
        """Envoy: C{CONNECT /p} (not host:port) is 400 http1.invalid_url."""
        self.assertRejected(b"CONNECT /p HTTP/1.1\r\nHost: a\r\n\r\n",
                            BAD_REQUEST, 400, Details.INVALID_URL)

    def test_fragment(self):
        """
        Envoy: a fragment in the target (/a#frag) is 400 with an empty body
        (path_normalization_failed), also in an absolute URI.
        """
        for target in (b"/a#frag", b"http://b.test/p#x"):
            self.assertRejected(b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n\r\n",
                                EMPTY_400, 400, Details.PATH_NORMALIZATION_FAILED)

    def test_missingHost(self):
        """
        Envoy: HTTP/1.1 without Host is 400 with an empty body; it is checked
        before the fragment.
        """
        for target in (b"/", b"/a#frag"):
            self.assertRejected(b"GET " + target + b" HTTP/1.1\r\n\r\n",
                                EMPTY_400, 400, Details.MISSING_HOST)

    def test_badCharactersInTarget(self):
        """Envoy: NUL, a space, or non-ASCII in the path is 400."""
        for target in (b"/a\x00b", b"/a b", b"/\xc3\xa9"):
            self.assertRejected(b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n\r\n",
                                BAD_REQUEST, 400, Details.CODEC_ERROR)

    def test_tlsBytes(self):
        """Envoy: a TLS ClientHello (or other binary) on the port is 400."""
        self.assertRejected(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(40)),
                            BAD_REQUEST, 400, Details.CODEC_ERROR)

    def test_http2Preface(self):
        """The HTTP/2 preface is not HTTP/1: 400 (AUTO codec selection is not ours)."""
        self.assertRejected(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
                            BAD_REQUEST, 400, Details.CODEC_ERROR)

    def test_invalidUrl(self):
        """Envoy: C{GET *} and a port past 65535 are 400 http1.invalid_url."""
        for target in (b"*", b"http://foobar.com:1000000/", b"http:///p"):
            self.assertRejected(b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n\r\n",
                                BAD_REQUEST, 400, Details.INVALID_URL)

    def test_invalidScheme(self):
        """Envoy: C{GET ftp://b.test/p} is 400 http1.invalid_scheme."""
        self.assertRejected(b"GET ftp://b.test/p HTTP/1.1\r\nHost: a\r\n\r\n",
                            BAD_REQUEST, 400, Details.INVALID_SCHEME)


class Http10Tests(CodecTestMixin, SynchronousTestCase):
    """With acceptHttp10, HTTP/1.0 is served as Envoy serves it."""

    def test_served(self):
        """
        Envoy: HTTP/1.0 is answered with an HTTP/1.0 status line and closed
        after the response; a missing Host gets the default host.
        """
        out = self.feed(b"GET / HTTP/1.0\r\n\r\n", acceptHttp10=True,
                        defaultHostForHttp10="dflt.test")
        self.assertEqual(out, b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n"
                              b"connection: close\r\n\r\nok")
        self.assertTrue(self.transport.disconnecting)
        h = self.callbacks.decoders[0].headers
        self.assertEqual((h.version, h.authority, h.keepAlive), ("HTTP/1.0", b"dflt.test", False))

    def test_noDefaultHost(self):
        """Without a default host, an HTTP/1.0 request has no authority."""
        self.feed(b"GET / HTTP/1.0\r\n\r\n", acceptHttp10=True)
        self.assertIsNone(self.callbacks.decoders[0].headers.authority)

    def test_keepAlive(self):
        """Envoy: an HTTP/1.0 keep-alive request gets connection: keep-alive."""
        out = self.feed(b"GET /1 HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n"
                        b"GET /2 HTTP/1.0\r\nHost: h\r\n\r\nGET /3 HTTP/1.0\r\n\r\n",
                        acceptHttp10=True)
        self.assertEqual(out, b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive"
                              b"\r\n\r\nokHTTP/1.0 200 OK\r\ncontent-length: 2\r\n"
                              b"connection: close\r\n\r\nok")
        self.assertEqual(len(self.callbacks.decoders), 2)
        self.assertTrue(self.transport.disconnecting)

    def test_keepAliveTokens(self):
        """
        Envoy's shouldCloseConnection: HTTP/1.0 stays open with a keep-alive
        token (even beside close); HTTP/1.2, served as 1.0, closes without
        one.
        """
        out = self.feed(b"GET / HTTP/1.0\r\nConnection: Keep-Alive, close\r\n\r\n",
                        acceptHttp10=True)
        self.assertTrue(out.endswith(b"connection: keep-alive\r\n\r\nok"), out)
        self.assertFalse(self.transport.disconnecting)
        out = self.feed(b"GET / HTTP/1.2\r\nHost: a\r\n\r\nGET / HTTP/1.2\r\nHost: a\r\n\r\n",
                        acceptHttp10=True)
        self.assertTrue(out.endswith(b"connection: close\r\n\r\nok"), out)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(len(self.callbacks.decoders), 1)

    def test_http11CloseToken(self):
        """HTTP/1.1 closes on a close token among others."""
        out = self.feed(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: TE, Close\r\n\r\n")
        self.assertTrue(out.endswith(b"connection: close\r\n\r\nok"), out)
        self.assertTrue(self.transport.disconnecting)

    def test_otherVersionsServedAs10(self):
        """Envoy serves HTTP/0.9, 1.2 and 2.0 as HTTP/1.0 when 1.0 is accepted."""
        for data in (b"GET /\r\n\r\n", b"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
                     b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"):
            out = self.feed(data, acceptHttp10=True)
            self.assertTrue(out.startswith(b"HTTP/1.0 200 OK\r\n"), out)

    def test_bodyDelimitedByClose(self):
        """An HTTP/1.0 response without a length is not chunked: it ends with the connection."""
        server = self.codec(autoRespond=False, acceptHttp10=True)
        server.dataReceived(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        encoder = self.callbacks.decoders[0].encoder
        encoder.encodeHeaders(ResponseHeaders(200), False)
        encoder.encodeData(b"abc", False)
        encoder.encodeData(b"", True)
        self.assertEqual(self.transport.value(),
                         b"HTTP/1.0 200 OK\r\nconnection: close\r\n\r\nabc")
        self.assertTrue(self.transport.disconnecting)

    def test_fragmentReplyIsHttp10(self):
        """The connection manager's empty 400 to an HTTP/1.0 request says HTTP/1.0."""
        out = self.feed(b"GET /a#b HTTP/1.0\r\n\r\n", acceptHttp10=True)
        self.assertTrue(out.startswith(b"HTTP/1.0 400 Bad Request\r\n"), out)


class ChunkedRequestTests(CodecTestMixin, SynchronousTestCase):
    """Chunked request bodies reach decoders de-chunked."""

    def test_dechunked(self):
        """Chunk extensions are fine (Envoy: 200); trailers are dropped by default."""
        decoder = self.assertServed(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n")
        self.assertEqual(b"".join(decoder.body), b"hello world")
        self.assertIsNone(decoder.trailers)
        self.assertEqual(self.callbacks.events[-1], ("data", b"", True))
        self.assertNotIn(b"x-t", decoder.headers.headers)

    def test_trailersEnabled(self):
        """With enableTrailers, trailers end the stream."""
        decoder = self.assertServed(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\nX-T: 1\r\nHost: t\r\n\r\n", step=3, enableTrailers=True)
        self.assertEqual(list(decoder.trailers), [(b"x-t", b"1"), (b"host", b"t")])
        self.assertEqual(self.callbacks.events[-1], ("trailers",))
        self.assertEqual(decoder.headers.authority, b"a")

    def test_badChunkSize(self):
        """Envoy: chunk size zz, or one that overflows, is 400."""
        for size in (b"zz", b"fffffffffffffffff1"):
            out = self.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" +
                            size + b"\r\nhello\r\n0\r\n\r\n", autoRespond=False)
            self.assertEqual(out, BAD_REQUEST)
            self.assertTrue(self.transport.disconnecting)
            self.assertEqual(self.callbacks.errors, [(400, Details.CODEC_ERROR)])

    def test_bareLfChunkLines(self):
        """Envoy: chunk lines ending in a bare LF are 400."""
        out = self.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"5\nhello\n0\n\n", autoRespond=False)
        self.assertEqual(out, BAD_REQUEST)

    def test_chunkLongerThanSize(self):
        """
        Chunk data longer than its size is 400. (Envoy forwards the first
        bytes and skips to the next CRLF; refusing is the safe side.)
        """
        out = self.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"3\r\nhello\r\n0\r\n\r\n", autoRespond=False)
        self.assertEqual(out, BAD_REQUEST)

    def test_errorAfterResponseStarted(self):
        """A body error after the response started just closes the connection."""
        server = self.codec(autoRespond=False)
        server.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        encoder = self.callbacks.decoders[0].encoder
        encoder.encodeHeaders(ResponseHeaders(200), False)
        server.dataReceived(b"zz\r\n")
        self.assertEqual(self.transport.value(),
                         b"HTTP/1.1 200 OK\r\nconnection: close\r\n"
                         b"transfer-encoding: chunked\r\n\r\n")
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.callbacks.errors, [(400, Details.CODEC_ERROR)])


class PipeliningTests(CodecTestMixin, SynchronousTestCase):
    """Pipelined requests are handled one at a time, in order."""

    def test_threeInOneRead(self):
        """Envoy: three pipelined GETs in one write get three 200s, in order."""
        out = self.feed(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n" * 3)
        self.assertEqual(out, OK * 3)
        self.assertFalse(self.transport.disconnecting)

    def test_oneAtATime(self):
        """
        Request 2 reaches newStream only after response 1 is complete;
        reading is paused meanwhile and resumed after.
        """
        server = self.codec(autoRespond=False)
        server.dataReceived(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
                            b"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi"
                            b"GET /3 HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(len(self.callbacks.decoders), 1)
        self.assertEqual(self.transport.producerState, "paused")
        self.callbacks.decoders[0].respond()
        self.assertEqual(len(self.callbacks.decoders), 2)
        self.assertEqual(self.callbacks.events[1:], [("headers", b"/2"), ("data", b"hi", True)])
        self.assertEqual(self.transport.producerState, "paused")
        self.callbacks.decoders[1].respond()
        self.callbacks.decoders[2].respond()
        self.assertEqual(self.transport.value(), OK * 3)
        self.assertEqual(self.transport.producerState, "producing")

    def test_writesBatched(self):
        """Responses given while the codec handles a read are written at once."""
        writes = []
        server = self.codec()
        self.transport.write = writes.append
        server.dataReceived(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n" * 5)
        self.assertEqual(writes, [OK * 5])

    def test_postThenGet(self):
        """Envoy: a POST with a body and a pipelined GET get two 200s."""
        out = self.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
                        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(out, OK * 2)

    def test_goodThenBad(self):
        """
        Envoy: a valid GET and a pipelined bad request get 200, then 400,
        then the connection closes; only the first was decoded.
        """
        out = self.feed(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
                        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                        b"Content-Length: 6\r\n\r\nhello")
        self.assertEqual(out, OK + BAD_REQUEST)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(len(self.callbacks.decoders), 1)

    def test_badWaitsForOutstandingResponse(self):
        """The 400 for a pipelined bad request follows the response before it."""
        server = self.codec(autoRespond=False)
        server.dataReceived(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nFOO / HTTP/1.1\r\n\r\n")
        self.assertEqual(self.transport.value(), b"")
        self.assertEqual(self.callbacks.errors, [])
        self.callbacks.decoders[0].respond()
        self.assertEqual(self.transport.value(), OK + BAD_REQUEST)
        self.assertEqual(self.callbacks.errors, [(400, Details.CODEC_ERROR)])

    def test_queuedRequestWithBadBody(self):
        """
        A queued request whose body turns out bad never reaches newStream:
        the 400 takes its place after the response before it.
        """
        server = self.codec(autoRespond=False)
        server.dataReceived(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
                            b"POST /2 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"2\r\nhi\r\nzz\r\n")
        self.callbacks.decoders[0].respond()
        self.assertEqual(self.transport.value(), OK + BAD_REQUEST)
        self.assertEqual(len(self.callbacks.decoders), 1)
        self.assertTrue(self.transport.disconnecting)

    def test_connectionClose(self):
        """
        Envoy: Connection: close gets its response, with connection: close,
        then the connection closes; what follows is ignored.
        """
        out = self.feed(b"GET /1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
                        b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\ngarbage")
        self.assertEqual(out, b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n"
                              b"connection: close\r\n\r\nok")
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(len(self.callbacks.decoders), 1)
        self.assertFalse(self.callbacks.decoders[0].headers.keepAlive)

    def test_connectionCloseLater(self):
        """Bytes after a Connection: close request, read later, are ignored."""
        server = self.codec(autoRespond=False)
        server.dataReceived(b"GET /1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        server.dataReceived(b"GET /2 HTTP/1.1\r\n")
        self.assertEqual(self.callbacks.errors, [])
        self.callbacks.decoders[0].respond()
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(len(self.callbacks.decoders), 1)


class ResponseEncodingTests(CodecTestMixin, SynchronousTestCase):
    """Response framing follows Envoy's encoder."""

    def stream(self, request=b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", **kwargs):
        server = self.codec(autoRespond=False, **kwargs)
        server.dataReceived(request)
        return self.callbacks.decoders[-1].encoder

    def test_chunkedWithoutLength(self):
        """Without content-length an HTTP/1.1 body is chunked."""
        encoder = self.stream()
        encoder.encodeHeaders(ResponseHeaders(200, HeaderMap([(b"x-a", b"1")])), False)
        encoder.encodeData(b"hello", False)
        encoder.encodeData(b"", False)
        encoder.encodeData(b"world!", True)
        self.assertEqual(self.transport.value(),
                         b"HTTP/1.1 200 OK\r\nx-a: 1\r\ntransfer-encoding: chunked\r\n\r\n"
                         b"5\r\nhello\r\n6\r\nworld!\r\n0\r\n\r\n")
        self.assertTrue(encoder.responseComplete)
        self.assertFalse(self.transport.disconnecting)

    def test_largeChunkNotCopied(self):
        """
        A chunk of 64 KiB or more goes to the transport between its
        framing, as the same object, in one C{writeSequence}; the bytes on
        the wire and the wire byte count are those of the joined form.
        """
        encoder = self.stream()
        sequences = recordSequences(self.transport)
        encoder.encodeHeaders(ResponseHeaders(200), False)
        self.transport.clear()
        headBytes = encoder.wireBytesSent
        first, last = b"a" * GATHER_MIN_BYTES, b"b" * (GATHER_MIN_BYTES + 1)
        encoder.encodeData(first, False)
        encoder.encodeData(last, True)
        self.assertEqual(self.transport.value(),
                         b"10000\r\n" + first + b"\r\n10001\r\n" + last + b"\r\n0\r\n\r\n")
        self.assertEqual(len(sequences), 2)
        self.assertIs(sequences[0][1], first)
        self.assertIs(sequences[1][1], last)
        self.assertTrue(encoder.responseComplete)
        self.assertEqual(encoder.wireBytesSent - headBytes, len(self.transport.value()))

    def test_chunkedEmptyEnd(self):
        encoder = self.stream()
        encoder.encodeHeaders(ResponseHeaders(200), False)
        encoder.encodeData(b"ab", False)
        encoder.encodeData(b"", True)
        self.assertTrue(self.transport.value().endswith(b"2\r\nab\r\n0\r\n\r\n"))

    def test_headersOnly(self):
        """A headers-only response gets content-length: 0 (Envoy)."""
        encoder = self.stream()
        encoder.encodeHeaders(ResponseHeaders(404, HeaderMap([(b"server", b"envoy")])), True)
        self.assertEqual(self.transport.value(),
                         b"HTTP/1.1 404 Not Found\r\nserver: envoy\r\ncontent-length: 0\r\n\r\n")

    def test_reasonIsEnvoys(self):
        """The status line carries Envoy's phrase, not the upstream's."""
        encoder = self.stream()
        encoder.encodeHeaders(ResponseHeaders(200, reason=b"Fine"), True)
        self.assertTrue(self.transport.value().startswith(b"HTTP/1.1 200 OK\r\n"))

    def test_head(self):
        """
        A response to HEAD keeps its content-length and sends no body;
        without one, it says chunked but sends no chunks.
        """
        request = b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n"
        encoder = self.stream(request)
        encoder.encodeHeaders(ResponseHeaders(200, HeaderMap([(b"content-length", b"2")])), False)
        encoder.encodeData(b"ok", True)
        self.assertEqual(self.transport.value(), b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        encoder = self.stream(request)
        encoder.encodeHeaders(ResponseHeaders(200), False)
        encoder.encodeData(b"body", True)
        self.assertEqual(self.transport.value(),
                         b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        encoder = self.stream(request)
        encoder.encodeHeaders(ResponseHeaders(200), True)
        self.assertEqual(self.transport.value(), b"HTTP/1.1 200 OK\r\n\r\n")
        self.assertFalse(self.transport.disconnecting)

    def test_noBodyStatuses(self):
        """204 and 304 get no framing headers and no body."""
        for status, phrase in ((204, b"No Content"), (304, b"Not Modified")):
            encoder = self.stream()
            encoder.encodeHeaders(ResponseHeaders(status), False)
            encoder.encodeData(b"x", True)
            self.assertEqual(self.transport.value(), b"HTTP/1.1 %d %s\r\n\r\n" % (status, phrase))
            encoder = self.stream()
            encoder.encodeHeaders(ResponseHeaders(status), True)
            self.assertEqual(self.transport.value(), b"HTTP/1.1 %d %s\r\n\r\n" % (status, phrase))

    def test_transferEncodingIgnored(self):
        """The codec frames the body; a transfer-encoding entry is not written."""
        encoder = self.stream()
        encoder.encodeHeaders(ResponseHeaders(200, HeaderMap(
            [(b"transfer-encoding", b"gzip, chunked")])), False)
        encoder.encodeData(b"a", True)
        self.assertEqual(self.transport.value(),
                         b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                         b"1\r\na\r\n0\r\n\r\n")

    def test_responseConnectionClose(self):
        """A connection: close response header closes after the response."""
        encoder = self.stream()
        encoder.encodeHeaders(ResponseHeaders(200, HeaderMap([(b"connection", b"Close")])), True)
        self.assertEqual(self.transport.value(),
                         b"HTTP/1.1 200 OK\r\nconnection: Close\r\ncontent-length: 0\r\n\r\n")
        self.assertTrue(self.transport.disconnecting)

    def test_respondBeforeRequestComplete(self):
        """
        Envoy: a response that starts before the request body is read in
        full carries connection: close and the connection closes after it.
        """
        encoder = self.stream(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nab")
        encoder.encodeHeaders(okHeaders(), False)
        self.server.dataReceived(b"cd")
        encoder.encodeData(b"ok", True)
        self.assertEqual(self.transport.value(), b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n"
                                                 b"connection: close\r\n\r\nok")
        self.assertTrue(self.transport.disconnecting)

    def test_informational(self):
        """A 1xx other than 101 is written and does not start the response."""
        encoder = self.stream()
        encoder.encodeHeaders(ResponseHeaders(103, HeaderMap([(b"link", b"</a>")])), False)
        self.assertFalse(encoder.responseStarted)
        encoder.encodeHeaders(okHeaders(), False)
        encoder.encodeData(b"ok", True)
        self.assertEqual(self.transport.value(),
                         b"HTTP/1.1 103 Unknown\r\nlink: </a>\r\n\r\n" + OK)

    def test_trailers(self):
        """Response trailers are written only with enableTrailers."""
        encoder = self.stream()
        encoder.encodeHeaders(ResponseHeaders(200), False)
        encoder.encodeData(b"a", False)
        encoder.encodeTrailers(HeaderMap([(b"x-t", b"1")]))
        self.assertTrue(self.transport.value().endswith(b"1\r\na\r\n0\r\n\r\n"))
        encoder = self.stream(enableTrailers=True)
        encoder.encodeHeaders(ResponseHeaders(200), False)
        encoder.encodeData(b"a", False)
        encoder.encodeTrailers(HeaderMap([(b"x-t", b"1")]))
        self.assertTrue(self.transport.value().endswith(b"1\r\na\r\n0\r\nx-t: 1\r\n\r\n"))
        self.assertTrue(encoder.responseComplete)

    def test_trailersOnLengthResponse(self):
        encoder = self.stream(enableTrailers=True)
        encoder.encodeHeaders(okHeaders(), False)
        encoder.encodeData(b"ok", False)
        encoder.encodeTrailers(HeaderMap([(b"x-t", b"1")]))
        self.assertEqual(self.transport.value(), OK)

    def test_resetStream(self):
        """HTTP/1 resets a stream by closing the connection."""
        encoder = self.stream()
        encoder.encodeHeaders(ResponseHeaders(200), False)
        encoder.resetStream()
        self.assertTrue(self.transport.disconnecting)
        encoder.encodeData(b"more", True)
        self.assertEqual(self.transport.value(),
                         b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")

    def test_dataBeforeHeaders(self):
        """Using the encoder out of order is a programming error."""
        encoder = self.stream()
        self.assertRaises(ValueError, encoder.encodeData, b"x", True)

    def test_secondHeadersIgnored(self):
        encoder = self.stream()
        encoder.encodeHeaders(okHeaders(), False)
        encoder.encodeHeaders(ResponseHeaders(500), True)
        encoder.encodeData(b"ok", True)
        self.assertEqual(self.transport.value(), OK)

    def test_asynchronousWritesGoStraightOut(self):
        """Outside dataReceived each encoder call is written at once."""
        encoder = self.stream()
        encoder.encodeHeaders(okHeaders(), False)
        self.assertEqual(self.transport.value(), b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")

    def test_connectionLost(self):
        """After connectionLost nothing is written or dispatched."""
        encoder = self.stream(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
                              b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
        self.server.connectionLost(None)
        encoder.encodeHeaders(okHeaders(), True)
        self.server.dataReceived(b"GET /3 HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(self.transport.value(), b"")
        self.assertEqual(len(self.callbacks.decoders), 1)

    def test_readDisableCounts(self):
        """readDisable is counted, as in Envoy."""
        server = self.codec()
        server.readDisable(True)
        server.readDisable(True)
        server.readDisable(False)
        self.assertEqual(self.transport.producerState, "paused")
        server.readDisable(False)
        self.assertEqual(self.transport.producerState, "producing")
        server.readDisable(False)
        self.assertEqual(self.transport.producerState, "producing")

    def test_callbackExceptionsPropagate(self):
        """A decoder's own exception is not turned into a reply."""
        server = self.codec()

        def broken(encoder):
            raise ZeroDivisionError()
        self.callbacks.newStream = broken
        server._newStream = broken
        self.assertRaises(ZeroDivisionError, server.dataReceived,
                          b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(self.transport.value(), b"")


class UpgradeTests(CodecTestMixin, SynchronousTestCase):
    """Upgrades and CONNECT are exposed and left to the callbacks."""

    WEBSOCKET = (b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\n\r\n")

    def test_websocketAccepted(self):
        """
        An upgrade request is not ended by its headers; bytes after the head
        are the stream's data; after a 101, switchToRaw hands every further
        byte over, and the encoder writes raw.
        """
        server = self.codec(autoRespond=False)
        server.dataReceived(self.WEBSOCKET + b"early")
        decoder = self.callbacks.decoders[0]
        self.assertEqual(decoder.headers.upgrade, b"websocket")
        self.assertFalse(decoder.endStream)
        self.assertEqual(decoder.headers.headers.get(b"upgrade"), b"websocket")
        self.assertEqual(decoder.body, [b"early"])
        decoder.encoder.encodeHeaders(ResponseHeaders(101, HeaderMap(
            [(b"upgrade", b"websocket"), (b"connection", b"Upgrade")])), False)
        raw = []
        server.switchToRaw(raw.append)
        server.dataReceived(b"\x81\x05hello")
        decoder.encoder.encodeData(b"\x81\x02hi", False)
        self.assertEqual(raw, [b"\x81\x05hello"])
        self.assertEqual(self.transport.value(),
                         b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n"
                         b"connection: Upgrade\r\n\r\n\x81\x02hi")
        self.assertFalse(self.transport.disconnecting)
        decoder.encoder.encodeData(b"", True)
        self.assertTrue(self.transport.disconnecting)

    def test_websocketRefused(self):
        """Envoy (upgrades not enabled): 403 with connection: close, closed."""
        server = self.codec(autoRespond=False)
        server.dataReceived(self.WEBSOCKET)
        self.callbacks.decoders[0].encoder.encodeHeaders(ResponseHeaders(403), True)
        self.assertEqual(self.transport.value(), b"HTTP/1.1 403 Forbidden\r\n"
                                                 b"connection: close\r\ncontent-length: 0\r\n\r\n")
        self.assertTrue(self.transport.disconnecting)

    def test_upgradeQueuedThenRaw(self):
        """An upgrade behind another request gets its early bytes once raw."""
        server = self.codec(autoRespond=False)
        server.dataReceived(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n" + self.WEBSOCKET + b"early")
        self.assertEqual(len(self.callbacks.decoders), 1)
        self.callbacks.decoders[0].respond()
        ws = self.callbacks.decoders[1]
        self.assertEqual(ws.body, [b"early"])

    def test_h2cIgnored(self):
        """Envoy strips an h2c upgrade and serves HTTP/1.1."""
        decoder = self.assertServed(
            b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n"
            b"Connection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
        self.assertIsNone(decoder.headers.upgrade)
        self.assertEqual(list(decoder.headers.headers), [])

    def test_h2cWithBody(self):
        """An h2c upgrade with a body (curl --http2 -d) is served, and what follows too."""
        for body, framing in ((b"xyz", b"Content-Length: 3\r\n"),
                              (b"3\r\nxyz\r\n0\r\n\r\n", b"Transfer-Encoding: chunked\r\n")):
            for step in (None, 1):
                out = self.feed(b"POST / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n"
                                b"Connection: keep-alive, Upgrade\r\n" + framing + b"\r\n" + body +
                                b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n", step)
                self.assertEqual(out, OK * 2)
                first = self.callbacks.decoders[0]
                self.assertEqual(b"".join(first.body), b"xyz")
                self.assertEqual(first.headers.headers.get(b"connection"), b"keep-alive")

    def test_connect(self):
        """CONNECT: the target is the authority, and a 200 turns the connection raw."""
        server = self.codec(autoRespond=False)
        server.dataReceived(b"CONNECT b.test:443 HTTP/1.1\r\nHost: b.test:443\r\n\r\nhello")
        decoder = self.callbacks.decoders[0]
        h = decoder.headers
        self.assertEqual((h.method, h.path, h.authority, h.upgrade),
                         (b"CONNECT", None, b"b.test:443", b"connect"))
        self.assertEqual(decoder.body, [b"hello"])
        decoder.encoder.encodeHeaders(ResponseHeaders(200), False)
        decoder.encoder.encodeData(b"tunnel", False)
        self.assertEqual(self.transport.value(), b"HTTP/1.1 200 OK\r\n\r\ntunnel")

    def test_connectRefused(self):
        """Envoy: CONNECT without a route is 404 and closed."""
        server = self.codec(autoRespond=False)
        server.dataReceived(b"CONNECT b.test:443 HTTP/1.1\r\nHost: b.test:443\r\n\r\n")
        self.callbacks.decoders[0].encoder.encodeHeaders(ResponseHeaders(404), True)
        self.assertTrue(self.transport.disconnecting)

    def test_connectWithBody(self):
        """Envoy: CONNECT with a Content-Length is 400 http1.body_disallowed."""
        self.assertRejected(b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n"
                            b"Content-Length: 5\r\n\r\nhello",
                            BAD_REQUEST, 400, Details.BODY_DISALLOWED)
