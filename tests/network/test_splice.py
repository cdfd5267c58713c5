"""
Tests for L{txenvoy.network.splice}: the pump on real loopback TCP sockets
driven by a fake reactor (L{MemoryReactor} records the read and write sets;
a C{select} loop stands in for the poller), and tcp_proxy's side of the
fast path with a fake pump.
"""

import errno
import os
import select
import socket
import time

from twisted.internet import error, tcp
from twisted.internet.interfaces import IReadDescriptor, IWriteDescriptor
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.extensions.filters.network.test_tcp_proxy import (
    FakeCluster, FakeClusterManager, FakeConnection as FakeProxyConnection, FakeHost,
    RecordingLogger)
from twisted.internet.task import Clock
from txenvoy.extensions.filters.network.tcp_proxy import TcpProxyConfig
from txenvoy.network import splice
from txenvoy.server.dispatcher import Dispatcher
from txenvoy.stats.store import StatsStore


def tcpPair(serverBuffer=None):
    """
    Two connected non-blocking loopback TCP sockets. C{serverBuffer} sets
    the accepted side's buffers before the handshake, so the window is
    small from the start (shrinking it later stalls TCP for seconds).
    """
    server = socket.socket()
    if serverBuffer:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, serverBuffer)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, serverBuffer)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    a = socket.create_connection(server.getsockname())
    b, _ = server.accept()
    server.close()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


class FakeTransport:
    """
    The parts of a Twisted TCP transport the pump uses, around a real
    socket: its write buffer, producer registration and connectionLost.
    """

    def __init__(self, sock, unsent=b""):
        self.socket = sock
        self.dataBuffer = unsent
        self.offset = 0
        self._tempDataLen = 0
        self.producer = None
        self.reading = True
        self.disconnected = False
        self.lost = []

    def getHandle(self):
        return self.socket

    def stopReading(self):
        self.reading = False

    def registerProducer(self, producer, streaming):
        self.producer = producer
        if not streaming:
            producer.resumeProducing()

    def unregisterProducer(self):
        self.producer = None

    def flush(self):
        """What Twisted's doWrite does once the buffer is written."""
        self.socket.sendall(self.dataBuffer)
        self.dataBuffer = b""
        if self.producer is not None:
            self.producer.resumeProducing()

    def connectionLost(self, reason):
        self.disconnected = True
        self.lost.append(reason)
        self.socket.close()


class Callbacks:
    """Records what the pump reports."""

    def __init__(self):
        self.fromDownstream = 0
        self.toDownstream = 0
        self.readClosed = []
        self.paused = []
        self.resumed = []
        self.fallback = 0

    def onSpliceBytes(self, fromDownstream, toDownstream):
        self.fromDownstream += fromDownstream
        self.toDownstream += toDownstream

    def onSpliceReadClosed(self, fromDownstream):
        self.readClosed.append(fromDownstream)

    def onSplicePaused(self, fromDownstream):
        self.paused.append(fromDownstream)

    def onSpliceResumed(self, fromDownstream):
        self.resumed.append(fromDownstream)

    def onSpliceFallback(self):
        self.fallback += 1


def inFlightBound():
    """
    The most a stalled path can hold before the client's sends stop:
    the kernel's largest TCP buffers (C{tcp_wmem}/C{tcp_rmem}, which grow
    by autotuning: 32 MiB of receive buffer on recent kernels) for the
    client's send buffer, the proxy's receive and send buffers, plus a
    pipe and some slack.
    """
    def largest(name, default):
        try:
            with open("/proc/sys/net/ipv4/" + name) as f:
                return int(f.read().split()[2])
        except (OSError, ValueError, IndexError):
            return default
    wmem = largest("tcp_wmem", 4 << 20)
    rmem = largest("tcp_rmem", 6 << 20)
    return 2 * wmem + rmem + (8 << 20)


def spin(reactor, predicate, timeout=10.0):
    """
    Run the reactor's read and write sets with C{select} (level-triggered,
    as epoll is used by Twisted) until C{predicate()} holds.
    """
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise AssertionError("not reached in %ss" % (timeout,))
        readers = list(reactor.readers)
        writers = list(reactor.writers)
        if not readers and not writers:
            time.sleep(0.005)
            continue
        r, w, _ = select.select(readers, writers, [], 0.05)
        for x in r:
            if x in reactor.readers:
                x.doRead()
        for x in w:
            if x in reactor.writers:
                x.doWrite()


def drainSocket(sock, into):
    """Read what a non-blocking socket has; True at EOF."""
    while True:
        try:
            data = sock.recv(1 << 20)
        except BlockingIOError:
            return False
        if not data:
            return True
        into.append(data)


class PumpTests(SynchronousTestCase):
    """The pump between a downstream and an upstream socket pair."""

    def setUp(self):
        if not splice.AVAILABLE:
            raise SkipTest("os.splice is not available here")
        self.makeSockets()

    def makeSockets(self, serverBuffer=None):
        """client <-> proxyDown (pump) proxyUp <-> server."""
        self.client, proxyDown = tcpPair()
        proxyUp, self.server = tcpPair(serverBuffer)
        for s in (self.client, proxyDown, proxyUp, self.server):
            self.addCleanup(s.close)
        self.reactor = MemoryReactor()
        self.down = FakeTransport(proxyDown)
        self.up = FakeTransport(proxyUp)
        self.callbacks = Callbacks()

    def makePump(self):
        pump = splice.SplicePump(self.reactor, self.down, self.up, self.callbacks)
        self.addCleanup(pump.stop)
        return pump

    def test_interfaces(self):
        """Each socket stands in the reactor as a read and write descriptor."""
        pump = self.makePump()
        for end in (pump._down, pump._up):
            self.assertTrue(verifyObject(IReadDescriptor, end))
            self.assertTrue(verifyObject(IWriteDescriptor, end))

    def test_startTakesBothSockets(self):
        """start() stops the transports reading and reads both sockets itself."""
        pump = self.makePump()
        pump.start()
        self.assertFalse(self.down.reading)
        self.assertFalse(self.up.reading)
        self.assertEqual(self.reactor.readers, {pump._down, pump._up})
        self.assertTrue(pump.running)

    def test_bytesBothWays(self):
        """Bytes cross in both directions, intact, and are counted."""
        pump = self.makePump()
        pump.start()
        up = os.urandom(3 << 20)
        downBytes = os.urandom(1 << 20)
        gotServer, gotClient = [], []
        self.client.setblocking(True)
        self.client.sendall(up[:100000])
        self.server.setblocking(True)
        self.server.sendall(downBytes[:100000])
        self.client.setblocking(False)
        self.server.setblocking(False)
        sent = [100000, 100000]

        def progress():
            for sock, data, i in ((self.client, up, 0), (self.server, downBytes, 1)):
                if sent[i] < len(data):
                    try:
                        sent[i] += sock.send(data[sent[i]:sent[i] + 65536])
                    except BlockingIOError:
                        pass
            drainSocket(self.server, gotServer)
            drainSocket(self.client, gotClient)
            return (sum(map(len, gotServer)) == len(up)
                    and sum(map(len, gotClient)) == len(downBytes))
        spin(self.reactor, progress)
        self.assertTrue(b"".join(gotServer) == up)
        self.assertTrue(b"".join(gotClient) == downBytes)
        self.assertEqual(self.callbacks.fromDownstream, len(up))
        self.assertEqual(self.callbacks.toDownstream, len(downBytes))

    def test_pipesMadeOnFirstBytes(self):
        """An idle pair has no pipe; the first bytes make one per direction."""
        pump = self.makePump()
        pump.start()
        self.assertEqual(pump._toUpstream.pipeRead, -1)
        self.client.send(b"x")
        got = []
        spin(self.reactor, lambda: drainSocket(self.server, got) or got)
        self.assertNotEqual(pump._toUpstream.pipeRead, -1)
        self.assertNotEqual(pump._toDownstream.pipeRead, -1)

    def test_pipeSizeFollowsBufferLimit(self):
        """
        A direction holds no more than the connection's buffer limit
        (per_connection_buffer_limit_bytes), and never more than
        L{splice.PIPE_SIZE}.
        """
        pump = splice.SplicePump(self.reactor, self.down, self.up, self.callbacks, 65536)
        self.addCleanup(pump.stop)
        pump.start()
        self.client.send(b"x")
        got = []
        spin(self.reactor, lambda: drainSocket(self.server, got) or got)
        self.assertEqual(pump._capacity, 65536)
        big = splice.SplicePump(self.reactor, self.down, self.up, self.callbacks, 64 << 20)
        self.assertTrue(big._openPipes())
        self.addCleanup(big.stop)
        self.assertLessEqual(big._capacity, splice.PIPE_SIZE)

    def test_backPressure(self):
        """
        A sink that does not read: the source leaves the read set and the
        sink joins the write set, with at most one pipe's capacity in
        flight; reading the sink resumes the source.
        """
        self.makeSockets(serverBuffer=16384)
        pump = self.makePump()
        pump.start()
        chunk = b"y" * 65536
        sent = [0]

        def push():
            try:
                sent[0] += self.client.send(chunk)
            except BlockingIOError:
                pass
            return self.callbacks.paused
        spin(self.reactor, push)
        self.assertEqual(self.callbacks.paused, [True])
        self.assertNotIn(pump._down, self.reactor.readers)
        self.assertIn(pump._up, self.reactor.writers)
        self.assertLessEqual(pump._toUpstream.inPipe, pump._capacity)
        # Keep pushing: the kernel still moves what is in flight at its own
        # pace (delayed ACKs open the window late on a loaded machine), then
        # nothing more leaves the client's socket buffers, however long we
        # try: half a second of pushes without a byte taken.
        deadline = time.time() + 10
        stuck, since = sent[0], time.time()
        while time.time() - since < 0.5:
            self.assertLess(time.time(), deadline, "the client's sends never stopped")
            push()
            if sent[0] != stuck:
                stuck, since = sent[0], time.time()
            time.sleep(0.001)
        self.assertLess(sent[0], inFlightBound())
        got = []
        spin(self.reactor, lambda: drainSocket(self.server, got)
             or sum(map(len, got)) == sent[0])
        # Draining may block and resume the sink more than once; every
        # pause ends in a resume once everything has arrived.
        self.assertEqual(set(self.callbacks.resumed), {True})
        self.assertEqual(len(self.callbacks.resumed), len(self.callbacks.paused))
        self.assertIn(pump._down, self.reactor.readers)
        self.assertEqual(self.callbacks.fromDownstream, sent[0])

    def test_eofCarriedAfterBytes(self):
        """
        The client's FIN reaches the upstream after its last byte, the
        callbacks hear of it once, and the other direction still works.
        """
        pump = self.makePump()
        pump.start()
        self.client.sendall(b"last words")
        self.client.shutdown(socket.SHUT_WR)
        got = []
        spin(self.reactor, lambda: drainSocket(self.server, got))
        self.assertEqual(b"".join(got), b"last words")
        self.assertEqual(self.callbacks.readClosed, [True])
        self.assertNotIn(pump._down, self.reactor.readers)
        self.server.sendall(b"reply")
        back = []
        spin(self.reactor, lambda: drainSocket(self.client, back) or back)
        self.assertEqual(b"".join(back), b"reply")
        self.server.shutdown(socket.SHUT_WR)
        spin(self.reactor, lambda: self.callbacks.readClosed == [True, False])
        self.assertTrue(drainSocket(self.client, back))
        self.assertEqual(self.reactor.readers, set())

    def test_eofWaitsForBlockedBytes(self):
        """A FIN behind bytes the sink has not taken yet waits for them."""
        self.makeSockets(serverBuffer=16384)
        pump = self.makePump()
        pump.start()
        payload = os.urandom(16 << 20)
        sent = [0]

        def push():
            if sent[0] < len(payload):
                try:
                    sent[0] += self.client.send(payload[sent[0]:sent[0] + 65536])
                except BlockingIOError:
                    pass
            return self.callbacks.paused
        spin(self.reactor, push)
        got = []
        done = []

        def finish():
            push()
            if sent[0] == len(payload) and not done:
                self.client.shutdown(socket.SHUT_WR)
                done.append(True)
            return drainSocket(self.server, got)
        spin(self.reactor, finish, timeout=30)
        self.assertTrue(b"".join(got) == payload)
        self.assertEqual(self.callbacks.readClosed, [True])

    def test_unsentBytesWrittenFirst(self):
        """
        Bytes a transport still holds for writing (read-ahead before the
        upstream connected) go out through it before the pump reads.
        """
        self.up.dataBuffer = b"read-ahead "
        pump = self.makePump()
        pump.start()
        self.assertEqual(self.reactor.readers, set())
        self.assertIsNotNone(self.up.producer)
        self.client.sendall(b"then spliced")
        self.up.flush()
        self.assertIsNone(self.up.producer)
        got = []
        spin(self.reactor, lambda: drainSocket(self.server, got)
             or b"".join(got) == b"read-ahead then spliced")
        self.assertEqual(self.callbacks.fromDownstream, len(b"then spliced"))

    def test_sinkErrorLosesSink(self):
        """
        A sink that resets: the pump stops and the sink's transport gets
        connectionLost with ConnectionLost, as the reactor would give it.
        """
        pump = self.makePump()
        pump.start()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        self.server.close()
        time.sleep(0.05)

        def push():
            try:
                self.client.send(b"z" * 65536)
            except OSError:
                pass
            return self.up.lost
        spin(self.reactor, push)
        self.assertTrue(self.up.lost[0].check(error.ConnectionLost))
        self.assertEqual(self.down.lost, [])
        self.assertTrue(pump.stopped)
        self.assertEqual(self.reactor.readers, set())
        self.assertEqual(self.reactor.writers, set())

    def test_sourceResetLosesSource(self):
        """A source that resets loses the source's transport."""
        pump = self.makePump()
        pump.start()
        self.client.send(b"x")
        got = []
        spin(self.reactor, lambda: drainSocket(self.server, got) or got)
        self.client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        self.client.close()
        spin(self.reactor, lambda: self.down.lost)
        self.assertTrue(self.down.lost[0].check(error.ConnectionLost))
        self.assertEqual(self.up.lost, [])

    def test_reactorDisconnect(self):
        """
        The reactor dropping an end (a hang-up, or disconnectAll at
        shutdown) reaches that end's transport once, with its reason.
        """
        pump = self.makePump()
        pump.start()
        reason = Failure(error.ConnectionLost())
        self.reactor.removeReader(pump._down)
        pump._down.connectionLost(reason)
        self.assertEqual(self.down.lost, [reason])
        self.assertTrue(pump.stopped)
        self.assertEqual(self.reactor.readers, set())
        self.reactor.removeReader(pump._up)
        pump._up.connectionLost(reason)
        self.assertEqual(self.up.lost, [reason])
        pump._down.connectionLost(reason)
        self.assertEqual(len(self.down.lost), 1)

    def test_stopClosesPipes(self):
        """stop() gives the sockets back and closes the pipes, once."""
        pump = self.makePump()
        pump.start()
        self.client.send(b"x")
        got = []
        spin(self.reactor, lambda: drainSocket(self.server, got) or got)
        fds = [pump._toUpstream.pipeRead, pump._toUpstream.pipeWrite,
               pump._toDownstream.pipeRead, pump._toDownstream.pipeWrite]
        pump.stop()
        pump.stop()
        self.assertEqual(self.reactor.readers, set())
        for fd in fds:
            self.assertRaises(OSError, os.fstat, fd)
        self.assertFalse(self.down.socket._closed)

    def test_noPipeFallsBack(self):
        """
        Out of file descriptors for pipes: the pump stops before moving a
        byte and the caller is told to use the ordinary path.
        """
        def noPipe(flags):
            raise OSError(errno.EMFILE, "Too many open files")
        self.patch(os, "pipe2", noPipe)
        pump = self.makePump()
        pump.start()
        self.client.send(b"x")
        spin(self.reactor, lambda: self.callbacks.fallback)
        self.assertTrue(pump.stopped)
        self.assertEqual(self.reactor.readers, set())
        self.assertEqual(self.callbacks.fromDownstream, 0)
        self.assertEqual(self.server.recv(10) if select.select([self.server], [], [], 0.1)[0]
                         else b"", b"")


class FakeChain:
    def __init__(self, factories=1, transportSocket=None):
        self.filterFactories = [object()] * factories
        self.transportSocket = transportSocket


class FakeConnection:
    def __init__(self, chain):
        self.filterChain = chain


class EligibleTests(SynchronousTestCase):
    """Which connections take the fast path."""

    def setUp(self):
        if not splice.AVAILABLE:
            raise SkipTest("os.splice is not available here")
        self.patch(splice, "ENABLED", True)
        a, b = tcpPair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        self.down = tcp.Connection(a, Protocol(), MemoryReactor())
        self.up = tcp.Connection(b, Protocol(), MemoryReactor())
        self.down.connected = self.up.connected = True

    def test_plainTcpProxy(self):
        self.assertTrue(splice.eligible(FakeConnection(FakeChain()), self.down, self.up))

    def test_disabled(self):
        self.patch(splice, "ENABLED", False)
        self.assertFalse(splice.eligible(FakeConnection(FakeChain()), self.down, self.up))

    def test_otherFilters(self):
        """Another network filter may need the bytes."""
        self.assertFalse(splice.eligible(FakeConnection(FakeChain(2)), self.down, self.up))

    def test_transportSocket(self):
        """TLS (any transport socket) needs the bytes in Python."""
        chain = FakeChain(transportSocket=object())
        self.assertFalse(splice.eligible(FakeConnection(chain), self.down, self.up))

    def test_notTcp(self):
        """A wrapped or in-memory transport has no socket to splice."""
        chain = FakeChain()
        self.assertFalse(splice.eligible(FakeConnection(chain), StringTransport(), self.up))
        self.assertFalse(splice.eligible(FakeConnection(chain), self.down, StringTransport()))

    def test_noChain(self):
        self.assertFalse(splice.eligible(object(), self.down, self.up))

    def test_disconnecting(self):
        self.down.disconnecting = True
        self.assertFalse(splice.eligible(FakeConnection(FakeChain()), self.down, self.up))


class FakePump:
    """Stands in for L{splice.SplicePump} in tcp_proxy's tests."""

    instances = []

    def __init__(self, reactor, downstream, upstream, callbacks, bufferLimit=None):
        self.args = (reactor, downstream, upstream, callbacks, bufferLimit)
        self.started = False
        self.stopped = False
        FakePump.instances.append(self)

    def start(self):
        self.started = True

    def stop(self):
        self.stopped = True


class TcpProxySpliceTests(SynchronousTestCase):
    """
    tcp_proxy's side of the fast path: byte counting, FINs and fallback as
    on the ordinary path.
    """

    def setUp(self):
        self.clock = Clock()
        self.store = StatsStore()
        self.dispatcher = Dispatcher(self.clock, "worker_0", self.store.shard("worker_0"))
        FakePump.instances = []
        self.patch(splice, "eligible", lambda connection, down, up: True)
        self.patch(splice, "SplicePump", FakePump)

    def start(self):
        cluster = FakeCluster(self.dispatcher.stats, [FakeHost("h1")])
        for name in ("upstream_cx_rx_bytes_total", "upstream_cx_tx_bytes_total"):
            setattr(cluster.stats, name, self.dispatcher.stats.counter("cluster.c." + name))
        self.dispatcher.clusterManager = FakeClusterManager({"c": cluster})
        config = TcpProxyConfig("p", [("c", 1)], 3600.0, 1, [RecordingLogger()])
        proxy = config.buildFilter(FakeProxyConnection(self.dispatcher), None)
        transport = StringTransport()
        proxy.makeConnection(transport)
        return cluster, proxy, transport

    def counter(self, name):
        return self.store.counterValue(name)

    def connected(self, early=None):
        cluster, proxy, transport = self.start()
        upstream = cluster.upstreams[0]
        if early:
            proxy.dataReceived(early)
        proxy.onUpstreamConnected(upstream)
        return cluster, proxy, transport, upstream, FakePump.instances[-1]

    def test_pumpStarted(self):
        """
        Once connected the pump starts, after the read-ahead was written
        through the upstream connection; no producers are wired.
        """
        cluster, proxy, transport, upstream, pump = self.connected(b"early")
        self.assertTrue(pump.started)
        self.assertIs(pump.args[3], proxy)
        self.assertEqual(upstream.written, [b"early"])
        self.assertIsNone(upstream.producer)
        self.assertEqual(transport.producerState, "paused")

    def test_bytesCounted(self):
        """Spliced bytes count exactly as read bytes do on the ordinary path."""
        cluster, proxy, transport, upstream, pump = self.connected(b"early")
        proxy.onSpliceBytes(1000, 0)
        proxy.onSpliceBytes(0, 250)
        self.assertEqual(self.counter("tcp.p.downstream_cx_rx_bytes_total"), 1005)
        self.assertEqual(self.counter("tcp.p.downstream_cx_tx_bytes_total"), 250)
        self.assertEqual(proxy.streamInfo.bytesReceived, 1005)
        self.assertEqual(proxy.streamInfo.bytesSent, 250)
        self.assertEqual(self.counter("cluster.c.upstream_cx_tx_bytes_total"), 1000)
        self.assertEqual(self.counter("cluster.c.upstream_cx_rx_bytes_total"), 250)

    def test_halfCloseThenClose(self):
        """
        One FIN leaves the connection open (half-close); the second closes
        it after the pump gave the sockets back.
        """
        cluster, proxy, transport, upstream, pump = self.connected()
        proxy.onSpliceReadClosed(False)
        self.assertFalse(transport.disconnecting)
        self.assertFalse(pump.stopped)
        proxy.onSpliceReadClosed(True)
        self.assertTrue(pump.stopped)
        self.assertTrue(transport.disconnecting)

    def test_closeStopsPump(self):
        """Any close (here the idle timeout) stops the pump first."""
        cluster, proxy, transport, upstream, pump = self.connected()
        self.clock.advance(3600)
        self.assertTrue(pump.stopped)
        self.assertTrue(transport.disconnecting)

    def test_connectionLostStopsPump(self):
        cluster, proxy, transport, upstream, pump = self.connected()
        proxy.connectionLost(Failure(error.ConnectionLost()))
        self.assertTrue(pump.stopped)
        self.assertTrue(upstream.closed)

    def test_flowControlCounted(self):
        """Pausing the downstream counts as Envoy's watermarks do."""
        cluster, proxy, transport, upstream, pump = self.connected()
        proxy.onSplicePaused(True)
        proxy.onSpliceResumed(True)
        proxy.onSplicePaused(False)
        self.assertEqual(self.counter("tcp.p.downstream_flow_control_paused_reading_total"), 1)
        self.assertEqual(self.counter("tcp.p.downstream_flow_control_resumed_reading_total"), 1)

    def test_fallback(self):
        """No pipes: the ordinary path is wired and reading resumes."""
        cluster, proxy, transport, upstream, pump = self.connected()
        upstream.transport.pauseProducing()
        proxy.onSpliceFallback()
        self.assertIsNotNone(upstream.producer)
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(upstream.transport.producerState, "producing")
        proxy.dataReceived(b"slow")
        self.assertEqual(upstream.written, [b"slow"])

    def test_downstreamFinBeforeConnect(self):
        """A FIN before the upstream connected keeps the ordinary path."""
        cluster, proxy, transport = self.start()
        proxy.readConnectionLost()
        proxy.onUpstreamConnected(cluster.upstreams[0])
        self.assertEqual(FakePump.instances, [])
        self.assertTrue(cluster.upstreams[0].writeClosed)
