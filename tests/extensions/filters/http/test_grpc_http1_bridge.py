"""
L{txenvoy.extensions.filters.http.grpc_http1_bridge} on fakes. End to
end, byte for byte against Envoy 1.40: L{tests.e2e.test_grpc}.
"""

from twisted.trial.unittest import SynchronousTestCase

from tests.extensions.filters.http.fakes import compileFilter, makeFilter, request, response
from txenvoy.http.filter import FilterDataStatus, FilterHeadersStatus, FilterTrailersStatus
from txenvoy.http.headers import HeaderMap

BRIDGE = "envoy.extensions.filters.http.grpc_http1_bridge.v3.Config"


class Http1BridgeTests(SynchronousTestCase):
    """Envoy's Http1BridgeFilter."""

    def make(self, text="{}"):
        f, callbacks = makeFilter(compileFilter(BRIDGE, text), BRIDGE)
        return f, callbacks

    def test_http2NotBridged(self):
        """Over HTTP/2 the client reads trailers itself: nothing is held."""
        f, _ = self.make("ignore_query_parameters: true")
        req = request("POST", "/s.S/M?q=1", [("content-type", "application/grpc")])
        req.version = "HTTP/2"
        f.decodeHeaders(req, False)
        self.assertEqual(req.path, b"/s.S/M?q=1")
        self.assertEqual(f.encodeHeaders(response(200, [("content-type", "application/grpc")]),
                                         False), FilterHeadersStatus.Continue)

    def test_statusFromTrailers(self):
        """A non-zero grpc-status: 503, the status and message in the held headers."""
        f, _ = self.make("ignore_query_parameters: true")
        req = request("POST", "/s.S/M?q=1", [("content-type", "application/grpc")])
        f.decodeHeaders(req, False)
        self.assertEqual(req.path, b"/s.S/M")
        headers = response(200, [("content-type", "application/grpc")])
        self.assertEqual(f.encodeHeaders(headers, False), FilterHeadersStatus.StopIteration)
        self.assertEqual(f.encodeData(b"abc", False)[0], FilterDataStatus.StopIterationAndBuffer)
        trailers = HeaderMap([(b"grpc-status", b"7"), (b"grpc-message", b"no")])
        self.assertEqual(f.encodeTrailers(trailers), FilterTrailersStatus.Continue)
        self.assertEqual(headers.status, 503)
        self.assertEqual([headers.headers.get(n) for n in (b"grpc-status", b"grpc-message",
                                                           b"content-length")],
                         [b"7", b"no", b"3"])

    def test_upgradeProtobuf(self):
        """x-protobuf: one frame around the whole body up; the frame header off the reply."""
        f, callbacks = self.make("upgrade_protobuf_to_grpc: true")
        req = request("POST", "/s.S/M", [("content-type", "application/x-protobuf"),
                                         ("content-length", "4")])
        f.decodeHeaders(req, False)
        self.assertEqual(req.headers.get(b"content-type"), b"application/grpc")
        self.assertIsNone(req.headers.get(b"content-length"))
        self.assertEqual(f.decodeData(b"ab", False), FilterDataStatus.StopIterationNoBuffer)
        self.assertEqual(f.decodeData(b"cd", True),
                         (FilterDataStatus.Continue, b"\x00\x00\x00\x00\x04abcd"))
        f.encodeHeaders(response(200, [("content-type", "application/grpc")]), False)
        self.assertEqual(f.encodeData(b"\x00\x00\x00\x00\x02ok", False),
                         (FilterDataStatus.StopIterationAndBuffer, b"ok"))

    def test_upgradeProtobufTooLarge(self):
        """A protobuf body past the buffer limit: 413, as Envoy's decoder buffer."""
        f, callbacks = makeFilter(compileFilter(BRIDGE, "upgrade_protobuf_to_grpc: true"),
                                  BRIDGE, bufferLimit=4)
        f.decodeHeaders(request("POST", "/s.S/M",
                                [("content-type", "application/x-protobuf")]), False)
        f.decodeData(b"abcde", False)
        self.assertEqual(callbacks.localReplies[0].code, 413)
