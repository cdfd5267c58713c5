# -*- test-case-name: tests.server.test_drain -*-
"""
The drain manager (Envoy's C{DrainManagerImpl}).

While draining, filters that can close gracefully ask L{DrainManager.drainClose}
whether to close the connection they are on: the HTTP connection manager
then answers with C{connection: close}. With the gradual strategy the
chance of a yes rises linearly over C{--drain-time-s}, so clients move away
over the whole window instead of all at once; with the immediate strategy
it is always yes.

Workers read L{DrainManager.draining} without a lock: it only ever goes
from False to True, and a stale read costs one more request on a connection.
"""

import random
import time

from twisted.internet import defer


class DrainManager:
    """
    @ivar draining: True once a drain started.
    """

    def __init__(self, clock, drainTimeS, strategy="gradual", rng=random.random):
        self._clock = clock
        self._drainTime = float(drainTimeS)
        self._gradual = strategy == "gradual"
        self._rng = rng
        self.draining = False
        self._start = None

    def startDrainSequence(self):
        """Start draining (idempotent)."""
        if not self.draining:
            self._start = self._clock.seconds()
            self.draining = True

    def drainClose(self):
        """
        @return: whether the caller should close its connection now.
        """
        if not self.draining:
            return False
        if not self._gradual or self._drainTime <= 0:
            return True
        elapsed = self._clock.seconds() - self._start
        return self._rng() < (elapsed / self._drainTime)


class ShutdownDrain:
    """
    The wait before exit (txenvoy's addition: Envoy drops in-flight work on
    SIGTERM): done as soon as the last connection closes, at the deadline,
    or when cut short (a second signal), whichever comes first. Says what it
    waits for and until when, since a silent wait looks like a hang.

    @ivar done: a C{Deferred} that fires with the number of connections
        left open (0 when every one closed by itself).
    """

    def __init__(self, clock, countConnections, timeoutS, log, pollInterval=0.05):
        self._clock = clock
        self._count = countConnections
        self._timeout = float(timeoutS)
        self._log = log
        self._poll = pollInterval
        self._call = None
        self.done = defer.Deferred()

    def start(self):
        """Start waiting; returns L{done}."""
        self._deadline = self._clock.seconds() + self._timeout
        left = self._count()
        if left and self._timeout > 0:
            self._log.info(
                "draining {n} open connection(s) for up to {timeout:g} s, until {until}; "
                "exiting as soon as they close", n=left, timeout=self._timeout,
                until=time.strftime("%H:%M:%S", time.localtime(self._deadline)))
            self._call = self._clock.callLater(self._poll, self._check)
        else:
            self._finish(left)
        return self.done

    def _check(self):
        self._call = None
        left = self._count()
        if not left:
            self._log.info("drain complete: no connection left")
            self._finish(0)
        elif self._clock.seconds() >= self._deadline:
            self._log.info("drain time over: closing {n} connection(s)", n=left)
            self._finish(left)
        else:
            self._call = self._clock.callLater(self._poll, self._check)

    def cut(self):
        """Stop waiting now (idempotent)."""
        if not self.done.called:
            left = self._count()
            if left:
                self._log.info("drain cut short: closing {n} connection(s)", n=left)
            self._finish(left)

    def _finish(self, left):
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if not self.done.called:
            self.done.callback(left)
