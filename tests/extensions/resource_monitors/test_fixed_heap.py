"""
Tests for L{txenvoy.extensions.resource_monitors.fixed_heap}: the
process's resident size against C{max_heap_size_bytes}.
"""

import resource

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from txenvoy.extensions.resource_monitors.fixed_heap import FixedHeapMonitor, residentBytes
from txenvoy.server.overload_manager import IResourceMonitor


class Callbacks:
    def __init__(self):
        self.results = []

    def onSuccess(self, pressure):
        self.results.append(("ok", pressure))

    def onFailure(self, reason):
        self.results.append(("failed", reason))


class FixedHeapTests(SynchronousTestCase):

    def test_residentBytesIsThisProcessRss(self):
        """
        /proc/self/statm's resident pages, in bytes: between a few MB and
        the process's peak RSS (getrusage, in KiB on Linux).
        """
        rss = residentBytes()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.assertGreater(rss, 4 << 20)
        self.assertLessEqual(rss, peak + (1 << 20))

    def test_pressureIsRssOverMax(self):
        monitor = FixedHeapMonitor(1000, measure=lambda: 250)
        verifyObject(IResourceMonitor, monitor)
        callbacks = Callbacks()
        monitor.updateResourceUsage(callbacks)
        self.assertEqual(callbacks.results, [("ok", 0.25)])

    def test_unreadableProcFails(self):
        """Without /proc the update fails (counted as failed_updates)."""
        monitor = FixedHeapMonitor(
            1000, measure=lambda: residentBytes("/nonexistent/statm"))
        callbacks = Callbacks()
        monitor.updateResourceUsage(callbacks)
        self.assertEqual(callbacks.results[0][0], "failed")
        self.assertIsInstance(callbacks.results[0][1], OSError)
