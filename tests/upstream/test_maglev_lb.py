"""
Tests for L{txenvoy.upstream.maglev_lb}: Envoy's Maglev table, slot for slot.
"""

from twisted.trial.unittest import SynchronousTestCase

from txenvoy.config.errors import ConfigError
from txenvoy.upstream.cluster import compileCluster
from txenvoy.upstream.hashing import xxHash64
from txenvoy.upstream.host import Host
from txenvoy.upstream.maglev_lb import MaglevTable, isPrime
from txenvoy.upstream.thread_aware_lb import normalizeHostWeights

from tests.upstream.test_fakes import clusterProto, endpoint


def table(hosts, size=65537, useHostname=False):
    normalized, lo, hi = normalizeHostWeights(hosts)
    return MaglevTable(normalized, hi, size, useHostname)


def local(port, weight=1):
    return Host(("127.0.0.1", port), weight=weight)


class MaglevTableTests(SynchronousTestCase):
    """How Envoy's C{MaglevTable} is filled."""

    def test_firstHostTakesItsOffset(self):
        """
        Hosts take turns in hash key order; the first one's first slot is
        C{xxHash64(key) % M}.
        """
        b, a = local(10081), local(10080)
        t = table([b, a], size=7)
        self.assertEqual(t.hosts, (a, b))
        self.assertIs(t.chooseHost(xxHash64(b"127.0.0.1:10080") % 7), a)

    def test_permutation(self):
        """
        A lone host fills every slot; two hosts fill the paper's way: each
        claims the next free slot of its permutation in turn.
        """
        a, b = local(10080), local(10081)
        m = 13
        t = table([a, b], size=m)
        slots = [None] * m
        perms = {}
        for h, key in ((a, b"127.0.0.1:10080"), (b, b"127.0.0.1:10081")):
            perms[h] = [(xxHash64(key) % m + (xxHash64(key, 1) % (m - 1) + 1) * j) % m
                        for j in range(m)]
        nexts = {a: 0, b: 0}
        filled = 0
        while filled < m:
            for h in (a, b):
                if filled == m:
                    break
                while slots[perms[h][nexts[h]]] is not None:
                    nexts[h] += 1
                slots[perms[h][nexts[h]]] = h
                nexts[h] += 1
                filled += 1
        self.assertEqual([t.chooseHost(i) for i in range(m)], slots)

    def test_balanced(self):
        """Equal hosts get within one slot of an equal share."""
        t = table([local(p) for p in range(3)])
        self.assertLessEqual(t.maxEntriesPerHost - t.minEntriesPerHost, 1)

    def test_weighted(self):
        """A host of weight 3 gets three times the slots of weight 1."""
        t = table([local(1, 1), local(2, 3)])
        self.assertEqual(t.minEntriesPerHost, 16385)
        self.assertEqual(t.maxEntriesPerHost, 65537 - 16385)

    def test_attempt(self):
        """A retry xors the hash with C{2**64 - attempt}, as Envoy does."""
        t = table([local(p) for p in range(3)], size=11)
        self.assertIs(t.chooseHost(5, 1), t.chooseHost(5 ^ ((1 << 64) - 1)))

    def test_empty(self):
        self.assertIsNone(table([]).chooseHost(3))

    def test_envoyPick(self):
        """
        Real Envoy 1.40 with C{shared/envoy-examples/08}'s Maglev cluster
        sends a client at 127.0.0.1 (source_ip policy) to port 10081.
        """
        t = table([local(10080), local(10081)])
        self.assertEqual(t.chooseHost(xxHash64(b"127.0.0.1")).address[1], 10081)


class CompileTests(SynchronousTestCase):
    """C{lb_policy: MAGLEV} and C{maglev_lb_config}."""

    def compile(self, **fields):
        return compileCluster(clusterProto("c1", [endpoint("127.0.0.1", 1)], **fields),
                              "clusters[0]")[0].lbConfig

    def test_isPrime(self):
        self.assertEqual([n for n in range(30) if isPrime(n)],
                         [2, 3, 5, 7, 11, 13, 17, 19, 23, 29])
        self.assertTrue(isPrime(65537))
        self.assertTrue(isPrime(5000011))

    def test_tableSize(self):
        cfg = self.compile(lb_policy="MAGLEV", maglev_lb_config={"table_size": 7})
        self.assertEqual(cfg.hashing.tableFor([local(1)]).tableSize, 7)

    def test_notPrime(self):
        """Envoy: "The table size of maglev must be prime number"."""
        e = self.assertRaises(ConfigError, self.compile, lb_policy="MAGLEV",
                              maglev_lb_config={"table_size": 65536})
        self.assertEqual(str(e), "clusters[0].maglev_lb_config.table_size: The table size of "
                                 "maglev must be prime number")
