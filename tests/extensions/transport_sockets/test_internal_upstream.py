"""
Tests for L{txenvoy.extensions.transport_sockets.internal_upstream} and
the upstream side of internal connections
(L{txenvoy.upstream.connection}): a cluster whose endpoint is an
C{envoy_internal_address} connects, on a fake clock, to the internal
listener of its own worker.
"""

from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from envoy.extensions.transport_sockets.internal_upstream.v3 import (  # noqa: F401
    internal_upstream_pb2,
)
from tests.upstream.test_fakes import FakeDispatcher, Recorder, clusterProto, stat
from txenvoy.config.errors import UnsupportedField
from txenvoy.upstream.cluster import compileCluster
from txenvoy.interfaces import IUpstreamTransportSocketFactory
from txenvoy.stats.store import StatsStore
from txenvoy.upstream.cluster_manager import ClusterManager
from txenvoy.upstream.connection import REMOTE_CONNECTION_FAILURE

INTERNAL_UPSTREAM = ("type.googleapis.com/envoy.extensions.transport_sockets.internal_upstream"
                     ".v3.InternalUpstreamTransport")
RAW = {"name": "raw", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"}}


def internalEndpoint(listener, endpointId=""):
    return {"endpoint": {"address": {"envoy_internal_address": {
        "server_listener_name": listener, "endpoint_id": endpointId}}},
        "metadata": {"filter_metadata": {"hns": {"k": "hv"}, "other": {"x": 1}}}}


class _Config:
    internalBufferSize = 64 * 1024


class FakeInternalListener(Factory):
    """What a worker's internal listener registry holds: builds a protocol."""

    config = _Config()

    def __init__(self):
        self.protocols = []

    def buildProtocol(self, addr):
        protocol = Protocol()
        self.protocols.append(protocol)
        return protocol


def setUpCluster(testCase, clock, listener, passthrough=None):
    fields = {"metadata": {"filter_metadata": {"cns": {"k": "cv"}}}}
    if passthrough is not None:
        fields["transport_socket"] = {
            "name": "envoy.transport_sockets.internal_upstream",
            "typed_config": {"@type": INTERNAL_UPSTREAM, "passthrough_metadata": passthrough,
                             "transport_socket": RAW}}
    store = StatsStore()
    cm = ClusterManager(clock, store, store.shard("main_thread"), [
        clusterProto("c1", [internalEndpoint(listener, "e1")], **fields)])
    testCase.addCleanup(cm.stop)
    dispatcher = FakeDispatcher(clock, "worker_0", store)
    tlc = cm.createThreadLocal(dispatcher).getThreadLocalCluster("c1")
    return store, dispatcher, tlc


class InternalUpstreamTests(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.listener = FakeInternalListener()

    def test_connects(self):
        """
        The connect completes on the next turn, with the listener's
        C{envoy://b/e1} as the host address; bytes go both ways.
        """
        store, dispatcher, tlc = setUpCluster(self, self.clock, "b")
        dispatcher.internalListeners["b"] = self.listener
        host = tlc.chooseHost()
        self.assertEqual(host.addressString, "envoy://b/e1")
        recorder = Recorder()
        conn = tlc.connect(host, recorder)
        self.assertEqual(recorder.events, [])
        self.clock.advance(0)
        self.assertEqual(recorder.events, ["connected"])
        server = self.listener.protocols[0]
        self.assertEqual(str(server.transport.getHost()), "envoy://b/e1")
        conn.write(b"ping")
        received = []
        server.dataReceived = received.append
        self.clock.advance(0)
        self.assertEqual(received, [b"ping"])
        server.transport.write(b"pong")
        self.clock.advance(0)
        self.assertEqual(recorder.data, [b"pong"])
        self.assertEqual(server.transport.passthrough, {})
        self.assertEqual(stat(store, "cluster.c1.upstream_cx_total"), 1)

    def test_unknownListener(self):
        """
        No internal listener of that name on the worker: Envoy's
        C{remote connection failure}, counted in C{upstream_cx_connect_fail}.
        """
        store, dispatcher, tlc = setUpCluster(self, self.clock, "nope")
        recorder = Recorder()
        tlc.connect(tlc.chooseHost(), recorder)
        self.clock.advance(0)
        self.assertEqual(recorder.events, [("failed", REMOTE_CONNECTION_FAILURE)])
        self.assertEqual(stat(store, "cluster.c1.upstream_cx_connect_fail"), 1)
        self.assertEqual(stat(store, "cluster.c1.upstream_cx_destroy_remote"), 1)

    def test_passthroughMetadata(self):
        """
        C{passthrough_metadata} hands the named namespaces of the host's
        and the cluster's metadata to the listener's side, no others.
        """
        store, dispatcher, tlc = setUpCluster(self, self.clock, "b", passthrough=[
            {"kind": {"host": {}}, "name": "hns"},
            {"kind": {"cluster": {}}, "name": "cns"},
            {"kind": {"host": {}}, "name": "absent"}])
        verifyObject(IUpstreamTransportSocketFactory, tlc.info.transportSocket)
        dispatcher.internalListeners["b"] = self.listener
        tlc.connect(tlc.chooseHost(), Recorder())
        self.clock.advance(0)
        self.assertEqual(self.listener.protocols[0].transport.passthrough,
                         {"metadata": {"hns": {"k": "hv"}, "cns": {"k": "cv"}}})

    def test_requestMetadataRefused(self):
        """Only host and cluster metadata can be passed through."""
        e = self.assertRaises(UnsupportedField, setUpCluster, self, self.clock, "b",
                              passthrough=[{"kind": {"request": {}}, "name": "x"}])
        self.assertIn("passthrough_metadata[0].kind.request", str(e))

    def test_healthChecksRefused(self):
        """Health checks of internal endpoints are refused with their path."""
        proto = clusterProto("c1", [internalEndpoint("b")], health_checks=[{
            "timeout": "1s", "interval": "1s", "unhealthy_threshold": 1,
            "healthy_threshold": 1, "tcp_health_check": {}}])
        e = self.assertRaises(UnsupportedField, compileCluster, proto, "c")
        self.assertIn("c.health_checks: unsupported field (of envoy_internal_address endpoints)",
                      str(e))
