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
from twisted.python.reflect import namedAny
from twisted.trial.unittest import SynchronousTestCase

import txenvoy
from txenvoy import privates

PATTERN = re.compile(r"_tlsConnection|_tempDataLen|dataBuffer|_exitSignal|_registerAsIOThread"
                     r"|_appSendBuffer|_handshakeDone|SSL\._(lib|ffi)|_writeDisconnect"
                     r"|_disconnectSelectable|_fromListeningDescriptor|_preexistingSocket")


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
        reactor = privates.EPollReactor()
        self.addCleanup(reactor._poller.close)
        server = socket.socket()
        self.addCleanup(server.close)
        server.bind(("127.0.0.1", 0))
        server.listen(1)
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
