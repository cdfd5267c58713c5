"""
Tests for L{txenvoy.upstream.bounded_load}: Envoy's consistent hashing with
bounded loads.
"""

from twisted.trial.unittest import SynchronousTestCase

from txenvoy.upstream.bounded_load import BoundedLoadTable, _uniformInt, mt19937
from txenvoy.upstream.host import Host
from txenvoy.upstream.ring_hash_lb import Ring
from txenvoy.upstream.thread_aware_lb import normalizeHostWeights


def busy(host, n, worker="worker_0"):
    host.statsFor(worker).rq_active = n


class Mt19937Tests(SynchronousTestCase):
    """The engine Envoy seeds with the hash, output for output."""

    def test_matchesLibstdcxx(self):
        """C{std::mt19937(seed)()} values from libstdc++ (the seed's low 32 bits)."""
        self.assertEqual([mt19937(0).getrandbits(32) for _ in range(1)], [2357136044])
        r = mt19937(12345)
        self.assertEqual([r.getrandbits(32) for _ in range(3)],
                         [3992670690, 3823185381, 1358822685])
        r = mt19937(0xDEADBEEFCAFEBABE)
        self.assertEqual([r.getrandbits(32) for _ in range(3)],
                         [2225186022, 2519076155, 3281398375])

    def test_uniformInt(self):
        r = mt19937(1)
        self.assertTrue(all(0 <= _uniformInt(r, 5) < 5 for _ in range(100)))


class BoundedLoadTests(SynchronousTestCase):
    """A host over its share hands the request on, in a hash-seeded order."""

    def setUp(self):
        self.hosts = [Host(("127.0.0.1", p)) for p in range(1, 5)]
        normalized, lo, hi = normalizeHostWeights(self.hosts)
        self.ring = Ring(normalized, lo, 64, 1024, "XX_HASH", False)
        self.table = BoundedLoadTable(self.ring, normalized, 150)

    def test_idlePicksTheRingsHost(self):
        for h in (1, 2 ** 40, 2 ** 63):
            self.assertIs(self.table.chooseHost(h), self.ring.chooseHost(h))

    def test_overloadedHandsOn(self):
        """
        With 6 requests on the ring's host and none elsewhere, its slots are
        ceil(ceil(7 * 150 / 100) * 0.25) = 3: it is skipped, the same way
        for the same hash.
        """
        h = 2 ** 40
        first = self.ring.chooseHost(h)
        busy(first, 6)
        other = self.table.chooseHost(h)
        self.assertIsNot(other, first)
        self.assertIs(self.table.chooseHost(h), other)

    def test_allOverloadedLeastWins(self):
        """Every host over its share: the least overloaded one."""
        h = 7
        for i, host in enumerate(self.hosts):
            busy(host, 40 + i)
        first = self.ring.chooseHost(h)
        busy(first, 100)
        self.assertIs(self.table.chooseHost(h), self.hosts[0] if first is not self.hosts[0]
                      else self.hosts[1])

    def test_countsEveryWorker(self):
        """Active requests are summed over the workers, as Envoy's host stats."""
        h = 2 ** 40
        first = self.ring.chooseHost(h)
        busy(first, 3, "worker_0")
        busy(first, 3, "worker_1")
        self.assertIsNot(self.table.chooseHost(h), first)
