"""
Tests for L{txenvoy.extensions.stat_sinks.dog_statsd}: DogStatsD lines as
Envoy's sink writes them (tag-extracted names, C{|#tag:value} tags).
"""

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.stats.test_flush import FakeUDPReactor
from txenvoy.extensions.stat_sinks.dog_statsd import DogStatsdSink
from txenvoy.interfaces import IStatsSink
from txenvoy.stats.store import StatsStore


class DogStatsdTests(SynchronousTestCase):

    def setUp(self):
        self.reactor = FakeUDPReactor()
        self.store = StatsStore()
        self.shard = self.store.shard("main_thread")

    def test_taggedLines(self):
        """
        Envoy 1.40's DogStatsD lines (recorded from its sink): the name
        without the extracted parts, the tags in extraction order.
        """
        sink = DogStatsdSink(self.reactor, "127.0.0.1", 8125, prefix="pfx")
        verifyObject(IStatsSink, sink)
        self.shard.counter("http.ingress.downstream_rq_2xx").inc(3)
        self.shard.counter("listener.127.0.0.1_50031.http.ingress.downstream_rq_completed").inc(3)
        self.shard.gauge("server.live").set(1)
        self.shard.histogram("http.ingress.downstream_rq_time").recordValue(4)
        self.assertEqual(sink.lines(self.store.snapshot(resetInterval=True)), [
            "pfx.http.downstream_rq_xx:3|c|#envoy.response_code_class:2,"
            "envoy.http_conn_manager_prefix:ingress",
            "pfx.listener.http.downstream_rq_completed:3|c|#envoy.http_conn_manager_prefix:"
            "ingress,envoy.listener_address:127.0.0.1_50031",
            "pfx.server.live:1|g",
            "pfx.http.downstream_rq_time:4|ms|#envoy.http_conn_manager_prefix:ingress",
        ])

    def test_maxBytesPerDatagram(self):
        """max_bytes_per_datagram: lines joined by newlines up to the limit."""
        sink = DogStatsdSink(self.reactor, "127.0.0.1", 8125, maxBytesPerDatagram=30)
        self.assertEqual(sink.datagrams(["a" * 10, "b" * 10, "c" * 10, "d" * 40]),
                         ["a" * 10 + "\n" + "b" * 10, "c" * 10, "d" * 40])
