"""
Fakes shared by the upstream tests: L{txenvoy.testing}'s dispatchers and
cluster config builders, a DNS resolver and a recording callbacks object;
plus a check that the fakes are faithful to the interfaces they stand in
for.
"""

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from envoy.config.cluster.v3 import cluster_pb2
# Imported for their descriptors: typed configs in the fixtures name them.
from envoy.extensions.load_balancing_policies.least_request.v3 import (  # noqa: F401
    least_request_pb2,
)
from envoy.extensions.network.dns_resolver.getaddrinfo.v3 import (  # noqa: F401
    getaddrinfo_dns_resolver_pb2,
)
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2  # noqa: F401
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2  # noqa: F401
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from envoy.extensions.upstreams.tcp.v3 import tcp_protocol_options_pb2  # noqa: F401
from txenvoy.interfaces import IDispatcher
from txenvoy.testing import (  # noqa: F401 (the upstream tests import them from here)
    FakeDispatcher,
    QueueDispatcher,
    clusterProto,
    endpoint,
)


class FakeResolver:
    """A DNS resolver whose answers the test gives."""

    def __init__(self):
        self.pending = []

    def resolve(self, name, family):
        d = defer.Deferred()
        self.pending.append((name, family, d))
        return d

    def answer(self, ips):
        name, family, d = self.pending.pop(0)
        d.callback(list(ips))
        return name, family

    def fail(self, why="no such host"):
        name, family, d = self.pending.pop(0)
        d.errback(Exception(why))
        return name, family


class Recorder:
    """Upstream connection callbacks that record what they were told."""

    def __init__(self):
        self.events = []
        self.data = []
        self.connection = None

    def onUpstreamConnected(self, upstream):
        self.connection = upstream
        self.events.append("connected")

    def onUpstreamConnectFailed(self, upstream, reason):
        self.events.append(("failed", reason))

    def onUpstreamData(self, data):
        self.data.append(data)

    def onUpstreamReadClosed(self):
        self.events.append("read-closed")

    def onUpstreamClosed(self, reason):
        self.events.append(("closed", reason))


def stat(store, name):
    """A counter or gauge value summed over shards."""
    kind = store.kindOf(name)
    if kind == "counter":
        return store.counterValue(name)
    if kind == "gauge":
        return store.gaugeValue(name)
    raise KeyError(name)


class FakesTests(SynchronousTestCase):
    """The fakes provide what they stand in for."""

    def test_dispatcherProvidesIDispatcher(self):
        from twisted.internet.task import Clock

        self.assertTrue(verifyObject(IDispatcher, FakeDispatcher(Clock())))
        self.assertTrue(verifyObject(IDispatcher, QueueDispatcher(Clock())))

    def test_clusterProto(self):
        c = clusterProto("x", [endpoint("10.0.0.1", 80, weight=3)], type="STRICT_DNS")
        self.assertEqual(c.name, "x")
        self.assertEqual(c.type, cluster_pb2.Cluster.STRICT_DNS)
        lbe = c.load_assignment.endpoints[0].lb_endpoints[0]
        self.assertEqual(lbe.load_balancing_weight.value, 3)
