# -*- test-case-name: tests.server.test_guarddog -*-
"""
Envoy's watchdog (C{GuardDog} and C{WatchDog}): notices a dispatcher thread
that stopped running its event loop, counts it, and past C{kill_timeout}
dumps every thread's stack and aborts the process.

Each dispatcher (the main thread, every worker) touches its L{WatchDog}
from a C{LoopingCall} on its own reactor. A touch is a counter increment
written only by that thread. The L{GuardDog} remembers, per watchdog, the
count it last saw and when ("last check-in", on the guard dog's own
clock); a watchdog whose count has not moved for longer than
C{miss_timeout} is a miss, longer than C{megamiss_timeout} a mega miss.
Each is counted once per stall, as Envoy does: a 0.5 s stall with the
default 200 ms gives one miss; a 2 s stall one miss and one mega miss.
Ages are measured from the guard dog's own check-ins rather than from
timestamps written by the watched threads, and a check that itself runs
late (the guard dog was paused too) checks every watchdog in afresh: so a
SIGSTOP / SIGCONT of the whole process counts nothing (every thread paused
together), as observed with Envoy.

Why the checks run on a dedicated daemon thread and not on the main
reactor: the main thread has a watchdog too, and a blocked main reactor
could never notice that it is blocked. Envoy likewise runs its guard dogs
on threads of their own. The thread sleeps on an C{Event} between checks,
so L{GuardDog.stop} is prompt. It writes its stats into the shard given to
the guard dog, which no other thread writes. (Threads only pause each
other while one holds the GIL, which a stuck C extension might; then no
Python-level watchdog can help, Envoy's C++ one can.)

In the server's service tree the guard dog is one child service
(L{GuardDog.startService} watches the main dispatcher; each worker calls
L{GuardDog.watch} when it starts and L{GuardDog.unwatch} when it stops), and
it keeps this shape on purpose: touches stay C{LoopingCall}s on each
watched reactor, and the checker keeps its own thread, so that a blocked
main reactor is still seen.

With C{useThread=False} the same checks run from a C{LoopingCall} on the
main reactor, for tests and for embedding where a thread is unwelcome; the
main thread's own stalls are then invisible.

Stats (Envoy 1.40 names): C{main_thread.watchdog_miss},
C{main_thread.watchdog_mega_miss}, C{workers.watchdog_miss},
C{workers.watchdog_mega_miss}, and per thread
C{server.<thread>.watchdog_miss} / C{server.<thread>.watchdog_mega_miss}.
"""

import faulthandler
import math
import os
import random as _random
import threading
import time

import attr
from twisted.internet import task
from twisted.logger import Logger

from txenvoy.config import messages
from txenvoy.config.errors import ConfigError, UnsupportedField
from txenvoy.config.fields import checkFields, durationSeconds
from txenvoy.config.registry import typeNameOf
from txenvoy.lifecycle import StartStopService

_log = Logger()

MAIN_THREAD = "main_thread"
WORKERS = "workers"

KILL = "KILL"
MULTIKILL = "MULTIKILL"
MEGAMISS = "MEGAMISS"
MISS = "MISS"
_EVENTS = {0: None, 1: KILL, 2: MULTIKILL, 3: MEGAMISS, 4: MISS}

_ABORT_ACTION = "envoy.watchdog.v3.AbortActionConfig"


def _dumpStacks():
    # File descriptor 2, not sys.stderr: twistd may have replaced the
    # latter with a log redirector that has no file descriptor.
    faulthandler.dump_traceback(file=2, all_threads=True)


@attr.s(frozen=True)
class AbortAction:
    """
    Envoy's C{envoy.watchdog.abort_action}: log, dump every thread's stack,
    abort the process (SIGABRT, exit status 134). Envoy signals the stuck
    thread and waits C{wait_duration} before it panics; Python cannot
    interrupt one thread, so txenvoy dumps all stacks and aborts at once,
    and C{wait_duration} is accepted but unused.
    """

    waitDuration = attr.ib(default=0.0)

    def run(self, guardDog, event, dogs):
        """
        @param event: C{KILL}, C{MULTIKILL}, C{MEGAMISS} or C{MISS}.
        @param dogs: the stuck L{WatchDog}s.
        """
        for dog in dogs:
            _log.critical(
                "Watchdog AbortAction terminating thread with tid {tid} ({name}), "
                "after a {event} event.",
                tid=dog.threadId, name=dog.name, event=event)
        guardDog._dumpStacks()
        guardDog._abort()


@attr.s(frozen=True)
class WatchdogConfig:
    """
    One C{envoy.config.bootstrap.v3.Watchdog}, in seconds.

    @ivar actions: C{((event, action), ...)} configured by the user; the
        abort for C{KILL} / C{MULTIKILL} is added by the L{GuardDog}.
    """

    missTimeout = attr.ib(default=0.2)
    megamissTimeout = attr.ib(default=1.0)
    killTimeout = attr.ib(default=0.0)
    multikillTimeout = attr.ib(default=0.0)
    multikillThreshold = attr.ib(default=0.0)
    actions = attr.ib(default=())

    @classmethod
    def fromProto(cls, proto, path="watchdog", random=_random.random):
        """
        @param proto: a C{Watchdog} message, or C{None} for the defaults.
        @param random: returns a float in [0, 1), for
            C{max_kill_timeout_jitter}.
        @raise UnsupportedField: for an action other than the abort action.
        """
        if proto is None:
            return cls()
        checkFields(proto, ("actions", "miss_timeout", "megamiss_timeout", "kill_timeout",
                            "max_kill_timeout_jitter", "multikill_timeout",
                            "multikill_threshold"), path)

        def duration(name, default):
            if proto.HasField(name):
                return durationSeconds(getattr(proto, name))
            return default

        killTimeout = duration("kill_timeout", 0.0)
        jitter = duration("max_kill_timeout_jitter", 0.0)
        if killTimeout > 0 and jitter > 0:
            # Envoy adds a random jitter so that a fleet does not abort in
            # lockstep.
            killTimeout += random() * jitter
        threshold = 0.0
        if proto.HasField("multikill_threshold"):
            threshold = proto.multikill_threshold.value
            if not 0 <= threshold <= 100:
                raise ConfigError(
                    "%s.multikill_threshold.value: value must be inside range [0, 100]"
                    % (path,))
        actions = []
        for i, action in enumerate(proto.actions):
            actionPath = "%s.actions[%d]" % (path, i)
            event = _EVENTS.get(action.event)
            typed = action.config
            if not typed.HasField("typed_config"):
                raise messages.noImplementation(typed.name, actionPath + ".config")
            typeName = typeNameOf(typed.typed_config)
            if typeName != _ABORT_ACTION:
                raise UnsupportedField(
                    actionPath + ".config.typed_config",
                    "watchdog action %s" % (typeName,))
            from envoy.watchdog.v3 import abort_action_pb2

            message = abort_action_pb2.AbortActionConfig()
            typed.typed_config.Unpack(message)
            wait = (durationSeconds(message.wait_duration)
                    if message.HasField("wait_duration") else 0.0)
            if event is not None:
                actions.append((event, AbortAction(wait)))
        return cls(
            missTimeout=duration("miss_timeout", 0.2),
            megamissTimeout=duration("megamiss_timeout", 1.0),
            killTimeout=killTimeout,
            multikillTimeout=duration("multikill_timeout", 0.0),
            multikillThreshold=threshold,
            actions=tuple(actions),
        )

    @property
    def loopInterval(self):
        """
        How often the guard dog checks (Envoy's C{loop_interval_}): the
        smallest of the enabled timeouts.
        """
        candidates = [self.missTimeout, self.megamissTimeout]
        if self.killTimeout > 0:
            candidates.append(self.killTimeout)
        if self.multikillTimeout > 0:
            candidates.append(self.multikillTimeout)
        return max(min(candidates), 0.001)


def watchdogConfigsFromBootstrap(bootstrap):
    """
    @return: C{(mainThreadConfig, workerConfig)} from a C{Bootstrap}'s
        C{watchdogs} or deprecated C{watchdog}.
    @raise ConfigError: when both are set, as Envoy refuses.
    """
    if bootstrap.HasField("watchdogs"):
        if bootstrap.HasField("watchdog"):
            raise ConfigError("Only one of watchdog or watchdogs should be set!")
        w = bootstrap.watchdogs
        main = WatchdogConfig.fromProto(
            w.main_thread_watchdog if w.HasField("main_thread_watchdog") else None,
            "watchdogs.main_thread_watchdog")
        worker = WatchdogConfig.fromProto(
            w.worker_watchdog if w.HasField("worker_watchdog") else None,
            "watchdogs.worker_watchdog")
        return main, worker
    if bootstrap.HasField("watchdog"):
        config = WatchdogConfig.fromProto(bootstrap.watchdog, "watchdog")
        return config, config
    return WatchdogConfig(), WatchdogConfig()


class WatchDog:
    """
    The watchdog of one dispatcher: touched from a timer on that
    dispatcher's reactor.

    @ivar name: the dispatcher's name (C{main_thread}, C{worker_0}).
    @ivar touches: how many times it was touched; written only by the
        dispatcher's thread.
    @ivar threadId: the native id of the dispatcher's thread, once started.
    """

    def __init__(self, dispatcher, interval):
        self.name = dispatcher.name
        self.touches = 0
        self.threadId = None
        self._dispatcher = dispatcher
        self._interval = interval
        self._call = None

    def touch(self):
        """Record that the dispatcher's loop is running."""
        self.touches += 1

    def startWatchdog(self):
        """
        Start touching from a C{LoopingCall} on the dispatcher's reactor;
        posted to the dispatcher, so any thread may call this.
        """
        self._onDispatcher(self._start)

    def stopWatchdog(self):
        """Stop touching (posted to the dispatcher)."""
        self._onDispatcher(self._stop)

    def _onDispatcher(self, f):
        post = getattr(self._dispatcher, "post", None)
        if post is None:
            f()
        else:
            post(f)

    def _start(self):
        if self._call is not None:
            return
        self.threadId = threading.get_native_id()
        self._call = task.LoopingCall(self.touch)
        self._call.clock = self._dispatcher.reactor
        self._call.start(self._interval, now=True)

    def _stop(self):
        call, self._call = self._call, None
        if call is not None and call.running:
            call.stop()


class _WatchedDog:
    """The guard dog's record of one watchdog."""

    def __init__(self, dog, now, shard):
        self.dog = dog
        self.seenTouches = dog.touches
        self.lastCheckin = now
        self.lastAlertTime = None
        self.missAlerted = False
        self.megamissAlerted = False
        prefix = "server.%s." % (dog.name,)
        self.missCounter = shard.counter(prefix + "watchdog_miss")
        self.megamissCounter = shard.counter(prefix + "watchdog_mega_miss")


class _Pack:
    """One of Envoy's two guard dogs: main thread or workers."""

    def __init__(self, name, config, shard):
        self.name = name
        self.config = config
        self.dogs = []
        self.missCounter = shard.counter(name + ".watchdog_miss")
        self.megamissCounter = shard.counter(name + ".watchdog_mega_miss")
        actions = {}
        for event, action in config.actions:
            actions.setdefault(event, []).append(action)
        # As in Envoy, KILL and MULTIKILL end with an abort after whatever
        # was configured for them.
        if config.killTimeout > 0:
            actions.setdefault(KILL, []).append(AbortAction())
        if config.multikillTimeout > 0:
            actions.setdefault(MULTIKILL, []).append(AbortAction())
        self.actions = actions


class GuardDog(StartStopService):
    """
    Watches every dispatcher's L{WatchDog} (Envoy's two C{GuardDogImpl}s,
    main thread and workers, in one object).

    @param mainReactor: the main reactor (runs the checks only with
        C{useThread=False}).
    @param stats: the L{txenvoy.stats.store.StatsShard} made for the guard
        dog: only its checks write to it.
    @param mainConfig: the L{WatchdogConfig} of the main thread.
    @param workerConfig: the L{WatchdogConfig} of the workers.
    @param abort: ends the process (C{os.abort}).
    @param dumpStacks: writes every thread's stack to stderr.
    @param wallClock: a monotonic clock, in seconds.
    @param mainDispatcher: when given, its watchdog is started and
        stopped with the service (Envoy's C{InstanceImpl::run}).
    """

    name = "guard_dog"

    def __init__(self, mainReactor, stats, mainConfig=None, workerConfig=None,
                 abort=os.abort, dumpStacks=_dumpStacks, wallClock=time.monotonic,
                 useThread=True, mainDispatcher=None):
        self.mainDispatcher = mainDispatcher
        self._reactor = mainReactor
        self._shard = stats
        self._abort = abort
        self._dumpStacks = dumpStacks
        self._clock = wallClock
        self._useThread = useThread
        self._lock = threading.Lock()
        self._packs = {
            MAIN_THREAD: _Pack(MAIN_THREAD, mainConfig or WatchdogConfig(), stats),
            WORKERS: _Pack(WORKERS, workerConfig or WatchdogConfig(), stats),
        }
        self.interval = min(p.config.loopInterval for p in self._packs.values())
        self._thread = None
        self._stopEvent = threading.Event()
        self._loop = None
        self._lastTick = None
        self._started = []

    def _packFor(self, name):
        return self._packs[MAIN_THREAD if name == MAIN_THREAD else WORKERS]

    def createWatchDog(self, dispatcher):
        """
        Register the watchdog of C{dispatcher} (with C{.name} and
        C{.reactor}); call L{WatchDog.startWatchdog} on the result.

        It is touched every half check interval, as in Envoy.
        """
        pack = self._packFor(dispatcher.name)
        dog = WatchDog(dispatcher, pack.config.loopInterval / 2)
        with self._lock:
            pack.dogs.append(_WatchedDog(dog, self._clock(), self._shard))
        return dog

    def stopWatching(self, dog):
        """Forget a watchdog (its dispatcher is going away)."""
        with self._lock:
            for pack in self._packs.values():
                pack.dogs = [w for w in pack.dogs if w.dog is not dog]

    def watch(self, dispatcher):
        """
        Create, register and start the watchdog of C{dispatcher}; it is
        stopped by L{unwatch}, or with the guard dog service.

        @return: the L{WatchDog}.
        """
        dog = self.createWatchDog(dispatcher)
        self._started.append(dog)
        dog.startWatchdog()
        return dog

    def unwatch(self, dog):
        """Stop and forget a watchdog made by L{watch}."""
        self.stopWatching(dog)
        if dog in self._started:
            self._started.remove(dog)
        dog.stopWatchdog()

    def step(self):
        """
        Check every watchdog once (Envoy's C{GuardDogImpl::step}).
        """
        now = self._clock()
        for pack in self._packs.values():
            with self._lock:
                dogs = list(pack.dogs)
            self._stepPack(pack, dogs, now)

    def _tick(self):
        """
        One scheduled check. When the check itself comes later than it
        should by more than a miss timeout, the guard dog was paused too
        (SIGSTOP, a frozen container or VM): nobody can be blamed, so every
        watchdog is checked in afresh instead of counted or killed.
        """
        now = self._clock()
        last, self._lastTick = self._lastTick, now
        slack = min(p.config.missTimeout for p in self._packs.values())
        if last is not None and now - last > self.interval + slack:
            _log.info("watchdog checks resumed after {late:.3f}s; not counting the pause",
                      late=now - last - self.interval)
            with self._lock:
                for pack in self._packs.values():
                    for watched in pack.dogs:
                        watched.seenTouches = watched.dog.touches
                        watched.lastCheckin = now
            return
        self.step()

    def _stepPack(self, pack, dogs, now):
        config = pack.config
        required = max(2, math.ceil(config.multikillThreshold / 100.0 * len(dogs)))
        misses = []
        megamisses = []
        multikill = []
        for watched in dogs:
            touches = watched.dog.touches
            if touches != watched.seenTouches:
                watched.seenTouches = touches
                watched.lastCheckin = now
                continue
            lastCheckin = watched.lastCheckin
            delta = now - lastCheckin
            if watched.lastAlertTime is not None and watched.lastAlertTime < lastCheckin:
                # Touched again since the last alert: a new stall may alert.
                watched.missAlerted = False
                watched.megamissAlerted = False
            if delta > config.missTimeout and not watched.missAlerted:
                pack.missCounter.inc()
                watched.missCounter.inc()
                watched.lastAlertTime = lastCheckin
                watched.missAlerted = True
                misses.append(watched.dog)
            if delta > config.megamissTimeout and not watched.megamissAlerted:
                pack.megamissCounter.inc()
                watched.megamissCounter.inc()
                watched.lastAlertTime = lastCheckin
                watched.megamissAlerted = True
                megamisses.append(watched.dog)
            if config.killTimeout > 0 and delta > config.killTimeout:
                self._run(pack, KILL, [watched.dog])
            if config.multikillTimeout > 0 and delta > config.multikillTimeout:
                multikill.append(watched.dog)
                if len(multikill) >= required:
                    _log.error("Watchdog MULTIKILL as {count} threads are stuck.",
                               count=len(multikill))
                    self._run(pack, MULTIKILL, list(multikill))
        if megamisses:
            self._run(pack, MEGAMISS, megamisses)
        if misses:
            self._run(pack, MISS, misses)

    def _run(self, pack, event, dogs):
        for action in pack.actions.get(event, ()):
            action.run(self, event, dogs)

    # -- lifecycle -----------------------------------------------------

    def start(self):
        """Start checking, every L{interval} seconds."""
        if self._thread is not None or self._loop is not None:
            return
        self._lastTick = self._clock()
        if self._useThread:
            self._stopEvent.clear()
            self._thread = threading.Thread(
                target=self._runThread, name="guarddog_thread", daemon=True)
            self._thread.start()
        else:
            self._loop = task.LoopingCall(self._tick)
            self._loop.clock = self._reactor
            self._loop.start(self.interval, now=False)

    def stop(self):
        """Stop checking; the watchdogs' own timers stop with their reactors."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stopEvent.set()
            thread.join(5)
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()

    def _runThread(self):
        while not self._stopEvent.wait(self.interval):
            try:
                self._tick()
            except Exception:
                _log.failure("watchdog check failed")

    def startService(self):
        StartStopService.startService(self)
        if self.mainDispatcher is not None:
            self.watch(self.mainDispatcher)

    def stopService(self):
        for dog in list(self._started):
            self.unwatch(dog)
        return StartStopService.stopService(self)


__all__ = [
    "AbortAction",
    "GuardDog",
    "WatchDog",
    "WatchdogConfig",
    "watchdogConfigsFromBootstrap",
]
