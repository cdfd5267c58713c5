# -*- test-case-name: tests.testing.test_proxy -*-
"""
A whole HTTP connection manager in memory: a real compiled
C{HttpConnectionManager} config (your HTTP filters, the router, routes),
real clusters and connection pools, on a C{MemoryReactorClock}, with
downstream and upstream connections on C{StringTransport}s. Nothing
touches a socket or the global reactor; time moves only when the test
calls L{HttpProxyHarness.advance}.

The short way: one request through the chain, the upstream answering::

    proxy = HttpProxyHarness(httpFilters=[{
        "name": "my.filter",
        "typed_config": {"@type": "type.googleapis.com/xds.type.v3.TypedStruct",
                         "type_url": "type.googleapis.com/my.pkg.ApiKey",
                         "value": {"key": "s3cret"}}}])
    exchange = proxy.request("GET", "/", headers=[("x-api-key", "s3cret")])
    exchange.response.status       # what the client got
    exchange.upstreamRequest       # what reached the upstream, or None

The long way, for streaming, timers and failures: C{connect()} a client,
L{Downstream.send} bytes, take the L{upstream} connection the pool opened
and answer it with L{Upstream.respond}, L{advance} the clock, read
L{stat}s.
"""

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

import yaml

from envoy.config.listener.v3 import listener_components_pb2
from txenvoy.config import registry
from txenvoy.config.context import FactoryContext
from txenvoy.config.loader import parseDict
from txenvoy.config.registry import Category, loadPlugins
from txenvoy.stats.store import StatsStore
from txenvoy.testing.cluster import clusterProto, endpoint
from txenvoy.testing.dispatcher import FakeDispatcher
from txenvoy.testing.http_filter import FakeDownstreamConnection, FakeServer
from txenvoy.upstream.cluster_manager import ClusterManager

__all__ = [
    "ROUTER",
    "Downstream",
    "Exchange",
    "HttpProxyHarness",
    "RecordingAccessLogger",
    "Response",
    "Upstream",
    "UpstreamRequest",
    "parseResponses",
]

_HCM_TYPE = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager"
             ".v3.HttpConnectionManager")
#: The router's C{http_filters} entry.
ROUTER = {"name": "envoy.filters.http.router", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
_DEFAULT_ROUTES = [{"match": {"prefix": "/"}, "route": {"cluster": "origin"}}]
_DEFAULT_RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


class _FakeListenerConfig:
    statPrefix = "listener.127.0.0.1_10000."
    perConnectionBufferLimitBytes = 1024 * 1024


class _FakeListener:
    config = _FakeListenerConfig()


class RecordingAccessLogger:
    """An access logger keeping C{(streamInfo, request, response)} per request."""

    def __init__(self):
        self.entries = []

    def log(self, streamInfo, requestHeaders=None, responseHeaders=None, trailers=None):
        self.entries.append((streamInfo, requestHeaders, responseHeaders))


class _Headers:
    """A message whose C{headers} are C{[(name, value)]} text pairs."""

    def header(self, name):
        """The first value of header C{name}, or C{None}."""
        for n, v in self.headers:
            if n == name:
                return v
        return None


class Response(_Headers):
    """
    A parsed HTTP/1.1 response.

    @ivar status: the status code (int).
    @ivar headers: C{[(name, value)]} text pairs, in order.
    @ivar body: C{bytes}, de-chunked.
    @ivar raw: the bytes it took on the wire.
    """

    def __init__(self, status, headers, body, raw):
        self.status = status
        self.headers = headers
        self.body = body
        self.raw = raw

    def names(self):
        """The header names, in order."""
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


class UpstreamRequest(_Headers):
    """
    What an upstream received: the request line, the headers (text pairs,
    in order) and the body bytes as they came on the wire.
    """

    def __init__(self, raw):
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.requestLine = lines[0]
        self.method, self.path = self.requestLine.split(" ")[:2]
        self.headers = [tuple(x.strip() for x in line.split(":", 1)) for line in lines[1:]]
        self.raw = raw

    def __repr__(self):
        return "<UpstreamRequest %r %r>" % (self.requestLine, self.headers)


class Exchange:
    """
    One request through L{HttpProxyHarness.request}.

    @ivar response: the L{Response} the client got, or C{None}.
    @ivar upstreamRequest: the L{UpstreamRequest} the upstream got, or
        C{None} when the request never left the proxy (a local reply).
    @ivar downstream: the L{Downstream}, for more.
    """

    def __init__(self, response, upstreamRequest, downstream):
        self.response = response
        self.upstreamRequest = upstreamRequest
        self.downstream = downstream


class Downstream:
    """One client connection to the connection manager."""

    def __init__(self, harness, cm, transport):
        self.harness = harness
        self.cm = cm
        self.transport = transport
        self._read = 0

    def send(self, data):
        """The client sends C{data}."""
        self.cm.dataReceived(data)

    def written(self):
        """Every byte written to the client so far."""
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
        """Whether the proxy closed (or is closing) the connection."""
        return self.transport.disconnecting

    def lose(self):
        """The client goes away."""
        self.cm.connectionLost(Failure(ConnectionDone()))


class Upstream:
    """One connection the pool opened to an upstream host."""

    def __init__(self, harness, factory):
        self.harness = harness
        self.factory = factory
        self.protocol = None
        self.transport = None

    def connect(self):
        """The connection is established."""
        self.protocol = self.factory.buildProtocol(None)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        return self

    def fail(self):
        """The connection is refused."""
        self.factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))

    def received(self):
        """What the proxy wrote to the upstream so far."""
        return self.transport.value()

    def request(self):
        """The request head the upstream got: (request line, [(name, value)])."""
        head = self.transport.value().split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
        return head[0], [tuple(x.strip() for x in line.split(":", 1)) for line in head[1:]]

    def respond(self, data):
        """The upstream sends C{data}."""
        self.protocol.dataReceived(data)

    def close(self):
        """The upstream closes the connection."""
        self.protocol.connectionLost(Failure(ConnectionDone()))


class HttpProxyHarness:
    """
    A compiled connection manager with clusters, on a C{MemoryReactorClock}.

    By default the clusters are C{origin} (127.0.0.1:8080), C{dead}
    (127.0.0.1:8081, for a test to fail) and C{empty} (no hosts), and every
    path routes to C{origin}.

    @param routes: the virtual host's C{routes}, as a list of dicts or YAML.
    @param httpFilters: the C{http_filters} before the router (dicts), or
        C{filters}: the whole list, router included.
    @param hcm: more C{HttpConnectionManager} fields, merged over the
        defaults (C{stat_prefix: ingress}).
    @param clusters: C{Cluster} messages (see L{txenvoy.testing.clusterProto}).
    @param testCase: if given, the harness stops at the test's cleanup.
    @ivar reactor: the C{MemoryReactorClock}.
    @ivar store: the L{StatsStore}.
    @ivar accessLog: a L{RecordingAccessLogger} (unless C{accessLog=False}).
    """

    def __init__(self, routes=None, httpFilters=(), hcm=None, filters=None, clusters=None,
                 server=None, accessLog=True, testCase=None):
        loadPlugins()
        self.reactor = MemoryReactorClock()
        self.store = StatsStore()
        protos = clusters if clusters is not None else [
            clusterProto("origin", [endpoint("127.0.0.1", 8080)], connect_timeout="1s"),
            clusterProto("dead", [endpoint("127.0.0.1", 8081)], connect_timeout="1s"),
            clusterProto("empty", [], connect_timeout="1s"),
        ]
        self.clusterManager = ClusterManager(self.reactor, self.store,
                                             self.store.shard("main_thread"), protos)
        if testCase is not None:
            testCase.addCleanup(self.stop)
        self.dispatcher = FakeDispatcher(self.reactor, "worker_0", self.store)
        self.dispatcher.clusterManager = self.clusterManager.createThreadLocal(self.dispatcher)
        self.server = server if server is not None else FakeServer(self.store)
        if routes is None:
            routes = _DEFAULT_ROUTES
        elif isinstance(routes, str):
            routes = yaml.safe_load(routes)
        typed = {"@type": _HCM_TYPE, "stat_prefix": "ingress",
                 "route_config": {"name": "r", "virtual_hosts": [
                     {"name": "v", "domains": ["*"], "routes": routes}]},
                 "http_filters": list(httpFilters) + (filters if filters is not None
                                                      else [ROUTER])}
        typed.update(hcm or {})
        message = parseDict(
            {"name": "envoy.filters.network.http_connection_manager", "typed_config": typed},
            listener_components_pb2.Filter())
        context = FactoryContext(self.reactor, self.store, clusterManager=self.clusterManager,
                                 server=self.server, path="listener")
        self.config = registry.createExtension(Category.NETWORK_FILTER, message, context,
                                               "listener.filters[0]")
        self.accessLog = RecordingAccessLogger()
        if accessLog:
            self.config.accessLogs = tuple(self.config.accessLogs) + (self.accessLog,)
        self._upstreams = 0

    def stop(self):
        """Stop the clusters' timers."""
        self.clusterManager.stop()

    def connect(self, **kw):
        """
        A new client connection (C{peer=(ip, port)}, C{local=...},
        C{ssl=FakeSsl(...)}).

        @return: a L{Downstream}.
        """
        connection = FakeDownstreamConnection(self.dispatcher, **kw)
        connection.listener = _FakeListener()
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

    def request(self, method="GET", path="/", headers=(), body=b"", authority="example.com",
                upstreamResponse=_DEFAULT_RESPONSE):
        """
        Send one request on a new connection; if it reaches an upstream,
        the upstream answers C{upstreamResponse} (raw HTTP/1.1 bytes).

        @param headers: C{(name, value)} text pairs.
        @return: an L{Exchange}.
        """
        lines = ["%s %s HTTP/1.1" % (method, path)]
        if authority is not None:
            lines.append("host: " + authority)
        lines.extend("%s: %s" % h for h in headers)
        if body and not any(n.lower() in ("content-length", "transfer-encoding")
                            for n, _ in headers):
            lines.append("content-length: %d" % (len(body),))
        down = self.connect()
        down.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        upstreamRequest = None
        if len(self.upstreams()) > self._upstreams:
            up = self.upstream()
            upstreamRequest = UpstreamRequest(up.received())
            up.respond(upstreamResponse)
        found = down.responses()
        return Exchange(found[-1] if found else None, upstreamRequest, down)

    def stat(self, name):
        """A counter or gauge value summed over shards (0 when absent)."""
        snapshot = self.store.snapshot()
        if name in snapshot.counters:
            return snapshot.counters[name]
        return snapshot.gauges.get(name, 0)

    def advance(self, seconds):
        """Move the clock: timers (timeouts, retries, rate limits) fire."""
        self.reactor.advance(seconds)
