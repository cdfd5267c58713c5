"""
The cluster's C{load_balancing_policy} (typed
C{envoy.load_balancing_policies.*} extensions) as Envoy 1.40 reads it.
"""

from twisted.trial.unittest import SynchronousTestCase

# Imported for their descriptors: the typed configs below name them.
from envoy.extensions.load_balancing_policies.client_side_weighted_round_robin.v3 import (  # noqa: F401,E501
    client_side_weighted_round_robin_pb2,
)
from envoy.extensions.load_balancing_policies.maglev.v3 import maglev_pb2  # noqa: F401
from envoy.extensions.load_balancing_policies.random.v3 import random_pb2  # noqa: F401
from envoy.extensions.load_balancing_policies.ring_hash.v3 import ring_hash_pb2  # noqa: F401
from envoy.extensions.load_balancing_policies.round_robin.v3 import (  # noqa: F401
    round_robin_pb2,
)
from envoy.extensions.load_balancing_policies.wrr_locality.v3 import (  # noqa: F401
    wrr_locality_pb2,
)
from txenvoy.config.errors import ConfigError, UnsupportedExtension
from txenvoy.upstream.cluster import compileCluster
from txenvoy.upstream.hashing import murmurHash2
from txenvoy.upstream.host import Host

from tests.upstream.test_fakes import clusterProto, endpoint

PATH = "clusters[0]"
PREFIX = "type.googleapis.com/envoy.extensions.load_balancing_policies."


def policy(name, typeName, **fields):
    return {"typed_extension_config": {
        "name": "envoy.load_balancing_policies." + name,
        "typed_config": dict({"@type": PREFIX + typeName}, **fields)}}


def compile(*policies):
    return compileCluster(clusterProto("c1", [endpoint("127.0.0.1", 1)],
                                       load_balancing_policy={"policies": list(policies)}),
                          PATH)[0].lbConfig


class LoadBalancingPolicyTests(SynchronousTestCase):
    """Each policy Envoy has: used, mapped onto txenvoy's, or refused by path."""

    def test_ringHash(self):
        """
        The RingHash extension's own fields; its deprecated
        C{use_hostname_for_hashing} counts unless
        C{consistent_hashing_lb_config} is given.
        """
        cfg = compile(policy("ring_hash", "ring_hash.v3.RingHash", minimum_ring_size=4,
                             maximum_ring_size=4, hash_function="MURMUR_HASH_2",
                             use_hostname_for_hashing=True))
        table = cfg.hashing.tableFor([Host(("127.0.0.1", 1), hostname="h")])
        self.assertEqual(sorted(murmurHash2(b"h_%d" % i) for i in range(4)), table.hashes)
        cfg = compile(policy("ring_hash", "ring_hash.v3.RingHash", minimum_ring_size=1,
                             use_hostname_for_hashing=True,
                             consistent_hashing_lb_config={"use_hostname_for_hashing": False}))
        self.assertEqual(cfg.hashing.policy.useHostnameForHashing, False)

    def test_maglevNotPrime(self):
        e = self.assertRaises(ConfigError, compile,
                              policy("maglev", "maglev.v3.Maglev", table_size=10))
        self.assertEqual(str(e), PATH + ".load_balancing_policy.policies[0].typed_extension_"
                         "config.typed_config.table_size: The table size of maglev must be "
                         "prime number")

    def test_localityWeighted(self):
        """
        RoundRobin and Random's C{locality_lb_config.locality_weighted_lb_config}
        is common_lb_config's locality weighting.
        """
        for name, typeName in (("round_robin", "round_robin.v3.RoundRobin"),
                               ("random", "random.v3.Random")):
            cfg = compile(policy(name, typeName,
                                 locality_lb_config={"locality_weighted_lb_config": {}}))
            self.assertIsNotNone(cfg.localityWeights)

    def test_firstEnvoyPolicyIsRefused(self):
        """
        Envoy uses the first policy it has; it has client side weighted
        round robin, so txenvoy refuses it rather than use the next one.
        """
        e = self.assertRaises(
            UnsupportedExtension, compile,
            policy("client_side_weighted_round_robin",
                   "client_side_weighted_round_robin.v3.ClientSideWeightedRoundRobin"),
            policy("round_robin", "round_robin.v3.RoundRobin"))
        self.assertIn(PATH + ".load_balancing_policy.policies[0]", str(e))

    def test_wrrLocality(self):
        """Envoy's WrrLocality takes only client side weighted round robin."""
        e = self.assertRaises(ConfigError, compile, policy(
            "wrr_locality", "wrr_locality.v3.WrrLocality", endpoint_picking_policy={
                "policies": [policy("round_robin", "round_robin.v3.RoundRobin")]}))
        self.assertIn("endpoint_picking_policy: Currently WrrLocalityLoadBalancer only "
                      "supports ClientSideWeightedRoundRobinLoadBalancer", str(e))

    def test_ownHashPolicy(self):
        """
        The extension's C{consistent_hashing_lb_config.hash_policy} is
        compiled as a route's, with its own field path.
        """
        cfg = compile(policy("maglev", "maglev.v3.Maglev", consistent_hashing_lb_config={
            "hash_policy": [{"header": {"header_name": "X-LB"}}]}))
        self.assertEqual([(p.kind, p.name) for p in cfg.hashing.policy.hashPolicies],
                         [("header", b"x-lb")])
        e = self.assertRaises(ConfigError, compile, policy(
            "ring_hash", "ring_hash.v3.RingHash",
            consistent_hashing_lb_config={"hash_policy": [{"terminal": True}]}))
        self.assertIn(PATH + ".load_balancing_policy.policies[0].typed_extension_config."
                      "typed_config.consistent_hashing_lb_config.hash_policy[0]", str(e))
