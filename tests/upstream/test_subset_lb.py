"""
Tests for L{txenvoy.upstream.subset_lb} and
L{txenvoy.upstream.metadata_match}.
"""

from google.protobuf import json_format
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from envoy.config.core.v3 import base_pb2
from tests.upstream.test_fakes import FakeDispatcher, clusterProto, endpoint, stat
from txenvoy.config.errors import ConfigError
from txenvoy.interfaces import ILoadBalancer
from txenvoy.stats.store import StatsStore
from txenvoy.upstream.cluster import compileCluster
from txenvoy.upstream.cluster_manager import ClusterManager
from txenvoy.upstream.host import Host, Locality
from txenvoy.upstream.load_balancer_context import LoadBalancerContext
from txenvoy.upstream.metadata_match import (
    hostValues,
    mergeCriteria,
    metadataCriteria,
    structCriteria,
)
from txenvoy.upstream.subset_lb import _scaledWeights

PATH = "static_resources.clusters[0]"


def metadata(**values):
    return json_format.ParseDict({"filter_metadata": {"envoy.lb": values}},
                                 base_pb2.Metadata())


def lbEndpoint(ip, **values):
    ep = endpoint(ip, 80)
    ep["metadata"] = {"filter_metadata": {"envoy.lb": values}}
    return ep


def criteria(**values):
    return metadataCriteria(metadata(**values))


class MetadataMatchTests(SynchronousTestCase):

    def test_canonicalValues(self):
        """Equal values compare equal however written (numbers are doubles)."""
        self.assertEqual(criteria(a=1, b="x"), criteria(b="x", a=1.0))
        self.assertNotEqual(criteria(a="1"), criteria(a=1))
        self.assertIsNone(metadataCriteria(base_pb2.Metadata()))

    def test_merge(self):
        """A weighted cluster's criteria win over its route's on shared keys."""
        self.assertEqual(mergeCriteria(criteria(a="1", b="2"), criteria(b="3")),
                         criteria(a="1", b="3"))
        self.assertEqual(mergeCriteria(None, criteria(b="3")), criteria(b="3"))

    def test_hostListValues(self):
        values = hostValues(metadata(tag=["a", "b"], v="1"))
        self.assertEqual(values["tag"], ('["a","b"]', ('"a"', '"b"')))
        self.assertEqual(values["v"], ('"1"', None))
        self.assertEqual(structCriteria(metadata().filter_metadata["envoy.lb"]), ())


class SubsetLoadBalancerTests(SynchronousTestCase):

    def build(self, subsets, endpoints):
        self.store = StatsStore()
        from twisted.internet.task import Clock
        reactor = Clock()
        cm = ClusterManager(reactor, self.store, self.store.shard("main_thread"),
                            [clusterProto("c1", endpoints, lb_subset_config=subsets)])
        tlc = cm.createThreadLocal(FakeDispatcher(reactor, "worker_0", self.store)) \
            .getThreadLocalCluster("c1")
        return tlc

    def pick(self, tlc, **match):
        host = tlc.chooseHost(LoadBalancerContext(metadataMatch=criteria(**match)
                                                  if match else None))
        return host.addressString if host is not None else None

    def test_interfaceAndStats(self):
        tlc = self.build({"subset_selectors": [{"keys": ["v"]}]},
                         [lbEndpoint("10.0.0.1", v="1"), lbEndpoint("10.0.0.2", v="2")])
        verifyObject(ILoadBalancer, tlc.loadBalancer)
        self.assertEqual(self.pick(tlc, v="2"), "10.0.0.2:80")
        self.assertIsNone(self.pick(tlc, v="3"))
        self.assertIsNone(self.pick(tlc))
        s = lambda n: stat(self.store, "cluster.c1.lb_subsets_" + n)  # noqa: E731
        self.assertEqual((s("created"), s("active"), s("selected"), s("fallback")),
                         (2, 2, 1, 0))

    def test_removedWhenEmpty(self):
        tlc = self.build({"subset_selectors": [{"keys": ["v"]}]},
                         [lbEndpoint("10.0.0.1", v="1"), lbEndpoint("10.0.0.2", v="2")])
        tlc.updateHosts(tlc.hosts[:1])
        self.assertEqual(stat(self.store, "cluster.c1.lb_subsets_removed"), 1)
        self.assertEqual(stat(self.store, "cluster.c1.lb_subsets_active"), 1)
        self.assertIsNone(self.pick(tlc, v="2"))

    def test_keysSubsetFallback(self):
        """KEYS_SUBSET: the lookup again with only the fallback keys."""
        tlc = self.build({"subset_selectors": [
            {"keys": ["v"]},
            {"keys": ["v", "s"], "fallback_policy": "KEYS_SUBSET",
             "fallback_keys_subset": ["v"]}]},
            [lbEndpoint("10.0.0.1", v="1", s="a"), lbEndpoint("10.0.0.2", v="2", s="a")])
        self.assertEqual(self.pick(tlc, v="2", s="b"), "10.0.0.2:80")

    def test_defaultSubsetAndPanicAny(self):
        tlc = self.build({"fallback_policy": "DEFAULT_SUBSET", "default_subset": {"v": "9"},
                          "panic_mode_any": True, "subset_selectors": [{"keys": ["v"]}]},
                         [lbEndpoint("10.0.0.1", v="1")])
        self.assertEqual(self.pick(tlc, v="7"), "10.0.0.1:80")
        self.assertEqual(stat(self.store, "cluster.c1.lb_subsets_fallback_panic"), 1)


class ScaleLocalityWeightTests(SynchronousTestCase):

    def test_scaled(self):
        """C{scale_locality_weight}: weight x share of the locality in the subset."""
        a = [Host(("10.0.0.%d" % i, 80), locality=Locality(zone="a")) for i in range(4)]
        b = [Host(("10.0.1.1", 80), locality=Locality(zone="b"))]
        weights = {0: {("", "a", ""): 4, ("", "b", ""): 2}}
        self.assertEqual(_scaledWeights(weights, a[:1] + b, a + b),
                         {0: {("", "a", ""): 1.0, ("", "b", ""): 2.0}})


class SubsetConfigTests(SynchronousTestCase):
    """Envoy 1.40's errors for selectors, with the field path."""

    def assertError(self, message, selector):
        e = self.assertRaises(ConfigError, compileCluster, clusterProto(
            "c1", [endpoint("10.0.0.1", 80)],
            lb_subset_config={"subset_selectors": [selector]}), PATH)
        self.assertEqual(str(e), PATH + ".lb_subset_config.subset_selectors[0]."
                         "fallback_keys_subset: " + message)

    def test_keysSubset(self):
        self.assertError("fallback_keys_subset cannot be empty",
                         {"keys": ["a", "b"], "fallback_policy": "KEYS_SUBSET"})
        self.assertError("fallback_keys_subset must be a subset of selector keys",
                         {"keys": ["a", "b"], "fallback_policy": "KEYS_SUBSET",
                          "fallback_keys_subset": ["c"]})
        self.assertError("fallback_keys_subset cannot be equal to keys",
                         {"keys": ["a", "b"], "fallback_policy": "KEYS_SUBSET",
                          "fallback_keys_subset": ["b", "a"]})
