"""Tests for L{txenvoy.server.signals}."""

import signal

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.server.signals import SignalHandlers


class _Server:
    def __init__(self):
        self.exitNowCalls = 0

    def exitNow(self):
        self.exitNowCalls += 1


class _Reactor(MemoryReactorClock):
    """A running memory reactor whose C{stop} is counted."""

    def __init__(self):
        MemoryReactorClock.__init__(self)
        self.running = True
        self.stops = 0

    def stop(self):
        self.stops += 1
        self.running = False


class SignalHandlersTests(SynchronousTestCase):

    def setUp(self):
        self.reactor = _Reactor()
        self.server = _Server()
        self.reopened = []
        self.handlers = SignalHandlers(self.reactor, self.server,
                                       lambda: self.reopened.append(True))

    def test_sigintExitsAtOnce(self):
        """Envoy: SIGINT exits at once, no drain."""
        self.handlers.interrupt()
        self.assertEqual((self.server.exitNowCalls, self.reactor.stops), (1, 1))

    def test_sigtermDrains(self):
        """SIGTERM stops the reactor (which drains) without cutting the drain."""
        self.handlers.terminate()
        self.assertEqual((self.server.exitNowCalls, self.reactor.stops), (0, 1))

    def test_secondSigtermExitsAtOnce(self):
        self.handlers.terminate()
        self.handlers.terminate()
        self.assertEqual((self.server.exitNowCalls, self.reactor.stops), (1, 1))

    def test_sigintWhileDraining(self):
        self.handlers.terminate()
        self.handlers.interrupt()
        self.assertEqual((self.server.exitNowCalls, self.reactor.stops), (1, 1))

    def test_sigusr1Reopens(self):
        self.handlers.userOne()
        self.assertEqual(self.reopened, [True])

    def test_installPostsToTheReactor(self):
        """Handlers only post; the work runs on the reactor."""
        installed = {}
        posted = []
        self.reactor.callFromThread = lambda f, *a: posted.append(f)
        self.handlers.install(lambda num, handler: installed.__setitem__(num, handler))
        self.assertEqual(set(installed), {signal.SIGINT, signal.SIGTERM, signal.SIGHUP,
                                          signal.SIGUSR1})
        installed[signal.SIGTERM](signal.SIGTERM, None)
        self.assertEqual(posted, [self.handlers.terminate])
        self.assertEqual(self.reactor.stops, 0)
