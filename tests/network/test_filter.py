"""Tests for L{txenvoy.network.filter}."""

from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.network.filter import NetworkFilter, forwardReadConnectionLost
from txenvoy.testing import RecordingProtocol


class _Holding(NetworkFilter):
    """Stops iteration until it has four bytes (Envoy's StopIteration)."""

    held = b""

    def dataReceived(self, data):
        self.held += data
        if len(self.held) >= 4:
            held, self.held = self.held, b""
            self.continueReading(held)


class _Rejecting(NetworkFilter):
    def connectionMade(self):
        NetworkFilter.connectionMade(self)
        self.stopChain()
        self.transport.loseConnection()


def _chain(filterClass, next_=None):
    next_ = next_ if next_ is not None else RecordingProtocol()
    f = filterClass(object(), next_)
    transport = StringTransport()
    f.makeConnection(transport)
    return f, next_, transport


class NetworkFilterTests(SynchronousTestCase):

    def test_passThrough(self):
        """Bytes go on to the next protocol, whose writes reach the socket."""
        f, next_, transport = _chain(NetworkFilter)
        self.assertTrue(next_.made)
        self.assertIs(next_.transport, f)
        f.dataReceived(b"abc")
        next_.transport.write(b"back")
        next_.transport.writeSequence([b"1", b"2"])
        self.assertEqual((next_.data, transport.value()), ([b"abc"], b"back12"))

    def test_stopAndContinue(self):
        """Held bytes reach the next protocol only when the filter continues."""
        f, next_, _ = _chain(_Holding)
        f.dataReceived(b"ab")
        self.assertEqual(next_.data, [])
        f.dataReceived(b"cd")
        self.assertEqual(next_.data, [b"abcd"])

    def test_halfCloseBothWays(self):
        """The peer's FIN reaches the next protocol; its write half-close goes out."""
        f, next_, transport = _chain(NetworkFilter)
        f.readConnectionLost()
        self.assertTrue(next_.readClosed)
        self.assertFalse(transport.disconnecting)

    def test_stopChain(self):
        """A rejected connection: the next protocol hears nothing more."""
        f, next_, transport = _chain(_Rejecting)
        self.assertTrue(transport.disconnecting)
        f.dataReceived(b"late")
        f.readConnectionLost()
        f.connectionLost(Failure(Exception("gone")))
        self.assertEqual((next_.data, next_.readClosed, next_.lost), ([], False, False))

    def test_transportAttributesFromTheSocket(self):
        """What a transport offers beyond ITransport comes from the real one."""
        f, next_, transport = _chain(NetworkFilter)
        self.assertEqual(next_.transport.getPeer(), transport.getPeer())
        self.assertEqual(next_.transport.producerState, transport.producerState)
        self.assertRaises(AttributeError, getattr, f, "__nonexistent__")


class ForwardReadConnectionLostTests(SynchronousTestCase):

    def test_halfCloseable(self):
        p = RecordingProtocol()
        transport = StringTransport()
        forwardReadConnectionLost(p, transport)
        self.assertTrue(p.readClosed)
        self.assertFalse(transport.disconnecting)

    def test_notHalfCloseableCloses(self):
        """Envoy closes a connection whose filters did not enable half-close."""
        transport = StringTransport()
        forwardReadConnectionLost(Protocol(), transport)
        self.assertTrue(transport.disconnecting)
