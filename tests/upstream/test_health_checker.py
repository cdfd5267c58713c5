"""
Tests for L{txenvoy.upstream.health_checker}: compiling C{health_checks}
and Envoy's thresholds, intervals, jitter and edges, driven on a
L{MemoryReactorClock} with L{StringTransport} connections.
"""

from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from envoy.extensions.health_check.event_sinks.file.v3 import file_pb2  # noqa: F401
from txenvoy.config.errors import ConfigError, UnsupportedExtension, UnsupportedField
from txenvoy.stats.store import StatsStore
from txenvoy.upstream.cluster import compileCluster
from txenvoy.upstream.cluster_manager import ClusterManager

from tests.upstream.test_fakes import clusterProto, endpoint

PATH = "static_resources.clusters[0]"

CHECK = {
    "timeout": "1s", "interval": "2s", "unhealthy_threshold": 2, "healthy_threshold": 2,
    "http_health_check": {"path": "/healthz"},
}


def check(**overrides):
    hc = dict(CHECK)
    hc.update(overrides)
    return hc


def compileCheck(hc):
    info, _ = compileCluster(clusterProto("c1", [endpoint("127.0.0.1", 80)],
                                          health_checks=[hc]), PATH)
    return info.healthCheck


class CompileTests(SynchronousTestCase):
    """C{health_checks} as Envoy reads it."""

    def test_defaults(self):
        """
        C{unhealthy_interval} and C{healthy_edge_interval} default to
        C{interval}, C{unhealthy_edge_interval} to C{unhealthy_interval},
        C{no_traffic_interval} to 60s; connections are reused.
        """
        cfg = compileCheck(check(unhealthy_interval="3s"))
        self.assertEqual((cfg.timeout, cfg.interval, cfg.unhealthyInterval,
                          cfg.unhealthyEdgeInterval, cfg.healthyEdgeInterval,
                          cfg.noTrafficInterval, cfg.noTrafficHealthyInterval,
                          cfg.reuseConnection),
                         (1.0, 2.0, 3.0, 3.0, 2.0, 60.0, 60.0, True))
        self.assertEqual(cfg.expected, ((200, 201),))

    def test_httpRequest(self):
        """Envoy's check request: C{host} is the cluster name, C{Envoy/HC}."""
        cfg = compileCheck(check())
        self.assertEqual(cfg.request,
                         b"GET /healthz HTTP/1.1\r\nhost: c1\r\nuser-agent: Envoy/HC\r\n\r\n")

    def test_httpRequestHeaders(self):
        cfg = compileCheck(check(http_health_check={
            "path": "/h", "host": "svc",
            "request_headers_to_add": [{"header": {"key": "X-A", "value": "1"}}],
            "request_headers_to_remove": ["user-agent"]}))
        self.assertEqual(cfg.request, b"GET /h HTTP/1.1\r\nhost: svc\r\nx-a: 1\r\n\r\n")

    def test_tcpPayloads(self):
        cfg = compileCheck(check(http_health_check=None, tcp_health_check={
            "send": {"text": "0102"}, "receive": [{"binary": "AwQ="}]}))
        self.assertEqual((cfg.kind, cfg.request, cfg.receive), ("TCP", b"\x01\x02", (b"\x03\x04",)))

    def test_required(self):
        hc = check()
        del hc["interval"]
        e = self.assertRaises(ConfigError, compileCheck, hc)
        self.assertIn(PATH + ".health_checks[0].interval: value is required", str(e))

    def test_grpcNeedsHttp2(self):
        """gRPC checks need an HTTP/2 cluster: refused with the field path."""
        e = self.assertRaises(ConfigError, compileCheck,
                              check(http_health_check=None, grpc_health_check={}))
        self.assertIn(PATH + ".health_checks[0].grpc_health_check: ", str(e))
        self.assertIn("cluster must support HTTP/2 for gRPC healthchecking", str(e))

    def test_unimplementedFieldRefused(self):
        e = self.assertRaises(UnsupportedField, compileCheck, check(alt_port=81))
        self.assertIn(PATH + ".health_checks[0].alt_port", str(e))

    def test_eventLogs(self):
        """event_log_path and the file sinks of event_logger, in order."""
        sink = "type.googleapis.com/envoy.extensions.health_check.event_sinks.file.v3." \
               "HealthCheckEventFileSink"
        cfg = compileCheck(check(
            event_log_path="/tmp/a", always_log_health_check_failures=True,
            event_logger=[{"name": "f", "typed_config": {"@type": sink,
                                                         "event_log_path": "/tmp/b"}}]))
        self.assertEqual((cfg.eventLogPaths, cfg.alwaysLogFailures, cfg.alwaysLogSuccess),
                         (("/tmp/a", "/tmp/b"), True, False))

    def test_eventLoggerOtherTypeRefused(self):
        """An event sink txenvoy has no extension for is refused with its path."""
        e = self.assertRaises(UnsupportedExtension, compileCheck, check(event_logger=[{
            "name": "x", "typed_config": {
                "@type": "type.googleapis.com/envoy.config.core.v3.Locality"}}]))
        self.assertIn(PATH + ".health_checks[0].event_logger[0].typed_config", str(e))

    def test_multipleRefused(self):
        e = self.assertRaises(ConfigError, compileCluster, clusterProto(
            "c1", [endpoint("127.0.0.1", 80)], health_checks=[CHECK, CHECK]), PATH)
        self.assertIn("Multiple health checks not supported", str(e))


class _Reactor(MemoryReactorClock):
    """A fake main reactor whose C{callFromThread} runs at the next turn."""

    def callFromThread(self, f, *args):
        self.callLater(0, f, *args)


class SessionTests(SynchronousTestCase):
    """One host checked on a fake reactor."""

    def setUp(self):
        self.reactor = _Reactor()
        self.store = StatsStore()

    def start(self, hc=CHECK, rng=lambda: 0.0):
        proto = clusterProto("c1", [endpoint("127.0.0.1", 8080)], health_checks=[hc])
        self.cm = ClusterManager(self.reactor, self.store, self.store.shard("main_thread"),
                                 [proto], rng=rng)
        self.addCleanup(self.cm.stop)
        self.cluster = self.cm.clusters["c1"]
        self.host = self.cluster.hosts[0]
        self.ready = []
        self.cm.initialize().addCallback(self.ready.append)

    def stat(self, name):
        return self.store.counterValue("cluster.c1.health_check." + name) \
            if name not in ("healthy", "degraded") \
            else self.store.gaugeValue("cluster.c1.health_check." + name)

    def connect(self):
        """Accept the newest check connection; @return: its transport."""
        _, _, factory, _, _ = self.reactor.tcpClients[-1]
        proto = factory.buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        self.proto = proto
        return transport

    def refuse(self):
        connector = self.reactor.connectors[-1]
        _, _, factory, _, _ = self.reactor.tcpClients[-1]
        factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError()))

    def answer(self, status, headers=b""):
        self.proto.dataReceived(b"HTTP/1.1 %d X\r\ncontent-length: 0\r\n%s\r\n"
                                % (status, headers))

    def test_startsFailedAndInitWaitsForFirstCheck(self):
        """
        Envoy marks a host C{failed_active_hc} until its first check and
        initialization waits for that result; a first success is enough
        even with C{healthy_threshold: 2}.
        """
        self.start()
        self.assertEqual(self.host.healthFlags(), "/failed_active_hc")
        self.assertEqual(self.ready, [])
        t = self.connect()
        self.assertEqual(t.value(), b"GET /healthz HTTP/1.1\r\nhost: c1\r\n"
                                    b"user-agent: Envoy/HC\r\n\r\n")
        self.answer(200)
        self.assertEqual(self.host.healthFlags(), "healthy")
        self.assertEqual(self.ready, [None])
        self.assertEqual((self.stat("attempt"), self.stat("success"), self.stat("healthy")),
                         (1, 1, 1))

    def test_firstFailureStillInitializes(self):
        self.start()
        self.refuse()
        self.assertEqual(self.ready, [None])
        self.assertEqual(self.host.healthFlags(), "/failed_active_hc")
        self.assertEqual((self.stat("failure"), self.stat("network_failure")), (1, 1))

    def test_badStatusFailsAtOnce(self):
        """A status outside C{expected_statuses} ignores C{unhealthy_threshold}."""
        self.start()
        self.connect()
        self.answer(200)
        self.reactor.advance(60)  # no traffic yet: no_traffic_interval
        self.answer(503)
        self.assertEqual(self.host.healthFlags(), "/failed_active_hc")
        self.assertEqual(self.stat("healthy"), 0)

    def test_retriableStatusCountsTowardsThreshold(self):
        self.start(check(http_health_check={
            "path": "/healthz", "retriable_statuses": [{"start": 503, "end": 504}]}))
        self.connect()
        self.answer(200)
        self.reactor.advance(60)
        self.answer(503)
        self.assertEqual(self.host.healthFlags(), "healthy")
        self.reactor.advance(60)
        self.answer(503)
        self.assertEqual(self.host.healthFlags(), "/failed_active_hc")

    def test_serviceNameMatcher(self):
        """
        Envoy's service_name_matcher: an expected status passes only when
        x-envoy-upstream-healthchecked-cluster matches (counted in
        verify_cluster); a mismatch or no header fails at once.
        """
        self.start(check(http_health_check={
            "path": "/healthz", "service_name_matcher": {"prefix": "front"}}))
        self.connect()
        self.answer(200, b"x-envoy-upstream-healthchecked-cluster: frontend\r\n")
        self.assertEqual(self.host.healthFlags(), "healthy")
        self.reactor.advance(60)
        self.answer(200)
        self.assertEqual(self.host.healthFlags(), "/failed_active_hc")
        self.reactor.advance(60)
        self.answer(200, b"x-envoy-upstream-healthchecked-cluster: backend\r\n")
        self.assertEqual((self.stat("verify_cluster"), self.stat("failure"),
                          self.stat("success")), (3, 2, 1))

    def test_immediateFailHeader(self):
        self.start()
        self.connect()
        self.answer(503, b"x-envoy-immediate-health-check-fail: true\r\n")
        self.assertEqual(self.host.healthFlags(),
                         "/failed_active_hc/excluded_via_immediate_hc_fail")
        # Envoy clears the exclusion only when the host turns healthy.
        self.reactor.advance(60)
        self.answer(200)
        self.assertEqual(self.host.healthFlags(),
                         "/failed_active_hc/excluded_via_immediate_hc_fail")
        self.reactor.advance(60)
        self.answer(200)
        self.assertEqual(self.host.healthFlags(), "healthy")

    def test_immediateFailureFromAWorker(self):
        """
        Envoy's C{setUnhealthyCrossThread}: the main reactor fails and
        excludes the host at once as a C{passive_failure}, reposts the
        membership, and leaves the next check where it was.
        """
        self.start()
        self.connect()
        self.answer(200)
        before = [c.getTime() for c in self.reactor.getDelayedCalls()]
        self.host.healthChecker.immediateFailure(self.host)
        self.assertEqual(self.host.healthFlags(), "healthy")
        self.reactor.advance(0)
        self.assertEqual(self.host.healthFlags(),
                         "/failed_active_hc/excluded_via_immediate_hc_fail")
        self.assertEqual((self.stat("failure"), self.stat("passive_failure")), (1, 1))
        self.assertEqual(self.store.gaugeValue("cluster.c1.membership_healthy"), 0)
        self.assertEqual([c.getTime() for c in self.reactor.getDelayedCalls()], before)

    def test_timeoutFlag(self):
        """A timed out check of a failed host sets C{active_hc_timeout}."""
        self.start(check(unhealthy_threshold=1))
        self.connect()
        self.reactor.advance(1)
        self.assertEqual(self.host.healthFlags(), "/failed_active_hc/active_hc_timeout")
        self.assertEqual((self.stat("failure"), self.stat("network_failure")), (1, 1))
        self.assertEqual(self.ready, [None])

    def test_noTrafficIntervalThenIntervals(self):
        """
        Until the cluster has had a connection, checks run every
        C{no_traffic_interval}; then every C{interval}, C{unhealthy_interval}
        when failed, and the edge intervals while a change is pending.
        """
        self.start(check(no_traffic_interval="10s", unhealthy_interval="3s",
                         unhealthy_edge_interval="0.5s", healthy_edge_interval="0.7s"))
        self.connect()
        self.answer(200)
        self.assertEqual(self.reactor.getDelayedCalls()[0].getTime(), 10.0)
        self.host.statsFor("worker_0").cx_total += 1
        self.reactor.advance(10)
        self.answer(200)
        calls = [c.getTime() for c in self.reactor.getDelayedCalls()]
        self.assertEqual(calls, [12.0])
        self.reactor.advance(2)
        self.proto.connectionLost(Failure(ConnectionRefusedError()))   # network failure 1/2
        self.assertEqual([c.getTime() for c in self.reactor.getDelayedCalls()], [12.5])
        self.reactor.advance(0.5)
        self.refuse()                                   # 2/2: failed
        self.assertEqual(self.host.healthFlags(), "/failed_active_hc")
        self.assertEqual([c.getTime() for c in self.reactor.getDelayedCalls()], [15.5])
        self.reactor.advance(3)
        self.connect()
        self.answer(200)                                # 1/2: pending
        self.assertEqual(self.host.healthFlags(), "/failed_active_hc")
        self.assertEqual([c.getTime() for c in self.reactor.getDelayedCalls()], [16.2])
        self.reactor.advance(0.7)
        self.answer(200)                                # 2/2: healthy
        self.assertEqual(self.host.healthFlags(), "healthy")
        self.assertEqual([c.getTime() for c in self.reactor.getDelayedCalls()], [18.2])

    def test_jitterBounds(self):
        """
        C{interval_jitter} adds C{random % jitter} and
        C{interval_jitter_percent} C{random % (percent of the interval)}.
        """
        delays = []
        for r in [i / 50.0 for i in range(50)]:
            self.reactor = _Reactor()
            self.start(check(no_traffic_interval="2s", interval_jitter="0.1s",
                             interval_jitter_percent=15), rng=lambda r=r: r)
            self.connect()
            self.answer(200)
            delays.append(self.reactor.getDelayedCalls()[0].getTime() - self.reactor.seconds())
            self.cm.stop()
        self.assertAlmostEqual(min(delays), 2.0)
        self.assertLessEqual(max(delays), 2.0 + 0.099 + 0.299 + 1e-9)
        self.assertGreater(max(delays), 2.2)

    def test_tcpConnectOnly(self):
        """An empty TCP check passes on connect and closes the connection."""
        self.start(check(http_health_check=None, tcp_health_check={}))
        t = self.connect()
        self.assertEqual(self.host.healthFlags(), "healthy")
        self.assertTrue(t.disconnecting)

    def test_membershipRepostedOnChange(self):
        """Workers get the new health: the cluster re-posts its hosts."""
        self.start()
        before = self.store.counterValue("cluster.c1.membership_change")
        self.connect()
        self.answer(200)
        self.assertEqual(self.store.gaugeValue("cluster.c1.membership_healthy"), 1)
        self.assertEqual(self.store.counterValue("cluster.c1.membership_change"), before)


class EndpointHealthCheckConfigTests(SynchronousTestCase):
    """An endpoint's C{health_check_config}."""

    def start(self, hcc):
        self.reactor = _Reactor()
        ep = endpoint("127.0.0.1", 8080)
        ep["endpoint"]["health_check_config"] = hcc
        proto = clusterProto("c1", [ep, endpoint("127.0.0.1", 8081)], health_checks=[CHECK])
        store = StatsStore()
        self.cm = ClusterManager(self.reactor, store, store.shard("main_thread"), [proto])
        self.addCleanup(self.cm.stop)
        self.ready = []
        self.cm.initialize().addCallback(self.ready.append)
        return self.cm.clusters["c1"].hosts

    def test_portAndHostname(self):
        """Checks go to C{port_value} with C{hostname} as the Host header."""
        self.start({"port_value": 9090, "hostname": "svc.local"})
        self.assertEqual([(h, p) for h, p, _, _, _ in self.reactor.tcpClients],
                         [("127.0.0.1", 9090), ("127.0.0.1", 8081)])
        _, _, factory, _, _ = self.reactor.tcpClients[0]
        t = StringTransport()
        factory.buildProtocol(None).makeConnection(t)
        self.assertEqual(t.value().split(b"\r\n")[1], b"host: svc.local")

    def test_disabled(self):
        """A host with C{disable_active_health_check} is not checked nor waited for."""
        a, b = self.start({"disable_active_health_check": True})
        self.assertEqual((a.healthFlags(), b.healthFlags()), ("healthy", "/failed_active_hc"))
        self.assertEqual([p for _, p, _, _, _ in self.reactor.tcpClients], [8081])
        _, _, factory, _, _ = self.reactor.tcpClients[0]
        factory.clientConnectionFailed(self.reactor.connectors[0],
                                       Failure(ConnectionRefusedError()))
        self.assertEqual(self.ready, [None])


class UpdateMergeWindowTests(SynchronousTestCase):
    """
    Envoy's C{ClusterManagerImpl::scheduleUpdate}: a health-only change
    within C{update_merge_window} of the last update reaches workers at the
    end of the window.
    """

    def setUp(self):
        from txenvoy.testing import QueueDispatcher

        self.reactor = _Reactor()
        self.store = StatsStore()
        proto = clusterProto("c1", [endpoint("127.0.0.1", 8080)], health_checks=[check(
            http_health_check=None, tcp_health_check={}, unhealthy_threshold=1,
            healthy_threshold=1,
            no_traffic_interval="0.2s")], common_lb_config={"healthy_panic_threshold": {}})
        self.cm = ClusterManager(self.reactor, self.store, self.store.shard("main_thread"),
                                 [proto])
        self.addCleanup(self.cm.stop)
        self.cluster = self.cm.clusters["c1"]
        self.host = self.cluster.hosts[0]
        self.dispatcher = QueueDispatcher(self.reactor, store=self.store)
        self.tlc = self.cm.createThreadLocal(self.dispatcher).clusters["c1"]
        self.cm.initialize()

    def workerHealthy(self):
        """The hosts the worker may pick (no panic: threshold 0)."""
        self.dispatcher.run()
        host = self.tlc.chooseHost()
        return [] if host is None else [host]

    def test_firstChangeAtOnceNextMerged(self):
        """
        The state at initialization and the first change after it reach
        workers at once; the next, 0.2s later, at the end of the window.
        """
        _, _, factory, _, _ = self.reactor.tcpClients[-1]
        factory.buildProtocol(None).makeConnection(StringTransport())
        self.assertEqual(self.workerHealthy(), [self.host])
        self.reactor.advance(0.2)
        factory.clientConnectionFailed(self.reactor.connectors[-1],
                                       Failure(ConnectionRefusedError()))
        self.assertEqual(self.workerHealthy(), [])
        self.reactor.advance(0.2)
        _, _, factory, _, _ = self.reactor.tcpClients[-1]
        factory.buildProtocol(None).makeConnection(StringTransport())
        self.assertEqual(self.host.healthFlags(), "healthy")
        self.assertEqual(self.store.gaugeValue("cluster.c1.membership_healthy"), 1)
        self.assertEqual(self.workerHealthy(), [])
        self.reactor.advance(1)
        self.assertEqual(self.workerHealthy(), [self.host])
        self.assertEqual(
            self.store.counterValue("cluster_manager.cluster_updated_via_merge"), 1)
