"""
Tests for L{txenvoy.upstream.outlier_detection}: compiling
C{outlier_detection} and Envoy's ejection rules on a fake clock.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.config.errors import ConfigError, UnsupportedField
from txenvoy.stats.store import StatsStore
from txenvoy.upstream.cluster import compileCluster
from txenvoy.upstream.cluster_manager import ClusterManager

from tests.upstream.test_fakes import clusterProto, endpoint

PATH = "static_resources.clusters[0]"


class _Reactor(Clock):
    """A fake main reactor whose C{callFromThread} runs at the next turn."""

    def callFromThread(self, f, *args):
        self.callLater(0, f, *args)


def compileOutlier(**od):
    info, _ = compileCluster(clusterProto("c1", [endpoint("127.0.0.1", 80)],
                                          outlier_detection=od), PATH)
    return info.outlierDetection


class CompileTests(SynchronousTestCase):

    def test_defaults(self):
        """Envoy's defaults."""
        cfg = compileOutlier()
        self.assertEqual(
            (cfg.consecutive5xx, cfg.consecutiveGatewayFailure, cfg.interval,
             cfg.baseEjectionTime, cfg.maxEjectionTime, cfg.maxEjectionPercent,
             cfg.enforcing, cfg.successRateMinimumHosts, cfg.successRateRequestVolume,
             cfg.successRateStdevFactor, cfg.failurePercentageThreshold),
            (5, 5, 10.0, 30.0, 300.0, 10,
             {"consecutive_5xx": 100, "consecutive_gateway_failure": 0, "success_rate": 100,
              "failure_percentage": 0, "consecutive_local_origin_failure": 100,
              "local_origin_success_rate": 100, "local_origin_failure_percentage": 0},
             5, 100, 1900, 85))
        self.assertEqual((cfg.splitExternalLocalOriginErrors, cfg.consecutiveLocalOriginFailure),
                         (False, 5))

    def test_split(self):
        cfg = compileOutlier(split_external_local_origin_errors=True,
                             consecutive_local_origin_failure=2,
                             enforcing_consecutive_local_origin_failure=50,
                             enforcing_failure_percentage_local_origin=10)
        self.assertEqual((cfg.splitExternalLocalOriginErrors, cfg.consecutiveLocalOriginFailure,
                          cfg.enforcing["consecutive_local_origin_failure"],
                          cfg.enforcing["local_origin_failure_percentage"]), (True, 2, 50, 10))

    def test_monitorsRefused(self):
        e = self.assertRaises(UnsupportedField, compileOutlier, monitors=[{"name": "x"}])
        self.assertIn(PATH + ".outlier_detection.monitors", str(e))

    def test_percentRange(self):
        e = self.assertRaises(ConfigError, compileOutlier, max_ejection_percent=101)
        self.assertIn(PATH + ".outlier_detection.max_ejection_percent", str(e))

    def test_baseAboveMax(self):
        e = self.assertRaises(ConfigError, compileOutlier, base_ejection_time="10s",
                              max_ejection_time="5s")
        self.assertIn("base_ejection_time", str(e))


class DetectorTests(SynchronousTestCase):
    """Ejection and return on a fake clock."""

    def setUp(self):
        self.reactor = _Reactor()
        self.store = StatsStore()

    def start(self, nhosts=2, rng=lambda: 0.0, healthChecks=None, **od):
        od.setdefault("consecutive_5xx", 3)
        od.setdefault("interval", "1s")
        od.setdefault("base_ejection_time", "2s")
        od.setdefault("max_ejection_percent", 50)
        fields = {"outlier_detection": od}
        if healthChecks:
            fields["health_checks"] = healthChecks
        proto = clusterProto("c1", [endpoint("127.0.0.1", 8080 + i) for i in range(nhosts)],
                             **fields)
        self.cm = ClusterManager(self.reactor, self.store, self.store.shard("main_thread"),
                                 [proto], rng=rng)
        self.addCleanup(self.cm.stop)
        self.cluster = self.cm.clusters["c1"]
        self.detector = self.cluster.outlierDetector
        self.cm.initialize()
        return self.cluster.hosts

    def stat(self, name):
        full = "cluster.c1.outlier_detection." + name
        if name == "ejections_active":
            return self.store.gaugeValue(full)
        return self.store.counterValue(full)

    def failResponses(self, host, n, code=500):
        for _ in range(n):
            host.outlierMonitor.putHttpResponseCode(code)
        self.reactor.advance(0)

    def test_consecutive5xx(self):
        a, b = self.start()
        self.failResponses(b, 2)
        b.outlierMonitor.putHttpResponseCode(200)   # resets the run
        self.failResponses(b, 2)
        self.assertEqual(b.healthFlags(), "healthy")
        self.failResponses(b, 1)
        self.assertEqual(b.healthFlags(), "/failed_outlier_check")
        self.assertEqual((self.stat("ejections_active"), self.stat("ejections_enforced_total")),
                         (1, 1))
        self.assertEqual(self.store.gaugeValue("cluster.c1.membership_healthy"), 1)

    def test_localOriginUnsplit(self):
        """
        Without split_external_local_origin_errors a failed connect counts
        as a 503 and a timeout as a 504 (Envoy's
        putResultNoLocalExternalSplit); a connection handed out resets nothing.
        """
        from txenvoy.upstream import outlier_detection as od

        a, b = self.start()
        m = b.outlierMonitor
        m.putResult(od.LOCAL_ORIGIN_CONNECT_FAILED)
        m.putResult(od.LOCAL_ORIGIN_CONNECT_SUCCESS)
        m.putResult(od.LOCAL_ORIGIN_TIMEOUT)
        self.assertEqual(m.consecutive5xx, 2)
        m.putResult(od.LOCAL_ORIGIN_CONNECT_FAILED)
        self.reactor.advance(0)
        self.assertEqual(b.healthFlags(), "/failed_outlier_check")
        self.assertEqual(self.stat("ejections_enforced_consecutive_5xx"), 1)

    def test_consecutiveLocalOriginFailure(self):
        """
        Split: local-origin errors eject after consecutive_local_origin_failure
        in a row, a connection handed out resets the run, and 5xx responses
        are counted apart (Envoy's putResultWithLocalExternalSplit).
        """
        from txenvoy.upstream import outlier_detection as od

        a, b = self.start(split_external_local_origin_errors=True,
                          consecutive_local_origin_failure=2)
        m = b.outlierMonitor
        m.putResult(od.LOCAL_ORIGIN_CONNECT_FAILED)
        m.putResult(od.LOCAL_ORIGIN_CONNECT_SUCCESS)
        m.putResult(od.LOCAL_ORIGIN_TIMEOUT)
        self.failResponses(b, 2)
        self.assertEqual((b.healthFlags(), m.consecutive5xx, m.consecutiveLocalOrigin),
                         ("healthy", 2, 1))
        m.putResult(od.LOCAL_ORIGIN_CONNECT_FAILED)
        self.reactor.advance(0)
        self.assertEqual(b.healthFlags(), "/failed_outlier_check")
        self.assertEqual((self.stat("ejections_detected_consecutive_local_origin_failure"),
                          self.stat("ejections_enforced_consecutive_local_origin_failure"),
                          self.stat("ejections_total"), m.consecutiveLocalOrigin), (1, 1, 0, 0))

    def test_localOriginSuccessRate(self):
        """Split: the success rate of local-origin results is judged on its own."""
        from txenvoy.upstream import outlier_detection as od

        hosts = self.start(nhosts=5, split_external_local_origin_errors=True,
                           consecutive_local_origin_failure=1000, consecutive_5xx=1000)
        for i, h in enumerate(hosts):
            for n in range(100):
                h.outlierMonitor.putHttpResponseCode(200)
                h.outlierMonitor.putResult(od.LOCAL_ORIGIN_CONNECT_FAILED if i == 0 and n % 2
                                           else od.LOCAL_ORIGIN_CONNECT_SUCCESS)
        self.reactor.advance(1)
        self.assertEqual([h.healthFlags() for h in hosts],
                         ["/failed_outlier_check"] + ["healthy"] * 4)
        self.assertEqual((self.stat("ejections_detected_local_origin_success_rate"),
                          self.stat("ejections_enforced_local_origin_success_rate"),
                          self.stat("ejections_detected_success_rate")), (1, 1, 0))

    def test_ejectionTimeMultipliedAndCapped(self):
        """
        Each ejection lasts C{base_ejection_time} times the number of recent
        ejections, capped by C{max_ejection_time}; a return happens at an
        C{interval} tick.
        """
        a, b = self.start(max_ejection_time="5s")
        durations = []
        for _ in range(4):
            self.failResponses(b, 3)
            start = self.reactor.seconds()
            while b.hasHealthFlag("failed_outlier_check"):
                self.reactor.advance(1)
            durations.append(self.reactor.seconds() - start)
        self.assertEqual(durations, [2, 4, 5, 5])

    def test_backoffDecaysWhileHealthy(self):
        a, b = self.start()
        self.failResponses(b, 3)
        self.reactor.pump([1] * 2)
        self.assertEqual(b.healthFlags(), "healthy")
        self.assertEqual(b.outlierMonitor.ejectTimeBackoff, 1)
        self.reactor.pump([1] * 2)
        self.assertEqual(b.outlierMonitor.ejectTimeBackoff, 0)

    def test_jitter(self):
        """C{max_ejection_time_jitter} adds C{random % (jitter + 1)} ms."""
        a, b = self.start(max_ejection_time_jitter="0.5s", rng=lambda: 0.999)
        self.failResponses(b, 3)
        self.assertGreater(b.outlierMonitor.jitter, 0)
        self.assertLessEqual(b.outlierMonitor.jitter, 0.5)
        self.reactor.pump([1] * 2)
        self.assertEqual(b.healthFlags(), "/failed_outlier_check")
        self.reactor.advance(1)
        self.assertEqual(b.healthFlags(), "healthy")

    def test_maxEjectionPercent(self):
        """Envoy's rule: (active + 1) / hosts must stay within the percent."""
        hosts = self.start(nhosts=4)
        for h in hosts:
            self.failResponses(h, 3)
        self.assertEqual([h.hasHealthFlag("failed_outlier_check") for h in hosts],
                         [True, True, False, False])
        self.assertEqual(self.stat("ejections_overflow"), 2)

    def test_alwaysEjectOneHost(self):
        a, b = self.start(max_ejection_percent=10, always_eject_one_host=True)
        self.failResponses(b, 3)
        self.failResponses(a, 3)
        self.assertEqual((a.healthFlags(), b.healthFlags()), ("healthy", "/failed_outlier_check"))

    def test_successRate(self):
        """
        With 5 hosts of 100+ requests, a host below mean - 1.9 stdev is
        ejected at the interval.
        """
        hosts = self.start(nhosts=5, consecutive_5xx=1000)
        for i, h in enumerate(hosts):
            slot = h.statsFor("worker_0")
            slot.rq_success = 100 if i else 50
            slot.rq_error = 0 if i else 50
        self.reactor.advance(1)
        self.assertEqual([h.healthFlags() for h in hosts],
                         ["/failed_outlier_check"] + ["healthy"] * 4)
        self.assertEqual((self.stat("ejections_detected_success_rate"),
                          self.stat("ejections_enforced_success_rate")), (1, 1))

    def test_failurePercentage(self):
        hosts = self.start(nhosts=5, consecutive_5xx=1000, enforcing_success_rate=0,
                           enforcing_failure_percentage=100, max_ejection_percent=100)
        for i, h in enumerate(hosts):
            slot = h.statsFor("worker_0")
            slot.rq_success = 10 if i < 2 else 60
            slot.rq_error = 50 if i < 2 else 0
        self.reactor.advance(1)
        self.assertEqual([h.hasHealthFlag("failed_outlier_check") for h in hosts],
                         [False, False, False, False, False])
        self.assertEqual(self.stat("ejections_detected_failure_percentage"), 0)
        for i, h in enumerate(hosts):
            slot = h.statsFor("worker_0")
            slot.rq_success += 5 if i < 2 else 60
            slot.rq_error += 55 if i < 2 else 0
        self.reactor.advance(1)
        self.assertEqual([h.hasHealthFlag("failed_outlier_check") for h in hosts],
                         [True, True, False, False, False])
        self.assertEqual(self.stat("ejections_enforced_failure_percentage"), 2)

    def test_healthCheckPassUnejects(self):
        """C{successful_active_health_check_uneject_host} (default true)."""
        from twisted.internet.testing import MemoryReactorClock, StringTransport

        class R(MemoryReactorClock):
            def callFromThread(self, f, *args):
                self.callLater(0, f, *args)

        self.reactor = R()
        a, = self.start(nhosts=1, max_ejection_percent=100, healthChecks=[{
            "timeout": "1s", "interval": "0.5s", "no_traffic_interval": "0.5s",
            "unhealthy_threshold": 1, "healthy_threshold": 1, "tcp_health_check": {}}])
        _, _, factory, _, _ = self.reactor.tcpClients[-1]
        factory.buildProtocol(None).makeConnection(StringTransport())
        self.assertEqual(a.healthFlags(), "healthy")
        self.failResponses(a, 3)
        self.assertEqual(a.healthFlags(), "/failed_outlier_check")
        self.reactor.advance(0.5)
        _, _, factory, _, _ = self.reactor.tcpClients[-1]
        factory.buildProtocol(None).makeConnection(StringTransport())
        self.assertEqual(a.healthFlags(), "healthy")
        self.assertEqual(self.stat("ejections_active"), 0)
