"""
Tests for L{txenvoy.http.http1.client_codec}.

Request serialisation is pinned to what a real Envoy 1.40 writes upstream;
response handling to how Envoy answers a misbehaving upstream (reliability
anchor, section 1.4, "Upstream misbehaviour").
"""

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.http.http1.codec import Details
from txenvoy.http.http1.client_codec import HEAD_READ_BYTES, ClientCodec
from txenvoy.http.headers import HeaderMap, RequestHeaders
from txenvoy.http.pool_base import GATHER_MIN_BYTES

from tests.http.http1.sequences import recordSequences


class Callbacks:
    """The connection pool side: records what the codec reports."""

    def __init__(self):
        self.events = []
        self.headers = None

    def onResponseHeaders(self, headers, endStream):
        self.headers = headers
        self.events.append(("headers", headers.status, endStream))

    def onResponseData(self, data, endStream):
        self.events.append(("data", data, endStream))

    def onResponseTrailers(self, trailers):
        self.events.append(("trailers", list(trailers)))

    def onResponseComplete(self):
        self.events.append(("complete",))

    def onProtocolError(self, details):
        self.events.append(("error", details))

    def body(self):
        return b"".join(e[1] for e in self.events if e[0] == "data")


class Informational(Callbacks):
    """Callbacks that ask for 1xx heads."""

    def onResponse1xxHeaders(self, headers):
        self.events.append(("1xx", headers.status))


def get(path=b"/p", authority=b"a.test", headers=(), method=b"GET"):
    return RequestHeaders(method, path, authority, headers=HeaderMap(list(headers)))


class ClientTestMixin:

    def client(self, callbacks=None, **kwargs):
        self.transport = StringTransport()
        self.callbacks = callbacks or Callbacks()
        self.codec = ClientCodec(self.callbacks, self.transport, **kwargs)
        return self.codec

    def exchange(self, response, request=None, step=None, **kwargs):
        """Send C{request} (a GET by default), feed C{response}."""
        codec = self.client(**kwargs)
        codec.encodeRequest(request or get(), True)
        if step:
            for i in range(0, len(response), step):
                codec.dataReceived(response[i:i + step])
        else:
            codec.dataReceived(response)
        return self.callbacks.events


class RequestEncodingTests(ClientTestMixin, SynchronousTestCase):
    """Requests are written as Envoy writes them upstream."""

    def test_get(self):
        """
        Envoy: host first, then the headers in order, names as given (lower
        case); a GET without a body gets no content-length.
        """
        codec = self.client()
        codec.encodeRequest(get(headers=[(b"x-foo", b"1"), (b"x-forwarded-proto", b"http")]), True)
        self.assertEqual(self.transport.value(),
                         b"GET /p HTTP/1.1\r\nhost: a.test\r\nx-foo: 1\r\n"
                         b"x-forwarded-proto: http\r\n\r\n")

    def test_bodylessMethods(self):
        """Envoy adds content-length: 0 to a body-less POST, not to DELETE."""
        codec = self.client()
        codec.encodeRequest(get(method=b"POST"), True)
        self.assertEqual(self.transport.value(),
                         b"POST /p HTTP/1.1\r\nhost: a.test\r\ncontent-length: 0\r\n\r\n")
        for method in (b"DELETE", b"HEAD", b"TRACE"):
            codec = self.client()
            codec.encodeRequest(get(method=method), True)
            self.assertEqual(self.transport.value(),
                             method + b" /p HTTP/1.1\r\nhost: a.test\r\n\r\n")

    def test_contentLength(self):
        """A request with a content-length is written as it comes."""
        codec = self.client()
        codec.encodeRequest(get(method=b"POST", headers=[(b"content-length", b"5")]), False)
        codec.encodeData(b"hel", False)
        codec.encodeData(b"lo", True)
        self.assertEqual(self.transport.value(),
                         b"POST /p HTTP/1.1\r\nhost: a.test\r\ncontent-length: 5\r\n\r\nhello")

    def test_largeChunkNotCopied(self):
        """
        A request chunk of 64 KiB or more goes to the transport between
        its framing, as the same object, in one C{writeSequence}; the
        bytes written and counted are those of the joined form.
        """
        codec = self.client()
        sequences = recordSequences(self.transport)
        codec.encodeRequest(get(method=b"POST"), False)
        self.transport.clear()
        headBytes = codec.wireBytesSent
        first, last = b"a" * GATHER_MIN_BYTES, b"b" * (GATHER_MIN_BYTES + 1)
        codec.encodeData(first, False)
        codec.encodeData(last, True)
        self.assertEqual(self.transport.value(),
                         b"10000\r\n" + first + b"\r\n10001\r\n" + last + b"\r\n0\r\n\r\n")
        self.assertIs(sequences[0][1], first)
        self.assertIs(sequences[1][1], last)
        self.assertEqual(codec.wireBytesSent - headBytes, len(self.transport.value()))

    def test_chunked(self):
        """
        Envoy: a body without content-length goes chunked, transfer-encoding
        last; trailers are dropped by default.
        """
        codec = self.client()
        codec.encodeRequest(get(method=b"POST"), False)
        codec.encodeData(b"hello", False)
        codec.encodeData(b"", False)
        codec.encodeTrailers(HeaderMap([(b"x-t", b"1")]))
        self.assertEqual(self.transport.value(),
                         b"POST /p HTTP/1.1\r\nhost: a.test\r\ntransfer-encoding: chunked\r\n\r\n"
                         b"5\r\nhello\r\n0\r\n\r\n")
        codec.encodeData(b"late", True)
        self.assertTrue(self.transport.value().endswith(b"0\r\n\r\n"))

    def test_chunkedEnds(self):
        for last, tail in ((b"ab", b"2\r\nab\r\n0\r\n\r\n"), (b"", b"0\r\n\r\n")):
            codec = self.client()
            codec.encodeRequest(get(method=b"PUT"), False)
            codec.encodeData(last, True)
            self.assertTrue(self.transport.value().endswith(b"\r\n\r\n" + tail))

    def test_trailersEnabled(self):
        codec = self.client(enableTrailers=True)
        codec.encodeRequest(get(method=b"POST"), False)
        codec.encodeData(b"a", False)
        codec.encodeTrailers(HeaderMap([(b"x-t", b"1")]))
        self.assertTrue(self.transport.value().endswith(b"1\r\na\r\n0\r\nx-t: 1\r\n\r\n"))

    def test_hostAndFramingEntriesSkipped(self):
        """A host entry (the authority is written) and transfer-encoding are skipped."""
        codec = self.client()
        codec.encodeRequest(get(headers=[(b"host", b"other"), (b"transfer-encoding", b"chunked"),
                                         (b"x-a", b"1")]), True)
        self.assertEqual(self.transport.value(),
                         b"GET /p HTTP/1.1\r\nhost: a.test\r\nx-a: 1\r\n\r\n")

    def test_hostEntryWithoutAuthority(self):
        codec = self.client()
        codec.encodeRequest(get(authority=None, headers=[(b"host", b"h")]), True)
        self.assertEqual(self.transport.value(), b"GET /p HTTP/1.1\r\nhost: h\r\n\r\n")

    def test_connect(self):
        """CONNECT's target is the authority; its body is raw."""
        codec = self.client()
        codec.encodeRequest(get(method=b"CONNECT", path=None, authority=b"b.test:443"), False)
        codec.encodeData(b"tunnel", False)
        self.assertEqual(self.transport.value(),
                         b"CONNECT b.test:443 HTTP/1.1\r\nhost: b.test:443\r\n\r\ntunnel")

    def test_upgradeIsRaw(self):
        """An upgrade request's body is not chunked."""
        codec = self.client()
        codec.encodeRequest(get(headers=[(b"upgrade", b"websocket"),
                                         (b"connection", b"Upgrade")]), False)
        codec.encodeData(b"\x81\x00", False)
        self.assertTrue(self.transport.value().endswith(b"connection: Upgrade\r\n\r\n\x81\x00"))

    def test_plainHeadersInOrder(self):
        """
        Entries with no framing meaning (the common request) are written in
        order, repeated names included, after the authority.
        """
        codec = self.client()
        codec.encodeRequest(get(headers=[(b"x-a", b"1"), (b"accept", b"*/*"), (b"x-a", b"2")]),
                            True)
        self.assertEqual(self.transport.value(),
                         b"GET /p HTTP/1.1\r\nhost: a.test\r\nx-a: 1\r\naccept: */*\r\n"
                         b"x-a: 2\r\n\r\n")
        self.assertEqual(codec.headerBytesSent, len(self.transport.value()) - len(
            b"GET /p HTTP/1.1\r\n") - 2)

    def test_oneAtATime(self):
        """A second request before the response is a programming error."""
        codec = self.client()
        codec.encodeRequest(get(), True)
        self.assertRaises(RuntimeError, codec.encodeRequest, get(), True)


class ResponseTests(ClientTestMixin, SynchronousTestCase):
    """Responses are parsed into callbacks."""

    def test_contentLength(self):
        """Names lower-cased, values and reason kept, body by length."""
        events = self.exchange(b"HTTP/1.1 200 Fine\r\nContent-Length: 5\r\nX-Up: V\r\n"
                               b"Server: up\r\n\r\nhello")
        self.assertEqual(events, [("headers", 200, False), ("data", b"hello", True),
                                  ("complete",)])
        h = self.callbacks.headers
        self.assertEqual(list(h.headers), [(b"content-length", b"5"), (b"x-up", b"V"),
                                           (b"server", b"up")])
        self.assertEqual((h.reason, h.contentLength, h.version), (b"Fine", 5, "HTTP/1.1"))
        self.assertTrue(self.codec.keepAlive)
        self.assertFalse(self.codec.responseInProgress)

    def test_everySplit(self):
        response = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Up: abc\r\n\r\nhello"
        for cut in range(1, len(response)):
            codec = self.client()
            codec.encodeRequest(get(), True)
            codec.dataReceived(response[:cut])
            codec.dataReceived(response[cut:])
            self.assertEqual(self.callbacks.body(), b"hello", cut)
            self.assertEqual(self.callbacks.events[-1], ("complete",))
            self.assertTrue(codec.keepAlive)

    def test_emptyBody(self):
        events = self.exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(events, [("headers", 200, True), ("complete",)])

    def test_chunked(self):
        """A chunked body is de-chunked; transfer-encoding is not passed on."""
        events = self.exchange(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                               b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n", step=4)
        self.assertEqual(self.callbacks.body(), b"hello")
        self.assertEqual(events[-2:], [("data", b"", True), ("complete",)])
        self.assertEqual(list(self.callbacks.headers.headers), [])
        self.assertTrue(self.codec.keepAlive)

    def test_trailersEnabled(self):
        events = self.exchange(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                               b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n", enableTrailers=True)
        self.assertEqual(events[-2:], [("trailers", [(b"x-t", b"1")]), ("complete",)])

    def test_closeDelimited(self):
        """
        Envoy: a response with no length ends with the connection, and
        arrives whole; the connection is not reused.
        """
        events = self.exchange(b"HTTP/1.1 200 OK\r\n\r\npart one, ")
        self.codec.dataReceived(b"part two")
        self.assertTrue(self.codec.responseInProgress)
        self.codec.connectionLost(None)
        self.assertEqual(events, [("headers", 200, False), ("data", b"part one, ", False),
                                  ("data", b"part two", False), ("data", b"", True),
                                  ("complete",)])
        self.assertFalse(self.codec.responseInProgress)
        self.assertFalse(self.codec.keepAlive)

    def test_cutShort(self):
        """A response with a length cut by the connection stays incomplete."""
        events = self.exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
        self.codec.connectionLost(None)
        self.assertEqual(events[-1], ("data", b"x" * 1000, False))
        self.assertTrue(self.codec.responseInProgress)
        self.assertFalse(self.codec.keepAlive)

    def test_head(self):
        """A response to HEAD has no body, whatever its content-length says."""
        events = self.exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n",
                               request=get(method=b"HEAD"))
        self.assertEqual(events, [("headers", 200, True), ("complete",)])
        self.assertTrue(self.codec.keepAlive)
        self.codec.encodeRequest(get(), True)
        self.codec.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertEqual(events[-2:], [("data", b"ok", True), ("complete",)])

    def test_headAfterContinue(self):
        for step in (None, 1):
            events = self.exchange(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"
                                   b"Transfer-Encoding: chunked\r\n\r\n",
                                   request=get(method=b"HEAD"), step=step)
            self.assertEqual(events, [("headers", 200, True), ("complete",)])
            self.assertTrue(self.codec.keepAlive)

    def test_headWithBodyAnyway(self):
        """Bytes after a HEAD response's head: complete, but not reusable."""
        events = self.exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                               request=get(method=b"HEAD"))
        self.assertEqual(events, [("headers", 200, True), ("complete",)])
        self.assertFalse(self.codec.keepAlive)

    def test_noBodyStatuses(self):
        for status in (b"204 No Content", b"304 Not Modified"):
            events = self.exchange(b"HTTP/1.1 " + status + b"\r\nContent-Length: 5\r\n\r\n")
            self.assertEqual(events, [("headers", int(status[:3]), True), ("complete",)])

    def test_continueSwallowed(self):
        """Envoy: 100 Continue then 200 gives the client the 200 only."""
        events = self.exchange(b"HTTP/1.1 100 Continue\r\n\r\n"
                               b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertEqual(events, [("headers", 200, False), ("data", b"ok", True), ("complete",)])

    def test_informationalWhenAsked(self):
        events = self.exchange(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                               b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                               callbacks=Informational())
        self.assertEqual(events, [("1xx", 103), ("headers", 200, True), ("complete",)])

    def test_upgrade(self):
        """After a 101, everything is passed on raw until the connection ends."""
        request = get(headers=[(b"upgrade", b"websocket"), (b"connection", b"upgrade")])
        events = self.exchange(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                               b"Connection: Upgrade\r\n\r\n\x81\x02hi", request=request)
        self.codec.dataReceived(b"more")
        self.codec.connectionLost(None)
        self.assertEqual(events, [("headers", 101, False), ("data", b"\x81\x02hi", False),
                                  ("data", b"more", False), ("data", b"", True), ("complete",)])
        self.assertFalse(self.codec.keepAlive)

    def test_extendedConnect(self):
        """
        An HTTP/2 extended CONNECT (:protocol websocket) goes out as a GET
        with upgrade and connection: upgrade, and its 101 comes back as a
        200 without them (Envoy's transformUpgradeRequestFromH2toH1 and
        transformUpgradeResponseFromH1toH2); then bytes flow raw.
        """
        request = get(method=b"CONNECT", path=b"/ws", headers=[(b"x-a", b"b")])
        request.upgrade = b"websocket"
        codec = self.client()
        codec.encodeRequest(request, False)
        codec.encodeData(b"ping", False)
        self.assertEqual(self.transport.value(),
                         b"GET /ws HTTP/1.1\r\nhost: a.test\r\nx-a: b\r\nupgrade: websocket\r\n"
                         b"connection: upgrade\r\n\r\nping")
        codec.dataReceived(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                           b"Connection: Upgrade\r\nx-b: c\r\n\r\npong")
        headers = self.callbacks.headers
        self.assertEqual((headers.status, list(headers.headers.items())), (200, [(b"x-b", b"c")]))
        self.assertEqual(self.callbacks.events[1:], [("data", b"pong", False)])

    def test_connectionClose(self):
        """Connection: close or HTTP/1.0 without keep-alive: not reusable."""
        for response in (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                         b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"):
            self.exchange(response)
            self.assertEqual(self.callbacks.events[-1], ("complete",))
            self.assertFalse(self.codec.keepAlive)
        self.exchange(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n")
        self.assertTrue(self.codec.keepAlive)
        self.assertEqual(self.callbacks.headers.version, "HTTP/1.0")

    def test_requestAskedClose(self):
        self.exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                      request=get(headers=[(b"connection", b"close")]))
        self.assertFalse(self.codec.keepAlive)

    def test_earlyResponse(self):
        """A response complete before the request was sent in full: not reusable."""
        codec = self.client()
        codec.encodeRequest(get(method=b"POST", headers=[(b"content-length", b"10")]), False)
        codec.dataReceived(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(self.callbacks.events[-1], ("complete",))
        self.assertFalse(codec.keepAlive)

    def test_keepAliveAcrossRequests(self):
        codec = self.client()
        for i in range(3):
            codec.encodeRequest(get(), True)
            codec.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n%d" % i)
            self.assertTrue(codec.keepAlive)
        self.assertEqual(self.callbacks.body(), b"012")


class HeaderBytesTests(ClientTestMixin, SynchronousTestCase):
    """
    C{headerBytesReceived}, Envoy's upstream header bytes of a response:
    each header's name and value with its colon and CRLF, not the space
    between, the status line, the blank line, nor the trailers.
    """

    def test_headers(self):
        self.exchange(b"HTTP/1.1 200 OK\r\nServer: nginx  \r\ncontent-length: 2\r\n"
                      b"Connection: keep-alive\r\n\r\nok")
        self.assertEqual(self.codec.headerBytesReceived,
                         (6 + 5 + 3) + (14 + 1 + 3) + (10 + 10 + 3))

    def test_chunkedWithTrailers(self):
        """transfer-encoding counts although it is not passed on; trailers do not."""
        self.exchange(b"HTTP/1.1 200 OK\r\nx-a: 1\r\ntransfer-encoding: chunked\r\n\r\n"
                      b"2\r\nok\r\n0\r\nx-t: 2\r\nX-Other: 3\r\n\r\n", enableTrailers=True)
        self.assertEqual(self.callbacks.events[-2][0], "trailers")
        self.assertEqual(self.codec.headerBytesReceived, (3 + 1 + 3) + (17 + 7 + 3))

    def test_finalHeadOnly(self):
        """After a 100 Continue, the final head's bytes."""
        self.exchange(b"HTTP/1.1 100 Continue\r\nx-long-name: 1\r\n\r\n"
                      b"HTTP/1.1 204 No Content\r\nx-b: 22\r\n\r\n")
        self.assertEqual(self.codec.headerBytesReceived, 3 + 2 + 3)

    def test_perResponse(self):
        self.exchange(b"HTTP/1.1 200 OK\r\nx-aaaa: 1\r\ncontent-length: 0\r\n\r\n")
        self.codec.encodeRequest(get(), True)
        self.codec.dataReceived(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        self.assertEqual(self.codec.headerBytesReceived, 14 + 1 + 3)


class ResponseConnectionTests(ClientTestMixin, SynchronousTestCase):
    """
    C{responseConnection}: the first C{connection} value of the response
    being read, whatever the spelling of its name, for its pool's
    C{upstream_cx_close_notify}.
    """

    def test_none(self):
        self.exchange(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        self.assertIsNone(self.codec.responseConnection)

    def test_firstValue(self):
        self.exchange(b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive\r\nCONNECTION: close\r\n"
                      b"content-length: 0\r\n\r\n")
        self.assertEqual(self.codec.responseConnection, b"Keep-Alive")
        self.assertEqual(self.callbacks.headers.headers.getAll(b"connection"),
                         [b"Keep-Alive", b"close"])

    def test_perResponse(self):
        """The next response on the connection starts without one."""
        self.exchange(b"HTTP/1.1 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n")
        self.codec.encodeRequest(get(), True)
        self.codec.dataReceived(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        self.assertIsNone(self.codec.responseConnection)


class UpstreamProtocolErrorTests(ClientTestMixin, SynchronousTestCase):
    """
    Upstream protocol errors reach onProtocolError once, never raise, and
    leave the connection unusable (Envoy: 502/503 "protocol error").
    """

    def assertProtocolError(self, response, details, step=None, before=()):
        for s in (step, 1):
            events = self.exchange(response, step=s)
            self.assertEqual(events, list(before) + [("error", details)])
            self.assertFalse(self.codec.keepAlive)
            self.codec.dataReceived(b"HTTP/1.1 200 OK\r\n\r\n")
            self.codec.connectionLost(None)
            self.assertEqual(events, list(before) + [("error", details)])

    def test_garbageStatusLine(self):
        """Envoy: a garbage status line is a protocol error (502)."""
        self.assertProtocolError(b"garbage\r\n\r\n", Details.CODEC_ERROR)

    def test_contentLengthAndChunked(self):
        """Envoy: CL with TE from an upstream is a protocol error (502)."""
        self.assertProtocolError(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\nok",
            Details.CONTENT_LENGTH_AND_CHUNKED)

    def test_unsupportedTransferEncoding(self):
        self.assertProtocolError(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc",
                                 Details.INVALID_TRANSFER_ENCODING)

    def test_transferEncodingHeadersAreOneList(self):
        """
        Envoy: an upstream response's Transfer-Encoding headers are one
        list; C{x} then C{chunked}, C{gzip} then C{chunked}, C{gzip,
        chunked} or C{chunked} twice is a protocol error (502 with
        C{upstream_reset_before_response_started{protocol_error}}).
        """
        for head in (b"Transfer-Encoding: x\r\nTransfer-Encoding: chunked\r\n",
                     b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
                     b"Transfer-Encoding: gzip, chunked\r\n",
                     b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                     b"Transfer-Encoding: chunked\r\nTransfer-Encoding:\r\n"):
            self.assertProtocolError(
                b"HTTP/1.1 200 OK\r\n" + head + b"\r\n0\r\n\r\n",
                Details.INVALID_TRANSFER_ENCODING)

    def test_oversizedHeaders(self):
        """Envoy: 100 KiB of response headers is a protocol error (502)."""
        self.assertProtocolError(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 100 * 1024 + b"\r\n\r\n",
                                 Details.HEADERS_TOO_LARGE, step=4096)

    def test_manySmallHeaders(self):
        self.assertProtocolError(
            b"HTTP/1.1 200 OK\r\n" + b"X-A: b\r\n" * 9000 + b"\r\n", Details.HEADERS_TOO_LARGE)

    def test_tooManyHeaders(self):
        self.assertProtocolError(
            b"HTTP/1.1 200 OK\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", Details.TOO_MANY_HEADERS)

    def test_nulInHeader(self):
        """Envoy: NUL in a response header is refused (nothing forwarded)."""
        self.assertProtocolError(b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\n\r\n",
                                 Details.INVALID_CHARACTERS)

    def test_informationalWithBody(self):
        """
        A 1xx has no body (RFC 9110 15.2): one that announces one is a
        protocol error, as Envoy 1.40 has it (C{199} with C{Content-Length:
        5} then a 200: 502, C{reset reason: protocol error}); its bytes never
        reach the callbacks as the final response's data (found by the fuzz
        target L{tests.fuzz.http_client}).
        """
        for status in (b"199 X", b"150 Y", b"199 X"):
            self.assertProtocolError(
                b"HTTP/1.1 " + status + b"\r\nContent-Length: 5\r\n\r\nhello"
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", Details.CODEC_ERROR)
        self.assertProtocolError(
            b"HTTP/1.1 199 X\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            Details.CODEC_ERROR)

    def test_statusBelow100(self):
        """
        Envoy 1.40 answers 502 (C{reset reason: protocol error}) for an
        upstream status below 100 (C{011}, C{099}, C{000} after a 100), and
        passes 600 and 999 on. Found by the fuzz target
        L{tests.fuzz.http_client}.
        """
        for status in (b"011", b"099", b"000"):
            self.assertProtocolError(
                b"HTTP/1.1 " + status + b" X\r\nContent-Length: 2\r\n\r\nok",
                Details.CODEC_ERROR)
        self.assertProtocolError(b"HTTP/1.1 100 X\r\n\r\nHTTP/1.1 000 X\r\n\r\n",
                                 Details.CODEC_ERROR)
        self.assertProtocolError(b"HTTP/1.0 011 Continue\r\n\r\n"
                                 b"HTTP/1.1 204 No Cont\r\n\r\n\x11\x00", Details.CODEC_ERROR)
        for status in (600, 999):
            events = self.exchange(b"HTTP/1.1 %d X\r\nContent-Length: 2\r\n\r\nok" % (status,))
            self.assertEqual(events, [("headers", status, False), ("data", b"ok", True),
                                      ("complete",)])

    def test_informationalWithBodyRawInput(self):
        """The fuzz target's input that found it, as it was cut into reads."""
        events = self.exchange(
            b"HTTP/1.1 199 0\x00\x1fLt\x8c\x8c+" + b"\x8c" * 20 + b"\x00trP/0.1 200 OK\r\n"
            b"Content-Length: 5\r\nX-A: b\r\n\r\nheolo-", step=2,
            request=get(method=b"CONNECT", path=None), maxResponseHeadersKb=1,
            maxHeadersCount=5)
        self.assertEqual(events, [("error", Details.CODEC_ERROR)])

    def test_badChunkSize(self):
        """Envoy: C{zz} as a chunk size: the headers went out, then the reset."""
        self.assertProtocolError(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                                 Details.CODEC_ERROR, before=[("headers", 200, False)])

    def test_secondResponse(self):
        """A second response to one request: the first stands, then an error."""
        events = self.exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" * 2)
        self.assertEqual(events, [("headers", 200, True), ("complete",),
                                  ("error", Details.CODEC_ERROR)])
        self.assertFalse(self.codec.keepAlive)

    def test_unsolicited(self):
        """Bytes with no request in flight are a protocol error."""
        codec = self.client()
        codec.dataReceived(b"HTTP/1.1 200 OK\r\n\r\n")
        self.assertEqual(self.callbacks.events, [("error", Details.CODEC_ERROR)])
        self.assertRaises(RuntimeError, codec.encodeRequest, get(), True)

    def test_callbackExceptionsPropagate(self):
        codec = self.client()

        def broken(headers, endStream):
            raise ZeroDivisionError()
        codec._onHeaders = broken
        codec.encodeRequest(get(), True)
        self.assertRaises(ZeroDivisionError, codec.dataReceived,
                          b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.assertFalse(codec.keepAlive)


class _Reader:
    """The connection's side of the read size the codec asks for."""

    readLimit = None


class LengthBodyTests(ClientTestMixin, SynchronousTestCase):
    """
    A C{content-length} body's reads past its head skip the parser: passed
    on as read, with the same ends and errors as through the parser.
    """

    HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"

    def test_readsPassedOnAsRead(self):
        """
        The reads after the head are handed on as the very objects read
        (no copy); the last one ends the stream and the response.
        """
        codec = self.client()
        codec.encodeRequest(get(), True)
        codec.dataReceived(self.HEAD + b"ab")
        middle, last = b"cdefg", b"hij"
        codec.dataReceived(middle)
        codec.dataReceived(last)
        events = self.callbacks.events
        self.assertEqual(events, [("headers", 200, False), ("data", b"ab", False),
                                  ("data", b"cdefg", False), ("data", b"hij", True),
                                  ("complete",)])
        self.assertIs(events[2][1], middle)
        self.assertIs(events[3][1], last)
        self.assertTrue(codec.keepAlive)
        self.assertEqual(codec.wireBytesReceived, len(self.HEAD) + 10)

    def test_nextResponseParsed(self):
        """The next response on the connection is parsed afresh."""
        codec = self.client()
        for body in (b"0123456789", b"abcdefghij"):
            codec.encodeRequest(get(), True)
            codec.dataReceived(self.HEAD)
            codec.dataReceived(body[:4])
            codec.dataReceived(body[4:])
        codec.encodeRequest(get(), True)
        codec.dataReceived(b"HTTP/1.1 204 No Content\r\n\r\n")
        self.assertEqual(self.callbacks.body(), b"0123456789abcdefghij")
        self.assertEqual([e for e in self.callbacks.events if e[0] != "data"],
                         [("headers", 200, False), ("complete",)] * 2
                         + [("headers", 204, True), ("complete",)])
        self.assertTrue(codec.keepAlive)

    def test_bytesAfterTheBody(self):
        """
        Bytes after the body's end in the same read: the response stands,
        then a protocol error, as through the parser.
        """
        codec = self.client()
        codec.encodeRequest(get(), True)
        codec.dataReceived(self.HEAD + b"abc")
        codec.dataReceived(b"defghij" + b"HTTP/1.1 200 OK\r\n\r\n")
        self.assertEqual(self.callbacks.events,
                         [("headers", 200, False), ("data", b"abc", False),
                          ("data", b"defghij", True), ("complete",),
                          ("error", Details.CODEC_ERROR)])
        self.assertFalse(codec.keepAlive)

    def test_closedInTheBody(self):
        """The connection lost in the body leaves the response incomplete."""
        codec = self.client()
        codec.encodeRequest(get(), True)
        codec.dataReceived(self.HEAD)
        codec.dataReceived(b"abc")
        codec.connectionLost()
        self.assertTrue(codec.responseInProgress)
        self.assertEqual(self.callbacks.events[-1], ("data", b"abc", False))

    def test_resetFromTheCallback(self):
        """
        A callback that ends the connection on the body's last bytes: no
        completion follows, as the parser's path stops there too.
        """
        codec = self.client()
        codec.encodeRequest(get(), True)
        codec.dataReceived(self.HEAD + b"abc")

        def onData(data, endStream):
            self.callbacks.events.append(("data", data, endStream))
            codec.connectionLost()
        codec._onData = onData
        codec.dataReceived(b"defghij")
        self.assertEqual(self.callbacks.events[-1], ("data", b"defghij", True))

    def test_readSizes(self):
        """
        The codec asks its reader for small reads while a head is due and
        for the connection's buffer limit (0) while a body is read.
        """
        reader = _Reader()
        codec = self.client(reader=reader)
        self.assertEqual(reader.readLimit, HEAD_READ_BYTES)
        codec.encodeRequest(get(), True)
        codec.dataReceived(self.HEAD + b"ab")
        self.assertEqual(reader.readLimit, 0)
        codec.dataReceived(b"cdefghij")
        self.assertEqual(reader.readLimit, HEAD_READ_BYTES)
        codec.encodeRequest(get(), True)
        codec.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        self.assertEqual(reader.readLimit, 0)
        codec.dataReceived(b"2\r\nok\r\n0\r\n\r\n")
        self.assertEqual(reader.readLimit, HEAD_READ_BYTES)
        self.assertEqual(self.callbacks.body(), b"abcdefghijok")
