"""
Tests for L{txenvoy.server.overload_manager} and
L{txenvoy.server.heap_shrinker}: triggers, action states and Envoy's
C{overload.*} stats on a fake clock, states posted to workers, and the
config errors Envoy 1.40 gives (checked with C{envoy --mode validate}).
"""

import json

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from txenvoy.config.context import FactoryContext
from txenvoy.config.errors import ConfigError, UnsupportedField
from txenvoy.config.loader import loadBootstrap
from txenvoy.config.registry import Category, extension, loadPlugins
from txenvoy.server.dispatcher import Dispatcher
from txenvoy.server import heap_shrinker
from txenvoy.server.heap_shrinker import (FreeMemoryReleaser, HeapShrinker, holdFreedMemory,
                                          releaseFreeMemory)
from txenvoy.server.overload_manager import (
    DISABLE_HTTP_KEEPALIVE,
    GLOBAL_DOWNSTREAM_MAX_CONNECTIONS,
    HTTP_DOWNSTREAM_CONNECTION_IDLE,
    NULL_OVERLOAD_STATE,
    REDUCE_TIMEOUTS,
    STOP_ACCEPTING_REQUESTS,
    IResourceMonitor,
    OverloadManager,
    overloadStateOf,
)
from txenvoy.stats.store import StatsStore

FIXED_HEAP = "envoy.resource_monitors.fixed_heap"
_PRESSURES = {}


@implementer(IResourceMonitor)
class SettableMonitor:
    """A monitor whose pressure the test sets; C{hold} keeps updates pending."""

    def __init__(self, name):
        self.name = name
        self.hold = False
        self.pending = []

    def updateResourceUsage(self, callbacks):
        value = _PRESSURES.get(self.name)
        if self.hold:
            self.pending.append(callbacks)
        elif isinstance(value, Exception):
            callbacks.onFailure(value)
        else:
            callbacks.onSuccess(value or 0.0)


# A test-only monitor type, registered as a third party would register one.
_TEST_TYPE = "envoy.extensions.resource_monitors.injected_resource.v3.InjectedResourceConfig"


@extension(Category.RESOURCE_MONITOR, _TEST_TYPE)
def _createSettable(message, context):
    return SettableMonitor(message.filename)


def monitor(name, filename=None):
    return {"name": name, "typed_config": {"@type": "type.googleapis.com/" + _TEST_TYPE,
                                           "filename": filename or name}}


def globalMonitor(limit):
    return {"name": GLOBAL_DOWNSTREAM_MAX_CONNECTIONS, "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.resource_monitors."
                 "downstream_connections.v3.DownstreamConnectionsConfig",
        "max_active_downstream_connections": limit}}


def threshold(action, resource, value):
    return {"name": action, "triggers": [{"name": resource, "threshold": {"value": value}}]}


def build(overload, clock=None):
    loadPlugins()
    bootstrap = loadBootstrap(configYaml=json.dumps({"overload_manager": overload}))
    store = StatsStore()
    clock = clock or Clock()
    context = FactoryContext(clock, store)
    manager = OverloadManager(clock, bootstrap.overload_manager, store.shard("main_thread"),
                              context)
    return manager, store, clock


class InlineDispatcher(Dispatcher):
    """A worker dispatcher whose posts wait in a list until L{runPosted}."""

    def __init__(self, clock, name, stats):
        Dispatcher.__init__(self, clock, name, stats)
        self.posted = []

    def post(self, f, *args, **kwargs):
        self.posted.append((f, args, kwargs))

    def runPosted(self):
        posted, self.posted = self.posted, []
        for f, args, kwargs in posted:
            f(*args, **kwargs)


class OverloadManagerTests(SynchronousTestCase):

    def setUp(self):
        _PRESSURES.clear()

    def test_statsNamedAsEnvoy(self):
        """
        Envoy 1.40 creates, at start, C{overload.<monitor>.pressure},
        C{failed_updates} and C{skipped_updates} per polled monitor (no
        C{skipped_updates} for the global connection monitor), and
        C{overload.<action>.active} and C{scale_percent} per action.
        """
        _, store, _ = build({
            "resource_monitors": [monitor(FIXED_HEAP), globalMonitor(10)],
            "actions": [threshold(STOP_ACCEPTING_REQUESTS, FIXED_HEAP, 0.9)]})
        snap = store.snapshot()
        names = sorted(n for n in list(snap.counters) + list(snap.gauges)
                       if n.startswith("overload."))
        self.assertEqual(names, [
            "overload.envoy.overload_actions.stop_accepting_requests.active",
            "overload.envoy.overload_actions.stop_accepting_requests.scale_percent",
            "overload.envoy.resource_monitors.fixed_heap.failed_updates",
            "overload.envoy.resource_monitors.fixed_heap.pressure",
            "overload.envoy.resource_monitors.fixed_heap.skipped_updates",
            "overload.envoy.resource_monitors.global_downstream_max_connections.failed_updates",
            "overload.envoy.resource_monitors.global_downstream_max_connections.pressure",
        ])
        self.assertIn("overload.refresh_interval_delay", snap.histograms)

    def test_thresholdTriggerAtRefreshInterval(self):
        """
        Pressure is read every C{refresh_interval}; at the threshold the
        action is saturated (C{active} 1, C{scale_percent} 100) and the
        pressure gauge is in percent.
        """
        manager, store, clock = build({
            "refresh_interval": "0.25s",
            "resource_monitors": [monitor(FIXED_HEAP)],
            "actions": [threshold(STOP_ACCEPTING_REQUESTS, FIXED_HEAP, 0.9)]})
        manager.start()
        self.addCleanup(manager.stop)
        _PRESSURES["envoy.resource_monitors.fixed_heap"] = 0.5
        clock.advance(0.25)
        prefix = "overload.envoy.overload_actions.stop_accepting_requests."
        self.assertEqual(store.gaugeValue("overload.envoy.resource_monitors.fixed_heap.pressure"),
                         50)
        self.assertEqual(store.gaugeValue(prefix + "active"), 0)
        _PRESSURES["envoy.resource_monitors.fixed_heap"] = 0.95
        clock.advance(0.2)
        self.assertEqual(store.gaugeValue(prefix + "active"), 0)
        clock.advance(0.05)
        self.assertEqual(store.gaugeValue(prefix + "active"), 1)
        self.assertEqual(store.gaugeValue(prefix + "scale_percent"), 100)
        self.assertTrue(manager.state.isSaturated(STOP_ACCEPTING_REQUESTS))

    def test_scaledTriggerAndLargestTriggerWins(self):
        """
        A C{scaled} trigger is linear between its thresholds; an action
        with several triggers takes the largest state.
        """
        manager, store, clock = build({
            "resource_monitors": [monitor("a"), monitor("b")],
            "actions": [{"name": REDUCE_TIMEOUTS, "triggers": [
                {"name": "a", "scaled": {"scaling_threshold": 0.5, "saturation_threshold": 1.0}},
                {"name": "b", "threshold": {"value": 0.99}}]}]})
        manager.start()
        self.addCleanup(manager.stop)
        _PRESSURES.update(a=0.75, b=0.1)
        clock.advance(1)
        prefix = "overload.envoy.overload_actions.reduce_timeouts."
        self.assertEqual(store.gaugeValue(prefix + "scale_percent"), 50)
        self.assertEqual(store.gaugeValue(prefix + "active"), 0)
        _PRESSURES.update(b=1.0)
        clock.advance(1)
        self.assertEqual(store.gaugeValue(prefix + "scale_percent"), 100)
        self.assertEqual(store.gaugeValue(prefix + "active"), 1)
        _PRESSURES.update(a=0.2, b=0.0)
        clock.advance(1)
        self.assertEqual(store.gaugeValue(prefix + "scale_percent"), 0)

    def test_failedAndSkippedUpdates(self):
        """
        A monitor that fails counts C{failed_updates} and changes nothing;
        one still busy with the previous update counts C{skipped_updates}.
        """
        manager, store, clock = build({"resource_monitors": [monitor("m")]})
        manager.start()
        self.addCleanup(manager.stop)
        _PRESSURES["m"] = OSError("no /proc")
        clock.advance(1)
        self.assertEqual(store.counterValue("overload.m.failed_updates"), 1)
        slow = manager.resources["m"].monitor
        slow.hold = True
        clock.advance(1)
        clock.advance(1)
        self.assertEqual(store.counterValue("overload.m.skipped_updates"), 1)
        slow.pending[0].onSuccess(0.3)
        self.assertEqual(store.gaugeValue("overload.m.pressure"), 30)

    def test_refreshIntervalDelayIsTheTimeBetweenRefreshes(self):
        """
        C{overload.refresh_interval_delay} records, in ms, the time between
        two measurements, as Envoy 1.40 records it (about 100 for 0.1s).
        """
        manager, store, clock = build({"refresh_interval": "0.1s",
                                       "resource_monitors": [monitor("m")]})
        manager.start()
        self.addCleanup(manager.stop)
        clock.advance(0.1)
        clock.advance(0.1)
        hist = store.snapshot().histograms["overload.refresh_interval_delay"]
        self.assertEqual(sorted(hist.buckets.items()), [(100, 2)])

    def test_statesPostedToWorkersAsImmutableSnapshots(self):
        """
        Workers read their own L{ThreadLocalOverloadState}; a change is
        posted to each worker, never written into it from the main thread,
        and a worker's callbacks run when the post runs.
        """
        manager, store, clock = build({
            "resource_monitors": [monitor("m")],
            "actions": [threshold(DISABLE_HTTP_KEEPALIVE, "m", 0.5)]})
        workers = [InlineDispatcher(clock, "worker_%d" % i, store.shard("worker_%d" % i))
                   for i in range(2)]
        states = [manager.registerWorker(w) for w in workers]
        self.assertIs(overloadStateOf(workers[0]), states[0])
        seen = []
        states[1].addCallback(DISABLE_HTTP_KEEPALIVE, seen.append)
        manager.start()
        self.addCleanup(manager.stop)
        _PRESSURES["m"] = 0.6
        clock.advance(1)
        self.assertFalse(states[0].isSaturated(DISABLE_HTTP_KEEPALIVE))
        first = workers[0].posted[0][1][0]
        for w in workers:
            w.runPosted()
        self.assertTrue(states[0].isSaturated(DISABLE_HTTP_KEEPALIVE))
        self.assertIs(states[0].state, states[1].state)
        self.assertIs(states[0].state, first)
        self.assertEqual(seen, [1.0])
        # No change, nothing posted.
        clock.advance(1)
        self.assertEqual(workers[0].posted, [])

    def test_globalConnectionsAllocatedAcrossWorkers(self):
        """
        C{global_downstream_max_connections} is one count for every
        worker; a refusal counts C{failed_updates} in the refused worker's
        shard.
        """
        manager, store, clock = build({"resource_monitors": [globalMonitor(2)]})
        a, b = (manager.registerWorker(Dispatcher(clock, n, store.shard(n)))
                for n in ("worker_0", "worker_1"))
        self.assertTrue(a.tryAllocateResource(GLOBAL_DOWNSTREAM_MAX_CONNECTIONS))
        self.assertTrue(b.tryAllocateResource(GLOBAL_DOWNSTREAM_MAX_CONNECTIONS))
        self.assertFalse(b.tryAllocateResource(GLOBAL_DOWNSTREAM_MAX_CONNECTIONS))
        a.tryDeallocateResource(GLOBAL_DOWNSTREAM_MAX_CONNECTIONS)
        self.assertTrue(b.tryAllocateResource(GLOBAL_DOWNSTREAM_MAX_CONNECTIONS))
        self.assertEqual(store.counterValue(
            "overload.envoy.resource_monitors.global_downstream_max_connections.failed_updates"),
            1)
        self.assertTrue(NULL_OVERLOAD_STATE.tryAllocateResource(GLOBAL_DOWNSTREAM_MAX_CONNECTIONS))

    def test_reduceTimeoutsScalesBetweenMinAndConfigured(self):
        """
        Envoy's scaled timer: C{min + (max - min) * (1 - state)}, with
        C{min_timeout} or C{min_scale}.
        """
        config = {"resource_monitors": [monitor("m")], "actions": [{
            "name": REDUCE_TIMEOUTS,
            "triggers": [{"name": "m", "scaled": {"scaling_threshold": 0.5,
                                                  "saturation_threshold": 1.0}}],
            "typed_config": {
                "@type": "type.googleapis.com/envoy.config.overload.v3."
                         "ScaleTimersOverloadActionConfig",
                "timer_scale_factors": [{"timer": "HTTP_DOWNSTREAM_CONNECTION_IDLE",
                                         "min_timeout": "2s"}]}}]}
        manager, store, clock = build(config)
        worker = InlineDispatcher(clock, "worker_0", store.shard("worker_0"))
        tls = manager.registerWorker(worker)
        self.assertEqual(tls.scaledTimeout(HTTP_DOWNSTREAM_CONNECTION_IDLE, 10.0), 10.0)
        manager.start()
        self.addCleanup(manager.stop)
        _PRESSURES["m"] = 0.75
        clock.advance(1)
        worker.runPosted()
        self.assertEqual(tls.scaledTimeout(HTTP_DOWNSTREAM_CONNECTION_IDLE, 10.0), 6.0)
        _PRESSURES["m"] = 1.0
        clock.advance(1)
        worker.runPosted()
        self.assertEqual(tls.scaledTimeout(HTTP_DOWNSTREAM_CONNECTION_IDLE, 10.0), 2.0)

        scale = json.loads(json.dumps(config).replace('"min_timeout": "2s"', '"min_scale": '
                                                      '{"value": 50}'))
        manager, store, clock = build(scale)
        manager.start()
        self.addCleanup(manager.stop)
        worker = InlineDispatcher(clock, "worker_0", store.shard("worker_0"))
        tls = manager.registerWorker(worker)
        _PRESSURES["m"] = 1.0
        clock.advance(1)
        worker.runPosted()
        self.assertEqual(tls.scaledTimeout(HTTP_DOWNSTREAM_CONNECTION_IDLE, 10.0), 5.0)

    def test_configErrorsAsEnvoy(self):
        """Envoy 1.40's messages, each with the field path."""
        cases = [
            ({"resource_monitors": [monitor("m"), monitor("m")]},
             "Duplicate resource monitor m @ overload_manager.resource_monitors[1]"),
            ({"resource_monitors": [monitor("m")],
              "actions": [threshold("envoy.overload_actions.foo", "m", 0.5)]},
             "Unknown Overload Manager Action envoy.overload_actions.foo"
             " @ overload_manager.actions[0].name"),
            ({"resource_monitors": [monitor("m")],
              "actions": [threshold(STOP_ACCEPTING_REQUESTS, "nosuch", 0.5)]},
             "Unknown trigger resource nosuch for overload action "
             "envoy.overload_actions.stop_accepting_requests"
             " @ overload_manager.actions[0].triggers[0].name"),
            ({"resource_monitors": [monitor("m")],
              "actions": [threshold(STOP_ACCEPTING_REQUESTS, "m", 0.5)] * 2},
             "Duplicate overload action envoy.overload_actions.stop_accepting_requests"
             " @ overload_manager.actions[1]"),
            ({"resource_monitors": [monitor("m")], "actions": [{
                "name": STOP_ACCEPTING_REQUESTS,
                "triggers": [{"name": "m", "threshold": {"value": 0.5}},
                             {"name": "m", "threshold": {"value": 0.6}}]}]},
             "Duplicate trigger resource for overload action "
             "envoy.overload_actions.stop_accepting_requests"
             " @ overload_manager.actions[0].triggers[1]"),
            ({"resource_monitors": [monitor("m")], "actions": [{
                "name": STOP_ACCEPTING_REQUESTS, "triggers": [{"name": "m", "scaled": {
                    "scaling_threshold": 0.9, "saturation_threshold": 0.5}}]}]},
             "scaling_threshold must be less than saturation_threshold"
             " @ overload_manager.actions[0].triggers[0].scaled"),
            ({"resource_monitors": [dict(globalMonitor(5), name=FIXED_HEAP)]},
             "Didn't find a registered implementation for "
             "'envoy.resource_monitors.fixed_heap' with type URL: "
             "'envoy.extensions.resource_monitors.downstream_connections.v3."
             "DownstreamConnectionsConfig' @ overload_manager.resource_monitors[0]"),
            ({"resource_monitors": [dict(globalMonitor(5),
                                         name="envoy.resource_monitors.downstream_connections")]},
             "Didn't find a registered implementation for "
             "'envoy.resource_monitors.downstream_connections' with type URL: "
             "'envoy.extensions.resource_monitors.downstream_connections.v3."
             "DownstreamConnectionsConfig' @ overload_manager.resource_monitors[0]"),
        ]
        for config, message in cases:
            e = self.assertRaises(ConfigError, build, config)
            self.assertEqual(str(e), message)

    def test_unimplementedPartsAreRejected(self):
        """What txenvoy does not do is an error naming the field, never ignored."""
        e = self.assertRaises(UnsupportedField, build, {
            "resource_monitors": [monitor("m")],
            "actions": [threshold("envoy.overload_actions.reset_high_memory_stream", "m", 0.5)]})
        self.assertIn("overload_manager.actions[0]", str(e))
        e = self.assertRaises(UnsupportedField, build, {
            "resource_monitors": [monitor("m")], "loadshed_points": [
            {"name": "envoy.load_shed_points.tcp_listener_accept",
             "triggers": [{"name": "m", "threshold": {"value": 0.5}}]}]})
        self.assertIn("overload_manager.loadshed_points", str(e))

    def test_monitorInterface(self):
        from txenvoy.extensions.resource_monitors.fixed_heap import FixedHeapMonitor

        verifyObject(IResourceMonitor, FixedHeapMonitor(1))


class HeapShrinkerTests(SynchronousTestCase):

    def test_shrinksEveryTenSecondsWhileActive(self):
        """
        Envoy's C{shrink_heap}: every 10 s while saturated, counted in
        C{overload.envoy.overload_actions.shrink_heap.shrink_count}.
        """
        clock = Clock()
        store = StatsStore()
        shrinker = HeapShrinker(clock, store.shard("main_thread"))
        name = "overload.envoy.overload_actions.shrink_heap.shrink_count"
        shrinker.setActive(True)
        clock.advance(9.9)
        self.assertEqual(store.counterValue(name), 0)
        clock.advance(0.1)
        clock.advance(10)
        self.assertEqual(store.counterValue(name), 2)
        shrinker.setActive(False)
        clock.advance(30)
        self.assertEqual(store.counterValue(name), 2)

    def test_freeMemoryReleasedEveryFiveSeconds(self):
        """
        Free memory goes back to the system every 5 s whether or not
        anything is overloaded (glibc does not do it on its own).
        """
        clock = Clock()
        calls = []
        releaser = FreeMemoryReleaser(clock, release=lambda: calls.append(clock.seconds()),
                                      hold=lambda: None)
        releaser.start()
        clock.advance(5)
        clock.advance(5)
        releaser.stop()
        clock.advance(10)
        self.assertEqual(calls, [5, 10])

    def test_startHoldsFreedMemory(self):
        """
        Once the releaser runs, glibc is told to keep what is freed (it
        no longer trims an arena on every free), once.
        """
        clock = Clock()
        holds = []
        releaser = FreeMemoryReleaser(clock, release=lambda: None,
                                      hold=lambda: holds.append(clock.seconds()))
        releaser.start()
        releaser.start()
        self.assertEqual(holds, [0])
        releaser.stop()

    def test_holdFreedMemorySetsBothThresholds(self):
        """
        The trim threshold is set with the mmap threshold, which glibc
        otherwise leaves at 128 KiB once a trim threshold is set: every
        1 MiB body buffer would get its own mapping.
        """
        calls = []
        self.assertTrue(holdFreedMemory(lambda p, v: calls.append((p, v)) or 1))
        self.assertEqual(calls, [(heap_shrinker.M_MMAP_THRESHOLD, heap_shrinker.MMAP_THRESHOLD),
                                 (heap_shrinker.M_TRIM_THRESHOLD, heap_shrinker.TRIM_THRESHOLD)])
        self.assertGreater(heap_shrinker.MMAP_THRESHOLD, 1024 * 1024)
        self.assertFalse(holdFreedMemory(None))

    def test_holdFreedMemoryWithGlibc(self):
        """glibc's mallopt takes both values."""
        if heap_shrinker._mallopt is None:
            self.assertFalse(holdFreedMemory())
        else:
            self.assertTrue(holdFreedMemory())

    def test_releaseFreeMemory(self):
        """glibc's malloc_trim runs and says whether it released anything."""
        self.assertIn(releaseFreeMemory(), (True, False))
