# -*- test-case-name: tests.testing.test_dispatcher -*-
"""
Dispatchers for tests: one whose C{post} runs the function at once, one
that queues until told to run, both on a reactor the test drives
(C{Clock}, C{MemoryReactorClock}).
"""

from zope.interface import implementer

from txenvoy.interfaces import IDispatcher
from txenvoy.stats.store import StatsStore

__all__ = ["FakeDispatcher", "QueueDispatcher"]


@implementer(IDispatcher)
class FakeDispatcher:
    """
    A worker's dispatcher whose C{post()} runs the function at once.

    @ivar reactor: the reactor its timers use.
    @ivar store: the L{StatsStore}; C{stats} is this worker's shard of it.
    """

    def __init__(self, reactor, name="worker_0", store=None):
        self.reactor = reactor
        self.name = name
        self.store = store if store is not None else StatsStore()
        self.stats = self.store.shard(name)
        self._lastConnectionId = 0
        self.internalListeners = {}

    def post(self, f, *args, **kwargs):
        f(*args, **kwargs)

    def nextConnectionId(self):
        self._lastConnectionId += 1
        return self._lastConnectionId


class QueueDispatcher(FakeDispatcher):
    """A dispatcher whose C{post()} queues until L{run}, as a worker's queue."""

    def __init__(self, *a, **kw):
        FakeDispatcher.__init__(self, *a, **kw)
        self.queue = []

    def post(self, f, *args, **kwargs):
        self.queue.append((f, args, kwargs))

    def run(self):
        """Run what was posted so far."""
        queue, self.queue = self.queue, []
        for f, args, kwargs in queue:
            f(*args, **kwargs)
