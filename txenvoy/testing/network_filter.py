# -*- test-case-name: tests.testing.test_network_filter -*-
"""
One network filter on a fake connection: its config compiled through the
registry, the filter built in front of a recording next filter, bytes
written to a C{StringTransport}, time on a C{Clock}::

    from txenvoy.testing import NetworkFilterHarness

    harness = NetworkFilterHarness({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
        "stat_prefix": "tcp", "rules": {...}})
    conn = harness.connect(remote="10.0.0.1")
    conn.send(b"hello")
    conn.next.data           # what reached the next filter
    conn.closed              # whether the filter closed the connection
    harness.counter("tcp.rbac.denied")
"""

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface import implementer

import yaml

from envoy.config.listener.v3 import listener_components_pb2
from txenvoy.config import registry
from txenvoy.config.context import FactoryContext
from txenvoy.config.loader import parseDict
from txenvoy.config.registry import Category, loadPlugins
from txenvoy.network.stream_info import StreamInfo
from txenvoy.server.dispatcher import Dispatcher
from txenvoy.stats.store import StatsStore
from txenvoy.testing.http_filter import FakeServer

__all__ = [
    "FakeNetworkConnection",
    "NetworkFilterHarness",
    "RecordingProtocol",
    "compileNetworkFilter",
]

_PATH = "static_resources.listeners[0].filter_chains[0].filters[0]"


@implementer(IHalfCloseableProtocol)
class RecordingProtocol(Protocol):
    """
    The next filter of the chain: records what it is given.

    @ivar made: whether the connection reached it.
    @ivar data: the chunks of bytes it received.
    @ivar readClosed: whether it saw the read side close.
    @ivar writeClosed: whether it saw the write side close.
    @ivar lost: whether it saw the connection end.
    @ivar lostReason: the reason it was given then, or C{None}.
    """

    def __init__(self):
        self.data = []
        self.made = False
        self.readClosed = False
        self.writeClosed = False
        self.lost = False
        self.lostReason = None

    def connectionMade(self):
        self.made = True

    def dataReceived(self, data):
        self.data.append(data)

    def readConnectionLost(self):
        self.readClosed = True

    def writeConnectionLost(self):
        self.writeClosed = True

    def connectionLost(self, reason):
        self.lost = True
        self.lostReason = reason


class FakeNetworkConnection:
    """The parts of a downstream connection network filters read."""

    def __init__(self, dispatcher, remote=("127.0.0.1", 40000), local=("127.0.0.1", 10000)):
        self.dispatcher = dispatcher
        self.streamInfo = StreamInfo(dispatcher.reactor)
        self.remoteAddress = remote
        self.localAddress = local
        self.streamInfo.downstreamRemoteAddress = remote
        self.streamInfo.downstreamDirectRemoteAddress = remote
        self.streamInfo.downstreamLocalAddress = local
        self.ssl = None


def compileNetworkFilter(typedConfig, context, name=None):
    """
    Compile a network filter's config through the registry, as a listener
    does.

    @param typedConfig: the C{typed_config} as a dict (with its C{@type}),
        or its YAML text.
    @return: the filter's factory (L{txenvoy.interfaces.INetworkFilterFactory}).
    @raise txenvoy.config.errors.ConfigError: as C{--mode validate} would.
    """
    loadPlugins()
    if isinstance(typedConfig, str):
        typedConfig = yaml.safe_load(typedConfig)
    message = parseDict(
        {"name": name or typedConfig["@type"].rsplit("/", 1)[-1], "typed_config": typedConfig},
        listener_components_pb2.Filter())
    return registry.createExtension(Category.NETWORK_FILTER, message, context, _PATH)


class _Connected:
    """One connection through the filter (see L{NetworkFilterHarness.connect})."""

    def __init__(self, filter_, transport, next_, connection):
        self.filter = filter_
        self.transport = transport
        self.next = next_
        self.connection = connection

    def send(self, data):
        """The client sends C{data}."""
        self.filter.dataReceived(data)

    def written(self):
        """What the filter chain wrote back to the client."""
        return self.transport.value()

    @property
    def closed(self):
        """Whether the filter closed (or is closing) the connection."""
        return self.transport.disconnecting


class NetworkFilterHarness:
    """
    A network filter's config, built once, and connections through it on
    worker dispatchers sharing one L{StatsStore} and one C{Clock}.

    @ivar factory: the compiled filter factory.
    @ivar clock: the C{Clock}; C{clock.advance(seconds)} fires timers.
    @ivar store: the L{StatsStore}.
    """

    def __init__(self, typedConfig, workers=1):
        self.clock = Clock()
        self.store = StatsStore()
        self.server = FakeServer(self.store)
        context = FactoryContext(self.clock, self.store, server=self.server, path=_PATH)
        self.factory = compileNetworkFilter(typedConfig, context)
        self.dispatchers = [
            Dispatcher(self.clock, "worker_%d" % i, self.store.shard("worker_%d" % i))
            for i in range(workers)]

    def connect(self, remote="127.0.0.1", worker=0, nextProtocol=None):
        """
        A new connection from C{remote} on worker C{worker}, through the
        filter to C{nextProtocol} (a L{RecordingProtocol} by default).
        """
        next_ = nextProtocol if nextProtocol is not None else RecordingProtocol()
        connection = FakeNetworkConnection(self.dispatchers[worker], (remote, 40000))
        f = self.factory.buildFilter(connection, next_)
        transport = StringTransport()
        f.makeConnection(transport)
        return _Connected(f, transport, next_, connection)

    def counter(self, name):
        """A counter's value summed over workers (0 when absent)."""
        return self.store.snapshot().counters.get(name, 0)

    def gauge(self, name):
        """A gauge's value summed over workers (0 when absent)."""
        return self.store.snapshot().gauges.get(name, 0)
