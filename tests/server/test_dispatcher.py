"""Tests for L{txenvoy.server.dispatcher}."""

import threading

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from txenvoy.interfaces import IDispatcher
from txenvoy.server.dispatcher import CONNECTION_ID_RANGE, Dispatcher
from txenvoy.server.worker import newReactor
from txenvoy.stats.store import StatsStore


class DispatcherTests(SynchronousTestCase):

    def test_provides(self):
        verifyObject(IDispatcher, Dispatcher(Clock(), "main_thread", StatsStore().shard("m")))

    def test_postRunsOnTheReactorThread(self):
        """C{post} hands the call to the dispatcher's reactor (C{callFromThread})."""
        reactor = newReactor()
        self.addCleanup(reactor.waker.connectionLost, None)
        d = Dispatcher(reactor, "worker_0", StatsStore().shard("worker_0"))
        ran = []
        d.post(ran.append, 1)
        self.assertEqual(ran, [])
        reactor.runUntilCurrent()
        self.assertEqual(ran, [1])

    def test_connectionIdsPerRange(self):
        """
        Each dispatcher hands out ids from its own range, so ids made on
        different worker threads at once never collide and need no lock.
        """
        store = StatsStore()
        first = Dispatcher(Clock(), "worker_0", store.shard("worker_0"), idRange=0)
        second = Dispatcher(Clock(), "worker_1", store.shard("worker_1"), idRange=1)
        self.assertEqual([first.nextConnectionId() for _ in range(3)], [1, 2, 3])
        self.assertEqual(second.nextConnectionId(), CONNECTION_ID_RANGE + 1)

    def test_threadsDoNotCollide(self):
        """Two threads each taking 20000 ids from their own dispatcher: all distinct."""
        store = StatsStore()
        dispatchers = [Dispatcher(Clock(), "worker_%d" % i, store.shard("worker_%d" % i),
                                  idRange=i) for i in range(2)]
        got = [[], []]

        def take(i):
            for _ in range(20000):
                got[i].append(dispatchers[i].nextConnectionId())

        threads = [threading.Thread(target=take, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(len(set(got[0]) | set(got[1])), 40000)
