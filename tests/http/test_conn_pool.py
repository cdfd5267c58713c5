"""
Tests for L{txenvoy.http.conn_pool}: one worker's HTTP/1.1 connections to
one host, driven on a L{MemoryReactorClock}.
"""

from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.http import pool_base
from txenvoy.http.conn_pool import CLOSED, DRAINING, OVERFLOW, directWriter, poolsFor
from txenvoy.http.pool_base import directSequenceWriter
from txenvoy.http.headers import RequestHeaders
from txenvoy.stats.store import StatsStore
from txenvoy.upstream.cluster_manager import ClusterManager

from tests.upstream.test_fakes import FakeDispatcher, clusterProto, endpoint

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


class Stream:
    """A pool user: records what the pool and its client tell it."""

    def __init__(self):
        self.events = []
        self.client = None
        self.corker = None

    def onPoolReady(self, client):
        self.client = client
        client.attach(self)
        self.events.append("ready")

    def onPoolFailure(self, reason):
        self.events.append(("failure", reason))

    def send(self, path=b"/"):
        self.client.codec.encodeRequest(RequestHeaders(b"GET", path, b"a"), True)

    def onResponseHeaders(self, headers, endStream):
        self.events.append(("headers", headers.status, endStream))

    def onResponseData(self, data, endStream):
        self.events.append(("data", data, endStream))

    def onResponseTrailers(self, trailers):
        self.events.append("trailers")

    def onResponseComplete(self):
        self.events.append("complete")

    def onUpstreamReset(self, reason):
        self.events.append(("reset", reason))

    def onAboveWriteBufferHighWatermark(self):
        self.events.append("above")

    def onBelowWriteBufferLowWatermark(self):
        self.events.append("below")


class PoolTests(SynchronousTestCase):

    def setUp(self, **fields):
        self.reactor = MemoryReactorClock()
        self.store = StatsStore()
        cm = ClusterManager(self.reactor, self.store, self.store.shard("main_thread"), [
            clusterProto("c1", [endpoint("127.0.0.1", 8080)], connect_timeout="1s",
                         **fields)])
        self.addCleanup(cm.stop)
        dispatcher = FakeDispatcher(self.reactor, "worker_0", self.store)
        self.cluster = cm.createThreadLocal(dispatcher).getThreadLocalCluster("c1")
        self.host = self.cluster.chooseHost()
        self.pools = poolsFor(self.cluster)
        self.pool = self.pools.poolFor(self.host)
        self.connected = 0

    def stat(self, name):
        snapshot = self.store.snapshot()
        full = "cluster.c1." + name
        return snapshot.counters.get(full, snapshot.gauges.get(full, 0))

    def establish(self, index=None):
        """Bring the next pending connection attempt up."""
        if index is None:
            index = self.connected
        self.connected += 1
        factory = self.reactor.tcpClients[index][2]
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def test_sharedPerCluster(self):
        self.assertIs(poolsFor(self.cluster), self.pools)
        self.assertIs(self.pools.poolFor(self.host), self.pool)

    def test_connectThenReady(self):
        s = Stream()
        handle = self.pool.newStream(s)
        self.assertIsNotNone(handle)
        self.assertEqual(s.events, [])
        self.assertEqual((self.stat("upstream_rq_pending_total"),
                          self.stat("upstream_rq_pending_active"),
                          self.stat("upstream_cx_http1_total")), (1, 1, 1))
        self.establish()
        self.assertEqual(s.events, ["ready"])
        self.assertEqual(self.stat("upstream_rq_pending_active"), 0)

    def test_keepAliveReuse(self):
        """A finished connection is reused at once, without a new connect."""
        s = Stream()
        self.pool.newStream(s)
        protocol, transport = self.establish()
        s.send()
        protocol.dataReceived(OK)
        self.assertEqual(s.events[-1], "complete")
        self.assertEqual(self.pool.ready, [s.client])
        t = Stream()
        self.assertIsNone(self.pool.newStream(t))
        self.assertEqual(t.events, ["ready"])
        self.assertIs(t.client, s.client)
        self.assertEqual(len(self.reactor.tcpClients), 1)

    def test_releasedBeforeComplete(self):
        """When a stream hears onResponseComplete its connection is already free."""
        s = Stream()
        self.pool.newStream(s)
        protocol, _ = self.establish()
        s.send()
        seen = []
        s.onResponseComplete = lambda: seen.append(list(self.pool.ready))
        protocol.dataReceived(OK)
        self.assertEqual(seen, [[s.client]])

    def test_connectionCloseNotReused(self):
        s = Stream()
        self.pool.newStream(s)
        protocol, transport = self.establish()
        s.send()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
        self.assertEqual(self.pool.ready, [])
        self.assertTrue(transport.disconnecting)

    def test_idleClosedByHost(self):
        s = Stream()
        self.pool.newStream(s)
        protocol, _ = self.establish()
        s.send()
        protocol.dataReceived(OK)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.pool.ready, [])
        self.assertEqual(self.pools.connections.current, 0)
        self.assertIsNotNone(self.pool.newStream(Stream()))
        self.assertEqual(len(self.reactor.tcpClients), 2)

    def test_hostClosesMidResponse(self):
        s = Stream()
        self.pool.newStream(s)
        protocol, _ = self.establish()
        s.send()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(s.events[-1], ("reset", "connection termination"))

    def test_closeDelimitedResponse(self):
        s = Stream()
        self.pool.newStream(s)
        protocol, _ = self.establish()
        s.send()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\n\r\nabc")
        protocol.readConnectionLost()
        self.assertEqual(s.events[-2:], [("data", b"", True), "complete"])

    def test_protocolError(self):
        s = Stream()
        self.pool.newStream(s)
        protocol, transport = self.establish()
        s.send()
        protocol.dataReceived(b"junk\r\n\r\n")
        self.assertEqual(s.events[-1], ("reset", "protocol error"))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.stat("upstream_cx_protocol_error"), 1)

    def test_connectFailureEjectsPending(self):
        """Envoy fails every request waiting on the host when a connect fails."""
        a, b = Stream(), Stream()
        self.pool.newStream(a)
        self.pool.newStream(b)
        factory = self.reactor.tcpClients[0][2]
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        self.assertEqual(a.events, [("failure", "remote connection failure")])
        self.assertEqual(b.events, [("failure", "remote connection failure")])
        self.assertEqual(self.stat("upstream_rq_pending_failure_eject"), 2)
        self.assertEqual(self.stat("upstream_rq_pending_active"), 0)

    def test_cancelPending(self):
        s = Stream()
        handle = self.pool.newStream(s)
        handle.cancel()
        self.assertEqual(self.stat("upstream_rq_pending_active"), 0)
        self.assertEqual(self.stat("upstream_rq_cancelled"), 1)
        self.establish()
        self.assertEqual(s.events, [])
        self.assertEqual(len(self.pool.ready), 1)

    def test_pendingOverflow(self):
        self.setUp(circuit_breakers={"thresholds": [{"max_pending_requests": 1}]})
        self.pool.newStream(Stream())
        s = Stream()
        self.assertIsNone(self.pool.newStream(s))
        self.assertEqual(s.events, [("failure", OVERFLOW)])
        self.assertEqual(self.stat("upstream_rq_pending_overflow"), 1)

    def test_maxConnections(self):
        """Past max_connections requests wait for a connection to free up."""
        self.setUp(circuit_breakers={"thresholds": [{"max_connections": 1}]})
        a, b = Stream(), Stream()
        self.pool.newStream(a)
        self.pool.newStream(b)
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.assertEqual(self.stat("upstream_cx_overflow"), 1)
        protocol, _ = self.establish()
        a.send()
        protocol.dataReceived(OK)
        self.assertEqual(b.events, ["ready"])
        self.assertIs(b.client, a.client)

    def test_maxRequestsPerConnection(self):
        self.setUp(max_requests_per_connection=2)
        s = Stream()
        self.pool.newStream(s)
        protocol, transport = self.establish()
        for _ in range(2):
            s.send()
            protocol.dataReceived(OK)
            if not transport.disconnecting:
                s = Stream()
                self.pool.newStream(s)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.stat("upstream_cx_max_requests"), 1)

    def test_resetClosesConnection(self):
        s = Stream()
        self.pool.newStream(s)
        protocol, transport = self.establish()
        s.send()
        s.client.resetStream()
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(s.events, ["ready"])
        self.assertEqual(self.pools.connections.current, 0)

    def test_watermarks(self):
        s = Stream()
        self.pool.newStream(s)
        _, transport = self.establish()
        transport.producer.pauseProducing()
        transport.producer.resumeProducing()
        self.assertEqual(s.events, ["ready", "above", "below"])

    def test_watermarkPausedTwice(self):
        """Twisted pauses on every write while the buffer is full, and resumes once."""
        s = Stream()
        self.pool.newStream(s)
        _, transport = self.establish()
        transport.producer.pauseProducing()
        transport.producer.pauseProducing()
        transport.producer.resumeProducing()
        self.assertEqual(s.events, ["ready", "above", "below"])

    def test_finLeavesReadyAtOnce(self):
        """
        An idle connection whose host sent FIN is never handed out, even
        before the reactor reports the close (the idle-close race).
        """
        s = Stream()
        self.pool.newStream(s)
        protocol, transport = self.establish()
        s.send()
        protocol.dataReceived(OK)
        client = s.client
        protocol.readConnectionLost()
        self.assertEqual(self.pool.ready, [])
        self.assertEqual(client.state, DRAINING)
        t = Stream()
        self.assertIsNotNone(self.pool.newStream(t))
        self.assertEqual(t.events, [])
        self.assertEqual(len(self.reactor.tcpClients), 2)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(client.state, CLOSED)
        self.assertEqual(self.pools.connections.current, 1)

    def test_deadCodecNotHandedOut(self):
        """
        An idle client whose codec can take no request is closed, never
        handed out: encodeRequest would raise into the reactor.
        """
        s = Stream()
        self.pool.newStream(s)
        protocol, transport = self.establish()
        s.send()
        protocol.dataReceived(OK)
        s.client.codec.connectionLost()
        t = Stream()
        self.assertIsNotNone(self.pool.newStream(t))
        self.assertEqual(t.events, [])
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(self.reactor.tcpClients), 2)

    def test_hostCloseCountsRemote(self):
        """Envoy counts an idle connection the host closed as upstream_cx_destroy_remote."""
        s = Stream()
        self.pool.newStream(s)
        protocol, transport = self.establish()
        s.send()
        protocol.dataReceived(OK)
        protocol.readConnectionLost()
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual((self.stat("upstream_cx_destroy"), self.stat("upstream_cx_destroy_remote"),
                          self.stat("upstream_cx_destroy_local"),
                          self.stat("upstream_cx_destroy_with_active_rq")), (1, 1, 0, 0))

    def test_hostCloseWithActiveRequest(self):
        """
        Envoy: a host that closes in the middle of a response counts
        upstream_cx_destroy_remote_with_active_rq.
        """
        s = Stream()
        self.pool.newStream(s)
        protocol, _ = self.establish()
        s.send()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
        protocol.readConnectionLost()
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual((self.stat("upstream_cx_destroy_remote"),
                          self.stat("upstream_cx_destroy_with_active_rq"),
                          self.stat("upstream_cx_destroy_remote_with_active_rq")), (1, 1, 1))
        self.assertFalse(s.client.closedUnanswered)

    def test_resetCountsLocalWithActiveRequest(self):
        """Envoy: a stream reset mid-request counts upstream_cx_destroy_local_with_active_rq."""
        s = Stream()
        self.pool.newStream(s)
        protocol, _ = self.establish()
        s.send()
        s.client.resetStream()
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual((self.stat("upstream_cx_destroy_local"),
                          self.stat("upstream_cx_destroy_local_with_active_rq")), (1, 1))

    def test_closedUnanswered(self):
        """
        A reused connection the host closes before a byte of the response is
        marked C{closedUnanswered}: the request may be sent again.
        """
        s = Stream()
        self.pool.newStream(s)
        protocol, _ = self.establish()
        s.send()
        protocol.dataReceived(OK)
        t = Stream()
        self.pool.newStream(t)
        self.assertIs(t.client, s.client)
        t.send()
        protocol.readConnectionLost()
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(t.events[-1], ("reset", "connection termination"))
        self.assertTrue(t.client.closedUnanswered)

    def test_firstRequestNotUnanswered(self):
        """On a fresh connection an unanswered request is not the idle-close race."""
        s = Stream()
        self.pool.newStream(s)
        protocol, _ = self.establish()
        s.send()
        protocol.readConnectionLost()
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertFalse(s.client.closedUnanswered)

    def test_closeNotify(self):
        """Envoy counts a response that closes its connection in upstream_cx_close_notify."""
        for response in (b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
                         b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n",
                         OK):
            s = Stream()
            self.pool.newStream(s)
            protocol, _ = self.establish()
            s.send()
            protocol.dataReceived(response)
        self.assertEqual(self.stat("upstream_cx_close_notify"), 2)

    def test_closeNotifyAnySpelling(self):
        """
        Envoy's shouldCloseConnection reads the first connection header
        whatever the case of its name or value; a keep-alive response on the
        same connection after one that did not close counts nothing.
        """
        responses = (b"HTTP/1.1 200 OK\r\nConnection: Close\r\ncontent-length: 0\r\n\r\n",
                     b"HTTP/1.1 200 OK\r\nCONNECTION: x, CLOSE\r\ncontent-length: 0\r\n\r\n",
                     b"HTTP/1.0 200 OK\r\nconnection: Keep-Alive\r\ncontent-length: 0\r\n\r\n",
                     b"HTTP/1.1 200 OK\r\nconnection: keep-alive\r\nconnection: close\r\n"
                     b"content-length: 0\r\n\r\n")
        counted = []
        for response in responses:
            s = Stream()
            self.pool.newStream(s)
            protocol, _ = self.establish()
            s.send()
            protocol.dataReceived(response)
            counted.append(self.stat("upstream_cx_close_notify"))
            s.client.close()
        self.assertEqual(counted, [1, 2, 2, 2])
        s = Stream()
        self.pool.newStream(s)
        protocol, _ = self.establish()
        s.send()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nconnection: keep-alive\r\n"
                              b"content-length: 0\r\n\r\n")
        t = Stream()
        self.pool.newStream(t)
        self.assertIs(t.client, s.client)
        t.send()
        protocol.dataReceived(OK)
        self.assertEqual(self.stat("upstream_cx_close_notify"), 2)

    def test_idleTimeout(self):
        """
        common_http_protocol_options.idle_timeout closes a connection idle
        in the pool that long, counting upstream_cx_idle_timeout.
        """
        self.setUp(typed_extension_protocol_options={
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3."
                         "HttpProtocolOptions",
                "common_http_protocol_options": {"idle_timeout": "2s"},
                "explicit_http_config": {"http_protocol_options": {}}}})
        s = Stream()
        self.pool.newStream(s)
        protocol, transport = self.establish()
        self.reactor.advance(1.5)
        s.send()
        self.reactor.advance(1.5)
        protocol.dataReceived(OK)
        self.reactor.advance(1.9)
        t = Stream()
        self.pool.newStream(t)
        t.send()
        protocol.dataReceived(OK)
        self.reactor.advance(1.9)
        self.assertFalse(transport.disconnecting)
        self.reactor.advance(0.2)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.pool.ready, [])
        self.assertEqual(self.stat("upstream_cx_idle_timeout"), 1)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.stat("upstream_cx_destroy_local"), 1)

    def test_idleTimerOneReactorCall(self):
        """
        Requests on a kept-alive connection leave its one reactor timer
        running rather than starting and cancelling one each; the timer
        still closes the connection idle_timeout after the last response,
        as Envoy's.
        """
        s = Stream()
        self.pool.newStream(s)
        protocol, transport = self.establish()
        s.send()
        protocol.dataReceived(OK)
        calls = self.reactor.getDelayedCalls()
        for _ in range(5):
            self.reactor.advance(1000)
            t = Stream()
            self.pool.newStream(t)
            self.assertEqual(self.reactor.getDelayedCalls(), calls)
            t.send()
            protocol.dataReceived(OK)
            self.assertEqual(self.reactor.getDelayedCalls(), calls)
        self.reactor.advance(3599.9)
        self.assertFalse(transport.disconnecting)
        self.reactor.advance(0.2)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.stat("upstream_cx_idle_timeout"), 1)

    def test_maxConnectionDuration(self):
        """
        Envoy: past common_http_protocol_options.max_connection_duration an
        idle connection closes, a busy one after its response, counting
        upstream_cx_max_duration_reached.
        """
        self.setUp(typed_extension_protocol_options={
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3."
                         "HttpProtocolOptions",
                "common_http_protocol_options": {"max_connection_duration": "2s"},
                "explicit_http_config": {"http_protocol_options": {}}}})
        busy, idle = Stream(), Stream()
        self.pool.newStream(busy)
        self.pool.newStream(idle)
        busyProtocol, busyTransport = self.establish()
        idleProtocol, idleTransport = self.establish()
        busy.send()
        idle.send()
        idleProtocol.dataReceived(OK)
        self.reactor.advance(2)
        self.assertTrue(idleTransport.disconnecting)
        self.assertFalse(busyTransport.disconnecting)
        busyProtocol.dataReceived(OK)
        self.assertEqual(busy.events[-1], "complete")
        self.assertTrue(busyTransport.disconnecting)
        self.assertEqual(self.pool.ready, [])
        self.assertEqual(self.stat("upstream_cx_max_duration_reached"), 2)

    def test_idleTimeoutDefault(self):
        """Envoy's upstream idle_timeout is one hour unless set."""
        self.assertEqual(self.pools.idleTimeout, 3600.0)

    def test_bytesCounted(self):
        s = Stream()
        self.pool.newStream(s)
        _, transport = self.establish()
        s.send()
        self.assertEqual(self.stat("upstream_cx_tx_bytes_total"), len(transport.value()))

    def test_largeChunkCounted(self):
        """
        A chunked request's large chunk, written between its framing in one
        gathered write, is counted in upstream_cx_tx_bytes_total as sent.
        """
        s = Stream()
        self.pool.newStream(s)
        _, transport = self.establish()
        codec = s.client.codec
        codec.encodeRequest(RequestHeaders(b"POST", b"/", b"a"), False)
        body = b"q" * (100 * 1024)
        codec.encodeData(body, True)
        self.assertTrue(transport.value().endswith(b"\r\n\r\n19000\r\n" + body
                                                   + b"\r\n0\r\n\r\n"))
        self.assertEqual(self.stat("upstream_cx_tx_bytes_total"), len(transport.value()))


class DirectWriterTests(SynchronousTestCase):

    def test_otherTransports(self):
        t = StringTransport()
        self.assertEqual(directWriter(t), t.write)

    def test_tcpSendsAtOnce(self):
        import socket

        from twisted.internet import tcp

        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        conn = tcp.Connection(a, None, MemoryReactorClock())
        conn.connected = True
        write = directWriter(conn)
        write(b"hello")
        self.assertEqual(b.recv(10), b"hello")
        self.assertEqual(conn._tempDataLen, 0)


class DirectSequenceWriterTests(SynchronousTestCase):
    """
    L{pool_base.directSequenceWriter}: a large head and body go to the
    socket in one C{sendmsg}, without being joined first.
    """

    def connection(self):
        import socket

        from twisted.internet import tcp

        a, b = socket.socketpair()
        a.setblocking(False)
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        conn = tcp.Connection(a, None, MemoryReactorClock())
        conn.connected = True
        return conn, b

    def received(self, sock, n):
        out = b""
        while len(out) < n:
            out += sock.recv(n - len(out))
        return out

    def test_otherTransports(self):
        t = StringTransport()
        directSequenceWriter(t)([b"a", b"b"])
        self.assertEqual(t.value(), b"ab")

    def test_smallJoined(self):
        conn, peer = self.connection()
        directSequenceWriter(conn)([b"head ", b"body"])
        self.assertEqual(self.received(peer, 9), b"head body")

    def test_largeInOrderWhateverTheKernelTakes(self):
        """
        What the socket does not take at once is queued in order behind
        what it took, and arrives whole once the transport writes it.
        """
        import socket

        conn, peer = self.connection()
        conn.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        buffers = [b"H" * 100, b"x" * 300000, b"y" * 5000]
        directSequenceWriter(conn)(buffers)
        self.assertGreater(pool_base.unsentBytes(conn), 0)
        expected = b"".join(buffers)
        got = b""
        while len(got) < len(expected):
            conn.doWrite()
            got += peer.recv(65536)
        self.assertEqual(got, expected)


class PeekTests(SynchronousTestCase):
    """
    L{UpstreamConnection.peek} and the pool's look before it hands out an
    idle connection, on a real TCP connection over 127.0.0.1.
    """

    setUp = PoolTests.setUp

    def connectedPair(self):
        import socket

        from twisted.internet import tcp

        s = Stream()
        self.pool.newStream(s)
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        a = socket.create_connection(listener.getsockname())
        b, _ = listener.accept()
        listener.close()
        a.setblocking(False)
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        protocol = self.reactor.tcpClients[0][2].buildProtocol(None)
        transport = tcp.Connection(a, protocol, self.reactor)
        transport.connected = True
        protocol.makeConnection(transport)
        s.send()
        b.recv(1000)
        b.sendall(OK)
        protocol.dataReceived(a.recv(1000))
        return s, protocol, b

    def test_idleIsHandedOut(self):
        s, _, _ = self.connectedPair()
        t = Stream()
        self.assertIsNone(self.pool.newStream(t))
        self.assertIs(t.client, s.client)

    def test_pendingFinIsNotHandedOut(self):
        """A FIN not yet read by the reactor keeps the connection from a new request."""
        import socket

        s, protocol, peer = self.connectedPair()
        peer.shutdown(socket.SHUT_WR)
        t = Stream()
        self.assertIsNotNone(self.pool.newStream(t))
        self.assertEqual(t.events, [])
        self.assertEqual(s.client.state, DRAINING)
        self.assertEqual(len(self.reactor.tcpClients), 2)

    def test_pendingBytesAreNotHandedOut(self):
        """Bytes nobody asked for keep the connection from a new request."""
        s, protocol, peer = self.connectedPair()
        peer.sendall(b"HTTP/1.1 200 OK\r\n")
        t = Stream()
        self.assertIsNotNone(self.pool.newStream(t))
        self.assertEqual(s.client.state, DRAINING)
