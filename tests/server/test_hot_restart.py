"""
Tests for L{txenvoy.server.hot_restart}: which stats carry over, and the
command line that turns hot restart on.
"""

from twisted.trial.unittest import SynchronousTestCase

from txenvoy.server.hot_restart import ParentStatsMerger, listenerAddress, neverImported
from txenvoy.server.options import Options
from txenvoy.stats.store import StatsStore


class MergerTests(SynchronousTestCase):

    def setUp(self):
        self.store = StatsStore()
        self.own = self.store.shard("main_thread")
        self.merger = ParentStatsMerger(self.store.shard("hot_restart_parent"))

    def test_countersCarryOver(self):
        """
        Envoy's C{StatMerger}: each increase of the parent's counter is
        added, and stays after the parent exits.
        """
        self.own.counter("http.front.downstream_rq_total").inc(2)
        self.merger.merge({"counters": {"http.front.downstream_rq_total": 5}})
        self.merger.merge({"counters": {"http.front.downstream_rq_total": 7}})
        self.assertEqual(self.store.counterValue("http.front.downstream_rq_total"), 9)
        self.merger.parentTerminated()
        self.assertEqual(self.store.counterValue("http.front.downstream_rq_total"), 9)

    def test_gaugesAccumulateUntilParentExits(self):
        """Accumulated gauges add the parent's current value while it lives."""
        self.own.gauge("http.front.downstream_cx_active").set(1)
        self.merger.merge({"gauges": {"http.front.downstream_cx_active": 3}, "num_connections": 3})
        self.assertEqual(self.store.gaugeValue("http.front.downstream_cx_active"), 4)
        self.assertEqual(self.store.gaugeValue("server.parent_connections"), 3)
        self.merger.merge({"gauges": {"http.front.downstream_cx_active": 1}})
        self.assertEqual(self.store.gaugeValue("http.front.downstream_cx_active"), 2)
        self.merger.parentTerminated()
        self.assertEqual(self.store.gaugeValue("http.front.downstream_cx_active"), 1)
        self.assertEqual(self.store.gaugeValue("server.parent_connections"), 0)

    def test_neverImported(self):
        """Gauges Envoy declares C{NeverImport} keep this epoch's value."""
        self.own.gauge("server.live").set(1)
        self.merger.merge({"gauges": {"server.live": 1, "server.hot_restart_epoch": 0,
                                      "cluster.x.version": 9}})
        self.assertEqual(self.store.gaugeValue("server.live"), 1)
        for name in ("server.live", "server.state", "server.concurrency", "server.uptime",
                     "listener_manager.total_listeners_active", "cluster.a.membership_total",
                     "cluster.a.version", "cluster_manager.active_clusters"):
            self.assertTrue(neverImported(name), name)
        for name in ("http.a.downstream_cx_active", "cluster.a.upstream_rq_active",
                     "server.hot_restart_generation"):
            self.assertFalse(neverImported(name), name)

    def test_generationKept(self):
        """C{server.hot_restart_generation} keeps counting epochs after the parent exits."""
        self.own.gauge("server.hot_restart_generation").inc()
        self.merger.merge({"gauges": {"server.hot_restart_generation": 1}})
        self.merger.parentTerminated()
        self.assertEqual(self.store.gaugeValue("server.hot_restart_generation"), 2)

    def test_listenerAddress(self):
        self.assertEqual(listenerAddress("127.0.0.1", 80), "tcp://127.0.0.1:80")
        self.assertEqual(listenerAddress("::1", 80), "tcp://[::1]:80")


class OptionsTests(SynchronousTestCase):

    def parse(self, *argv):
        options = Options()
        options.parseOptions(["-c", "x.yaml"] + list(argv))
        return options.serverOptions()

    def test_offByDefault(self):
        """Without an epoch or base id on the command line, no sockets are bound."""
        opts = self.parse()
        self.assertFalse(opts.hotRestart)
        self.assertTrue(opts.asServerInfo()["disable_hot_restart"])

    def test_epoch(self):
        opts = self.parse("--restart-epoch", "2", "--base-id", "5")
        self.assertTrue(opts.hotRestart)
        self.assertEqual((opts.restartEpoch, opts.baseId), (2, 5))
        info = opts.asServerInfo()
        self.assertEqual((info["restart_epoch"], info["disable_hot_restart"]), (2, False))

    def test_disabled(self):
        self.assertFalse(self.parse("--restart-epoch", "0", "--disable-hot-restart").hotRestart)

    def test_dynamicBaseIdWithEpoch(self):
        """Envoy refuses a dynamic base id for a restart: the epochs must share one."""
        e = self.assertRaises(SystemExit, self.parse, "--restart-epoch", "1",
                              "--use-dynamic-base-id")
        self.assertEqual(e.code, 1)


class HistogramMergeTests(SynchronousTestCase):

    def test_workerHistograms(self):
        """
        A worker process's histograms: what it recorded since its last
        report is added, to the totals and to the flush interval.
        """
        from txenvoy.server.hot_restart import exportStats

        class Worker:
            stats = StatsStore()

            def connectionCount(self):
                return 0

        worker = Worker()
        h = worker.stats.shard("worker_0").histogram("http.front.downstream_rq_time")
        for value in (1, 2, 30):
            h.recordValue(value)
        store = StatsStore()
        merger = ParentStatsMerger(store.shard("worker_process_0"))
        merger.merge(exportStats(worker, histograms=True))
        h.recordValue(500)
        merger.merge(exportStats(worker, histograms=True))
        merged = store.snapshot().histograms["http.front.downstream_rq_time"]
        self.assertEqual(merged.count, 4)
        self.assertEqual(merged.sum, 533)
        self.assertEqual(sum(merged.intervalBuckets.values()), 4)
        self.assertEqual(merged.buckets, h.buckets)
        self.assertEqual(exportStats(worker)["counters"], {})
        self.assertNotIn("histograms", exportStats(worker))

    def test_workerConnections(self):
        """
        A worker process's open connections are not a parent's: they count
        in C{server.total_connections} only (L{ParentStatsMerger.connections}).
        """
        store = StatsStore()
        merger = ParentStatsMerger(store.shard("worker_process_0"), None)
        merger.merge({"num_connections": 3})
        self.assertEqual(merger.connections, 3)
        self.assertEqual(store.gaugeValue("server.parent_connections"), 0)
        merger.parentTerminated()
        self.assertEqual(merger.connections, 0)
