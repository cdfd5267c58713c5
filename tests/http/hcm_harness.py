"""
An in-memory HTTP connection manager for tests: a real compiled
C{HttpConnectionManager} config, real clusters and connection pools on a
L{MemoryReactorClock}, downstream and upstream connections on
L{StringTransport}s.

    h = Harness(self, routes=..., hcm={...})
    down = h.connect()
    down.send(b"GET / HTTP/1.1\\r\\nhost: a\\r\\n\\r\\n")
    up = h.upstream()                 # the connection the pool opened
    up.respond(b"HTTP/1.1 200 OK\\r\\ncontent-length: 2\\r\\n\\r\\nok")
    response = down.response()
"""

import yaml
from google.protobuf import json_format
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from envoy.config.listener.v3 import listener_components_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2,
)
from envoy.extensions.access_loggers.stream.v3 import stream_pb2  # noqa: F401
from txenvoy.config import registry
from txenvoy.config.context import FactoryContext
from txenvoy.config.registry import Category, loadPlugins
from txenvoy.network.stream_info import StreamInfo
from txenvoy.stats.store import StatsStore
from txenvoy.upstream.cluster_manager import ClusterManager

from tests.upstream.test_fakes import FakeDispatcher, clusterProto, endpoint

HCM_TYPE = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager"
            ".v3.HttpConnectionManager")
ROUTER = {"name": "envoy.filters.http.router", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}

DEFAULT_ROUTES = """
- match: {prefix: "/direct"}
  direct_response: {status: 200, body: {inline_string: "hello"}}
- match: {path: "/old"}
  redirect: {path_redirect: "/new"}
- match: {prefix: "/dead/"}
  route: {cluster: dead}
- match: {prefix: "/empty/"}
  route: {cluster: empty}
- match: {prefix: "/byheader/"}
  route: {cluster_header: x-cluster}
- match: {prefix: "/timeout/"}
  route: {cluster: origin, timeout: 2s}
- match: {prefix: "/retry/"}
  route:
    cluster: origin
    retry_policy: {retry_on: "5xx,connect-failure", num_retries: 2}
- match: {prefix: "/pertry/"}
  route:
    cluster: origin
    timeout: 10s
    retry_policy: {retry_on: 5xx, num_retries: 1, per_try_timeout: 1s}
- match: {prefix: "/rewrite/"}
  route: {cluster: origin, prefix_rewrite: "/x/", host_rewrite_literal: up.internal}
- match: {prefix: "/o/"}
  route: {cluster: origin}
"""

_loaded = []


class FakeServer:
    """What the connection manager asks of the server: whether to drain."""

    def __init__(self):
        self.draining = False

    def drainClose(self):
        return self.draining


class FakeListenerConfig:
    statPrefix = "listener.127.0.0.1_10000."
    perConnectionBufferLimitBytes = 1024 * 1024


class FakeListener:
    config = FakeListenerConfig()


class FakeConnection:
    """The parts of a L{txenvoy.network.connection.ServerConnection} filters use."""

    def __init__(self, dispatcher, peer=("10.1.2.3", 5555), local=("127.0.0.1", 10000),
                 ssl=None):
        self.dispatcher = dispatcher
        self.listener = FakeListener()
        self.streamInfo = info = StreamInfo(dispatcher.reactor)
        info.downstreamRemoteAddress = info.downstreamDirectRemoteAddress = peer
        info.downstreamLocalAddress = local
        info.connectionId = 7
        self.remoteAddress = peer
        self.localAddress = local
        self.ssl = ssl


class RecordingLogger:
    """An access logger keeping C{(streamInfo, request, response)}."""

    def __init__(self):
        self.entries = []

    def log(self, streamInfo, requestHeaders=None, responseHeaders=None, trailers=None):
        self.entries.append((streamInfo, requestHeaders, responseHeaders))


class Response:
    """A parsed HTTP/1.1 response."""

    def __init__(self, status, headers, body, raw):
        self.status = status
        self.headers = headers
        self.body = body
        self.raw = raw

    def header(self, name):
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def names(self):
        return [n for n, _ in self.headers]

    def __repr__(self):
        return "<Response %d %r %r>" % (self.status, self.headers, self.body)


def parseResponses(data):
    """
    Split bytes written downstream into L{Response}s (content-length,
    chunked and 1xx heads; a body without framing takes the rest).
    """
    out = []
    while data:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            break
        head = data[:end].decode("latin-1").split("\r\n")
        status = int(head[0].split(" ")[1])
        headers = []
        for line in head[1:]:
            n, _, v = line.partition(":")
            headers.append((n.strip(), v.strip()))
        rest = data[end + 4:]
        lower = dict(headers)
        body = b""
        if 100 <= status < 200 or status in (204, 304):
            pass
        elif lower.get("transfer-encoding") == "chunked":
            chunks = []
            while True:
                line, _, rest = rest.partition(b"\r\n")
                size = int(line, 16)
                if size == 0:
                    rest = rest[2:]
                    break
                chunks.append(rest[:size])
                rest = rest[size + 2:]
            body = b"".join(chunks)
        elif "content-length" in lower:
            size = int(lower["content-length"])
            body, rest = rest[:size], rest[size:]
        else:
            body, rest = rest, b""
        raw = data[:len(data) - len(rest)]
        out.append(Response(status, headers, body, raw))
        data = rest
    return out


class Downstream:
    """One client connection to the connection manager."""

    def __init__(self, harness, cm, transport):
        self.harness = harness
        self.cm = cm
        self.transport = transport
        self._read = 0

    def send(self, data):
        self.cm.dataReceived(data)

    def written(self):
        return self.transport.value()

    def responses(self):
        """Every response written so far."""
        return parseResponses(self.transport.value())

    def response(self):
        """The one response written since the last call (asserted)."""
        data = self.transport.value()[self._read:]
        self._read = len(self.transport.value())
        found = parseResponses(data)
        assert len(found) == 1, found
        return found[0]

    @property
    def closed(self):
        return self.transport.disconnecting

    def lose(self):
        """The client goes away."""
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure
        self.cm.connectionLost(Failure(ConnectionDone()))


class Upstream:
    """One connection the pool opened to the origin."""

    def __init__(self, harness, factory):
        self.harness = harness
        self.factory = factory
        self.protocol = None
        self.transport = None

    def connect(self):
        self.protocol = self.factory.buildProtocol(None)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        return self

    def fail(self):
        from twisted.internet.error import ConnectionRefusedError
        from twisted.python.failure import Failure
        self.factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))

    def received(self):
        """What the proxy wrote to the origin so far."""
        return self.transport.value()

    def request(self):
        """The request head the origin got: (request line, [(name, value)])."""
        head = self.transport.value().split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
        return head[0], [tuple(x.strip() for x in line.split(":", 1)) for line in head[1:]]

    def respond(self, data):
        self.protocol.dataReceived(data)

    def close(self):
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure
        self.protocol.connectionLost(Failure(ConnectionDone()))


class Harness:
    """
    A compiled connection manager with an origin cluster (C{origin},
    127.0.0.1:8080), a cluster nothing answers (C{dead}) and one with no
    hosts (C{empty}).
    """

    def __init__(self, testCase, routes=DEFAULT_ROUTES, hcm=None, filters=None,
                 accessLog=True, server=None, clusters=None, extraFilters=()):
        if not _loaded:
            loadPlugins()
            _loaded.append(True)
        self.reactor = MemoryReactorClock()
        self.store = StatsStore()
        protos = clusters if clusters is not None else [
            clusterProto("origin", [endpoint("127.0.0.1", 8080)], connect_timeout="1s"),
            clusterProto("dead", [endpoint("127.0.0.1", 8081)], connect_timeout="1s"),
            clusterProto("empty", [], connect_timeout="1s"),
        ]
        self.clusterManager = ClusterManager(self.reactor, self.store,
                                             self.store.shard("main_thread"), protos)
        testCase.addCleanup(self.clusterManager.stop)
        self.dispatcher = FakeDispatcher(self.reactor, "worker_0", self.store)
        self.dispatcher.clusterManager = self.clusterManager.createThreadLocal(self.dispatcher)
        self.server = server if server is not None else FakeServer()
        typed = {"@type": HCM_TYPE, "stat_prefix": "ingress",
                 "route_config": {"name": "r", "virtual_hosts": [
                     {"name": "v", "domains": ["*"], "routes": yaml.safe_load(routes)}]},
                 "http_filters": list(extraFilters) + (filters if filters is not None
                                                       else [ROUTER])}
        typed.update(hcm or {})
        message = json_format.ParseDict(
            {"name": "envoy.filters.network.http_connection_manager", "typed_config": typed},
            listener_components_pb2.Filter())
        context = FactoryContext(self.reactor, self.store, clusterManager=self.clusterManager,
                                 server=self.server, path="listener")
        self.config = registry.createExtension(Category.NETWORK_FILTER, message, context,
                                               "listener.filters[0]")
        self.logger = RecordingLogger()
        if accessLog:
            self.config.accessLogs = tuple(self.config.accessLogs) + (self.logger,)
        self._upstreams = 0

    def connect(self, **kw):
        connection = FakeConnection(self.dispatcher, **kw)
        cm = self.config.buildFilter(connection, None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", *connection.remoteAddress),
                                    hostAddress=IPv4Address("TCP", *connection.localAddress))
        cm.makeConnection(transport)
        return Downstream(self, cm, transport)

    def upstreams(self):
        """Every connection attempt the proxy made: C{(host, port, factory)}."""
        return [(c[0], c[1], c[2]) for c in self.reactor.tcpClients]

    def upstream(self, connect=True):
        """The next connection attempt, established (or not)."""
        host, port, factory = self.upstreams()[self._upstreams]
        self._upstreams += 1
        up = Upstream(self, factory)
        up.port = port
        if connect:
            up.connect()
        return up

    def stat(self, name):
        """A counter or gauge value summed over shards (0 when absent)."""
        snapshot = self.store.snapshot()
        if name in snapshot.counters:
            return snapshot.counters[name]
        return snapshot.gauges.get(name, 0)

    def advance(self, seconds):
        self.reactor.advance(seconds)

