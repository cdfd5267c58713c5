"""
Tests for L{txenvoy.extensions.stat_sinks.metrics_service}: the families
of a flush, and the stream.
"""

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.extensions.access_loggers.test_grpc_als import FakeCall
from txenvoy.extensions.stat_sinks.metrics_service import MAX_QUEUED, MetricsServiceSink
from txenvoy.interfaces import IStatsSink
from txenvoy.stats import metrics_service_protos as protos
from txenvoy.stats.store import StatsStore


class MetricsServiceSinkTests(SynchronousTestCase):

    def setUp(self):
        self.store = StatsStore()
        self.shard = self.store.shard("main_thread")
        self.calls = []

        def openCall(address):
            call = FakeCall()
            self.calls.append(call)
            return call

        self.openCall = openCall

    def sink(self, **kw):
        sink = MetricsServiceSink(lambda: ("127.0.0.1", 1), self.openCall, b"\n\x02n1",
                                  wallTime=lambda: 12.5, **kw)
        verifyObject(IStatsSink, sink)
        return sink

    def families(self, sink):
        return {(f.name, f.type): f for f in sink.message(
            self.store.snapshot(resetInterval=True)).envoy_metrics}

    def test_families(self):
        """Used stats only; counters, gauges, a summary and a histogram per histogram."""
        self.shard.counter("cluster.c1.upstream_rq_total").inc(3)
        self.shard.counter("unused")
        self.shard.gauge("server.live").set(1)
        self.shard.histogram("cluster.c1.upstream_rq_time").recordValue(7)
        self.shard.histogram("cluster.c1.upstream_rq_time").intervalBuckets = {7: 1}
        families = self.families(self.sink())
        self.assertEqual(sorted(families), [
            ("cluster.c1.upstream_rq_time", protos.SUMMARY),
            ("cluster.c1.upstream_rq_time", protos.HISTOGRAM),
            ("cluster.c1.upstream_rq_total", protos.COUNTER),
            ("server.live", protos.GAUGE)])
        counter = families["cluster.c1.upstream_rq_total", protos.COUNTER].metric[0]
        self.assertEqual((counter.counter.value, counter.timestamp_ms), (3, 12500))
        self.assertEqual(len(families["cluster.c1.upstream_rq_time", protos.HISTOGRAM]
                             .metric[0].histogram.bucket), 19)

    def test_deltasAndLabels(self):
        """report_counters_as_deltas, emit_tags_as_labels, histogram_emit_mode HISTOGRAM."""
        sink = self.sink(countersAsDeltas=True, tagsAsLabels=True, histogramMode=2)
        c = self.shard.counter("cluster.c1.upstream_rq_total")
        c.inc(5)
        self.families(sink)
        c.inc(2)
        self.shard.histogram("cluster.c1.upstream_rq_time").recordValue(1)
        families = self.families(sink)
        metric = families["cluster.upstream_rq_total", protos.COUNTER].metric[0]
        self.assertEqual((metric.counter.value, [(l.name, l.value) for l in metric.label]),
                         (2, [("envoy.cluster_name", "c1")]))
        self.assertNotIn(("cluster.upstream_rq_time", protos.SUMMARY), families)

    def test_stream(self):
        """One stream, identifier first; a backlog costs the flush, counted."""
        sink = self.sink()
        snapshot = self.store.snapshot()
        sink.flush(snapshot)
        sink.flush(snapshot)
        [call] = self.calls
        self.assertEqual([m.HasField("identifier") for m in call.sent], [True, False])
        call.backlog = MAX_QUEUED
        sink.flush(snapshot)
        self.assertEqual((len(call.sent), sink.dropped), (2, 1))
        call.onDone(14, "gone", None)
        sink.flush(snapshot)
        self.assertTrue(self.calls[1].sent[0].HasField("identifier"))
