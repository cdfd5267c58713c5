"""
Tests for L{txenvoy.server.gc_freeze}: the long-lived heap is frozen once
the server has settled; only the first freeze collects the whole heap, and
stop gives the frozen set back.
"""

import gc

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from txenvoy.server.gc_freeze import SETTLE_SECONDS, GarbageFreezer


class FakeCollector:
    """
    The parts of the C{gc} module the freezer uses, recording each call.
    (No C{get_freeze_count}: it walks the whole frozen heap.)
    """

    def __init__(self):
        self.calls = []
        self.threshold = (700, 10, 10)

    def get_threshold(self):
        return self.threshold

    def set_threshold(self, *threshold):
        self.threshold = threshold

    def unfreeze(self):
        self.calls.append("unfreeze")

    def collect(self, generation=2):
        self.calls.append("collect" if generation == 2 else "collect(%d)" % (generation,))
        return 3

    def freeze(self):
        self.calls.append("freeze")


class GarbageFreezerTests(TestCase):
    def setUp(self):
        self.clock = Clock()
        self.gc = FakeCollector()
        self.freezer = GarbageFreezer(self.clock, gcModule=self.gc)

    def test_freezesAfterSettling(self):
        """
        Nothing happens at C{schedule()}; C{settle} seconds later the frozen
        set is given back, garbage collected, and the survivors frozen.
        """
        self.freezer.schedule()
        self.clock.advance(SETTLE_SECONDS - 0.1)
        self.assertEqual(self.gc.calls, [])
        self.clock.advance(0.1)
        self.assertEqual(self.gc.calls, ["unfreeze", "collect", "freeze"])
        self.assertEqual((self.freezer.freed, self.freezer.freezes), (3, 1))

    def test_scheduleCoalesces(self):
        """
        Changes close together cost one freeze, C{settle} seconds after the
        last of them.
        """
        self.freezer.schedule()
        self.clock.advance(SETTLE_SECONDS - 0.5)
        self.freezer.schedule()
        self.clock.advance(SETTLE_SECONDS - 0.1)
        self.assertEqual(self.gc.calls, [])
        self.clock.advance(0.1)
        self.assertEqual(self.freezer.freezes, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_laterFreezesLeaveTheFrozenHeap(self):
        """
        After the first, a freeze collects only the young generations: the
        frozen heap (the configuration) is never walked again, and what an
        update replaced is freed by reference counting.
        """
        self.freezer.freezeNow()
        del self.gc.calls[:]
        self.freezer.schedule()
        self.clock.advance(SETTLE_SECONDS)
        self.assertEqual(self.gc.calls, ["collect(1)", "freeze"])
        self.assertEqual(self.freezer.freezes, 2)

    def test_freezeNowCancelsPending(self):
        """C{freezeNow} freezes at once and leaves no timer behind."""
        self.freezer.schedule()
        self.freezer.freezeNow()
        self.assertEqual(self.gc.calls, ["unfreeze", "collect", "freeze"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stopGivesTheHeapBack(self):
        """
        C{stop} cancels a pending freeze and, once something was frozen,
        unfreezes: an embedding program's heap is left as it was found.
        """
        self.freezer.schedule()
        self.freezer.stop()
        self.assertEqual((self.gc.calls, self.clock.getDelayedCalls()), ([], []))
        self.freezer.freezeNow()
        self.freezer.stop()
        self.assertEqual(self.gc.calls[-1], "unfreeze")

    def test_youngThresholdRaisedWhileLive(self):
        """
        Once live, the youngest generation is collected every
        L{YOUNG_THRESHOLD} allocations instead of Python's 700 (what a
        worker has in flight is not garbage); C{stop} puts back the
        thresholds it found, and a higher one is left as it is.
        """
        from txenvoy.server.gc_freeze import YOUNG_THRESHOLD
        self.freezer.freezeNow()
        self.assertEqual(self.gc.threshold, (YOUNG_THRESHOLD, 10, 10))
        self.freezer.freezeNow()
        self.assertEqual(self.gc.threshold, (YOUNG_THRESHOLD, 10, 10))
        self.freezer.stop()
        self.assertEqual(self.gc.threshold, (700, 10, 10))
        higher = FakeCollector()
        higher.threshold = (50000, 20, 20)
        freezer = GarbageFreezer(self.clock, gcModule=higher)
        freezer.freezeNow()
        self.assertEqual(higher.threshold, (50000, 20, 20))
        freezer.stop()
        self.assertEqual(higher.threshold, (50000, 20, 20))

    def test_realCollector(self):
        """
        With the real C{gc} module, what exists at the freeze is frozen and
        C{stop} leaves nothing frozen.
        """
        freezer = GarbageFreezer(self.clock)
        self.addCleanup(freezer.stop)
        before = gc.get_threshold()
        freezer.freezeNow()
        self.assertGreater(gc.get_freeze_count(), 0)
        freezer.stop()
        self.assertEqual(gc.get_freeze_count(), 0)
        self.assertEqual(gc.get_threshold(), before)
