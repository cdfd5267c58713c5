"""
Tests for L{txenvoy.extensions.stat_sinks.open_telemetry}: OTLP metrics
as Envoy's sink builds them, exported without piling up.
"""

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.tracing.test_reporter import RecordingCollector
from txenvoy.extensions.stat_sinks.open_telemetry import OpenTelemetryStatsSink
from txenvoy.interfaces import IStatsSink
from txenvoy.stats.store import StatsStore


class OpenTelemetryStatsSinkTests(SynchronousTestCase):

    def setUp(self):
        self.store = StatsStore()
        self.shard = self.store.shard("main_thread")
        self.collector = RecordingCollector()
        self.now = [100.0]

    def sink(self, **kw):
        sink = OpenTelemetryStatsSink(self.collector, wallTime=lambda: self.now[0], **kw)
        verifyObject(IStatsSink, sink)
        return sink

    def metrics(self, sink):
        request = sink.request(self.store.snapshot(resetInterval=True))
        return {m.name: m for m in request.resource_metrics[0].scope_metrics[0].metrics}

    def test_asEnvoy(self):
        """
        Gauges, cumulative monotonic sums and histograms with Envoy's
        bounds, under tag-extracted names with sorted tag attributes.
        """
        sink = self.sink()
        self.shard.counter("http.ingress.downstream_rq_2xx").inc(3)
        self.shard.gauge("server.live").set(1)
        self.shard.histogram("http.ingress.downstream_rq_time").recordValue(7)
        self.now[0] = 102.5
        m = self.metrics(sink)
        xx = m["http.downstream_rq_xx"]
        [point] = xx.sum.data_points
        self.assertEqual((xx.sum.is_monotonic, xx.sum.aggregation_temporality, point.as_int,
                          point.start_time_unix_nano, point.time_unix_nano),
                         (True, 2, 3, 100000000000, 102500000000))
        self.assertEqual([(a.key, a.value.string_value) for a in point.attributes],
                         [("envoy.http_conn_manager_prefix", "ingress"),
                          ("envoy.response_code_class", "2")])
        self.assertEqual(m["server.live"].gauge.data_points[0].as_int, 1)
        [h] = m["http.downstream_rq_time"].histogram.data_points
        self.assertEqual((h.count, len(h.explicit_bounds), list(h.bucket_counts)[:4]),
                         (1, 19, [0, 0, 0, 1]))

    def test_histogramBucketSettings(self):
        """stats_config.histogram_bucket_settings: the histogram's own bounds are sent."""
        from google.protobuf import json_format

        from envoy.config.metrics.v3 import stats_pb2
        from txenvoy.stats.histogram_settings import compileHistogramSettings

        config = json_format.ParseDict({"histogram_bucket_settings": [
            {"match": {"prefix": "http."}, "buckets": [5, 50]}]}, stats_pb2.StatsConfig())
        self.store.histogramSettings = compileHistogramSettings(
            config.histogram_bucket_settings, "stats_config.histogram_bucket_settings")
        sink = self.sink()
        self.shard.histogram("http.ingress.downstream_rq_time").recordValue(7)
        [h] = self.metrics(sink)["http.downstream_rq_time"].histogram.data_points
        self.assertEqual((list(h.explicit_bounds), list(h.bucket_counts)), ([5.0, 50.0], [0, 1, 0]))

    def test_deltasAndNames(self):
        """report_counters_as_deltas, use_tag_extracted_name false, prefix."""
        sink = self.sink(countersAsDeltas=True, tagExtractedName=False, prefix="p")
        c = self.shard.counter("cluster.c1.upstream_rq_total")
        c.inc(5)
        self.assertEqual(self.metrics(sink)["p.cluster.c1.upstream_rq_total"]
                         .sum.data_points[0].as_int, 5)
        c.inc(2)
        point = self.metrics(sink)["p.cluster.c1.upstream_rq_total"].sum
        self.assertEqual((point.data_points[0].as_int, point.aggregation_temporality), (2, 1))

    def test_oneExportInFlight(self):
        """A flush while the last export waits is dropped, not queued."""
        sink = self.sink()
        self.shard.gauge("server.live").set(1)
        sink.flush(self.store.snapshot())
        sink.flush(self.store.snapshot())
        self.assertEqual(len(self.collector.posts), 1)
        self.collector.posts[0][2].callback(200)
        sink.flush(self.store.snapshot())
        self.assertEqual(len(self.collector.posts), 2)
