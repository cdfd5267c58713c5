"""Tests for L{txenvoy.stats.store}."""

from twisted.trial.unittest import SynchronousTestCase

from txenvoy.stats.store import StatsStore, roundToTwoDigits


class StoreTests(SynchronousTestCase):

    def test_shardsAreSummed(self):
        """Each thread writes its own shard; reads sum them."""
        store = StatsStore()
        a, b = store.shard("worker_0"), store.shard("worker_1")
        a.counter("x").inc()
        b.counter("x").inc(2)
        a.gauge("g").inc(5)
        b.gauge("g").dec(2)
        self.assertEqual(store.counterValue("x"), 3)
        snap = store.snapshot()
        self.assertEqual(snap.counters["x"], 3)
        self.assertEqual(snap.gauges["g"], 3)
        self.assertEqual(snap.used, {"x", "g"})

    def test_scope(self):
        store = StatsStore()
        s = store.shard("main_thread").scope("cluster.c1.")
        s.counter("upstream_cx_total").inc()
        self.assertEqual(store.counterValue("cluster.c1.upstream_cx_total"), 1)

    def test_unusedStatIsNotUsed(self):
        store = StatsStore()
        store.shard("m").counter("never")
        snap = store.snapshot()
        self.assertEqual(snap.counters["never"], 0)
        self.assertNotIn("never", snap.used)

    def test_counterAddedToDirectly(self):
        """
        A counter the data path adds to directly (C{value += 1}) is used,
        and stays used after /reset_counters, as one incremented with inc().
        """
        store = StatsStore()
        shard = store.shard("worker_0")
        shard.counter("direct").value += 1
        shard.counter("called").inc()
        self.assertEqual(store.snapshot().used, {"direct", "called"})
        store.resetCounters()
        snap = store.snapshot()
        self.assertEqual((snap.counters["direct"], snap.counters["called"]), (0, 0))
        self.assertEqual(snap.used, {"direct", "called"})

    def test_recordValueBucketsAsRounded(self):
        """
        recordValue's unrolled rounding puts every value, at the edges of
        each magnitude too, in the bucket roundToTwoDigits names.
        """
        values = [0.0, -1.0, 5e-5, 1e9]
        for edge in (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0):
            values += [edge, edge * (1 - 1e-12), edge * (1 + 1e-12)]
        values += [i / 997.0 for i in range(1, 3000)]
        values += [i * 0.37 for i in range(1, 3000)]
        values += list(range(-3, 2000, 7))
        for value in values:
            h = StatsStore().shard("w").histogram("h")
            h.recordValue(value)
            bucket = roundToTwoDigits(value)
            self.assertEqual(list(h.buckets.items()), [(bucket, 1)], value)
            self.assertIs(type(next(iter(h.buckets))), type(bucket), value)

    def test_histogramQuantiles(self):
        store = StatsStore()
        a, b = store.shard("a"), store.shard("b")
        for v in range(1, 51):
            a.histogram("h").recordValue(v)
        for v in range(51, 101):
            b.histogram("h").recordValue(v)
        h = store.snapshot().histograms["h"]
        self.assertEqual(h.count, 100)
        self.assertEqual(h.quantile(0), 1)
        self.assertEqual(h.quantile(1), 100)
        self.assertAlmostEqual(h.quantile(0.5), 50, delta=1)
        self.assertEqual(h.cumulativeCountsAt([10, 1000]), [10, 100])

    def test_resetCounters(self):
        store = StatsStore()
        c = store.shard("m").counter("x")
        c.inc(4)
        store.resetCounters()
        self.assertEqual(store.counterValue("x"), 0)

    def test_roundToTwoDigits(self):
        self.assertEqual(roundToTwoDigits(1234), 1200)
        self.assertEqual(roundToTwoDigits(5.67), 5.6)
        self.assertEqual(roundToTwoDigits(0.567), 0.56)
        self.assertEqual(roundToTwoDigits(0), 0)
