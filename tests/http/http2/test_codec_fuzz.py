"""
Property tests for the downstream HTTP/2 codec
(L{txenvoy.http.http2.server_codec}): random frames, and a valid client
conversation mutated and cut at random points, never make
C{dataReceived} raise; whatever the codec writes parses as HTTP/2 frames.
"""

from hypothesis import given
from hypothesis import strategies as st
from hyperframe.frame import Frame
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from h2.config import H2Configuration
from h2.connection import H2Connection
from tests.http.http1.test_codec_fuzz import FUZZ, split
from tests.http.http2.test_server_codec import Owner, stats
from txenvoy.http.headers import HeaderMap, ResponseHeaders
from txenvoy.http.http2.options import Http2Options
from txenvoy.http.http2.server_codec import PREFACE, Http2ServerCodec


def _conversation():
    """A client's bytes: settings, requests with bodies, trailers, a reset, a ping."""
    client = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    base = [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"a")]
    client.send_headers(1, base + [(b":path", b"/a"), (b"x-a", b"1")])
    client.send_data(1, b"hello")
    client.send_headers(1, [(b"x-t", b"2")], end_stream=True)
    client.send_headers(3, base + [(b":path", b"/b")], end_stream=False)
    client.send_data(3, b"", end_stream=False)
    client.reset_stream(3)
    client.send_headers(5, [(b":method", b"GET"), (b":scheme", b"http"),
                            (b":authority", b"a"), (b":path", b"/c")], end_stream=True)
    client.ping(b"12345678")
    client.increment_flow_control_window(1000)
    client.prioritize(5, weight=10)
    return client.data_to_send()


CONVERSATION = _conversation()
FRAME_TYPES = st.integers(0, 12)


@st.composite
def mutatedConversation(draw):
    data = CONVERSATION
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.integers(0, 3))
        i = draw(st.integers(len(PREFACE), len(data) - 1))
        if op == 0:
            data = data[:i] + data[i + 1:]
        elif op == 1:
            data = data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1:]
        elif op == 2:
            data = data[:i] + draw(st.binary(max_size=12)) + data[i:]
        else:
            j = draw(st.integers(i, min(len(data), i + 30)))
            data = data[:j] + data[i:j] + data[j:]
    return data


@st.composite
def randomFrames(draw):
    """The preface, then frames of any type, flags, stream and payload."""
    out = [PREFACE, b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"]
    for _ in range(draw(st.integers(1, 8))):
        payload = draw(st.binary(max_size=40))
        out.append(len(payload).to_bytes(3, "big") + bytes([draw(FRAME_TYPES),
                                                             draw(st.integers(0, 255))])
                   + draw(st.integers(0, 9)).to_bytes(4, "big") + payload)
    return b"".join(out)


class AnsweringOwner(Owner):
    """Answers each request at once, with a body and trailers."""

    def newStream(self, encoder):
        decoder = Owner.newStream(self, encoder)
        original = decoder.decodeHeaders

        def decodeHeaders(headers, endStream):
            original(headers, endStream)
            encoder.encodeHeaders(ResponseHeaders(200, HeaderMap([(b"x-r", b"1")])), False)
            encoder.encodeData(b"body", False)
            encoder.encodeTrailers(HeaderMap([(b"grpc-status", b"0")]))

        decoder.decodeHeaders = decodeHeaders
        return decoder


def _frames(data):
    """Parse what the codec wrote; a malformed frame raises."""
    while data:
        assert len(data) >= 9, data
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        assert len(data) >= 9 + length
        frame.parse_body(memoryview(data[9:9 + length]))
        data = data[9 + length:]


class Http2CodecPropertyTests(SynchronousTestCase):

    def feed(self, pieces):
        transport = StringTransport()
        _, struct = stats()
        codec = Http2ServerCodec(AnsweringOwner(), transport,
                                 Http2Options(maxConcurrentStreams=4), struct, clock=Clock())
        for piece in pieces:
            codec.dataReceived(piece)
        _frames(transport.value())
        codec.connectionLost(None)

    @FUZZ
    @given(st.data())
    def test_mutatedConversation(self, data):
        """A valid conversation, mutated and split: no exception, frames out."""
        self.feed(data.draw(split(data.draw(mutatedConversation()))))

    @FUZZ
    @given(st.data())
    def test_randomFrames(self, data):
        """Frames of any type and content after the preface: no exception."""
        self.feed(data.draw(split(data.draw(randomFrames()))))

    def test_validConversation(self):
        """The unmutated conversation is served: three streams, two answered."""
        self.feed([CONVERSATION])
