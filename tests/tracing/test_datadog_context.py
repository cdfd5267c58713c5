"""
Tests for L{txenvoy.tracing.datadog_context}: Datadog and W3C headers read
and written as Envoy's Datadog tracer does.
"""

from twisted.trial.unittest import SynchronousTestCase

from txenvoy.http.headers import HeaderMap
from txenvoy.tracing import datadog_context


def headers(*pairs):
    return HeaderMap([(n.encode(), v.encode()) for n, v in pairs])


class ExtractTests(SynchronousTestCase):

    def test_datadogHeaders(self):
        """The Datadog headers: decimal ids, priority, origin, only _dd.p.* tags."""
        context = datadog_context.extract(headers(
            ("x-datadog-trace-id", "12345"), ("x-datadog-parent-id", "678"),
            ("x-datadog-sampling-priority", "2"), ("x-datadog-origin", "synthetics"),
            ("x-datadog-tags", "_dd.p.dm=-4,other=x,_dd.p.tid=00000000000000ff")))
        self.assertEqual((context.traceId, context.parentId, context.priority, context.origin,
                          context.traceTags, context.traceIdHigh, context.w3cParentId),
                         (12345, 678, 2, "synthetics",
                          [("_dd.p.dm", "-4"), ("_dd.p.tid", "00000000000000ff")], 255, None))

    def test_datadogFirst(self):
        """With both styles, the Datadog headers win (Envoy's extraction order)."""
        context = datadog_context.extract(headers(
            ("traceparent", "00-%032x-%016x-01" % (7, 8)),
            ("x-datadog-trace-id", "1"), ("x-datadog-parent-id", "2")))
        self.assertEqual((context.traceId, context.parentId, context.priority), (1, 2, None))

    def test_malformed(self):
        """A context that cannot be read is none: Envoy starts a new trace."""
        for pairs in ([("x-datadog-trace-id", "x1")], [("x-datadog-trace-id", "0")],
                      [("traceparent", "00-zz-01")],
                      [("traceparent", "00-%s-%016x-01" % ("0" * 32, 8))]):
            self.assertIsNone(datadog_context.extract(headers(*pairs)))

    def test_w3c(self):
        """
        traceparent and the dd tracestate entry: the upper half becomes
        _dd.p.tid (after the t.* tags), p: the _dd.parent_id, other vendors
        are kept.
        """
        context = datadog_context.extract(headers(
            ("traceparent", "00-463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-01"),
            ("tracestate", "dd=s:2;p:00000000000004d2;o:rum;t.dm:-4,vendor=v1")))
        self.assertEqual((context.traceIdHigh, context.traceId, context.parentId,
                          context.priority, context.origin, context.traceTags,
                          context.w3cParentId, context.otherTraceState),
                         (0x463ac35c9f6413ad, 0x48485a3953bb6124, 0xa2fb4a1d1a96d312, 2, "rum",
                          [("_dd.p.dm", "-4"), ("_dd.p.tid", "463ac35c9f6413ad")],
                          "00000000000004d2", "vendor=v1"))

    def test_w3cFlagWins(self):
        """A sampled flag that disagrees with s: gives AUTO_KEEP / AUTO_DROP."""
        kept = datadog_context.extract(headers(
            ("traceparent", "00-%032x-%016x-01" % (7, 8)), ("tracestate", "dd=s:-1")))
        dropped = datadog_context.extract(headers(
            ("traceparent", "00-%032x-%016x-00" % (7, 8)), ("tracestate", "dd=s:2")))
        self.assertEqual((kept.priority, dropped.priority, kept.w3cParentId),
                         (datadog_context.AUTO_KEEP, datadog_context.AUTO_DROP,
                          "0000000000000000"))


class InjectTests(SynchronousTestCase):

    def test_inject(self):
        """Both styles, after the request's own headers, as Envoy writes them."""
        h = headers(("x-datadog-trace-id", "1"), ("a", "b"))
        datadog_context.inject(h, 0x6b16c99500000000, 12345, 0x11a1d2094b8fe001, 1,
                               "synthetics", [("_dd.p.tid", "6b16c99500000000"),
                                              ("_dd.p.dm", "-0")], "vendor=v1")
        self.assertEqual([(n.decode(), v.decode()) for n, v in h.items()], [
            ("a", "b"),
            ("x-datadog-trace-id", "12345"),
            ("x-datadog-parent-id", "%d" % (0x11a1d2094b8fe001,)),
            ("x-datadog-sampling-priority", "1"),
            ("x-datadog-origin", "synthetics"),
            ("x-datadog-tags", "_dd.p.tid=6b16c99500000000,_dd.p.dm=-0"),
            ("traceparent", "00-6b16c99500000000%016x-11a1d2094b8fe001-01" % (12345,)),
            ("tracestate", "dd=s:1;p:11a1d2094b8fe001;o:synthetics;t.dm:-0,vendor=v1"),
        ])

    def test_dropped(self):
        """A dropped trace: flags 00, no x-datadog-tags without trace tags."""
        h = headers()
        datadog_context.inject(h, 0, 999, 5, -1, None, [])
        self.assertEqual(h.get(b"traceparent"), b"00-%032x-%016x-00" % (999, 5))
        self.assertEqual(h.get(b"tracestate"), b"dd=s:-1;p:0000000000000005")
        self.assertIsNone(h.get(b"x-datadog-tags"))
