"""
Tests for L{txenvoy.tracing.b3}: B3 single and multi headers, read and
written as Envoy's Zipkin tracer does.
"""

from twisted.trial.unittest import SynchronousTestCase

from txenvoy.http.headers import HeaderMap
from txenvoy.tracing import b3


def headers(*pairs):
    return HeaderMap([(n.encode(), v.encode()) for n, v in pairs])


class ExtractTests(SynchronousTestCase):

    def test_multi(self):
        """x-b3-traceid/spanid/parentspanid/sampled, a 128-bit trace id split in two."""
        c = b3.extract(headers(("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
                               ("x-b3-spanid", "a2fb4a1d1a96d312"),
                               ("x-b3-parentspanid", "0020000000000001"),
                               ("x-b3-sampled", "1")))
        self.assertEqual((c.traceIdHigh, c.traceId, c.spanId, c.parentId, c.sampled, c.single),
                         (0x463ac35c9f6413ad, 0x48485a3953bb6124, 0xa2fb4a1d1a96d312, 0x20000000000001,
                          True, False))

    def test_single(self):
        """b3: traceid-spanid-sampled-parentid."""
        c = b3.extract(headers(("b3", "80f198ee56343ba8-e457b5a2e4d86bd1-0-05e3ac9a4f6e3b90")))
        self.assertEqual((c.traceId, c.spanId, c.parentId, c.sampled, c.single),
                         (0x80f198ee56343ba8, 0xe457b5a2e4d86bd1, 0x05e3ac9a4f6e3b90, False,
                          True))

    def test_samplingOnly(self):
        """A lone sampling state starts a new trace with that decision."""
        self.assertEqual(b3.extract(headers(("x-b3-sampled", "0"))).sampled, False)
        self.assertEqual(b3.extract(headers(("b3", "d"))).sampled, True)
        self.assertEqual(b3.extract(headers(("x-b3-flags", "1"))).sampled, True)
        self.assertIsNone(b3.extract(headers()).traceId)

    def test_malformed(self):
        """A context that cannot be read is an error (no span, as Envoy)."""
        for pairs in ((("x-b3-traceid", "xyz"), ("x-b3-spanid", "1")),
                      (("b3", "a-b-c-d-e"),),
                      (("x-b3-traceid", "0" * 16), ("x-b3-spanid", "1"),
                       ("x-b3-sampled", "maybe"))):
            self.assertRaises(b3.B3Error, b3.extract, headers(*pairs))


class InjectTests(SynchronousTestCase):

    def test_multiReplacesAndAppends(self):
        """Envoy's injected headers replace the request's and come last."""
        h = headers(("x-b3-spanid", "1"), ("accept", "*/*"))
        b3.inject(h, 0, 0xabc, 0xdef, 0x123, True, False)
        self.assertEqual(list(h.items()), [
            (b"accept", b"*/*"), (b"x-b3-traceid", b"0000000000000abc"),
            (b"x-b3-spanid", b"0000000000000def"), (b"x-b3-parentspanid", b"0000000000000123"),
            (b"x-b3-sampled", b"1")])

    def test_single(self):
        """A context that came in b3 leaves in b3, with 128-bit trace ids."""
        h = headers()
        b3.inject(h, 1, 2, 3, None, False, True)
        self.assertEqual(h.get(b"b3"), b"00000000000000010000000000000002-0000000000000003-0")
