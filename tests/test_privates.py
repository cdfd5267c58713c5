"""
Tests for L{txenvoy.privates}: every private attribute of Twisted and
pyOpenSSL that txenvoy uses is still where it was. When one of these fails
after an upgrade, the release moved it: adapt L{txenvoy.privates} before
raising the caps in C{pyproject.toml}.
"""

import os
import re
import socket
import time

from twisted.internet import reactor as globalReactor
from twisted.internet import tcp
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.ssl import optionsForClientTLS
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.python.reflect import namedAny
from twisted.trial.unittest import SynchronousTestCase

import txenvoy
from tests.network.test_user_space import Producer
from txenvoy import privates

PATTERN = re.compile(r"_tlsConnection|_tempDataLen|dataBuffer|_exitSignal|_registerAsIOThread"
                     r"|_appSendBuffer|_handshakeDone|SSL\._(lib|ffi)|_writeDisconnect"
                     r"|_disconnectSelectable|_fromListeningDescriptor|_preexistingSocket")


def reactorAndServer(test):
    """
    An L{privates.EPollReactor} and a listening socket on 127.0.0.1, both
    closed when C{test} ends.
    """
    reactor = privates.EPollReactor()
    test.addCleanup(reactor._poller.close)
    server = socket.socket()
    test.addCleanup(server.close)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    return reactor, server


class PrivatesPresentTests(SynchronousTestCase):

    def test_classAttributes(self):
        """Each named attribute exists on its class or module."""
        missing = ["%s.%s" % (owner, name) for owner, name in privates.CLASS_ATTRIBUTES
                   if not hasattr(namedAny(owner), name)]
        self.assertEqual(missing, [], "moved by the installed Twisted or pyOpenSSL")

    def test_tlsInstanceAttributes(self):
        """A connected L{privates.TLSTransport} has its private state."""
        factory = TLSMemoryBIOFactory(optionsForClientTLS("example.com"), True,
                                      Factory.forProtocol(Protocol), clock=Clock())
        tls = privates.TLSTransport(factory, Protocol())
        tls.makeConnection(StringTransport())
        missing = [n for n in privates.TLS_INSTANCE_ATTRIBUTES if not hasattr(tls, n)]
        self.assertEqual(missing, [])
        self.assertFalse(tls.handshakeDone)
        self.assertFalse(tls.appDataPending)
        self.assertIsNotNone(tls.tlsConnection)
        missing = [n for n in privates.OPENSSL_CONNECTION_ATTRIBUTES
                   if not hasattr(tls.tlsConnection, n)]
        self.assertEqual(missing, [])
        self.assertFalse(privates.sessionReused(tls.tlsConnection))
        tls.write(b"early")
        tls.flushSmallWrites()
        self.assertTrue(tls.appDataPending)

    def test_tcpInstanceAttributes(self):
        """A TCP transport keeps its write buffer where L{unsentBytes} reads it."""
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        conn = tcp.Connection(a, Protocol(), globalReactor)
        missing = [n for n in privates.TCP_INSTANCE_ATTRIBUTES if not hasattr(conn, n)]
        self.assertEqual(missing, [])
        self.assertEqual(privates.unsentBytes(conn), 0)
        self.assertFalse(privates.writeDisconnecting(conn))
        self.assertFalse(privates.writeDisconnected(conn))

    def test_disconnectNow(self):
        """
        L{privates.disconnectNow} takes a TCP transport out of its
        reactor's sets and tells its protocol the connection is done.
        """
        reactor = privates.EPollReactor()
        self.addCleanup(reactor._poller.close)
        a, b = socket.socketpair()
        self.addCleanup(b.close)
        lost = []
        protocol = Protocol()
        protocol.connectionLost = lost.append
        conn = tcp.Connection(a, protocol, reactor)
        protocol.makeConnection(conn)
        reactor.addReader(conn)
        privates.disconnectNow(conn)
        self.assertNotIn(conn, reactor.getReaders())
        self.assertEqual(len(lost), 1)
        lost[0].trap(ConnectionDone)
        self.assertEqual(a.fileno(), -1)

    def _iterate(self, reactor, until, what):
        deadline = time.time() + 10
        while not until():
            if time.time() > deadline:
                self.fail("%s did not happen in 10 s" % (what,))
            reactor.iterate(0.01)

    def test_slottedTCPClient(self):
        """
        A L{privates.SlottedTCPClient} connects, writes, reads and closes as
        Twisted's client does, keeping every attribute Twisted sets on it
        in its slots (its instance dict stays empty); a refused one fails
        as Twisted's does.
        """
        reactor, server = reactorAndServer(self)
        events = []

        class Recorder(Protocol):
            def connectionMade(self):
                events.append("made")

            def dataReceived(self, data):
                events.append(data)

            def connectionLost(self, reason):
                events.append("lost")

        factory = ClientFactory.forProtocol(Recorder)
        factory.clientConnectionFailed = lambda connector, reason: events.append(reason)
        connector = privates.SlottedTCPConnector("127.0.0.1", server.getsockname()[1], factory,
                                                 5, None, reactor)
        connector.connect()
        self._iterate(reactor, lambda: "made" in events, "the connection")
        transport = connector.transport
        self.assertIsInstance(transport, privates.SlottedTCPClient)
        self.assertEqual(transport.doRead.__func__, tcp.Client.doRead)
        self.assertEqual(transport.fileno(), transport.socket.fileno())
        peer, _ = server.accept()
        self.addCleanup(peer.close)
        transport.write(b"ping")
        self._iterate(reactor, lambda: not privates.unsentBytes(transport), "the write")
        self.assertEqual(peer.recv(10), b"ping")
        peer.sendall(b"pong")
        self._iterate(reactor, lambda: b"pong" in events, "the read")
        self.assertEqual(vars(transport), {})
        transport.loseConnection()
        self._iterate(reactor, lambda: "lost" in events, "the close")
        self.assertEqual(transport.fileno(), -1)
        self.assertEqual(vars(transport), {})

        port = server.getsockname()[1]
        server.close()
        refused = privates.SlottedTCPConnector("127.0.0.1", port, factory, 5, None, reactor)
        refused.connect()
        self._iterate(reactor, lambda: len(events) == 4, "the refusal")
        events[-1].trap(ConnectionRefusedError)

    def test_verifyErrorString(self):
        """OpenSSL's own text for X509_V_ERR_CERT_HAS_EXPIRED (10)."""
        self.assertEqual(privates.verifyErrorString(10), "certificate has expired")

    def test_reactorMarkers(self):
        reactor = type(globalReactor)()
        privates.markNotIOThread(reactor)
        self.assertFalse(reactor._registerAsIOThread)
        reactor._exitSignal = 15
        privates.forgetExitSignal(reactor)
        self.assertIsNone(reactor._exitSignal)


class _Reader:
    """A readable descriptor whose C{doRead} reports what it was asked."""

    def __init__(self, sock, fail=False):
        self.sock = sock
        self.reads = 0
        self.fail = fail
        self.lost = []

    def fileno(self):
        return self.sock.fileno()

    def doRead(self):
        self.reads += 1
        self.sock.recv(100)
        return ConnectionDone() if self.fail else None

    def connectionLost(self, reason):
        self.lost.append(reason)
        raise RuntimeError("a connectionLost that raises")

    def logPrefix(self):
        return "reader"


class EPollReactorTests(SynchronousTestCase):
    """L{privates.EPollReactor}: Twisted's epoll reactor, lighter per event."""

    def setUp(self):
        self.reactor = privates.EPollReactor()
        self.addCleanup(self.reactor._poller.close)

    def reader(self, fail=False):
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        reader = _Reader(a, fail)
        self.reactor.addReader(reader)
        b.send(b"x")
        return reader

    def test_instanceAttributes(self):
        missing = [n for n in privates.EPOLL_INSTANCE_ATTRIBUTES
                   if not hasattr(self.reactor, n)]
        self.assertEqual(missing, [])

    def test_readyDescriptorsRead(self):
        """Each ready descriptor's C{doRead} runs once per poll."""
        one, two = self.reader(), self.reader()
        self.reactor.doPoll(0)
        self.assertEqual((one.reads, two.reads), (1, 1))
        self.reactor.doPoll(0)
        self.assertEqual((one.reads, two.reads), (1, 1))

    def test_raisingReadDisconnects(self):
        """
        A C{doRead} that raises is logged and its descriptor disconnected,
        as Twisted's C{_doReadOrWrite} does; the others still read.
        """
        bad, good = self.reader(), self.reader()

        def doRead():
            raise ValueError("a doRead that raises")

        bad.doRead = doRead
        self.reactor.doPoll(0)
        self.assertEqual(len(bad.lost), 1)
        bad.lost[0].trap(ValueError)
        self.assertEqual(good.reads, 1)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_raisingDisconnectLogged(self):
        """
        A descriptor whose C{connectionLost} raises is logged, and the
        other ready descriptors still get their event.
        """
        bad, good = self.reader(fail=True), self.reader()
        self.reactor.doPoll(0)
        self.assertEqual(len(bad.lost), 1)
        self.assertEqual(good.reads, 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class DispatchTrigger:
    """A readable descriptor whose C{doRead} calls C{action} once."""

    def __init__(self, test, reactor, action):
        self.a, self.b = socket.socketpair()
        test.addCleanup(self.a.close)
        test.addCleanup(self.b.close)
        self.action = action
        reactor.addReader(self)
        self.b.send(b"x")

    def fileno(self):
        return self.a.fileno()

    def doRead(self):
        self.a.recv(10)
        self.action()

    def connectionLost(self, reason):
        pass

    def logPrefix(self):
        return "trigger"


class _ConnectedPair:
    """
    A C{transportClass} transport (C{self.conn}) on one end of a socket
    pair, on an L{privates.EPollReactor}; C{self.peer} is the other end.
    """

    transportClass = tcp.Connection

    def setUp(self):
        self.reactor = privates.EPollReactor()
        self.addCleanup(self.reactor._poller.close)
        self.a, self.peer = socket.socketpair()
        self.addCleanup(self.peer.close)
        self.peer.setblocking(False)
        self.lost = []
        protocol = Protocol()
        protocol.connectionLost = self.lost.append
        self.conn = self.transportClass(self.a, protocol, self.reactor)
        self.conn.connected = True  # as tcp.Server and tcp.Client set it
        protocol.makeConnection(self.conn)
        self.reactor.addReader(self.conn)
        self.addCleanup(self._close)

    def _close(self):
        if self.conn.connected:
            self.conn.connectionLost(Failure(ConnectionDone()))

    def test_attributes(self):
        missing = [n for n in privates.TCP_QUEUE_ATTRIBUTES if not hasattr(self.conn, n)]
        self.assertEqual(missing, [])


class TurnEndWriteTests(_ConnectedPair, SynchronousTestCase):
    """
    L{privates.EPollReactor.writeAtTurnEnd}: small writes made while the
    loop dispatches are sent together when the dispatch ends, through the
    transport's own buffer, so ordering and closes hold.
    """

    def received(self):
        try:
            return self.peer.recv(1 << 20)
        except BlockingIOError:
            return None

    def during(self, action):
        DispatchTrigger(self, self.reactor, action)
        self.reactor.doPoll(0)

    def test_outsideDispatchRefused(self):
        """Outside a dispatch the caller writes its own way."""
        self.assertFalse(self.reactor.writeAtTurnEnd(self.conn, b"x"))
        self.assertEqual(privates.unsentBytes(self.conn), 0)

    def test_sentAtTurnEnd(self):
        """
        Writes of one turn wait for its end, in the transport's buffer,
        then go out together in order, with no writability watch left.
        """
        seen = []

        def action():
            self.assertTrue(self.reactor.writeAtTurnEnd(self.conn, b"one "))
            self.assertTrue(self.reactor.writeAtTurnEnd(self.conn, b"two"))
            seen.append((self.received(), privates.unsentBytes(self.conn)))

        self.during(action)
        self.assertEqual(seen, [(None, 7)])
        self.assertEqual(self.received(), b"one two")
        self.assertEqual(privates.unsentBytes(self.conn), 0)
        self.assertNotIn(self.conn, self.reactor.getWriters())

    def test_twistedWriteAfter(self):
        """
        A plain C{write} after a turn write is sent after it, and a turn
        write after that after both, all by Twisted's path.
        """
        def action():
            self.reactor.writeAtTurnEnd(self.conn, b"first ")
            self.conn.write(b"second")
            self.assertTrue(self.reactor.writeAtTurnEnd(self.conn, b" third"))
            self.assertFalse(self.reactor.onlyTurnWrites(self.conn))

        self.during(action)
        self.reactor.doPoll(0)
        self.assertEqual(self.received(), b"first second third")

    def test_loseConnectionAfter(self):
        """C{loseConnection} after a turn write sends it, then closes."""
        def action():
            self.reactor.writeAtTurnEnd(self.conn, b"last words")
            self.conn.loseConnection()

        self.during(action)
        self.reactor.doPoll(0)
        self.assertEqual(self.received(), b"last words")
        self.assertEqual(self.received(), b"")
        self.lost[0].trap(ConnectionDone)

    def test_abortDrops(self):
        """C{abortConnection} after a turn write drops it, as Twisted does."""
        def action():
            self.reactor.writeAtTurnEnd(self.conn, b"dropped")
            self.conn.abortConnection()

        self.during(action)
        self.reactor.runUntilCurrent()
        self.assertEqual(len(self.lost), 1)
        self.assertEqual(self.received(), b"")

    def test_largeRefused(self):
        """A write over the limit, or one that would pass it, goes out at once."""
        limit = self.reactor.TURN_WRITE_LIMIT
        answers = []

        def action():
            answers.append(self.reactor.writeAtTurnEnd(self.conn, b"x" * (limit + 1)))
            answers.append(self.reactor.writeAtTurnEnd(self.conn, b"x" * limit))
            answers.append(self.reactor.writeAtTurnEnd(self.conn, b"x"))

        self.during(action)
        self.assertEqual(answers, [False, True, False])

    def test_pullProducerAskedAgain(self):
        """
        A transport feeding a pull producer is left to Twisted's write
        path, which asks the producer for more once the bytes are out.
        """
        resumed = []

        class Pull:
            def resumeProducing(self):
                resumed.append(True)

            def stopProducing(self):
                pass

        self.conn.registerProducer(Pull(), False)
        del resumed[:]
        self.during(lambda: self.reactor.writeAtTurnEnd(self.conn, b"pulled"))
        self.assertEqual(resumed, [])
        self.reactor.doPoll(0)
        self.assertEqual(self.received(), b"pulled")
        self.assertEqual(resumed, [True])

    def test_partialSend(self):
        """What the socket does not take is sent by Twisted once it can."""
        self.a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        self.peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        data = bytes(range(256)) * 200

        self.during(lambda: self.reactor.writeAtTurnEnd(self.conn, data))
        self.assertGreater(privates.unsentBytes(self.conn), 0)
        self.assertIn(self.conn, self.reactor.getWriters())
        got = b""
        deadline = time.time() + 10
        while len(got) < len(data) and time.time() < deadline:
            got += self.received() or b""
            self.reactor.doPoll(0.01)
        self.assertEqual(got, data)
        self.assertNotIn(self.conn, self.reactor.getWriters())


class _GatheringConnection(privates.GatheringWrite, tcp.Connection):
    """A TCP transport writing as L{privates.GatheringWrite}."""


class GatheringWriteTests(_ConnectedPair, SynchronousTestCase):
    """
    L{privates.GatheringWrite}: what is queued goes out through C{sendmsg}
    as the strings were queued, without joining them, and what the socket
    does not take stays queued as it stands.
    """

    transportClass = _GatheringConnection

    def receivedAll(self):
        got = []
        while True:
            try:
                data = self.peer.recv(1 << 20)
            except BlockingIOError:
                return b"".join(got)
            if not data:
                return b"".join(got)
            got.append(data)

    def smallBuffers(self):
        self.a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        self.peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)

    def test_queuedStringsSentTogether(self):
        """
        Strings queued by C{write} and C{writeSequence} go out in order in
        one writable event; the transport then stops watching for it and
        resumes its paused producer, as Twisted's does.
        """
        producer = Producer()
        self.conn.registerProducer(producer, True)
        self.conn.write(b"one ")
        self.conn.writeSequence([b"two ", b"", b"three"])
        self.conn.producerPaused = True
        self.assertIn(self.conn, self.reactor.getWriters())
        self.assertIsNone(self.conn.doWrite())
        self.assertEqual(self.receivedAll(), b"one two three")
        self.assertEqual(privates.unsentBytes(self.conn), 0)
        self.assertNotIn(self.conn, self.reactor.getWriters())
        self.assertEqual(producer.calls, ["resume"])

    def test_partialSendKeepsStrings(self):
        """
        What a full socket does not take stays queued as the same string
        objects (no copy), and goes out whole and in order as the peer
        reads.
        """
        self.smallBuffers()
        pieces = [bytes([i]) * 50000 for i in range(1, 6)]
        self.conn.writeSequence(pieces)
        self.conn.doWrite()
        unsent = privates.unsentBytes(self.conn)
        self.assertGreater(unsent, 0)
        self.assertLess(unsent, 250000)
        held = [self.conn.dataBuffer] + self.conn._tempDataBuffer
        self.assertTrue(all(any(h is p for p in pieces) for h in held))
        got = []
        deadline = time.time() + 10
        while privates.unsentBytes(self.conn) and time.time() < deadline:
            got.append(self.receivedAll())
            self.conn.doWrite()
        got.append(self.receivedAll())
        self.assertEqual(b"".join(got), b"".join(pieces))
        self.assertNotIn(self.conn, self.reactor.getWriters())

    def test_closeAfterFlush(self):
        """C{loseConnection} with bytes queued: they go out, then the close."""
        self.conn.write(b"last words")
        self.conn.loseConnection()
        self.assertIsInstance(self.conn.doWrite(), ConnectionDone)
        self.assertEqual(self.receivedAll(), b"last words")

    def test_halfCloseAfterFlush(self):
        """C{loseWriteConnection} with bytes queued: they go out, then the FIN."""
        self.conn.write(b"request")
        self.conn.loseWriteConnection()
        self.conn.doWrite()
        self.assertTrue(privates.writeDisconnected(self.conn))
        self.assertEqual(self.receivedAll(), b"request")

    def test_peerGone(self):
        """A send to a closed peer is a lost connection, as Twisted reports it."""
        self.conn.write(b"x")
        self.peer.close()
        from twisted.internet.main import CONNECTION_LOST
        self.assertIs(self.conn.doWrite(), CONNECTION_LOST)

    def test_highWatermarkCountsUnsent(self):
        """
        The producer is paused once the bytes not yet sent pass
        C{bufferSize} (Envoy's high watermark); the sent part of a string
        queued in place does not count.
        """
        self.smallBuffers()
        producer = Producer()
        self.conn.bufferSize = 1000
        self.conn.registerProducer(producer, True)
        data = b"x" * 5000
        privates.queueUnsent(self.conn, data, 4500)
        self.assertIs(self.conn.dataBuffer, data)
        self.assertEqual(privates.unsentBytes(self.conn), 500)
        self.assertEqual(producer.calls, [])
        self.assertIn(self.conn, self.reactor.getWriters())
        self.conn.write(b"y" * 501)
        self.assertEqual(producer.calls, ["pause"])

    def test_lowWatermarkResumes(self):
        """
        A producer paused at the high watermark resumes once no more than
        half of C{bufferSize} waits to be sent (Envoy's low watermark),
        not only once all is sent; above half it stays paused.
        """
        self.smallBuffers()
        producer = Producer()
        self.conn.bufferSize = 60000
        self.conn.registerProducer(producer, True)
        self.conn.write(b"a" * 40000)
        self.conn.write(b"b" * 30000)
        self.assertEqual(producer.calls, ["pause"])
        deadline = time.time() + 10
        got = []
        while producer.calls == ["pause"] and time.time() < deadline:
            self.conn.doWrite()
            unsent = privates.unsentBytes(self.conn)
            if producer.calls == ["pause"]:
                self.assertGreater(unsent, 30000)
            got.append(self.receivedAll())
        self.assertEqual(producer.calls, ["pause", "resume"])
        self.assertLessEqual(unsent, 30000)
        self.assertGreater(unsent, 0)
        while privates.unsentBytes(self.conn) and time.time() < deadline:
            self.conn.doWrite()
            got.append(self.receivedAll())
        got.append(self.receivedAll())
        self.assertEqual(b"".join(got), b"a" * 40000 + b"b" * 30000)
        self.assertEqual(producer.calls, ["pause", "resume"])

    def test_queueUnsentWithRest(self):
        """
        L{privates.queueUnsent} queues the rest of a string sent in part,
        then the strings after it, in order.
        """
        privates.queueUnsent(self.conn, memoryview(b"abcdef"), 2, [memoryview(b"gh"), b"ij"])
        self.assertEqual(privates.unsentBytes(self.conn), 8)
        self.conn.doWrite()
        self.assertEqual(self.receivedAll(), b"cdefghij")


class OnlyHereTests(SynchronousTestCase):

    def test_noOtherModuleReachesIn(self):
        """Only L{txenvoy.privates} names these private attributes."""
        root = os.path.dirname(txenvoy.__file__)
        found = []
        for folder, _, files in os.walk(root):
            for name in files:
                path = os.path.join(folder, name)
                if not name.endswith(".py") or path == privates.__file__:
                    continue
                with open(path) as f:
                    for number, line in enumerate(f, 1):
                        if PATTERN.search(line):
                            found.append("%s:%d" % (os.path.relpath(path, root), number))
        self.assertEqual(found, [])
