"""
Fakes shared by the upstream tests: dispatchers, cluster config builders
and a recording callbacks object; plus a check that the fakes are
faithful to the interfaces they stand in for.
"""

from google.protobuf import json_format
from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
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
from txenvoy.stats.store import StatsStore


@implementer(IDispatcher)
class FakeDispatcher:
    """A dispatcher whose post() runs the function at once."""

    def __init__(self, reactor, name="worker_0", store=None):
        self.reactor = reactor
        self.name = name
        self.store = store if store is not None else StatsStore()
        self.stats = self.store.shard(name)

    def post(self, f, *args, **kwargs):
        f(*args, **kwargs)


class QueueDispatcher(FakeDispatcher):
    """A dispatcher whose post() queues until L{run} (a worker's queue)."""

    def __init__(self, *a, **kw):
        FakeDispatcher.__init__(self, *a, **kw)
        self.queue = []

    def post(self, f, *args, **kwargs):
        self.queue.append((f, args, kwargs))

    def run(self):
        queue, self.queue = self.queue, []
        for f, args, kwargs in queue:
            f(*args, **kwargs)


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


def endpoint(ip, port, weight=None, healthStatus=None, hostname=None):
    """One C{lb_endpoints} entry as a dict."""
    e = {"endpoint": {"address": {"socket_address": {"address": ip, "port_value": port}}}}
    if hostname:
        e["endpoint"]["hostname"] = hostname
    if weight is not None:
        e["load_balancing_weight"] = weight
    if healthStatus is not None:
        e["health_status"] = healthStatus
    return e


def clusterProto(name="c1", endpoints=(), priorityGroups=None, **fields):
    """
    A C{Cluster} message built from proto3-JSON-style fields.

    @param endpoints: C{lb_endpoints} dicts for one locality at priority 0.
    @param priorityGroups: or C{[(priority, [lb_endpoints])]}.
    """
    d = {"name": name}
    groups = priorityGroups
    if groups is None:
        groups = [(0, list(endpoints))] if endpoints else []
    if groups or "load_assignment" not in fields:
        d["load_assignment"] = {
            "cluster_name": name,
            "endpoints": [
                dict({"lb_endpoints": eps}, **({"priority": p} if p else {}))
                for p, eps in groups
            ],
        }
    d.update(fields)
    return json_format.ParseDict(d, cluster_pb2.Cluster())


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
