"""
Tests for L{txenvoy.tracing.reporter}: spans batched per worker, sent off
the data path, with bounded memory whatever the collector does.
"""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.stats.per_worker import StatsStruct
from txenvoy.stats.store import StatsStore
from txenvoy.tracing.reporter import BatchReporter, BytesProducer

STATS = ("spans_sent", "reports_sent", "reports_dropped", "reports_failed",
         "reports_skipped_no_cluster", "timer_flushed", "spans_dropped")


class RecordingCollector:
    """A collector whose reports stay pending until the test answers them."""

    clusterName = "zipkin"

    def __init__(self, address=("127.0.0.1", 9411)):
        self.address = address
        self.posts = []
        self.closed = False

    def host(self):
        return self.address

    def post(self, address, body):
        d = defer.Deferred()
        self.posts.append((address, body, d))
        return d

    def close(self):
        self.closed = True


class BatchReporterTests(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.store = StatsStore()
        self.collector = RecordingCollector()
        self.reporter = BatchReporter(
            self.clock, self.collector, lambda spans: b",".join(spans),
            StatsStruct(self.store.shard("worker_0"), "tracing.zipkin.", STATS),
            flushInterval=5.0, minFlushSpans=3, maxBufferedSpans=4, maxInFlight=1)

    def stat(self, name):
        return self.store.snapshot().counters.get("tracing.zipkin." + name, 0)

    def test_flushAtMinFlushSpans(self):
        """min_flush_spans spans make one report; a 202 counts reports_sent."""
        for span in (b"a", b"b", b"c"):
            self.reporter.report(span)
        [(address, body, d)] = self.collector.posts
        self.assertEqual((address, body), (("127.0.0.1", 9411), b"a,b,c"))
        self.assertEqual(self.stat("spans_sent"), 3)
        d.callback(202)
        self.assertEqual(self.stat("reports_sent"), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_flushOnTimer(self):
        """Fewer spans go when the flush interval ends (timer_flushed)."""
        self.reporter.report(b"a")
        self.clock.advance(4.9)
        self.assertEqual(self.collector.posts, [])
        self.clock.advance(0.1)
        self.assertEqual(self.collector.posts[0][1], b"a")
        self.assertEqual(self.stat("timer_flushed"), 1)

    def test_errorsAndFailures(self):
        """Envoy: a non-202 answer is reports_dropped, no answer reports_failed."""
        for _ in range(3):
            self.reporter.report(b"x")
        self.collector.posts[0][2].callback(500)
        for _ in range(3):
            self.reporter.report(b"x")
        self.collector.posts[1][2].errback(ConnectionRefusedError())
        self.assertEqual((self.stat("reports_dropped"), self.stat("reports_failed")), (1, 1))
        self.assertEqual(self.reporter.inFlight, 0)

    def test_slowCollectorBoundsMemory(self):
        """
        While maxInFlight reports wait, a new batch is dropped and counted;
        the buffer never holds more than maxBufferedSpans.
        """
        for _ in range(3):
            self.reporter.report(b"x")
        for _ in range(3):
            self.reporter.report(b"y")
        self.assertEqual(len(self.collector.posts), 1)
        self.assertEqual((self.stat("reports_dropped"), self.stat("spans_dropped")), (1, 3))
        self.reporter.minFlushSpans = 100
        for _ in range(10):
            self.reporter.report(b"z")
        self.assertEqual(len(self.reporter.spans), 4)
        self.assertEqual(self.stat("spans_dropped"), 9)

    def test_noCluster(self):
        """No collector host: reports_skipped_no_cluster, nothing kept."""
        self.collector.address = None
        for _ in range(3):
            self.reporter.report(b"x")
        self.assertEqual(self.stat("reports_skipped_no_cluster"), 1)
        self.assertEqual(self.reporter.spans, [])

    def test_stop(self):
        """Stopping cancels the timer and closes the collector's connections."""
        self.reporter.report(b"a")
        self.reporter.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertTrue(self.collector.closed)


class BytesProducerTests(SynchronousTestCase):

    def test_writesAtOnce(self):
        """The body is written in one call with its length known."""
        written = []

        class Consumer:
            write = written.append

        producer = BytesProducer(b"body")
        self.assertEqual(producer.length, 4)
        self.successResultOf(producer.startProducing(Consumer()))
        self.assertEqual(written, [b"body"])
