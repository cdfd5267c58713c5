"""
Tests for L{txenvoy.upstream.ring_hash_lb}: Envoy's ring, point for point.
"""

import random

from twisted.trial.unittest import SynchronousTestCase

from txenvoy.config.errors import ConfigError
from txenvoy.upstream.cluster import compileCluster
from txenvoy.upstream.hashing import murmurHash2, xxHash64
from txenvoy.upstream.host import Host
from txenvoy.upstream.ring_hash_lb import MURMUR_HASH_2, XX_HASH, Ring, RingHashConfig
from txenvoy.upstream.thread_aware_lb import normalizeHostWeights

from tests.upstream.test_fakes import clusterProto, endpoint


def ring(hosts, minSize=1024, maxSize=8 * 1024 * 1024, fn=XX_HASH, useHostname=False):
    normalized, lo, hi = normalizeHostWeights(hosts)
    return Ring(normalized, lo, minSize, maxSize, fn, useHostname)


def local(port, weight=1, hostname=""):
    return Host(("127.0.0.1", port), hostname=hostname, weight=weight)


def ketama(hashes, h):
    """Envoy's search as written (ported from libketama), for comparison."""
    lowp, highp = 0, len(hashes)
    while True:
        midp = (lowp + highp) // 2
        if midp == len(hashes):
            return 0
        midval = hashes[midp]
        midval1 = 0 if midp == 0 else hashes[midp - 1]
        if midval >= h > midval1:
            return midp
        if midval < h:
            lowp = midp + 1
        else:
            highp = midp - 1
        if lowp > highp:
            return 0


class RingTests(SynchronousTestCase):
    """How Envoy's C{RingHashLoadBalancer::Ring} is built and searched."""

    def test_points(self):
        """
        Host C{k} gets the points C{xxHash64("<ip:port>_<i>")}, sorted; two
        equal hosts share a 1024-point ring equally.
        """
        a, b = local(10080), local(10081)
        r = ring([a, b])
        self.assertEqual(len(r.hashes), 1024)
        self.assertEqual(r.size, 1024)
        self.assertEqual((r.minHashesPerHost, r.maxHashesPerHost), (512, 512))
        self.assertEqual(r.hashes, sorted(r.hashes))
        i = r.hashes.index(xxHash64(b"127.0.0.1:10080_0"))
        self.assertIs(r.hosts[i], a)
        self.assertIn(xxHash64(b"127.0.0.1:10081_511"), r.hashes)
        self.assertNotIn(xxHash64(b"127.0.0.1:10081_512"), r.hashes)

    def test_weightsScaleTheLightestToWholePoints(self):
        """
        Envoy scales so that the lightest host gets C{ceil(w * min)} points:
        weights 1 and 3 with a minimum of 10 give a ring of 12, 3 and 9.
        """
        r = ring([local(1, 1), local(2, 3)], minSize=10)
        self.assertEqual(r.size, 12)
        self.assertEqual((r.minHashesPerHost, r.maxHashesPerHost), (3, 9))

    def test_maximumCaps(self):
        """
        Past C{maximum_ring_size} the scale is capped and running sums give
        fractional shares whole points (Envoy's 4 hosts on a ring of 6 get
        2, 1, 2, 1).
        """
        hosts = [local(p) for p in range(4)]
        r = ring(hosts, minSize=1024, maxSize=6)
        self.assertEqual(r.size, 6)
        self.assertEqual([r.hosts.count(h) for h in hosts], [2, 1, 2, 1])

    def test_murmur(self):
        """MURMUR_HASH_2 hashes the same keys with Envoy's MurmurHash2."""
        r = ring([local(10080)], minSize=3, fn=MURMUR_HASH_2)
        self.assertEqual(sorted(murmurHash2(b"127.0.0.1:10080_%d" % i) for i in range(3)),
                         r.hashes)

    def test_hostname(self):
        """C{use_hostname_for_hashing} hashes the hostname instead."""
        r = ring([local(10080, hostname="web")], minSize=2, useHostname=True)
        self.assertEqual(sorted([xxHash64(b"web_0"), xxHash64(b"web_1")]), r.hashes)

    def test_hashKeyMetadata(self):
        """An endpoint's C{envoy.lb} C{hash_key} metadata replaces both."""
        host = local(10080, hostname="web")
        host.hashKey = "key"
        r = ring([host], minSize=1, useHostname=True)
        self.assertEqual([xxHash64(b"key_0")], r.hashes)

    def test_searchIsKetama(self):
        """
        A key goes to the first point at or above its hash, wrapping to the
        first point: the same answer as Envoy's Ketama search, including
        exact hits, 0 and the largest hash.
        """
        r = ring([local(p) for p in range(5)], minSize=50)
        rng = random.Random(3)
        probes = [rng.getrandbits(64) for _ in range(500)]
        probes += r.hashes[:5] + [0, r.hashes[-1] + 1, (1 << 64) - 1]
        for h in probes:
            self.assertIs(r.chooseHost(h), r.hosts[ketama(r.hashes, h)])

    def test_attempt(self):
        """A retry attempt moves that many points on (Envoy's host predicates)."""
        r = ring([local(p) for p in range(3)], minSize=6)
        h = r.hashes[2]
        self.assertIs(r.chooseHost(h, 2), r.hosts[4])

    def test_emptyRing(self):
        """No hosts (or a minimum of 0): no host, never an error."""
        self.assertIsNone(ring([]).chooseHost(1))
        self.assertIsNone(ring([local(1)], minSize=0).chooseHost(1))

    def test_envoyPicks(self):
        """
        Real Envoy 1.40 with C{shared/envoy-examples/08}'s ring (127.0.0.1
        ports 10080 and 10081, defaults) sends C{x-user: a} and C{b} to
        10080 and C{c} to 10081.
        """
        a, b = local(10080), local(10081)
        r = ring([a, b])
        self.assertEqual([r.chooseHost(xxHash64(k)).address[1] for k in (b"a", b"b", b"c")],
                         [10080, 10080, 10081])


class CompileTests(SynchronousTestCase):
    """C{lb_policy: RING_HASH} and C{ring_hash_lb_config} as Envoy reads them."""

    def compile(self, **fields):
        return compileCluster(clusterProto("c1", [endpoint("127.0.0.1", 1)], **fields),
                              "clusters[0]")[0].lbConfig

    def test_defaults(self):
        cfg = self.compile(lb_policy="RING_HASH")
        self.assertEqual(cfg.policy, "RING_HASH")
        self.assertIsNotNone(cfg.hashing)

    def test_fields(self):
        cfg = self.compile(lb_policy="RING_HASH", ring_hash_lb_config={
            "minimum_ring_size": 8, "maximum_ring_size": 16, "hash_function": "MURMUR_HASH_2"},
            common_lb_config={"consistent_hashing_lb_config": {"use_hostname_for_hashing": True}})
        table = cfg.hashing.tableFor([Host(("127.0.0.1", 1), hostname="h")])
        self.assertEqual(sorted(murmurHash2(b"h_%d" % i) for i in range(8)), table.hashes)

    def test_minimumAboveMaximum(self):
        """Envoy's message, with the field path."""
        e = self.assertRaises(ConfigError, self.compile, lb_policy="RING_HASH",
                              ring_hash_lb_config={"minimum_ring_size": 2000,
                                                   "maximum_ring_size": 1000})
        self.assertEqual(str(e), "clusters[0].ring_hash_lb_config: ring hash: "
                                 "minimum_ring_size (2000) > maximum_ring_size (1000)")

    def test_otherPolicyIgnoresIt(self):
        """
        Envoy accepts a ring_hash_lb_config on a ROUND_ROBIN cluster (and does
        not check its sizes against each other there).
        """
        cfg = self.compile(lb_policy="ROUND_ROBIN", ring_hash_lb_config={
            "minimum_ring_size": 2000, "maximum_ring_size": 1000})
        self.assertIsNone(cfg.hashing)

    def test_boundedLoad(self):
        """C{hash_balance_factor} wraps each ring in a bounded-load table."""
        cfg = self.compile(lb_policy="RING_HASH", common_lb_config={
            "consistent_hashing_lb_config": {"hash_balance_factor": 150}})
        table = cfg.hashing.tableFor([Host(("127.0.0.1", 1))])
        self.assertEqual(table.factor, 150)

    def test_hashKeyFromMetadata(self):
        """
        An endpoint's C{metadata.filter_metadata["envoy.lb"].hash_key} string
        becomes its host's hash key; other kinds are ignored as in Envoy.
        """
        info, endpoints = compileCluster(clusterProto("c1", [
            dict(endpoint("127.0.0.1", 1),
                 metadata={"filter_metadata": {"envoy.lb": {"hash_key": "k1"}}}),
            dict(endpoint("127.0.0.1", 2),
                 metadata={"filter_metadata": {"envoy.lb": {"hash_key": 7}}}),
            endpoint("127.0.0.1", 3)], lb_policy="RING_HASH"), "clusters[0]")
        self.assertEqual([ep.makeHost("c1").hashKey for ep in endpoints], ["k1", "", ""])
