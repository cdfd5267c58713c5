"""
Tests for L{txenvoy.upstream.connection}.
"""

import socket
import sys
import time

from twisted.internet import defer, error
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from txenvoy.stats.store import StatsStore
from txenvoy.upstream.cluster_manager import ClusterManager
from txenvoy.upstream.connection import (
    CONNECT_TIMEOUT,
    PEEK_IDLE,
    REMOTE_CONNECTION_FAILURE,
    UpstreamConnection,
)

from tests.test_privates import reactorAndServer
from txenvoy.network.read_loop import _DrainingUpstreamClient
from tests.upstream.test_fakes import FakeDispatcher, Recorder, clusterProto, endpoint, stat


def setUpCluster(testCase, reactor, port=8080, **fields):
    store = StatsStore()
    cm = ClusterManager(reactor, store, store.shard("main_thread"), [
        clusterProto("c1", [endpoint("127.0.0.1", port)], **fields)])
    testCase.addCleanup(cm.stop)
    tlc = cm.createThreadLocal(FakeDispatcher(reactor, "worker_0", store)) \
        .getThreadLocalCluster("c1")
    return store, tlc


class RealSocketTests(SynchronousTestCase):
    """A connection over a real socket, on the epoll reactor."""

    def test_connectedHoldsLittle(self):
        """
        Connected, the transport keeps no connector or factory, shares its
        log prefix and the text of its local host; the host's close still
        reaches the callbacks and the stats through the connector's
        stand-in.
        """
        reactor, server = reactorAndServer(self)
        store, tlc = setUpCluster(self, reactor, port=server.getsockname()[1])
        recorder = Recorder()
        conn = tlc.connect(tlc.chooseHost(), recorder)
        deadline = time.time() + 10
        while not conn.connected and time.time() < deadline:
            reactor.iterate(0.01)
        self.assertTrue(conn.connected)
        transport = conn.transport
        self.assertIs(type(transport), _DrainingUpstreamClient)
        self.assertFalse(hasattr(transport.connector, "factory"))
        self.assertIs(transport.logstr, sys.intern("UpstreamConnection,client"))
        local = conn.localAddress()
        self.assertEqual(local, transport.socket.getsockname())
        self.assertIs(local[0], sys.intern("127.0.0.1"))
        self.assertIs(conn.localAddress(), local)
        peer, _ = server.accept()
        peer.close()
        while len(recorder.events) < 2 and time.time() < deadline:
            reactor.iterate(0.01)
        self.assertEqual(recorder.events[0], "connected")
        self.assertEqual(recorder.events[1][0], "closed")
        self.assertEqual((stat(store, "cluster.c1.upstream_cx_destroy_remote"),
                          stat(store, "cluster.c1.upstream_cx_active")), (1, 0))


class MemoryReactorTests(SynchronousTestCase):
    """Connection accounting, driven by a fake reactor."""

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.store, self.tlc = setUpCluster(self, self.reactor, connect_timeout="2s",
                                            per_connection_buffer_limit_bytes=4096)
        self.host = self.tlc.chooseHost()
        self.recorder = Recorder()

    def s(self, name):
        return stat(self.store, "cluster.c1." + name)

    def h(self, name):
        return self.host.stats(name)

    def connect(self):
        conn = self.tlc.connect(self.host, self.recorder)
        (host, port, factory, timeout, bindAddress) = self.reactor.tcpClients[-1]
        self.assertEqual((host, port, timeout, bindAddress), ("127.0.0.1", 8080, 2.0, None))
        return conn, factory

    def establish(self):
        conn, factory = self.connect()
        proto = factory.buildProtocol(None)
        self.assertIs(proto, conn)
        transport = StringTransport()
        proto.makeConnection(transport)
        return conn, transport

    def test_provides(self):
        conn, _ = self.connect()
        self.assertTrue(verifyObject(IHalfCloseableProtocol, conn))

    def test_attemptCounted(self):
        conn, _ = self.connect()
        self.assertFalse(conn.connected)
        self.assertIs(conn.host, self.host)
        self.assertEqual((self.s("upstream_cx_total"), self.s("upstream_cx_active")), (1, 1))
        self.assertEqual((self.h("cx_total"), self.h("cx_active")), (1, 1))
        self.assertEqual(self.recorder.events, [])

    def test_connected(self):
        self.reactor.advance(0.25)
        conn, factory = self.connect()
        self.reactor.advance(0.05)
        conn.write(b"early")  # buffered until connected
        proto = factory.buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        self.assertTrue(conn.connected)
        self.assertIs(conn.transport, transport)
        self.assertEqual(self.recorder.events, ["connected"])
        self.assertEqual(transport.value(), b"early")
        self.assertEqual(transport.bufferSize, 4096)
        merged = self.store.snapshot().histograms["cluster.c1.upstream_cx_connect_ms"]
        self.assertEqual(merged.count, 1)
        self.assertAlmostEqual(merged.sum, 50, delta=0.5)
        # The connect timer is gone once connected.
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_bytesCounted(self):
        conn, transport = self.establish()
        conn.dataReceived(b"hello")
        conn.dataReceived(b"!")
        self.assertEqual(self.recorder.data, [b"hello", b"!"])
        conn.write(b"abc")
        conn.writeSequence([b"de", b"f"])
        self.assertEqual(transport.value(), b"abcdef")
        self.assertEqual((self.s("upstream_cx_rx_bytes_total"),
                          self.s("upstream_cx_tx_bytes_total")), (6, 6))

    def test_timeout(self):
        """
        No answer within connect_timeout: C{upstream_cx_connect_timeout}
        and, as Envoy does, C{upstream_cx_connect_fail} too.
        """
        conn, factory = self.connect()
        self.reactor.advance(1.9)
        self.assertEqual(self.recorder.events, [])
        self.reactor.advance(0.1)
        self.assertEqual(self.recorder.events, [("failed", CONNECT_TIMEOUT)])
        self.assertTrue(conn.timedOut)
        self.assertTrue(conn.failureReason.check(error.TimeoutError), repr(conn.failureReason))
        self.assertTrue(self.reactor.connectors[-1].stoppedConnecting)
        self.assertEqual((self.s("upstream_cx_connect_timeout"), self.s("upstream_cx_connect_fail"),
                          self.s("upstream_cx_active"), self.s("upstream_cx_destroy"),
                          self.s("upstream_cx_destroy_local")), (1, 1, 0, 1, 1))
        self.assertEqual((self.h("cx_connect_fail"), self.h("cx_active")), (1, 0))
        # The connector's own failure report afterwards changes nothing.
        factory.clientConnectionFailed(self.reactor.connectors[-1],
                                       Failure(error.UserError()))
        self.assertEqual(len(self.recorder.events), 1)
        self.assertEqual(self.s("upstream_cx_connect_fail"), 1)

    def test_twistedTimeout(self):
        """The connector's own timeout counts the same way."""
        conn, factory = self.connect()
        factory.clientConnectionFailed(None, Failure(error.TimeoutError()))
        self.assertEqual(self.recorder.events, [("failed", CONNECT_TIMEOUT)])
        self.assertEqual(self.s("upstream_cx_connect_timeout"), 1)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_refused(self):
        """
        A refused connect: C{remote connection failure}; Envoy also counts
        it as destroyed by the remote.
        """
        conn, factory = self.connect()
        factory.clientConnectionFailed(None, Failure(error.ConnectionRefusedError()))
        self.assertEqual(self.recorder.events, [("failed", REMOTE_CONNECTION_FAILURE)])
        self.assertEqual((self.s("upstream_cx_connect_fail"), self.s("upstream_cx_connect_timeout"),
                          self.s("upstream_cx_destroy_remote"), self.s("upstream_cx_active")),
                         (1, 0, 1, 0))
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_cancelWhileConnecting(self):
        conn, factory = self.connect()
        conn.close()
        self.assertTrue(self.reactor.connectors[-1].stoppedConnecting)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertIsNone(factory.buildProtocol(None))
        self.assertEqual(self.recorder.events, [])
        self.assertEqual((self.s("upstream_cx_active"), self.s("upstream_cx_destroy_local"),
                          self.s("upstream_cx_connect_fail")), (0, 1, 0))

    def test_remoteClose(self):
        conn, transport = self.establish()
        self.reactor.advance(1.5)
        reason = Failure(error.ConnectionDone())
        conn.connectionLost(reason)
        self.assertEqual(self.recorder.events, ["connected", ("closed", reason)])
        self.assertFalse(conn.connected)
        self.assertEqual((self.s("upstream_cx_destroy"), self.s("upstream_cx_destroy_remote"),
                          self.s("upstream_cx_active")), (1, 1, 0))
        self.assertEqual(self.h("cx_active"), 0)
        merged = self.store.snapshot().histograms["cluster.c1.upstream_cx_length_ms"]
        self.assertAlmostEqual(merged.sum, 1500, delta=20)

    def test_localClose(self):
        conn, transport = self.establish()
        conn.close()
        self.assertTrue(transport.disconnecting)
        conn.connectionLost(Failure(error.ConnectionDone()))
        self.assertTrue(conn.closedLocally)
        self.assertEqual((self.s("upstream_cx_destroy_local"),
                          self.s("upstream_cx_destroy_remote")), (1, 0))

    def test_closeAfterHostFinIsRemote(self):
        """Closing after the host's FIN: Envoy counts the host's close."""
        conn, transport = self.establish()
        conn.readConnectionLost()
        conn.close()
        conn.connectionLost(Failure(error.ConnectionDone()))
        self.assertEqual((self.s("upstream_cx_destroy_local"),
                          self.s("upstream_cx_destroy_remote")), (0, 1))

    def test_withActiveRequest(self):
        """
        Callbacks without C{closingWithIncompleteStream} (a TCP proxy) carry
        a stream while connected: Envoy's TCP pool counts every close of an
        assigned connection in upstream_cx_destroy_*_with_active_rq.
        """
        conn, transport = self.establish()
        conn.close()
        conn.connectionLost(Failure(error.ConnectionDone()))
        self.assertEqual((self.s("upstream_cx_destroy_with_active_rq"),
                          self.s("upstream_cx_destroy_local_with_active_rq"),
                          self.s("upstream_cx_destroy_remote_with_active_rq")), (1, 1, 0))

    def test_withoutActiveRequest(self):
        """Callbacks that say no stream is incomplete: not counted as active."""
        self.recorder.closingWithIncompleteStream = lambda: False
        conn, transport = self.establish()
        conn.connectionLost(Failure(error.ConnectionDone()))
        self.assertEqual((self.s("upstream_cx_destroy_remote"),
                          self.s("upstream_cx_destroy_with_active_rq")), (1, 0))

    def test_peekPlainTransportsOnly(self):
        """L{UpstreamConnection.peek} says idle for transports it cannot look into."""
        conn, transport = self.establish()
        self.assertEqual(conn.peek(), PEEK_IDLE)

    def test_halfCloseFromHost(self):
        conn, transport = self.establish()
        conn.readConnectionLost()
        self.assertEqual(self.recorder.events, ["connected", "read-closed"])
        self.assertFalse(transport.disconnecting)

    def test_pendingHalfClose(self):
        """A FIN asked for while connecting is sent once connected."""
        conn, factory = self.connect()
        conn.write(b"x")
        conn.loseWriteConnection()
        proto = factory.buildProtocol(None)
        sent = []

        class T(StringTransport):
            def loseWriteConnection(self):
                sent.append(self.value())

        proto.makeConnection(T())
        self.assertEqual(sent, [b"x"])

    def test_flowControl(self):
        conn, factory = self.connect()
        conn.pauseReading()
        producer = object()
        conn.registerProducer(producer, True)
        transport = StringTransport()
        factory.buildProtocol(None).makeConnection(transport)
        self.assertEqual(transport.producerState, "paused")
        self.assertIs(transport.producer, producer)
        conn.resumeReading()
        self.assertEqual(transport.producerState, "producing")
        conn.unregisterProducer()
        self.assertIsNone(transport.producer)
        self.assertEqual((self.s("upstream_flow_control_paused_reading_total"),
                          self.s("upstream_flow_control_resumed_reading_total")), (1, 1))

    def test_connectTCPRaises(self):
        """A synchronous connectTCP error is reported later, not re-entrantly."""
        def boom(*a, **kw):
            raise error.ConnectBindError()

        self.reactor.connectTCP = boom
        conn = self.tlc.connect(self.host, self.recorder)
        self.assertEqual(self.recorder.events, [])
        self.reactor.advance(0)
        self.assertEqual(self.recorder.events, [("failed", "local connection failure")])
        self.assertEqual(self.s("bind_errors"), 1)
        self.assertIsInstance(conn, UpstreamConnection)


# --- real sockets on 127.0.0.1 ----------------------------------------------


@implementer(IHalfCloseableProtocol)
class HalfCloseServer(Protocol):
    """
    Records what it reads; on the client's FIN answers C{reply} and sends
    its own FIN (or, with C{finFirst}, half-closes as soon as connected).
    """

    reply = b"pong"
    finFirst = False

    def connectionMade(self):
        self.received = []
        self.factory.connected.callback(self)
        if self.finFirst:
            self.transport.write(self.reply)
            self.transport.loseWriteConnection()

    def dataReceived(self, data):
        self.received.append(data)
        if self.factory.echo:
            self.transport.write(data)

    readClosed = writeClosed = False

    def readConnectionLost(self):
        self.readClosed = True
        self.factory.gotFin.callback(b"".join(self.received))
        if self.writeClosed:
            self.transport.loseConnection()
        else:
            self.transport.write(self.reply)
            self.transport.loseWriteConnection()

    def writeConnectionLost(self):
        # Both halves shut: Twisted leaves the socket open until asked.
        self.writeClosed = True
        if self.readClosed:
            self.transport.loseConnection()

    def connectionLost(self, reason):
        if not self.factory.lost.called:
            self.factory.lost.callback([reason])


class DeferredRecorder(Recorder):
    def __init__(self):
        Recorder.__init__(self)
        self.connected = defer.Deferred()
        self.failed = defer.Deferred()
        self.readClosed = defer.Deferred()
        self.closed = defer.Deferred()

    def onUpstreamConnected(self, upstream):
        Recorder.onUpstreamConnected(self, upstream)
        self.connected.callback(upstream)

    def onUpstreamConnectFailed(self, upstream, reason):
        Recorder.onUpstreamConnectFailed(self, upstream, reason)
        self.failed.callback(reason)

    def onUpstreamData(self, data):
        Recorder.onUpstreamData(self, data)

    def onUpstreamReadClosed(self):
        Recorder.onUpstreamReadClosed(self)
        self.readClosed.callback(b"".join(self.data))

    def onUpstreamClosed(self, reason):
        Recorder.onUpstreamClosed(self, reason)
        self.closed.callback([reason])


class RealSocketTests(TestCase):
    """Connections over real sockets on 127.0.0.1, on the real reactor."""

    timeout = 10

    def listen(self, echo=False, finFirst=False):
        from twisted.internet import reactor

        factory = Factory.forProtocol(HalfCloseServer)
        factory.echo = echo
        factory.connected = defer.Deferred()
        factory.gotFin = defer.Deferred()
        factory.lost = defer.Deferred()
        HalfCloseServer.finFirst = finFirst
        self.addCleanup(setattr, HalfCloseServer, "finFirst", False)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return factory, port.getHost().port

    def cluster(self, port):
        from twisted.internet import reactor

        store, tlc = setUpCluster(self, reactor, port=port, connect_timeout="2s")
        return store, tlc

    @defer.inlineCallbacks
    def test_connectAndEcho(self):
        factory, port = self.listen(echo=True)
        store, tlc = self.cluster(port)
        rec = DeferredRecorder()
        host = tlc.chooseHost()
        conn = tlc.connect(host, rec)
        yield rec.connected
        self.assertTrue(conn.connected)
        self.assertEqual(conn.transport.getPeer().port, port)
        self.assertTrue(conn.transport.getTcpNoDelay())
        conn.write(b"ping")
        server = yield factory.connected
        while b"".join(rec.data) != b"ping":
            yield _turn()
        conn.close()
        yield rec.closed
        yield factory.lost
        s = lambda n: stat(store, "cluster.c1." + n)  # noqa: E731
        self.assertEqual((s("upstream_cx_total"), s("upstream_cx_active"),
                          s("upstream_cx_connect_fail"), s("upstream_cx_destroy_local"),
                          s("upstream_cx_rx_bytes_total"), s("upstream_cx_tx_bytes_total")),
                         (1, 0, 0, 1, 4, 4))
        self.assertEqual((host.stats("cx_total"), host.stats("cx_active")), (1, 0))
        self.assertEqual(store.snapshot().histograms["cluster.c1.upstream_cx_connect_ms"].count, 1)
        self.assertEqual(server.received, [b"ping"])

    @defer.inlineCallbacks
    def test_refused(self):
        """Nothing listening: C{remote connection failure}, counted."""
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        store, tlc = self.cluster(port)
        rec = DeferredRecorder()
        host = tlc.chooseHost()
        conn = tlc.connect(host, rec)
        reason = yield rec.failed
        self.assertEqual(reason, REMOTE_CONNECTION_FAILURE)
        self.assertTrue(conn.failureReason.check(error.ConnectionRefusedError))
        self.assertEqual(stat(store, "cluster.c1.upstream_cx_connect_fail"), 1)
        self.assertEqual(stat(store, "cluster.c1.upstream_cx_connect_timeout"), 0)
        self.assertEqual(stat(store, "cluster.c1.upstream_cx_active"), 0)
        self.assertEqual(host.stats("cx_connect_fail"), 1)

    @defer.inlineCallbacks
    def test_halfCloseUpstreamFirst(self):
        """
        Our FIN reaches the host, which still answers and then sends its
        own FIN: we get the data, the read close, and then (Twisted would
        not close by itself) the full close.
        """
        factory, port = self.listen()
        store, tlc = self.cluster(port)
        rec = DeferredRecorder()
        conn = tlc.connect(tlc.chooseHost(), rec)
        conn.write(b"request")
        conn.loseWriteConnection()  # asked before connected: sent after
        got = yield factory.gotFin
        self.assertEqual(got, b"request")
        data = yield rec.readClosed
        self.assertEqual(data, b"pong")
        yield rec.closed
        yield factory.lost
        self.assertEqual(rec.events[-2:], ["read-closed", ("closed", rec.events[-1][1])])
        self.assertEqual(stat(store, "cluster.c1.upstream_cx_active"), 0)
        # The host's FIN came last: the close was the remote's.
        self.assertEqual(stat(store, "cluster.c1.upstream_cx_destroy_remote"), 1)

    @defer.inlineCallbacks
    def test_halfCloseHostFirst(self):
        """
        The host half-closes first; we can still send, and our FIN then
        completes the close.
        """
        factory, port = self.listen(finFirst=True)
        store, tlc = self.cluster(port)
        rec = DeferredRecorder()
        conn = tlc.connect(tlc.chooseHost(), rec)
        data = yield rec.readClosed
        self.assertEqual(data, b"pong")
        self.assertTrue(conn.connected)
        conn.write(b"late")
        conn.loseWriteConnection()
        got = yield factory.gotFin
        self.assertEqual(got, b"late")
        yield rec.closed
        yield factory.lost
        self.assertEqual(stat(store, "cluster.c1.upstream_cx_destroy_local"), 1)
        self.assertEqual(stat(store, "cluster.c1.upstream_cx_active"), 0)


def _turn():
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    return deferLater(reactor, 0.001, lambda: None)
