"""Tests for L{txenvoy.server.drain}."""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.server.drain import DrainManager, ShutdownDrain


class DrainManagerTests(SynchronousTestCase):

    def test_notDraining(self):
        self.assertFalse(DrainManager(Clock(), 10).drainClose())

    def test_immediate(self):
        d = DrainManager(Clock(), 10, "immediate")
        d.startDrainSequence()
        self.assertTrue(d.drainClose())

    def test_gradualRisesOverDrainTime(self):
        """Envoy's gradual strategy: P(close) = elapsed / drain time."""
        clock = Clock()
        d = DrainManager(clock, 10, "gradual", rng=lambda: 0.5)
        d.startDrainSequence()
        clock.advance(4)
        self.assertFalse(d.drainClose())
        clock.advance(2)
        self.assertTrue(d.drainClose())


class FindStartDrainTests(SynchronousTestCase):

    def test_throughFiltersAndTls(self):
        """The connection manager behind TLS and a network filter still drains."""
        from txenvoy.server.worker import _findStartDrain

        class Hcm:
            def startDrain(self):
                pass

        hcm = Hcm()

        class Filter:
            next = hcm

        class Tls:
            wrappedProtocol = Filter()

        self.assertEqual(_findStartDrain(Tls()), hcm.startDrain)
        self.assertIsNone(_findStartDrain(object()))


class _Log:
    def __init__(self):
        self.messages = []

    def info(self, format, **kw):
        self.messages.append(format.format(**kw))


class ShutdownDrainTests(SynchronousTestCase):
    """
    L{ShutdownDrain}: the SIGTERM drain ends with the last connection, at
    its deadline, or when cut short, and says what it waits for.
    """

    def setUp(self):
        self.clock = Clock()
        self.open = 2
        self.log = _Log()
        self.result = []

    def drain(self, timeout=25):
        d = ShutdownDrain(self.clock, lambda: self.open, timeout, self.log)
        d.start().addCallback(self.result.append)
        return d

    def test_noConnectionsDoneAtOnce(self):
        self.open = 0
        self.drain()
        self.assertEqual(self.result, [0])
        self.assertEqual(self.log.messages, [])

    def test_saysWhatAndUntilWhen(self):
        self.drain()
        self.assertEqual(len(self.log.messages), 1)
        self.assertIn("draining 2 open connection(s) for up to 25 s, until ",
                      self.log.messages[0])

    def test_doneWhenLastConnectionCloses(self):
        self.drain()
        self.clock.advance(1)
        self.assertEqual(self.result, [])
        self.open = 0
        self.clock.advance(0.05)
        self.assertEqual(self.result, [0])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_deadline(self):
        self.drain(timeout=3)
        for _ in range(100):
            self.clock.advance(0.05)
        self.assertEqual(self.result, [2])
        self.assertIn("drain time over: closing 2 connection(s)", self.log.messages)

    def test_cut(self):
        d = self.drain()
        self.clock.advance(1)
        d.cut()
        d.cut()
        self.assertEqual(self.result, [2])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_zeroTimeoutNeverWaits(self):
        self.drain(timeout=0)
        self.assertEqual(self.result, [2])
