"""
Tests for L{txenvoy.network.timer_heap}.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.network.timer_heap import TimerHeap


class TimerHeapTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.timers = TimerHeap(self.clock)
        self.fired = []

    def test_firesInOrderWithOneReactorCall(self):
        """Timers fire at their own times; the reactor holds one call."""
        self.timers.callLater(5, lambda: self.fired.append("b"))
        self.timers.callLater(2, lambda: self.fired.append("a"))
        self.timers.callLater(9, lambda: self.fired.append("c"))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(1.9)
        self.assertEqual(self.fired, [])
        self.clock.advance(0.1)
        self.assertEqual(self.fired, ["a"])
        self.clock.advance(3)
        self.assertEqual(self.fired, ["a", "b"])
        self.clock.advance(4)
        self.assertEqual(self.fired, ["a", "b", "c"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_argument(self):
        """
        A timer given an argument calls its callback with it, in order with
        timers given none; cancelled, it does not.
        """
        self.timers.callLater(2, self.fired.append, "a")
        self.timers.callLater(3, lambda: self.fired.append("b"))
        cancelled = self.timers.callLater(1, self.fired.append, "x")
        self.timers.callAt(4, self.fired.append, "c")
        self.timers.cancel(cancelled)
        self.clock.advance(5)
        self.assertEqual(self.fired, ["a", "b", "c"])

    def test_cancel(self):
        """A cancelled timer never fires; with none left, no reactor call."""
        a = self.timers.callLater(2, lambda: self.fired.append("a"))
        self.timers.callLater(3, lambda: self.fired.append("b"))
        self.timers.cancel(a)
        self.clock.advance(3)
        self.assertEqual(self.fired, ["b"])
        c = self.timers.callLater(1, lambda: self.fired.append("c"))
        self.timers.cancel(c)
        self.timers.cancel(c)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.timers), 0)

    def test_rearmFromCallback(self):
        """A callback may arm a new timer, as an idle check that finds activity does."""
        def again():
            self.fired.append(self.clock.seconds())
            if len(self.fired) < 3:
                self.timers.callLater(4, again)
        self.timers.callLater(4, again)
        self.clock.pump([4, 4, 4, 4])
        self.assertEqual(self.fired, [4, 8, 12])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_compactsCancelled(self):
        """Cancelled entries are dropped once they are most of the heap."""
        live = self.timers.callLater(100, lambda: None)
        for i in range(60):
            self.timers.cancel(self.timers.callLater(10 + i, lambda: None))
        self.assertLess(len(self.timers._heap), 60)
        self.assertEqual(len(self.timers), 1)
        self.timers.cancel(live)
        self.assertEqual(self.clock.getDelayedCalls(), [])
