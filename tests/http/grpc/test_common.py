"""Tests for L{txenvoy.http.grpc.common}."""

from twisted.trial.unittest import SynchronousTestCase

from txenvoy.http.grpc.common import (
    GrpcStatus,
    encodeGrpcMessage,
    grpcLocalReply,
    httpToGrpcStatus,
    isGrpcRequest,
    parseGrpcTimeout,
)
from txenvoy.http.headers import HeaderMap, RequestHeaders, ResponseHeaders


def request(contentType):
    headers = HeaderMap([(b"content-type", contentType)] if contentType else [])
    return RequestHeaders(b"POST", b"/s/M", b"a", b"http", "HTTP/2", headers)


class GrpcCommonTests(SynchronousTestCase):

    def test_isGrpcRequest(self):
        """Envoy's isGrpcRequestHeaders: application/grpc and application/grpc+codec."""
        self.assertTrue(isGrpcRequest(request(b"application/grpc")))
        self.assertTrue(isGrpcRequest(request(b"application/grpc+proto")))
        self.assertFalse(isGrpcRequest(request(b"application/grpc-web")))
        self.assertFalse(isGrpcRequest(request(b"application/json")))
        self.assertFalse(isGrpcRequest(request(None)))
        self.assertFalse(isGrpcRequest(None))

    def test_httpToGrpcStatus(self):
        """Envoy's httpToGrpcStatus table, UNKNOWN otherwise."""
        self.assertEqual([httpToGrpcStatus(c) for c in (400, 401, 403, 404, 429, 503, 200, 500)],
                         [13, 16, 7, 12, 14, 14, 2, 2])
        self.assertEqual(GrpcStatus.UNAVAILABLE, 14)

    def test_localReply(self):
        """A trailers-only 200, the body as grpc-message, other headers kept after."""
        headers = ResponseHeaders(503, HeaderMap([(b"content-length", b"3"),
                                                  (b"content-type", b"text/plain"),
                                                  (b"x-envoy-overloaded", b"true")]))
        reply = grpcLocalReply(headers, b"no\n%")
        self.assertEqual(reply.status, 200)
        self.assertEqual(list(reply.headers.items()), [
            (b"content-type", b"application/grpc"), (b"grpc-status", b"14"),
            (b"grpc-message", b"no%0A%25"), (b"x-envoy-overloaded", b"true")])

    def test_localReplyKeepsItsGrpcStatus(self):
        """A grpc-status the reply set itself (a filter's) wins over the mapping."""
        headers = ResponseHeaders(403, HeaderMap([(b"grpc-status", b"9")]))
        reply = grpcLocalReply(headers, b"")
        self.assertEqual(list(reply.headers.items()), [
            (b"content-type", b"application/grpc"), (b"grpc-status", b"9")])

    def test_encodeMessage(self):
        self.assertEqual(encodeGrpcMessage(b"a b\xff"), b"a b%FF")

    def test_parseTimeout(self):
        """grpc-timeout units; a malformed value is ignored (None)."""
        self.assertEqual(parseGrpcTimeout(b"2S"), 2.0)
        self.assertEqual(parseGrpcTimeout(b"1500m"), 1.5)
        self.assertEqual(parseGrpcTimeout(b"1H"), 3600.0)
        self.assertIsNone(parseGrpcTimeout(b"123456789S"))
        self.assertIsNone(parseGrpcTimeout(b"5x"))
        self.assertIsNone(parseGrpcTimeout(None))
