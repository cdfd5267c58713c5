"""
Tests for L{txenvoy.extensions.clusters.eds}: an C{EDS} cluster's hosts
from the assignments its file subscription reads, in a server on a fake
clock.
"""

import json
import os
import tempfile

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.config.errors import ConfigError
from txenvoy.config.loader import loadBootstrap
from txenvoy.server.server import Server

_CLA = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"


def _assignment(endpoints, name="svc", weights=None):
    """C{endpoints}: C{[(priority, port, health_status, weight)]}."""
    return {"@type": _CLA, "cluster_name": name, "endpoints": [
        {"priority": priority, "lb_endpoints": [{
            "health_status": status, "load_balancing_weight": weight,
            "endpoint": {"address": {"socket_address": {
                "address": "127.0.0.1", "port_value": port}}}}]}
        for priority, port, status, weight in endpoints]}


class EdsClusterTests(SynchronousTestCase):

    def setUp(self):
        self.path = os.path.join(tempfile.mkdtemp(), "eds.json")
        self.write([_assignment([(0, 1, "HEALTHY", 1), (1, 2, "HEALTHY", 1)])])
        config = {"node": {"id": "n", "cluster": "c"}, "static_resources": {"clusters": [{
            "name": "c", "type": "EDS", "eds_cluster_config": {
                "service_name": "svc", "eds_config": {"path": self.path}}}]}}
        self.server = Server(Clock(), loadBootstrap(configYaml=json.dumps(config)))
        cm = self.server.clusterManager
        cm.startService()
        self.addCleanup(cm.stopService)
        self.cluster = cm.clusters["c"]

    def write(self, resources, version="1"):
        with open(self.path, "w") as f:
            json.dump({"version_info": version, "resources": resources}, f)

    def update(self, resources):
        self.write(resources)
        return self.cluster.subscription.refresh()

    def stat(self, name):
        return self.server.mainStats.counters["cluster.c." + name].value

    def test_firstAssignment(self):
        """Read when the cluster starts: one membership change per priority, as Envoy."""
        self.assertTrue(self.cluster.initialized)
        self.assertEqual([(h.address[1], h.priority) for h in self.cluster.hosts],
                         [(1, 0), (2, 1)])
        self.assertEqual((self.stat("update_success"), self.stat("membership_change")), (1, 2))

    def test_healthAndWeightInPlace(self):
        """
        Envoy keeps a host whose health status or weight changed (its
        health check state and stats with it): no membership change.
        """
        before = self.cluster.hosts
        self.assertTrue(self.update([_assignment([(0, 1, "UNHEALTHY", 5),
                                                  (1, 2, "HEALTHY", 1)])]))
        self.assertIs(self.cluster.hosts[0], before[0])
        self.assertEqual((before[0].healthy, before[0].weight), (False, 5))
        self.assertEqual(self.stat("membership_change"), 2)
        self.assertTrue(self.update([_assignment([(0, 1, "UNHEALTHY", 5),
                                                  (1, 2, "HEALTHY", 1)])]))
        self.assertEqual(self.stat("update_no_rebuild"), 1)

    def test_movedHostIsNew(self):
        """A host moved to another priority is removed from one and added to the other."""
        before = self.cluster.hosts
        self.update([_assignment([(1, 1, "HEALTHY", 1), (1, 2, "HEALTHY", 1)])])
        self.assertIsNot(self.cluster.hosts[0], before[0])
        self.assertIs(self.cluster.hosts[1], before[1])
        self.assertEqual(self.stat("membership_change"), 4)

    def test_rejected(self):
        """Envoy's messages; the hosts stay."""
        hosts = self.cluster.hosts
        e = self.assertRaises(ConfigError, self.cluster.onConfigUpdate,
                              [self._message(name="other")], "2")
        self.assertEqual(e.message, "Unexpected EDS cluster (expecting svc): other")
        e = self.assertRaises(ConfigError, self.cluster.onConfigUpdate,
                              [self._message(), self._message()], "2")
        self.assertEqual(e.message, "Unexpected EDS resource length: 2")
        self.assertFalse(self.update([_assignment([(0, 1, "HEALTHY", 0)])]))
        self.assertEqual(self.cluster.hosts, hosts)
        self.assertEqual(self.stat("update_rejected"), 1)

    def test_rejectedKeepsWeightAndHealth(self):
        """
        An update that changes a kept host's weight and health, then is
        rejected for a later endpoint, leaves that host as it was: the hosts
        are made in the pass that checks the endpoints, and only an update
        found valid changes them.
        """
        first = self.cluster.hosts[0]
        self.assertFalse(self.update([_assignment([(0, 1, "UNHEALTHY", 7),
                                                   (1, 2, "HEALTHY", 0)])]))
        self.assertEqual((first.weight, first.healthy, first.edsHealthStatus()),
                         (1, True, "HEALTHY"))
        self.assertIs(self.cluster.hosts[0], first)
        self.assertEqual((self.stat("update_rejected"), self.stat("membership_change")), (1, 2))

    def test_sameAssignmentAgain(self):
        """
        The same assignment again keeps every host and rebuilds nothing
        (Envoy's update_no_rebuild); its version is the one in use.
        """
        hosts = self.cluster.hosts
        assignment = [_assignment([(0, 1, "HEALTHY", 1), (1, 2, "HEALTHY", 1)])]
        self.write(assignment, version="7")
        self.assertTrue(self.cluster.subscription.refresh())
        self.assertIs(self.cluster.hosts, hosts)
        self.assertEqual(self.cluster.versionInfo, "7")
        self.assertEqual((self.stat("update_no_rebuild"), self.stat("membership_change")), (1, 2))

    def test_duplicateEndpoints(self):
        """
        Two endpoints alike are two hosts; the second one is new each time
        (the first keeps the host in use), so the update changes membership.
        """
        self.assertTrue(self.update([_assignment([(0, 1, "HEALTHY", 1), (0, 1, "HEALTHY", 1)])]))
        first, second = self.cluster.hosts
        self.assertIsNot(first, second)
        changes = self.stat("membership_change")
        self.assertTrue(self.update([_assignment([(0, 1, "HEALTHY", 1),
                                                  (0, 1, "HEALTHY", 1)])]))
        self.assertIs(self.cluster.hosts[0], second)
        self.assertIsNot(self.cluster.hosts[1], second)
        self.assertEqual(self.stat("membership_change"), changes + 1)

    def test_empty(self):
        self.assertTrue(self.update([]))
        self.assertEqual((self.stat("update_empty"), len(self.cluster.hosts)), (1, 2))

    def _message(self, name="svc"):
        from google.protobuf import json_format

        from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment

        data = _assignment([(0, 1, "HEALTHY", 1)], name)
        del data["@type"]
        return json_format.ParseDict(data, ClusterLoadAssignment())


class ConfigTests(SynchronousTestCase):

    def build(self, cluster, validateOnly=True):
        config = {"node": {"id": "n", "cluster": "c"},
                  "static_resources": {"clusters": [cluster]}}
        return Server(Clock(), loadBootstrap(configYaml=json.dumps(config)),
                      validateOnly=validateOnly)

    def test_edsConfigRequired(self):
        e = self.assertRaises(ConfigError, self.build, {"name": "c", "type": "EDS",
                                                        "eds_cluster_config": {}})
        self.assertIn("static_resources.clusters[0].eds_cluster_config.eds_config: value is "
                      "required", e.message)

    def test_controlPlaneRefused(self):
        """Sources other than files are refused with their path, for now."""
        e = self.assertRaises(ConfigError, self.build, {
            "name": "c", "type": "EDS", "eds_cluster_config": {"eds_config": {"ads": {}}}})
        self.assertIn("static_resources.clusters[0].eds_cluster_config.eds_config.ads",
                      e.message)

    def test_missingFileWhenServing(self):
        cluster = {"name": "c", "type": "EDS", "eds_cluster_config": {
            "eds_config": {"path": "/nonexistent/eds.yaml"}}}
        self.build(cluster)
        e = self.assertRaises(ConfigError, self.build, cluster, validateOnly=False)
        self.assertIn("'/nonexistent/eds.yaml' does not exist", e.message)


class _Transport:
    def __init__(self):
        self.watching = []

    def watch(self, subscription):
        self.watching.append(subscription)

    def unwatch(self, subscription):
        self.watching.remove(subscription)


class _ControlPlanes:
    """One transport for every subscription, the real L{Subscription} on it."""

    def __init__(self, clock):
        self.clock = clock
        self.transport = _Transport()

    def check(self, source, path):
        return None

    def subscription(self, source, path, scope, typeUrl, onUpdate, names=()):
        from txenvoy.xds.subscription import Subscription

        return Subscription(self.clock, scope, typeUrl, onUpdate, names, 1.0), self.transport


class WarmingTests(SynchronousTestCase):
    """
    Envoy's EDS cluster from a control plane: it initializes once its first
    assignment is applied or rejected, or its initial_fetch_timeout passes.
    """

    def setUp(self):
        from txenvoy.stats.store import StatsStore
        from txenvoy.upstream.cluster_manager import ClusterManager
        from txenvoy.xds.subscription_factory import SubscriptionFactory

        self.clock = Clock()
        self.planes = _ControlPlanes(self.clock)
        store = StatsStore()
        from google.protobuf import json_format

        from envoy.config.cluster.v3.cluster_pb2 import Cluster

        proto = json_format.ParseDict({"name": "c", "type": "EDS", "eds_cluster_config": {
            "eds_config": {"ads": {}}}}, Cluster())
        self.cm = ClusterManager(self.clock, store, store.shard("main_thread"), [proto],
                                 edsSubscriptions=SubscriptionFactory(self.clock, self.planes))
        self.cluster = self.cm.clusters["c"]
        self.initialized = self.cm.initialize()

    def test_warmsUntilFirstAssignment(self):
        self.assertNoResult(self.initialized)
        [subscription] = self.planes.transport.watching
        self.assertEqual(subscription.names, ("c",))
        self.assertIsNone(subscription.onResponse([self._assignment()], "1"))
        self.successResultOf(self.initialized)
        self.assertEqual(len(self.cluster.hosts), 1)

    def test_initialFetchTimeout(self):
        self.clock.advance(1.0)
        self.successResultOf(self.initialized)
        self.assertEqual(self.cluster.hosts, ())

    def _assignment(self):
        from google.protobuf import json_format

        from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment

        return json_format.ParseDict({"cluster_name": "c", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {
                "address": "127.0.0.1", "port_value": 1}}}}]}]}, ClusterLoadAssignment())
