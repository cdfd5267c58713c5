"""
Tests for L{txenvoy.stats.matcher}: C{stats_config.stats_matcher} leaves
the stats it rejects out of every snapshot, as Envoy never creates them.
"""

from google.protobuf import json_format
from twisted.trial.unittest import SynchronousTestCase

from envoy.config.metrics.v3 import stats_pb2
from txenvoy.config.errors import ConfigError
from txenvoy.stats.matcher import compileStatsMatcher
from txenvoy.stats.store import StatsStore


def matcher(d):
    return compileStatsMatcher(json_format.ParseDict(d, stats_pb2.StatsMatcher()),
                               "stats_config.stats_matcher")


class StatsMatcherTests(SynchronousTestCase):

    def snapshot(self, m):
        store = StatsStore()
        shard = store.shard("main_thread")
        shard.counter("cluster.c1.upstream_rq_total").inc()
        shard.gauge("server.live").set(1)
        shard.histogram("http.ingress.downstream_rq_time").recordValue(1)
        store.matcher = m
        s = store.snapshot()
        return sorted(list(s.counters) + list(s.gauges) + list(s.histograms))

    def test_exclusionList(self):
        self.assertEqual(self.snapshot(matcher({"exclusion_list": {"patterns": [
            {"prefix": "cluster."}, {"safe_regex": {"regex": ".*_time$"}}]}})),
            ["server.live"])

    def test_inclusionList(self):
        self.assertEqual(self.snapshot(matcher({"inclusion_list": {"patterns": [
            {"suffix": "_total"}]}})), ["cluster.c1.upstream_rq_total"])

    def test_rejectAll(self):
        self.assertEqual(self.snapshot(matcher({"reject_all": True})), [])
        self.assertIsNone(matcher({"reject_all": False}))
        self.assertIsNone(matcher({}))

    def test_emptyList(self):
        e = self.assertRaises(ConfigError, matcher, {"inclusion_list": {}})
        self.assertIn("stats_config.stats_matcher.inclusion_list.patterns", str(e))
