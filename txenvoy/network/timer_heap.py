# -*- test-case-name: tests.network.test_timer_heap -*-
"""
Many timers behind one reactor call: every idle connection of a worker
has an idle timeout, and a Twisted C{DelayedCall} for each costs several
hundred bytes. A L{TimerHeap} keeps one small entry per timer in a heap
and one C{DelayedCall} for the earliest.
"""

import heapq


class TimerHeap:
    """
    Timers that fire C{callback()} at their time, sharing one reactor call.

    Cancelled entries stay in the heap until popped, or until they are
    more than half of it, when the heap is rebuilt without them (as
    Twisted's reactor does for its own cancelled calls).
    """

    __slots__ = ("_reactor", "_heap", "_call", "_seq", "_dead")

    def __init__(self, reactor):
        self._reactor = reactor
        self._heap = []
        self._call = None
        self._seq = 0
        self._dead = 0

    def __len__(self):
        return len(self._heap) - self._dead

    def callLater(self, delay, callback, *arg):
        """
        Call C{callback()} in C{delay} seconds, or C{callback(arg)} given
        one argument.

        @return: a handle for L{cancel}.
        """
        return self.callAt(self._reactor.seconds() + delay, callback, *arg)

    def callAt(self, when, callback, *arg):
        """
        Call C{callback()} at the reactor time C{when}, or C{callback(arg)}
        given one argument: a class's function and its instance instead of
        a bound method held by every timer of an idle connection.

        @return: a handle for L{cancel}.
        """
        self._seq += 1
        # Built whole: extending a list would leave it room to grow.
        entry = [when, self._seq, callback, arg[0]] if arg else [when, self._seq, callback]
        heapq.heappush(self._heap, entry)
        if self._heap[0] is entry:
            self._schedule()
        return entry

    def cancel(self, entry):
        """Forget a timer from L{callLater}; a fired one is ignored."""
        if entry[2] is None:
            return
        entry[2] = None
        self._dead += 1
        if self._dead == len(self._heap):
            del self._heap[:]
            self._dead = 0
            self._schedule()
        elif self._dead > 50 and self._dead > len(self._heap) >> 1:
            self._heap = [e for e in self._heap if e[2] is not None]
            heapq.heapify(self._heap)
            self._dead = 0

    def _schedule(self):
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()
        if self._heap:
            delay = max(0.0, self._heap[0][0] - self._reactor.seconds())
            self._call = self._reactor.callLater(delay, self._fire)

    def _fire(self):
        self._call = None
        heap = self._heap
        now = self._reactor.seconds()
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            callback = entry[2]
            if callback is None:
                self._dead -= 1
                continue
            entry[2] = None
            if len(entry) == 3:
                callback()
            else:
                callback(entry[3])
        if self._call is None:
            self._schedule()


def sharedTimerHeap(reactor):
    """
    The one L{TimerHeap} of C{reactor} (a worker's): connections of every
    listener of that worker share it, so accepting a connection adds an
    entry to a heap instead of a reactor call. It is kept on the reactor
    itself, so it lives exactly as long (a reactor that takes no attribute
    gets a heap of its own each time).
    """
    heap = getattr(reactor, "_txenvoyTimerHeap", None)
    if heap is None:
        heap = TimerHeap(reactor)
        try:
            reactor._txenvoyTimerHeap = heap
        except AttributeError:
            pass
    return heap
