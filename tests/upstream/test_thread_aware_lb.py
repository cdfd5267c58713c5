"""
Tests for L{txenvoy.upstream.thread_aware_lb}: priorities, health and panic
around the consistent-hash tables, as Envoy's C{ThreadAwareLoadBalancerBase}.
"""

import random

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from txenvoy.interfaces import ILoadBalancer
from txenvoy.stats.store import Counter, StatsStore
from txenvoy.upstream.host import DEGRADED_EDS_HEALTH, FAILED_EDS_HEALTH, Host
from txenvoy.upstream.load_balancer import LbConfig
from txenvoy.upstream.maglev_lb import MaglevConfig
from txenvoy.upstream.ring_hash_lb import RingHashConfig
from txenvoy.upstream.retry_host_selection import PREVIOUS_HOSTS, RetryHostSelection
from txenvoy.upstream.thread_aware_lb import (
    MainThreadTables,
    TableCache,
    ThreadAwareLoadBalancer,
    normalizeHostWeights,
)


class Key:
    """A load balancer context with a fixed hash."""

    def __init__(self, h):
        self.h = h

    def computeHashKey(self):
        return self.h


def host(port, priority=0, flags=(), weight=1):
    return Host(("127.0.0.1", port), priority=priority, healthFlags=flags, weight=weight)


def balancer(hosts, table=None, threshold=50.0):
    panic = Counter()
    table = table or RingHashConfig(minimumRingSize=64)
    lb = ThreadAwareLoadBalancer(LbConfig("RING_HASH", healthyPanicThreshold=threshold),
                                 TableCache(table), "worker_0", panic,
                                 random.Random(5).random)
    lb.setHosts(hosts)
    return lb, panic


class ThreadAwareTests(SynchronousTestCase):
    """Host choice around the hash table."""

    def test_provides(self):
        lb, _ = balancer([host(1)])
        self.assertTrue(verifyObject(ILoadBalancer, lb))

    def test_sameKeySameHost(self):
        """A key always lands on the same host; different keys spread."""
        hosts = [host(p) for p in range(4)]
        lb, _ = balancer(hosts)
        for h in (1, 2 ** 40, 2 ** 63 + 7):
            self.assertEqual({lb.chooseHost(Key(h)) for _ in range(5)}, {lb.chooseHost(Key(h))})
        self.assertEqual(len({lb.chooseHost(Key(random.Random(i).getrandbits(64)))
                              for i in range(200)}), 4)

    def test_noHashIsRandom(self):
        """
        Without a hash (no context, or no policy matched) Envoy uses a
        random one: every host gets some.
        """
        lb, _ = balancer([host(p) for p in range(3)])
        self.assertEqual(len({lb.chooseHost() for _ in range(100)}), 3)
        self.assertEqual(len({lb.chooseHost(Key(None)) for _ in range(100)}), 3)

    def test_unhealthyLeaveTheRing(self):
        """
        The ring holds healthy hosts only: a key of an unhealthy host moves,
        most others stay where they were (the survivors get a few more
        points each, as the ring is rebuilt to the same minimum size).
        """
        hosts = [host(p) for p in range(4)]
        lb, _ = balancer(hosts)
        keys = [random.Random(i).getrandbits(64) for i in range(300)]
        before = [lb.chooseHost(Key(k)) for k in keys]
        sick = [host(p, flags=(FAILED_EDS_HEALTH,)) if p == 0 else hosts[p] for p in range(4)]
        lb.setHosts(sick)
        after = [lb.chooseHost(Key(k)) for k in keys]
        stayed = moved = 0
        for b, a in zip(before, after):
            self.assertNotEqual(a.address[1], 0)
            if b.address[1] != 0:
                if a is b:
                    stayed += 1
                else:
                    moved += 1
        self.assertGreater(stayed, 4 * moved)

    def test_panicUsesAllHosts(self):
        """
        Below the panic threshold the ring is rebuilt over every host, and
        C{lb_healthy_panic} counts each pick.
        """
        hosts = [host(p, flags=(FAILED_EDS_HEALTH,) if p else ()) for p in range(4)]
        lb, panic = balancer(hosts)
        chosen = {lb.chooseHost(Key(random.Random(i).getrandbits(64))) for i in range(200)}
        self.assertEqual(len(chosen), 4)
        self.assertEqual(panic.value, 200)

    def test_noHealthyPanicDisabled(self):
        """Nothing healthy and panic disabled: no host."""
        lb, _ = balancer([host(1, flags=(FAILED_EDS_HEALTH,))], threshold=0)
        self.assertIsNone(lb.chooseHost(Key(3)))

    def test_priorityByHash(self):
        """
        The level comes from C{hash % 100 + 1} against the priority loads
        (Envoy's choosePriority): P0 with 1 healthy of 2 takes 70%.
        """
        hosts = [host(1), host(2, flags=(FAILED_EDS_HEALTH,)), host(3, priority=1)]
        lb, _ = balancer(hosts)
        self.assertEqual(lb.chooseHost(Key(69)).priority, 0)
        self.assertEqual(lb.chooseHost(Key(70)).priority, 1)
        self.assertEqual(lb.chooseHost(Key(199)).priority, 1)

    def test_degradedOnlyNoHost(self):
        """
        Envoy builds each level's table over its healthy hosts: a level
        whose hosts are all degraded has an empty table and answers none.
        """
        lb, _ = balancer([host(1, flags=(DEGRADED_EDS_HEALTH,))])
        self.assertIsNone(lb.chooseHost(Key(3)))

    def test_maglev(self):
        """The same frame drives a Maglev table."""
        lb, _ = balancer([host(p) for p in range(3)], MaglevConfig(tableSize=13))
        self.assertEqual(len({lb.chooseHost(Key(k)) for k in range(13)}), 3)


class TableCacheTests(SynchronousTestCase):
    """Workers with the same host list share one table."""

    def test_shared(self):
        built = []

        def build(normalized, lo, hi):
            built.append(normalized)
            return object()

        policy = RingHashConfig()
        policy.buildTable = build
        cache = TableCache(policy)
        hosts = [host(1), host(2)]
        self.assertIs(cache.tableFor(hosts), cache.tableFor(list(hosts)))
        self.assertEqual(len(built), 1)
        cache.tableFor([hosts[0]])
        self.assertEqual(len(built), 2)

    def test_normalize(self):
        """Weights over their sum; the bounds Envoy tracks."""
        a, b = host(1, weight=1), host(2, weight=3)
        self.assertEqual(normalizeHostWeights([a, b]), ([(a, 0.25), (b, 0.75)], 0.25, 0.75))


class MainThreadTablesTests(SynchronousTestCase):
    """The tables the main thread builds at each update, for Envoy's gauges."""

    def test_gauges(self):
        """
        C{ring_hash_lb.*} follow the last level with hosts; the workers then
        find the same table in the cache.
        """
        store = StatsStore()
        scope = store.shard("main_thread").scope("cluster.c.")
        config = LbConfig("RING_HASH")
        config.hashing = TableCache(RingHashConfig(minimumRingSize=10))
        tables = MainThreadTables(config, scope)
        hosts = [host(1), host(2, weight=3)]
        tables.refresh(hosts)
        self.assertEqual(store.gaugeValue("cluster.c.ring_hash_lb.size"), 12)
        self.assertEqual(store.gaugeValue("cluster.c.ring_hash_lb.min_hashes_per_host"), 3)
        self.assertEqual(store.gaugeValue("cluster.c.ring_hash_lb.max_hashes_per_host"), 9)
        self.assertIs(config.hashing.tableFor([h for h in hosts]),
                      config.hashing.tableFor(hosts))
        tables.refresh([])
        self.assertEqual(store.gaugeValue("cluster.c.ring_hash_lb.size"), 12)

    def test_maglevGauges(self):
        store = StatsStore()
        config = LbConfig("MAGLEV")
        config.hashing = TableCache(MaglevConfig(tableSize=7))
        MainThreadTables(config, store.shard("main_thread").scope("cluster.c.")).refresh(
            [host(1), host(2)])
        self.assertEqual(store.gaugeValue("cluster.c.maglev_lb.min_entries_per_host"), 3)
        self.assertEqual(store.gaugeValue("cluster.c.maglev_lb.max_entries_per_host"), 4)


class InPriorityTests(SynchronousTestCase):
    """An aggregate cluster picks the level; the hash still picks the host."""

    def test_chooseHostInPriority(self):
        hosts = [host(1), host(2), host(3, priority=1), host(4, priority=1)]
        lb, _ = balancer(hosts)
        for k in (1, 2 ** 40, 2 ** 63):
            chosen = lb.chooseHostInPriority(1, False, Key(k))
            self.assertEqual(chosen.priority, 1)
            self.assertIs(chosen, lb.chooseHostInPriority(1, False, Key(k)))
        self.assertIsNone(lb.chooseHostInPriority(5))


class RetryHostPredicateTests(SynchronousTestCase):
    """
    Envoy's ThreadAwareLoadBalancerBase retries host selection as the
    context allows, moving on in the table, until it accepts a host.
    """

    def test_movesOn(self):
        hosts = [host(p) for p in range(3)]
        lb, _ = balancer(hosts)
        first = lb.chooseHost(Key(12345))
        selection = RetryHostSelection((PREVIOUS_HOSTS,), maxAttempts=3)
        selection.onHostAttempted(first)
        context = Key(12345)
        context.retryHostSelection = selection
        other = lb.chooseHost(context)
        self.assertIsNot(other, first)
        ring = lb._picker(0, 0)
        self.assertIn(other, [ring.chooseHost(12345, a) for a in range(1, 4)])
