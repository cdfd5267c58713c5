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
