"""
Tests for L{txenvoy.extensions.clusters.static}.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.upstream.test_fakes import FakeDispatcher, clusterProto, endpoint, stat
from txenvoy.config.registry import Category, lookupName
from txenvoy.extensions.clusters.static import StaticCluster
from txenvoy.interfaces import ICluster
from txenvoy.stats.store import StatsStore
from txenvoy.upstream.cluster_manager import ClusterManager


class RegistrationTests(SynchronousTestCase):

    def test_byEnvoyName(self):
        """
        Envoy's C{type: STATIC} is the extension named
        C{envoy.cluster.static}; what it makes is an L{ICluster}.
        """
        self.assertIsNotNone(lookupName(Category.CLUSTER, "envoy.cluster.static"))
        cm = ClusterManager(Clock(), StatsStore(), StatsStore().shard("main_thread"),
                            [clusterProto("c1", [endpoint("10.0.0.1", 80)])])
        self.assertIsInstance(cm.clusters["c1"], StaticCluster)
        verifyObject(ICluster, cm.clusters["c1"])


class StaticClusterTests(SynchronousTestCase):
    """A STATIC cluster's membership and its stats."""

    def setUp(self):
        self.reactor = Clock()
        self.store = StatsStore()
        self.main = self.store.shard("main_thread")

    def test_membership(self):
        cm = ClusterManager(self.reactor, self.store, self.main, [clusterProto("c1", [
            endpoint("10.0.0.1", 80, weight=2),
            endpoint("10.0.0.2", 81, healthStatus="UNHEALTHY"),
            endpoint("10.0.0.3", 82, healthStatus="DEGRADED"),
        ])])
        primary = cm.clusters["c1"]
        self.assertEqual([h.addressString for h in primary.hosts],
                         ["10.0.0.1:80", "10.0.0.2:81", "10.0.0.3:82"])
        self.assertEqual([h.weight for h in primary.hosts], [2, 1, 1])
        self.assertEqual([h.healthFlags() for h in primary.hosts],
                         ["healthy", "/failed_eds_health", "/degraded_eds_health"])
        s = lambda n: stat(self.store, "cluster.c1." + n)  # noqa: E731
        self.assertEqual((s("membership_total"), s("membership_healthy"),
                          s("membership_degraded"), s("membership_excluded")), (3, 1, 1, 0))
        # Envoy: a static cluster counts one membership change, makes no
        # update attempt, and leaves max_host_weight at 0.
        self.assertEqual((s("membership_change"), s("update_attempt"),
                          s("max_host_weight"), s("version")), (1, 0, 0, 0))

    def test_emptyCluster(self):
        ClusterManager(self.reactor, self.store, self.main, [clusterProto("empty")])
        self.assertEqual(stat(self.store, "cluster.empty.membership_change"), 0)
        self.assertEqual(stat(self.store, "cluster.empty.membership_total"), 0)

    def test_priorities(self):
        cm = ClusterManager(self.reactor, self.store, self.main, [clusterProto(
            "c1", priorityGroups=[(0, [endpoint("10.0.0.1", 80)]),
                                  (1, [endpoint("10.0.0.2", 80)])])])
        self.assertEqual([h.priority for h in cm.clusters["c1"].hosts], [0, 1])
        tlc = cm.createThreadLocal(FakeDispatcher(self.reactor, "worker_0", self.store)) \
            .getThreadLocalCluster("c1")
        self.assertEqual({tlc.chooseHost().addressString for _ in range(5)}, {"10.0.0.1:80"})
