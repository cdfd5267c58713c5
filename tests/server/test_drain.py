"""Tests for L{txenvoy.server.drain}."""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.server.drain import DrainManager


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
