"""
Tests for L{txenvoy.admin.active_stats}: the C{active-html} page and the
JSON it polls.
"""

import json

from twisted.trial.unittest import SynchronousTestCase

from txenvoy.admin.active_stats import activeStatsPage
from txenvoy.stats.format import StatsParams, jsonStats
from txenvoy.stats.store import StatsStore

#: The elements the page's script reads, as Envoy's page names them.
ELEMENT_IDS = ("param-1-stats-filter", "param-1-stats-type", "active-max-display-count",
               "active-update-interval")


class ActiveStatsPageTests(SynchronousTestCase):

    def test_page(self):
        """
        The page polls Envoy's URL, relative to where it was served, and
        has the fields its script reads, preset from the query.
        """
        page = activeStatsPage("rq_<time>", "Histograms")
        for elementId in ELEMENT_IDS:
            self.assertIn("id='%s'" % (elementId,), page)
        self.assertIn("'/stats?format=json&usedonly&histogram_buckets=detailed&'", page)
        self.assertIn("value='rq_&lt;time&gt;'", page)
        self.assertIn("<option value='Histograms' selected>", page)
        self.assertIn("id='active-histograms'", page)

    def test_detailedJson(self):
        """
        histogram_buckets=detailed as Envoy 1.40 prints it for 1, 1, 47:
        every non-empty bucket (lower_bound, width, count) of the totals
        and the interval, then the percentiles.
        """
        store = StatsStore()
        h = store.shard("main_thread").histogram("cluster.origin.upstream_rq_time")
        for value in (1, 1, 47):
            h.recordValue(value)
        snapshot = store.snapshot()
        out = json.loads(jsonStats(snapshot, StatsParams(histogramBuckets="detailed"),
                                   snapshot.histograms))
        [detail] = out["stats"][0]["histograms"]["details"]
        self.assertEqual(out["stats"][0]["histograms"]["supported_percentiles"],
                         [0, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 100])
        self.assertEqual(detail["totals"], [{"lower_bound": 1, "width": 0.1, "count": 2},
                                            {"lower_bound": 47, "width": 1, "count": 1}])
        self.assertEqual(detail["intervals"], detail["totals"])
        self.assertEqual(detail["percentiles"][2],
                         {"cumulative": 1.0666666666666667, "interval": 1.0666666666666667})
