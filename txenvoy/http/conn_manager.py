# -*- test-case-name: tests.http.test_conn_manager -*-
"""
The HTTP connection manager (Envoy's C{Http::ConnectionManagerImpl}): the
terminal network filter that runs the HTTP/1.1 codec on a downstream
connection, makes an L{ActiveStream} per request, runs the stream's HTTP
filters, and keeps Envoy's books (C{http.<stat_prefix>.*}, access logs).

One request is in flight per connection at a time: the codec hands request
n+1 over once response n is complete, and answers pipelined requests in
order.

Behaviour copied from Envoy 1.40 (checked against the binary, pinned in
the tests):

 - to the upstream: hop-by-hop headers are removed (C{connection},
   C{keep-alive}, C{proxy-connection}, C{upgrade} unless upgrading, C{te}
   other than C{trailers}); from requests Envoy considers external (all of
   them unless C{internal_address_config} says otherwise) the C{x-envoy-*}
   control headers a client could abuse are removed; then
   C{x-forwarded-for} (only with C{use_remote_address}; a loopback peer is
   recorded as the machine's own address), C{x-forwarded-proto}, C{via},
   C{x-envoy-external-address} and C{x-request-id} are added, in that
   order; C{Expect: 100-continue} is answered here and not forwarded;
 - to the client: the upstream's C{date} is kept (added when absent),
   C{server} is overwritten in place (C{server_header_transformation}),
   hop-by-hop headers are removed, C{via} is appended, and while draining
   C{connection: close} is added;
 - C{stream_idle_timeout} (300 s) answers 408 C{stream timeout} while the
   request is incomplete and 504 after it, flag C{SI}; partial request
   heads count from their first byte and trickling does not extend them;
   C{request_timeout} answers 408 C{request timeout};
   C{request_headers_timeout} answers 408 C{request header timeout};
 - an C{Upgrade} request with no matching C{upgrade_configs} gets 403 and
   the connection is closed; after a 101 both sides carry raw bytes;
 - when the connection is closed after a response (a codec error, a local
   reply, a drain), the close waits up to C{delayed_close_timeout} (1 s)
   for the client to close first, and counts
   C{downstream_cx_delayed_close_timeout} when it did not; only a complete
   request that asked to close (C{connection: close}, HTTP/1.0) is closed
   at once (Envoy's C{FlushWriteAndDelay} and its C{skip_delay_close});
 - a drain close (C{/healthcheck/fail}, a server drain),
   C{disable_http_keepalive} or the idle timeout of a connection that has
   spoken starts Envoy's drain sequence: the connection stays open for
   C{drain_timeout} (5 s), then closes with that delay.
"""

import itertools
import random

from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from zope.interface import implementer

from txenvoy.http.http1.codec import NON_PROTOCOL_ERROR_DETAILS
from txenvoy.http.http1.server_codec import ServerCodec
from txenvoy.http.http2.options import DEFAULT_HTTP2_OPTIONS, http2StatsFor
from txenvoy.http.http2.server_codec import Http2ServerCodec, isHttp2Preface
from txenvoy.http.conn_manager_utility import (
    DETECTED,
    EDGE_STRIPPED,
    EXTERNAL_STRIPPED,
    HOP_BY_HOP,
    KEEP_UNCHANGED,
    OVERWRITE,
    REJECT_REQUEST,
    UNESCAPE_AND_FORWARD,
    UNESCAPE_AND_REDIRECT,
    machineAddress,
    mergeSlashes,
    mutateRequestHeaders,
    mutateResponseHeaders,
    normalizePath,
)
from txenvoy.http.pool_base import directSequenceWriter, directWriter
from txenvoy.http.header_dump import dumpRequestHeaders, dumpResponseHeaders
from txenvoy.http.headers import HeaderMap
from txenvoy.http.grpc.common import GrpcStatus, grpcLocalReply, isGrpcContentType
from txenvoy.http.filter import (
    DECODE_NAMES,
    DECODE_SINKS,
    ENCODE_NAMES,
    FilterHeadersStatus,
    FilterIteration,
    FilterSlot,
    SingleFilterSlot,
    filterMethod,
    filterRoles,
    startSlot,
)
from txenvoy.http.local_reply import DEFAULT_LOCAL_REPLY, headerView, makeLocalReply
from txenvoy.http.status import reasonPhrase, statusLine
from txenvoy.interfaces import (
    IFilterManagerStream,
    INetworkFilterFactory,
    IRequestDecoder,
    IServerConnectionCallbacks,
)
from txenvoy.network.stream_info import ResponseFlag, StreamInfo, requestStreamInfo
from txenvoy.network.timer_heap import sharedTimerHeap
from txenvoy.server.overload_manager import (
    DISABLE_HTTP_KEEPALIVE,
    HTTP_DOWNSTREAM_CONNECTION_IDLE,
    REDUCE_TIMEOUTS,
    STOP_ACCEPTING_REQUESTS,
    overloadStateOf,
)
from txenvoy.server.logging import componentLogger, connTag, streamTag
from txenvoy.stats.per_worker import PerWorker, perWorkerMethod

log = componentLogger("http")
connLog = componentLogger("connection")

__all__ = ["ConnectionManager", "ConnectionManagerConfig", "ActiveStream", "TimerSet"]

_INF = float("inf")

#: C{codec_type} values (Envoy's enum).
AUTO, HTTP1, HTTP2 = 0, 1, 2
_ids = itertools.count(1)
_newObject = object.__new__

_HCM_COUNTERS = (
    "downstream_cx_total", "downstream_cx_destroy", "downstream_cx_destroy_local",
    "downstream_cx_destroy_remote", "downstream_cx_destroy_active_rq",
    "downstream_cx_destroy_local_active_rq", "downstream_cx_destroy_remote_active_rq",
    "downstream_cx_http1_total", "downstream_cx_http2_total", "downstream_cx_ssl_total", "downstream_cx_protocol_error",
    "downstream_cx_idle_timeout", "downstream_cx_drain_close",
    "downstream_cx_delayed_close_timeout",
    "downstream_cx_max_duration_reached", "downstream_cx_max_requests_reached",
    "downstream_cx_upgrades_total", "downstream_cx_rx_bytes_total",
    "downstream_cx_tx_bytes_total", "downstream_rq_total", "downstream_rq_http1_total",
    "downstream_rq_http2_total",
    "downstream_rq_completed", "downstream_rq_1xx", "downstream_rq_2xx", "downstream_rq_3xx",
    "downstream_rq_4xx", "downstream_rq_5xx", "downstream_rq_timeout",
    "downstream_rq_idle_timeout", "downstream_rq_too_large", "downstream_rq_header_timeout",
    "downstream_rq_rx_reset", "downstream_rq_tx_reset",
    "downstream_rq_response_before_rq_complete", "downstream_rq_max_duration_reached",
    "rs_too_large", "http1.dropped_headers_with_underscores",
    "downstream_rq_overload_close", "downstream_cx_overload_disable_keepalive",
    "rq_overload_local_reply",
    "http1.requests_rejected_with_underscores_in_headers",
)
_HCM_GAUGES = ("downstream_cx_active", "downstream_cx_http1_active", "downstream_cx_http2_active",
               "downstream_cx_ssl_active",
               "downstream_rq_active", "downstream_cx_upgrades_active")


class _HcmStats:
    """One worker's C{http.<stat_prefix>.*} stat objects."""

    def __init__(self, shard, prefix):
        scope = shard.scope(prefix)
        for name in _HCM_COUNTERS:
            setattr(self, name.replace(".", "_"), scope.counter(name))
        for name in _HCM_GAUGES:
            setattr(self, name, scope.gauge(name))
        self.downstream_rq_time = scope.histogram("downstream_rq_time")
        self.downstream_cx_length_ms = scope.histogram("downstream_cx_length_ms")
        # Counted on every read and write: the value is added to directly.
        self.downstream_cx_rx_bytes_total.used = True
        self.downstream_cx_tx_bytes_total.used = True
        self.byClass = (None, self.downstream_rq_1xx, self.downstream_rq_2xx,
                        self.downstream_rq_3xx, self.downstream_rq_4xx, self.downstream_rq_5xx)


class _ListenerHttpStats:
    """C{listener.<address>.http.<stat_prefix>.downstream_rq_*} of one worker."""

    def __init__(self, shard, prefix):
        scope = shard.scope(prefix)
        self.downstream_rq_completed = scope.counter("downstream_rq_completed")
        self.byClass = (None,) + tuple(
            scope.counter("downstream_rq_%dxx" % (n,)) for n in range(1, 6))


# -- timers ----------------------------------------------------------------------


class Timer:
    """One timer of a L{TimerSet}; C{cancel()} it, or reschedule it."""

    __slots__ = ("when", "callback", "active", "_set")

    def __init__(self, timerSet, callback, when=_INF, active=False):
        self._set = timerSet
        self.callback = callback
        self.when = when
        self.active = active

    def cancel(self):
        """Stop the timer (harmless when it is not running)."""
        if self.active:
            self.active = False
            self._set._timers.remove(self)

    def schedule(self, delay):
        """Run C{callback} C{delay} seconds from now (again)."""
        s = self._set
        s.scheduleAt(self, s._reactor.seconds() + delay)


class TimerSet:
    """
    The timers of one connection behind one reactor timer.

    Requests on a kept-alive connection start and stop several timers each
    (stream idle, route timeout); here that is a list append and a removal,
    and the reactor is only asked to wake up earlier, or again once its
    timer fired, never once per request.
    """

    def __init__(self, reactor, heap=None):
        """
        @param heap: a L{TimerHeap} shared with other connections of the
            worker, which then wakes this set up instead of a reactor call
            of its own; C{None} for a reactor call.
        """
        self._reactor = reactor
        self._heap = heap
        self._timers = []
        self._call = None
        self._at = _INF
        self._stopped = False

    def timer(self, callback):
        """@return: a new, inactive L{Timer} calling C{callback}."""
        return Timer(self, callback)

    def callLater(self, delay, callback):
        """
        Run C{callback} after C{delay} seconds.

        @return: the L{Timer}.
        """
        return self.startAt(self._reactor.seconds() + delay, callback)

    def startAt(self, when, callback):
        """
        Run C{callback} at the reactor time C{when} (what L{timer} and
        L{scheduleAt} do, in one call: a stream starts its timers so).

        @return: the L{Timer}.
        """
        if self._stopped:
            return Timer(self, callback)
        # Timer(self, callback, when, True) without the class call: a
        # stream's timers start so once per request.
        t = _newObject(Timer)
        t._set = self
        t.callback = callback
        t.when = when
        t.active = True
        self._timers.append(t)
        if when < self._at:
            self._arm(when)
        return t

    def scheduleAt(self, t, when):
        """(Re)schedule C{t} at the reactor time C{when}."""
        if self._stopped:
            return
        t.when = when
        if not t.active:
            t.active = True
            self._timers.append(t)
        if when < self._at:
            self._arm(when)

    def _arm(self, when):
        self._at = when
        heap = self._heap
        if heap is not None:
            call = self._call
            if call is not None:
                heap.cancel(call)
            self._call = heap.callAt(when, self._fire)
            return
        delay = when - self._reactor.seconds()
        if delay < 0:
            delay = 0
        call = self._call
        if call is not None and call.active():
            call.reset(delay)
        else:
            self._call = self._reactor.callLater(delay, self._fire)

    def _fire(self):
        self._call = None
        self._at = _INF
        now = self._reactor.seconds()
        timers = self._timers
        due = [t for t in timers if t.when <= now]
        for t in due:
            t.active = False
            timers.remove(t)
        if timers:
            self._arm(min(t.when for t in timers))
        if len(due) > 1:
            due.sort(key=lambda t: t.when)
        for t in due:
            t.callback()

    def stop(self):
        """Cancel everything (the connection is gone); nothing runs after."""
        self._stopped = True
        for t in self._timers:
            t.active = False
        del self._timers[:]
        call = self._call
        self._call = None
        self._at = _INF
        if call is None:
            return
        if self._heap is not None:
            self._heap.cancel(call)
        elif call.active():
            call.cancel()


# -- helpers ---------------------------------------------------------------------

_getrandbits = random.getrandbits
# -- the configuration -------------------------------------------------------------


@implementer(INetworkFilterFactory)
class ConnectionManagerConfig:
    """
    A compiled C{HttpConnectionManager}; the network filter factory of the
    connection manager. Built by
    L{txenvoy.extensions.filters.network.http_connection_manager}; every
    attribute is set there, once.

    @ivar statPrefix: C{"http.<stat_prefix>."}.
    @ivar routeTable: the L{txenvoy.router.config.RouteTable}.
    @ivar filterFactories: C{[(name, IHttpFilterFactory)]} in config order.
    @ivar accessLogs: L{txenvoy.interfaces.IAccessLogger}s.
    @ivar tracing: the L{txenvoy.tracing.http_tracer.TracingConfig}, or C{None}.
    @ivar localReply: the L{txenvoy.http.local_reply.LocalReplyConfig}.
    @ivar server: the L{txenvoy.server.server.Server} (its C{drainClose}),
        or C{None}.
    """

    terminal = True

    # Defaults (Envoy 1.40's); the compiler overrides what is configured.
    statPrefix = "http.ingress."
    routeTable = None
    filterFactories = ()
    accessLogs = ()
    tracing = None
    localReply = DEFAULT_LOCAL_REPLY
    server = None
    serverName = b"envoy"
    serverHeaderTransformation = OVERWRITE
    useRemoteAddress = False
    xffNumTrustedHops = 0
    skipXffAppend = False
    via = None
    generateRequestId = True
    preserveExternalRequestId = False
    alwaysSetRequestIdInResponse = False
    forwardClientCert = 0           # SANITIZE; see conn_manager_utility.mutateXfcc
    userAgent = None                # add_user_agent: the node's cluster
    nodeName = b""
    clientCertDetails = ()
    normalizePath = False
    mergeSlashes = False
    escapedSlashesAction = KEEP_UNCHANGED
    headersWithUnderscoresAction = "ALLOW"
    idleTimeout = 3600.0
    delayedCloseTimeout = 1.0
    drainTimeout = 5.0
    maxConnectionDuration = 0.0
    maxStreamDuration = 0.0
    maxHeadersCount = 100
    maxRequestHeadersKb = 60
    maxRequestsPerConnection = 0
    streamIdleTimeout = 300.0
    requestTimeout = 0.0
    requestHeadersTimeout = 0.0
    acceptHttp10 = False
    defaultHostForHttp10 = None
    enableTrailers = False
    upgradeTypes = frozenset()
    internalNetworks = ()
    # (name, factory) when the chain is one decoder-only filter, learnt from
    # the first stream (a filter's roles show on an instance).
    singleDecoder = None
    stripAnyHostPort = False
    stripMatchingHostPort = False
    #: C{scheme_header_transformation.scheme_to_overwrite}: every request's
    #: C{:scheme}, or C{None}.
    schemeToOverwrite = None
    #: C{codec_type}: L{AUTO} (HTTP/2 by its preface or ALPN, else
    #: HTTP/1.1), L{HTTP1} or L{HTTP2}.
    codecType = 0
    http2Options = DEFAULT_HTTP2_OPTIONS

    statsFor = perWorkerMethod(lambda self, d: _HcmStats(d.stats, self.statPrefix))

    def __init__(self):
        # Per worker: {listener prefix: stats}.
        self._listenerStats = PerWorker(lambda d: {})

    def finish(self):
        """Derive the per-request lookup sets once every field is set."""
        edge = EDGE_STRIPPED if self.useRemoteAddress else frozenset()
        external = HOP_BY_HOP | EXTERNAL_STRIPPED | edge
        internal = HOP_BY_HOP | frozenset([b"x-envoy-internal"])
        upgrade = frozenset([b"connection", b"upgrade"])
        self.stripExternal = external
        self.stripExternalUpgrade = external - upgrade
        self.stripInternal = internal
        self.stripInternalUpgrade = internal - upgrade
        self.interestingExternal = external | DETECTED
        self.interestingInternal = internal | DETECTED
        self.needsPathWork = (self.normalizePath or self.mergeSlashes
                              or self.escapedSlashesAction in (REJECT_REQUEST,
                                                               UNESCAPE_AND_REDIRECT,
                                                               UNESCAPE_AND_FORWARD))
        self.minHeadTimeout = min(
            [t for t in (self.streamIdleTimeout, self.requestTimeout, self.requestHeadersTimeout)
             if t] or [0.0])
        if self.useRemoteAddress:
            self.localAddressText = machineAddress().encode("ascii")
        # Every field as an attribute of this instance: each request reads
        # a dozen, and Python reads a class-level default several times
        # slower.
        fields = self.__dict__
        for cls in type(self).__mro__:
            for name, value in vars(cls).items():
                if (name[:2] != "__" and name not in fields and not callable(value)
                        and not hasattr(value, "__get__")):
                    fields[name] = value
        return self

    def listenerStatsFor(self, dispatcher, listenerPrefix):
        """This worker's C{listener.<address>.http.<prefix>.*} stats."""
        byListener = self._listenerStats.get(dispatcher)
        stats = byListener.get(listenerPrefix)
        if stats is None:
            stats = byListener[listenerPrefix] = _ListenerHttpStats(
                dispatcher.stats, listenerPrefix + self.statPrefix)
        return stats

    def isInternal(self, host):
        """Whether a client address is internal (C{internal_address_config})."""
        networks = self.internalNetworks
        if not networks:
            return False
        import ipaddress
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address.version == n.version and address in n for n in networks)

    def buildFilter(self, connection, nextProtocol):
        """@return: a L{ConnectionManager} for the connection."""
        return ConnectionManager(self, connection)


# -- the connection ----------------------------------------------------------------


@implementer(IPushProducer)
class _DownstreamWatermark:
    """
    Registered once as the producer of the downstream transport: Twisted
    pauses it when the connection's write buffer passes
    C{per_connection_buffer_limit_bytes} and resumes it once drained; the
    current stream's watermark callbacks hear about it.
    """

    __slots__ = ("cm",)

    def __init__(self, cm):
        self.cm = cm

    def pauseProducing(self):
        cm = self.cm
        if not cm._above:
            cm._above = True
            if cm._http2:
                cm.codec.outboundPaused(True)
            for stream in tuple(cm._streams):
                for cb in stream._watermarkCallbacks:
                    cb.onAboveWriteBufferHighWatermark()

    def resumeProducing(self):
        cm = self.cm
        if cm._above:
            cm._above = False
            if cm._http2:
                cm.codec.outboundPaused(False)
            for stream in tuple(cm._streams):
                for cb in stream._watermarkCallbacks:
                    cb.onBelowWriteBufferLowWatermark()

    def stopProducing(self):
        """Nothing to stop: the connection closes on its own."""
        pass


@implementer(IServerConnectionCallbacks)
class ConnectionManager(Protocol):
    """
    The connection manager of one downstream connection; also the codec's
    callbacks and, to count bytes, its transport.

    @ivar config: the L{ConnectionManagerConfig}.
    @ivar connection: the L{txenvoy.network.connection.ServerConnection}.
    @ivar codec: the L{ServerCodec}.
    @ivar timers: the connection's L{TimerSet}.
    """

    # The attributes every connection sets as slots, the rest (class-level
    # defaults until set) in its __dict__, which then stays under the 30
    # keys that keep it compact.
    __slots__ = ("config", "connection", "dispatcher", "reactor", "stats",
                 "listenerStats", "egress", "streamsStarted", "overload", "_streams",
                 "tls", "scheme", "remoteIsIp", "remoteHost", "_startTime", "timers",
                 "_idleTimer", "_write", "_writeSequence", "_watermark",
                 "_producerRegistered", "rqProtocolStat", "dateCache", "_corkDepth")

    _stream = None
    #: The stream idle timer HTTP/1.1 streams share (see
    #: ActiveStream.decodeHeaders).
    _streamIdleTimer = None
    _http2 = False
    _refusedStream = False
    codec = None
    _sniffed = None
    _closed = False
    _lost = False
    _codecFailed = False
    _localClose = False
    _draining = False
    #: The L{txenvoy.server.drain.DrainManager} of this connection's
    #: listener once an LDS update replaced or removed it (Envoy's
    #: per-listener drain decision), else C{None}.
    listenerDrain = None
    # Envoy's drain sequence (a drain close, disable_http_keepalive, an idle
    # timeout): the connection stays open for drain_timeout, then closes
    # as any connection closed after a response (delayed close).
    _drainSequence = False
    _drainTimedOut = False
    _dataSeen = False
    _above = False
    _headTimer = None
    _headStart = None
    _idleSince = None

    def __init__(self, config, connection):
        self.config = config
        self.connection = connection
        dispatcher = self.dispatcher = connection.dispatcher
        self.reactor = dispatcher.reactor
        self.stats = config.statsFor(dispatcher)
        listener = getattr(connection, "listener", None)
        prefix = listener.config.statPrefix if listener is not None else "listener.unknown."
        self.listenerStats = config.listenerStatsFor(dispatcher, prefix)
        # Envoy's tracing operation: egress on an OUTBOUND listener.
        self.egress = config.tracing is not None and getattr(
            getattr(getattr(listener, "config", None), "proto", None),
            "traffic_direction", 0) == 2
        self.streamsStarted = 0
        self.overload = overloadStateOf(dispatcher)
        # The streams in flight: one at most on HTTP/1.1.
        self._streams = set()
        # Read for every request, as attributes of the instance: Python
        # reads a class-level default several times slower.
        self._draining = self._http2 = self._closed = self._lost = False
        self._codecFailed = self._above = self._paused = self._drainSequence = False
        self._headTimer = None
        self.listenerDrain = None

    @property
    def aboveHighWatermark(self):
        """Whether the downstream connection is above its write buffer's high watermark."""
        return self._above

    # Protocol.

    def connectionMade(self):
        """Count the connection and start its codec and timers."""
        config = self.config
        stats = self.stats
        stats.downstream_cx_total.inc()
        stats.downstream_cx_active.inc()
        reactor = self.reactor
        self.tls = getattr(self.connection, "ssl", None) is not None
        if self.tls:
            stats.downstream_cx_ssl_total.inc()
            stats.downstream_cx_ssl_active.inc()
        self.scheme = b"https" if self.tls else b"http"
        remote = self.connection.streamInfo.downstreamRemoteAddress
        host = remote[0] if remote else "127.0.0.1"
        # A pipe peer (a Unix socket) is named by its path, not an IP.
        self.remoteIsIp = isinstance(host, str)
        self.remoteHost = host if self.remoteIsIp else str(host)
        self._startTime = reactor.seconds()
        timers = self.timers = TimerSet(reactor, sharedTimerHeap(reactor))
        self._idleSince = self._startTime
        if config.idleTimeout:
            self._idleTimer = timers.timer(self._onIdleTimer)
            timers.scheduleAt(self._idleTimer, self._startTime + self.overload.scaledTimeout(
                HTTP_DOWNSTREAM_CONNECTION_IDLE, config.idleTimeout))
            if HTTP_DOWNSTREAM_CONNECTION_IDLE in self.overload.scaledTimers:
                self.overload.addCallback(REDUCE_TIMEOUTS, self._onTimeoutsScaled)
        if config.maxConnectionDuration:
            timers.callLater(config.maxConnectionDuration, self._onMaxConnectionDuration)
        self._write = directWriter(self.transport)
        self._writeSequence = directSequenceWriter(self.transport)
        self._watermark = _DownstreamWatermark(self)
        try:
            self.transport.registerProducer(self._watermark, True)
            self._producerRegistered = True
        except RuntimeError:
            self._producerRegistered = False
        # Envoy's codec_type: HTTP1 and HTTP2 are decided now; AUTO by ALPN
        # on TLS, else by the first bytes (the HTTP/2 preface or not).
        codecType = config.codecType
        if codecType == HTTP1:
            self._createCodec(False)
        elif codecType == HTTP2 or (self.tls and self._negotiatedH2()):
            self._createCodec(True)

    def _negotiatedH2(self):
        # ALPN on a TLS filter chain (the TLS transport socket sets it once
        # its handshake is done).
        negotiated = getattr(self.connection, "negotiatedProtocol", None)
        return negotiated in ("h2", b"h2")

    def _createCodec(self, http2):
        """Make the connection's codec (Envoy's C{createCodec}) and count its protocol."""
        config = self.config
        stats = self.stats
        reactor = self.reactor
        if http2:
            self._http2 = True
            stats.downstream_cx_http2_total.inc()
            stats.downstream_cx_http2_active.inc()
            self.rqProtocolStat = stats.downstream_rq_http2_total
            self.codec = Http2ServerCodec(
                self, self, config.http2Options, http2StatsFor(self.dispatcher),
                bufferLimit=ActiveStream.bufferLimit(self._probe()),
                maxRequestHeadersKb=config.maxRequestHeadersKb,
                maxHeadersCount=config.maxHeadersCount, clock=reactor)
        else:
            stats.downstream_cx_http1_total.inc()
            stats.downstream_cx_http1_active.inc()
            self.rqProtocolStat = stats.downstream_rq_http1_total
            self.codec = ServerCodec(
                self, self, maxRequestHeadersKb=config.maxRequestHeadersKb,
                maxHeadersCount=config.maxHeadersCount, acceptHttp10=config.acceptHttp10,
                defaultHostForHttp10=config.defaultHostForHttp10,
                headersWithUnderscoresAction=config.headersWithUnderscoresAction,
                serverName=config.serverName, clock=reactor,
                enableTrailers=config.enableTrailers)
        self.dateCache = self.codec.dateCache

    def _probe(self):
        # An unattached stream, to read the buffer limit the streams use.
        probe = ActiveStream.__new__(ActiveStream)
        probe.cm = self
        probe._routeTable = self.config.routeTable
        return probe

    def abortConnection(self):
        """The HTTP/2 codec aborts the connection (a flood, a keepalive timeout)."""
        self._closeConnection(abort=True)

    def onCodecIdle(self):
        """The HTTP/2 codec has no stream left (see L{_onStreamDone})."""

    def dataReceived(self, data):
        """Feed the codec; a partial request head starts its timeouts."""
        self.stats.downstream_cx_rx_bytes_total.value += len(data)
        self._dataSeen = True
        if self._closed or self._codecFailed:
            return
        if self.codec is None:
            sniffed = self._sniffed
            if sniffed is not None:
                data = sniffed + data
            verdict = isHttp2Preface(data) or (self.tls and self._negotiatedH2())
            if verdict is None:
                self._sniffed = data
                return
            self._sniffed = None
            self._createCodec(verdict)
        if log.traceEnabled:
            log.trace("%sparsing %d bytes", self.logTag(), len(data))
        started = self.streamsStarted
        wanted = self._pauseWanted
        self.codec.dataReceived(data)
        if wanted and self._pauseWanted and not self._paused and not self._lost:
            # Bytes came while reading was to be stopped: stop it now.
            self._paused = True
            self.transport.pauseProducing()
        if (self._stream is None and self.streamsStarted == started and not self._closed
                and not self._codecFailed and self._headTimer is None
                and self.config.minHeadTimeout and not self._http2):
            # Part of a request head: its timeouts run from this first byte.
            self._headStart = self.reactor.seconds()
            self._headTimer = self.timers.callLater(self.config.minHeadTimeout,
                                                    self._onHeadTimeout)

    def connectionLost(self, reason=None):
        """End the stream in flight (flag C{DC}) and keep the books."""
        if self._lost:
            return
        self._lost = True
        self._closed = True
        stats = self.stats
        streams = list(self._streams)
        if streams or self._refusedStream:
            stats.downstream_cx_destroy_active_rq.inc()
            if self._localClose:
                stats.downstream_cx_destroy_local_active_rq.inc()
            else:
                stats.downstream_cx_destroy_remote_active_rq.inc()
        codec = self.codec
        if codec is not None and not self._http2:
            codec.connectionLost(reason)
        for stream in streams:
            stream._onDownstreamReset()
        if codec is not None and self._http2:
            codec.connectionLost(reason)
        self.timers.stop()
        self.overload.removeCallback(REDUCE_TIMEOUTS, self._onTimeoutsScaled)
        stats.downstream_cx_destroy.inc()
        if self._localClose:
            stats.downstream_cx_destroy_local.inc()
        else:
            stats.downstream_cx_destroy_remote.inc()
        stats.downstream_cx_active.dec()
        if self._http2:
            stats.downstream_cx_http2_active.dec()
        elif codec is not None:
            stats.downstream_cx_http1_active.dec()
        if self.tls:
            stats.downstream_cx_ssl_active.dec()
        stats.downstream_cx_length_ms.recordValue(
            (self.reactor.seconds() - self._startTime) * 1000.0)
        # Nothing runs on this connection any more: drop what ties it into
        # reference cycles (its codec, its timers' callbacks, its producer,
        # its last stream), so that reference counting frees it at once
        # rather than leaving it to the cyclic collector.
        self._lastStream = None
        self._watermark = None
        self._idleTimer = self._headTimer = self._streamIdleTimer = None
        if not self._http2:
            self.codec = None

    # What the codec sees as its transport.

    _corked = None

    def write(self, data):
        """The codec's writes: counted, and held while corked."""
        self.stats.downstream_cx_tx_bytes_total.value += len(data)
        if connLog.traceEnabled:
            connLog.trace("%swriting %d bytes, end_stream false", self.logTag(), len(data))
        corked = self._corked
        if corked is not None:
            corked.append(data)
        else:
            self._write(data)

    def writeSequence(self, buffers):
        """
        The codec's write of several buffers (a large chunk between its
        framing): counted, held while corked, else written in one call.
        """
        size = 0
        for data in buffers:
            size += len(data)
        self.stats.downstream_cx_tx_bytes_total.value += size
        if connLog.traceEnabled:
            connLog.trace("%swriting %d bytes, end_stream false", self.logTag(), size)
        corked = self._corked
        if corked is not None:
            corked.extend(buffers)
        else:
            self._writeSequence(list(buffers))

    def cork(self):
        """Hold writes until L{uncork}, then write them at once."""
        if self._corked is None:
            self._corked = []
            self._corkDepth = 1
        else:
            self._corkDepth += 1

    def uncork(self):
        """Write what L{cork} held."""
        self._corkDepth -= 1
        if self._corkDepth:
            return
        corked = self._corked
        self._corked = None
        if corked and not self._lost:
            if len(corked) == 1:
                self._write(corked[0])
            else:
                self._writeSequence(corked)

    _lastStream = None
    _upgraded = False

    def loseConnection(self):
        """
        The codec closes the connection: at once for a stream reset or when
        the request asked for it and was complete, else after a delay (see
        L{_closeConnection}).
        """
        if self._http2:
            # The HTTP/2 codec closes after its GOAWAY or its error.
            self._closeConnection()
            return
        if self._drainSequence and not self._localClose and not self._drainTimedOut:
            # Closed when drain_timeout ends (_onDrainTimeout).
            return
        if self._localClose or self._upgraded or self._draining:
            # A stream reset, the end of a tunnel, a drain: closed at once.
            self._closeConnection()
            return
        stream = self._lastStream
        askedClose = (stream is not None and not stream.requestHeaders.keepAlive
                      and stream._remoteComplete and not self._codecFailed)
        self._closeConnection(delay=not askedClose)

    # The codec stops reading while a request waits for its response, and
    # the router while the upstream is backed up. Most clients send nothing
    # in that time, so the socket is only really paused once bytes do come:
    # two epoll changes a request saved, and one more read at most.

    _pauseWanted = False
    _paused = False

    def pauseProducing(self):
        self._pauseWanted = True

    def resumeProducing(self):
        self._pauseWanted = False
        if self._paused:
            self._paused = False
            if not self._lost:
                self.transport.resumeProducing()

    def _closeConnection(self, abort=False, delay=False):
        """
        Close the connection. With C{delay} (Envoy's C{FlushWriteAndDelay}):
        write what is buffered, then wait up to C{delayed_close_timeout}
        for the client to close first (its close is then the remote's), so
        that it reads the last response rather than a reset.
        """
        if self._closed:
            return
        self._closed = True
        corked = self._corked
        if corked:
            self._corked = []
            self._write(b"".join(corked))
        timeout = self.config.delayedCloseTimeout
        if delay and timeout and not abort and not self._lost:
            if connLog.debugEnabled:
                connLog.debug("%sclosing type=2", self.logTag())
            if self._producerRegistered:
                self._producerRegistered = False
                self.transport.unregisterProducer()
            if self._paused:
                # The client's close must be read to be seen.
                self._paused = False
                self.transport.resumeProducing()
            self.timers.callLater(timeout, self._onDelayedCloseTimeout)
            return
        self._localClose = True
        self.connection.closedLocally = True
        transport = self.transport
        if connLog.debugEnabled:
            # Envoy's close types: 0 FlushWrite, 3 Abort.
            connLog.debug("%sclosing type=%d", self.logTag(), 3 if abort else 0)
        if self._producerRegistered:
            # A paused producer would keep Twisted from ever closing.
            self._producerRegistered = False
            transport.unregisterProducer()
        if abort:
            transport.abortConnection()
        else:
            transport.loseConnection()

    def _onDelayedCloseTimeout(self):
        if self._lost:
            return
        self.stats.downstream_cx_delayed_close_timeout.inc()
        if connLog.debugEnabled:
            connLog.debug("%striggered delayed close", self.logTag())
        self._localClose = True
        self.connection.closedLocally = True
        self.transport.loseConnection()

    def logTag(self):
        """This connection's prefix for log lines (L{connTag})."""
        return connTag(self.connection.streamInfo.connectionId)

    # Codec callbacks.

    def newStream(self, encoder):
        """A request head arrived: its L{ActiveStream} decodes it."""
        if log.debugEnabled:
            log.debug("%snew stream", self.logTag())
        self.streamsStarted += 1
        maxRequests = self.config.maxRequestsPerConnection
        if maxRequests and self.streamsStarted >= maxRequests and not self._draining:
            # Envoy drains as the last allowed request starts, so its
            # response says connection: close.
            self.stats.downstream_cx_max_requests_reached.inc()
            self._draining = True
        stream = _startStream(_newObject(ActiveStream), self, encoder)
        self._streams.add(stream)
        if not self._http2:
            self._stream = stream
        if self._headTimer is not None:
            stream._startTime = self._headStart
            self._headTimer.cancel()
            self._headTimer = None
            self._headStart = None
        return stream

    def codecLocalReply(self, status, details, emptyBody, http10):
        """
        Format the codec's own reply the way the connection manager formats
        local replies, when that differs from the codec's default (a
        C{local_reply_config}, C{via}): Envoy sends both through the same
        path.
        """
        config = self.config
        if config.via is None and not config.localReply.active:
            return None
        stream = self._stream
        request = None
        if stream is not None and not stream._complete:
            request = stream.requestHeaders
            info = stream.streamInfo
        else:
            info = self._newStreamInfo()
        info.responseCodeDetails = details
        body = b"" if emptyBody else reasonPhrase(status).encode("ascii")
        headers, body = makeLocalReply(config.localReply, info, request, status, body)
        self._finishResponseHeaders(headers, None, info, False)
        entries = headers.headers
        entries.set(b"connection", b"close")
        if not body:
            entries.add(b"content-length", b"0")
        self._codecReply = (headers, len(body), info)
        return statusLine(headers.status, http10) + b"".join(
            [n + b": " + v + b"\r\n" for n, v in entries._entries]) + b"\r\n" + body

    _codecReply = None

    def onStreamError(self, details):
        """
        The HTTP/2 codec reset a stream for its request head: Envoy made a
        stream for it, reset by its codec, and counts it as a request
        received and reset.
        """
        stats = self.stats
        stats.downstream_rq_total.inc()
        stats.downstream_rq_http2_total.inc()
        stats.downstream_rq_rx_reset.inc()
        if log.debugEnabled:
            log.debug("%sstream error: %s", self.logTag(), details)

    def onCodecError(self, status, details):
        """The codec refused a request and answered it (or closed)."""
        stats = self.stats
        if self._http2:
            # A protocol error or a flood: the codec wrote what Envoy writes
            # (a GOAWAY, or nothing for a forbidden request head) and reset
            # its streams; the connection closes after the delayed close.
            stats.downstream_cx_protocol_error.inc()
            self._codecFailed = True
            if details == "http2.violation.of.messaging.rule":
                # Envoy made a stream for the head, reset at the close.
                stats.downstream_rq_total.inc()
                stats.downstream_rq_http2_total.inc()
                stats.downstream_rq_rx_reset.inc()
                self._refusedStream = True
            if log.debugEnabled:
                log.debug("%sdispatch error: %s", self.logTag(), details)
            if not self._closed:
                self._closeConnection(delay=not details.startswith("http2.outbound"))
            return
        reply = self._codecReply
        self._codecReply = None
        protocolError = details not in NON_PROTOCOL_ERROR_DETAILS
        if protocolError:
            stats.downstream_cx_protocol_error.inc()
        if details == "http1.unexpected_underscore":
            stats.http1_requests_rejected_with_underscores_in_headers.inc()
        if log.debugEnabled:
            # Envoy 1.40: the stream's local reply, then the connection's
            # "dispatch error: http/1.1 protocol error: ...".
            stream = self._stream
            streamTag = (stream.logTag() if stream is not None and not stream._complete
                         else self.logTag())
            log.debug("%sSending local reply with details %s", streamTag, details)
            log.debug("%sdispatch error: %s%s", self.logTag(),
                      "http/1.1 protocol error: " if protocolError else "", details)
        # The codec closes the connection after its reply.
        self._codecFailed = True
        if protocolError:
            # Envoy answers the bad request on a stream its codec made, before
            # the request is complete, and resets that stream at the close.
            stats.downstream_rq_rx_reset.inc()
            stream = self._stream
            if stream is None or stream._complete or not stream._responseStarted:
                stats.downstream_rq_response_before_rq_complete.inc()
        if self._headTimer is not None:
            self._headTimer.cancel()
            self._headTimer = None
        bodySize = 0 if details in NON_PROTOCOL_ERROR_DETAILS else len(reasonPhrase(status))
        response = None
        if reply is not None:
            response, bodySize, _ = reply
            status = response.status
        stream = self._stream
        if stream is not None and not stream._complete:
            stream._onCodecError(status, details, protocolError, bodySize, response)
            return
        info = reply[2] if reply is not None else self._newStreamInfo()
        stats.downstream_rq_total.inc()
        stats.downstream_rq_http1_total.inc()
        info.responseCode = status
        info.responseCodeDetails = details
        if protocolError:
            info.setResponseFlag(ResponseFlag.DOWNSTREAM_PROTOCOL_ERROR)
        info.bytesSent = bodySize
        self._chargeReply(status)
        info.onComplete()
        request = headerView(self.codec.rejectedRequest)
        for logger in self.config.accessLogs:
            logger.log(info, request, headerView(response))

    def onDroppedHeaderWithUnderscores(self, name):
        """headers_with_underscores_action DROP_HEADER dropped one."""
        self.stats.http1_dropped_headers_with_underscores.inc()

    def _newStreamInfo(self):
        info = StreamInfo(self.reactor, connection=self.connection.streamInfo)
        info.protocol = "HTTP/1.1"
        return info

    def _chargeReply(self, status):
        stats = self.stats
        klass = status // 100
        if 1 <= klass <= 5:
            stats.byClass[klass].inc()
            self.listenerStats.byClass[klass].inc()
        stats.downstream_rq_completed.inc()
        self.listenerStats.downstream_rq_completed.inc()

    # Stream bookkeeping.

    def _onStreamIdleTimer(self):
        # The shared timer of HTTP/1.1 streams: it belongs to the stream in
        # flight, if any (a finished stream left it running).
        stream = self._stream
        if stream is not None:
            stream._onIdleTimer()

    def _onStreamDone(self, now):
        self._idleSince = now
        if self._http2:
            # The codec closes after its final GOAWAY once no stream is left.
            return
        if self._drainSequence:
            if self._drainTimedOut and self._stream is None and not self._closed:
                self._closeConnection(delay=True)
            return
        if self._draining and self._stream is None and not self._closed:
            if log.debugEnabled:
                log.debug("%sdrain closing connection", self.logTag())
            self._closeConnection()

    def startDrain(self):
        """
        Close gracefully (the server drains): now when no request is in
        flight, else after the current response (C{connection: close}).
        """
        if self._closed:
            return
        if self._http2:
            if not self._draining:
                self._startDrainSequence()
            return
        self._draining = True
        if self._stream is None and self._headTimer is None:
            if log.debugEnabled:
                log.debug("%sdrain closing connection", self.logTag())
            self._closeConnection()

    def _startDrainSequence(self):
        """
        Envoy's C{startDrainSequence} for HTTP/1.1: responses say
        C{connection: close} and the connection is closed C{drain_timeout}
        later (or after the response then in flight), with the delayed
        close of a connection closed after a response.
        """
        self._draining = True
        self._drainSequence = True
        if self._http2:
            # Envoy's shutdownNotice: a GOAWAY naming the largest stream id.
            self.codec.goAway()
        self.timers.callLater(self.config.drainTimeout, self._onDrainTimeout)

    def _onDrainTimeout(self):
        self._drainTimedOut = True
        if self._http2:
            # Envoy's goAway: the real last stream id; the codec closes once
            # the streams in flight are done.
            self.codec.goAway(final=True)
            return
        if self._stream is None and not self._closed:
            self._closeConnection(delay=True)

    # Timers.

    def _onIdleTimer(self):
        # reduce_timeouts shortens the idle timeout while memory is short.
        timeout = self.overload.scaledTimeout(HTTP_DOWNSTREAM_CONNECTION_IDLE,
                                              self.config.idleTimeout)
        if self._streams or self._headTimer is not None or self._closed:
            self.timers.scheduleAt(self._idleTimer, self.reactor.seconds() + timeout)
            return
        due = self._idleSince + timeout
        if self.reactor.seconds() < due:
            self.timers.scheduleAt(self._idleTimer, due)
            return
        self.stats.downstream_cx_idle_timeout.inc()
        if log.debugEnabled:
            log.debug("%sidle timeout", self.logTag())
        if self._drainSequence:
            return
        self.connection.streamInfo.connectionTerminationDetails = "http idle timeout"
        if self._dataSeen:
            # Envoy drains a connection whose codec exists (it has read
            # a byte); one that never spoke is closed at once.
            self._startDrainSequence()
            return
        self._closeConnection()

    def _onTimeoutsScaled(self, value):
        """C{reduce_timeouts} changed: the idle timer may be due sooner."""
        if self._closed:
            return
        timeout = self.overload.scaledTimeout(HTTP_DOWNSTREAM_CONNECTION_IDLE,
                                              self.config.idleTimeout)
        due = self._idleSince + timeout
        if due < self._idleTimer.when:
            self.timers.scheduleAt(self._idleTimer, due)

    def _onMaxConnectionDuration(self):
        self.stats.downstream_cx_max_duration_reached.inc()
        if log.debugEnabled:
            log.debug("%smax connection duration reached", self.logTag())
        if self._http2:
            self._startDrainSequence()
            return
        self._draining = True
        if self._stream is None and self._headTimer is None:
            self._closeConnection()

    def _onHeadTimeout(self):
        self._headTimer = None
        if self._stream is not None or self._closed:
            return
        config = self.config
        elapsed = self.reactor.seconds() - self._headStart
        choices = []
        if config.requestHeadersTimeout:
            choices.append((config.requestHeadersTimeout, 0))
        if config.streamIdleTimeout:
            choices.append((config.streamIdleTimeout, 1))
        if config.requestTimeout:
            choices.append((config.requestTimeout, 2))
        choices.sort()
        for timeout, kind in choices:
            if elapsed + 1e-9 >= timeout:
                break
        else:
            self._headTimer = self.timers.callLater(choices[0][0] - elapsed, self._onHeadTimeout)
            return
        info = self._newStreamInfo()
        stats = self.stats
        stats.downstream_rq_total.inc()
        stats.downstream_rq_http1_total.inc()
        if kind == 0:
            stats.downstream_rq_header_timeout.inc()
            body, details = b"request header timeout", "request_header_timeout"
        elif kind == 1:
            stats.downstream_rq_idle_timeout.inc()
            info.setResponseFlag(ResponseFlag.STREAM_IDLE_TIMEOUT)
            body, details = b"stream timeout", "stream_idle_timeout"
        else:
            stats.downstream_rq_timeout.inc()
            body, details = b"request timeout", "request_overall_timeout"
        info.responseCodeDetails = details
        headers, body = makeLocalReply(config.localReply, info, None, 408, body)
        self._finishResponseHeaders(headers, None, info, False)
        entries = headers.headers._entries
        entries.append((b"connection", b"close"))
        if not body:
            entries.append((b"content-length", b"0"))
        status = headers.status
        info.responseCode = status
        info.bytesSent = len(body)
        self.write(statusLine(status) + b"".join(
            [n + b": " + v + b"\r\n" for n, v in entries]) + b"\r\n" + body)
        self._chargeReply(status)
        # Envoy's stream for the partial head: answered before the request
        # was complete, reset when the connection closes, after the delay.
        stats.downstream_rq_response_before_rq_complete.inc()
        stats.downstream_rq_rx_reset.inc()
        self._closeConnection(delay=True)
        info.onComplete()
        for logger in config.accessLogs:
            logger.log(info, None, headerView(headers))

    def _finishResponseHeaders(self, headers, request, info, upgrade, close=False):
        """
        What the connection manager does to every response head: the
        header rules of L{mutateResponseHeaders}, then the drain decision.

        @return: whether C{connection: close} was added.
        """
        config = self.config
        mutateResponseHeaders(config, headers, request, self.dateCache.value(), upgrade)
        if not self._draining:
            server = config.server
            listenerDrain = self.listenerDrain
            if ((server is not None and server.drainClose())
                    or (listenerDrain is not None and listenerDrain.drainClose())):
                self._startDrainSequence()
                self.stats.downstream_cx_drain_close.inc()
            elif self.overload.shouldApply(DISABLE_HTTP_KEEPALIVE):
                # Envoy 1.40 counts this drain as a drain close too.
                self._startDrainSequence()
                self.stats.downstream_cx_overload_disable_keepalive.inc()
                self.stats.downstream_cx_drain_close.inc()
        if request is not None and not request.keepAlive and not self._http2:
            # Envoy's saw_connection_close: the HTTP/1 client asked to
            # close, so the response map itself says so (logs see it).
            close = True
        if (self._draining or close) and not upgrade:
            headers.headers.set(b"connection", b"close")
            return True
        return False



@implementer(IFilterManagerStream, IRequestDecoder)
class ActiveStream:
    """
    One request and its response (Envoy's C{ActiveStream} and its filter
    manager): the codec's decoder for the request, and what HTTP filters
    reach through their callbacks.

    @ivar streamInfo: the request's L{StreamInfo}.
    @ivar requestHeaders: the L{txenvoy.http.headers.RequestHeaders}.
    @ivar responseHeaders: the response head once sent.
    """

    # As ConnectionManager's: per request, more than 30 attributes in its
    # __dict__ would turn it into a plain dict once a request is under way.
    __slots__ = ("cm", "encoder", "_routeTable", "streamId", "requestHeaders",
                 "responseHeaders", "streamInfo", "_slots", "_lastActivity", "__dict__",
                 "__weakref__")

    _decoding = None
    _encoding = None
    _only = None
    _routeCached = False
    _route = None
    _remoteComplete = False
    _complete = False
    _responseStarted = False
    _decodeStopped = False
    _noBody = False
    _upgrade = False
    _readDisabled = 0
    _watermarkCallbacks = ()
    _startTime = None
    _destroyed = False
    closeAfter = False
    # The body bytes that end the request are being decoded: Envoy's HTTP/1
    # codec hands them over before the end (decodeData(body, false), then
    # decodeData(empty, true)), so a reply its filters send now comes
    # before the request is complete (connection: close).
    _endInFlight = False
    _idleTimeout = 0.0
    _logTag = None
    _idleTimer = None
    _requestTimer = None
    _maxTimer = None
    #: The connection manager's span (L{txenvoy.interfaces.ISpan}) when
    #: the C{tracing} block is set.
    activeSpan = None
    _decoratedOperation = None
    #: The request's header entries as the codec gave them (a copy).
    _sentEntries = None

    @property
    def _grpcRequest(self):
        # Envoy's is_grpc_request_: decided on the request as the client
        # sent it, before a filter (grpc_web) makes it gRPC.
        entries = self._sentEntries
        if entries is None:
            return False
        return isGrpcContentType(HeaderMap.fromList(entries).get(b"content-type"))

    _upgradeAccepted = False
    _upgradeCounted = False     # a CONNECT, counted as an upgrade when decoded
    #: Made by an internal redirect (Envoy's is_internally_created): the
    #: request headers were prepared by the first pass.
    internallyCreated = False

    def __init__(self, cm, encoder):
        _startStream(self, cm, encoder)

    def logTag(self):
        """
        This stream's prefix for log lines (L{streamTag}), with a random
        64-bit stream id as Envoy's, drawn the first time a line needs it.
        """
        tag = self._logTag
        if tag is None:
            tag = self._logTag = streamTag(self.cm.connection.streamInfo.connectionId,
                                           _getrandbits(64))
        return tag

    # The codec's decoder.

    def decodeHeaders(self, request, endStream):
        """The codec's request head: prepare it, then run the decoder filters."""
        cm = self.cm
        config = cm.config
        stats = cm.stats
        reactor = cm.reactor
        previous = self.streamInfo
        info = self.streamInfo = requestStreamInfo(reactor, cm.connection.streamInfo)
        if previous is not None:
            # An internal redirect's stream: the request's filter state
            # (the redirect count, the predicates' memory) carries over.
            info.filterState = previous.filterState
        info.protocol = request.version
        # Counters are added to directly on the per-request path (no call).
        stats.downstream_rq_total.value += 1
        cm.rqProtocolStat.value += 1
        active = stats.downstream_rq_active
        active.value += 1       # Gauge.inc, inline
        active.used = True
        self.requestHeaders = request
        # (A copy of the list is cheaper than looking the header up, which
        # only a local reply needs: see _grpcRequest.)
        self._sentEntries = request.headers._entries[:]
        cm._lastStream = self
        if log.debugEnabled:
            log.debug("%srequest headers complete (end_stream=%s):\n%s", self.logTag(),
                      "true" if endStream else "false", dumpRequestHeaders(request))
        now = info._startMonotonic       # the reactor's time, as just read
        start = self._startTime
        if start is None:
            start = self._startTime = now
        self._lastActivity = now
        if endStream:
            self._remoteComplete = True
            self.streamInfo.lastDownstreamRxMonotonic = now
        if request.method == b"HEAD":
            self._noBody = True
        timers = cm.timers
        idle = self._idleTimeout = config.streamIdleTimeout
        if idle:
            if cm._http2:
                self._idleTimer = timers.startAt(now + idle, self._onIdleTimer)
            else:
                # HTTP/1.1 runs one stream at a time: its streams share one
                # timer, left running when a stream ends (see
                # ConnectionManager._onStreamIdleTimer), instead of a timer
                # made, started and cancelled per request.
                t = cm._streamIdleTimer
                if t is None:
                    t = cm._streamIdleTimer = timers.timer(cm._onStreamIdleTimer)
                self._idleTimer = t
                timers.scheduleAt(t, now + idle)
        if config.requestTimeout and not endStream:
            self._requestTimer = timers.startAt(start + config.requestTimeout,
                                                self._onRequestTimerFired)
        if config.maxStreamDuration:
            self._maxTimer = timers.startAt(start + config.maxStreamDuration,
                                            self._onMaxDurationTimer)

        if cm.overload.shouldApply(STOP_ACCEPTING_REQUESTS):
            # Envoy answers before building any filter: under memory
            # pressure nothing more is allocated for the request.
            stats.downstream_rq_overload_close.inc()
            info.setResponseFlag(ResponseFlag.OVERLOAD_MANAGER)
            self.sendLocalReply(503, b"envoy overloaded", None, "overload")
            return
        if not self.internallyCreated and not mutateRequestHeaders(self, request):
            return
        if config.tracing is not None:
            self.activeSpan, self._decoratedOperation = config.tracing.startSpan(
                cm.dispatcher, request, info, self.route(), cm.egress)
        upgrade = request.upgrade
        if upgrade is not None:
            allowed = upgrade in config.upgradeTypes
            route = self.route()
            if route is not None:
                enabled = route.entry.upgradeMap.get(upgrade) if hasattr(
                    route.entry, "upgradeMap") else None
                if enabled is not None:
                    allowed = enabled
            if allowed:
                self._upgrade = True
                if upgrade == b"connect":
                    # Envoy counts a CONNECT it accepts as an upgrade when
                    # it makes the stream's upgrade filter chain, whatever
                    # the answer; its tunnel's end closes at once.
                    self._upgradeCounted = True
                    stats.downstream_cx_upgrades_total.inc()
                    stats.downstream_cx_upgrades_active.inc()
            else:
                # Envoy 1.40 refuses a CONNECT neither the connection
                # manager nor the route enables as it refuses an upgrade.
                self.sendLocalReply(403, b"", None, "upgrade_failed")
                return

        single = config.singleDecoder
        if single is not None:
            # The common chain, the router alone: nothing follows it, so
            # there is nothing to stop or resume and events go straight to it.
            slot = startSlot(_newObject(SingleFilterSlot), self, single[0])
            slot.streamInfo = info
            slot.dispatcher = cm.dispatcher
            slot.activeSpan = self.activeSpan
            only = slot.filter = single[1].createFilter(slot)
            self._slots = (slot,)
            slot.decIndex = 0
            status = only.decodeHeaders(request, endStream)
            if status >= FilterHeadersStatus.StopAllIterationAndBuffer and not (
                    self._decodeStopped or self._destroyed):
                self._holdAfterSingle(slot, request, endStream)
            elif not self._destroyed:
                # (A stream answered at once, a direct response, is gone.)
                self._only = only
            return
        slots = []
        decoders = []
        encoders = []
        for name, factory in config.filterFactories:
            slot = FilterSlot(self, name)
            f = slot.filter = factory.createFilter(slot)
            slots.append(slot)
            isDecoder, isEncoder = filterRoles(f)
            if isDecoder:
                slot.decIndex = len(decoders)
                decoders.append(slot)
            if isEncoder:
                encoders.append(slot)
        self._slots = slots
        limit = self.bufferLimit()
        if len(decoders) == 1 and not encoders:
            if len(slots) == 1:
                # From now on this chain takes the short way above.
                config.singleDecoder = config.filterFactories[0]
            only = decoders[0].filter
            status = only.decodeHeaders(request, endStream)
            if status >= FilterHeadersStatus.StopAllIterationAndBuffer and not (
                    self._decodeStopped or self._destroyed):
                self._holdAfterSingle(decoders[0], request, endStream)
            elif not self._destroyed:
                self._only = only
            return
        self._decoding = FilterIteration(self, decoders, DECODE_NAMES, DECODE_SINKS, limit,
                                         self._onDecodeOverflow)
        if encoders:
            encoders.reverse()
            for i, slot in enumerate(encoders):
                slot.encIndex = i
            self._encoding = FilterIteration(
                self, encoders, ENCODE_NAMES,
                (self._finalEncodeHeaders, self._finalEncodeData, self._finalEncodeTrailers),
                limit, self._onEncodeOverflow)
        self._decoding.runHeaders(request, endStream)

    def _holdAfterSingle(self, slot, request, endStream):
        # The lone filter wants the body held until it continues.
        it = self._decoding = FilterIteration(self, [slot], DECODE_NAMES, DECODE_SINKS,
                                              self.bufferLimit(), self._onDecodeOverflow)
        it.headers = request
        it.headersPassed = 1
        it.stop = 0
        it.stopAll = True
        it.endSeen = endStream

    def decodeData(self, data, endStream):
        """Request body bytes from the codec (or raw bytes after an upgrade)."""
        self._lastActivity = self.cm.reactor.seconds()
        info = self.streamInfo
        info.bytesReceived += len(data)
        if endStream:
            self._onRemoteComplete()
        if self._decodeStopped:
            return
        only = self._only
        if only is not None:
            only.decodeData(data, endStream)
            return
        decoding = self._decoding
        if decoding is not None:
            if endStream and data:
                self._endInFlight = True
                try:
                    decoding.runData(data, endStream)
                finally:
                    self._endInFlight = False
            else:
                decoding.runData(data, endStream)

    def decodeTrailers(self, trailers):
        """Request trailers from the codec."""
        self._onRemoteComplete()
        if self._decodeStopped:
            return
        only = self._only
        if only is not None:
            filterMethod(only, "decodeTrailers")(only, trailers)
            return
        decoding = self._decoding
        if decoding is not None:
            decoding.runTrailers(trailers)

    def _onRemoteComplete(self):
        if not self._remoteComplete:
            self._remoteComplete = True
            self.streamInfo.lastDownstreamRxMonotonic = self.cm.reactor.seconds()
            if self._requestTimer is not None:
                self._requestTimer.cancel()

    def iterationStopped(self, iteration):
        """See L{IFilterManagerStream.iterationStopped}."""
        if iteration is self._decoding:
            return self._decodeStopped or self._destroyed
        return self._destroyed or iteration is not self._encoding

    # Request processing.

    def route(self):
        """The request's route, resolved once (see L{IStreamFilterCallbacks.route})."""
        if self._routeCached:
            return self._route
        request = self.requestHeaders
        table = self._routeTable
        route = None
        if table is not None and request is not None:
            route = table.route(request.authority, request.path, request.headers,
                                request.method)
        self._route = route
        self._routeCached = True
        if route is not None:
            self.streamInfo.routeName = route.entry.name
        elif self.streamInfo is not None:
            # Envoy's stream info forgets a route the request no longer has.
            self.streamInfo.routeName = ""
        return route

    def clearRouteCache(self):
        """See L{IStreamFilterCallbacks.clearRouteCache}."""
        self._routeCached = False
        self._route = None

    def continueDecoding(self, index):
        """See L{IFilterManagerStream.continueDecoding}."""
        it = self._decoding
        if it is not None:
            it.resume(index)

    def continueEncoding(self, index):
        """See L{IFilterManagerStream.continueEncoding}."""
        it = self._encoding
        if it is not None:
            it.resume(index)

    def decodingBuffer(self, index):
        """See L{IFilterManagerStream.decodingBuffer}."""
        it = self._decoding
        if it is not None and it.stop == index and it.buf:
            return b"".join(it.buf)
        return None

    @property
    def connection(self):
        """The downstream connection."""
        return self.cm.connection

    @property
    def dispatcher(self):
        """The worker's dispatcher."""
        return self.cm.dispatcher

    def callLater(self, delay, f):
        """A timer on the connection's L{TimerSet}."""
        return self.cm.timers.callLater(delay, f)

    def addWatermarkCallbacks(self, callbacks):
        """See L{IStreamFilterCallbacks.addDownstreamWatermarkCallbacks}."""
        self._watermarkCallbacks = self._watermarkCallbacks + (callbacks,)
        if self.cm._above:     # aboveHighWatermark, without the property call
            callbacks.onAboveWriteBufferHighWatermark()

    def removeWatermarkCallbacks(self, callbacks):
        """See L{IStreamFilterCallbacks.removeDownstreamWatermarkCallbacks}."""
        self._watermarkCallbacks = tuple(
            c for c in self._watermarkCallbacks if c is not callbacks)

    def writeBatcher(self):
        """The connection manager: it corks and uncorks the connection's writes."""
        return self.cm

    def setMaxStreamDuration(self, timeout):
        """
        The route's stream duration (its C{max_stream_duration}, or a gRPC
        request's C{grpc-timeout} under C{grpc_timeout_header_max}) replaces
        the connection manager's, counted from the stream's start; 0
        disables it.
        """
        timer = self._maxTimer
        if timer is not None and timer.active:
            timer.cancel()
        if timeout:
            if timer is None:
                timer = self._maxTimer = self.cm.timers.timer(self._onMaxDurationTimer)
            self.cm.timers.scheduleAt(timer, self._startTime + timeout)

    def setIdleTimeout(self, timeout):
        """
        The route's C{idle_timeout}: replaces C{stream_idle_timeout} for
        this stream from now on (0 disables it), as in Envoy.
        """
        self._idleTimeout = timeout
        timer = self._idleTimer
        if timeout:
            if timer is None:
                timer = self._idleTimer = self.cm.timers.timer(self._onIdleTimer)
            self.cm.timers.scheduleAt(timer, self._lastActivity + timeout)
        elif timer is not None and timer.active:
            timer.cancel()

    # Flow control.

    def bufferLimit(self):
        """The listener's C{per_connection_buffer_limit_bytes} (1 MiB without one)."""
        listener = getattr(self.cm.connection, "listener", None)
        if listener is None:
            return 1024 * 1024
        return listener.config.perConnectionBufferLimitBytes

    def readDisable(self, disable):
        """See L{IFilterManagerStream.readDisable}."""
        if disable:
            self._readDisabled += 1
            self.encoder.readDisable(True)
        elif self._readDisabled:
            self._readDisabled -= 1
            self.encoder.readDisable(False)

    # Local replies and resets.

    def sendLocalReply(self, code, body=b"", modifyHeaders=None, details="", grpcStatus=None):
        """
        See L{IStreamFilterCallbacks.sendLocalReply}; C{grpcStatus} is the
        C{grpc-status} a gRPC request gets instead of the mapped one.
        """
        if self._destroyed or self._complete:
            return
        if self._responseStarted:
            if log.debugEnabled:
                log.debug("%sresetting stream instead of a local reply (%s): response started",
                          self.logTag(), details)
            self.resetStream()
            return
        self._decodeStopped = True
        info = self.streamInfo
        info.responseCodeDetails = details
        if log.debugEnabled:
            log.debug("%sSending local reply with details %s", self.logTag(), details)
        headers, body = makeLocalReply(self.cm.config.localReply, info, self.requestHeaders,
                                       code, body, modifyHeaders)
        if self._grpcRequest:
            # Envoy answers a gRPC request with a trailers-only 200 whose
            # grpc-status is the reply's mapped status.
            if grpcStatus is not None:
                headers.headers.set(b"grpc-status", b"%d" % (grpcStatus,))
            headers = grpcLocalReply(headers, body)
            body = b""
        if self._encoding is not None:
            # A fresh pass through every encoder filter.
            old = self._encoding
            self._encoding = FilterIteration(self, old.slots, ENCODE_NAMES,
                                             (old.sinkHeaders, old.sinkData, old.sinkTrailers),
                                             old.limit, old.overflow)
        if body:
            # Head and body leave in one write: two small writes would wait
            # on the client's delayed ACK (Nagle), some 40 ms.
            cm = self.cm
            cm.cork()
            try:
                self.encodeHeaders(headers, False)
                if not self._destroyed and not self._complete:
                    self.encodeData(body, True)
            finally:
                cm.uncork()
        else:
            self.encodeHeaders(headers, True)

    def recreateStream(self, responseHeaders, body=b""):
        """
        See L{IStreamFilterCallbacks.recreateStream} (Envoy's
        C{recreateStream}): this stream ends as a request answered with
        C{responseHeaders} (not counted as a response, as Envoy 1.40), and a
        new one takes its encoder and decodes the request again.
        """
        if not self._remoteComplete or self._responseStarted or self._destroyed:
            return False
        info = self.streamInfo
        info.responseCodeDetails = "internal_redirect"
        if responseHeaders is not None:
            info.responseCode = responseHeaders.status
            self.responseHeaders = responseHeaders
        encoder = self.encoder
        request = self.requestHeaders
        cm = self.cm
        self._detach()
        self._destroy(recreating=True)
        stream = cm.newStream(encoder)
        stream.internallyCreated = True
        stream.streamInfo = info        # read once for its filter state
        stream.closeAfter = self.closeAfter
        encoder.setDecoder(stream)
        stream.decodeHeaders(request, not body)
        if body and not stream._destroyed:
            stream.decodeData(body, True)
        return True

    def resetStream(self):
        """
        Abandon the stream; for HTTP/1 the connection is closed, after
        C{delayed_close_timeout} as Envoy closes it.
        """
        if self._destroyed:
            return
        cm = self.cm
        stats = cm.stats
        # Envoy's onResetStream counts every reset, its own too, as rx.
        stats.downstream_rq_tx_reset.inc()
        stats.downstream_rq_rx_reset.inc()
        if log.debugEnabled:
            log.debug("%sstream reset: reset reason: local reset, response details: %s",
                      self.logTag(), self.streamInfo.responseCodeDetails)
        self._detach()
        self.encoder.resetStream()
        self._destroy()

    def onStreamReset(self):
        """
        The client reset the stream (HTTP/2 RST_STREAM), or its connection
        went: Envoy's C{onResetStream}, flag C{DR}.
        """
        if self._destroyed:
            return
        if not self._complete and self.streamInfo is not None:
            self.streamInfo.setResponseFlag(ResponseFlag.DOWNSTREAM_REMOTE_RESET)
        self._onDownstreamReset()

    def onAboveWriteBufferHighWatermark(self):
        """The stream's own send buffer (HTTP/2) is full: its upstream pauses."""
        for cb in self._watermarkCallbacks:
            cb.onAboveWriteBufferHighWatermark()

    def onBelowWriteBufferLowWatermark(self):
        """The stream's own send buffer (HTTP/2) drained."""
        for cb in self._watermarkCallbacks:
            cb.onBelowWriteBufferLowWatermark()

    def _onDownstreamReset(self):
        if self._destroyed:
            return
        self.cm.stats.downstream_rq_rx_reset.inc()
        if log.debugEnabled:
            log.debug("%sstream reset: reset reason: connection termination", self.logTag())
        if not self._complete and self.streamInfo is not None and not \
                self.streamInfo.hasResponseFlag(ResponseFlag.DOWNSTREAM_REMOTE_RESET):
            self.streamInfo.setResponseFlag(ResponseFlag.DOWNSTREAM_CONNECTION_TERMINATION)
        self._detach()
        self._destroy()

    def _onCodecError(self, status, details, protocolError, bodySize, response):
        info = self.streamInfo
        if protocolError:
            info.setResponseFlag(ResponseFlag.DOWNSTREAM_PROTOCOL_ERROR)
        if not self._responseStarted and not self.encoder.responseStarted:
            info.responseCode = status
            info.responseCodeDetails = details
            info.bytesSent += bodySize
            if response is not None:
                self.responseHeaders = response
            self.cm._chargeReply(status)
        self._decodeStopped = True
        self._detach()
        self._destroy()

    def _onIdleTimer(self):
        if self._complete or self._destroyed:
            return
        timeout = self._idleTimeout
        if not timeout:
            return
        due = self._lastActivity + timeout
        if self.cm.reactor.seconds() < due:
            self.cm.timers.scheduleAt(self._idleTimer, due)
            return
        self._onIdleTimeout()

    def _onRequestTimerFired(self):
        if not self._complete and not self._remoteComplete and not self._destroyed:
            self._onRequestTimeout()

    def _onMaxDurationTimer(self):
        if not self._complete and not self._destroyed:
            self._onMaxDuration()

    def _onIdleTimeout(self):
        cm = self.cm
        cm.stats.downstream_rq_idle_timeout.inc()
        if log.debugEnabled:
            log.debug("%sstream idle timeout", self.logTag())
        self.streamInfo.setResponseFlag(ResponseFlag.STREAM_IDLE_TIMEOUT)
        if self._responseStarted:
            self.resetStream()
            return
        code = 504 if self._remoteComplete else 408
        self.sendLocalReply(code, b"stream timeout", None, "stream_idle_timeout")

    def _onRequestTimeout(self):
        self.cm.stats.downstream_rq_timeout.inc()
        if self._responseStarted:
            self.resetStream()
            return
        self.sendLocalReply(408, b"request timeout", None, "request_overall_timeout")

    def _onMaxDuration(self):
        self.cm.stats.downstream_rq_max_duration_reached.inc()
        self.streamInfo.setResponseFlag(ResponseFlag.DURATION_TIMEOUT)
        if self._responseStarted:
            self.resetStream()
            return
        code = 504 if self._remoteComplete else 408
        self.sendLocalReply(code, b"downstream duration timeout", None, "max_duration_timeout",
                            GrpcStatus.DEADLINE_EXCEEDED)

    def _onDecodeOverflow(self):
        self.cm.stats.downstream_rq_too_large.inc()
        self.sendLocalReply(413, b"Payload Too Large", None, "request_payload_too_large")

    def _onEncodeOverflow(self):
        self.cm.stats.rs_too_large.inc()
        if self._responseStarted:
            self.resetStream()
            return
        self._encoding = None
        self.sendLocalReply(500, b"Internal Server Error", None, "response_payload_too_large")

    # Encoding (from decoder filters, through the encoder filters).

    def encodeHeaders(self, headers, endStream):
        """Send a response head through every encoder filter."""
        if self._destroyed or self._complete:
            return
        encoding = self._encoding
        if encoding is None:
            self._finalEncodeHeaders(headers, endStream)
        else:
            encoding.runHeaders(headers, endStream)

    def encodeData(self, data, endStream):
        """Send response body bytes through every encoder filter."""
        if self._destroyed or self._complete:
            return
        encoding = self._encoding
        if encoding is None:
            self._finalEncodeData(data, endStream)
        else:
            encoding.runData(data, endStream)

    def encodeTrailers(self, trailers):
        """End the response with trailers, through every encoder filter."""
        if self._destroyed or self._complete:
            return
        encoding = self._encoding
        if encoding is None:
            self._finalEncodeTrailers(trailers)
        else:
            encoding.runTrailers(trailers)

    def _finalEncodeHeaders(self, headers, endStream):
        cm = self.cm
        self.responseHeaders = headers
        self._responseStarted = True
        status = headers.status
        info = self.streamInfo
        info.responseCode = status
        if info.responseCodeDetails is None:
            info.responseCodeDetails = "via_upstream"
        # Envoy's isUpgrade or isConnectResponse: a 101, or the 2xx that
        # accepts an HTTP/2 extended CONNECT (WebSocket over HTTP/2).
        upgrade = self._upgrade and (status == 101 or (
            200 <= status < 300 and self.requestHeaders.method == b"CONNECT"))
        self._upgradeAccepted = upgrade
        if self._decoratedOperation is not None:
            headers.headers.set(b"x-envoy-decorator-operation", self._decoratedOperation)
        beforeComplete = not self._remoteComplete or self._endInFlight
        cm._finishResponseHeaders(headers, self.requestHeaders, info, upgrade,
                                  self.closeAfter or self._endInFlight)
        if status == 204 or status == 304:
            self._noBody = True
        stats = cm.stats
        listenerStats = cm.listenerStats
        klass = status // 100
        if 1 <= klass <= 5:
            stats.byClass[klass].value += 1
            listenerStats.byClass[klass].value += 1
        # Envoy's chargeStats: a request counts as completed once its
        # response head is sent, even if the stream is reset later.
        stats.downstream_rq_completed.value += 1
        listenerStats.downstream_rq_completed.value += 1
        if beforeComplete:
            stats.downstream_rq_response_before_rq_complete.inc()
        if log.debugEnabled:
            log.debug("%sencoding headers via codec (end_stream=%s):\n%s", self.logTag(),
                      "true" if endStream else "false", dumpResponseHeaders(headers))
        now = cm.reactor.seconds()
        info.firstDownstreamTxMonotonic = now
        if endStream:
            info.lastDownstreamTxMonotonic = info.endMonotonic = now
            self._beforeComplete()
            self.encoder.encodeHeaders(headers, True)
            self._afterComplete()
            return
        self._lastActivity = now
        self.encoder.encodeHeaders(headers, False)
        if upgrade:
            if not self._upgradeCounted:
                stats.downstream_cx_upgrades_total.inc()
                stats.downstream_cx_upgrades_active.inc()
            if not cm._http2:
                # HTTP/2 carries the upgraded stream in DATA frames; HTTP/1
                # gives the connection over to raw bytes.
                cm._upgraded = True
                if cm.codec is not None:
                    cm.codec.switchToRaw(self._onRawData)

    def _onRawData(self, data):
        if not self._destroyed:
            self.decodeData(data, False)

    def _finalEncodeData(self, data, endStream):
        if log.traceEnabled:
            log.trace("%sencoding data via codec (size=%d end_stream=%s)", self.logTag(),
                      len(data), "true" if endStream else "false")
        if data and not self._noBody:
            self.streamInfo.bytesSent += len(data)
        if endStream:
            # The stream ends with this write: its end time is this one.
            info = self.streamInfo
            info.lastDownstreamTxMonotonic = info.endMonotonic = self.cm.reactor.seconds()
            self._beforeComplete()
            self.encoder.encodeData(data, True)
            self._afterComplete()
            return
        self._lastActivity = self.cm.reactor.seconds()
        self.encoder.encodeData(data, False)

    def _finalEncodeTrailers(self, trailers):
        self.streamInfo.lastDownstreamTxMonotonic = self.cm.reactor.seconds()
        self._beforeComplete()
        self.encoder.encodeTrailers(trailers)
        self._afterComplete()

    # The end.

    def _detach(self):
        cm = self.cm
        if cm._stream is self:
            cm._stream = None
        cm._streams.discard(self)
        # Timer.cancel() leaves an inactive timer alone.
        timer = self._idleTimer
        if timer is not None and timer is not cm._streamIdleTimer:
            timer.cancel()
        if self._requestTimer is not None:
            self._requestTimer.cancel()
        if self._maxTimer is not None:
            self._maxTimer.cancel()
        while self._readDisabled:
            self._readDisabled -= 1
            self.encoder.readDisable(False)

    def _beforeComplete(self):
        # The codec may hand the next pipelined request over while it
        # writes this response's end: the connection must be ready for it.
        self._complete = True
        if self._upgradeCounted and not self._remoteComplete:
            info = self.streamInfo
            failed = getattr(self.encoder, "connectFailed", None)
            if failed is not None and (
                    info.hasResponseFlag(ResponseFlag.UPSTREAM_CONNECTION_FAILURE)
                    or info.hasResponseFlag(ResponseFlag.UPSTREAM_CONNECTION_TERMINATION)):
                # Envoy's doEndStream: a CONNECT whose TCP connection
                # failed ends with CONNECT_ERROR (HTTP/2).
                failed()
        self._detach()

    def _afterComplete(self):
        if log.debugEnabled:
            log.debug("%sCodec completed encoding stream.", self.logTag())
        if not self._remoteComplete:
            # The HTTP/2 codec resets the stream whose request goes on
            # (RST_STREAM NO_ERROR); the HTTP/1 codec resets it when it
            # closes the connection (a response before the request's end, a
            # CONNECT tunnel's end). Envoy counts that reset here.
            self.cm.stats.downstream_rq_rx_reset.inc()
        self._destroy()

    def _destroy(self, recreating=False):
        if self._destroyed:
            return
        self._destroyed = True
        cm = self.cm
        stats = cm.stats
        info = self.streamInfo
        for slot in self._slots:
            f = slot.filter
            if f is not None:
                filterMethod(f, "onDestroy")(f)
        encoder = self.encoder
        info.downstreamWireBytesSent = getattr(encoder, "wireBytesSent", 0)
        info.downstreamHeaderBytesSent = getattr(encoder, "headerBytesSent", 0)
        now = info.endMonotonic
        if now is None:
            now = info.endMonotonic = cm.reactor.seconds()     # info.onComplete(), inline
        active = stats.downstream_rq_active
        active.value -= 1       # Gauge.dec, inline
        active.used = True
        if self._upgradeAccepted or self._upgradeCounted:
            stats.downstream_cx_upgrades_active.dec()
        stats.downstream_rq_time.recordValue((now - self._startTime) * 1000.0)
        span = self.activeSpan
        if span is not None:
            cm.config.tracing.finishSpan(span, self.requestHeaders, self.responseHeaders, info,
                                         self._route)
        logs = cm.config.accessLogs
        if logs:
            request = headerView(self.requestHeaders)
            response = headerView(self.responseHeaders)
            for logger in logs:
                logger.log(info, request, response)
        if not recreating:
            # A redirect's new stream follows at once: nothing to close.
            cm._onStreamDone(now)
        # Drop the stream's side of its reference cycles (filters and their
        # callbacks, timers bound to its methods, the codec's stream) so that
        # reference counting frees a finished stream at once and the cyclic
        # collector finds no per-request garbage.
        for slot in self._slots:
            slot.filter = None
        self._slots = ()
        self._only = None
        # The filter chain's iterations point back at the stream.
        self._decoding = self._encoding = None
        self._watermarkCallbacks = ()
        self._idleTimer = self._requestTimer = self._maxTimer = None
        self.encoder = None


def _startStream(self, cm, encoder):
    # ActiveStream.__init__'s body: ConnectionManager.newStream fills a new
    # instance with it directly, without Python's class call (whose path
    # through __init__ costs about as much as filling the fields), once
    # per request.
    self.cm = cm
    self.encoder = encoder
    # Envoy's snapped route config: an RDS update reaches new streams only.
    self._routeTable = cm.config.routeTable
    self.streamId = next(_ids)
    self.requestHeaders = None
    self.responseHeaders = None
    self.streamInfo = None
    self._slots = ()
    # What every request reads, as attributes of the instance: Python
    # reads a class-level default several times slower.
    self._startTime = None
    self._destroyed = False
    self._complete = False
    self._encoding = None
    self._endInFlight = False
    self._routeCached = False
    self._watermarkCallbacks = ()
    self._upgrade = False
    self._upgradeCounted = False
    self.activeSpan = None
    self._decoratedOperation = None
    self.closeAfter = False
    self._noBody = False
    self._idleTimer = self._requestTimer = self._maxTimer = None
    self._readDisabled = 0
    return self
