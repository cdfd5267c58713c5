"""
Tests for L{txenvoy.upstream.load_balancer}.
"""

import random
from collections import Counter as Tally

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from txenvoy.interfaces import ILoadBalancer
from txenvoy.stats.store import Counter, StatsStore
from txenvoy.upstream.cluster_manager import ClusterManager
from txenvoy.upstream.host import DEGRADED_EDS_HEALTH, FAILED_EDS_HEALTH, Host
from txenvoy.upstream.load_balancer import (
    LEAST_REQUEST,
    RANDOM,
    ROUND_ROBIN,
    LbConfig,
    LoadBalancer,
    computePriorityLoad,
)

from tests.upstream.test_fakes import FakeDispatcher, clusterProto, endpoint


def hosts(*specs):
    """C{hosts(("a", 1), ("b", 2))}: hosts 10.0.0.N:80 named by hostname."""
    out = []
    for i, spec in enumerate(specs):
        name, weight = spec[0], spec[1]
        priority = spec[2] if len(spec) > 2 else 0
        flags = spec[3] if len(spec) > 3 else ()
        out.append(Host(("10.0.0.%d" % (i + 1,), 80), hostname=name, weight=weight,
                        priority=priority, healthFlags=flags))
    return out


def lb(policy, hostList, rng=None, worker="worker_0", **cfg):
    panic = Counter()
    balancer = LoadBalancer(LbConfig(policy, **cfg), worker, panic,
                            rng or random.Random(7).random)
    balancer.setHosts(hostList)
    return balancer, panic


def names(balancer, n):
    return [balancer.chooseHost().hostname for _ in range(n)]


class RoundRobinTests(SynchronousTestCase):
    """ROUND_ROBIN, per worker, with weights."""

    def test_provides(self):
        balancer, _ = lb(ROUND_ROBIN, hosts(("a", 1)))
        self.assertTrue(verifyObject(ILoadBalancer, balancer))

    def test_alternatesPerWorker(self):
        """
        Each worker's thread-local cluster alternates over two equal
        hosts on its own, whatever the other worker does.
        """
        reactor = Clock()
        store = StatsStore()
        cm = ClusterManager(reactor, store, store.shard("main_thread"), [
            clusterProto("c1", [endpoint("10.0.0.1", 80), endpoint("10.0.0.2", 80)])])
        w0 = cm.createThreadLocal(FakeDispatcher(reactor, "worker_0", store))
        w1 = cm.createThreadLocal(FakeDispatcher(reactor, "worker_1", store))
        c0 = w0.getThreadLocalCluster("c1")
        c1 = w1.getThreadLocalCluster("c1")
        seq0 = [c0.chooseHost().addressString for _ in range(6)]
        c1.chooseHost()  # worker_1's picks do not move worker_0's rotation
        seq0 += [c0.chooseHost().addressString for _ in range(2)]
        for a, b in zip(seq0, seq0[1:]):
            self.assertNotEqual(a, b)
        self.assertEqual(set(seq0), {"10.0.0.1:80", "10.0.0.2:80"})
        seq1 = [c1.chooseHost().addressString for _ in range(4)]
        for a, b in zip(seq1, seq1[1:]):
            self.assertNotEqual(a, b)

    def test_smoothWeighted(self):
        """
        Weights 2:1 give a b a, a b a...: the heavy host twice per cycle,
        never the light one twice in a row.
        """
        balancer, _ = lb(ROUND_ROBIN, hosts(("a", 2), ("b", 1)))
        self.assertEqual(names(balancer, 9), list("abaabaaba"))

    def test_smoothWeightedInterleaves(self):
        """nginx's example: weights 5, 1, 1 give a a b a c a a."""
        balancer, _ = lb(ROUND_ROBIN, hosts(("a", 5), ("b", 1), ("c", 1)))
        self.assertEqual("".join(names(balancer, 7)), "aabacaa")

    def test_manyWeightedHostsUseEdf(self):
        """
        Above the smooth round robin size, the EDF scheduler keeps exact
        proportions over whole periods.
        """
        hs = hosts(*[("h%d" % i, 1 + (i % 3)) for i in range(30)])
        balancer, _ = lb(ROUND_ROBIN, hs)
        period = sum(h.weight for h in hs)
        tally = Tally(names(balancer, period * 10))
        for h in hs:
            self.assertAlmostEqual(tally[h.hostname], h.weight * 10, delta=2)

    def test_singleHost(self):
        balancer, _ = lb(ROUND_ROBIN, hosts(("a", 4)))
        self.assertEqual(names(balancer, 3), ["a", "a", "a"])


class RandomTests(SynchronousTestCase):
    """RANDOM with weights."""

    def test_respectsWeights(self):
        """
        Weights 1:3 give about 25%/75% over a bounded, seeded sample.
        """
        balancer, _ = lb(RANDOM, hosts(("a", 1), ("b", 3)), rng=random.Random(1).random)
        tally = Tally(names(balancer, 4000))
        self.assertTrue(0.70 < tally["b"] / 4000 < 0.80, tally)

    def test_equalWeightsUsesEveryHost(self):
        balancer, _ = lb(RANDOM, hosts(("a", 1), ("b", 1), ("c", 1)),
                         rng=random.Random(2).random)
        tally = Tally(names(balancer, 3000))
        for n in "abc":
            self.assertTrue(800 < tally[n] < 1200, tally)


class LeastRequestTests(SynchronousTestCase):
    """LEAST_REQUEST: power of two choices on this worker's rq_active."""

    def test_prefersIdleHost(self):
        """
        With two hosts and two choices, the busy one only wins when both
        samples land on it (a quarter of the time).
        """
        hs = hosts(("busy", 1), ("idle", 1))
        hs[0].statsFor("worker_0").rq_active = 5
        balancer, _ = lb(LEAST_REQUEST, hs, rng=random.Random(3).random)
        tally = Tally(names(balancer, 1000))
        self.assertTrue(tally["idle"] > 700, tally)

    def test_choiceCount(self):
        """More choices, fewer picks of the busy host."""
        hs = hosts(("busy", 1), ("idle", 1))
        hs[0].statsFor("worker_0").rq_active = 5
        balancer, _ = lb(LEAST_REQUEST, hs, rng=random.Random(3).random, choiceCount=5)
        tally = Tally(names(balancer, 1000))
        self.assertTrue(tally["idle"] > 940, tally)

    def test_perWorker(self):
        """Another worker's active requests do not count here."""
        hs = hosts(("a", 1), ("b", 1))
        hs[0].statsFor("worker_1").rq_active = 50
        balancer, _ = lb(LEAST_REQUEST, hs, rng=random.Random(4).random)
        tally = Tally(names(balancer, 2000))
        self.assertTrue(800 < tally["a"] < 1200, tally)

    def test_weightedScalesByActiveRequests(self):
        """
        With unequal weights, a host's weight is divided by its active
        requests plus one: a heavy but loaded host yields to a light idle
        one.
        """
        hs = hosts(("heavy", 4), ("light", 1))
        hs[0].statsFor("worker_0").rq_active = 9
        balancer, _ = lb(LEAST_REQUEST, hs)
        tally = Tally(names(balancer, 1400))
        # Effective weights 0.4 and 1: light gets about 1/1.4 of picks.
        self.assertTrue(900 < tally["light"] < 1100, tally)

    def test_weightedIdle(self):
        hs = hosts(("heavy", 3), ("light", 1))
        balancer, _ = lb(LEAST_REQUEST, hs)
        tally = Tally(names(balancer, 400))
        self.assertAlmostEqual(tally["heavy"], 300, delta=3)


class NoHostTests(SynchronousTestCase):
    """A cluster with nothing to offer."""

    def test_noHosts(self):
        """
        No hosts: C{None}, and Envoy counts C{lb_healthy_panic} (an empty
        level is in panic).
        """
        for policy in (ROUND_ROBIN, RANDOM, LEAST_REQUEST):
            balancer, panic = lb(policy, [])
            self.assertIsNone(balancer.chooseHost())
            self.assertEqual(panic.value, 1)

    def test_emptyClusterThroughThreadLocal(self):
        reactor = Clock()
        store = StatsStore()
        cm = ClusterManager(reactor, store, store.shard("main_thread"), [clusterProto("empty")])
        tlc = cm.createThreadLocal(FakeDispatcher(reactor, "worker_0", store)) \
            .getThreadLocalCluster("empty")
        self.assertIsNone(tlc.chooseHost())
        self.assertIsNone(tlc.chooseHost(None))
        self.assertEqual(store.counterValue("cluster.empty.lb_healthy_panic"), 2)

    def test_noHealthyPanicDisabled(self):
        """With healthy_panic_threshold 0 and no healthy host: C{None}."""
        balancer, panic = lb(ROUND_ROBIN, hosts(("a", 1, 0, (FAILED_EDS_HEALTH,))),
                             healthyPanicThreshold=0)
        self.assertIsNone(balancer.chooseHost())
        self.assertEqual(panic.value, 0)


class PriorityAndPanicTests(SynchronousTestCase):
    """Envoy's priority levels and panic mode."""

    def test_priorityLoad(self):
        """
        Half of P0 healthy: 50% x 1.4 = 70% stays on P0, 30% spills to P1.
        """
        self.assertEqual(computePriorityLoad([(10, 5, 0), (10, 10, 0)]),
                         ([70, 30], [0, 0], 100))
        self.assertEqual(computePriorityLoad([(4, 4, 0), (4, 4, 0)]),
                         ([100, 0], [0, 0], 100))

    def test_priorityLoadNothingAvailable(self):
        self.assertEqual(computePriorityLoad([(2, 0, 0), (2, 0, 0)]),
                         ([100, 0], [0, 0], 0))

    def test_degradedLoad(self):
        """Degraded hosts take what the healthy ones cannot."""
        healthy, degraded, total = computePriorityLoad([(10, 5, 5)])
        self.assertEqual((healthy, degraded, total), ([70], [30], 100))

    def test_failoverToNextPriority(self):
        """A P0 with no healthy host sends everything to P1."""
        hs = hosts(("p0", 1, 0, (FAILED_EDS_HEALTH,)), ("p1a", 1, 1), ("p1b", 1, 1))
        balancer, panic = lb(ROUND_ROBIN, hs)
        self.assertEqual(set(names(balancer, 10)), {"p1a", "p1b"})
        self.assertEqual(panic.value, 0)

    def test_spillover(self):
        """Half of P0 unhealthy: about 30% of picks land on P1."""
        hs = hosts(("a", 1), ("b", 1, 0, (FAILED_EDS_HEALTH,)), ("c", 1, 1))
        balancer, _ = lb(ROUND_ROBIN, hs, rng=random.Random(5).random)
        tally = Tally(names(balancer, 2000))
        self.assertEqual(tally["b"], 0)
        self.assertTrue(0.25 < tally["c"] / 2000 < 0.35, tally)

    def test_panic(self):
        """
        One healthy host out of three (33% < 50%): panic, balance over all
        hosts, and count C{lb_healthy_panic} per pick.
        """
        hs = hosts(("a", 1), ("b", 1, 0, (FAILED_EDS_HEALTH,)), ("c", 1, 0, (FAILED_EDS_HEALTH,)))
        balancer, panic = lb(ROUND_ROBIN, hs)
        self.assertEqual(set(names(balancer, 6)), {"a", "b", "c"})
        self.assertEqual(panic.value, 6)

    def test_notInPanicAboveThreshold(self):
        hs = hosts(("a", 1), ("b", 1), ("c", 1, 0, (FAILED_EDS_HEALTH,)))
        balancer, panic = lb(ROUND_ROBIN, hs)
        self.assertEqual(set(names(balancer, 6)), {"a", "b"})
        self.assertEqual(panic.value, 0)

    def test_degradedUsedLast(self):
        """A degraded host gets no traffic while healthy hosts suffice."""
        hs = hosts(("a", 1), ("b", 1), ("d", 1, 0, (DEGRADED_EDS_HEALTH,)))
        balancer, _ = lb(ROUND_ROBIN, hs)
        self.assertEqual(set(names(balancer, 6)), {"a", "b"})

    def test_newHostsResetState(self):
        balancer, _ = lb(ROUND_ROBIN, hosts(("a", 1)))
        self.assertEqual(names(balancer, 2), ["a", "a"])
        balancer.setHosts(hosts(("x", 1), ("y", 1)))
        self.assertEqual(set(names(balancer, 4)), {"x", "y"})
