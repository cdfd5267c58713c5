"""
Tests for L{txenvoy.stats.histogram_settings}: C{histogram_bucket_settings}
gives each histogram its bucket bounds, as Envoy's C{HistogramSettingsImpl}.
"""

from google.protobuf import json_format
from twisted.trial.unittest import SynchronousTestCase

from envoy.config.metrics.v3 import stats_pb2
from txenvoy.config.errors import ConfigError
from txenvoy.stats.format import StatsParams, jsonStats, prometheusStats, textStats
from txenvoy.stats.histogram_settings import DEFAULT_BUCKETS, compileHistogramSettings
from txenvoy.stats.store import StatsStore

PATH = "stats_config.histogram_bucket_settings"


def settings(*items):
    config = json_format.ParseDict({"histogram_bucket_settings": list(items)},
                                   stats_pb2.StatsConfig())
    return compileHistogramSettings(config.histogram_bucket_settings, PATH)


class HistogramSettingsTests(SynchronousTestCase):

    def test_firstMatchSorted(self):
        """The first setting that matches gives its bounds, sorted; others the defaults."""
        s = settings({"match": {"prefix": "cluster.c1."}, "buckets": [10, 1]},
                     {"match": {"prefix": "cluster."}, "buckets": [5]})
        self.assertEqual(s.bucketsFor("cluster.c1.upstream_rq_time"), (1, 10))
        self.assertEqual(s.bucketsFor("cluster.c2.upstream_rq_time"), (5,))
        self.assertEqual(s.bucketsFor("http.x.downstream_rq_time"), DEFAULT_BUCKETS)

    def test_none(self):
        """No settings: nothing to compile."""
        self.assertIsNone(settings())

    def test_refused(self):
        """What Envoy's validation refuses, with the field path."""
        for item, message in (
                ({"match": {"prefix": "a"}}, "[0].buckets: value must contain at least 1"),
                ({"match": {"prefix": "a"}, "buckets": [1, 1]}, "[0].buckets: repeated value"),
                ({"match": {"prefix": "a"}, "buckets": [0]}, "[0].buckets[0]: value must be "
                                                             "greater than 0"),
                ({"buckets": [1]}, "[0].match: value is required")):
            e = self.assertRaises(ConfigError, settings, item)
            self.assertIn(PATH + message, str(e))

    def test_everywhereBucketsShow(self):
        """/stats bucket modes, JSON and Prometheus all use a histogram's own bounds."""
        store = StatsStore()
        store.shard("main_thread").histogram("cluster.c1.upstream_rq_time").recordValue(3)
        store.histogramSettings = settings({"match": {"prefix": "cluster."},
                                            "buckets": [2, 4]})
        snapshot = store.snapshot()
        params = StatsParams(histogramBuckets="cumulative")
        self.assertEqual(textStats(snapshot, params),
                         "cluster.c1.upstream_rq_time: B2(0,0) B4(0,1)\n")
        self.assertIn('"buckets":[{"upper_bound":2,"interval":0,"cumulative":0},'
                      '{"upper_bound":4,"interval":0,"cumulative":1}]',
                      jsonStats(snapshot, params))
        self.assertIn('envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="c1",le="4"} 1\n'
                      'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="c1",'
                      'le="+Inf"} 1\n', prometheusStats(snapshot))
