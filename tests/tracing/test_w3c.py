"""Tests for L{txenvoy.tracing.w3c}: W3C trace context as Envoy's OpenTelemetry tracer reads it."""

from twisted.trial.unittest import SynchronousTestCase

from txenvoy.http.headers import HeaderMap
from txenvoy.tracing import w3c

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"


def headers(*pairs):
    return HeaderMap([(n.encode(), v.encode()) for n, v in pairs])


class ExtractTests(SynchronousTestCase):

    def test_valid(self):
        """Trace id, parent id, sampled flag and tracestate."""
        p = w3c.extract(headers(("traceparent", "00-%s-%s-01" % (TRACE, SPAN)),
                                ("tracestate", "k=v")))
        self.assertEqual((p.traceId.hex(), p.spanId.hex(), p.sampled, p.traceState),
                         (TRACE, SPAN, True, "k=v"))
        self.assertFalse(w3c.extract(headers(("traceparent", "00-%s-%s-00" % (TRACE, SPAN))))
                         .sampled)

    def test_absent(self):
        self.assertIsNone(w3c.extract(headers()))

    def test_malformed(self):
        """Bad hex, lengths, all-zero ids and version ff are refused."""
        for value in ("00-zz-%s-01" % SPAN, "00-%s-%s-01" % ("0" * 32, SPAN),
                      "00-%s-%s-01" % (TRACE, "0" * 16), "ff-%s-%s-01" % (TRACE, SPAN),
                      "00-%s-%s-01-extra" % (TRACE, SPAN), "00-%s-%s" % (TRACE, SPAN)):
            self.assertRaises(w3c.TraceParentError, w3c.extract,
                              headers(("traceparent", value)))

    def test_futureVersionMayGrow(self):
        """A later version may carry more fields after the four it shares."""
        self.assertTrue(w3c.extract(headers(("traceparent", "01-%s-%s-01-more" % (TRACE, SPAN))))
                        .sampled)


class InjectTests(SynchronousTestCase):

    def test_replacesAndAppends(self):
        """Both headers are written last; tracestate empty when there is none."""
        h = headers(("traceparent", "x"), ("accept", "*/*"))
        w3c.inject(h, bytes.fromhex(TRACE), bytes.fromhex(SPAN), False, "")
        self.assertEqual(list(h.items()), [
            (b"accept", b"*/*"), (b"traceparent", ("00-%s-%s-00" % (TRACE, SPAN)).encode()),
            (b"tracestate", b"")])
