"""
Tests for L{txenvoy.network.listener_filter}: listener filters as Protocol
wrappers that read ahead, stop or continue, then step out of the way.
"""

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from tests.network.test_connection import FakeListenerConfig, Factory, ListenerFilterFactory
from txenvoy.network.listener import ActiveListener
from txenvoy.network.listener_filter import ListenerFilterProtocol
from txenvoy.server.dispatcher import Dispatcher
from txenvoy.stats.store import StatsStore
from txenvoy.testing import RecordingProtocol


class _Waits:
    """Stops until C{n} bytes arrived; records every C{onData}."""

    n = 3
    maxReadBytes = 16

    def __init__(self, connection):
        self.connection = connection
        self.seen = []

    def onAccept(self, callbacks):
        return False

    def onData(self, data):
        self.seen.append(data)
        return len(data) >= self.n


class _Header(_Waits):
    """Waits for C{HDR:}, consumes it (as PROXY protocol does) and continues."""

    n = 4

    def onData(self, data):
        self.seen.append(data)
        if len(data) < 4:
            return False
        self.connection.consume(4)
        return True


class _Decides(_Waits):
    """Decides at accept (maxReadBytes 0, as original_dst)."""

    maxReadBytes = 0

    def onAccept(self, callbacks):
        return True


class _Made(ListenerFilterFactory):
    def __init__(self, cls):
        ListenerFilterFactory.__init__(self, cls)
        self.made = []

    def buildListenerFilter(self, connection):
        f = self.cls(connection)
        self.made.append(f)
        return f


class ListenerFilterProtocolTests(SynchronousTestCase):

    def setUp(self):
        self.store = StatsStore()
        self.dispatcher = Dispatcher(Clock(), "worker_0", self.store.shard("worker_0"))

    def connect(self, *filterClasses):
        self.next = RecordingProtocol()
        factories = [_Made(cls) for cls in filterClasses]
        config = FakeListenerConfig([Factory(lambda c, n: self.next)], factories)
        conn = ActiveListener(self.dispatcher, config).buildProtocol(
            IPv4Address("TCP", "10.0.0.1", 5555))
        conn.makeConnection(StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 10000)))
        return conn, [f.made[0] for f in factories]

    def test_layersInTheStack(self):
        """While a filter stops iteration its wrapper reads the socket."""
        conn, (header, waits) = self.connect(_Header, _Waits)
        self.assertIsInstance(conn.listenerFilterLayer, ListenerFilterProtocol)
        self.assertIs(conn.listenerFilterLayer.filter, header)
        self.assertIs(conn.listenerFilterLayer.next.filter, waits)

    def test_eachReadsAheadThenStepsOut(self):
        """
        The first filter consumes its header and steps out: the second gets
        what is left, then only new bytes reach it; once it continues the
        network chain reads the socket directly and no listener filter
        sees another byte.
        """
        conn, (header, waits) = self.connect(_Header, _Waits)
        conn.dataReceived(b"HD")
        conn.dataReceived(b"R:a")
        self.assertEqual(header.seen, [b"HD", b"HDR:a"])
        self.assertEqual(waits.seen, [b"a"])
        conn.dataReceived(b"bc")
        self.assertEqual(waits.seen, [b"a", b"abc"])
        self.assertEqual(self.next.data, [b"abc"])
        conn.dataReceived(b"more")
        self.assertEqual(self.next.data, [b"abc", b"more"])
        self.assertEqual((header.seen[-1], waits.seen[-1]), (b"HDR:a", b"abc"))
        self.assertIs(conn.dataReceived.__self__, self.next)
        self.assertEqual(self.store.gaugeValue(
            "listener.127.0.0.1_10000.downstream_pre_cx_active"), 0)

    def test_decidedOnAcceptNeverReads(self):
        """A filter that continues at accept never sees a byte."""
        conn, (decides,) = self.connect(_Decides)
        conn.dataReceived(b"x")
        self.assertEqual(decides.seen, [])
        self.assertEqual(self.next.data, [b"x"])
