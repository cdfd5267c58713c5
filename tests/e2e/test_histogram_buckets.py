"""
C{stats_config.histogram_bucket_settings} and the admin pages a person
looks at, through real Envoy 1.40 and a real C{twistd envoy}: the same
YAML, the same requests; the bucket bounds (and counts) each histogram
shows in C{/stats?histogram_buckets=...}, C{/stats?format=json} and
C{/stats/prometheus}, the home page and C{/stats?format=active-html} with
the JSON it polls must match.
"""

import json
import re
import urllib.request

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.collectors import RecordingOrigin
from tests.e2e.configs import bootstrap, cluster, httpListener
from tests.e2e.harness import SharedFixture, freePort, startProxy
from tests.e2e.tracing_compare import ORIGIN_HOST

def bucketConfig(adminPort, port, originPort):
    """Two settings: the first match wins, bounds given out of order."""
    return bootstrap(
        [httpListener("edge", port, virtualHosts=ORIGIN_HOST)], [cluster("origin", originPort)],
        admin=adminPort, extra="""
        stats_flush_on_admin: true
        stats_config:
          histogram_bucket_settings:
          - match: {prefix: cluster.origin.upstream_rq_time}
            buckets: [1000, 0.5, 60000]
          - match: {safe_regex: {regex: '^(cluster|http)\\..*_ms$'}}
            buckets: [1, 2, 3, 100000]
          - match: {prefix: cluster.}
            buckets: [7]
        """)


#: The histograms compared (they exist in both once requests went through).
NAMES = ("cluster.origin.upstream_rq_time", "cluster.origin.upstream_cx_connect_ms",
         "http.edge.downstream_cx_length_ms", "http.edge.downstream_rq_time",
         "cluster.origin.upstream_cx_length_ms")


def _get(port, path):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as r:
        return r.read().decode()


def _boundsAndTotal(line, mode):
    """C{B<bound>(interval,cumulative) ...} -> the bounds and the values counted."""
    if line is None or not line.startswith("B"):
        return line
    pairs = re.findall(r"B([^(]+)\(\d+,(\d+)\)", line)
    counts = [int(c) for _, c in pairs]
    return [b for b, _ in pairs], (counts[-1] if mode == "cumulative" else sum(counts))


class _HistogramBucketChecks:
    """Real Envoy and txenvoy, the same histogram_bucket_settings."""

    @classmethod
    def startFixture(cls):
        cls.origin = RecordingOrigin()
        cls.proxies = []
        try:
            for real in (True, False):
                admin, port = freePort(), freePort()
                proc = startProxy(real, bucketConfig(admin, port, cls.origin.port), port, admin)
                cls.proxies.append((proc, admin, port))
            for _, admin, port in cls.proxies:
                for i in range(3):
                    # A new connection each time: the connection histograms
                    # get values too.
                    _get(port, "/r%d" % (i,))
        except BaseException:
            cls.stopFixture()
            raise

    @classmethod
    def stopFixture(cls):
        try:
            for proc, _, _ in cls.proxies:
                proc.stop()
        finally:
            cls.origin.stop()

    def both(self, path):
        return [_get(admin, path) for _, admin, _ in self.proxies]

    def test_textBuckets(self):
        """
        /stats?histogram_buckets=cumulative and disjoint: each histogram's
        own bounds, sorted, and the same counts (Envoy's
        HistogramSettingsImpl: the first matching setting).
        """
        for mode in ("cumulative", "disjoint"):
            shown = []
            for text in self.both("/stats?histogram_buckets=%s&filter=%s" % (
                    mode, "|".join(NAMES))):
                lines = dict(line.split(": ", 1) for line in text.splitlines())
                shown.append({n: _boundsAndTotal(lines.get(n), mode) for n in NAMES
                              if n != NAMES[1]})
            envoy, txenvoy = shown
            self.assertEqual(txenvoy, envoy)
            self.assertEqual(envoy[NAMES[0]], (["0.5", "1000", "60000"], 3))

    def test_jsonBuckets(self):
        """/stats?format=json&histogram_buckets=cumulative: the same upper_bound lists."""
        shown = []
        for text in self.both("/stats?format=json&histogram_buckets=cumulative&filter=%s"
                              % ("|".join(NAMES),)):
            [histograms] = [s["histograms"] for s in json.loads(text)["stats"]
                            if "histograms" in s]
            shown.append({h["name"]: [b["upper_bound"] for b in h["buckets"]]
                          for h in histograms})
        envoy, txenvoy = shown
        self.assertEqual(envoy[NAMES[0]], [0.5, 1000, 60000])
        self.assertEqual({n: txenvoy.get(n) for n in envoy}, envoy)

    def test_prometheusBuckets(self):
        """/stats/prometheus: each histogram family's le labels."""
        shown = []
        for text in self.both("/stats/prometheus"):
            les = {}
            for metric, le in re.findall(r'^(envoy_\w+)_bucket\{.*le="([^"]+)"\}', text,
                                         re.M):
                les.setdefault(metric, []).append(le)
            shown.append({m: v for m, v in les.items() if m in (
                "envoy_cluster_upstream_rq_time", "envoy_http_downstream_rq_time",
                "envoy_cluster_upstream_cx_length_ms")})
        envoy, txenvoy = shown
        self.assertEqual(envoy["envoy_cluster_upstream_rq_time"],
                         ["0.5", "1000", "60000", "+Inf"])
        self.assertEqual(txenvoy, envoy)


_HOME_SHAPE = re.compile(r"<form action='[^']*' method='[a-z]*' id='[^']*'|<a href='[^']*'"
                         r"|name='[^']*' id='[^']*'|form='[^']*'|<tr[^>]*>")


class _AdminPagesChecks:
    """
    The pages a person looks at, from real Envoy and txenvoy: the home
    page, the active-html page and the JSON that page polls.
    """

    def test_homePage(self):
        """
        /: the same commands, links, forms and parameter fields (ids,
        form bindings), rows shaded alike, as Envoy's home page.
        """
        envoy, txenvoy = [_HOME_SHAPE.findall(page) for page in self.both("/")]
        self.assertEqual(txenvoy, envoy)

    def test_activeHtml(self):
        """
        /stats?format=active-html: an HTML page with the fields Envoy's
        page reads and the URL it polls.
        """
        for page in self.both("/stats?format=active-html"):
            self.assertTrue(page.startswith("<!DOCTYPE html>"))
            for elementId in ("param-1-stats-filter", "param-1-stats-type",
                              "active-max-display-count", "active-update-interval"):
                self.assertIn("id='%s'" % (elementId,), page)
            self.assertIn("/stats?format=json&usedonly&histogram_buckets=detailed&", page)

    def test_polledJson(self):
        """
        What the active page polls: the same scalars and, for each
        histogram, the same keys, percentiles and number of values.
        """
        shown = []
        for text in self.both("/stats?format=json&usedonly&histogram_buckets=detailed"
                              "&filter=upstream_rq_time|downstream_rq_total&type=All"):
            stats = json.loads(text)["stats"]
            scalars = {s["name"]: s["value"] for s in stats if "value" in s}
            [histograms] = [s["histograms"] for s in stats if "histograms" in s]
            details = {d["name"]: (sorted(d), len(d["percentiles"]),
                                   sum(b["count"] for b in d["totals"]))
                       for d in histograms["details"]}
            shown.append((scalars, histograms["supported_percentiles"], details))
        envoy, txenvoy = shown
        self.assertEqual(envoy[2]["cluster.origin.upstream_rq_time"],
                         (["intervals", "name", "percentiles", "totals"], 10, 3))
        self.assertEqual(txenvoy, envoy)


class AdminStatsComparisonTests(_HistogramBucketChecks, _AdminPagesChecks, SharedFixture,
                                SynchronousTestCase):
    """One real Envoy and one txenvoy, the same YAML and requests, for every check above."""

    maxDiff = None
