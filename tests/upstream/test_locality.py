"""
Tests for L{txenvoy.upstream.locality} and locality-weighted picking in
L{txenvoy.upstream.load_balancer.LoadBalancer}.
"""

import random
from collections import Counter as Tally

from twisted.trial.unittest import SynchronousTestCase

from tests.upstream.test_fakes import clusterProto, endpoint
from txenvoy.stats.store import Counter
from txenvoy.upstream.cluster import compileCluster
from txenvoy.upstream.host import FAILED_EDS_HEALTH, Host, Locality
from txenvoy.upstream.load_balancer import LbConfig, LoadBalancer
from txenvoy.upstream.locality import effectiveWeights


def host(name, zone, priority=0, healthy=True):
    return Host(("10.0.0.1", 80), hostname=name, priority=priority,
                locality=Locality(zone=zone),
                healthFlags=() if healthy else (FAILED_EDS_HEALTH,))


def tally(balancer, n):
    return Tally(balancer.chooseHost().hostname for _ in range(n))


class EffectiveWeightTests(SynchronousTestCase):

    def test_availabilityTimesWeight(self):
        """
        Envoy's C{effectiveLocalityWeight}: weight x min(1, 1.4 x eligible
        / hosts); no weight or no eligible host leaves a locality out.
        """
        a1, a2 = host("a1", "a"), host("a2", "a", healthy=False)
        b1, b2 = host("b1", "b"), host("b2", "b")
        c1 = host("c1", "c")
        d1 = host("d1", "d", healthy=False)
        weights = {("", "a", ""): 2, ("", "b", ""): 3, ("", "d", ""): 5}
        got = effectiveWeights([a1, a2, b1, b2, c1, d1], [a1, b1, b2, c1], weights, 140)
        self.assertEqual([(k[1], round(w, 6), [h.hostname for h in hs]) for k, w, hs in got],
                         [("a", 1.4, ["a1"]), ("b", 3.0, ["b1", "b2"])])


class LocalityWeightedTests(SynchronousTestCase):

    def balancer(self, hostList, weights, **cfg):
        config = LbConfig(**cfg)
        config.localityWeights = weights
        lb = LoadBalancer(config, panicCounter=Counter(), rng=random.Random(7).random)
        lb.setHosts(hostList)
        return lb

    def test_shares(self):
        """Localities share a level by effective weight, hosts within by policy."""
        lb = self.balancer([host("a1", "a"), host("a2", "a"), host("b1", "b")],
                           {0: {("", "a", ""): 1, ("", "b", ""): 3}})
        self.assertEqual(tally(lb, 400), {"a1": 50, "a2": 50, "b1": 300})

    def test_noWeightNoTraffic(self):
        """A locality without a weight gets nothing while another has one."""
        lb = self.balancer([host("a1", "a"), host("b1", "b")], {0: {("", "a", ""): 1}})
        self.assertEqual(tally(lb, 10), {"a1": 10})

    def test_noLocalityFallsBack(self):
        """With no weighted locality, the level's hosts are used as a whole."""
        lb = self.balancer([host("a1", "a"), host("b1", "b")], {})
        self.assertEqual(tally(lb, 10), {"a1": 5, "b1": 5})

    def test_panicIgnoresLocalities(self):
        """A level in panic balances over all its hosts, localities aside."""
        lb = self.balancer([host("a1", "a", healthy=False), host("b1", "b", healthy=False),
                            host("b2", "b")], {0: {("", "a", ""): 1}})
        self.assertEqual(tally(lb, 30), {"a1": 10, "b1": 10, "b2": 10})

    def test_failTrafficOnPanic(self):
        """C{zone_aware_lb_config.fail_traffic_on_panic}: no host in panic."""
        config = LbConfig()
        config.failTrafficOnPanic = True
        lb = LoadBalancer(config, panicCounter=Counter())
        lb.setHosts([host("a1", "a", healthy=False)])
        self.assertIsNone(lb.chooseHost())


class CompileTests(SynchronousTestCase):

    def test_weights(self):
        """
        C{locality_weighted_lb_config} keeps each priority's locality
        weights (a locality listed twice keeps its last; none is 0).
        """
        ep = [endpoint("10.0.0.1", 80)]
        proto = clusterProto("c1", common_lb_config={"locality_weighted_lb_config": {}},
                             load_assignment={"endpoints": [
                                 {"locality": {"zone": "a"}, "load_balancing_weight": 2,
                                  "lb_endpoints": ep},
                                 {"locality": {"zone": "a"}, "load_balancing_weight": 5,
                                  "lb_endpoints": ep},
                                 {"locality": {"zone": "b"}, "lb_endpoints": ep},
                                 {"locality": {"zone": "a"}, "priority": 1,
                                  "load_balancing_weight": 1, "lb_endpoints": ep}]})
        info, _ = compileCluster(proto, "c")
        self.assertEqual(info.lbConfig.localityWeights, {
            0: {("", "a", ""): 5, ("", "b", ""): 0}, 1: {("", "a", ""): 1}})

    def test_ignoredWithout(self):
        info, _ = compileCluster(clusterProto("c1", [endpoint("10.0.0.1", 80)]), "c")
        self.assertIsNone(info.lbConfig.localityWeights)

    def test_zoneAware(self):
        info, _ = compileCluster(clusterProto("c1", [endpoint("10.0.0.1", 80)],
                                              common_lb_config={"zone_aware_lb_config": {
                                                  "fail_traffic_on_panic": True,
                                                  "min_cluster_size": "3"}}), "c")
        self.assertTrue(info.lbConfig.failTrafficOnPanic)
