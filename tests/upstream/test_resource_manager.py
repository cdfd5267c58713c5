"""
Tests for L{txenvoy.upstream.resource_manager}: one cluster-wide count per
resource, correct when several threads take and give back slots.
"""

import threading

from twisted.trial.unittest import SynchronousTestCase

from txenvoy.upstream.cluster import Thresholds
from txenvoy.upstream.resource_manager import UNLIMITED, Resource, ResourceManager


class ResourceTests(SynchronousTestCase):

    def test_tryAcquireUpToMax(self):
        r = Resource(2)
        self.assertEqual([r.tryAcquire() for _ in range(3)], [True, True, False])
        self.assertEqual((r.current, r.remaining(), r.canCreate()), (2, 0, False))
        r.release()
        self.assertTrue(r.canCreate())
        self.assertEqual(r.remaining(), 1)

    def test_acquirePastMax(self):
        """Envoy's unconditional C{inc()}: remaining never goes below 0."""
        r = Resource(0)
        r.acquire()
        self.assertEqual((r.current, r.remaining()), (1, 0))

    def test_threads(self):
        """
        Threads taking and giving back slots at once never lose an update
        and never pass the limit.
        """
        r = Resource(3)
        seen = []

        def work():
            for _ in range(2000):
                if r.tryAcquire():
                    seen.append(r.current)
                    r.release()

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual(r.current, 0)
        self.assertTrue(seen)
        self.assertLessEqual(max(seen), 3)


class ResourceManagerTests(SynchronousTestCase):

    def test_gauges(self):
        """
        Envoy's gauge names; C{*_open} is 1 while no more may be made,
        C{remaining_*} only with C{track_remaining}.
        """
        m = ResourceManager(Thresholds("HIGH", maxConnections=1, trackRemaining=True))
        gauges = dict(m.gauges())
        self.assertEqual(sorted(gauges), sorted(
            "circuit_breakers.high." + n for n in (
                "cx_open", "rq_pending_open", "rq_open", "rq_retry_open", "cx_pool_open",
                "remaining_cx", "remaining_pending", "remaining_rq", "remaining_retries",
                "remaining_cx_pools")))
        m.connections.tryAcquire()
        self.assertEqual(gauges["circuit_breakers.high.cx_open"].value, 1)
        self.assertEqual(gauges["circuit_breakers.high.remaining_cx"].value, 0)
        self.assertEqual(gauges["circuit_breakers.high.remaining_cx_pools"].value, UNLIMITED)
        plain = ResourceManager(Thresholds("DEFAULT"))
        self.assertEqual(len(plain.gauges()), 5)

    def test_openGaugeOfZeroLimit(self):
        """
        Envoy 1.40 sets C{*_open} when the count changes: a limit of 0
        shows C{rq_pending_open: 0} until something is counted.
        """
        m = ResourceManager(Thresholds("DEFAULT", maxConnections=0))
        gauge = dict(m.gauges())["circuit_breakers.default.cx_open"]
        self.assertEqual(gauge.value, 0)
        m.connections.acquire()
        self.assertEqual(gauge.value, 1)
        m.connections.release()
        self.assertEqual(gauge.value, 1)


class RetryBudgetTests(SynchronousTestCase):

    def test_followsLoad(self):
        """
        Envoy's C{RetryBudgetImpl}: C{budget_percent} of active plus pending
        requests, never below C{min_retry_concurrency}; it replaces
        C{max_retries}.
        """
        m = ResourceManager(Thresholds("DEFAULT", maxRetries=100, retryBudget=(25.0, 1)))
        self.assertEqual(m.retries.max, 1)
        for _ in range(6):
            m.requests.tryAcquire()
        for _ in range(2):
            m.pendingRequests.tryAcquire()
        self.assertEqual(m.retries.max, 2)
        self.assertTrue(m.retries.tryAcquire())
        self.assertTrue(m.retries.tryAcquire())
        self.assertFalse(m.retries.tryAcquire())
        m.requests.release()
        self.assertEqual(m.retries.remaining(), 0)

    def test_gauges(self):
        """
        Envoy 1.40: C{remaining_retries} shows C{max_retries} until the
        budget is consulted, then 0; C{rq_retry_open} compares the count
        with C{max_retries}.
        """
        m = ResourceManager(Thresholds("DEFAULT", maxRetries=1, retryBudget=(0.0, 5),
                                       trackRemaining=True))
        gauges = dict(m.gauges())
        remaining = gauges["circuit_breakers.default.remaining_retries"]
        retryOpen = gauges["circuit_breakers.default.rq_retry_open"]
        self.assertEqual((remaining.value, retryOpen.value), (1, 0))
        self.assertTrue(m.retries.tryAcquire())
        self.assertEqual((remaining.value, retryOpen.value), (0, 1))
