"""
Tests for L{txenvoy.accesslog.buffered}: the bounded buffer the network
access loggers share.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.accesslog.buffered import RecordBuffer
from txenvoy.stats.store import StatsStore


class RecordBufferTests(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.clock.callFromThread = lambda f, *args: f(*args)
        self.flushes = 0
        store = StatsStore()
        self.shard = store.shard("main_thread")
        self.buffer = RecordBuffer(self.clock, self.flush, self.shard.counter("taken"),
                                   self.shard.counter("dropped"), flushInterval=1.0,
                                   bufferSizeBytes=10, maxBufferedBytes=25)

    def flush(self):
        self.flushes += 1

    def test_fullEnoughFlushesAtOnce(self):
        """Reaching bufferSizeBytes asks for a flush at once, once."""
        self.buffer.add("a", 6)
        self.assertEqual(self.flushes, 0)
        self.buffer.add("b", 6)
        self.buffer.add("c", 6)
        self.assertEqual(self.flushes, 1)
        self.assertEqual(self.buffer.take(), ["a", "b", "c"])
        self.assertEqual((self.buffer.bufferedBytes, self.buffer.waiting()), (0, False))

    def test_bounded(self):
        """Past maxBufferedBytes a record is dropped and counted, not kept."""
        kept = [self.buffer.add(i, 6) for i in range(6)]
        self.assertEqual(kept, [True] * 4 + [False] * 2)
        self.assertEqual((self.shard.counters["taken"].value,
                          self.shard.counters["dropped"].value), (4, 2))

    def test_timer(self):
        """The flush timer runs every flushInterval on the given reactor."""
        self.buffer.start()
        self.clock.advance(1.0)
        self.clock.advance(1.0)
        self.buffer.stop()
        self.clock.advance(2.0)
        self.assertEqual(self.flushes, 2)
