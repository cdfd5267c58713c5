"""
Tests for L{txenvoy.extensions.clusters.strict_dns} and
L{txenvoy.extensions.clusters.logical_dns}: membership from DNS answers.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.upstream.test_fakes import FakeDispatcher, FakeResolver, clusterProto, endpoint, stat
from txenvoy.config.registry import Category, lookupName
from txenvoy.extensions.clusters.logical_dns import LogicalDnsCluster
from txenvoy.extensions.clusters.strict_dns import StrictDnsCluster
from txenvoy.interfaces import ICluster
from txenvoy.stats.store import StatsStore
from txenvoy.upstream.cluster_manager import ClusterManager


class RegistrationTests(SynchronousTestCase):

    def test_byEnvoyName(self):
        """
        C{type: STRICT_DNS} and C{LOGICAL_DNS} are the extensions named
        C{envoy.cluster.strict_dns} and C{envoy.cluster.logical_dns}.
        """
        store = StatsStore()
        for kind, name, cls in (("STRICT_DNS", "envoy.cluster.strict_dns", StrictDnsCluster),
                                ("LOGICAL_DNS", "envoy.cluster.logical_dns", LogicalDnsCluster)):
            self.assertIsNotNone(lookupName(Category.CLUSTER, name))
            cm = ClusterManager(Clock(), store, store.shard("main_thread"), [clusterProto(
                "c1", [endpoint("example.com", 80)], type=kind)], dnsResolver=FakeResolver())
            self.assertIsInstance(cm.clusters["c1"], cls)
            verifyObject(ICluster, cm.clusters["c1"])


class DnsClusterTests(SynchronousTestCase):
    """STRICT_DNS and LOGICAL_DNS membership over time, with a fake resolver."""

    def setUp(self):
        self.reactor = Clock()
        self.store = StatsStore()
        self.resolver = FakeResolver()

    def make(self, proto):
        cm = ClusterManager(self.reactor, self.store, self.store.shard("main_thread"), [proto],
                            dnsResolver=self.resolver)
        self.addCleanup(cm.stop)
        self.tlc = cm.createThreadLocal(FakeDispatcher(self.reactor, "worker_0", self.store)) \
            .getThreadLocalCluster(proto.name)
        return cm, cm.clusters[proto.name]

    def s(self, name):
        return stat(self.store, "cluster.c1." + name)

    def test_strictDnsOneHostPerAddress(self):
        cm, primary = self.make(clusterProto(
            "c1", [endpoint("a.example", 80, weight=2), endpoint("b.example", 81)],
            type="STRICT_DNS", dns_lookup_family="V4_ONLY"))
        d = cm.initialize()
        self.assertEqual(self.resolver.answer(["10.0.0.1", "10.0.0.2"]), ("a.example", "V4_ONLY"))
        self.assertNoResult(d)
        self.assertEqual(self.resolver.answer(["10.0.0.3"]), ("b.example", "V4_ONLY"))
        self.successResultOf(d)
        self.assertEqual([(h.addressString, h.hostname, h.weight) for h in primary.hosts], [
            ("10.0.0.1:80", "a.example", 2), ("10.0.0.2:80", "a.example", 2),
            ("10.0.0.3:81", "b.example", 1)])
        self.assertEqual(len(self.tlc.hosts), 3)
        self.assertEqual((self.s("membership_total"), self.s("membership_healthy"),
                          self.s("update_attempt"), self.s("update_success"),
                          self.s("max_host_weight"), self.s("membership_change")),
                         (3, 3, 2, 2, 2, 2))

    def test_refreshKeepsUnchangedHosts(self):
        """
        Re-resolution every dns_refresh_rate; a host whose address stays
        is the same object (its stats survive), and no membership change
        is counted when nothing changed.
        """
        cm, primary = self.make(clusterProto("c1", [endpoint("a.example", 80)],
                                             type="STRICT_DNS", dns_refresh_rate="3s"))
        cm.initialize()
        self.resolver.answer(["10.0.0.1", "10.0.0.2"])
        first = primary.hosts
        self.reactor.advance(2.9)
        self.assertEqual(self.resolver.pending, [])
        self.reactor.advance(0.1)
        self.resolver.answer(["10.0.0.1", "10.0.0.2"])
        self.assertIs(primary.hosts, first)
        self.assertEqual(self.s("membership_change"), 1)
        self.reactor.advance(3)
        self.resolver.answer(["10.0.0.2", "10.0.0.9"])
        self.assertIs(primary.hosts[0], first[1])
        self.assertEqual([h.addressString for h in self.tlc.hosts],
                         ["10.0.0.2:80", "10.0.0.9:80"])
        self.assertEqual((self.s("membership_change"), self.s("update_attempt")), (2, 3))

    def test_defaultRefreshRate(self):
        cm, _ = self.make(clusterProto("c1", [endpoint("a.example", 80)], type="STRICT_DNS"))
        cm.initialize()
        self.resolver.answer(["10.0.0.1"])
        self.assertEqual([c.getTime() for c in self.reactor.getDelayedCalls()], [5.0])

    def test_failureKeepsHosts(self):
        cm, primary = self.make(clusterProto("c1", [endpoint("a.example", 80)],
                                             type="STRICT_DNS"))
        cm.initialize()
        self.resolver.answer(["10.0.0.1"])
        self.reactor.advance(5)
        self.resolver.fail()
        self.assertEqual([h.addressString for h in primary.hosts], ["10.0.0.1:80"])
        self.assertEqual(self.tlc.chooseHost().addressString, "10.0.0.1:80")
        self.assertEqual((self.s("update_failure"), self.s("update_success")), (1, 1))
        self.reactor.advance(5)
        self.assertEqual(len(self.resolver.pending), 1)

    def test_firstFailureStillInitializes(self):
        cm, primary = self.make(clusterProto("c1", [endpoint("a.example", 80)],
                                             type="STRICT_DNS"))
        d = cm.initialize()
        self.resolver.fail()
        self.successResultOf(d)
        self.assertEqual(primary.hosts, ())
        self.assertIsNone(self.tlc.chooseHost())

    def test_failureBackOff(self):
        cm, _ = self.make(clusterProto(
            "c1", [endpoint("a.example", 80)], type="STRICT_DNS",
            dns_failure_refresh_rate={"base_interval": "1s", "max_interval": "4s"}))
        cm.initialize()
        for _ in range(4):
            self.resolver.fail()
            (call,) = self.reactor.getDelayedCalls()
            self.assertTrue(0 < call.getTime() - self.reactor.seconds() <= 4)
            self.reactor.advance(4)
        self.resolver.answer(["10.0.0.1"])
        (call,) = self.reactor.getDelayedCalls()
        self.assertEqual(call.getTime() - self.reactor.seconds(), 5)

    def test_logicalDnsOneHostFirstAddress(self):
        """
        LOGICAL_DNS: one host at the first address; a new answer moves the
        same host, without a membership change.
        """
        cm, primary = self.make(clusterProto("c1", [endpoint("a.example", 80)],
                                             type="LOGICAL_DNS"))
        cm.initialize()
        self.resolver.answer(["10.0.0.1", "10.0.0.2"])
        (host,) = primary.hosts
        self.assertEqual((host.addressString, host.hostname), ("10.0.0.1:80", "a.example"))
        self.reactor.advance(5)
        self.resolver.answer(["10.0.0.7", "10.0.0.1"])
        self.assertEqual(primary.hosts, (host,))
        self.assertEqual(host.address, ("10.0.0.7", 80))
        self.assertEqual(self.tlc.chooseHost().addressString, "10.0.0.7:80")
        self.assertEqual((self.s("membership_change"), self.s("update_success")), (1, 2))

    def test_stopDropsLateAnswer(self):
        cm, primary = self.make(clusterProto("c1", [endpoint("a.example", 80)],
                                             type="STRICT_DNS"))
        cm.initialize()
        cm.stop()
        self.resolver.answer(["10.0.0.1"])
        self.assertEqual(primary.hosts, ())
        self.assertEqual(self.reactor.getDelayedCalls(), [])
