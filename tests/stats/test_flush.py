"""
Tests for L{txenvoy.stats.flush} and the statsd sink
(L{txenvoy.extensions.stat_sinks.statsd}).
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.metrics.v3 import stats_pb2

from txenvoy.config.context import FactoryContext
from txenvoy.config.errors import ConfigError, UnsupportedField
from txenvoy.config.registry import Category, lookup
from txenvoy.extensions.stat_sinks.statsd import StatsdSink, createStatsdSink
from txenvoy.interfaces import IStatsSink
from txenvoy.stats.flush import StatsFlusher, flushIntervalOf
from txenvoy.stats.store import StatsStore


class RecordingSink:
    def __init__(self):
        self.snapshots = []
        self.stopped = False

    def flush(self, snapshot):
        self.snapshots.append(snapshot)

    def stop(self):
        self.stopped = True


class BrokenSink:
    def flush(self, snapshot):
        1 / 0


class FakeUDPPort:
    def __init__(self, interface):
        self.interface = interface
        self.written = []
        self.stopped = False

    def write(self, data, addr):
        self.written.append((data, addr))

    def stopListening(self):
        self.stopped = True


class FakeUDPReactor(Clock):
    def __init__(self):
        Clock.__init__(self)
        self.ports = []

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        p = FakeUDPPort(interface)
        self.ports.append((port, protocol, p))
        return p


class FlusherTests(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.store = StatsStore()
        self.shard = self.store.shard("main_thread")
        self.sink = RecordingSink()
        self.flusher = StatsFlusher(self.clock, self.store, [self.sink], 5.0)

    def test_everyInterval(self):
        """The first flush is one interval after start, then every interval."""
        self.shard.counter("c").inc()
        self.flusher.start()
        self.clock.advance(4.9)
        self.assertEqual(self.sink.snapshots, [])
        self.clock.advance(0.1)
        self.assertEqual(len(self.sink.snapshots), 1)
        self.assertEqual(self.sink.snapshots[0].counters["c"], 1)
        self.clock.advance(5)
        self.assertEqual(len(self.sink.snapshots), 2)
        self.assertEqual(self.flusher.flushes, 2)

    def test_histogramInterval(self):
        """
        A flush starts a new histogram interval; lastIntervals keeps the one
        that just ended (what the admin prints as "interval").
        """
        h = self.shard.histogram("h")
        h.recordValue(3)
        self.flusher.flush()
        self.assertEqual(self.flusher.lastIntervals["h"].intervalBuckets, {3.0: 1})
        self.assertEqual(h.intervalBuckets, {})
        h.recordValue(7)
        self.flusher.flush()
        self.assertEqual(self.flusher.lastIntervals["h"].intervalBuckets, {7.0: 1})
        self.assertEqual(self.flusher.lastIntervals["h"].buckets, {3.0: 1, 7.0: 1})

    def test_brokenSink(self):
        """A failing sink is logged; the others still get the snapshot."""
        self.flusher.sinks.insert(0, BrokenSink())
        self.flusher.flush()
        self.assertEqual(len(self.sink.snapshots), 1)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_beforeFlush(self):
        """Callbacks refresh gauges right before the snapshot."""
        g = self.shard.gauge("server.uptime")
        self.flusher.addBeforeFlush(lambda: g.set(42))
        self.flusher.flush()
        self.assertEqual(self.sink.snapshots[0].gauges["server.uptime"], 42)

    def test_stop(self):
        self.flusher.start()
        self.flusher.stop()
        self.assertTrue(self.sink.stopped)
        self.clock.advance(10)
        self.assertEqual(self.sink.snapshots, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_flushIntervalOf(self):
        """stats_flush_interval, default 5s as Envoy."""
        b = bootstrap_pb2.Bootstrap()
        self.assertEqual(flushIntervalOf(b), 5.0)
        b.stats_flush_interval.FromMilliseconds(250)
        self.assertEqual(flushIntervalOf(b), 0.25)


class StatsdTests(SynchronousTestCase):

    def setUp(self):
        self.reactor = FakeUDPReactor()
        self.store = StatsStore()
        self.shard = self.store.shard("main_thread")

    def test_interface(self):
        self.assertTrue(verifyObject(IStatsSink, StatsdSink(self.reactor, "127.0.0.1", 8125)))

    def test_lines(self):
        """
        As Envoy's UDP statsd sink: used counters as deltas (zero deltas
        too), used gauges, histogram values as |ms, all under the prefix.
        """
        sink = StatsdSink(self.reactor, "127.0.0.1", 8125)
        self.shard.counter("cluster_manager.cluster_added").inc(2)
        self.shard.counter("never.written")
        self.shard.gauge("server.live").set(1)
        self.shard.gauge("unset.gauge")
        self.shard.histogram("http.admin.downstream_rq_time").recordValue(4)
        self.shard.histogram("http.admin.downstream_rq_time").recordValue(4)
        self.assertEqual(sink.lines(self.store.snapshot(resetInterval=True)), [
            "envoy.cluster_manager.cluster_added:2|c",
            "envoy.server.live:1|g",
            "envoy.http.admin.downstream_rq_time:4|ms",
            "envoy.http.admin.downstream_rq_time:4|ms",
        ])
        self.shard.counter("cluster_manager.cluster_added").inc(3)
        self.assertEqual(sink.lines(self.store.snapshot(resetInterval=True)), [
            "envoy.cluster_manager.cluster_added:3|c",
            "envoy.server.live:1|g",
        ])
        self.assertEqual(sink.lines(self.store.snapshot(resetInterval=True))[0],
                         "envoy.cluster_manager.cluster_added:0|c")

    def test_resetCounters(self):
        """After /reset_counters the delta is the new value, never negative."""
        sink = StatsdSink(self.reactor, "127.0.0.1", 8125, prefix="p")
        c = self.shard.counter("x")
        c.inc(10)
        sink.lines(self.store.snapshot())
        self.store.resetCounters()
        c.inc(2)
        self.assertEqual(sink.lines(self.store.snapshot()), ["p.x:2|c"])

    def test_datagrams(self):
        """One datagram per line, from one UDP socket opened at the first flush."""
        sink = StatsdSink(self.reactor, "127.0.0.1", 8125)
        self.assertEqual(self.reactor.ports, [])
        self.shard.counter("a").inc()
        self.shard.gauge("g").set(3)
        sink.flush(self.store.snapshot())
        sink.flush(self.store.snapshot())
        self.assertEqual(len(self.reactor.ports), 1)
        port = self.reactor.ports[0][2]
        self.assertEqual(port.written, [
            (b"envoy.a:1|c", ("127.0.0.1", 8125)), (b"envoy.g:3|g", ("127.0.0.1", 8125)),
            (b"envoy.a:0|c", ("127.0.0.1", 8125)), (b"envoy.g:3|g", ("127.0.0.1", 8125)),
        ])
        sink.stop()
        self.assertTrue(port.stopped)

    def test_ipv6(self):
        sink = StatsdSink(self.reactor, "::1", 8125)
        self.shard.gauge("g").set(1)
        sink.flush(self.store.snapshot())
        self.assertEqual(self.reactor.ports[0][2].interface, "::")

    def context(self):
        return FactoryContext(self.reactor, self.store, path="stats_sinks[0]")

    def message(self, **socketAddress):
        m = stats_pb2.StatsdSink()
        for k, v in socketAddress.items():
            setattr(m.address.socket_address, k, v)
        return m

    def test_registered(self):
        """Envoy 1.40's @type for the statsd sink is envoy.config.metrics.v3.StatsdSink."""
        factory = lookup(Category.STATS_SINK, "envoy.config.metrics.v3.StatsdSink")
        self.assertIsNotNone(factory)
        self.assertIn("envoy.stat_sinks.statsd", factory.names)

    def test_create(self):
        sink = createStatsdSink(self.message(address="127.0.0.1", port_value=8125),
                                self.context())
        self.assertEqual((sink.address, sink.prefix), (("127.0.0.1", 8125), "envoy"))
        m = self.message(address="127.0.0.1", port_value=8125)
        m.prefix = "edge"
        self.assertEqual(createStatsdSink(m, self.context()).prefix, "edge")

    def test_createErrors(self):
        e = self.assertRaises(ConfigError, createStatsdSink,
                              self.message(address="localhost", port_value=8125),
                              self.context())
        self.assertIn("malformed IP address: localhost", str(e))
        m = stats_pb2.StatsdSink(tcp_cluster_name="statsd")
        e = self.assertRaises(UnsupportedField, createStatsdSink, m, self.context())
        self.assertIn("stats_sinks[0].typed_config.tcp_cluster_name", str(e))
        self.assertRaises(ConfigError, createStatsdSink, stats_pb2.StatsdSink(), self.context())
