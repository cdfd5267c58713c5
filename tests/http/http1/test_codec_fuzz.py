"""
Property tests for the HTTP/1.1 codecs (L{txenvoy.http.http1.server_codec},
L{txenvoy.http.http1.client_codec}): random bytes and mutated valid messages,
split at random points over several reads, never raise anything but what
the callbacks raise, and the downstream connection always carries
well-formed responses, or nothing.
"""

import os
from datetime import timedelta

import httptools
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.http.http1.client_codec import ClientCodec
from txenvoy.http.http1.server_codec import ServerCodec
from txenvoy.http.headers import HeaderMap, RequestHeaders, ResponseHeaders

# 100 examples per property in the suite; a longer run of the same
# properties: TXENVOY_FUZZ_EXAMPLES=5000 python -m pytest tests/http/http1/test_codec_fuzz.py
EXAMPLES = int(os.environ.get("TXENVOY_FUZZ_EXAMPLES", "100"))

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=timedelta(seconds=2),
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

REQUESTS = [
    b"GET /p?q=1 HTTP/1.1\r\nHost: a.test\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n",
    b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;x=y\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
    b"HEAD / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
    b"GET http://b.test/p HTTP/1.1\r\nHost: a\r\nX-Fold: a\r\n  b\r\n\r\n",
    b"GET / HTTP/1.1\nHost: a\nX-A: a\rb\n\n",
    b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nxx",
    b"POST / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n"
    b"Content-Length: 3\r\n\r\nxyz",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"CONNECT b:443 HTTP/1.1\r\nHost: b:443\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\nx_under: 1\r\nExpect: 100-continue\r\n\r\n",
]

RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.0 200 OK\r\n\r\nclose-delimited",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nraw",
    b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n",
]

SPECIAL = [b"\r", b"\n", b"\r\n", b"\x00", b" ", b":", b"_", b"#", b"\t", b"\x7f", b"\xff",
           b"\r\n\r\n", b"Content-Length: 3\r\n", b"Transfer-Encoding: chunked\r\n",
           b"0\r\n\r\n", b"GET / HTTP/1.1\r\n", b"Host: a\r\n", b"\r\n "]


@st.composite
def mutated(draw, corpus):
    """A few messages from C{corpus}, concatenated and mutated."""
    data = b"".join(draw(st.lists(st.sampled_from(corpus), min_size=1, max_size=3)))
    for _ in range(draw(st.integers(0, 4))):
        if not data:
            break
        op = draw(st.integers(0, 3))
        i = draw(st.integers(0, len(data) - 1))
        if op == 0:
            data = data[:i] + data[i + 1:]
        elif op == 1:
            data = data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1:]
        elif op == 2:
            data = data[:i] + draw(st.sampled_from(SPECIAL)) + data[i:]
        else:
            j = draw(st.integers(i, min(len(data), i + 40)))
            data = data[:j] + data[i:j] + data[j:]
    return data


@st.composite
def split(draw, data):
    """C{data} cut into reads at random points."""
    cuts = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=8))))
    pieces = []
    last = 0
    for cut in cuts + [len(data)]:
        if cut > last:
            pieces.append(data[last:cut])
            last = cut
    return pieces


class FuzzDecoder:
    """Answers every complete request; HEAD gets a 204 so replies parse alone."""

    def __init__(self, owner, encoder):
        self.owner = owner
        self.encoder = encoder
        self.method = None

    def decodeHeaders(self, headers, endStream):
        assert isinstance(headers, RequestHeaders)
        assert headers.version in ("HTTP/1.1", "HTTP/1.0")
        self.method = headers.method
        if endStream:
            self.respond()

    def decodeData(self, data, endStream):
        assert isinstance(data, bytes)
        if endStream:
            self.respond()

    def decodeTrailers(self, trailers):
        self.respond()

    def respond(self):
        if self.method == b"HEAD":
            self.encoder.encodeHeaders(ResponseHeaders(204), True)
        else:
            self.encoder.encodeHeaders(
                ResponseHeaders(200, HeaderMap([(b"content-length", b"2")])), False)
            self.encoder.encodeData(b"ok", True)


class FuzzCallbacks:

    def __init__(self):
        self.streams = 0
        self.errors = []

    def newStream(self, encoder):
        self.streams += 1
        return FuzzDecoder(self, encoder)

    def onCodecError(self, status, details):
        assert status in (400, 426, 431, 501), status
        assert isinstance(details, str)
        self.errors.append((status, details))


class ResponseCounter:
    """httptools callbacks that count complete responses."""

    def __init__(self):
        self.begun = 0
        self.complete = 0
        self.statuses = []

    def on_message_begin(self):
        self.begun += 1

    def on_headers_complete(self):
        pass

    def on_message_complete(self):
        self.complete += 1


def assertWellFormed(testCase, out, callbacks, transport):
    """
    C{out} is a sequence of complete responses; a codec error ends it with
    the error reply, and the connection is closing.
    """
    counter = ResponseCounter()
    parser = httptools.HttpResponseParser(counter)
    try:
        parser.feed_data(out)
    except httptools.HttpParserUpgrade:
        testCase.fail("unexpected upgrade in %r" % (out,))
    testCase.assertEqual(counter.begun, counter.complete, out)
    if callbacks.errors:
        testCase.assertEqual(len(callbacks.errors), 1)
        status = callbacks.errors[0][0]
        testCase.assertIn(b"HTTP/1.1 %d " % status, out)
        testCase.assertTrue(out.endswith((b"Bad Request", b"Not Implemented",
                                          b"Upgrade Required", b"Too Large",
                                          b"content-length: 0\r\n\r\n")), out)
        testCase.assertTrue(transport.disconnecting)


class ServerFuzzTests(SynchronousTestCase):
    """The downstream codec copes with anything."""

    def run_server(self, pieces, **kwargs):
        clock = Clock()
        transport = StringTransport()
        callbacks = FuzzCallbacks()
        server = ServerCodec(callbacks, transport, clock=clock, **kwargs)
        for piece in pieces:
            server.dataReceived(piece)
        assertWellFormed(self, transport.value(), callbacks, transport)
        return server, transport, callbacks

    @FUZZ
    @given(st.binary(max_size=300).flatmap(split))
    def test_randomBytes(self, pieces):
        self.run_server(pieces)

    @FUZZ
    @given(mutated(REQUESTS).flatmap(split))
    def test_mutatedRequests(self, pieces):
        self.run_server(pieces)

    @FUZZ
    @given(mutated(REQUESTS).flatmap(split),
           st.sampled_from(["ALLOW", "REJECT_REQUEST", "DROP_HEADER"]), st.booleans())
    def test_mutatedRequestsOtherSettings(self, pieces, underscores, trailers):
        self.run_server(pieces, acceptHttp10=True, defaultHostForHttp10=b"d",
                        headersWithUnderscoresAction=underscores, enableTrailers=trailers,
                        maxRequestHeadersKb=1, maxHeadersCount=5)

    @FUZZ
    @given(st.lists(st.sampled_from(REQUESTS[:6]), min_size=1, max_size=6).flatmap(
        lambda requests: split(b"".join(requests)).map(lambda p: (requests, p))))
    def test_validPipelinesAnswered(self, case):
        """Valid pipelined requests, however split, get one response each."""
        requests, pieces = case
        server, transport, callbacks = self.run_server(pieces)
        self.assertEqual(callbacks.errors, [])
        self.assertEqual(callbacks.streams, len(requests))
        self.assertFalse(transport.disconnecting)


class ClientEvents:
    """Checks the order of what the upstream codec reports."""

    def __init__(self):
        self.events = []

    def _add(self, event):
        # Nothing follows an error; only an error (about the connection)
        # may follow a complete response.
        assert "error" not in self.events, self.events
        assert "complete" not in self.events or event == "error", self.events
        self.events.append(event)

    def onResponseHeaders(self, headers, endStream):
        assert isinstance(headers, ResponseHeaders)
        assert "headers" not in self.events
        self._add("headers")

    def onResponseData(self, data, endStream):
        assert isinstance(data, bytes)
        assert "headers" in self.events
        assert "end" not in self.events
        self._add("end" if endStream else "data")

    def onResponseTrailers(self, trailers):
        self._add("end")

    def onResponseComplete(self):
        self._add("complete")

    def onProtocolError(self, details):
        assert isinstance(details, str)
        self._add("error")


class ClientFuzzTests(SynchronousTestCase):
    """The upstream codec copes with anything."""

    def run_client(self, pieces, method=b"GET"):
        callbacks = ClientEvents()
        codec = ClientCodec(callbacks, StringTransport(), maxResponseHeadersKb=1,
                            maxHeadersCount=5)
        codec.encodeRequest(RequestHeaders(method, b"/", b"a"), True)
        for piece in pieces:
            codec.dataReceived(piece)
        codec.connectionLost(None)
        if "complete" in callbacks.events:
            self.assertFalse(codec.responseInProgress)
        if "error" in callbacks.events:
            self.assertFalse(codec.keepAlive)
        return callbacks

    @FUZZ
    @given(st.binary(max_size=300).flatmap(split))
    def test_randomBytes(self, pieces):
        self.run_client(pieces)

    @FUZZ
    @given(mutated(RESPONSES).flatmap(split), st.sampled_from([b"GET", b"HEAD"]))
    def test_mutatedResponses(self, pieces, method):
        self.run_client(pieces, method)

    @FUZZ
    @given(st.sampled_from(RESPONSES[:4]).flatmap(split))
    def test_validResponsesComplete(self, pieces):
        callbacks = self.run_client(pieces)
        self.assertEqual(callbacks.events[0], "headers")
        self.assertEqual(callbacks.events[-1], "complete")
        self.assertNotIn("error", callbacks.events)
