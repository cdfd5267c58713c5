"""
Tests for L{txenvoy.upstream.host_set_mirror}: the main process's host
sets and their health, carried (as JSON, as the worker process channel
does) into a worker process's clusters, which neither resolve nor check.
"""

import json

from google.protobuf import json_format

from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from envoy.config.cluster.v3 import cluster_pb2
from txenvoy.stats.store import StatsStore
from txenvoy.testing import QueueDispatcher
from txenvoy.upstream.cluster_manager import ClusterManager
from txenvoy.upstream.host import FAILED_ACTIVE_HC, FAILED_OUTLIER_CHECK
from txenvoy.upstream.host_set_mirror import HostSetRelay, applyHostSet, describeHost

from tests.upstream.test_fakes import FakeResolver, clusterProto, endpoint

CHECK = {
    "timeout": "1s", "interval": "1s", "unhealthy_threshold": 1, "healthy_threshold": 1,
    "tcp_health_check": {}, "no_traffic_interval": "1s",
}


class _Reactor(MemoryReactorClock):
    """A clock that also records the health checker's connections."""

    def getThreadPool(self):  # pragma: no cover - the resolver is a fake
        raise AssertionError("no real DNS here")


def protos():
    return [
        clusterProto("checked", [endpoint("127.0.0.1", 8001), endpoint("127.0.0.1", 8002)],
                     health_checks=[CHECK],
                     common_lb_config={"healthy_panic_threshold": {}}),
        clusterProto("dns", [endpoint("origin.example", 80)], type="STRICT_DNS"),
        json_format.ParseDict({"name": "dst", "type": "ORIGINAL_DST",
                               "lb_policy": "CLUSTER_PROVIDED"}, cluster_pb2.Cluster()),
    ]


class HostSetMirrorTests(SynchronousTestCase):

    def setUp(self):
        self.mainReactor = _Reactor()
        self.mainStore = StatsStore()
        self.resolver = FakeResolver()
        self.main = ClusterManager(self.mainReactor, self.mainStore,
                                   self.mainStore.shard("main_thread"), protos(),
                                   dnsResolver=self.resolver)
        self.addCleanup(self.main.stop)
        self.main.initialize()
        self.resolver.answer(["10.0.0.1", "10.0.0.2"])
        for _, _, factory, _, _ in list(self.mainReactor.tcpClients):
            factory.buildProtocol(None).makeConnection(StringTransport())
        self.sent = []
        self.mainDispatcher = QueueDispatcher(self.mainReactor, "main_thread", self.mainStore)
        # Through JSON, as the channel carries it.
        self.relay = HostSetRelay(self.main, self.mainDispatcher,
                                  lambda m: self.sent.append(json.loads(json.dumps(m))))
        self.addCleanup(self.relay.close)

        self.workerReactor = _Reactor()
        self.workerStore = StatsStore()
        self.workerResolver = FakeResolver()
        self.worker = ClusterManager(self.workerReactor, self.workerStore,
                                     self.workerStore.shard("main_thread"), protos(),
                                     dnsResolver=self.workerResolver, membershipFromMain=True)
        self.addCleanup(self.worker.stop)
        self.workerDispatcher = QueueDispatcher(self.workerReactor, "worker_0", self.workerStore)
        self.tlcm = self.worker.createThreadLocal(self.workerDispatcher)
        self.deliver(dict(self.relay.current))
        self.initialized = self.worker.initialize()

    def deliver(self, hostSets=None):
        """The worker process applies what the main process sent."""
        self.mainDispatcher.run()
        if hostSets is None:
            hostSets = {}
            for message in self.sent:
                hostSets[message["host_set"]["cluster"]] = message["host_set"]["hosts"]
            del self.sent[:]
        for name, hosts in hostSets.items():
            applyHostSet(self.worker.get(name), hosts)
        self.workerDispatcher.run()

    def workerHosts(self, name):
        return [h.addressString for h in self.tlcm.getThreadLocalCluster(name).hosts]

    def test_workerNeitherChecksNorResolves(self):
        """
        The worker process's clusters make no health check connection and
        no DNS query; they start with the main process's hosts, initialized.
        """
        self.assertEqual(self.workerReactor.tcpClients, [])
        self.assertEqual(self.workerResolver.pending, [])
        self.assertIsNone(self.worker.get("checked").healthChecker)
        self.assertIsNotNone(self.main.get("checked").healthChecker)
        self.assertTrue(self.initialized.called)
        self.assertEqual(self.workerHosts("dns"), ["10.0.0.1:80", "10.0.0.2:80"])
        self.assertEqual(self.workerHosts("checked"), ["127.0.0.1:8001", "127.0.0.1:8002"])
        # ORIGINAL_DST's hosts are each process's own.
        self.assertNotIn("dst", self.relay.current)

    def test_failedCheckReachesWorker(self):
        """
        A host failing the main process's check leaves the worker's
        rotation; the worker keeps the same host object (its stats).
        """
        before = self.worker.get("checked").hosts[0]
        mainHost = self.main.get("checked").hosts[0]
        self.assertTrue(mainHost.healthy)
        self.mainReactor.advance(1.5)
        factory = self.mainReactor.tcpClients[-2][2]
        factory.clientConnectionFailed(self.mainReactor.connectors[-2],
                                       Failure(ConnectionRefusedError()))
        self.assertTrue(mainHost.hasHealthFlag(FAILED_ACTIVE_HC))
        self.deliver()
        after = self.worker.get("checked").hosts[0]
        self.assertIs(after, before)
        self.assertEqual(after.healthFlags(), "/failed_active_hc")
        tlc = self.tlcm.getThreadLocalCluster("checked")
        picked = {tlc.chooseHost().addressString for _ in range(6)}
        self.assertEqual(picked, {"127.0.0.1:8002"})

    def test_dnsMembershipReachesWorker(self):
        """A new DNS answer in the main process is the worker's membership."""
        self.mainReactor.advance(6)
        self.resolver.answer(["10.0.0.3"])
        self.deliver()
        self.assertEqual(self.workerHosts("dns"), ["10.0.0.3:80"])
        self.assertEqual(self.workerResolver.pending, [])

    def test_outlierFlagStaysLocal(self):
        """
        The worker process's own outlier ejection survives a host set
        from the main process, which knows nothing of it.
        """
        host = self.worker.get("checked").hosts[1]
        host.setHealthFlag(FAILED_OUTLIER_CHECK)
        self.deliver(dict(self.relay.current))
        self.assertEqual(self.worker.get("checked").hosts[1].healthFlags(),
                         "/failed_outlier_check")

    def test_describeRoundTrip(self):
        """Every field a host was made with survives the channel."""
        from txenvoy.upstream.host import Host, Locality
        from txenvoy.upstream.host_set_mirror import hostFromDescription

        host = Host(("10.1.1.1", 81), hostname="h", weight=3, priority=1,
                    locality=Locality("r", "z", "s"), clusterName="c",
                    healthFlags=(FAILED_ACTIVE_HC,), edsHealthStatus="DEGRADED",
                    healthCheckPort=90, healthCheckHostname="hc", hashKey="k",
                    metadata={"version": ('"v1"', None), "tags": ('["a"]', ('"a"',))},
                    canary=True)
        d = json.loads(json.dumps(describeHost(host)))
        again = hostFromDescription("c", d)
        self.assertEqual(describeHost(again), describeHost(host))
        self.assertEqual(again.metadata, host.metadata)

    def test_describePipeAndInternalAddresses(self):
        """
        A Unix socket and an internal listener endpoint cross the channel
        too, with the endpoint's filter metadata (internal_upstream's
        passthrough).
        """
        from txenvoy.network.pipe import PipeAddress
        from txenvoy.network.user_space import InternalAddress
        from txenvoy.upstream.host import Host
        from txenvoy.upstream.host_set_mirror import hostFromDescription

        for address in (PipeAddress("/run/up.sock", 0o600), InternalAddress("b", "e1")):
            host = Host((address, 0), clusterName="c", filterMetadata={"ns": {"k": "v"}})
            again = hostFromDescription("c", json.loads(json.dumps(describeHost(host))))
            self.assertEqual(again.address, (address, 0))
            self.assertEqual(again.filterMetadata, {"ns": {"k": "v"}})

    def test_cdsClusterFollowedAndWaitsForHosts(self):
        """
        A cluster CDS adds: the main process sends its host set once it is
        active there; a worker process's copy warms (is not used) until
        that host set came, as the main process's warms on its first
        membership. One CDS removes stops being followed.
        """
        proto = clusterProto("added", [endpoint("127.0.0.1", 8003)])
        self.mainDispatcher.run()
        del self.sent[:]
        self.main.applyUpdate([self.main.compileDynamic(proto, "resources[0]")], [], [])
        self.mainDispatcher.run()
        self.assertEqual([m["host_set"]["cluster"] for m in self.sent], ["added"])
        self.worker.applyUpdate([self.worker.compileDynamic(proto, "resources[0]")], [], [])
        self.assertIn("added", self.worker.warming)
        self.assertIsNone(self.worker.get("added"))
        waiting = self.worker.warming["added"]
        applyHostSet(waiting, self.sent.pop()["host_set"]["hosts"])
        self.workerDispatcher.run()
        self.assertEqual(self.workerHosts("added"), ["127.0.0.1:8003"])
        self.assertEqual(self.worker.warming, {})

        self.main.applyUpdate([], [], ["added"])
        self.assertNotIn("added", self.relay.current)
