"""
Tests for L{txenvoy.extensions.clusters.aggregate}: Envoy's aggregate
cluster.
"""

import random

from google.protobuf import json_format
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as aggregate_pb2  # noqa: F401
from tests.upstream.test_fakes import FakeDispatcher, clusterProto, endpoint
from txenvoy.config.errors import ConfigError
from txenvoy.extensions.clusters.aggregate import AggregateCluster
from txenvoy.interfaces import ICluster, ILoadBalancer
from txenvoy.stats.store import StatsStore
from txenvoy.upstream.cluster import compileCluster
from txenvoy.upstream.cluster_manager import ClusterManager

PATH = "static_resources.clusters[0]"
_TYPE = "type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig"


def aggregateProto(clusters, name="agg", **fields):
    d = {"name": name, "lb_policy": "CLUSTER_PROVIDED", "cluster_type": {
        "name": "envoy.clusters.aggregate",
        "typed_config": {"@type": _TYPE, "clusters": clusters}}}
    d.update(fields)
    return json_format.ParseDict(d, cluster_pb2.Cluster())


class AggregateTests(SynchronousTestCase):

    def build(self, protos):
        store = StatsStore()
        reactor = Clock()
        cm = ClusterManager(reactor, store, store.shard("main_thread"), protos,
                            rng=random.Random(3).random)
        dispatcher = FakeDispatcher(reactor, "worker_0", store)
        dispatcher.clusterManager = cm.createThreadLocal(dispatcher)
        return cm, dispatcher.clusterManager

    def test_failover(self):
        """
        Levels laid end to end: a's P0 (no healthy host), a's P1, then b;
        the missing cluster and the aggregate itself add nothing.
        """
        cm, tlcm = self.build([
            aggregateProto(["a", "nope", "agg", "b"]),
            clusterProto("a", priorityGroups=[
                (0, [endpoint("10.0.0.1", 80, healthStatus="UNHEALTHY"),
                     endpoint("10.0.0.2", 80, healthStatus="UNHEALTHY")]),
                (1, [endpoint("10.0.1.1", 80)])]),
            clusterProto("b", [endpoint("10.0.2.1", 80)])])
        self.assertIsInstance(cm.clusters["agg"], AggregateCluster)
        verifyObject(ICluster, cm.clusters["agg"])
        agg = tlcm.getThreadLocalCluster("agg")
        verifyObject(ILoadBalancer, agg.loadBalancer)
        self.assertEqual({agg.chooseHost().addressString for _ in range(50)}, {"10.0.1.1:80"})

    def test_newSnapshotSeen(self):
        """A new host snapshot of a listed cluster changes the levels."""
        cm, tlcm = self.build([aggregateProto(["a", "b"]),
                               clusterProto("a", [endpoint("10.0.0.1", 80)]),
                               clusterProto("b", [endpoint("10.0.2.1", 80)])])
        agg = tlcm.getThreadLocalCluster("agg")
        self.assertEqual(agg.chooseHost().addressString, "10.0.0.1:80")
        tlcm.getThreadLocalCluster("a").updateHosts(())
        self.assertEqual(agg.chooseHost().addressString, "10.0.2.1:80")
        tlcm.getThreadLocalCluster("b").updateHosts(())
        self.assertIsNone(agg.chooseHost())


class AggregateConfigTests(SynchronousTestCase):
    """What Envoy 1.40 --mode validate says, with the field path."""

    def test_lbPolicy(self):
        e = self.assertRaises(ConfigError, compileCluster,
                              aggregateProto(["a"], lb_policy="ROUND_ROBIN"), PATH)
        self.assertEqual(str(e), PATH + ".lb_policy: cluster manager: cluster provided LB not "
                         "specified but cluster 'agg' provided one. Check cluster "
                         "documentation.")

    def test_noClusters(self):
        e = self.assertRaises(ConfigError, compileCluster, aggregateProto([]), PATH)
        self.assertIn(PATH + ".cluster_type.typed_config.clusters: ", str(e))
        self.assertIn("value must contain at least 1 item(s)", str(e))

    def test_selfAndMissingAccepted(self):
        """Envoy accepts both; they are skipped when hosts are picked."""
        info, _ = compileCluster(aggregateProto(["agg", "nope"]), PATH)
        self.assertEqual(info.aggregateClusters, ("agg", "nope"))
