"""Tests for L{txenvoy.stats.per_worker}."""

from twisted.trial.unittest import SynchronousTestCase

from txenvoy.server.dispatcher import Dispatcher
from txenvoy.stats.per_worker import PerWorker, StatsStruct
from txenvoy.stats.store import StatsStore


class PerWorkerTests(SynchronousTestCase):

    def test_oneObjectPerWorker(self):
        store = StatsStore()
        d0 = Dispatcher(None, "worker_0", store.shard("worker_0"))
        d1 = Dispatcher(None, "worker_1", store.shard("worker_1"))
        per = PerWorker(lambda d: StatsStruct(d.stats, "tcp.p.", counters=("a",), gauges=("g",),
                                              histograms=("h",)))
        self.assertIs(per.get(d0), per.get(d0))
        self.assertIsNot(per.get(d0), per.get(d1))
        per.get(d0).a.inc()
        per.get(d1).a.inc()
        per.get(d1).g.set(3)
        per.get(d0).h.recordValue(1)
        snap = store.snapshot()
        self.assertEqual(snap.counters["tcp.p.a"], 2)
        self.assertEqual(snap.gauges["tcp.p.g"], 3)
        self.assertEqual(snap.histograms["tcp.p.h"].count, 1)
