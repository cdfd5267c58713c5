"""Tests for L{txenvoy.lifecycle}."""

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.lifecycle import StartStopService


class _Part(StartStopService):
    def __init__(self):
        self.calls = []
        self.stopped = defer.Deferred()

    def start(self):
        self.calls.append("start")

    def stop(self):
        self.calls.append("stop")
        return self.stopped


class StartStopServiceTests(SynchronousTestCase):

    def test_startAndStopAreTheParts(self):
        """The service runs the part's C{start()} and returns its C{stop()}."""
        part = _Part()
        part.startService()
        self.assertTrue(part.running)
        d = part.stopService()
        self.assertFalse(part.running)
        self.assertEqual(part.calls, ["start", "stop"])
        self.assertNoResult(d)
        part.stopped.callback(None)
        self.successResultOf(d)
