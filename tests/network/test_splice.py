"""
Tests for L{txenvoy.network.splice}: the pump on real loopback TCP sockets
driven by a fake reactor (L{MemoryReactor} records the read and write sets;
a C{select} loop stands in for the poller), and tcp_proxy's side of the
fast path with a fake pump.
"""

import errno
import inspect
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


class SpliceOwner(Protocol):
    """
    The protocol of an armed transport: builds and starts a real pump the
    first time it is asked (tcp_proxy's C{splicePump}), or gives none.
    """

    def __init__(self, test, give=True):
        self.test = test
        self.give = give
        self.asked = 0
        self.received = []

    def splicePump(self):
        self.asked += 1
        if not self.give:
            return None
        test = self.test
        test.pump = splice.SplicePump(test.reactor, test.down, test.up, test.callbacks)
        test.addCleanup(test.pump.stop)
        test.pump.start()
        return test.pump

    def dataReceived(self, data):
        self.received.append(data)


class ArmTests(SynchronousTestCase):
    """
    An armed pair: both sockets stay in the reactor's read set as their
    transports, and the pump is built on the first readiness event.
    """

    def setUp(self):
        if not splice.AVAILABLE:
            raise SkipTest("os.splice is not available here")
        self.client, proxyDown = tcpPair()
        proxyUp, self.server = tcpPair()
        for s in (self.client, proxyDown, proxyUp, self.server):
            self.addCleanup(s.close)
        self.reactor = MemoryReactor()
        self.callbacks = Callbacks()
        self.pump = None
        self.owner = SpliceOwner(self)
        self.down = tcp.Connection(proxyDown, self.owner, self.reactor)
        self.up = tcp.Connection(proxyUp, self.owner, self.reactor)
        for t in (self.down, self.up):
            t.connected = True
            t.startReading()

    def test_idleHoldsNoPump(self):
        """Armed, both transports keep reading as themselves; no pump."""
        self.assertTrue(splice.arm(self.down, self.up))
        for t in (self.down, self.up):
            self.assertIsInstance(t, tcp.Connection)
            self.assertIsNot(type(t), tcp.Connection)
            self.assertIn(t, self.reactor.readers)
        self.assertEqual(self.owner.asked, 0)

    def test_firstBytesStartPump(self):
        """
        The first readable event builds and starts the pump, which takes
        both sockets, disarms the transports and moves the bytes at once.
        """
        splice.arm(self.down, self.up)
        self.client.sendall(b"hello")
        select.select([self.down.socket], [], [], 5)
        self.down.doRead()
        self.assertEqual(self.owner.asked, 1)
        self.assertTrue(self.pump.running)
        self.assertIs(type(self.down), tcp.Connection)
        self.assertIs(type(self.up), tcp.Connection)
        self.assertNotIn(self.down, self.reactor.readers)
        self.assertEqual(self.owner.received, [])
        self.assertEqual(self.callbacks.fromDownstream, 5)
        self.server.settimeout(5)
        self.assertEqual(self.server.recv(10), b"hello")

    def test_upstreamFinWhileIdle(self):
        """A FIN from the upstream of an idle pair reaches the client."""
        splice.arm(self.down, self.up)
        self.server.shutdown(socket.SHUT_WR)
        select.select([self.up.socket], [], [], 5)
        self.up.doRead()
        self.assertEqual(self.callbacks.readClosed, [False])
        self.client.settimeout(5)
        self.assertEqual(self.client.recv(10), b"")

    def test_noPumpReadsAsBefore(self):
        """A protocol with no pump to give: the transport reads as it would unarmed."""
        self.owner.give = False
        splice.arm(self.down, self.up)
        self.client.sendall(b"plain")
        select.select([self.down.socket], [], [], 5)
        self.down.doRead()
        self.assertIs(type(self.down), tcp.Connection)
        self.assertEqual(self.owner.received, [b"plain"])

    def test_closingReadsAsBefore(self):
        """A transport closing meanwhile is not handed to a pump."""
        splice.arm(self.down, self.up)
        self.down.disconnecting = True
        self.client.sendall(b"late")
        select.select([self.down.socket], [], [], 5)
        self.down.doRead()
        self.assertEqual(self.owner.asked, 0)
        self.assertIs(type(self.down), tcp.Connection)

    def test_disarm(self):
        splice.arm(self.down, self.up)
        splice.disarm(self.down)
        splice.disarm(self.down)
        self.assertIs(type(self.down), tcp.Connection)
        self.assertIsNot(type(self.up), tcp.Connection)

    def test_unsentBytesNotArmed(self):
        """Bytes still to be written: the pump must start now, to wait for them."""
        self.up.dataBuffer = b"pending"
        self.assertFalse(splice.arm(self.down, self.up))
        self.assertIs(type(self.down), tcp.Connection)
        self.assertIs(type(self.up), tcp.Connection)

    def test_notTcpNotArmed(self):
        self.assertFalse(splice.arm(self.down, StringTransport()))
        self.assertIs(type(self.down), tcp.Connection)

    def test_acceptedConnectionArmedInItsHook(self):
        """
        An accepted connection is armed through its C{readHook}, keeping
        its class (no instance dict is made for it), and reads as before
        once disarmed.
        """
        from txenvoy.network.accept import AcceptedConnection

        class Server:
            boundHost = boundHostTuple = None

        sock = self.down.socket
        self.down = AcceptedConnection(sock, self.owner, ("127.0.0.1", 1), Server(), 0,
                                       self.reactor)
        self.assertTrue(splice.arm(self.down, self.up))
        self.assertIs(type(self.down), AcceptedConnection)
        self.assertIs(self.down.readHook, splice._armedDoRead)
        self.client.sendall(b"hello")
        select.select([sock], [], [], 5)
        self.down.doRead()
        self.assertIsNone(self.down.readHook)
        self.assertEqual(self.callbacks.fromDownstream, 5)

    def test_closingAcceptedConnectionNotArmed(self):
        """One closing at the next turn keeps ignoring reads: not armed."""
        from txenvoy.network.accept import AcceptedConnection

        class Server:
            boundHost = boundHostTuple = None
            closed = []

            def closeSoon(self, connection):
                self.closed.append(connection)

        self.down = AcceptedConnection(self.down.socket, self.owner, ("127.0.0.1", 1), Server(),
                                       0, self.reactor)
        self.down.loseConnection()
        hook = self.down.readHook
        self.assertFalse(splice.arm(self.down, self.up))
        self.assertIs(self.down.readHook, hook)
        self.assertIs(type(self.up), tcp.Connection)

    def test_upstreamClientArmedInItsSlot(self):
        """
        The upstream client reads until drained from birth, and is armed
        through its C{doRead} slot, keeping its class; disarmed, it reads
        until drained again.
        """
        from tests.test_privates import reactorAndServer
        from twisted.internet.protocol import ClientFactory
        from txenvoy.network import read_loop

        reactor, server = reactorAndServer(self)
        factory = ClientFactory.forProtocol(Protocol)
        connector = read_loop.connectTCP(reactor, "127.0.0.1", server.getsockname()[1],
                                         factory, timeout=5, draining=True)
        transport = connector.transport
        deadline = time.time() + 10
        while not transport.connected and time.time() < deadline:
            reactor.iterate(0.01)
        self.addCleanup(transport.abortConnection)
        cls = type(transport)
        self.assertIs(transport.doRead.__func__, read_loop._DrainingRead.doRead)
        self.assertTrue(splice.arm(self.down, transport))
        self.assertIs(type(transport), cls)
        self.assertIs(transport.doRead.__func__, splice._armedDoRead)
        splice.disarm(transport)
        self.assertIs(transport.doRead.__func__, read_loop._DrainingRead.doRead)


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

    def armed(self):
        """A connected proxy whose pair L{splice.arm} armed."""
        self.armedPairs = []
        self.disarmed = []
        self.patch(splice, "arm", lambda down, up: self.armedPairs.append((down, up)) or True)
        self.patch(splice, "disarm", self.disarmed.append)
        cluster, proxy, transport = self.start()
        upstream = cluster.upstreams[0]
        proxy.dataReceived(b"early")
        proxy.onUpstreamConnected(upstream)
        return cluster, proxy, transport, upstream

    def test_armedUntilReadable(self):
        """
        Armed, an idle connection holds no pump and its downstream reads
        again (for the first readiness event); the first event gets the
        started pump, once.
        """
        cluster, proxy, transport, upstream = self.armed()
        self.assertEqual(self.armedPairs, [(transport, upstream.transport)])
        self.assertEqual(FakePump.instances, [])
        self.assertEqual(upstream.written, [b"early"])
        self.assertEqual(transport.producerState, "producing")
        pump = proxy.splicePump()
        self.assertTrue(pump.started)
        self.assertEqual(pump.args[1:4], (transport, upstream.transport, proxy))
        self.assertIsNone(proxy.splicePump())
        proxy.connectionLost(Failure(error.ConnectionDone()))
        self.assertTrue(pump.stopped)
        self.assertEqual(self.disarmed, [])

    def test_closedWhileArmed(self):
        """
        The client closes an idle connection: both transports are disarmed,
        the upstream closed, and the access log has a connection that
        moved no byte after the read-ahead.
        """
        cluster, proxy, transport, upstream = self.armed()
        proxy.connectionLost(Failure(error.ConnectionDone()))
        self.assertEqual(self.disarmed, [transport, upstream.transport])
        self.assertTrue(upstream.closed)
        self.assertIsNone(proxy.splicePump())
        self.assertEqual(FakePump.instances, [])
        [info] = proxy.config.accessLogs[0].infos
        self.assertEqual((info.bytesReceived, info.bytesSent), (5, 0))

    def test_idleTimeoutWhileArmed(self):
        cluster, proxy, transport, upstream = self.armed()
        self.clock.advance(3600)
        self.assertEqual(self.disarmed, [transport, upstream.transport])
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.counter("tcp.p.idle_timeout"), 1)

    def test_upstreamClosedWhileArmed(self):
        cluster, proxy, transport, upstream = self.armed()
        proxy.onUpstreamClosed(Failure(error.ConnectionDone()))
        self.assertEqual(self.disarmed, [upstream.transport, transport])
        self.assertTrue(transport.disconnecting)
        self.assertEqual(FakePump.instances, [])

    def test_downstreamFinBeforeConnect(self):
        """A FIN before the upstream connected keeps the ordinary path."""
        cluster, proxy, transport = self.start()
        proxy.readConnectionLost()
        proxy.onUpstreamConnected(cluster.upstreams[0])
        self.assertEqual(FakePump.instances, [])
        self.assertTrue(cluster.upstreams[0].writeClosed)
