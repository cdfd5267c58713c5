"""
Tests for L{txenvoy.extensions.filters.network.connection_limit} on a fake
clock and fake transports.

Behaviours were observed on Envoy 1.40 with C{10-network-filters.yaml}
(C{max_connections: 10, delay: 0.1s}) at C{--concurrency 2}, and with
C{max_connections: 1} and no delay.
"""

from envoy.extensions.filters.network.connection_limit.v3 import connection_limit_pb2
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from txenvoy.config import registry
from txenvoy.config.context import FactoryContext
from txenvoy.config.errors import ConfigError
from txenvoy.config.loader import parseDict, parseYaml
from txenvoy.extensions.filters.network.connection_limit import (
    ConnectionCounter, createConnectionLimit)
from txenvoy.interfaces import INetworkFilterFactory
from txenvoy.server.dispatcher import Dispatcher
from txenvoy.stats.store import StatsStore
from txenvoy.testing import FakeNetworkConnection, FakeServer
from txenvoy.testing import RecordingProtocol as Recorder

PATH = "static_resources.listeners[3].filter_chains[0].filters[0]"

EXAMPLE = """
stat_prefix: echo_limit
max_connections: 10
delay: 0.1s
"""

ACTIVE = "connection_limit.echo_limit.active_connections"
LIMITED = "connection_limit.echo_limit.limited_connections"


def compile(text, context=None):
    message = parseDict(parseYaml(text), connection_limit_pb2.ConnectionLimit())
    if context is None:
        context = FactoryContext(Clock(), StatsStore(), path=PATH)
    return createConnectionLimit(message, context)


class ConnectionCounterTests(SynchronousTestCase):

    def test_countsOverTheLimitToo(self):
        counter = ConnectionCounter(1)
        self.assertEqual([counter.increment(), counter.increment()], [True, False])
        self.assertEqual(counter.count, 2)
        counter.decrement()
        self.assertFalse(counter.increment())
        counter.decrement()
        counter.decrement()
        self.assertTrue(counter.increment())


class ConnectionLimitTests(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.store = StatsStore()
        self.dispatchers = [
            Dispatcher(self.clock, "worker_%d" % i, self.store.shard("worker_%d" % i))
            for i in range(2)]

    def connect(self, config, worker=0):
        nextProtocol = Recorder()
        f = config.buildFilter(FakeNetworkConnection(self.dispatchers[worker]), nextProtocol)
        transport = StringTransport()
        f.makeConnection(transport)
        return f, nextProtocol, transport

    def gauge(self, name):
        return self.store.gaugeValue(name)

    def test_registered(self):
        self.assertIsNotNone(registry.lookup(
            registry.Category.NETWORK_FILTER,
            "envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit"))
        config = compile(EXAMPLE)
        self.assertTrue(verifyObject(INetworkFilterFactory, config))
        self.assertFalse(config.terminal)

    def test_limitOverWorkersWithDelay(self):
        """
        Envoy 1.40, 12 connections at once over 2 workers: 10 echoed, 2
        were closed 0.1 s later; while they waited C{active_connections}
        was 12, then 10, then 0 once all closed.
        """
        config = compile(EXAMPLE)
        conns = [self.connect(config, worker=i % 2) for i in range(12)]
        self.assertEqual([n.made for _, n, _ in conns], [True] * 10 + [False] * 2)
        self.assertEqual(self.gauge(ACTIVE), 12)
        self.assertEqual(self.store.counterValue(LIMITED), 2)
        limited = conns[10:]
        for f, _, t in limited:
            f.dataReceived(b"dropped")
            self.assertFalse(t.disconnecting)
        self.clock.advance(0.1)
        for f, n, t in limited:
            self.assertTrue(t.disconnecting)
            self.assertEqual(n.data, [])
            f.connectionLost(None)
            self.assertFalse(n.lost)
        self.assertEqual(self.gauge(ACTIVE), 10)
        for f, n, _ in conns[:10]:
            f.connectionLost(None)
            self.assertTrue(n.lost)
        self.assertEqual(self.gauge(ACTIVE), 0)
        self.assertEqual(config.counter.count, 0)

    def test_pendingLimitedConnectionsHoldTheCount(self):
        """A connection counted while it waits out its delay keeps others out."""
        config = compile("stat_prefix: p\nmax_connections: 1\ndelay: 1s\n")
        first = self.connect(config)
        second = self.connect(config)
        first[0].connectionLost(None)
        third = self.connect(config)
        self.assertEqual([first[1].made, second[1].made, third[1].made], [True, False, False])

    def test_noDelayClosesAtOnce(self):
        """Envoy 1.40, C{max_connections: 1}, no delay: closed at once (FIN)."""
        config = compile("stat_prefix: cl0\nmax_connections: 1\n")
        self.connect(config)
        _, nextProtocol, transport = self.connect(config)
        self.assertTrue(transport.disconnecting)
        self.assertFalse(nextProtocol.made)
        self.assertEqual(self.store.counterValue("connection_limit.cl0.limited_connections"), 1)

    def test_closeBeforeDelayCancelsTimer(self):
        config = compile("stat_prefix: p\nmax_connections: 1\ndelay: 5s\n")
        self.connect(config)
        f, _, _ = self.connect(config)
        f.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.gauge("connection_limit.p.active_connections"), 1)

    def test_allowedPassesEverything(self):
        f, nextProtocol, transport = self.connect(compile(EXAMPLE))
        self.assertTrue(IHalfCloseableProtocol.providedBy(f))
        f.dataReceived(b"x")
        nextProtocol.transport.write(b"y")
        self.assertEqual(nextProtocol.data, [b"x"])
        self.assertEqual(transport.value(), b"y")

    def test_runtimeDisabled(self):
        config = compile("stat_prefix: p\nmax_connections: 1\n"
                         "runtime_enabled: {default_value: false, runtime_key: k}\n")
        conns = [self.connect(config) for _ in range(3)]
        self.assertEqual([n.made for _, n, _ in conns], [True] * 3)
        for f, _, _ in conns:
            f.connectionLost(None)
        self.assertEqual(config.counter.count, 0)
        self.assertEqual(self.gauge("connection_limit.p.active_connections"), 0)

    def test_maxConnectionsRequired(self):
        """Envoy 1.40: "Field 'max_connections' is missing"."""
        e = self.assertRaises(ConfigError, compile, "stat_prefix: a")
        self.assertIn("Field 'max_connections' is missing", str(e))
        e = self.assertRaises(ConfigError, compile, "stat_prefix: a\nmax_connections: 0")
        self.assertIn("MaxConnections: value must be greater than or equal to 1", str(e))

    def test_statsShownFromStart(self):
        store = StatsStore()
        compile(EXAMPLE, FactoryContext(Clock(), store, server=FakeServer(store), path=PATH))
        snapshot = store.snapshot()
        self.assertEqual(snapshot.gauges[ACTIVE], 0)
        self.assertEqual(snapshot.counters[LIMITED], 0)
