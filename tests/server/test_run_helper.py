"""Tests for L{txenvoy.server.run_helper}."""

from twisted.application.service import Service
from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.server.run_helper import RunHelper


class _Worker(Service):
    def __init__(self, name, events):
        self.name = name
        self.events = events

    def startService(self):
        Service.startService(self)
        self.events.append(("start", self.name))

    def stopService(self):
        Service.stopService(self)
        self.events.append(("stop", self.name))


class _ClusterManager:
    def __init__(self):
        self.initialized = defer.Deferred()


class _ListenerManager:
    def __init__(self, events):
        self.events = events

    def startWorkers(self, workers):
        self.events.append(("listeners", tuple(w.name for w in workers)))


class RunHelperTests(SynchronousTestCase):

    def setUp(self):
        self.events = []
        self.cm = _ClusterManager()
        self.workers = [_Worker("worker_0", self.events), _Worker("worker_1", self.events)]
        self.helper = RunHelper(self.cm, _ListenerManager(self.events), self.workers,
                                onLive=lambda: self.events.append(("live",)),
                                beforeWorkers=lambda: self.events.append(("before",)))

    def test_workersWaitForInitialization(self):
        """
        Envoy's RunHelper: workers start, and listeners are added to them,
        only once the cluster manager has initialized.
        """
        self.helper.startService()
        self.assertEqual(self.events, [])
        self.assertNoResult(self.helper.initialized)
        self.cm.initialized.callback(None)
        self.assertEqual(self.events, [
            ("before",), ("start", "worker_0"), ("start", "worker_1"),
            ("listeners", ("worker_0", "worker_1")), ("live",)])
        self.successResultOf(self.helper.initialized)

    def test_stopInReverse(self):
        self.helper.startService()
        self.cm.initialized.callback(None)
        del self.events[:]
        self.successResultOf(self.helper.stopService())
        self.assertEqual(self.events, [("stop", "worker_1"), ("stop", "worker_0")])

    def test_stoppedBeforeInitialization(self):
        """Stopped while clusters still warm up: no worker ever starts."""
        self.helper.startService()
        self.successResultOf(self.helper.stopService())
        self.cm.initialized.callback(None)
        self.assertEqual(self.events, [])
        self.assertFalse(any(w.running for w in self.workers))
