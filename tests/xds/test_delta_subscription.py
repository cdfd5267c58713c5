"""
Tests for L{txenvoy.xds.delta_subscription} with a fake clock and call:
additions and removals folded into the set held, the NACK that changes
nothing, subscribing and unsubscribing by name, and the versions listed
on a new stream. (Against real Envoy: L{tests.e2e.test_grpc_xds}.)
"""

from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.core.v3.base_pb2 import Node
from envoy.service.discovery.v3 import discovery_pb2
from twisted.trial.unittest import SynchronousTestCase

from tests.xds.test_grpc_mux import FakeCall, FakeTarget, ThreadlessClock
from txenvoy.config.errors import ConfigError
from txenvoy.stats.store import StatsStore
from txenvoy.xds.delta_subscription import DeltaGrpcMux
from txenvoy.xds.grpc_mux import JitteredBackoff
from txenvoy.xds.resources import CLUSTER_TYPE
from txenvoy.xds.subscription import Subscription


def _delta(nonce, added=(), removed=(), system="s"):
    response = discovery_pb2.DeltaDiscoveryResponse(type_url=CLUSTER_TYPE, nonce=nonce,
                                                    system_version_info=system)
    for name, version in added:
        entry = response.resources.add(name=name, version=version)
        entry.resource.Pack(Cluster(name=name))
    response.removed_resources.extend(removed)
    return response


class DeltaMuxTests(SynchronousTestCase):

    def setUp(self):
        self.clock = ThreadlessClock()
        self.shard = StatsStore().shard("main_thread")
        FakeCall.calls = []
        self.mux = DeltaGrpcMux(self.clock, FakeTarget(), Node(id="n"),
                                self.shard.scope("control_plane."), callFactory=FakeCall,
                                backoff=JitteredBackoff(random=lambda: 0.5))
        self.updates = []
        self.reject = False

    def onUpdate(self, resources, version):
        if self.reject:
            raise ConfigError("bad")
        self.updates.append((sorted(r.name for r in resources), version))

    def subscribe(self, names=()):
        subscription = Subscription(self.clock, self.shard.scope("cds."), CLUSTER_TYPE,
                                    self.onUpdate, names)
        subscription.start(self.mux)
        return subscription

    def requests(self, call=-1):
        return [(list(r.resource_names_subscribe), list(r.resource_names_unsubscribe),
                 dict(r.initial_resource_versions), r.response_nonce, r.error_detail.code)
                for r in FakeCall.calls[call].sent]

    def test_foldAndNack(self):
        """
        Additions and removals change the set handed on whole; a NACKed
        response leaves the set as it was; a new stream lists the versions
        held.
        """
        self.subscribe()
        call = FakeCall.calls[0]
        call.onMessage(_delta("1", [("a", "1"), ("b", "1")], system="s1"))
        call.onMessage(_delta("2", [("c", "1")], removed=["a"], system="s2"))
        self.reject = True
        call.onMessage(_delta("3", removed=["b"], system="s3"))
        self.assertEqual(self.updates, [(["a", "b"], "s1"), (["b", "c"], "s2")])
        self.assertEqual(self.requests(), [([], [], {}, "", 0), ([], [], {}, "1", 0),
                                           ([], [], {}, "2", 0), ([], [], {}, "3", 13)])
        call.onClose(14, "gone")
        self.clock.advance(0.25)
        self.assertEqual(self.requests(), [([], [], {"b": "1", "c": "1"}, "", 0)])

    def test_subscribeByName(self):
        """Watches by name subscribe, and unsubscribe when they go."""
        first = self.subscribe(["x"])
        second = self.subscribe(["y"])
        second.stop()
        self.assertEqual(self.requests(), [(["x"], [], {}, "", 0), (["y"], [], {}, "", 0),
                                           ([], ["y"], {}, "", 0)])
        first.stop()
        self.assertTrue(FakeCall.calls[0].cancelled)
