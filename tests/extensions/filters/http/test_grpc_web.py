"""
L{txenvoy.extensions.filters.http.grpc_web} on fakes: the text form's
base64 decoding across body pieces and its per-frame encoding, as Envoy's
C{GrpcWebFilter} does them. End to end, compared with Envoy:
L{tests.e2e.test_grpc}.
"""

import base64

from twisted.trial.unittest import SynchronousTestCase

from tests.extensions.filters.http.fakes import compileFilter, makeFilter, request, response
from txenvoy.extensions.filters.http.grpc_web import decodeBase64Quads
from txenvoy.http.filter import FilterDataStatus, FilterHeadersStatus
from txenvoy.http.headers import HeaderMap

GRPC_WEB = "envoy.extensions.filters.http.grpc_web.v3.GrpcWeb"
TEXT = "application/grpc-web-text"


def _frame(payload, flag=b"\x00"):
    return flag + len(payload).to_bytes(4, "big") + payload


class DecodeBase64QuadsTests(SynchronousTestCase):
    """Envoy's Base64::decode on whole groups of four."""

    def test_padding(self):
        self.assertEqual(decodeBase64Quads(b"aGk="), b"hi")
        self.assertEqual(decodeBase64Quads(b"aA=="), b"h")

    def test_paddingInside(self):
        """Padding anywhere but the end is not base64."""
        self.assertIsNone(decodeBase64Quads(b"aA==aGk="))
        self.assertIsNone(decodeBase64Quads(b"aA=a"))

    def test_notBase64(self):
        self.assertIsNone(decodeBase64Quads(b"a*bc"))


class GrpcWebTextTests(SynchronousTestCase):
    """The text form through one filter."""

    def setUp(self):
        self.filter, self.callbacks = makeFilter(compileFilter(GRPC_WEB), GRPC_WEB)

    def start(self, accept=TEXT):
        headers = [("content-type", TEXT), ("content-length", "12")]
        if accept is not None:
            headers.append(("accept", accept))
        req = request("POST", "/s.S/M", headers)
        self.assertEqual(self.filter.decodeHeaders(req, False), FilterHeadersStatus.Continue)
        return req

    def test_requestHeaders(self):
        """Upstream sees gRPC: content-type, te, grpc-accept-encoding; no content-length."""
        entries = self.start().headers
        self.assertEqual(entries.get(b"content-type"), b"application/grpc")
        self.assertEqual(entries.get(b"te"), b"trailers")
        self.assertEqual(entries.get(b"grpc-accept-encoding"), b"identity")
        self.assertIsNone(entries.get(b"content-length"))

    def test_requestBodyInPieces(self):
        """Base64 split off group boundaries is decoded four characters at a time."""
        self.start()
        text = base64.b64encode(_frame(b"hello"))
        out = []
        for piece in (text[:2], text[2:7], text[7:]):
            status = self.filter.decodeData(piece, piece is text[7:] and True)
            if status == FilterDataStatus.StopIterationNoBuffer:
                continue
            self.assertEqual(status[0], FilterDataStatus.Continue)
            out.append(status[1])
        self.assertEqual(b"".join(out), _frame(b"hello"))

    def test_requestBadSize(self):
        """A body ending off a group of four: Envoy's 400."""
        self.start()
        self.filter.decodeData(b"aGk", True)
        reply = self.callbacks.localReplies[0]
        self.assertEqual((reply.code, reply.body, reply.details),
                         (400, b"Bad gRPC-web request, invalid base64 data.",
                          "grpc_base_64_decode_failed_bad_size"))

    def test_responseFrames(self):
        """Each whole frame is encoded on its own; a partial one waits."""
        self.start()
        headers = response(200, [("content-type", "application/grpc")])
        self.filter.encodeHeaders(headers, False)
        self.assertEqual(headers.headers.get(b"content-type"), b"application/grpc-web-text+proto")
        one, two = _frame(b"a"), _frame(b"bcd")
        status, out = self.filter.encodeData(one + two[:3], False)
        self.assertEqual(out, base64.b64encode(one))
        self.assertEqual(self.filter.encodeData(two[3:5], False),
                         FilterDataStatus.StopIterationNoBuffer)
        status, out = self.filter.encodeData(two[5:], False)
        self.assertEqual(out, base64.b64encode(two))

    def test_responseTrailers(self):
        """The trailers become a base64 0x80 frame; the trailers map is emptied."""
        self.start()
        self.filter.encodeHeaders(response(200, [("content-type", "application/grpc")]), False)
        trailers = HeaderMap([(b"grpc-status", b"0"), (b"grpc-message", b"")])
        self.filter.encodeTrailers(trailers)
        self.assertEqual(self.callbacks.addedEncoded,
                         [base64.b64encode(_frame(b"grpc-status:0\r\ngrpc-message:\r\n", b"\x80"))])
        self.assertEqual(list(trailers.items()), [])

    def test_binaryAccept(self):
        """Without a text accept, the reply stays binary."""
        self.start(accept=None)
        headers = response(200, [("content-type", "application/grpc")])
        self.filter.encodeHeaders(headers, False)
        self.assertEqual(headers.headers.get(b"content-type"), b"application/grpc-web+proto")
        self.assertEqual(self.filter.encodeData(_frame(b"x"), False), FilterDataStatus.Continue)
