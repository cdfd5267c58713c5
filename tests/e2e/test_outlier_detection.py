"""
End-to-end: outlier detection through Envoy 1.40 and a real C{twistd envoy}
on the same YAML: which request ejects a host that answers 503, how long
it stays out (base_ejection_time, returned at an interval tick), and, with
C{split_external_local_origin_errors}, a host that refuses connections
ejected after C{consecutive_local_origin_failure} of them.
"""

import json
import time
import urllib.request
from http.server import BaseHTTPRequestHandler

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.configs import bootstrap, cluster, httpListener
from tests.e2e.harness import (
    SharedFixture,
    adminStats,
    closingGet,
    forBoth,
    freePort,
    httpOrigin,
    startProxy,
    statusOf,
)

CONFIG = bootstrap(
    listeners=[
        httpListener(None, "%(port)d", statPrefix="ing", virtualHosts="""
            - name: a
              domains: ["*"]
              routes:
              - match: {prefix: "/split"}
                route: {cluster: split}
              - match: {prefix: "/"}
                route: {cluster: fivexx}
            """),
    ],
    clusters=[
        cluster("fivexx", ["%(good)d", "%(bad)d"], extra="""
            outlier_detection: {consecutive_5xx: 3, interval: 0.25s, base_ejection_time: 1s,
                                max_ejection_percent: 50}
            """),
        cluster("split", ["%(good)d", "%(dead)d"], extra="""
            outlier_detection: {split_external_local_origin_errors: true,
                                consecutive_local_origin_failure: 2, consecutive_5xx: 100,
                                interval: 0.25s, base_ejection_time: 30s, max_ejection_percent: 50}
            """),
    ])


class _Good(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("content-length", "4")
        self.end_headers()
        self.wfile.write(b"good")

    def log_message(self, *args):
        pass


class _Bad(_Good):
    def do_GET(self):
        self.send_response(503)
        self.send_header("content-length", "3")
        self.end_headers()
        self.wfile.write(b"bad")


def get(port, path):
    return statusOf(closingGet(port, path))


def flagsOf(admin, cluster, port):
    """The host's health_flags in JSON /clusters."""
    url = "http://127.0.0.1:%d/clusters?format=json" % (admin,)
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.loads(r.read())
    for status in body["cluster_statuses"]:
        if status["name"] != cluster:
            continue
        for host in status.get("host_statuses", []):
            if host["address"]["socket_address"]["port_value"] == port:
                return host.get("health_status", {}).get("failed_outlier_check", False)
    return None


WATCHED = ("ejections_enforced_total", "ejections_active", "ejections_enforced_consecutive_5xx",
           "ejections_detected_consecutive_5xx",
           "ejections_detected_consecutive_local_origin_failure",
           "ejections_enforced_consecutive_local_origin_failure", "ejections_overflow")


class OutlierComparisonTests(SharedFixture, SynchronousTestCase):
    """Envoy 1.40 and txenvoy, each in front of its own origins."""

    @classmethod
    def startFixture(cls):
        cls.results = forBoth(cls._runProxy)

    @classmethod
    def _runProxy(cls, real):
        good, bad = httpOrigin(_Good), httpOrigin(_Bad)
        dead = freePort()
        port, admin = freePort(), freePort()
        badPort = bad.server_address[1]
        config = CONFIG % {"admin": admin, "port": port, "good": good.server_address[1],
                           "bad": badPort, "dead": dead}
        try:
            proxy = startProxy(real, config, port, admin)
            try:
                # Round robin over the two hosts until the bad one is out.
                statuses = [get(port, "/x") for _ in range(8)]
                ejectedAt = time.monotonic()
                out = flagsOf(admin, "fivexx", badPort)
                while flagsOf(admin, "fivexx", badPort) and time.monotonic() < ejectedAt + 5:
                    time.sleep(0.02)
                ejectedFor = time.monotonic() - ejectedAt
                split = [get(port, "/split/x") for _ in range(8)]
                splitOut = flagsOf(admin, "split", dead)
                stats = adminStats(admin)
            finally:
                proxy.stop()
        finally:
            for origin in (good, bad):
                origin.shutdown()
                origin.server_close()
        od = {}
        for cluster in ("fivexx", "split"):
            for name in WATCHED:
                od["%s.%s" % (cluster, name)] = stats.get(
                    "cluster.%s.outlier_detection.%s" % (cluster, name))
        return statuses, out, ejectedFor, split, splitOut, od

    @classmethod
    def stopFixture(cls):
        pass

    def test_ejectedAfterThirdFailure(self):
        """
        The same answers: the bad host's third 503 in a row ejects it and
        the rest go to the good host.
        """
        envoy, txenvoy = self.results[True], self.results[False]
        self.assertEqual(sorted(txenvoy[0]), sorted(envoy[0]))
        self.assertEqual(envoy[0].count(503), 3)
        self.assertEqual((envoy[1], txenvoy[1]), (True, True))

    def test_returnsAfterBaseEjectionTime(self):
        """
        Both bring the host back after base_ejection_time (1 s), at an
        interval tick (0.25 s).
        """
        for real in (True, False):
            self.assertGreater(self.results[real][2], 0.6, real)
            self.assertLess(self.results[real][2], 1.6, real)
        self.assertLess(abs(self.results[True][2] - self.results[False][2]), 0.5)

    def test_splitLocalOrigin(self):
        """
        split_external_local_origin_errors: two refused connects in a row
        eject the dead host; the client sees the same answers as with
        Envoy.
        """
        envoy, txenvoy = self.results[True], self.results[False]
        self.assertEqual(sorted(txenvoy[3]), sorted(envoy[3]))
        self.assertEqual(envoy[3].count(503), 2)
        self.assertEqual((envoy[4], txenvoy[4]), (True, True))

    def test_stats(self):
        """The outlier_detection.* counters and gauge are Envoy's."""
        self.assertEqual(self.results[False][5], self.results[True][5])
