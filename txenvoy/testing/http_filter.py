# -*- test-case-name: tests.testing.test_http_filter -*-
"""
One HTTP filter on its own: its config compiled through the registry as
the connection manager compiles it, and recording stream callbacks, so a
test calls C{decodeHeaders} / C{decodeData} / C{encodeHeaders} itself and
looks at what the filter did::

    from txenvoy.testing import compileHttpFilter, makeHttpFilter, requestHeaders

    config = compileHttpFilter({
        "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
        "abort": {"http_status": 503, "percentage": {"numerator": 100}}})
    f, callbacks = makeHttpFilter(config)
    f.decodeHeaders(requestHeaders("GET", "/"), True)
    callbacks.localReplies[0].code        # 503

For a filter inside a whole connection manager, with routes, the router and
an upstream, see L{txenvoy.testing.proxy}.
"""

import yaml
from google.protobuf import json_format, struct_pb2
from twisted.internet.task import Clock
from zope.interface import implementer

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from txenvoy.config import registry
from txenvoy.config.context import FactoryContext
from txenvoy.config.loader import parseDict
from txenvoy.config.registry import Category, loadPlugins
from txenvoy.interfaces import IStreamFilterCallbacks
from txenvoy.http.headers import HeaderMap, RequestHeaders, ResponseHeaders
from txenvoy.network.stream_info import StreamInfo
from txenvoy.runtime import Runtime
from txenvoy.server.dispatcher import Dispatcher
from txenvoy.stats.store import StatsStore

__all__ = [
    "FILTER_PATH",
    "FakeServer",
    "FakeDownstreamConnection",
    "FakeSsl",
    "FakeStreamFilterCallbacks",
    "LocalReply",
    "compileHttpFilter",
    "makeFactoryContext",
    "makeHttpFilter",
    "requestHeaders",
    "responseHeaders",
    "runtimeWith",
    "structValue",
]

#: Where the connection manager puts an HTTP filter's config.
FILTER_PATH = ("static_resources.listeners[0].filter_chains[0].filters[0].typed_config."
               "http_filters[0]")
_STAT_PREFIX = "http.ingress_http."


class FakeServer:
    """
    What extensions ask of the server: the main stats shard, the node,
    whether it fails health checks, whether connections should drain.
    """

    def __init__(self, store=None, cluster=""):
        self.mainStats = (store if store is not None else StatsStore()).shard("main_thread")
        self.healthCheckFailed = False
        self.node = base_pb2.Node(cluster=cluster)
        self.draining = False

    def drainClose(self):
        """Whether a connection manager should close connections now."""
        return self.draining


def runtimeWith(values=None, clock=None, rng=None):
    """
    A real L{Runtime} with one static layer holding C{values} (a dict of
    dotted keys: numbers, strings, or dicts such as a fractional percent)
    and an admin layer.
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


def makeFactoryContext(clock=None, store=None, server=None, runtime=None,
                       statPrefix=_STAT_PREFIX):
    """
    A L{FactoryContext} as the connection manager hands it to its HTTP
    filters (C{httpStatPrefix} is the C{http.<stat_prefix>.} of the stats
    they create).
    """
    context = FactoryContext(clock or Clock(), store if store is not None else StatsStore(),
                             server=server, path=FILTER_PATH, runtime=runtime)
    context.httpStatPrefix = statPrefix
    return context


def compileHttpFilter(typedConfig, name=None, context=None):
    """
    Compile an HTTP filter's config through the registry, as the connection
    manager does (the message read as the config loader reads it, with its
    validation and its errors).

    @param typedConfig: the C{typed_config} as a dict (with its C{@type}),
        or its YAML text.
    @param name: the filter's C{name} in C{http_filters}.
    @return: the filter's factory (L{txenvoy.interfaces.IHttpFilterFactory}).
    @raise txenvoy.config.errors.ConfigError: as C{--mode validate} would.
    """
    loadPlugins()
    if isinstance(typedConfig, str):
        typedConfig = yaml.safe_load(typedConfig)
    entry = parseDict({"name": name or typedConfig["@type"].rsplit("/", 1)[-1],
                       "typed_config": typedConfig}, hcm_pb2.HttpFilter())
    return registry.createExtension(Category.HTTP_FILTER, entry,
                                    context if context is not None else makeFactoryContext(),
                                    FILTER_PATH)


def requestHeaders(method="GET", path="/", headers=(), authority="example.com"):
    """A request head; C{headers} as C{(name, value)} text pairs."""
    return RequestHeaders(
        method.encode("ascii"), path.encode("utf-8"),
        authority.encode("utf-8") if authority is not None else None,
        headers=HeaderMap([(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers]))


def responseHeaders(status=200, headers=()):
    """A response head; C{headers} as C{(name, value)} text pairs."""
    return ResponseHeaders(status, HeaderMap([(n.encode("latin-1"), v.encode("latin-1"))
                                              for n, v in headers]))


def structValue(value):
    """A C{google.protobuf.Value} holding C{value}."""
    v = struct_pb2.Value()
    json_format.ParseDict(value, v)
    return v


class FakeDownstreamConnection:
    """The parts of a downstream connection that filters read."""

    def __init__(self, dispatcher, peer=("10.1.2.3", 5555), local=("127.0.0.1", 10000),
                 ssl=None, connectionId=7):
        self.dispatcher = dispatcher
        self.streamInfo = info = StreamInfo(dispatcher.reactor)
        info.downstreamRemoteAddress = info.downstreamDirectRemoteAddress = peer
        info.downstreamLocalAddress = local
        info.connectionId = connectionId
        self.remoteAddress = peer
        self.localAddress = local
        self.ssl = ssl
        self.transportProtocol = "raw_buffer"
        self.applicationProtocols = ()


class FakeSsl:
    """
    A TLS peer, as L{txenvoy.extensions.transport_sockets.tls.SslConnectionInfo}
    shows it to filters.
    """

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
        """A header of the reply, C{bytes} or C{None}."""
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
class FakeStreamFilterCallbacks:
    """
    Recording callbacks for one filter of one stream, on a C{Clock}.

    @ivar clock: the C{Clock} of the filter's timers (C{clock.advance}).
    @ivar store: the L{StatsStore}; see L{counter} and L{gauge}.
    @ivar localReplies: the L{LocalReply}s sent.
    @ivar encoded: C{(headers, endStream)} given to C{encodeHeaders}.
    @ivar continued: how many times C{continueDecoding} was called.
    @ivar resets: how many times C{resetStream} was called.
    @ivar timers: the timers started with C{callLater}.
    @ivar addedDecoded: the bytes given to C{addDecodedData}, in order.
    @ivar addedEncoded: the bytes given to C{addEncodedData}, in order.
    @ivar recreated: C{(requestHeaders, responseHeaders, body)} for each
        C{recreateStream}.
    """

    streamId = 1
    decodingBuffered = None
    encodingBuffered = None
    requestHeaders = None
    responseHeaders = None
    activeSpan = None
    tracingConfig = None

    def __init__(self, clock=None, store=None, route=None, filterConfigName="",
                 connection=None, bufferLimit=1024 * 1024):
        self.clock = clock if clock is not None else Clock()
        self.store = store if store is not None else StatsStore()
        self.dispatcher = Dispatcher(self.clock, "worker_0", self.store.shard("worker_0"))
        self.connection = connection if connection is not None else \
            FakeDownstreamConnection(self.dispatcher)
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
        self.addedDecoded = []
        self.addedEncoded = []
        self.recreated = []

    def counter(self, name):
        """A counter's value summed over shards (0 when absent)."""
        return self.store.snapshot().counters.get(name, 0)

    def gauge(self, name):
        """A gauge's value summed over shards (0 when absent)."""
        return self.store.snapshot().gauges.get(name, 0)

    # IStreamFilterCallbacks.

    def route(self):
        return self._route

    def clearRouteCache(self):
        pass

    def recreateStream(self, responseHeaders, body=b""):
        self.recreated.append((self.requestHeaders, responseHeaders, body))
        return True

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

    def addDecodedData(self, data):
        self.addedDecoded.append(data)

    def addEncodedData(self, data):
        self.addedEncoded.append(data)

    def resetStream(self):
        self.resets += 1

    def decodingBuffer(self):
        return self.decodingBuffered

    def encodingBuffer(self):
        return self.encodingBuffered

    def modifyDecodingBuffer(self, data):
        self.decodingBuffered = data

    def modifyEncodingBuffer(self, data):
        self.encodingBuffered = data

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


def makeHttpFilter(factory, **kw):
    """
    A filter of C{factory} (from L{compileHttpFilter}) with fresh
    L{FakeStreamFilterCallbacks}; C{kw} are the callbacks' arguments.

    @return: C{(filter, callbacks)}.
    """
    callbacks = FakeStreamFilterCallbacks(**kw)
    return factory.createFilter(callbacks), callbacks
