"""
Tests for L{txenvoy.testing.dispatcher} and L{txenvoy.testing.cluster}.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from envoy.config.cluster.v3 import cluster_pb2
from txenvoy.interfaces import IDispatcher
from txenvoy.testing import FakeDispatcher, QueueDispatcher, clusterProto, endpoint


class DispatcherTests(SynchronousTestCase):

    def test_provideIDispatcher(self):
        self.assertTrue(verifyObject(IDispatcher, FakeDispatcher(Clock())))
        self.assertTrue(verifyObject(IDispatcher, QueueDispatcher(Clock())))

    def test_fakeRunsAtOnce(self):
        seen = []
        FakeDispatcher(Clock()).post(seen.append, 1)
        self.assertEqual(seen, [1])

    def test_queueRunsWhenTold(self):
        seen = []
        d = QueueDispatcher(Clock())
        d.post(seen.append, 1)
        self.assertEqual(seen, [])
        d.run()
        self.assertEqual(seen, [1])


class ClusterProtoTests(SynchronousTestCase):

    def test_clusterProto(self):
        c = clusterProto("x", [endpoint("10.0.0.1", 80, weight=3)], type="STRICT_DNS")
        self.assertEqual(c.name, "x")
        self.assertEqual(c.type, cluster_pb2.Cluster.STRICT_DNS)
        lbe = c.load_assignment.endpoints[0].lb_endpoints[0]
        self.assertEqual(lbe.load_balancing_weight.value, 3)
