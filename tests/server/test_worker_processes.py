"""
The main process's side of worker processes
(L{txenvoy.server.worker_processes}): when every worker process serves.
"""

from twisted.internet.error import ProcessTerminated
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.server.worker_processes import WorkerProcesses, _Channel
from txenvoy.stats.store import StatsStore


class _Server:
    """What L{WorkerProcesses} reads of the server before it spawns."""

    def __init__(self):
        self.stats = StatsStore()
        self.mainStats = self.stats.shard("main_thread")


class WhenServingTests(SynchronousTestCase):
    """
    A hot restart's new epoch lets the old one drain only once every
    worker process says it serves (Envoy's C{drainParentListeners} runs
    once its workers started), not once they are spawned.
    """

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.processes = WorkerProcesses(self.reactor, _Server(), 2)
        self.channels = [self._channel(0, 100), self._channel(1, 101)]

    def _channel(self, index, pid):
        channel = _Channel(self.processes, index)
        channel.pid = pid
        channel.startedAt = self.reactor.seconds()
        self.processes.channels[index] = channel
        return channel

    def _serving(self, channel):
        self.processes._received(channel, {"serving": {}}, [])

    def test_firesOnceEveryProcessServes(self):
        """Spawned is not enough: each of the M processes must say it serves."""
        d = self.processes.whenServing()
        self.assertNoResult(d)
        self._serving(self.channels[0])
        self.assertNoResult(d)
        self._serving(self.channels[0])
        self.assertNoResult(d)
        self._serving(self.channels[1])
        self.successResultOf(d)
        # Asked again later: at once.
        self.successResultOf(self.processes.whenServing())

    def test_deadBeforeServingWaitsForReplacement(self):
        """
        A worker process that dies before it serves holds the handover back
        until its replacement serves; what the dead one would have said is
        not counted.
        """
        d = self.processes.whenServing()
        self._serving(self.channels[0])
        dead = self.channels[1]
        self.processes._ended(dead, ProcessTerminated(exitCode=1))
        self.assertEqual(self.processes.restarts.value, 1)
        self._serving(dead)
        self.assertNoResult(d)
        self.assertFalse(self.processes.allServing())
        replacement = self._channel(1, 102)
        self._serving(replacement)
        self.successResultOf(d)

    def test_otherMessagesDoNotCount(self):
        """Stats from a worker process that has not said it serves are not enough."""
        d = self.processes.whenServing()
        for channel in self.channels:
            self.processes._received(channel, {"stats": {"counters": {}, "gauges": {}}}, [])
        self.assertNoResult(d)
