"""
Tests for L{txenvoy.network.connection}: the accept path, listener filters
and the network filter chain, on fake transports and a fake clock.
"""

from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from twisted.trial.unittest import SynchronousTestCase

from txenvoy.network.filter import NetworkFilter
from txenvoy.network.filter_chain import FilterChain, FilterChainManager
from txenvoy.network.listener import ActiveListener
from txenvoy.server.dispatcher import Dispatcher
from txenvoy.stats.store import StatsStore


@implementer(IHalfCloseableProtocol)
class Recorder(Protocol):
    """A terminal protocol that records what it sees."""

    def __init__(self):
        self.data = []
        self.readClosed = False
        self.lost = False

    def dataReceived(self, data):
        self.data.append(data)

    def readConnectionLost(self):
        self.readClosed = True

    def connectionLost(self, reason):
        self.lost = True


class Factory:
    def __init__(self, build, terminal=True):
        self.build = build
        self.terminal = terminal

    def buildFilter(self, connection, nextProtocol):
        return self.build(connection, nextProtocol)


class FakeMatch:
    key = (None, (), (), "", (), (), 0, (), ())


class FakeListenerConfig:
    perConnectionBufferLimitBytes = 1024
    listenerFiltersTimeout = 15.0
    continueOnListenerFiltersTimeout = False
    statPrefix = "listener.127.0.0.1_10000."
    accessLogs = ()
    ignoreGlobalConnLimit = False
    connectionLimit = staticmethod(lambda: None)

    def __init__(self, factories, listenerFilters=()):
        self.listenerFilters = list(listenerFilters)
        self.filterChainManager = FilterChainManager(
            [FilterChain("c", factories, None, FakeMatch())], None, "l")


class PeekFilter:
    """A listener filter that waits for 4 bytes and consumes 2 of them."""

    maxReadBytes = 4

    def __init__(self, connection):
        self.connection = connection

    def onAccept(self, callbacks):
        return False

    def onData(self, data):
        if len(data) < 4:
            return False
        self.connection.consume(2)
        self.connection.setRequestedServerName("peeked")
        return True


class ListenerFilterFactory:
    def __init__(self, cls):
        self.cls = cls

    def buildListenerFilter(self, connection):
        return self.cls(connection)


class ConnectionTests(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.store = StatsStore()
        self.dispatcher = Dispatcher(self.clock, "worker_0", self.store.shard("worker_0"))

    def connect(self, config):
        listener = ActiveListener(self.dispatcher, config)
        conn = listener.buildProtocol(IPv4Address("TCP", "10.0.0.1", 5555))
        transport = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 10000),
                                    peerAddress=IPv4Address("TCP", "10.0.0.1", 5555))
        conn.makeConnection(transport)
        return listener, conn, transport

    def stat(self, name):
        return self.store.snapshot().counters.get(name, self.store.snapshot().gauges.get(name))

    def test_terminalFilterReadsDirectly(self):
        """Once the chain is built, its head gets the socket's bytes."""
        recorder = Recorder()
        _, conn, transport = self.connect(FakeListenerConfig([Factory(lambda c, n: recorder)]))
        conn.dataReceived(b"hello")
        self.assertEqual(recorder.data, [b"hello"])
        self.assertIs(recorder.transport, transport)
        self.assertEqual(transport.bufferSize, 1024)
        self.assertEqual(self.stat("listener.127.0.0.1_10000.downstream_cx_total"), 1)
        self.assertEqual(self.stat("listener.127.0.0.1_10000.downstream_cx_active"), 1)
        self.assertEqual(self.stat("listener.127.0.0.1_10000.worker_0.downstream_cx_total"), 1)

    def test_acceptedTupleShared(self):
        """
        The connection's remote address is the accepted socket's own tuple
        (the transport's C{client}), not a second one of the same value.
        """
        listener = ActiveListener(self.dispatcher, FakeListenerConfig([Factory(
            lambda c, n: Recorder())]))
        conn = listener.buildProtocol(IPv4Address("TCP", "10.0.0.1", 5555))
        transport = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 10000),
                                    peerAddress=IPv4Address("TCP", "10.0.0.1", 5555))
        transport.client = ("10.0.0.1", 5555)
        conn.makeConnection(transport)
        self.assertIs(conn.remoteAddress, transport.client)
        self.assertIs(conn.streamInfo.downstreamRemoteAddress, transport.client)
        self.assertIs(conn.streamInfo.downstreamDirectRemoteAddress, transport.client)

    def test_otherTupleKept(self):
        """A transport naming another client keeps the address it was built with."""
        listener = ActiveListener(self.dispatcher, FakeListenerConfig([Factory(
            lambda c, n: Recorder())]))
        conn = listener.buildProtocol(IPv4Address("TCP", "10.0.0.1", 5555))
        transport = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 10000))
        transport.client = ("10.0.0.2", 5555)
        conn.makeConnection(transport)
        self.assertEqual(conn.remoteAddress, ("10.0.0.1", 5555))
        self.assertEqual(conn.streamInfo.downstreamRemoteAddress, ("10.0.0.1", 5555))

    def test_halfCloseThroughFilters(self):
        """A FIN reaches the terminal filter through a NetworkFilter."""
        recorder = Recorder()
        factories = [Factory(NetworkFilter, terminal=False), Factory(lambda c, n: recorder)]
        _, conn, transport = self.connect(FakeListenerConfig(factories))
        conn.dataReceived(b"x")
        conn.readConnectionLost()
        self.assertEqual(recorder.data, [b"x"])
        self.assertTrue(recorder.readClosed)
        self.assertFalse(transport.disconnecting)
        recorder.transport.write(b"reply")
        self.assertEqual(transport.value(), b"reply")

    def test_notHalfCloseableClosesOnFin(self):
        """A terminal filter without half-close: the FIN closes the connection."""
        _, conn, transport = self.connect(FakeListenerConfig([Factory(lambda c, n: Protocol())]))
        conn.readConnectionLost()
        self.assertTrue(transport.disconnecting)

    def test_connectionLostCounts(self):
        recorder = Recorder()
        _, conn, _ = self.connect(FakeListenerConfig([Factory(lambda c, n: recorder)]))
        conn.connectionLost(None)
        self.assertTrue(recorder.lost)
        self.assertEqual(self.stat("listener.127.0.0.1_10000.downstream_cx_active"), 0)
        self.assertEqual(self.stat("listener.127.0.0.1_10000.downstream_cx_destroy"), 1)

    def test_connectionLostLeavesNoCycle(self):
        """
        A closed connection no longer holds its chain's head, which holds
        it: reference counting frees both, not the cyclic collector.
        """
        import gc
        import weakref

        class Holder(Recorder):
            def __init__(self, connection):
                Recorder.__init__(self)
                self.connection = connection

        seen = []
        _, conn, _ = self.connect(FakeListenerConfig([Factory(lambda c, n: Holder(c))]))
        head = weakref.ref(conn.head, seen.append)
        conn.dataReceived(b"x")
        enabled = gc.isenabled()
        gc.disable()
        self.addCleanup(lambda: gc.enable() if enabled else None)
        conn.connectionLost(None)
        self.assertIsNone(conn.head)
        conn.dataReceived(b"late")
        del conn
        # Freed by reference counting: the collector is off.
        self.assertEqual(seen, [head])

    def test_emptyChainCloses(self):
        """C{filters: []}: counted, then closed (Envoy: no filters)."""
        _, conn, transport = self.connect(FakeListenerConfig([]))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(
            self.stat("listener.127.0.0.1_10000.network_extension_config_missing"), 1)

    def test_listenerFilterReadsAheadAndConsumes(self):
        """
        A listener filter sees bytes before the chain exists, may consume
        some; the rest are replayed into the chain.
        """
        recorder = Recorder()
        config = FakeListenerConfig([Factory(lambda c, n: recorder)],
                                    [ListenerFilterFactory(PeekFilter)])
        _, conn, _ = self.connect(config)
        conn.dataReceived(b"ab")
        self.assertEqual(recorder.data, [])
        self.assertEqual(self.stat("listener.127.0.0.1_10000.downstream_pre_cx_active"), 1)
        conn.dataReceived(b"cdef")
        self.assertEqual(recorder.data, [b"cdef"])
        self.assertEqual(conn.streamInfo.requestedServerName, "peeked")
        self.assertEqual(self.stat("listener.127.0.0.1_10000.downstream_pre_cx_active"), 0)

    def test_listenerFiltersTimeout(self):
        """Past listener_filters_timeout the socket is closed and counted."""
        config = FakeListenerConfig([Factory(lambda c, n: Recorder())],
                                    [ListenerFilterFactory(PeekFilter)])
        _, conn, transport = self.connect(config)
        self.clock.advance(15)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.stat("listener.127.0.0.1_10000.downstream_pre_cx_timeout"), 1)

    def test_listenerFiltersTimeoutContinue(self):
        recorder = Recorder()
        config = FakeListenerConfig([Factory(lambda c, n: recorder)],
                                    [ListenerFilterFactory(PeekFilter)])
        config.continueOnListenerFiltersTimeout = True
        _, conn, transport = self.connect(config)
        conn.dataReceived(b"a")
        self.clock.advance(15)
        self.assertEqual(recorder.data, [b"a"])
        self.assertFalse(transport.disconnecting)


class NetworkFilterTests(SynchronousTestCase):

    def test_subclassKeepsItsInterfaces(self):
        """
        A NetworkFilter subclass with a transport still provides
        IHalfCloseableProtocol itself (its transport's interfaces do not
        leak through attribute forwarding), so a FIN stays a half-close.
        """
        class Sub(NetworkFilter):
            pass

        f = Sub(None, Recorder())
        f.makeConnection(StringTransport())
        self.assertTrue(IHalfCloseableProtocol.providedBy(f))

    def test_stopChain(self):
        """After stopChain the next protocol hears nothing more."""
        recorder = Recorder()
        f = NetworkFilter(None, recorder)
        f.makeConnection(StringTransport())
        f.stopChain()
        f.dataReceived(b"x")
        f.readConnectionLost()
        f.connectionLost(None)
        self.assertEqual((recorder.data, recorder.readClosed, recorder.lost), ([], False, False))
