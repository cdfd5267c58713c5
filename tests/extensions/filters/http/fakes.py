"""
Fakes for HTTP filter tests: a recording L{IStreamFilterCallbacks}, a
downstream connection, routes compiled from YAML, a runtime with chosen
values, and a helper compiling a filter from its YAML the way the
connection manager does (through the registry, with the C{http.<prefix>.}
stat prefix in the context).

    config = compileFilter(FAULT, "abort: {http_status: 503, percentage: {numerator: 100}}")
    callbacks = FakeCallbacks(config)
    f = config.createFilter(callbacks)
    f.decodeHeaders(request("GET", "/"), True)
    callbacks.localReplies[0].code        # 503
"""

import os

import yaml
from google.protobuf import json_format, struct_pb2
from twisted.internet.task import Clock
from zope.interface import implementer

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from txenvoy.config import registry
from txenvoy.config.context import FactoryContext
from txenvoy.config.loader import parseDict
from txenvoy.config.registry import Category, loadPlugins
from txenvoy.http.filter import IStreamFilterCallbacks, filterRoles
from txenvoy.http.headers import HeaderMap, RequestHeaders, ResponseHeaders
from txenvoy.http.route_table import RouteTable
from txenvoy.network.stream_info import StreamInfo
from txenvoy.runtime import Runtime
from txenvoy.server.dispatcher import Dispatcher
from txenvoy.stats.store import StatsStore

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))))
EXAMPLES = os.path.join(os.path.dirname(REPO), "shared", "envoy-examples")

#: Where the connection manager puts an HTTP filter's config.
PATH = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0]"
STAT_PREFIX = "http.ingress_http."

FAULT = "envoy.extensions.filters.http.fault.v3.HTTPFault"
HEALTH_CHECK = "envoy.extensions.filters.http.health_check.v3.HealthCheck"
CORS = "envoy.extensions.filters.http.cors.v3.Cors"
LOCAL_RATELIMIT = "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
BUFFER = "envoy.extensions.filters.http.buffer.v3.Buffer"
HEADER_TO_METADATA = "envoy.extensions.filters.http.header_to_metadata.v3.Config"
RBAC = "envoy.extensions.filters.http.rbac.v3.RBAC"

_FILTER_NAMES = {
    FAULT: "envoy.filters.http.fault",
    HEALTH_CHECK: "envoy.filters.http.health_check",
    CORS: "envoy.filters.http.cors",
    LOCAL_RATELIMIT: "envoy.filters.http.local_ratelimit",
    BUFFER: "envoy.filters.http.buffer",
    HEADER_TO_METADATA: "envoy.filters.http.header_to_metadata",
    RBAC: "envoy.filters.http.rbac",
}


class FakeServer:
    """What filters ask of the server: the main stats shard, the node, and
    whether it fails health checks."""

    def __init__(self, store, cluster=""):
        self.mainStats = store.shard("main_thread")
        self.healthCheckFailed = False
        self.node = base_pb2.Node(cluster=cluster)


def runtimeWith(values=None, clock=None, rng=None):
    """
    A real L{Runtime} with one static layer holding C{values} (a dict of
    dotted keys) and an admin layer, for C{mergeValues}.
    """
    layered = bootstrap_pb2.LayeredRuntime()
    static = layered.layers.add(name="static")
    static.static_layer.SetInParent()
    for key, value in (values or {}).items():
        v = static.static_layer.fields[key]
        if isinstance(value, dict):
            json_format.ParseDict(value, v)
        elif isinstance(value, str):
            v.string_value = value
        else:
            v.number_value = value
    layered.layers.add(name="admin").admin_layer.SetInParent()
    return Runtime(clock or Clock(), layered, rng=rng)


def makeContext(clock=None, store=None, server=None, runtime=None, statPrefix=STAT_PREFIX):
    """A L{FactoryContext} as the connection manager hands it to its HTTP filters."""
    context = FactoryContext(clock or Clock(), store if store is not None else StatsStore(),
                             server=server, path=PATH, runtime=runtime)
    context.httpStatPrefix = statPrefix
    return context


def compileFilter(typeName, text="{}", context=None):
    """
    Compile an HTTP filter from the YAML of its C{typed_config} (without
    C{@type}) through the registry, as the connection manager does (the
    message read as the config loader reads it).
    """
    loadPlugins()
    typed = dict(yaml.safe_load(text) or {})
    typed["@type"] = "type.googleapis.com/" + typeName
    entry = parseDict({"name": _FILTER_NAMES.get(typeName, typeName), "typed_config": typed},
                      hcm_pb2.HttpFilter())
    return registry.createExtension(Category.HTTP_FILTER, entry,
                                    context if context is not None else makeContext(), PATH)


def routeTable(text):
    """Compile a C{RouteConfiguration} given as YAML."""
    loadPlugins()
    config = parseDict(yaml.safe_load(text), route_pb2.RouteConfiguration())
    return RouteTable.fromProto(config, "route_config")


def routeFor(table, path, method=b"GET", authority=b"example.com", headers=()):
    """The L{RouteMatch} of a request in a compiled table."""
    if isinstance(table, str):
        table = routeTable(table)
    return table.route(authority, path, HeaderMap(list(headers)), method)


def request(method="GET", path="/", headers=(), authority="example.com"):
    """A L{RequestHeaders}; C{headers} as C{(name, value)} text pairs."""
    return RequestHeaders(
        method.encode("ascii"), path.encode("utf-8"),
        authority.encode("utf-8") if authority is not None else None,
        headers=HeaderMap([(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers]))


def response(status=200, headers=()):
    """A L{ResponseHeaders}; C{headers} as C{(name, value)} text pairs."""
    return ResponseHeaders(status, HeaderMap([(n.encode("latin-1"), v.encode("latin-1"))
                                              for n, v in headers]))


class FakeConnection:
    """The parts of a downstream connection filters read."""

    def __init__(self, dispatcher, peer=("10.1.2.3", 5555), local=("127.0.0.1", 10000),
                 ssl=None):
        self.dispatcher = dispatcher
        self.streamInfo = info = StreamInfo(dispatcher.reactor)
        info.downstreamRemoteAddress = info.downstreamDirectRemoteAddress = peer
        info.downstreamLocalAddress = local
        self.remoteAddress = peer
        self.localAddress = local
        self.ssl = ssl
        self.transportProtocol = "raw_buffer"
        self.applicationProtocols = ()


class FakeSsl:
    """A TLS peer, as L{txenvoy.extensions.transport_sockets.tls.SslConnectionInfo} shows it."""

    def __init__(self, uriSans=(), dnsSans=(), subject=""):
        self.uriSanPeerCertificate = tuple(uriSans)
        self.dnsSansPeerCertificate = tuple(dnsSans)
        self.subjectPeerCertificate = subject


class LocalReply:
    """One C{sendLocalReply}: the head as it would start (after C{modifyHeaders})."""

    def __init__(self, code, body, headers, details, flags):
        self.code = code
        self.body = body
        self.headers = headers
        self.details = details
        self.flags = flags

    def header(self, name):
        return self.headers.headers.get(name.encode("latin-1"))

    def __repr__(self):
        return "<LocalReply %d %r %r>" % (self.code, self.body, self.details)


class _Timer:
    def __init__(self, call):
        self._call = call

    def cancel(self):
        if self._call.active():
            self._call.cancel()

    def active(self):
        return self._call.active()


@implementer(IStreamFilterCallbacks)
class FakeCallbacks:
    """
    Recording callbacks for one filter of one stream.

    @ivar localReplies: the L{LocalReply}s sent.
    @ivar encoded: C{(headers, endStream)} given to C{encodeHeaders}.
    @ivar continued: how many times C{continueDecoding} was called.
    @ivar timers: the timers started with C{callLater}.
    """

    streamId = 1
    requestHeaders = None
    responseHeaders = None

    def __init__(self, clock=None, store=None, route=None, filterConfigName="",
                 connection=None, bufferLimit=1024 * 1024):
        self.clock = clock if clock is not None else Clock()
        self.store = store if store is not None else StatsStore()
        self.dispatcher = Dispatcher(self.clock, "worker_0", self.store.shard("worker_0"))
        self.connection = connection if connection is not None else FakeConnection(
            self.dispatcher)
        self.streamInfo = StreamInfo(self.clock)
        cinfo = self.connection.streamInfo
        self.streamInfo.downstreamRemoteAddress = cinfo.downstreamRemoteAddress
        self.streamInfo.downstreamDirectRemoteAddress = cinfo.downstreamDirectRemoteAddress
        self.streamInfo.downstreamLocalAddress = cinfo.downstreamLocalAddress
        self.filterConfigName = filterConfigName
        self._route = route
        self._bufferLimit = bufferLimit
        self.localReplies = []
        self.encoded = []
        self.continued = 0
        self.resets = 0
        self.timers = []

    # What the tests read.

    def counter(self, name):
        """A counter's value summed over shards (0 when absent)."""
        return self.store.snapshot().counters.get(name, 0)

    def gauge(self, name):
        return self.store.snapshot().gauges.get(name, 0)

    # IStreamFilterCallbacks.

    def route(self):
        return self._route

    def clearRouteCache(self):
        pass

    def continueDecoding(self):
        self.continued += 1

    def continueEncoding(self):
        pass

    def sendLocalReply(self, code, body=b"", modifyHeaders=None, details=""):
        headers = ResponseHeaders(code)
        if modifyHeaders is not None:
            modifyHeaders(headers)
        self.streamInfo.responseCodeDetails = details
        self.streamInfo.responseCode = code
        self.localReplies.append(LocalReply(code, body, headers, details,
                                            self.streamInfo.responseFlags()))

    def encodeHeaders(self, headers, endStream):
        self.responseHeaders = headers
        self.encoded.append((headers, endStream))

    def encodeData(self, data, endStream):
        pass

    def encodeTrailers(self, trailers):
        pass

    def resetStream(self):
        self.resets += 1

    def decodingBuffer(self):
        return None

    def bufferLimit(self):
        return self._bufferLimit

    def callLater(self, delay, f):
        timer = _Timer(self.clock.callLater(delay, f))
        self.timers.append(timer)
        return timer

    def onDecoderFilterAboveWriteBufferHighWatermark(self):
        pass

    def onDecoderFilterBelowWriteBufferLowWatermark(self):
        pass

    def addDownstreamWatermarkCallbacks(self, callbacks):
        pass

    def removeDownstreamWatermarkCallbacks(self, callbacks):
        pass


def makeFilter(config, typeName=None, **kw):
    """
    A filter from C{config} with fresh L{FakeCallbacks} (its
    C{filterConfigName} is the filter's usual name).

    @return: C{(filter, callbacks)}.
    """
    kw.setdefault("filterConfigName", _FILTER_NAMES.get(typeName, ""))
    callbacks = FakeCallbacks(**kw)
    return config.createFilter(callbacks), callbacks


def roles(filter_):
    """C{(isDecoder, isEncoder)}, as the connection manager decides them."""
    return filterRoles(filter_)


def structValue(value):
    """A C{google.protobuf.Value} holding C{value}."""
    v = struct_pb2.Value()
    json_format.ParseDict(value, v)
    return v
