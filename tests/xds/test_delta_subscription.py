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


def _fakeMux(case):
    """Give a test its fake clock, stats shard and a delta mux on a fake call."""
    case.clock = ThreadlessClock()
    case.shard = StatsStore().shard("main_thread")
    FakeCall.calls = []
    case.mux = DeltaGrpcMux(case.clock, FakeTarget(), Node(id="n"),
                            case.shard.scope("control_plane."), callFactory=FakeCall,
                            backoff=JitteredBackoff(random=lambda: 0.5))


class DeltaMuxTests(SynchronousTestCase):

    def setUp(self):
        _fakeMux(self)
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


def _routes(nonce, added=(), removed=()):
    from envoy.config.route.v3.route_pb2 import RouteConfiguration

    from txenvoy.xds.resources import ROUTE_TYPE

    response = discovery_pb2.DeltaDiscoveryResponse(type_url=ROUTE_TYPE, nonce=nonce,
                                                    system_version_info="s" + nonce)
    for name, version in added:
        response.resources.add(name=name, version=version).resource.Pack(
            RouteConfiguration(name=name))
    response.removed_resources.extend(removed)
    return response


class DeltaByNameTests(SynchronousTestCase):
    """
    Subscriptions by name on a delta stream, as Envoy's watch map and
    C{DeltaSubscriptionState} treat them.
    """

    def setUp(self):
        from txenvoy.xds.resources import ROUTE_TYPE

        _fakeMux(self)
        self.updates = {}
        for name in ("r1", "r2"):
            Subscription(self.clock, self.shard.scope("rds.%s." % (name,)), ROUTE_TYPE,
                         lambda resources, version, name=name: self.updates.setdefault(
                             name, []).append(([r.name for r in resources], version)),
                         (name,)).start(self.mux)
        self.call = FakeCall.calls[0]

    def test_onlyTouchedSubscriptionsUpdated(self):
        """
        A response goes to the subscriptions whose names it carries; a
        resource of a name nobody subscribed to is dropped.
        """
        self.call.onMessage(_routes("1", [("r1", "1"), ("other", "1")]))
        self.assertEqual(self.updates, {"r1": [(["r1"], "s1")]})
        self.call.onClose(14, "gone")
        self.clock.advance(0.25)
        self.assertEqual(dict(FakeCall.calls[-1].sent[0].initial_resource_versions), {"r1": "1"})

    def test_heartbeatChangesNothing(self):
        """An entry without a resource at the version held is a heartbeat: ACKed, not applied."""
        self.call.onMessage(_routes("1", [("r1", "1")]))
        heartbeat = _routes("2")
        heartbeat.resources.add(name="r1", version="1")
        self.call.onMessage(heartbeat)
        self.assertEqual(self.updates, {"r1": [(["r1"], "s1")]})
        self.assertEqual([r.error_detail.code for r in self.call.sent], [0, 0, 0, 0])

    def test_routeRemovalIgnored(self):
        """
        Envoy's RDS ignores a delta removal: the table stays (the handler
        is handed it again and succeeds), but a new stream claims no
        version for it.
        """
        self.call.onMessage(_routes("1", [("r1", "1"), ("r2", "1")]))
        self.call.onMessage(_routes("2", removed=["r1"]))
        self.assertEqual(self.updates["r1"], [(["r1"], "s1"), (["r1"], "s2")])
        self.assertEqual(self.shard.scope("rds.r1.").counter("update_success").value, 2)
        self.call.onClose(14, "gone")
        self.clock.advance(0.25)
        self.assertEqual(dict(FakeCall.calls[-1].sent[0].initial_resource_versions), {"r2": "1"})

    def test_unsubscribedForgotten(self):
        """A name no watch wants any more is unsubscribed and forgotten."""
        self.call.onMessage(_routes("1", [("r1", "1"), ("r2", "1")]))
        self.mux.types[_routes("x").type_url].subscriptions[1].stop()
        self.assertEqual(list(self.call.sent[-1].resource_names_unsubscribe), ["r2"])
        self.call.onClose(14, "gone")
        self.clock.advance(0.25)
        first = FakeCall.calls[-1].sent[0]
        self.assertEqual((list(first.resource_names_subscribe),
                          dict(first.initial_resource_versions)), (["r1"], {"r1": "1"}))
