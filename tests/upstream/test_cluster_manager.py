"""
Tests for L{txenvoy.upstream.cluster_manager}.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.config.errors import ConfigError
from txenvoy.stats.store import StatsStore
from txenvoy.upstream.cluster_manager import ClusterManager, ThreadLocalCluster

from tests.upstream.test_fakes import (
    FakeDispatcher,
    FakeResolver,
    QueueDispatcher,
    clusterProto,
    endpoint,
    stat,
)


class ClusterManagerTests(SynchronousTestCase):
    """Building clusters and handing them to workers."""

    def setUp(self):
        self.reactor = Clock()
        self.store = StatsStore()
        self.main = self.store.shard("main_thread")
        self.resolver = FakeResolver()

    def make(self, protos, **kw):
        kw.setdefault("dnsResolver", self.resolver)
        cm = ClusterManager(self.reactor, self.store, self.main, protos, **kw)
        self.addCleanup(cm.stop)
        return cm

    def test_clustersInOrderAndStats(self):
        cm = self.make([clusterProto("b", [endpoint("10.0.0.1", 80)]), clusterProto("a")])
        self.assertEqual(list(cm.clusters), ["b", "a"])
        self.assertEqual(cm.clusters["b"].info.name, "b")
        self.assertIs(cm.get("a"), cm.clusters["a"])
        self.assertEqual(stat(self.store, "cluster_manager.active_clusters"), 2)
        self.assertEqual(stat(self.store, "cluster_manager.cluster_added"), 2)
        self.assertEqual(stat(self.store, "cluster_manager.warming_clusters"), 0)

    def test_duplicate(self):
        """Envoy's message for a duplicate name."""
        e = self.assertRaises(ConfigError, self.make, [clusterProto("c1"), clusterProto("c1")])
        self.assertIn("static_resources.clusters[1]", str(e))
        self.assertIn("cluster manager: duplicate cluster 'c1'", str(e))

    def test_errorPathNamesIndex(self):
        e = self.assertRaises(ConfigError, self.make, [clusterProto("ok"), clusterProto(
            "bad", common_lb_config={"close_connections_on_host_set_change": True})])
        self.assertIn("static_resources.clusters[1].common_lb_config", str(e))

    def test_localClusterMustExist(self):
        e = self.assertRaises(ConfigError, self.make, [clusterProto("c1")],
                              localClusterName="nope")
        self.assertIn("local cluster 'nope' must be defined", str(e))
        self.assertEqual(self.make([clusterProto("c1")], localClusterName="c1")
                         .localClusterName, "c1")

    def test_configDump(self):
        protos = [clusterProto("c1"), clusterProto("c2")]
        self.assertEqual(self.make(protos).configDump(), protos)

    def test_threadLocal(self):
        cm = self.make([clusterProto("c1", [endpoint("10.0.0.1", 80)])])
        d = FakeDispatcher(self.reactor, "worker_3", self.store)
        tlcm = cm.createThreadLocal(d)
        tlc = tlcm.getThreadLocalCluster("c1")
        self.assertIsInstance(tlc, ThreadLocalCluster)
        self.assertIsNone(tlcm.getThreadLocalCluster("nope"))
        self.assertIs(tlc.info, cm.clusters["c1"].info)
        self.assertEqual(tlc.workerName, "worker_3")
        self.assertEqual(tlc.chooseHost().addressString, "10.0.0.1:80")
        self.assertEqual(
            stat(self.store, "thread_local_cluster_manager.worker_3.clusters_inflated"), 1)
        # The worker's stats live in its own shard.
        self.assertIn("cluster.c1.upstream_cx_total", d.stats.counters)
        self.assertNotIn("cluster.c1.upstream_cx_total", self.main.counters)

    def test_statsObject(self):
        cm = self.make([clusterProto("c1", [endpoint("10.0.0.1", 80)])])
        tlc = cm.createThreadLocal(FakeDispatcher(self.reactor, "worker_0", self.store)) \
            .getThreadLocalCluster("c1")
        for name in ("upstream_cx_total", "upstream_cx_connect_timeout", "upstream_rq_total",
                     "upstream_rq_retry_success", "upstream_cx_none_healthy"):
            getattr(tlc.stats, name).inc()
            self.assertEqual(stat(self.store, "cluster.c1." + name), 1)
        tlc.stats.upstream_rq_active.inc()
        self.assertEqual(self.store.kindOf("cluster.c1.upstream_rq_active"), "gauge")
        tlc.stats.upstream_rq_time.recordValue(12)
        self.assertEqual(self.store.kindOf("cluster.c1.upstream_rq_time"), "histogram")
        code, klass = tlc.stats.rqCode(503)
        code.inc()
        klass.inc()
        self.assertIs(tlc.stats.rqCode(503)[0], code)
        self.assertIs(tlc.stats.rqCode(504)[1], klass)
        self.assertEqual(stat(self.store, "cluster.c1.upstream_rq_503"), 1)
        self.assertEqual(stat(self.store, "cluster.c1.upstream_rq_5xx"), 1)

    def test_initializeStatic(self):
        cm = self.make([clusterProto("c1", [endpoint("10.0.0.1", 80)])])
        self.assertIsNone(self.successResultOf(cm.initialize()))

    def test_membershipPostedToWorkers(self):
        """
        A new membership reaches each worker through its queue, not
        before.
        """
        cm = self.make([clusterProto("c1", [endpoint("web.example", 80)], type="STRICT_DNS")])
        w0 = QueueDispatcher(self.reactor, "worker_0", self.store)
        w1 = QueueDispatcher(self.reactor, "worker_1", self.store)
        tlc0 = cm.createThreadLocal(w0).getThreadLocalCluster("c1")
        tlc1 = cm.createThreadLocal(w1).getThreadLocalCluster("c1")
        d = cm.initialize()
        self.assertNoResult(d)
        self.assertEqual(self.resolver.answer(["10.1.1.1", "10.1.1.2"]), ("web.example", "AUTO"))
        self.successResultOf(d)
        self.assertIsNone(tlc0.chooseHost())
        w0.run()
        self.assertEqual(len(tlc0.hosts), 2)
        self.assertEqual(tlc1.hosts, ())
        w1.run()
        self.assertEqual({tlc1.chooseHost().addressString for _ in range(4)},
                         {"10.1.1.1:80", "10.1.1.2:80"})

    def test_lateWorkerGetsCurrentMembership(self):
        cm = self.make([clusterProto("c1", [endpoint("web.example", 80)], type="STRICT_DNS")])
        cm.initialize()
        self.resolver.answer(["10.1.1.1"])
        tlc = cm.createThreadLocal(QueueDispatcher(self.reactor, "worker_0", self.store)) \
            .getThreadLocalCluster("c1")
        self.assertEqual(tlc.chooseHost().addressString, "10.1.1.1:80")

    def test_shutdownStopsUpdates(self):
        cm = self.make([clusterProto("c1", [endpoint("web.example", 80)], type="STRICT_DNS")])
        w = QueueDispatcher(self.reactor, "worker_0", self.store)
        tlcm = cm.createThreadLocal(w)
        tlcm.shutdown()
        cm.initialize()
        self.resolver.answer(["10.1.1.1"])
        self.assertEqual(w.queue, [])

    def test_validateOnly(self):
        """Validate mode compiles, but resolves nothing and starts no timer."""
        cm = self.make([clusterProto("c1", [endpoint("web.example", 80)], type="STRICT_DNS")],
                       validateOnly=True)
        self.successResultOf(cm.initialize())
        self.assertEqual(self.resolver.pending, [])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_initializeWaitsForEveryCluster(self):
        cm = self.make([
            clusterProto("s", [endpoint("10.0.0.1", 80)]),
            clusterProto("d1", [endpoint("a.example", 80)], type="STRICT_DNS"),
            clusterProto("d2", [endpoint("b.example", 80)], type="LOGICAL_DNS"),
        ])
        d = cm.initialize()
        self.resolver.answer(["10.0.0.2"])
        self.assertNoResult(d)
        self.resolver.fail()
        self.successResultOf(d)

    def test_waitForWarmOnInitFalse(self):
        cm = self.make([clusterProto("d1", [endpoint("a.example", 80)], type="STRICT_DNS",
                                     wait_for_warm_on_init=False)])
        self.successResultOf(cm.initialize())
        self.assertEqual(len(self.resolver.pending), 1)

    def test_stopCancelsTimers(self):
        cm = self.make([clusterProto("d1", [endpoint("a.example", 80)], type="STRICT_DNS")])
        cm.initialize()
        self.resolver.answer(["10.0.0.2"])
        self.assertEqual(len(self.reactor.getDelayedCalls()), 1)
        cm.stop()
        self.assertEqual(self.reactor.getDelayedCalls(), [])


class ClusterWarmingTests(SynchronousTestCase):
    """
    CDS clusters warm before they serve, as Envoy's
    C{ClusterManagerImpl::addOrUpdateCluster}: a cluster whose first
    membership is not known yet is warming, and the one it replaces
    serves meanwhile.
    """

    def setUp(self):
        self.reactor = Clock()
        self.store = StatsStore()
        self.resolver = FakeResolver()
        self.cm = ClusterManager(self.reactor, self.store, self.store.shard("main_thread"), [],
                                 dnsResolver=self.resolver)
        self.addCleanup(self.cm.stop)
        self.successResultOf(self.cm.initialize())
        self.dispatcher = QueueDispatcher(self.reactor, "worker_0", self.store)
        self.tlcm = self.cm.createThreadLocal(self.dispatcher)

    def dnsCluster(self, name, host="a.example"):
        return self.cm.compileDynamic(
            clusterProto(name, [endpoint(host, 80)], type="STRICT_DNS"), "resources[0]")

    def gauges(self):
        return (stat(self.store, "cluster_manager.warming_clusters"),
                stat(self.store, "cluster_manager.active_clusters"))

    def test_warmsUntilFirstMembership(self):
        """A new cluster waits for its first resolution before it is active."""
        self.cm.applyUpdate([self.dnsCluster("c")], [], [])
        self.assertEqual(self.cm.warmingNames(), {"c"})
        self.assertIsNone(self.cm.get("c"))
        self.assertEqual(self.gauges(), (1, 0))
        self.assertEqual(stat(self.store, "cluster_manager.cluster_added"), 1)
        self.resolver.answer(["10.0.0.1"])
        self.assertEqual(self.cm.warmingNames(), set())
        self.assertEqual(self.gauges(), (0, 1))
        self.dispatcher.run()
        self.assertEqual(self.tlcm.getThreadLocalCluster("c").chooseHost().addressString,
                         "10.0.0.1:80")

    def test_replacedServesWhileWarming(self):
        """
        A modified cluster serves its old version until the new one warms;
        one replaced or removed while warming never becomes active.
        """
        self.cm.applyUpdate([self.dnsCluster("c")], [], [])
        self.resolver.answer(["10.0.0.1"])
        old = self.cm.get("c")
        self.cm.applyUpdate([], [self.dnsCluster("c", "b.example")], [])
        self.assertIs(self.cm.get("c"), old)
        self.assertEqual(self.gauges(), (1, 1))
        newer = self.dnsCluster("c", "d.example")
        self.cm.applyUpdate([], [newer], [])
        self.assertEqual(stat(self.store, "cluster_manager.cluster_modified"), 2)
        # The superseded one resolves: nothing changes.
        self.resolver.answer(["10.0.0.2"])
        self.assertIs(self.cm.get("c"), old)
        self.resolver.answer(["10.0.0.3"])
        self.assertIs(self.cm.get("c"), newer)
        self.assertEqual(self.gauges(), (0, 1))
        self.cm.applyUpdate([self.dnsCluster("w", "e.example")], [], [])
        self.cm.applyUpdate([], [], ["w"])
        self.assertEqual(self.gauges(), (0, 1))
        self.resolver.answer(["10.0.0.4"])
        self.assertIsNone(self.cm.get("w"))
