"""
Tests for L{txenvoy.server.guarddog}, with fake clocks: the guard dog's
monotonic clock is a L{FakeClock}, each dispatcher's reactor a C{Clock}.
"""

from google.protobuf import json_format as pbjson
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.watchdog.v3 import abort_action_pb2  # noqa: F401

from txenvoy.config.errors import ConfigError, UnsupportedField
from txenvoy.server.guarddog import (
    AbortAction,
    GuardDog,
    WatchdogConfig,
    watchdogConfigsFromBootstrap,
)
from txenvoy.stats.store import StatsStore

ABORT = "type.googleapis.com/envoy.watchdog.v3.AbortActionConfig"


class FakeClock:
    """
    A monotonic clock moved by hand, kept in whole milliseconds so that
    0.1 + 0.1 is exactly 0.2 and boundaries behave as written.
    """

    def __init__(self):
        self.ms = 0

    def advance(self, seconds):
        self.ms += int(round(seconds * 1000))

    def __call__(self):
        return self.ms / 1000.0


class FakeDispatcher:
    """A dispatcher whose post() runs the call at once, on its own Clock."""

    def __init__(self, name):
        self.name = name
        self.reactor = Clock()
        self.posted = 0

    def post(self, f, *args, **kwargs):
        self.posted += 1
        f(*args, **kwargs)


def watchdog(d):
    msg = bootstrap_pb2.Watchdog()
    pbjson.ParseDict(d, msg)
    return msg


class ConfigTests(SynchronousTestCase):
    """L{WatchdogConfig.fromProto}."""

    def test_defaults(self):
        """Envoy's defaults: miss 200 ms, megamiss 1 s, no kill."""
        for config in (WatchdogConfig.fromProto(None), WatchdogConfig.fromProto(watchdog({}))):
            self.assertEqual(config, WatchdogConfig(0.2, 1.0, 0.0, 0.0, 0.0, ()))
            self.assertEqual(config.loopInterval, 0.2)

    def test_values(self):
        config = WatchdogConfig.fromProto(watchdog({
            "miss_timeout": "0.1s", "megamiss_timeout": "0.5s", "kill_timeout": "4s",
            "multikill_timeout": "0.05s", "multikill_threshold": {"value": 50}}))
        self.assertEqual(
            (config.missTimeout, config.megamissTimeout, config.killTimeout,
             config.multikillTimeout, config.multikillThreshold),
            (0.1, 0.5, 4.0, 0.05, 50.0))
        self.assertEqual(config.loopInterval, 0.05)

    def test_jitter(self):
        config = WatchdogConfig.fromProto(
            watchdog({"kill_timeout": "4s", "max_kill_timeout_jitter": "1s"}),
            random=lambda: 0.5)
        self.assertEqual(config.killTimeout, 4.5)

    def test_abortAction(self):
        """The abort action is accepted, for any event."""
        config = WatchdogConfig.fromProto(watchdog({"actions": [{
            "event": "MEGAMISS",
            "config": {"name": "envoy.watchdog.abort_action",
                       "typed_config": {"@type": ABORT, "wait_duration": "2s"}}}]}))
        self.assertEqual(config.actions, (("MEGAMISS", AbortAction(2.0)),))

    def test_otherActionUnsupported(self):
        msg = watchdog({"actions": [{"event": "KILL", "config": {
            "name": "p", "typed_config": {
                "@type": "type.googleapis.com/google.protobuf.Struct", "value": {}}}}]})
        e = self.assertRaises(UnsupportedField, WatchdogConfig.fromProto, msg,
                              "watchdogs.worker_watchdog")
        self.assertTrue(e.message.startswith(
            "watchdogs.worker_watchdog.actions[0].config.typed_config: unsupported field"))

    def test_bootstrap(self):
        b = bootstrap_pb2.Bootstrap()
        self.assertEqual(watchdogConfigsFromBootstrap(b), (WatchdogConfig(), WatchdogConfig()))
        pbjson.ParseDict({"watchdogs": {"worker_watchdog": {"miss_timeout": "0.5s"}}}, b)
        main, worker = watchdogConfigsFromBootstrap(b)
        self.assertEqual((main.missTimeout, worker.missTimeout), (0.2, 0.5))
        b = bootstrap_pb2.Bootstrap()
        pbjson.ParseDict({"watchdog": {"kill_timeout": "3s"}}, b)
        main, worker = watchdogConfigsFromBootstrap(b)
        self.assertEqual((main.killTimeout, worker.killTimeout), (3.0, 3.0))
        pbjson.ParseDict({"watchdogs": {}}, b)
        e = self.assertRaises(ConfigError, watchdogConfigsFromBootstrap, b)
        self.assertEqual(e.message, "Only one of watchdog or watchdogs should be set!")


class GuardDogTests(SynchronousTestCase):
    """Misses, mega misses, kills, with fake clocks."""

    def setUp(self):
        self.clock = FakeClock()
        self.store = StatsStore()
        self.events = []

    def guardDog(self, main=None, worker=None):
        return GuardDog(
            Clock(), self.store.shard("guard_dog"), main or WatchdogConfig(),
            worker or WatchdogConfig(), abort=lambda: self.events.append("abort"),
            dumpStacks=lambda: self.events.append("dump"), wallClock=self.clock)

    def value(self, name):
        return self.store.counterValue(name)

    def stall(self, guardDog, seconds, step=0.1):
        """Advance the guard dog's clock, checking every C{step}."""
        for _ in range(int(round(seconds / step))):
            self.clock.advance(step)
            guardDog.step()

    def test_statsExistAtStart(self):
        """Envoy 1.40 lists the watchdog counters at 0 from the start."""
        self.guardDog()
        names = self.store.snapshot().counters
        for name in ("main_thread.watchdog_miss", "main_thread.watchdog_mega_miss",
                     "workers.watchdog_miss", "workers.watchdog_mega_miss"):
            self.assertEqual(names[name], 0)

    def test_missOnce(self):
        """
        Not touched for 0.3 s: one miss, counted once for the stall (Envoy
        1.40: a 0.5 s block with miss 0.2 s gave watchdog_miss 1).
        """
        gd = self.guardDog()
        gd.createWatchDog(FakeDispatcher("main_thread"))
        self.stall(gd, 0.2)
        self.assertEqual(self.value("main_thread.watchdog_miss"), 0)
        self.stall(gd, 0.1)
        self.assertEqual(self.value("main_thread.watchdog_miss"), 1)
        self.assertEqual(self.value("server.main_thread.watchdog_miss"), 1)
        self.stall(gd, 0.2)
        self.assertEqual(self.value("main_thread.watchdog_miss"), 1)
        self.assertEqual(self.value("main_thread.watchdog_mega_miss"), 0)
        self.assertEqual(self.events, [])

    def test_megaMiss(self):
        """
        Not touched for 1.2 s: one miss and one mega miss (Envoy 1.40: a 2 s
        block gave miss +1 and mega_miss +1), on the worker stats.
        """
        gd = self.guardDog()
        gd.createWatchDog(FakeDispatcher("worker_0"))
        self.stall(gd, 1.2)
        self.assertEqual(self.value("workers.watchdog_miss"), 1)
        self.assertEqual(self.value("workers.watchdog_mega_miss"), 1)
        self.assertEqual(self.value("server.worker_0.watchdog_miss"), 1)
        self.assertEqual(self.value("server.worker_0.watchdog_mega_miss"), 1)
        self.assertEqual(self.value("main_thread.watchdog_miss"), 0)

    def test_touchedCountsNothing(self):
        """A dispatcher whose loop runs touches its watchdog: no miss."""
        gd = self.guardDog()
        dispatcher = FakeDispatcher("worker_0")
        dog = gd.createWatchDog(dispatcher)
        dog.startWatchdog()
        self.assertEqual(dispatcher.posted, 1)
        for _ in range(30):
            self.clock.advance(0.1)
            dispatcher.reactor.advance(0.1)
            gd.step()
        self.assertEqual(self.value("workers.watchdog_miss"), 0)
        self.assertGreaterEqual(dog.touches, 30)
        self.assertIsNotNone(dog.threadId)

    def test_touchInterval(self):
        """Touches come every half check interval (Envoy: loop interval / 2)."""
        gd = self.guardDog()
        dispatcher = FakeDispatcher("worker_0")
        dog = gd.createWatchDog(dispatcher)
        dog.startWatchdog()
        self.assertEqual(dog.touches, 1)
        dispatcher.reactor.advance(0.1)
        self.assertEqual(dog.touches, 2)
        dog.stopWatchdog()
        self.assertEqual(dispatcher.reactor.getDelayedCalls(), [])

    def test_newStallCountsAgain(self):
        gd = self.guardDog()
        dog = gd.createWatchDog(FakeDispatcher("worker_1"))
        self.stall(gd, 0.5)
        dog.touch()
        self.stall(gd, 0.1)
        self.assertEqual(self.value("workers.watchdog_miss"), 1)
        self.stall(gd, 0.5)
        self.assertEqual(self.value("workers.watchdog_miss"), 2)
        self.assertEqual(self.value("server.worker_1.watchdog_miss"), 2)

    def test_kill(self):
        """Past kill_timeout: dump every stack, then abort."""
        gd = self.guardDog(worker=WatchdogConfig(killTimeout=4.0))
        gd.createWatchDog(FakeDispatcher("worker_0"))
        self.stall(gd, 4.0)
        self.assertEqual(self.events, [])
        self.stall(gd, 0.1)
        self.assertEqual(self.events, ["dump", "abort"])
        logged = self.flushLoggedErrors()
        self.assertEqual(logged, [])

    def test_killLogsThread(self):
        from twisted.logger import globalLogPublisher

        seen = []
        globalLogPublisher.addObserver(seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, seen.append)
        gd = self.guardDog(main=WatchdogConfig(killTimeout=1.0))
        gd.createWatchDog(FakeDispatcher("main_thread"))
        self.stall(gd, 1.1)
        messages = [e for e in seen if "AbortAction" in e.get("log_format", "")]
        self.assertEqual(messages[0]["name"], "main_thread")
        self.assertEqual(self.events, ["dump", "abort"])

    def test_configuredActionOnMegaMiss(self):
        gd = self.guardDog(worker=WatchdogConfig(actions=(("MEGAMISS", AbortAction()),)))
        gd.createWatchDog(FakeDispatcher("worker_0"))
        self.stall(gd, 0.9)
        self.assertEqual(self.events, [])
        self.stall(gd, 0.2)
        self.assertEqual(self.events, ["dump", "abort"])

    def test_multikill(self):
        """
        With 4 workers and threshold 50%, two stuck past multikill_timeout
        abort (max(2, ceil(4 * 0.5)) = 2); one does not.
        """
        config = WatchdogConfig(multikillTimeout=0.5, multikillThreshold=50.0)
        gd = self.guardDog(worker=config)
        dogs = [gd.createWatchDog(FakeDispatcher("worker_%d" % i)) for i in range(4)]

        def stallOnly(stuck, seconds):
            for _ in range(int(round(seconds / 0.1))):
                self.clock.advance(0.1)
                for i, dog in enumerate(dogs):
                    if i not in stuck:
                        dog.touch()
                gd.step()

        stallOnly({0}, 1.0)
        self.assertEqual(self.events, [])
        stallOnly({0, 1}, 0.5)
        self.assertEqual(self.events, [])
        stallOnly({0, 1}, 0.1)
        self.assertEqual(self.events, ["dump", "abort"])

    def test_multikillNeedsTwo(self):
        """The main thread alone can never multikill (it needs 2 threads)."""
        gd = self.guardDog(main=WatchdogConfig(multikillTimeout=0.5))
        gd.createWatchDog(FakeDispatcher("main_thread"))
        self.stall(gd, 2.0)
        self.assertEqual(self.events, [])

    def test_stopWatching(self):
        gd = self.guardDog()
        dog = gd.createWatchDog(FakeDispatcher("worker_0"))
        gd.stopWatching(dog)
        self.stall(gd, 1.0)
        self.assertEqual(self.value("workers.watchdog_miss"), 0)

    def test_pausedProcessCountsNothing(self):
        """
        Envoy 1.40: SIGSTOP / SIGCONT of the whole process gave no miss. A
        scheduled check that runs late re-bases every watchdog.
        """
        gd = self.guardDog(worker=WatchdogConfig(killTimeout=1.0))
        gd.createWatchDog(FakeDispatcher("worker_0"))
        gd._lastTick = self.clock()
        self.clock.advance(5.0)
        gd._tick()
        self.clock.advance(0.1)
        gd._tick()
        self.assertEqual(self.value("workers.watchdog_miss"), 0)
        self.assertEqual(self.events, [])
        # Still not touched after the pause: that one is a real stall.
        self.clock.advance(0.2)
        gd._tick()
        self.assertEqual(self.value("workers.watchdog_miss"), 1)

    def test_loopingCallMode(self):
        """With useThread=False the checks run on the main reactor."""
        reactor = Clock()
        gd = GuardDog(reactor, self.store.shard("guard_dog"), wallClock=self.clock,
                      useThread=False)
        gd.createWatchDog(FakeDispatcher("worker_0"))
        gd.start()
        self.assertEqual(gd.interval, 0.2)
        for _ in range(2):
            self.clock.advance(0.2)
            reactor.advance(0.2)
        self.assertEqual(self.value("workers.watchdog_miss"), 1)
        gd.stop()
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_threadStartStop(self):
        """The checking thread starts and stops promptly."""
        gd = GuardDog(Clock(), self.store.shard("guard_dog"),
                      WatchdogConfig(missTimeout=0.005), WatchdogConfig(missTimeout=0.005))
        gd.startService()
        thread = gd._thread
        self.assertTrue(thread.daemon)
        self.assertTrue(thread.is_alive())
        gd.stopService()
        self.assertFalse(thread.is_alive())
