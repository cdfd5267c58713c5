"""
Tests for L{txenvoy.network.user_space}: the in-memory connection between
a cluster and an internal listener of the same worker, driven by a fake
reactor clock.
"""

from twisted.internet import error
from twisted.internet.interfaces import (
    IConsumer,
    IHalfCloseableProtocol,
    IPushProducer,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from txenvoy.network.address import addressTuple
from txenvoy.network.user_space import (
    CLIENT_ADDRESS,
    InternalAddress,
    UserSpaceTransport,
    connectPair,
)


@implementer(IHalfCloseableProtocol)
class Recorder(Protocol):
    """Records what it receives; half-closeable unless told otherwise."""

    def __init__(self):
        self.data = []
        self.events = []
        self.lost = None

    def connectionMade(self):
        self.events.append("made")

    def dataReceived(self, data):
        self.data.append(data)

    def readConnectionLost(self):
        self.events.append("read-lost")

    def writeConnectionLost(self):
        self.events.append("write-lost")

    def connectionLost(self, reason):
        self.events.append("lost")
        self.lost = reason


class Plain(Protocol):
    """Not half-closeable: a FIN closes it, as Twisted's TCP does."""

    lost = None

    def connectionLost(self, reason):
        self.lost = reason


@implementer(IPushProducer)
class Producer:
    def __init__(self):
        self.calls = []

    def pauseProducing(self):
        self.calls.append("pause")

    def resumeProducing(self):
        self.calls.append("resume")

    def stopProducing(self):
        self.calls.append("stop")


ADDRESS = InternalAddress("b", "e1")


def pair(capacity=100, client=None, server=None):
    clock = Clock()
    client = client or Recorder()
    server = server or Recorder()
    factory = Factory.forProtocol(lambda: server)
    c, s = connectPair(clock, client, factory, ADDRESS, capacity, {"metadata": {"ns": {}}})
    return clock, client, server, c, s


class UserSpaceTransportTests(SynchronousTestCase):

    def test_interfaces(self):
        t = UserSpaceTransport(Clock(), ADDRESS, CLIENT_ADDRESS, 10)
        for interface in (ITransport, IConsumer, IPushProducer):
            verifyObject(interface, t)

    def test_addresses(self):
        """
        Envoy's names: the listener's end is C{envoy://b/e1}, the client
        C{envoy://internal_client_address/}; both as C{(address, 0)} tuples.
        """
        clock, client, server, c, s = pair()
        self.assertEqual(str(s.getHost()), "envoy://b/e1")
        self.assertEqual(str(s.getPeer()), "envoy://internal_client_address/")
        self.assertEqual(addressTuple(s.getHost()), (ADDRESS, 0))
        self.assertEqual(s.passthrough, {"metadata": {"ns": {}}})
        self.assertEqual((client.events, server.events), (["made"], ["made"]))

    def test_bytesArriveLaterInOrder(self):
        clock, client, server, c, s = pair()
        c.write(b"a")
        c.writeSequence([b"b", b"c"])
        self.assertEqual(server.data, [])
        clock.advance(0)
        self.assertEqual(b"".join(server.data), b"abc")
        s.write(b"back")
        clock.advance(0)
        self.assertEqual(client.data, [b"back"])

    def test_halfClose(self):
        """A FIN after the data: C{readConnectionLost}, and the other way still works."""
        clock, client, server, c, s = pair()
        c.write(b"x")
        c.loseWriteConnection()
        c.write(b"dropped")
        clock.advance(0)
        self.assertEqual(server.data, [b"x"])
        self.assertEqual(server.events, ["made", "read-lost"])
        self.assertEqual(client.events, ["made", "write-lost"])
        s.write(b"reply")
        s.loseConnection()
        clock.advance(0)
        clock.advance(0)
        self.assertEqual(client.data, [b"reply"])
        self.assertTrue(server.lost.check(error.ConnectionDone))
        self.assertTrue(client.lost.check(error.ConnectionDone))

    def test_finClosesPlainProtocol(self):
        """A protocol that is not half-closeable is closed by the FIN."""
        clock, client, server, c, s = pair(server=Plain())
        c.loseWriteConnection()
        clock.advance(0)
        self.assertTrue(server.lost.check(error.ConnectionDone))

    def test_loseConnectionAfterData(self):
        """C{loseConnection} hands over what was written before the close."""
        clock, client, server, c, s = pair(capacity=4)
        c.write(b"0123456789")
        c.loseConnection()
        self.assertIsNone(client.lost)
        for _ in range(6):
            clock.advance(0)
        self.assertEqual(b"".join(server.data), b"0123456789")
        self.assertTrue(server.lost.check(error.ConnectionDone))
        self.assertTrue(client.lost.check(error.ConnectionDone))

    def test_abort(self):
        """A reset: both ends lost at once, unread bytes dropped."""
        clock, client, server, c, s = pair()
        c.write(b"x")
        c.abortConnection()
        self.assertTrue(client.lost.check(error.ConnectionAborted))
        self.assertTrue(server.lost.check(error.ConnectionLost))
        clock.advance(0)
        self.assertEqual(server.data, [])

    def test_backPressure(self):
        """
        The peer takes C{capacity} unread bytes; beyond C{bufferSize}
        waiting in the writer, its producer pauses until the peer reads.
        """
        clock, client, server, c, s = pair(capacity=10)
        c.bufferSize = 5
        producer = Producer()
        c.registerProducer(producer, True)
        s.pauseProducing()
        c.write(b"x" * 10)
        self.assertEqual(producer.calls, [])
        c.write(b"y" * 6)
        self.assertEqual(producer.calls, ["pause"])
        clock.advance(0)
        self.assertEqual(server.data, [])
        self.assertEqual(s._inboxSize, 10)
        s.resumeProducing()
        clock.advance(0)
        self.assertEqual(server.data, [b"x" * 10, b"y" * 6])
        self.assertEqual(producer.calls, ["pause", "resume"])

    def test_refused(self):
        """A factory that builds no protocol refuses: nothing is connected."""
        client = Recorder()
        factory = Factory()
        factory.buildProtocol = lambda addr: None
        self.assertIsNone(connectPair(Clock(), client, factory, ADDRESS, 10))
        self.assertEqual(client.events, [])
