# -*- test-case-name: tests.stats.test_flush -*-
"""
The stats flush (Envoy's C{InstanceImpl::flushStats}): every
C{stats_flush_interval} the store is snapshotted, a new histogram interval
starts, and every sink (L{txenvoy.interfaces.IStatsSink}) gets the snapshot.
Runs on the main reactor.
"""

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from txenvoy.config.fields import durationSeconds
from txenvoy.lifecycle import StartStopService

log = Logger(namespace="main")

#: Envoy's default C{stats_flush_interval}.
DEFAULT_FLUSH_INTERVAL = 5.0


def flushIntervalOf(bootstrap):
    """C{stats_flush_interval} of a Bootstrap in seconds (default 5)."""
    if bootstrap is not None and bootstrap.HasField("stats_flush_interval"):
        return durationSeconds(bootstrap.stats_flush_interval)
    return DEFAULT_FLUSH_INTERVAL


class StatsFlusher(StartStopService):
    """
    Flushes stats to sinks on a timer while it runs as a service.

    @ivar lastIntervals: C{{name: MergedHistogram}} whose C{intervalBuckets}
        hold the values recorded during the last completed interval (what
        the admin prints as "interval"); empty before the first flush.
    @ivar flushes: how many flushes ran.
    """

    def __init__(self, reactor, store, sinks=(), interval=DEFAULT_FLUSH_INTERVAL,
                 beforeFlush=()):
        """
        @param reactor: the main reactor (anything with C{callLater} and
            C{seconds}, e.g. C{task.Clock}).
        @param store: the L{txenvoy.stats.store.StatsStore}.
        @param sinks: L{txenvoy.interfaces.IStatsSink} providers.
        @param interval: seconds between flushes.
        @param beforeFlush: callables run just before each snapshot (to
            refresh gauges such as C{server.uptime}).
        """
        self._reactor = reactor
        self._store = store
        self.sinks = list(sinks)
        self.interval = interval
        self._beforeFlush = list(beforeFlush)
        self.lastIntervals = {}
        self.flushes = 0
        self._call = None

    def addBeforeFlush(self, f):
        """Run C{f()} before every flush."""
        self._beforeFlush.append(f)

    def start(self):
        """Flush every C{interval} seconds, the first time one interval from now."""
        if self._call is not None:
            return
        self._call = LoopingCall(self.flush)
        self._call.clock = self._reactor
        d = self._call.start(self.interval, now=False)
        d.addErrback(lambda f: log.failure("stats flush stopped", f))

    def stop(self):
        """Stop flushing and close the sinks that have a C{stop()}."""
        if self._call is not None:
            if self._call.running:
                self._call.stop()
            self._call = None
        for sink in self.sinks:
            stop = getattr(sink, "stop", None)
            if stop is not None:
                try:
                    stop()
                except Exception:
                    log.failure("stats sink {sink!r} failed to stop", sink=sink)

    def flush(self):
        """
        One flush: snapshot with a new histogram interval, then each sink.
        A failing sink is logged and does not stop the others.

        @return: the L{txenvoy.stats.store.Snapshot} flushed.
        """
        for f in self._beforeFlush:
            try:
                f()
            except Exception:
                log.failure("stats pre-flush callback failed")
        snapshot = self._store.snapshot(resetInterval=True)
        self.lastIntervals = snapshot.histograms
        self.flushes += 1
        for sink in self.sinks:
            try:
                sink.flush(snapshot)
            except Exception:
                log.failure("stats sink {sink!r} failed to flush", sink=sink)
        return snapshot
