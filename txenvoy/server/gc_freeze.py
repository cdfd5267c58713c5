# -*- test-case-name: tests.server.test_gc_freeze -*-
"""
Keep the cyclic garbage collector off the long-lived objects.

A proxy's heap is mostly configuration: listeners, route tables, cluster
host sets, compiled protobufs, loaded modules. Every full collection walks
all of it, and a full collection comes every few thousand requests, so
the walk shows up as pauses of tens of milliseconds in the latency tail.
Before the workers start (and again once the server is live, and after
anything replaces a large part of its configuration) L{GarbageFreezer}
collects what is garbage and moves everything that survives into the
collector's permanent generation (C{gc.freeze}), which later collections
do not visit.

The first freeze, just before the workers start serving, collects the
whole heap (some 50 ms for a small config, while no request waits). The
later ones (each accepted xDS update schedules one) collect only the
young generations and freeze the survivors: giving the frozen set back to
the collector (C{gc.unfreeze}) and collecting it would walk the whole
configuration, a pause of 130 to 230 ms for every worker thread after a
thousand clusters; even the objects not frozen yet (what the workers
built for those clusters) take 10 to 40 ms to walk, and the collector's
own collections of the oldest generation look after them between
updates. Configuration an update replaced is freed without it,
by reference counting alone: listeners, route tables, clusters, host sets
and filter factories hold no reference cycles (back-pointers are weak,
C{tests/xds/test_replaced_config.py} pins it), so no collection is needed
to reclaim them.
"""

import gc

from twisted.logger import Logger

log = Logger(namespace="main")

#: Seconds after a request to freeze before freezing: objects made while
#: the server comes up (first pools, first connections) settle first, and
#: several changes close together cost one collection.
SETTLE_SECONDS = 2.0


#: C{gc.collect}'s argument for the youngest two generations: what was
#: allocated since the last few collections, a walk well under a
#: millisecond.
YOUNG_GENERATIONS = 1


#: The youngest generation's threshold once the server is live (Python's
#: default is 700). Connections and requests leave no reference cycles, so
#: what they allocate is freed by reference counting; but a worker with a
#: few dozen requests in flight holds more than 700 young objects at
#: times, and each such moment cost a collection that found nothing (and
#: promoted the survivors toward the costly older collections). Ten times
#: that: about 10% less CPU per new connection per request, each young
#: collection still walking only the objects in flight.
YOUNG_THRESHOLD = 7000


class GarbageFreezer:
    """
    Freezes the long-lived heap some time after each C{schedule()}.

    @ivar freed: how many objects the last freeze's collection freed.
    @ivar freezes: how many freezes ran.
    """

    def __init__(self, reactor, settle=SETTLE_SECONDS, gcModule=gc):
        """
        @param reactor: the main reactor (an C{IReactorTime}).
        @param settle: seconds between the last C{schedule()} and the freeze.
        @param gcModule: the collector (the C{gc} module; a fake in tests).
        """
        self._reactor = reactor
        self._settle = settle
        self._gc = gcModule
        self._call = None
        self.freed = 0
        self.freezes = 0
        self._thresholds = None

    def schedule(self):
        """Freeze C{settle} seconds from now; a pending freeze is pushed back."""
        if self._call is not None and self._call.active():
            self._call.reset(self._settle)
            return
        self._call = self._reactor.callLater(self._settle, self.freezeNow)

    def freezeNow(self):
        """
        Collect the young generations and freeze what survives; the first
        time, the frozen set is given back first and the whole heap is
        collected, once.
        """
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        collector = self._gc
        if not self.freezes:
            collector.unfreeze()
            freed = collector.collect()
            young, middle, old = self._thresholds = collector.get_threshold()
            if 0 < young < YOUNG_THRESHOLD:
                collector.set_threshold(YOUNG_THRESHOLD, middle, old)
        else:
            freed = collector.collect(YOUNG_GENERATIONS)
        # Not gc.get_freeze_count(): it walks the whole frozen list, some
        # 40 to 80 ms for the 400,000 objects of a thousand clusters.
        collector.freeze()
        self.freed = freed
        self.freezes += 1
        log.debug("froze the long-lived objects ({freed} freed)", freed=freed)

    def stop(self):
        """
        Cancel a pending freeze and give the frozen set back to the
        collector: a server embedded in a longer-lived program leaves the
        heap as it found it.
        """
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self.freezes:
            self._gc.unfreeze()
        if self._thresholds is not None:
            self._gc.set_threshold(*self._thresholds)
            self._thresholds = None
