"""
Tests for L{txenvoy.http.http2.conn_pool}: one worker's HTTP/2 connections
to one host, on a L{MemoryReactorClock}, the host played by an C{h2}
server connection.
"""

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, RequestReceived, StreamEnded
from h2.settings import SettingCodes
from hyperframe.frame import GoAwayFrame
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.http.test_conn_pool import Stream
from tests.upstream.test_fakes import FakeDispatcher, clusterProto, endpoint
from txenvoy.http.conn_pool import poolsFor
from txenvoy.http.headers import HeaderMap, RequestHeaders
from txenvoy.http.http2.conn_pool import Http2ConnPool, Http2StreamClient
from txenvoy.interfaces import IClientCodec, IHttpConnPool
from txenvoy.stats.store import StatsStore
from txenvoy.upstream.cluster_manager import ClusterManager

KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


class Host:
    """The upstream: an h2 server connection over the pool's transport."""

    def __init__(self, protocol, transport, maxStreams=None):
        self.protocol = protocol
        self.transport = transport
        self.h2 = H2Connection(H2Configuration(client_side=False, header_encoding=None))
        self.h2.initiate_connection()
        if maxStreams is not None:
            self.h2.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: maxStreams})
        self.requests = {}
        self.pump()

    def pump(self):
        for _ in range(10):
            out = self.transport.value()
            self.transport.clear()
            if out:
                for event in self.h2.receive_data(out):
                    if isinstance(event, RequestReceived):
                        self.requests[event.stream_id] = dict(event.headers)
                    elif isinstance(event, DataReceived):
                        self.h2.acknowledge_received_data(event.flow_controlled_length,
                                                          event.stream_id)
            back = self.h2.data_to_send()
            if back:
                self.protocol.dataReceived(back)
            if not out and not back:
                return

    def respond(self, streamId, body=b"ok", trailers=None):
        self.h2.send_headers(streamId, [(b":status", b"200")])
        self.h2.send_data(streamId, body, end_stream=trailers is None)
        if trailers is not None:
            self.h2.send_headers(streamId, trailers, end_stream=True)
        self.pump()


class Http2PoolTests(SynchronousTestCase):

    def setUp(self):
        self.makePool()

    def makePool(self, common=None, http2=None):
        """The pool of cluster c1 (HTTP/2), with C{common_http_protocol_options}."""
        self.reactor = MemoryReactorClock()
        self.store = StatsStore()
        options = {"@type": "type.googleapis.com/" + KEY,
                   "explicit_http_config": {"http2_protocol_options": http2 or {}}}
        if common is not None:
            options["common_http_protocol_options"] = common
        cm = ClusterManager(self.reactor, self.store, self.store.shard("main_thread"), [
            clusterProto("c1", [endpoint("127.0.0.1", 8080)], connect_timeout="1s",
                         typed_extension_protocol_options={KEY: options})])
        self.addCleanup(cm.stop)
        dispatcher = FakeDispatcher(self.reactor, "worker_0", self.store)
        self.cluster = cm.createThreadLocal(dispatcher).getThreadLocalCluster("c1")
        self.pool = poolsFor(self.cluster).poolFor(self.cluster.chooseHost())
        self.connected = 0

    def stat(self, name):
        snapshot = self.store.snapshot()
        return snapshot.counters.get("cluster.c1." + name,
                                     snapshot.gauges.get("cluster.c1." + name, 0))

    def establish(self, maxStreams=None):
        factory = self.reactor.tcpClients[self.connected][2]
        self.connected += 1
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return Host(protocol, transport, maxStreams)

    def send(self, stream, path=b"/"):
        stream.client.codec.encodeRequest(
            RequestHeaders(b"GET", path, b"a", b"http", "HTTP/2", HeaderMap()), True)

    def test_interfaces(self):
        """The pool and its stream clients sit behind the pool and codec seams."""
        self.assertIsInstance(self.pool, Http2ConnPool)
        self.assertTrue(verifyObject(IHttpConnPool, self.pool))
        stream = Stream()
        self.pool.newStream(stream)
        self.establish()
        self.assertIsInstance(stream.client, Http2StreamClient)
        self.assertTrue(verifyObject(IClientCodec, stream.client))

    def test_multiplexed(self):
        """Two requests, one connection, answered out of order; trailers passed on."""
        a, b = Stream(), Stream()
        self.pool.newStream(a)
        self.pool.newStream(b)
        self.assertEqual(len(self.reactor.tcpClients), 1)
        host = self.establish()
        self.send(a, b"/a")
        self.send(b, b"/b")
        host.pump()
        self.assertEqual(sorted(h[b":path"] for h in host.requests.values()), [b"/a", b"/b"])
        host.respond(3, b"second", trailers=[(b"grpc-status", b"0")])
        host.respond(1, b"first")
        self.assertIn(("data", b"second", False), b.events)
        self.assertIn("trailers", b.events)
        self.assertEqual(b.events[-1], "complete")
        self.assertEqual(a.events[-1], "complete")
        self.assertEqual(self.stat("upstream_cx_http2_total"), 1)

    def test_peerLimitOpensAnotherConnection(self):
        """Past the host's SETTINGS_MAX_CONCURRENT_STREAMS a second connection opens."""
        first = Stream()
        self.pool.newStream(first)
        self.establish(maxStreams=1)
        self.send(first)
        second = Stream()
        self.pool.newStream(second)
        self.assertIsNone(second.client)
        self.assertEqual(len(self.reactor.tcpClients), 2)
        self.establish()
        self.assertIsNotNone(second.client)
        self.assertEqual(self.stat("upstream_cx_http2_total"), 2)

    def test_goAwayReplaysUnprocessedStreams(self):
        """
        A GOAWAY: streams above its last stream id end as unanswered
        connection terminations (the router replays them); the others finish.
        """
        a, b = Stream(), Stream()
        self.pool.newStream(a)
        self.pool.newStream(b)
        host = self.establish()
        self.send(a)
        self.send(b)
        host.pump()
        goAway = GoAwayFrame(0)
        goAway.last_stream_id = 1
        host.protocol.dataReceived(goAway.serialize())
        self.assertEqual(b.events[-1], ("reset", "connection termination"))
        self.assertTrue(b.client.closedUnanswered)
        host.respond(1)
        self.assertEqual(a.events[-1], "complete")
        third = Stream()
        self.pool.newStream(third)
        self.assertEqual(len(self.reactor.tcpClients), 2)

    def test_maxRequestsPerConnection(self):
        """
        max_requests_per_connection: the connection that handed out that
        many streams drains (upstream_cx_max_requests), closes when they
        are done, and the next stream opens a new connection.
        """
        self.makePool(common={"max_requests_per_connection": 2})
        a, b = Stream(), Stream()
        self.pool.newStream(a)
        self.pool.newStream(b)
        host = self.establish()
        self.send(a)
        self.send(b)
        host.pump()
        self.assertEqual(self.stat("upstream_cx_max_requests"), 1)
        c = Stream()
        self.pool.newStream(c)
        self.assertEqual(len(self.reactor.tcpClients), 2)
        host.respond(1)
        self.assertFalse(host.transport.disconnecting)
        host.respond(3)
        self.assertTrue(host.transport.disconnecting)

    def test_maxConnectionDuration(self):
        """
        max_connection_duration: past it the connection takes no new stream
        (upstream_cx_max_duration_reached) and closes once its streams end.
        """
        self.makePool(common={"max_connection_duration": "5s"})
        a = Stream()
        self.pool.newStream(a)
        host = self.establish()
        self.send(a)
        host.pump()
        self.reactor.advance(5)
        self.assertEqual(self.stat("upstream_cx_max_duration_reached"), 1)
        self.assertFalse(host.transport.disconnecting)
        b = Stream()
        self.pool.newStream(b)
        self.assertEqual(len(self.reactor.tcpClients), 2)
        host.respond(1)
        self.assertTrue(host.transport.disconnecting)

    def test_keepalive(self):
        """
        connection_keepalive: a PING every interval while ACKed; one left
        unanswered past the timeout closes the connection, its streams reset
        (http2.keepalive_timeout of the cluster).
        """
        self.makePool(http2={"connection_keepalive": {"interval": "10s", "timeout": "2s"}})
        a = Stream()
        self.pool.newStream(a)
        host = self.establish()
        self.send(a)
        host.pump()
        self.reactor.advance(10)
        host.pump()             # the host ACKs the PING
        self.reactor.advance(2)
        self.assertFalse(host.transport.disconnecting)
        self.reactor.advance(8)
        self.assertIn(b"\x00\x00\x08\x06\x00", host.transport.value())  # a PING, unanswered
        self.reactor.advance(2)
        self.assertEqual(self.stat("http2.keepalive_timeout"), 1)
        self.assertEqual(a.events[-1], ("reset", "connection termination"))
