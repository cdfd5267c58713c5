"""
Tests for L{txenvoy.stats.format}.

Expected outputs are Envoy 1.40's, copied from its admin (/stats,
/stats?format=json, /stats?histogram_buckets=detailed, /stats/prometheus).
"""

import json

from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.stats.format import (
    StatsParams,
    StatsParamsError,
    bucketWidth,
    cumulativeCounts,
    formatDouble,
    jsonNumber,
    jsonStats,
    prometheusStats,
    quantiles,
    sanitizePrometheusName,
    textStats,
)
from txenvoy.stats.store import StatsStore


def storeWith(counters=(), gauges=(), histograms=()):
    store = StatsStore()
    shard = store.shard("main_thread")
    for name, value in counters:
        shard.counter(name).inc(value)
    for name, value in gauges:
        shard.gauge(name).set(value)
    for name, values in histograms:
        h = shard.histogram(name)
        for v in values:
            h.recordValue(v)
    return store


def record(spec):
    """C{"2,0.1:2, 4,0.1:1"} (Envoy's detailed buckets) -> recorded values."""
    values = []
    for part in spec.split(", "):
        left, count = part.split(":")
        values += [float(left.split(",")[0])] * int(count)
    return values


# (Envoy's histogram_buckets=detailed "totals", its quantile summary)
ENVOY_SUMMARIES = [
    ("2,0.1:2, 4,0.1:1",
     "P0(nan,2.033333333333333) P25(nan,2.033333333333333) P50(nan,2.066666666666667) "
     "P75(nan,4.05) P90(nan,4.05) P95(nan,4.05) P99(nan,4.05) P99.5(nan,4.05) "
     "P99.9(nan,4.05) P100(nan,4.05)"),
    ("7,0.1:1, 9,0.1:1, 11,1:1",
     "P0(nan,7.05) P25(nan,7.05) P50(nan,9.05) P75(nan,11.5) P90(nan,11.5) P95(nan,11.5) "
     "P99(nan,11.5) P99.5(nan,11.5) P99.9(nan,11.5) P100(nan,11.5)"),
    ("2,0.1:2, 3,0.1:4, 4,0.1:1, 5,0.1:1, 9,0.1:1",
     "P0(nan,2.033333333333333) P25(nan,3.02) P50(nan,3.06) P75(nan,4.05) P90(nan,9.05) "
     "P95(nan,9.05) P99(nan,9.05) P99.5(nan,9.05) P99.9(nan,9.05) P100(nan,9.05)"),
    ("0,0:1, 2,0.1:2, 3,0.1:3",
     "P0(nan,0) P25(nan,2.033333333333333) P50(nan,2.066666666666667) P75(nan,3.05) "
     "P90(nan,3.075) P95(nan,3.075) P99(nan,3.075) P99.5(nan,3.075) P99.9(nan,3.075) "
     "P100(nan,3.075)"),
    ("1000,100:1, 5000,100:1, 1,0.1:2",
     "P0(nan,1.0333333333333334) P25(nan,1.0333333333333334) P50(nan,1.0666666666666667) "
     "P75(nan,1050) P90(nan,5050) P95(nan,5050) P99(nan,5050) P99.5(nan,5050) "
     "P99.9(nan,5050) P100(nan,5050)"),
]


class NumberTests(SynchronousTestCase):

    def test_formatDouble(self):
        """fmt's {}: whole numbers without .0, shortest round trip, nan."""
        self.assertEqual(formatDouble(0.0), "0")
        self.assertEqual(formatDouble(5050.0), "5050")
        self.assertEqual(formatDouble(1.0285714285714285), "1.0285714285714285")
        self.assertEqual(formatDouble(None), "nan")
        self.assertEqual(formatDouble(float("nan")), "nan")

    def test_jsonNumber(self):
        """std::to_chars: fixed or exponent, whichever is shorter."""
        self.assertEqual(jsonNumber(300000.0), "3e+05")
        self.assertEqual(jsonNumber(1800000.0), "1800000")
        self.assertEqual(jsonNumber(60000.0), "60000")
        self.assertEqual(jsonNumber(0.5), "0.5")
        self.assertEqual(jsonNumber(0.0), "0")
        self.assertEqual(jsonNumber(99.5), "99.5")
        self.assertEqual(jsonNumber(1.05), "1.05")
        self.assertEqual(jsonNumber(None), "null")

    def test_bucketWidth(self):
        self.assertEqual(bucketWidth(1.0), 0.1)
        self.assertEqual(bucketWidth(11), 1)
        self.assertEqual(bucketWidth(1000), 100)
        self.assertEqual(bucketWidth(0.56), 0.01)
        self.assertEqual(bucketWidth(0), 0)


class QuantileTests(SynchronousTestCase):

    def test_envoyQuantiles(self):
        """
        Envoy's circllhist quantiles: samples spread evenly inside their
        bucket, the sample of rank ceil(q*n) taken.
        """
        for spec, expected in ENVOY_SUMMARIES:
            store = storeWith(histograms=[("h", record(spec))])
            self.assertEqual(textStats(store.snapshot()), "h: %s\n" % (expected,), spec)

    def test_intervalAndCumulative(self):
        """
        From Envoy's sample: 12 values of 1 in the last interval, 26 in all
        (listener.admin.connections_accepted_per_socket_event).
        """
        store = storeWith(histograms=[("h", [1] * 26)])
        text = textStats(store.snapshot(), intervals={"h": {1.0: 12}})
        self.assertEqual(text, (
            "h: P0(1.0076923076923077,1.0037037037037038) "
            "P25(1.023076923076923,1.025925925925926) "
            "P50(1.0461538461538462,1.048148148148148) "
            "P75(1.0692307692307692,1.074074074074074) "
            "P90(1.0846153846153845,1.0888888888888888) "
            "P95(1.0923076923076924,1.0925925925925926) "
            "P99(1.0923076923076924,1.0962962962962963) "
            "P99.5(1.0923076923076924,1.0962962962962963) "
            "P99.9(1.0923076923076924,1.0962962962962963) "
            "P100(1.0923076923076924,1.0962962962962963)\n"))

    def test_zerosAndSpread(self):
        """From Envoy's sample: http.admin.downstream_rq_time."""
        store = storeWith(histograms=[("h", [0] * 16 + [1] * 6 + [3, 5])])
        text = textStats(store.snapshot(), intervals={"h": {0: 9, 1.0: 1}})
        self.assertEqual(text, (
            "h: P0(0,0) P25(0,0) P50(0,0) P75(0,1.0285714285714285) "
            "P90(0,1.0857142857142856) P95(1.05,3.05) P99(1.05,5.05) P99.5(1.05,5.05) "
            "P99.9(1.05,5.05) P100(1.05,5.05)\n"))

    def test_noValues(self):
        self.assertEqual(quantiles({}), [None] * 10)
        store = storeWith()
        store.shard("w").histogram("h")
        self.assertEqual(textStats(store.snapshot()), "h: No recorded values\n")

    def test_cumulativeCounts(self):
        """A value counts under every bound at or above its bucket's start."""
        self.assertEqual(cumulativeCounts({0: 3, 1.0: 1, 44: 2}, (0.5, 1, 50)), [3, 4, 6])


class TextTests(SynchronousTestCase):

    def setUp(self):
        self.store = storeWith(
            counters=[("cluster.c1.upstream_rq_total", 10), ("a.never", 0)],
            gauges=[("server.live", 1)],
            histograms=[("cluster.c1.upstream_rq_time", [1, 44])])
        self.store.shard("x").counter("z.unused")

    def test_order(self):
        """Counters and gauges sorted together by name, then histograms."""
        self.assertEqual(textStats(self.store.snapshot()), (
            "a.never: 0\n"
            "cluster.c1.upstream_rq_total: 10\n"
            "server.live: 1\n"
            "z.unused: 0\n"
            "cluster.c1.upstream_rq_time: P0(nan,1.05) P25(nan,1.05) P50(nan,1.05) "
            "P75(nan,44.5) P90(nan,44.5) P95(nan,44.5) P99(nan,44.5) P99.5(nan,44.5) "
            "P99.9(nan,44.5) P100(nan,44.5)\n"))

    def test_usedOnly(self):
        """usedonly: stats written since start (inc(0) counts as written)."""
        text = textStats(self.store.snapshot(), StatsParams.fromQuery({"usedonly": ""}))
        self.assertNotIn("z.unused", text)
        self.assertIn("server.live: 1\n", text)

    def test_filterAndType(self):
        snap = self.store.snapshot()
        self.assertEqual(textStats(snap, StatsParams.fromQuery({"filter": "^server"})),
                         "server.live: 1\n")
        self.assertEqual(textStats(snap, StatsParams.fromQuery({"filter": "live"})),
                         "server.live: 1\n")
        self.assertEqual(
            textStats(snap, StatsParams.fromQuery({"filter": "c1", "invert_filter": ""})),
            "a.never: 0\nserver.live: 1\nz.unused: 0\n")
        self.assertEqual(textStats(snap, StatsParams.fromQuery({"type": "Gauges"})),
                         "server.live: 1\n")
        self.assertTrue(textStats(snap, StatsParams.fromQuery({"type": "Histograms"}))
                        .startswith("cluster.c1.upstream_rq_time: P0("))
        self.assertEqual(textStats(snap, StatsParams.fromQuery({"type": "TextReadouts"})), "")

    def test_paramErrors(self):
        """Envoy's 400 bodies."""
        e = self.assertRaises(StatsParamsError, StatsParams.fromQuery, {"type": "Bogus"})
        self.assertEqual(str(e), "invalid &type= param")
        e = self.assertRaises(StatsParamsError, StatsParams.fromQuery, {"format": "bogus"})
        self.assertEqual(str(e), "usage: /stats?format=(html|active-html|json|prometheus|text)\n\n")
        e = self.assertRaises(StatsParamsError, StatsParams.fromQuery,
                              {"histogram_buckets": "x"})
        self.assertEqual(str(e), "usage: /stats?histogram_buckets=(cumulative|disjoint|detailed"
                                 "|summary|prometheusnative)\n")
        e = self.assertRaises(StatsParamsError, StatsParams.fromQuery, {"filter": "(a"})
        self.assertEqual(str(e), "Invalid re2 regex: missing ): (a")
        e = self.assertRaises(StatsParamsError, StatsParams.fromQuery, {"filter": r"\pl"})
        self.assertEqual(str(e), "Invalid re2 regex: invalid character class range: \\pl")

    def test_filterIsRE2(self):
        """
        C{filter} is an RE2 pattern (Envoy 1.40 accepts C{\\pL} and
        C{a{1000}} there, with no program-size limit).
        """
        self.assertTrue(StatsParams.fromQuery({"filter": r"^\pL+\."}).shows("server.live", True))
        self.assertTrue(StatsParams.fromQuery({"filter": "a{1000}"}).filter is not None)
        inverted = StatsParams.fromQuery({"filter": "^server", "invert_filter": ""})
        self.assertFalse(inverted.shows("server.live", True))
        self.assertTrue(inverted.shows("http.x", True))

    def test_cumulativeBuckets(self):
        """histogram_buckets=cumulative: B<bound>(interval,cumulative), bounds as %g."""
        store = storeWith(histograms=[("h", [0, 0, 1, 7])])
        text = textStats(store.snapshot(), StatsParams.fromQuery(
            {"histogram_buckets": "cumulative"}), intervals={"h": {1.0: 1}})
        self.assertEqual(text, (
            "h: B0.5(0,2) B1(1,3) B5(1,3) B10(1,4) B25(1,4) B50(1,4) B100(1,4) B250(1,4) "
            "B500(1,4) B1000(1,4) B2500(1,4) B5000(1,4) B10000(1,4) B30000(1,4) "
            "B60000(1,4) B300000(1,4) B600000(1,4) B1.8e+06(1,4) B3.6e+06(1,4)\n"))
        text = textStats(store.snapshot(), StatsParams.fromQuery(
            {"histogram_buckets": "disjoint"}))
        self.assertTrue(text.startswith("h: B0.5(0,2) B1(0,1) B5(0,0) B10(0,1) B25(0,0)"))

    def test_detailed(self):
        """histogram_buckets=detailed, in Envoy's layout."""
        store = storeWith(histograms=[("h", [2, 2, 4])])
        store.shard("w").histogram("empty")
        text = textStats(store.snapshot(), StatsParams.fromQuery(
            {"histogram_buckets": "detailed"}), intervals={"h": {2.0: 2, 4.0: 1}})
        self.assertEqual(text, (
            "empty: No recorded values\n"
            "h:\n"
            "  totals=2,0.1:2, 4,0.1:1\n"
            "  intervals=2,0.1:2, 4,0.1:1\n"
            "  summary=P0(2.033333333333333,2.033333333333333) "
            "P25(2.033333333333333,2.033333333333333) P50(2.066666666666667,2.066666666666667) "
            "P75(4.05,4.05) P90(4.05,4.05) P95(4.05,4.05) P99(4.05,4.05) P99.5(4.05,4.05) "
            "P99.9(4.05,4.05) P100(4.05,4.05)\n"))


class JsonTests(SynchronousTestCase):

    def test_exact(self):
        """Compact, no trailing newline; interval null before any flush."""
        store = storeWith(counters=[("b", 2)], gauges=[("a", 1)],
                          histograms=[("h", [40])])
        store.shard("w").histogram("none")
        values = ",".join(['{"cumulative":40.5,"interval":null}'] * 10)
        nulls = ",".join(['{"cumulative":null,"interval":null}'] * 10)
        self.assertEqual(jsonStats(store.snapshot()), (
            '{"stats":[{"name":"a","value":1},{"name":"b","value":2},'
            '{"histograms":{"supported_quantiles":[0,25,50,75,90,95,99,99.5,99.9,100],'
            '"computed_quantiles":[{"name":"h","values":[%s]},{"name":"none","values":[%s]}]}}]}'
            % (values, nulls)))

    def test_noHistograms(self):
        """No histograms selected: no histograms element (Envoy: {"stats":[]})."""
        store = storeWith(histograms=[("h", [1])])
        self.assertEqual(jsonStats(store.snapshot(), StatsParams.fromQuery({"filter": "x"})),
                         '{"stats":[]}')

    def test_interval(self):
        store = storeWith(histograms=[("h", [1, 2])])
        data = json.loads(jsonStats(store.snapshot(), intervals={"h": {2.0: 1}}))
        values = data["stats"][0]["histograms"]["computed_quantiles"][0]["values"]
        self.assertEqual(values[0], {"cumulative": 1.05, "interval": 2.05})

    def test_buckets(self):
        """histogram_buckets=cumulative in JSON: bounds printed as to_chars does."""
        store = storeWith(histograms=[("h", [1])])
        text = jsonStats(store.snapshot(), StatsParams.fromQuery(
            {"histogram_buckets": "cumulative"}))
        self.assertTrue(text.startswith(
            '{"stats":[{"histograms":[{"name":"h","buckets":['
            '{"upper_bound":0.5,"interval":0,"cumulative":0},'
            '{"upper_bound":1,"interval":0,"cumulative":1},'))
        self.assertIn('{"upper_bound":3e+05,"interval":0,"cumulative":1}', text)
        self.assertIn('{"upper_bound":1800000,"interval":0,"cumulative":1}', text)


# Real Envoy 1.40 /stats/prometheus lines for these stats.
ENVOY_COUNTERS = [
    ("cluster.c1.upstream_rq_200", 3), ("cluster.c1.upstream_rq_404", 3),
    ("cluster.c1.upstream_rq_total", 7), ("cluster.c2.upstream_rq_total", 0),
    ("http.admin.downstream_rq_1xx", 0), ("http.admin.downstream_rq_2xx", 1),
    ("http.admin.downstream_rq_3xx", 0), ("http.admin.downstream_rq_4xx", 0),
    ("http.admin.downstream_rq_5xx", 0), ("http.ingress_http.downstream_rq_1xx", 0),
    ("http.ingress_http.downstream_rq_2xx", 3), ("http.ingress_http.downstream_rq_3xx", 0),
    ("http.ingress_http.downstream_rq_4xx", 3), ("http.ingress_http.downstream_rq_5xx", 0),
    ("listener.127.0.0.1_10095.ssl.ciphers.TLS_AES_256_GCM_SHA384", 1),
    ("listener.127.0.0.1_10095.ssl.versions.TLSv1.3", 1),
    ("listener.127.0.0.1_10095.worker_0.downstream_cx_total", 0),
    ("listener.127.0.0.1_10095.worker_1.downstream_cx_total", 1),
    ("listener.127.0.0.1_10098.http.ingress_http.downstream_rq_1xx", 0),
    ("listener.127.0.0.1_10098.http.ingress_http.downstream_rq_2xx", 3),
    ("listener.127.0.0.1_10098.http.ingress_http.downstream_rq_3xx", 0),
    ("listener.127.0.0.1_10098.http.ingress_http.downstream_rq_4xx", 3),
    ("listener.127.0.0.1_10098.http.ingress_http.downstream_rq_5xx", 0),
    ("listener.127.0.0.1_10098.worker_0.downstream_cx_total", 4),
    ("listener.127.0.0.1_10098.worker_1.downstream_cx_total", 2),
    ("listener.admin.downstream_cx_total", 2), ("server.worker_0.watchdog_miss", 0),
    ("server.worker_1.watchdog_miss", 0), ("tcp.tls_tcp.downstream_cx_total", 1),
]
ENVOY_GAUGES = [
    ("cluster.c1.membership_healthy", 1), ("cluster.c2.membership_healthy", 0),
    ("listener.127.0.0.1_10095.ssl.certificate.unnamed_cert_e3b0c442."
     "expiration_unix_time_seconds", 2111001048),
    ("server.live", 1),
]
ENVOY_PROMETHEUS = (
    '# TYPE envoy_cluster_upstream_rq counter\n'
    'envoy_cluster_upstream_rq{envoy_response_code="200",envoy_cluster_name="c1"} 3\n'
    'envoy_cluster_upstream_rq{envoy_response_code="404",envoy_cluster_name="c1"} 3\n'
    '# TYPE envoy_cluster_upstream_rq_total counter\n'
    'envoy_cluster_upstream_rq_total{envoy_cluster_name="c1"} 7\n'
    'envoy_cluster_upstream_rq_total{envoy_cluster_name="c2"} 0\n'
    '# TYPE envoy_http_downstream_rq_xx counter\n'
    'envoy_http_downstream_rq_xx{envoy_response_code_class="1",envoy_http_conn_manager_prefix="admin"} 0\n'  # noqa: E501
    'envoy_http_downstream_rq_xx{envoy_response_code_class="2",envoy_http_conn_manager_prefix="admin"} 1\n'  # noqa: E501
    'envoy_http_downstream_rq_xx{envoy_response_code_class="3",envoy_http_conn_manager_prefix="admin"} 0\n'  # noqa: E501
    'envoy_http_downstream_rq_xx{envoy_response_code_class="4",envoy_http_conn_manager_prefix="admin"} 0\n'  # noqa: E501
    'envoy_http_downstream_rq_xx{envoy_response_code_class="5",envoy_http_conn_manager_prefix="admin"} 0\n'  # noqa: E501
    'envoy_http_downstream_rq_xx{envoy_response_code_class="1",envoy_http_conn_manager_prefix="ingress_http"} 0\n'  # noqa: E501
    'envoy_http_downstream_rq_xx{envoy_response_code_class="2",envoy_http_conn_manager_prefix="ingress_http"} 3\n'  # noqa: E501
    'envoy_http_downstream_rq_xx{envoy_response_code_class="3",envoy_http_conn_manager_prefix="ingress_http"} 0\n'  # noqa: E501
    'envoy_http_downstream_rq_xx{envoy_response_code_class="4",envoy_http_conn_manager_prefix="ingress_http"} 3\n'  # noqa: E501
    'envoy_http_downstream_rq_xx{envoy_response_code_class="5",envoy_http_conn_manager_prefix="ingress_http"} 0\n'  # noqa: E501
    '# TYPE envoy_listener_admin_downstream_cx_total counter\n'
    'envoy_listener_admin_downstream_cx_total{} 2\n'
    '# TYPE envoy_listener_http_downstream_rq_xx counter\n'
    'envoy_listener_http_downstream_rq_xx{envoy_response_code_class="1",envoy_http_conn_manager_prefix="ingress_http",envoy_listener_address="127.0.0.1_10098"} 0\n'  # noqa: E501
    'envoy_listener_http_downstream_rq_xx{envoy_response_code_class="2",envoy_http_conn_manager_prefix="ingress_http",envoy_listener_address="127.0.0.1_10098"} 3\n'  # noqa: E501
    'envoy_listener_http_downstream_rq_xx{envoy_response_code_class="3",envoy_http_conn_manager_prefix="ingress_http",envoy_listener_address="127.0.0.1_10098"} 0\n'  # noqa: E501
    'envoy_listener_http_downstream_rq_xx{envoy_response_code_class="4",envoy_http_conn_manager_prefix="ingress_http",envoy_listener_address="127.0.0.1_10098"} 3\n'  # noqa: E501
    'envoy_listener_http_downstream_rq_xx{envoy_response_code_class="5",envoy_http_conn_manager_prefix="ingress_http",envoy_listener_address="127.0.0.1_10098"} 0\n'  # noqa: E501
    '# TYPE envoy_listener_ssl_ciphers counter\n'
    'envoy_listener_ssl_ciphers{envoy_ssl_cipher="TLS_AES_256_GCM_SHA384",envoy_listener_address="127.0.0.1_10095"} 1\n'  # noqa: E501
    '# TYPE envoy_listener_ssl_versions counter\n'
    'envoy_listener_ssl_versions{envoy_ssl_version="TLSv1.3",envoy_listener_address="127.0.0.1_10095"} 1\n'  # noqa: E501
    '# TYPE envoy_listener_worker_downstream_cx_total counter\n'
    'envoy_listener_worker_downstream_cx_total{envoy_worker_id="0",envoy_listener_address="127.0.0.1_10095"} 0\n'  # noqa: E501
    'envoy_listener_worker_downstream_cx_total{envoy_worker_id="1",envoy_listener_address="127.0.0.1_10095"} 1\n'  # noqa: E501
    'envoy_listener_worker_downstream_cx_total{envoy_worker_id="0",envoy_listener_address="127.0.0.1_10098"} 4\n'  # noqa: E501
    'envoy_listener_worker_downstream_cx_total{envoy_worker_id="1",envoy_listener_address="127.0.0.1_10098"} 2\n'  # noqa: E501
    '# TYPE envoy_server_worker_watchdog_miss counter\n'
    'envoy_server_worker_watchdog_miss{envoy_worker_id="0"} 0\n'
    'envoy_server_worker_watchdog_miss{envoy_worker_id="1"} 0\n'
    '# TYPE envoy_tcp_downstream_cx_total counter\n'
    'envoy_tcp_downstream_cx_total{envoy_tcp_prefix="tls_tcp"} 1\n'
    '# TYPE envoy_cluster_membership_healthy gauge\n'
    'envoy_cluster_membership_healthy{envoy_cluster_name="c1"} 1\n'
    'envoy_cluster_membership_healthy{envoy_cluster_name="c2"} 0\n'
    '# TYPE envoy_listener_ssl_certificate_expiration_unix_time_seconds gauge\n'
    'envoy_listener_ssl_certificate_expiration_unix_time_seconds{envoy_tls_certificate="unnamed_cert_e3b0c442",envoy_listener_address="127.0.0.1_10095"} 2111001048\n'  # noqa: E501
    '# TYPE envoy_server_live gauge\n'
    'envoy_server_live{} 1\n'
)


class PrometheusTests(SynchronousTestCase):

    def test_envoyOutput(self):
        """The same stats give Envoy 1.40's exact text: families, tags, order."""
        store = storeWith(counters=ENVOY_COUNTERS, gauges=ENVOY_GAUGES)
        self.assertEqual(prometheusStats(store.snapshot()), ENVOY_PROMETHEUS)

    def test_histogram(self):
        """Envoy's bucket bounds, +Inf, _sum (%.32g) and _count."""
        store = storeWith(histograms=[("cluster.c1.upstream_rq_time", [0, 0, 0, 1, 44, 53, 90]),
                                      ("server.initialization_time_ms", [11])])
        text = prometheusStats(store.snapshot())
        self.assertIn(
            '# TYPE envoy_cluster_upstream_rq_time histogram\n'
            'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="c1",le="0.5"} 3\n'
            'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="c1",le="1"} 4\n'
            'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="c1",le="5"} 4\n'
            'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="c1",le="10"} 4\n'
            'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="c1",le="25"} 4\n'
            'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="c1",le="50"} 5\n'
            'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="c1",le="100"} 7\n', text)
        self.assertIn(
            'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="c1",le="3600000"} 7\n'
            'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="c1",le="+Inf"} 7\n'
            'envoy_cluster_upstream_rq_time_sum{envoy_cluster_name="c1"} 188\n'
            'envoy_cluster_upstream_rq_time_count{envoy_cluster_name="c1"} 7\n', text)
        self.assertIn('envoy_server_initialization_time_ms_bucket{le="0.5"} 0\n', text)
        self.assertIn('envoy_server_initialization_time_ms_count{} 1\n', text)

    def test_parses(self):
        """prometheus_client reads the whole output without an error."""
        store = storeWith(counters=ENVOY_COUNTERS, gauges=ENVOY_GAUGES,
                          histograms=[("cluster.c1.upstream_rq_time", [1, 2, 3000]),
                                      ("http.admin.downstream_rq_time", [0.5, 7])])
        text = prometheusStats(store.snapshot())
        families = {f.name: f for f in text_string_to_metric_families(text)}
        self.assertEqual(families["envoy_cluster_upstream_rq"].type, "counter")
        self.assertEqual(families["envoy_server_live"].type, "gauge")
        hist = families["envoy_cluster_upstream_rq_time"]
        self.assertEqual(hist.type, "histogram")
        count = [s for s in hist.samples if s.name.endswith("_count")][0]
        self.assertEqual((count.labels, count.value), ({"envoy_cluster_name": "c1"}, 3))
        # prometheus_client names a counter family without its _total.
        worker = families["envoy_listener_worker_downstream_cx"].samples[0]
        self.assertEqual(worker.labels, {"envoy_worker_id": "0",
                                         "envoy_listener_address": "127.0.0.1_10095"})

    def test_usedOnlyAndFilter(self):
        store = storeWith(counters=[("a.b", 1)])
        store.shard("w").counter("a.unused")
        self.assertEqual(prometheusStats(store.snapshot(), StatsParams.fromQuery(
            {"usedonly": ""})), "# TYPE envoy_a_b counter\nenvoy_a_b{} 1\n")
        self.assertEqual(prometheusStats(store.snapshot(), StatsParams.fromQuery(
            {"filter": "unused"})), "# TYPE envoy_a_unused counter\nenvoy_a_unused{} 0\n")

    def test_sanitize(self):
        """Envoy's sanitizeName: anything but [a-zA-Z0-9_] becomes _."""
        self.assertEqual(sanitizePrometheusName("cluster.my-svc:x"), "cluster_my_svc_x")
        self.assertEqual(sanitizePrometheusName("1abc"), "_1abc")
        store = storeWith(counters=[('cluster.a"b\\c.upstream_rq_total', 1)])
        self.assertEqual(prometheusStats(store.snapshot()),
                         '# TYPE envoy_cluster_upstream_rq_total counter\n'
                         'envoy_cluster_upstream_rq_total{envoy_cluster_name="a\\"b\\\\c"} 1\n')

    def test_tokenOrder(self):
        """Families are ordered by name element, as Envoy's symbol table orders them."""
        store = storeWith(counters=[("a-b.x", 1), ("a.x", 1)])
        text = prometheusStats(store.snapshot())
        self.assertLess(text.index("envoy_a_x"), text.index("envoy_a_b_x"))
