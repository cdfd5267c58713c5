"""Tests for L{txenvoy.stats.store}."""

import threading

from twisted.trial.unittest import SynchronousTestCase

from txenvoy.stats.store import FOLD_AT, StatsStore, roundToTwoDigits


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

    def test_recordedValuesAreReadAtOnce(self):
        """
        Values recorded but not yet sorted into buckets are in every
        reading: buckets, interval buckets, count, sum, used, a snapshot.
        """
        store = StatsStore()
        h = store.shard("w").histogram("h")
        self.assertFalse(h.used)
        h.recordValue(0.5)
        self.assertTrue(h.used)
        h.recordValue(0.5)
        h.recordValue(12.0)
        self.assertEqual(h.count, 3)
        self.assertEqual(h.sum, 13.0)
        self.assertEqual(h.buckets, {0.5: 2, 12: 1})
        self.assertEqual(h.intervalBuckets, {0.5: 2, 12: 1})
        h.recordValue(7)
        merged = store.snapshot().histograms["h"]
        self.assertEqual((merged.count, merged.sum), (4, 20.0))
        self.assertEqual(merged.buckets, {0.5: 2, 12: 1, 7: 1})

    def test_histogramSortsItsOwnValuesWhenUnread(self):
        """
        A histogram nobody reads holds fewer than C{FOLD_AT} values
        unsorted: its owner sorts them itself, and they count once.
        """
        h = StatsStore().shard("w").histogram("h")
        for _ in range(FOLD_AT * 3 + 1):
            h.recordValue(2.5)
        self.assertLess(len(h._pending), FOLD_AT)
        self.assertEqual(h.count, FOLD_AT * 3 + 1)
        self.assertEqual(h.buckets, {2.5: FOLD_AT * 3 + 1})

    def test_intervalResetKeepsTotals(self):
        """
        The stats flush's new interval (setting C{intervalBuckets}) takes
        the pending values into the interval that ends and into the totals.
        """
        store = StatsStore()
        h = store.shard("w").histogram("h")
        h.recordValue(3.0)
        store.snapshot(resetInterval=True)
        h.recordValue(4.0)
        self.assertEqual(h.intervalBuckets, {4.0: 1})
        self.assertEqual(h.buckets, {3.0: 1, 4.0: 1})
        self.assertEqual(h.count, 2)

    def test_readerAndWriterThreadsLoseNothing(self):
        """
        A worker thread recording while the main thread reads: every value
        is counted exactly once.
        """
        store = StatsStore()
        h = store.shard("worker_0").histogram("h")
        n = FOLD_AT * 20
        done = threading.Event()

        def record():
            for i in range(n):
                h.recordValue(float(i % 50))
            done.set()

        t = threading.Thread(target=record)
        t.start()
        while not done.is_set():
            store.snapshot(resetInterval=True)
        t.join()
        self.assertEqual(store.snapshot().histograms["h"].count, n)
        self.assertEqual(sum(h.buckets.values()), n)
        self.assertEqual(h.sum, float(sum(i % 50 for i in range(n))))

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
