"""
Tests for L{txenvoy.network.read_loop}: a read that fills the buffer is
followed by another in the same readiness event, as Envoy's raw buffer
socket reads until drained.
"""

import socket
import time

from twisted.internet import main, tcp
from twisted.trial.unittest import SynchronousTestCase

from tests.test_privates import reactorAndServer
from txenvoy import privates
from txenvoy.network import read_loop
from txenvoy.network.read_loop import MAX_READS_PER_EVENT, readUntilDrained


class _Protocol:
    readLimit = 0

    def __init__(self, wantAfter=None):
        self.received = []
        self.wantAfter = wantAfter

    def dataReceived(self, data):
        self.received.append(data)

    def readingWanted(self):
        return self.wantAfter is None or len(self.received) < self.wantAfter


class _Transport(read_loop._DrainingRead):
    """What C{doRead} uses of a TCP transport, on one end of a socket pair."""

    disconnecting = False
    connected = True

    def __init__(self, sock, protocol, bufferSize):
        self.socket = sock
        self.protocol = protocol
        self.bufferSize = bufferSize


class DrainingReadTests(SynchronousTestCase):

    def setUp(self):
        self.ours, self.theirs = socket.socketpair()
        self.ours.setblocking(False)
        self.addCleanup(self.ours.close)
        self.addCleanup(self.theirs.close)

    def test_tailInSameEvent(self):
        """
        A response a little longer than the buffer is read whole in one
        event (Twisted's own read would leave the tail for the next turn).
        """
        self.theirs.sendall(b"x" * 8 + b"tail")
        protocol = _Protocol()
        self.assertIsNone(_Transport(self.ours, protocol, 8).doRead())
        self.assertEqual(protocol.received, [b"x" * 8, b"tail"])

    def test_readLimit(self):
        """
        A read takes at most the protocol's C{readLimit} bytes when it has
        one, and the protocol may change it between reads of one event.
        """
        self.theirs.sendall(b"h" * 4 + b"b" * 10)
        protocol = _Protocol()
        protocol.readLimit = 4

        def dataReceived(data):
            protocol.received.append(data)
            protocol.readLimit = 0
        protocol.dataReceived = dataReceived
        self.assertIsNone(_Transport(self.ours, protocol, 64).doRead())
        self.assertEqual(protocol.received, [b"h" * 4, b"b" * 10])

    def test_bufferLimitFirst(self):
        """A C{readLimit} above the buffer limit does not raise it."""
        self.theirs.sendall(b"x" * 10)
        protocol = _Protocol()
        protocol.readLimit = 64
        self.assertIsNone(_Transport(self.ours, protocol, 4).doRead())
        self.assertEqual(protocol.received, [b"xxxx", b"xxxx", b"xx"])

    def test_shortReadStops(self):
        """A read that does not fill the buffer ends the event's reads."""
        self.theirs.sendall(b"abc")
        protocol = _Protocol()
        transport = _Transport(self.ours, protocol, 8)
        self.assertIsNone(transport.doRead())
        self.assertEqual(protocol.received, [b"abc"])
        # Nothing more was asked of the socket: the next read would block.
        self.assertIsNone(transport.doRead())
        self.assertEqual(protocol.received, [b"abc"])

    def test_boundedPerEvent(self):
        """At most L{MAX_READS_PER_EVENT} reads, so other sockets get their turn."""
        self.theirs.sendall(b"y" * 4 * (MAX_READS_PER_EVENT + 2))
        protocol = _Protocol()
        transport = _Transport(self.ours, protocol, 4)
        transport.doRead()
        self.assertEqual(len(protocol.received), MAX_READS_PER_EVENT)
        transport.doRead()
        self.assertEqual(b"".join(protocol.received), b"y" * 4 * (MAX_READS_PER_EVENT + 2))

    def test_pausedStops(self):
        """A protocol that paused reading from C{dataReceived} is not read again."""
        self.theirs.sendall(b"z" * 16)
        protocol = _Protocol(wantAfter=1)
        _Transport(self.ours, protocol, 4).doRead()
        self.assertEqual(protocol.received, [b"zzzz"])

    def test_endOfStream(self):
        """The peer's close after the data is Twisted's C{CONNECTION_DONE}."""
        self.theirs.sendall(b"q" * 4)
        self.theirs.shutdown(socket.SHUT_WR)
        protocol = _Protocol()
        self.assertIs(_Transport(self.ours, protocol, 4).doRead(), main.CONNECTION_DONE)
        self.assertEqual(protocol.received, [b"qqqq"])

    def test_onlyPlainClients(self):
        """
        A plain TCP client connection reads this way, keeping its class's
        behaviour otherwise; any other transport is left alone.
        """
        client = tcp.Client.__new__(tcp.Client)
        readUntilDrained(client)
        self.assertIsInstance(client, tcp.Client)
        self.assertIs(type(client).doRead, read_loop._DrainingRead.doRead)
        other = object.__new__(tcp.Server)
        readUntilDrained(other)
        self.assertIs(type(other), tcp.Server)


class UpstreamClientWriteTests(SynchronousTestCase):
    """
    L{read_loop.UpstreamTCPClient} writes as L{privates.GatheringWrite}
    once connected, and stays without an instance dict.
    """

    def test_largeWriteGathered(self):
        """
        Strings queued while the socket is full go out in order, through
        C{GatheringWrite.doWrite}, with no instance dict made on the way.
        """
        from twisted.internet.protocol import ClientFactory, Protocol

        reactor, server = reactorAndServer(self)
        made = []
        factory = ClientFactory.forProtocol(Protocol)
        factory.clientConnectionFailed = lambda connector, reason: made.append(reason)
        connector = read_loop.connectTCP(reactor, "127.0.0.1", server.getsockname()[1],
                                         factory, timeout=5)
        deadline = time.time() + 10
        transport = connector.transport
        while not transport.connected and not made and time.time() < deadline:
            reactor.iterate(0.01)
        self.assertTrue(transport.connected)
        self.assertIsInstance(transport, read_loop.UpstreamTCPClient)
        self.assertIs(transport.doWrite.__func__, privates.GatheringWrite.doWrite)
        peer, _ = server.accept()
        self.addCleanup(peer.close)
        peer.setblocking(False)
        pieces = [bytes([i]) * 300000 for i in range(1, 5)]
        transport.writeSequence(pieces)
        got = []
        while sum(map(len, got)) < 1200000 and time.time() < deadline:
            reactor.iterate(0.01)
            try:
                got.append(peer.recv(1 << 20))
            except BlockingIOError:
                pass
        self.assertEqual(b"".join(got), b"".join(pieces))
        self.assertEqual(privates.unsentBytes(transport), 0)
        self.assertNotIn(transport, reactor.getWriters())
        self.assertEqual(vars(transport), {})
        transport.abortConnection()
        reactor.iterate(0)
