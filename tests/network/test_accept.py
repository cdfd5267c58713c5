"""
Tests for L{txenvoy.network.accept}: the rate-bounded overflow log, the
reserved descriptor, and a L{ListenerPort} accepting on a real socket.
"""

import errno
import socket
import sys

from twisted.internet import reactor
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.test_privates import DispatchTrigger
from txenvoy import privates
from txenvoy.network.accept import (
    AcceptedConnection, ListenerPort, OverflowLog, ReservedDescriptor)


class OverflowLogTests(TestCase):

    def test_oneLinePerInterval(self):
        """
        The first drop is logged at once; later ones within the interval
        only add to the count the next line carries.
        """
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        clock = Clock()
        overflow = OverflowLog(clock, "l1", interval=5.0)
        self.assertTrue(overflow.record(3, errno.EMFILE))
        for _ in range(100):
            clock.advance(0.01)
            self.assertFalse(overflow.record(2, errno.EMFILE))
        clock.advance(5)
        self.assertTrue(overflow.record(1, errno.ENFILE))
        lines = [e for e in events if e.get("log_namespace") == "conn_handler"]
        self.assertEqual([(e["dropped"], e["events"], e["code"]) for e in lines],
                         [(3, 1, "EMFILE"), (201, 101, "ENFILE")])


class ReservedDescriptorTests(TestCase):

    def test_releaseAndReserve(self):
        reserve = ReservedDescriptor()
        self.addCleanup(reserve.close)
        self.assertTrue(reserve.release())
        self.assertFalse(reserve.release())
        reserve.reserve()
        self.assertTrue(reserve.release())


class Recorder(ServerFactory):
    protocol = Protocol

    def __init__(self):
        self.peers = []

    def buildProtocol(self, addr):
        self.peers.append(addr)
        return ServerFactory.buildProtocol(self, addr)


class ListenerPortTests(TestCase):

    def test_acceptsOnAdoptedSocket(self):
        """A L{ListenerPort} adopts a bound socket and builds a protocol per connection."""
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.setblocking(False)
        factory = Recorder()
        port = ListenerPort.adopt(reactor, sock.fileno(), socket.AF_INET, factory)
        sock.close()
        self.addCleanup(port.stopListening)
        client = socket.create_connection(("127.0.0.1", port.getHost().port))
        self.addCleanup(client.close)

        from twisted.internet.task import deferLater

        def check(_=None, tries=[0]):
            if factory.peers or tries[0] > 100:
                self.assertEqual(factory.peers[0].host, "127.0.0.1")
                self.assertEqual(factory.peers[0].port, client.getsockname()[1])
                return None
            tries[0] += 1
            return deferLater(reactor, 0.01, check)
        return check()

    def _acceptOne(self, bindHost, protocol=None):
        """
        Adopt a socket bound to C{bindHost} and connect to it.

        @return: a Deferred firing with C{(port, transport, client)}.
        """
        from twisted.internet.task import deferLater

        sock = socket.socket()
        sock.bind((bindHost, 0))
        sock.listen(8)
        sock.setblocking(False)
        made = []

        class Keep(protocol or Protocol):
            def connectionMade(self):
                made.append(self.transport)

        factory = ServerFactory.forProtocol(Keep)
        port = ListenerPort.adopt(reactor, sock.fileno(), socket.AF_INET, factory)
        sock.close()
        self.addCleanup(port.stopListening)
        client = socket.create_connection(("127.0.0.1", port.getHost().port))
        self.addCleanup(client.close)

        def wait(_=None, tries=[0]):
            if made or tries[0] > 200:
                self.addCleanup(made[0].abortConnection)
                return port, made[0], client
            tries[0] += 1
            return deferLater(reactor, 0.01, wait)
        return wait()

    def test_localAddressOfSpecificListener(self):
        """
        Envoy hands a connection accepted on a listener bound to one
        address that address as its local address (no C{getsockname}).
        """
        def check(result):
            port, transport, client = result
            self.assertEqual((port.boundHost.host, port.boundHost.port),
                             client.getpeername())
            self.assertIs(transport.getHost(), port.boundHost)
            self.assertIn("#", repr(transport))
            self.assertIn("Keep", transport.logstr)
        return self._acceptOne("127.0.0.1").addCallback(check)

    def test_clientHostShared(self):
        """
        An IPv4 client's tuple holds the one shared copy of its host's
        text: idle connections from one client do not each hold one.
        """
        def check(result):
            port, transport, client = result
            self.assertEqual(transport.client, client.getsockname())
            self.assertIs(transport.client[0], sys.intern("127.0.0.1"))
        return self._acceptOne("127.0.0.1").addCallback(check)

    def test_localAddressOfWildcardListener(self):
        """On a wildcard listener each connection's own local address is read."""
        def check(result):
            port, transport, client = result
            self.assertIsNone(port.boundHost)
            host = transport.getHost()
            self.assertEqual((host.host, host.port), client.getpeername())
        return self._acceptOne("0.0.0.0").addCallback(check)

    def _closedWith(self, writeBefore, writeAfter):
        """
        Accept a connection, write C{writeBefore}, close it, write
        C{writeAfter}; wait until the client has read to EOF.

        @return: a Deferred firing with C{(protocol, transport, wasWriting,
            what the client read)}.
        """
        from twisted.internet.threads import deferToThread

        class Recording(Protocol):
            lost = None
            data = b""

            def dataReceived(self, data):
                self.data += data

            def connectionLost(self, reason):
                self.lost = reason

        def close(result):
            port, transport, client = result
            if writeBefore:
                transport.write(writeBefore)
            transport.loseConnection()
            wasWriting = transport in reactor.getWriters()
            transport.write(writeAfter)
            protocol = transport.protocol

            def readAll():
                client.settimeout(10)
                out = b""
                while True:
                    chunk = client.recv(65536)
                    if not chunk:
                        return out
                    out += chunk
            return deferToThread(readAll).addCallback(
                lambda read: (protocol, transport, wasWriting, read))
        return self._acceptOne("127.0.0.1", Recording).addCallback(close)

    def test_closeWithNothingToWrite(self):
        """
        A connection closed with nothing left to write is not switched to
        writing: it is closed on the reactor's next turn (the client reads
        its FIN) and its protocol hears C{ConnectionDone}.
        """
        from twisted.internet.error import ConnectionDone

        def check(result):
            protocol, transport, wasWriting, read = result
            self.assertFalse(wasWriting)
            self.assertEqual(read, b"")
            self.assertTrue(protocol.lost.check(ConnectionDone))
            self.assertFalse(transport.connected)
        return self._closedWith(b"", b"").addCallback(check)

    def test_closeWithWritesAfter(self):
        """What is written after loseConnection, before the close, still goes out."""
        def check(result):
            protocol, _, wasWriting, read = result
            self.assertFalse(wasWriting)
            self.assertEqual(read, b"late" * 10000)
        return self._closedWith(b"", b"late" * 10000).addCallback(check)

    def test_closeWithBufferedBytes(self):
        """Bytes still buffered: Twisted's close, after they are flushed."""
        def check(result):
            protocol, _, wasWriting, read = result
            self.assertEqual(read, b"x" * (8 << 20) + b"y")
        return self._closedWith(b"x" * (8 << 20), b"y").addCallback(check)

    def test_exhaustedDropsWaitingConnections(self):
        """
        On C{EMFILE} the reserve makes room: each waiting connection is
        accepted and closed, and the factory hears how many.
        """
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.setblocking(False)
        self.addCleanup(sock.close)
        clients = [socket.create_connection(("127.0.0.1", sock.getsockname()[1]))
                   for _ in range(3)]
        for c in clients:
            self.addCleanup(c.close)
        heard = []
        factory = Recorder()
        factory.onAcceptError = lambda dropped, err: heard.append((dropped, err))
        port = ListenerPort.__new__(ListenerPort)
        port.socket = sock
        port.factory = factory
        port._reserve = ReservedDescriptor()
        self.addCleanup(port._reserve.close)
        port._onExhausted(errno.EMFILE)
        self.assertEqual(heard, [(3, errno.EMFILE)])
        for c in clients:
            c.settimeout(2)
            self.assertEqual(c.recv(1), b"")
        self.assertTrue(port._reserve.release())


class _ClosingServer:
    """The listening port as an accepted connection sees it."""

    boundHost = None

    def __init__(self):
        self.closing = []

    def closeSoon(self, connection):
        self.closing.append(connection)


class CloseAfterTurnWriteTests(SynchronousTestCase):
    """
    An accepted connection closed right after a write that waits for the
    end of the reactor's turn (L{privates.EPollReactor.writeAtTurnEnd}).
    """

    def setUp(self):
        self.reactor = privates.EPollReactor()
        self.addCleanup(self.reactor._poller.close)
        sock, self.peer = socket.socketpair()
        self.addCleanup(self.peer.close)
        self.server = _ClosingServer()
        self.conn = AcceptedConnection(sock, Protocol(), ("127.0.0.1", 1), self.server, 1,
                                       self.reactor)
        self.conn.protocol.makeConnection(self.conn)
        self.addCleanup(lambda: self.conn.connected and privates.disconnectNow(self.conn))

    def test_sentThenClosedWithoutWriteEvent(self):
        """
        The close takes the short way (no switch to writing): the turn's
        end sends the bytes, the next turn closes, the peer reads them and
        its FIN.
        """
        def action():
            self.assertTrue(self.reactor.writeAtTurnEnd(self.conn, b"the response"))
            self.conn.loseConnection()
            self.assertNotIn(self.conn, self.reactor.getWriters())

        DispatchTrigger(self, self.reactor, action)
        self.reactor.doPoll(0)
        self.assertEqual(self.server.closing, [self.conn])
        self.conn._closeNow()
        self.assertFalse(self.conn.connected)
        self.peer.settimeout(5)
        self.assertEqual(self.peer.recv(100), b"the response")
        self.assertEqual(self.peer.recv(100), b"")

    def test_otherWriteFirst(self):
        """
        Bytes written the Twisted way after the turn write: Twisted's
        close, after everything is flushed in order.
        """
        def action():
            self.reactor.writeAtTurnEnd(self.conn, b"one ")
            self.conn.write(b"two")
            self.conn.loseConnection()

        DispatchTrigger(self, self.reactor, action)
        self.reactor.doPoll(0)
        self.assertEqual(self.server.closing, [])
        self.reactor.doPoll(0)
        self.assertFalse(self.conn.connected)
        self.peer.settimeout(5)
        self.assertEqual(self.peer.recv(100), b"one two")
        self.assertEqual(self.peer.recv(100), b"")
