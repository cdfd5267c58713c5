"""
Tests for L{txenvoy.xds.grpc_mux}, L{txenvoy.xds.subscription} and
L{txenvoy.xds.control_plane} with a fake clock and a fake call: the
requests Envoy's C{GrpcMuxImpl} sends (ACK, NACK, node on the first
message only), its backoff, rate limit and stats, the initial fetch
timeout, and the config errors with their field paths. (The same protocol
against real Envoy: L{tests.e2e.test_grpc_xds}.)
"""

import json

from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.core.v3.base_pb2 import Node
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.config.errors import ConfigError
from txenvoy.config.loader import loadBootstrap
from txenvoy.server.server import Server
from txenvoy.stats.store import StatsStore
from txenvoy.xds.grpc_mux import GrpcMux, JitteredBackoff, TokenBucket
from txenvoy.xds.resources import CLUSTER_TYPE, LISTENER_TYPE
from txenvoy.xds.subscription import Subscription


class ThreadlessClock(Clock):
    """A fake clock whose C{callFromThread} runs the call at once."""

    def callFromThread(self, f, *args):
        f(*args)


class FakeCall:
    """A L{txenvoy.grpc.streaming.StreamingCall} the test drives."""

    calls = None

    def __init__(self, post, channel, method, responseDeserializer=None, metadata=()):
        self.method = method
        self.sent = []
        self.cancelled = False
        FakeCall.calls.append(self)

    def start(self, onMessage, onClose):
        self.onMessage, self.onClose = onMessage, onClose

    def send(self, message):
        self.sent.append(message)

    def cancel(self):
        self.cancelled = True


class FakeTarget:
    clusterName = "xds"
    metadata = ()

    def __init__(self):
        self.up = True

    def channel(self):
        return object() if self.up else None

    def close(self):
        pass


def _clusters(version, nonce, *names, typeUrl=CLUSTER_TYPE):
    response = discovery_pb2.DiscoveryResponse(version_info=version, nonce=nonce,
                                               type_url=CLUSTER_TYPE)
    for name in names:
        a = any_pb2.Any()
        a.Pack(Cluster(name=name))
        if typeUrl != CLUSTER_TYPE:
            a.type_url = typeUrl
        response.resources.append(a)
    return response


class MuxTests(SynchronousTestCase):

    def setUp(self):
        self.clock = ThreadlessClock()
        self.stats = StatsStore()
        self.shard = self.stats.shard("main_thread")
        FakeCall.calls = []
        self.target = FakeTarget()
        self.updates = []
        self.reject = None

    def mux(self, **kw):
        kw.setdefault("backoff", JitteredBackoff(random=lambda: 0.5))
        return GrpcMux(self.clock, self.target, Node(id="n", cluster="c"),
                       self.shard.scope("control_plane."), callFactory=FakeCall, **kw)

    def onUpdate(self, resources, version):
        if self.reject:
            raise ConfigError(self.reject)
        self.updates.append(([r.name for r in resources], version))

    def subscribe(self, mux, typeUrl=CLUSTER_TYPE, timeout=15.0):
        subscription = Subscription(self.clock, self.shard.scope("cluster_manager.cds."),
                                    typeUrl, self.onUpdate, initialFetchTimeout=timeout)
        subscription.start(mux)
        return subscription

    def sent(self, call=-1):
        return [(r.type_url, r.version_info, r.response_nonce, r.error_detail.code,
                 r.error_detail.message, r.HasField("node")) for r in FakeCall.calls[call].sent]

    def value(self, name):
        return self.stats.counterValue(name) or self.stats.gaugeValue(name)

    def test_ackAndNack(self):
        """
        Envoy's ACK carries the new version and the nonce; its NACK the
        version held, the nonce and code 13 with the handler's message.
        """
        mux = self.mux()
        self.subscribe(mux)
        call = FakeCall.calls[0]
        self.assertEqual(call.method, "/envoy.service.discovery.v3.AggregatedDiscoveryService/"
                                      "StreamAggregatedResources")
        call.onMessage(_clusters("v1", "n1", "a", "b"))
        self.reject = "Error adding/updating cluster(s) b: bad"
        call.onMessage(_clusters("v2", "n2", "b"))
        self.assertEqual(self.sent(), [
            (CLUSTER_TYPE, "", "", 0, "", True),
            (CLUSTER_TYPE, "v1", "n1", 0, "", True),
            (CLUSTER_TYPE, "v1", "n2", 13, "Error adding/updating cluster(s) b: bad", True)])
        self.assertEqual(self.updates, [(["a", "b"], "v1")])
        self.assertEqual([self.value("cluster_manager.cds." + n) for n in (
            "update_attempt", "update_success", "update_rejected")], [3, 1, 1])

    def test_typeMismatchNacked(self):
        """A resource of another type is refused before the handler sees it."""
        mux = self.mux()
        self.subscribe(mux)
        FakeCall.calls[0].onMessage(_clusters("v1", "n1", "a", typeUrl=LISTENER_TYPE))
        self.assertEqual(self.updates, [])
        [*_, nack] = FakeCall.calls[0].sent
        self.assertEqual(nack.error_detail.code, 13)
        self.assertIn("%s does not match the message-wide type URL %s" % (
            LISTENER_TYPE, CLUSTER_TYPE), nack.error_detail.message)

    def test_nodeOnFirstMessageOnly(self):
        mux = self.mux(setNodeOnFirstMessageOnly=True)
        self.subscribe(mux)
        FakeCall.calls[0].onMessage(_clusters("v1", "n1", "a"))
        self.assertEqual([s[-1] for s in self.sent()], [True, False])

    def test_reconnectWithBackoff(self):
        """
        A closed stream: C{connected_state} 0, C{update_failure}, a new
        stream after the jittered backoff whose first request carries the
        version held and no nonce; the interval doubles while it fails.
        """
        mux = self.mux()
        self.subscribe(mux)
        self.assertEqual(self.value("control_plane.connected_state"), 1)
        FakeCall.calls[0].onMessage(_clusters("v1", "n1", "a"))
        FakeCall.calls[0].onClose(14, "unavailable")
        self.assertEqual(self.value("control_plane.connected_state"), 0)
        self.assertEqual(self.value("cluster_manager.cds.update_failure"), 1)
        self.clock.advance(0.24)
        self.assertEqual(len(FakeCall.calls), 1)
        self.clock.advance(0.01)
        self.assertEqual(self.sent(), [(CLUSTER_TYPE, "v1", "", 0, "", True)])
        self.assertEqual(self.value("control_plane.connected_state"), 1)
        self.target.up = False
        FakeCall.calls[1].onClose(14, "unavailable")
        self.clock.advance(0.5)   # 0.5 * 1 s
        self.clock.advance(1.0)   # 0.5 * 2 s, no host either
        self.assertEqual(len(FakeCall.calls), 2)
        self.target.up = True
        self.clock.advance(2.0)   # 0.5 * 4 s
        self.assertEqual(len(FakeCall.calls), 3)
        mux.stop()
        self.assertTrue(FakeCall.calls[2].cancelled)

    def test_rateLimit(self):
        """
        With C{rate_limit_settings}, a request without a token waits:
        C{rate_limit_enforced} and C{pending_requests} count it.
        """
        mux = self.mux(rateLimit=TokenBucket(self.clock, maxTokens=1, fillRate=2.0))
        self.subscribe(mux)
        FakeCall.calls[0].onMessage(_clusters("v1", "n1", "a"))
        self.assertEqual(len(FakeCall.calls[0].sent), 1)
        self.assertEqual((self.value("control_plane.rate_limit_enforced"),
                          self.value("control_plane.pending_requests")), (1, 1))
        self.clock.advance(0.5)
        self.assertEqual(len(FakeCall.calls[0].sent), 2)
        self.assertEqual(self.value("control_plane.pending_requests"), 0)

    def test_initialFetchTimeout(self):
        """No response within C{initial_fetch_timeout}: counted, and init goes on."""
        mux = self.mux()
        subscription = self.subscribe(mux, timeout=1.0)
        self.assertNoResult(subscription.initialized)
        self.clock.advance(1.0)
        self.successResultOf(subscription.initialized)
        self.assertEqual(self.value("cluster_manager.cds.init_fetch_timeout"), 1)

    def test_unwatchedTypeIgnored(self):
        """A response for a type nobody asked for is ignored, not answered."""
        mux = self.mux()
        self.subscribe(mux)
        response = _clusters("v1", "n1", "a")
        response.type_url = LISTENER_TYPE
        FakeCall.calls[0].onMessage(response)
        self.assertEqual(len(FakeCall.calls[0].sent), 1)


class ControlPlaneConfigTests(SynchronousTestCase):
    """Config sources naming a control plane are checked with their field paths."""

    def build(self, dynamic):
        config = json.dumps({
            "node": {"id": "n", "cluster": "c"}, "dynamic_resources": dynamic,
            "static_resources": {"clusters": [{
                "name": "xds", "type": "STATIC", "load_assignment": {"cluster_name": "xds"}}]}})
        return Server(Clock(), loadBootstrap(configYaml=config), None, validateOnly=True)

    def test_v2Refused(self):
        error = self.assertRaises(ConfigError, self.build, {"ads_config": {
            "api_type": "GRPC", "transport_api_version": "V2",
            "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}]}})
        self.assertIn("dynamic_resources.ads_config.transport_api_version: V2", error.message)

    def test_adsWithoutAdsConfig(self):
        error = self.assertRaises(ConfigError, self.build, {"lds_config": {"ads": {}}})
        self.assertIn("dynamic_resources.lds_config.ads: dynamic_resources.ads_config is not "
                      "set", error.message)

    def test_grpcNeedsOneService(self):
        error = self.assertRaises(ConfigError, self.build, {"cds_config": {
            "api_config_source": {"api_type": "GRPC", "transport_api_version": "V3"}}})
        self.assertIn("dynamic_resources.cds_config.api_config_source.grpc_services: exactly "
                      "one is needed", error.message)

    def test_accepted(self):
        """A per-type gRPC source and ADS build (validate mode starts nothing)."""
        server = self.build({
            "ads_config": {"api_type": "DELTA_GRPC", "transport_api_version": "V3",
                           "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}]},
            "lds_config": {"ads": {}},
            "cds_config": {"api_config_source": {
                "api_type": "GRPC", "transport_api_version": "V3",
                "rate_limit_settings": {"max_tokens": 5},
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}]}}})
        self.assertIsNotNone(server.xds.cds)


class CollectionTests(SynchronousTestCase):

    def test_updateAppliedWithoutCollection(self):
        """
        The handler runs with the collector paused; afterwards what it made
        is frozen, the collector is on again and C{afterUpdate} (the
        server's garbage freezer) is called.
        """
        import gc

        seen, after = [], []
        clock = ThreadlessClock()
        scope = StatsStore().shard("main_thread").scope("x.")
        subscription = Subscription(clock, scope, CLUSTER_TYPE,
                                    lambda r, v: seen.append(gc.isenabled()),
                                    afterUpdate=lambda: after.append(True))
        self.addCleanup(gc.unfreeze)
        frozen = gc.get_freeze_count()
        self.assertIsNone(subscription.onResponse([], "v1"))
        self.assertEqual((seen, after, gc.isenabled()), ([False], [True], True))
        self.assertGreaterEqual(gc.get_freeze_count(), frozen)
