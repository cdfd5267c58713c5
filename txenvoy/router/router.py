# -*- test-case-name: tests.router.test_router -*-
"""
The router filter (Envoy's C{Router::Filter}): the terminal HTTP filter
that answers from the route (direct responses, redirects, 404 when nothing
matches) or forwards the request to a host of the route's cluster, with
timeouts and retries, and streams the response back.

Behaviour copied from Envoy 1.40 (each pinned by a test against the
binary's output):

 - no route: 404 with an empty body, flag C{NR}, C{http.<p>.no_route};
 - unknown cluster: the route's C{cluster_not_found_response_code} (503)
   with an empty body, flag C{NC}, C{http.<p>.no_cluster};
 - no host: 503 C{no healthy upstream}, flag C{UH};
 - connect failure: 503 C{upstream connect error or disconnect/reset before
   headers. reset reason: remote connection failure}, flag C{UF}; after
   retries the body reads C{... retried and the latest reset reason: ...}
   and the flags gain C{URX};
 - the host closes before the response head: 503 C{... connection
   termination}, flag C{UC}; an unparseable response: 502 C{... protocol
   error}, flag C{UPE}; either after the head was passed on: the
   downstream connection is closed;
 - the route timeout, started once the whole request was received: 504
   C{upstream request timeout}, flag C{UT},
   C{cluster.<c>.upstream_rq_timeout}; C{per_try_timeout} bounds each
   attempt until its response head (C{upstream_rq_per_try_timeout});
 - retries (C{5xx}, C{gateway-error}, C{connect-failure}, C{reset},
   C{retriable-4xx}, C{retriable-status-codes}, C{retriable-headers},
   C{envoy-ratelimited}; none for a request that no
   C{retriable_request_headers} matcher matches) with exponential back-off
   and full jitter (C{base_interval} 25 ms, capped at C{max_interval}), or
   the interval a response's C{rate_limited_retry_back_off} reset header
   gives (C{upstream_rq_retry_backoff_ratelimited});
   when retries are exhausted on a 5xx the host's last response is passed
   on with flag C{URX}; a retried response is counted under
   C{cluster.<c>.retry.upstream_rq_*} only;
 - every answer is counted as C{upstream_rq_<code>}, its class and
   C{upstream_rq_completed}, and again under C{external.} or, when the
   forwarded request says C{x-envoy-internal: true}, C{internal.} (with
   the C{upstream_rq_time} histogram); a redirect counts as
   C{rq_direct_response}, as any direct response;
 - a request lost to the idle-close race (the host closed a reused
   connection without a byte of answer) is sent again at once on another
   connection when that is safe (an idempotent method, its body held),
   spending no retry; any other gets Envoy's 503 C{connection termination};
 - to the host: C{x-envoy-expected-rq-timeout-ms} (the per-try timeout when
   it is the smaller), C{x-envoy-original-path} on a path rewrite, the
   route's header mutations, host rewrites; to the client:
   C{x-envoy-upstream-service-time}.

The request body is kept for a retry only while it fits in the buffer
limit; past it, retries are given up (C{retry_or_shadow_abandoned}) and the
body streams on.
"""

import random

from zope.interface import implementer

from txenvoy.http.conn_pool import OVERFLOW, PROTOCOL_ERROR, poolsFor
from txenvoy.http.grpc.common import isGrpcRequest, parseGrpcTimeout
from txenvoy.http.filter import (
    FilterDataStatus,
    FilterHeadersStatus,
    FilterSlot,
    FilterTrailersStatus,
    SingleFilterSlot,
)
from txenvoy.http.filter_config import snapshotSource
from txenvoy.http.hash_policy import generateCookie, generateHash
from txenvoy.http.header_dump import dumpRequestHeaders, dumpResponseHeaders
from txenvoy.http.header_mutation import FormatContext
from txenvoy.interfaces import IConnectionPoolCallbacks, IHttpFilterFactory, IResponseDecoder
from txenvoy.network.stream_info import ResponseFlag
from txenvoy.router.internal_redirect import NUM_INTERNAL_REDIRECTS, parseAbsoluteUrl
from txenvoy.router.shadow import ShadowRequests
from txenvoy.router.tcp_upstream import tcpPoolFor
from txenvoy.server.logging import componentLogger
from txenvoy.stats.per_worker import perWorkerMethod
from txenvoy.upstream.connection import (
    CONNECT_TIMEOUT,
    LOCAL_CONNECTION_FAILURE,
    REMOTE_CONNECTION_FAILURE,
)
from txenvoy.upstream.load_balancer_context import LoadBalancerContext
from txenvoy.upstream.outlier_detection import (
    LOCAL_ORIGIN_CONNECT_FAILED,
    LOCAL_ORIGIN_CONNECT_SUCCESS,
    LOCAL_ORIGIN_TIMEOUT,
)
from txenvoy.upstream.retry_host_selection import PreviousPriorities, RetryHostSelection

__all__ = ["RouterConfig", "RouterFilter", "UpstreamRequest"]

log = componentLogger("router")


def _tag(callbacks):
    # The stream's log prefix; a filter test's fake callbacks may have none.
    stream = getattr(callbacks, "stream", None)
    logTag = getattr(stream, "logTag", None)
    return logTag() if logTag is not None else ""


def _scheme(callbacks, request):
    # What the upstream request's :scheme is: the request's own, else the
    # downstream connection's.
    if request.scheme is not None:
        return request.scheme
    cm = getattr(getattr(callbacks, "stream", None), "cm", None)
    return getattr(cm, "scheme", b"http")


def _path(request):
    path = request.path
    return path.decode("latin-1") if path is not None else ""

_STOP = FilterHeadersStatus.StopIteration
_NO_BUFFER = FilterDataStatus.StopIterationNoBuffer
_TRAILERS_STOP = FilterTrailersStatus.StopIteration

_RESET_PREFIX = "upstream connect error or disconnect/reset before headers. "

# Methods whose requests may be sent twice (RFC 9110 9.2.2).
_IDEMPOTENT = frozenset([b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"])
# How many times one request may meet an idle-close race.
_MAX_REPLAYS = 3

# Retry condition bits (Envoy's RetryPolicy::RETRY_ON_*).
_RETRY_5XX = 1
_RETRY_GATEWAY_ERROR = 2
_RETRY_CONNECT_FAILURE = 4
_RETRY_RETRIABLE_4XX = 8
_RETRY_RESET = 16
_RETRY_STATUS_CODES = 32
_RETRY_RESET_BEFORE_REQUEST = 64
_RETRY_RETRIABLE_HEADERS = 128
_RETRY_ENVOY_RATELIMITED = 256
# gRPC conditions (Envoy's RetryPolicy::RETRY_ON_GRPC_*), on the
# grpc-status of a trailers-only response.
_RETRY_GRPC_CANCELLED = 512
_RETRY_GRPC_DEADLINE_EXCEEDED = 1024
_RETRY_GRPC_RESOURCE_EXHAUSTED = 2048
_RETRY_GRPC_UNAVAILABLE = 4096
_RETRY_GRPC_INTERNAL = 8192
_RETRY_GRPC = (_RETRY_GRPC_CANCELLED | _RETRY_GRPC_DEADLINE_EXCEEDED
               | _RETRY_GRPC_RESOURCE_EXHAUSTED | _RETRY_GRPC_UNAVAILABLE | _RETRY_GRPC_INTERNAL)
# grpc-status value -> its retry condition.
_GRPC_RETRY_BITS = {b"1": _RETRY_GRPC_CANCELLED, b"4": _RETRY_GRPC_DEADLINE_EXCEEDED,
                    b"8": _RETRY_GRPC_RESOURCE_EXHAUSTED, b"14": _RETRY_GRPC_UNAVAILABLE,
                    b"13": _RETRY_GRPC_INTERNAL}
# The conditions x-envoy-retry-on may name (Envoy's parseRetryOn) and
# those of x-envoy-retry-grpc-on (parseRetryGrpcOn); a route's retry_on
# takes both.
_HTTP_RETRY_BITS = {
    "5xx": _RETRY_5XX, "gateway-error": _RETRY_GATEWAY_ERROR,
    "connect-failure": _RETRY_CONNECT_FAILURE, "retriable-4xx": _RETRY_RETRIABLE_4XX,
    "reset": _RETRY_RESET, "retriable-status-codes": _RETRY_STATUS_CODES,
    "reset-before-request": _RETRY_RESET_BEFORE_REQUEST,
    "retriable-headers": _RETRY_RETRIABLE_HEADERS,
    "envoy-ratelimited": _RETRY_ENVOY_RATELIMITED,
}
_GRPC_NAMED_RETRY_BITS = {
    "cancelled": _RETRY_GRPC_CANCELLED, "deadline-exceeded": _RETRY_GRPC_DEADLINE_EXCEEDED,
    "resource-exhausted": _RETRY_GRPC_RESOURCE_EXHAUSTED,
    "unavailable": _RETRY_GRPC_UNAVAILABLE, "internal": _RETRY_GRPC_INTERNAL,
}
_RETRY_BITS = dict(_HTTP_RETRY_BITS, **_GRPC_NAMED_RETRY_BITS)
# Conditions under which a reset (or per-try timeout) is retried.
_RESET_RETRY = _RETRY_5XX | _RETRY_GATEWAY_ERROR | _RETRY_RESET
_CONNECT_FAILURE_REASONS = frozenset(["remote connection failure", CONNECT_TIMEOUT,
                                      LOCAL_CONNECTION_FAILURE])

_policyBits = {}
# The x-envoy-expected-rq-timeout-ms entry for each timeout in use (a
# handful per config), built once.
_timeoutHeaders = {}
_TIMEOUT_HEADERS_MAX = 64
# The x-envoy-upstream-service-time entries of the first second, made once.
_SERVICE_TIMES = tuple((b"x-envoy-upstream-service-time", b"%d" % (ms,)) for ms in range(1000))


def _retryBits(policy):
    """The retry conditions of a compiled policy as bits, computed once."""
    bits = _policyBits.get(id(policy))
    if bits is None or bits[0] is not policy:
        value = 0
        for name in policy.retryOn:
            value |= _RETRY_BITS.get(name, 0)
        bits = _policyBits[id(policy)] = (policy, value)
    return bits[1]


def _timeoutHeader(expected):
    """The x-envoy-expected-rq-timeout-ms entry for C{expected} seconds."""
    header = _timeoutHeaders.get(expected)
    if header is None:
        header = (b"x-envoy-expected-rq-timeout-ms", b"%d" % (int(expected * 1000 + 0.5),))
        # A timeout can come from a request header: keep few.
        if len(_timeoutHeaders) < _TIMEOUT_HEADERS_MAX:
            _timeoutHeaders[expected] = header
    return header


def _grpcTimeout(entry, request, timeout):
    """
    Envoy's C{FilterUtility::finalTimeout} for a gRPC request on a route
    with C{max_grpc_timeout}: the request's C{grpc-timeout} less
    C{grpc_timeout_offset}, capped at that maximum (0 means no cap; no
    header means the maximum).

    @return: the route timeout in seconds (0 for none).
    """
    if not isGrpcRequest(request):
        return timeout
    maximum = entry.maxGrpcTimeout
    offset = entry.grpcTimeoutOffset
    grpcTimeout = parseGrpcTimeout(request.headers.get(b"grpc-timeout")) or 0.0
    if offset and offset < grpcTimeout:
        grpcTimeout -= offset
    if maximum and (not grpcTimeout or grpcTimeout > maximum):
        grpcTimeout = maximum
    return grpcTimeout


def _streamDuration(entry, request):
    """
    The stream's duration limit from the route (Envoy's
    C{refreshDurationTimeout}): for a gRPC request with a C{grpc-timeout}
    on a route with C{max_stream_duration.grpc_timeout_header_max}, that
    timeout less C{grpc_timeout_header_offset}, capped at the maximum (0:
    no cap); else the route's C{max_stream_duration}, or C{None} to keep the
    connection manager's.
    """
    maximum = entry.grpcTimeoutHeaderMax
    if maximum is not None and isGrpcRequest(request):
        timeout = parseGrpcTimeout(request.headers.get(b"grpc-timeout"))
        if timeout is not None:
            offset = entry.grpcTimeoutHeaderOffset
            if offset and offset < timeout:
                timeout -= offset
            if maximum and timeout > maximum:
                timeout = maximum
            return timeout
    return entry.maxStreamDuration


def _headerRetryBits(text, table):
    """The conditions a retry header lists, those of C{table} only."""
    value = 0
    for name in text.split(b","):
        value |= table.get(name.strip().decode("latin-1"), 0)
    return value


class _RouterStats:
    """The router's per-worker counters under C{http.<stat_prefix>.}."""

    __slots__ = ("rq_total", "no_route", "no_cluster", "rq_direct_response", "rq_redirect",
                 "rq_reset_after_downstream_response_started",
                 "passthrough_internal_redirect_bad_location",
                 "passthrough_internal_redirect_unsafe_scheme",
                 "passthrough_internal_redirect_too_many_redirects",
                 "passthrough_internal_redirect_no_route",
                 "passthrough_internal_redirect_predicate")

    def __init__(self, shard, prefix):
        scope = shard.scope(prefix)
        for name in self.__slots__:
            setattr(self, name, scope.counter(name))


@implementer(IHttpFilterFactory)
class RouterConfig:
    """
    A compiled C{envoy.extensions.filters.http.router.v3.Router}; the HTTP
    filter factory of the router.

    @ivar statPrefix: C{"http.<stat_prefix>."} of the connection manager.
    @ivar suppressEnvoyHeaders: do not add C{x-envoy-*} headers.
    @ivar respectExpectedRqTimeout: honour an internal request's
        C{x-envoy-expected-rq-timeout-ms}.
    """

    terminal = True

    #: C{snapshot()} of the runtime, for the mirror policies' fractions.
    snapshot = staticmethod(snapshotSource(None))

    statsFor = perWorkerMethod(lambda self, d: _RouterStats(d.stats, self.statPrefix))

    #: The last worker's name and its L{statsFor}, which the filters of that
    #: worker read without the per-worker lookup (a name, not the
    #: dispatcher: the configuration holds no reference to a worker).
    lastStats = (None, None)

    def __init__(self, statPrefix, suppressEnvoyHeaders=False, respectExpectedRqTimeout=False,
                 rng=random.random, snapshot=None):
        if snapshot is not None:
            self.snapshot = snapshot
        self.statPrefix = statPrefix
        self.suppressEnvoyHeaders = suppressEnvoyHeaders
        self.respectExpectedRqTimeout = respectExpectedRqTimeout
        self.rng = rng

    def createFilter(self, callbacks):
        """@return: a L{RouterFilter} for one stream."""
        return RouterFilter(self, callbacks)


@implementer(IConnectionPoolCallbacks, IResponseDecoder)
class UpstreamRequest:
    """
    One attempt at forwarding the request to one host: the pool's callbacks
    while it waits for a connection, then the client's while the response
    arrives.
    """

    # Defaults shared by every instance: an attempt only stores what differs.
    handle = None
    client = None
    startTime = 0.0
    perTryTimer = None
    durationTimer = None        # the cluster's max_stream_duration
    awaitingHeaders = True
    done = False
    counted = False
    pendingEnd = None
    pendingHeaders = None
    corker = None

    def __init__(self, router, host, pool):
        self.router = router
        self.host = host
        self.hostStats = pool.hostStats
        self.pool = pool
        # What every attempt reads, as attributes of the instance: Python
        # reads a class-level default several times slower.
        self.done = False
        self.perTryTimer = None
        self.durationTimer = None
        self.pendingHeaders = None
        self.pendingEnd = None

    # Pool callbacks.

    def onPoolReady(self, client):
        """The pool has a connection for this attempt."""
        self.handle = None
        if self.done:
            # Abandoned while the connection was being set up.
            self.pool.releaseClient(client)
            return
        self.client = client
        client.attach(self)
        self.router._onPoolReady(self, client)

    def onPoolFailure(self, reason):
        """The pool could not get a connection (Envoy's reset reason)."""
        self.handle = None
        if not self.done:
            self.router._onUpstreamFailure(self, reason)

    # Response callbacks (from the client).

    def onResponseHeaders(self, headers, endStream):
        """The response head arrived."""
        if not self.done:
            self.router._onResponseHeaders(self, headers, endStream)

    def onResponseData(self, data, endStream):
        """Response body bytes arrived."""
        if self.done:
            return
        if endStream:
            # The connection goes back to the pool before the downstream
            # hears the end, so a request pipelined behind this one finds
            # it there.
            self.pendingEnd = data
            return
        self.router._onResponseData(data)

    def onResponseTrailers(self, trailers):
        """Response trailers arrived (with C{enable_trailers})."""
        if not self.done:
            self.pendingEnd = trailers

    def onResponseComplete(self):
        """The response ended; the connection is back in the pool."""
        client = self.client
        if client is not None and not self.done:
            # What the codec counted for this request (0 where it counts none).
            codec = client.codec
            info = self.router.info
            info.upstreamWireBytesSent = codec.wireBytesSent
            info.upstreamWireBytesReceived = codec.wireBytesReceived
            info.upstreamHeaderBytesSent = codec.headerBytesSent
            info.upstreamHeaderBytesReceived = codec.headerBytesReceived
        self.client = None
        if self.counted:
            # uncount(), inline: once per request.
            self.counted = False
            self.router.clusterStats.upstream_rq_active.dec()
            self.hostStats.rq_active -= 1
        if not self.done:
            self.router._onResponseComplete(self)

    def onUpstreamReset(self, reason):
        """The connection failed before the response ended."""
        client = self.client
        self.client = None
        self.uncount()
        if not self.done:
            if client is not None and client.closedUnanswered and self.router._replay(self):
                return
            self.router._onUpstreamFailure(self, reason)

    def uncount(self):
        """The attempt is over: it no longer counts as an active request."""
        if self.counted:
            self.counted = False
            self.router.clusterStats.upstream_rq_active.dec()
            self.hostStats.rq_active -= 1

    # Flow control: the upstream connection's write buffer.

    def onAboveWriteBufferHighWatermark(self):
        """The upstream connection is backed up."""
        self.router._upstreamAbove()

    def onBelowWriteBufferLowWatermark(self):
        """The upstream connection drained."""
        self.router._upstreamBelow()

    # Giving up.

    def cancelDurationTimer(self):
        """The attempt ended: its max_stream_duration no longer applies."""
        timer = self.durationTimer
        if timer is not None:
            self.durationTimer = None
            timer.cancel()

    def cancel(self):
        """Abandon the attempt: stop waiting, or close its connection."""
        self.done = True
        self.uncount()
        if self.perTryTimer is not None:
            self.perTryTimer.cancel()
            self.perTryTimer = None
        self.cancelDurationTimer()
        handle = self.handle
        if handle is not None:
            self.handle = None
            handle.cancel()
        client = self.client
        if client is not None:
            self.client = None
            client.resetStream()


#: The connection manager's filter callbacks, whose other methods are its
#: stream's, passed on.
_SLOTS = frozenset([FilterSlot, SingleFilterSlot])


class RouterFilter:
    """
    The router for one stream. Its C{decodeHeaders} decides what to do with
    the request; the body follows through C{decodeData}.
    """

    # What decodeHeaders sets as slots, the rest (class-level defaults until
    # set) in its __dict__: more than 30 keys there would turn it into a
    # plain dict during every request.
    __slots__ = ("callbacks", "_stream", "cluster", "clusterStats", "config", "dispatcher",
                 "entry", "info", "perTryTimeout", "pools", "reactor", "request", "route",
                 "stats", "timeout", "__dict__", "__weakref__")

    _upstream = None
    _shadow = None              # the mirror policies' copies, until the request ends
    _socketOptions = None       # auto_sni / auto_san_validation, per request
    _routeTimer = None
    _retryTimer = None
    _downstreamComplete = False
    _responseStarted = False
    _finished = False
    _retried = False
    _retriesLeft = 0
    _retryBits = 0
    _retryCodes = frozenset()
    _retryPolicy = None
    _body = None
    _bodySize = 0
    _bodyEnd = False
    _buffering = False
    _trailers = None
    _paused = 0
    _bufferPaused = False
    _downstreamAbove = False
    _attempts = 0
    _retryingActive = False
    _completeTime = None
    _headersOnly = False
    _replays = 0
    _upstreamSpan = None
    #: Why the upstream request failed before its response (the span's error.reason).
    _upstreamResetReason = None
    _hashKey = None
    _hostSelection = None
    _setCookie = None
    _originPrefix = None        # _origin(), once known
    _redirectPolicy = None      # the route's internal_redirect_policy
    _bodyOverflowed = False     # the body outgrew the buffer: no redirect

    def __init__(self, config, callbacks):
        self.config = config
        self.callbacks = callbacks
        # What the connection manager's callbacks pass on as they are
        # (route, timers, write batching and the response), asked of its
        # stream without the call in between.
        self._stream = callbacks.stream if callbacks.__class__ in _SLOTS else callbacks
        # What every request reads, as attributes of the instance: Python
        # reads a class-level default several times slower.
        self._finished = False
        self._routeTimer = None
        self._retryTimer = None
        self._retryingActive = False
        self._hostSelection = None
        self._socketOptions = None
        self._attempts = 0
        self._body = None
        self._trailers = None
        self._downstreamAbove = False
        self._retried = False
        self._originPrefix = None
        self._setCookie = None
        self._paused = 0
        self._bufferPaused = False
        self._upstreamSpan = None

    # Decoding.

    def decodeHeaders(self, headers, endStream):
        """Answer from the route, or start forwarding the request."""
        cb = self.callbacks
        stream = self._stream
        config = self.config
        dispatcher = self.dispatcher = cb.dispatcher
        self.reactor = dispatcher.reactor
        # The worker's stats, kept beside the worker's name: the same worker
        # asks again and again, and the per-worker lookup is two calls.
        name = dispatcher.name
        last = config.lastStats
        if last[0] == name:
            stats = self.stats = last[1]
        else:
            stats = self.stats = config.statsFor(dispatcher)
            config.lastStats = (name, stats)
        stats.rq_total.value += 1
        info = self.info = cb.streamInfo
        route = stream.route()
        if route is None:
            stats.no_route.inc()
            if log.debugEnabled:
                log.debug("%sno route match for URL '%s'", _tag(cb), _path(headers))
            info.setResponseFlag(ResponseFlag.NO_ROUTE_FOUND)
            cb.sendLocalReply(404, b"", None, "route_not_found")
            return _STOP
        entry = route.entry
        if entry.isDirectResponse:
            self._directResponse(route, entry, headers)
            return _STOP
        clusterName = route.clusterName
        if log.debugEnabled:
            log.debug("%scluster '%s' match for URL '%s'", _tag(cb), clusterName, _path(headers))
        cluster = None
        if clusterName is not None:
            cluster = dispatcher.clusterManager.clusters.get(clusterName)
        if cluster is None:
            stats.no_cluster.inc()
            if log.debugEnabled:
                log.debug("%sunknown cluster '%s'", _tag(cb), clusterName)
            info.setResponseFlag(ResponseFlag.NO_CLUSTER_FOUND)
            cb.sendLocalReply(entry.clusterNotFoundResponseCode, b"", None, "cluster_not_found")
            return _STOP
        self.cluster = cluster
        self.clusterStats = cluster.stats
        pools = cluster.__dict__.get("httpConnPools") if entry.priority == "DEFAULT" else None
        self.pools = pools if pools is not None else poolsFor(cluster, entry.priority)
        self.route = route
        self.entry = entry
        self.request = headers
        info.upstreamCluster = clusterName

        hashing = cluster.info.lbConfig.hashing
        if hashing is not None:
            # Envoy hashes the request as it came, before the route's
            # header mutations and rewrites, with the load balancer's own
            # hash policy if it has one.
            policies = hashing.policy.hashPolicies or entry.hashPolicies
            if policies:
                self._hashKey = generateHash(policies, headers, info, self._addCookie)

        if entry.routerOptions or info.hasFilterState():
            self._routeOptions(route, entry, headers, endStream)
        else:
            # Only the route's timeout applies; no filter state means no
            # internal request's overrides and no first pass's header.
            timeout = self.timeout = entry.timeout
            self.perTryTimeout = 0.0
            if timeout and not config.suppressEnvoyHeaders:
                headers.headers._entries.append(
                    _timeoutHeaders.get(timeout) or _timeoutHeader(timeout))
        httpOptions = cluster.info.upstreamHttpOptions
        if httpOptions is not None and cluster.info.transportSocket is not None:
            # auto_sni / auto_san_validation: from the host after the
            # route's rewrite, as Envoy's getRequestHostValue.
            self._socketOptions = httpOptions.optionsFor(headers)

        if log.debugEnabled:
            log.debug("%srouter decoding headers:\n%s", _tag(cb),
                      dumpRequestHeaders(headers, _scheme(cb, headers)))
        span = cb.activeSpan
        if span is not None:
            tracing = cb.tracingConfig
            if tracing is not None:
                self._upstreamSpan = tracing.beginUpstream(
                    span, headers, clusterName, info.startTime + info.duration())
        cb.addDownstreamWatermarkCallbacks(self)
        self._headersOnly = endStream
        if entry.mirrorPolicies:
            shadow = ShadowRequests(cb.dispatcher, entry.mirrorPolicies, self.config.snapshot())
            if shadow:
                shadow.onHeaders(headers)
                if endStream:
                    shadow.send(self.timeout)
                else:
                    self._shadow = shadow
        if endStream:
            self._downstreamComplete = True
            self._completeTime = self.reactor.seconds()
            # _startRouteTimer(), for a stream that has neither timer nor
            # answer yet.
            timeout = self.timeout
            if timeout:
                self._routeTimer = stream.callLater(timeout, self._onRouteTimeout)
        self._startAttempt()
        return _STOP

    def _routeOptions(self, route, entry, headers, endStream):
        """
        The timeouts, retries, redirects, header mutations and rewrites of a
        route with L{RouteEntry.routerOptions}, or of a request with filter
        state (an internal request's overrides, a redirected request).
        """
        cb = self.callbacks
        config = self.config
        info = self.info
        entries = headers.headers
        policy = entry.retryPolicy
        bits = _retryBits(policy)
        retries = policy.numRetries
        timeout = entry.timeout
        if entry.maxGrpcTimeout is not None:
            timeout = _grpcTimeout(entry, headers, timeout)
        duration = _streamDuration(entry, headers)
        if duration is not None:
            cb.setMaxStreamDuration(duration)
        perTry = policy.perTryTimeout
        if info.filterStateValue("envoy.internal_request"):
            timeout, perTry, bits, retries = self._internalOverrides(
                entries, timeout, perTry, bits, retries)
        if bits and policy.retriableRequestHeaders and not any(
                m.matches(entries, headers.authority, headers.path, headers.method)
                for m in policy.retriableRequestHeaders):
            # Envoy makes no retry state for a request none of
            # retriable_request_headers matches.
            bits = 0
        self._retryBits = bits
        if bits:
            self._retryPolicy = policy
            if policy.retryHostPredicates or policy.retryPriorityUpdateFrequency:
                self._hostSelection = RetryHostSelection(
                    policy.retryHostPredicates, policy.hostSelectionRetryMaxAttempts,
                    PreviousPriorities(policy.retryPriorityUpdateFrequency)
                    if policy.retryPriorityUpdateFrequency else None)
            self._retriesLeft = retries
            self._retryCodes = policy.retriableStatusCodes
            self._baseInterval = policy.baseInterval
            self._maxInterval = policy.maxInterval
            self._buffering = not endStream
        redirects = entry.internalRedirectPolicy
        if redirects is not None:
            # The body is kept for the redirected request.
            self._redirectPolicy = redirects
            self._buffering = not endStream
        self.timeout = timeout
        self.perTryTimeout = perTry
        if entry.idleTimeout is not None:
            cb.setRouteIdleTimeout(entry.idleTimeout)
        # Envoy 1.40's order: the timeout header, the route's header
        # mutations, then the host and path rewrites with their
        # x-envoy-original-* headers.
        envoyHeaders = not config.suppressEnvoyHeaders
        if envoyHeaders:
            expected = perTry if perTry and (not timeout or perTry < timeout) else timeout
            if expected:
                header = _timeoutHeader(expected)
                if info.hasFilterState():
                    # A request sent again (an internal redirect) has the
                    # first pass's header.
                    entries.set(*header)
                else:
                    entries._entries.append(header)
        mutations = route.requestHeadersMutations
        if mutations.levels:
            mutations.apply(entries, FormatContext(info, headers, None))
        path = headers.path
        host = route.rewriteHost(entries, path)
        if host is not None:
            original = headers.authority
            if entry.appendXForwardedHost and original:
                entries.add(b"x-forwarded-host", original)
            if envoyHeaders and original:
                entries.set(b"x-envoy-original-host", original)
            headers.authority = host
        newPath = entry.rewritePath(path) if path is not None else path
        if newPath is not path and newPath != path:
            if envoyHeaders:
                entries.set(b"x-envoy-original-path", path)
            headers.path = newPath

    def _addCookie(self, policy):
        value, self._setCookie = generateCookie(policy, self.info)
        return value

    def _internalOverrides(self, entries, timeout, perTry, bits, retries):
        # Envoy honours these only on requests from internal addresses; the
        # connection manager strips them from the others.
        value = entries.get(b"x-envoy-upstream-rq-timeout-ms")
        if value is not None:
            entries.remove(b"x-envoy-upstream-rq-timeout-ms")
            if value.isdigit():
                timeout = int(value) / 1000.0
        value = entries.get(b"x-envoy-upstream-rq-per-try-timeout-ms")
        if value is not None:
            entries.remove(b"x-envoy-upstream-rq-per-try-timeout-ms")
            if value.isdigit():
                perTry = int(value) / 1000.0
        if self.config.respectExpectedRqTimeout:
            value = entries.get(b"x-envoy-expected-rq-timeout-ms")
            if value is not None and value.isdigit():
                timeout = int(value) / 1000.0
        value = entries.get(b"x-envoy-retry-on")
        if value is not None:
            bits |= _headerRetryBits(value, _HTTP_RETRY_BITS)
        value = entries.get(b"x-envoy-retry-grpc-on")
        if value is not None:
            bits |= _headerRetryBits(value, _GRPC_NAMED_RETRY_BITS)
        value = entries.get(b"x-envoy-max-retries")
        if value is not None and value.isdigit():
            retries = int(value)
        if retries and not bits:
            retries = 0
        return timeout, perTry, bits, retries

    def _directResponse(self, route, entry, request):
        cb = self.callbacks
        # Envoy 1.40 counts a redirect as a direct response too (its
        # rq_redirect stays 0).
        self.stats.rq_direct_response.inc()
        location = None
        if entry.addsLocation:
            connection = cb.connection
            scheme = b"https" if getattr(connection, "ssl", None) is not None else b"http"
            if request.scheme is not None:
                scheme = request.scheme
            forwarded = request.headers.get(b"x-forwarded-proto")
            location = route.redirectLocation(scheme, request.authority, request.path or b"/",
                                              forwarded or scheme)
        body = entry.directResponse.body if entry.directResponse is not None else b""
        mutations = route.responseHeadersMutations
        info = cb.streamInfo

        def modify(response):
            if location is not None:
                response.headers._entries.append((b"location", location))
            if mutations:
                mutations.apply(response.headers, FormatContext(info, request, response))

        modifyHeaders = modify if location is not None or mutations else None
        cb.sendLocalReply(entry.responseCode, body, modifyHeaders, "direct_response")

    def decodeData(self, data, endStream):
        """Forward (and, while retries are possible, keep) request body bytes."""
        if self._finished:
            return _NO_BUFFER
        shadow = self._shadow
        if shadow is not None:
            shadow.onData(data)
            if endStream:
                self._shadow = None
                shadow.send(self.timeout)
        if endStream:
            self._downstreamComplete = True
            self._completeTime = self.reactor.seconds()
            self._bodyEnd = True
        upstream = self._upstream
        client = upstream.client if upstream is not None else None
        if self._buffering:
            # Kept for a retry, and sent now if there is a connection.
            self._appendBody(data)
            if self._bodySize > self.callbacks.bufferLimit():
                self._abandonRetries(client is not None)
        elif client is None:
            # No connection yet: hold the bytes until there is one, and
            # stop reading once that is more than the buffer limit.
            self._appendBody(data)
            if self._bodySize > self.callbacks.bufferLimit() and not self._bufferPaused:
                self._bufferPaused = True
                self.callbacks.onDecoderFilterAboveWriteBufferHighWatermark()
        if client is not None:
            client.codec.encodeData(data, endStream)
            if endStream:
                self._onRequestSent(upstream)
        if endStream:
            self._startRouteTimer()
        return _NO_BUFFER

    def _appendBody(self, data):
        if self._body is None:
            self._body = [data]
        else:
            self._body.append(data)
        self._bodySize += len(data)

    def decodeTrailers(self, trailers):
        """Forward request trailers."""
        if self._finished:
            return _TRAILERS_STOP
        self._downstreamComplete = True
        self._completeTime = self.reactor.seconds()
        self._trailers = trailers
        shadow = self._shadow
        if shadow is not None:
            self._shadow = None
            shadow.send(self.timeout)
        upstream = self._upstream
        if upstream is not None and upstream.client is not None:
            upstream.client.codec.encodeTrailers(trailers)
            self._onRequestSent(upstream)
        self._startRouteTimer()
        return _TRAILERS_STOP

    def _abandonRetries(self, sent):
        self._buffering = False
        self._bodyOverflowed = True
        self._retriesLeft = 0
        self._retryBits = 0
        self.clusterStats.retry_or_shadow_abandoned.inc()
        if sent:
            self._body = None
            self._bodySize = 0

    # Attempts.

    def _startAttempt(self):
        cluster = self.cluster
        selection = self._hostSelection
        if cluster.contextFree and (selection is None or not self._attempts):
            # What cluster.chooseHost() does without a context.
            host = cluster.loadBalancer.chooseHost()
        else:
            host = cluster.chooseHost(LoadBalancerContext(
                self.callbacks.connection, self.request, self._hashKey, self.route.metadataMatch,
                selection if selection is not None and self._attempts else None))
        if host is None:
            if log.debugEnabled:
                log.debug("%sno healthy host for HTTP connection pool", _tag(self.callbacks))
            self.clusterStats.upstream_cx_none_healthy.inc()
            self._noHealthyUpstream()
            return
        self.info.upstreamHost = host.addressString
        if log.debugEnabled:
            log.debug("%supstream host %s selected from cluster '%s'", _tag(self.callbacks),
                      host.addressString, self.info.upstreamCluster)
        if self.entry.autoHostRewrite and host.hostname:
            self.request.authority = host.hostname.encode("utf-8")
        entry = self.entry
        if entry.connectConfig and (self.request.method == b"CONNECT" or (
                entry.connectAllowPost and self.request.method == b"POST")):
            # CONNECT (or, with allow_post, a POST) terminated here: a TCP
            # tunnel to the host.
            pool = tcpPoolFor(self.pools, host)
        else:
            pool = self.pools.poolFor(host, self._socketOptions, self.info.protocol == "HTTP/2")
        if pool is None:
            # Past max_connection_pools Envoy has no pool for the host and
            # answers as if no host were healthy.
            self._noHealthyUpstream()
            return
        self._attempts += 1
        if selection is not None:
            selection.onHostAttempted(host)
        upstream = self._upstream = UpstreamRequest(self, host, pool)
        upstream.startTime = self.reactor.seconds()
        upstream.handle = pool.newStream(upstream)

    def _noHealthyUpstream(self):
        self.info.setResponseFlag(ResponseFlag.NO_HEALTHY_UPSTREAM)
        self._chargeCode(503)
        self._localReply(503, b"no healthy upstream", "no_healthy_upstream")

    def _onPoolReady(self, upstream, client):
        if log.debugEnabled:
            log.debug("%spool ready", _tag(self.callbacks))
            log.debug("Attached upstream connection [C%d] to downstream connection [C%d]",
                      client.connection.connectionId, self.info.connectionId)
        upstream.counted = True
        monitor = upstream.host.outlierMonitor
        if monitor is not None:
            monitor.putResult(LOCAL_ORIGIN_CONNECT_SUCCESS)
        maxDuration = self.cluster.info.upstreamMaxStreamDuration
        if maxDuration:
            upstream.durationTimer = self.callbacks.callLater(
                maxDuration, lambda: self._onMaxStreamDuration(upstream))
        upstream.corker = self._stream.writeBatcher()
        clusterStats = self.clusterStats
        clusterStats.upstream_rq_total.value += 1
        clusterStats.upstream_rq_active.inc()
        hostStats = upstream.hostStats
        hostStats.rq_total += 1
        hostStats.rq_active += 1
        codec = client.codec
        info = self.info
        # Envoy's upstream timing and address belong to the attempt that
        # got a connection: a retry's replace the first's.
        info.upstreamLocalAddress = client.connection.localAddress()
        info.firstUpstreamTxMonotonic = self.reactor.seconds()
        info.lastUpstreamTxMonotonic = info.firstUpstreamRxMonotonic = None
        info.lastUpstreamRxMonotonic = None
        body = self._body
        trailers = self._trailers
        if body is None:
            codec.encodeRequest(self.request, self._downstreamComplete and trailers is None)
        else:
            codec.encodeRequest(self.request, False)
            data = body[0] if len(body) == 1 else b"".join(body)
            codec.encodeData(data, self._bodyEnd and trailers is None)
            if self._buffering:
                self._body = [data]
            else:
                self._body = None
                self._bodySize = 0
                if self._bufferPaused:
                    self._bufferPaused = False
                    self.callbacks.onDecoderFilterBelowWriteBufferLowWatermark()
        if trailers is not None:
            codec.encodeTrailers(trailers)
        if self._downstreamComplete:
            # _onRequestSent(upstream), inline: once per request.
            info.lastUpstreamTxMonotonic = self.reactor.seconds()
            perTry = self.perTryTimeout
            if perTry and upstream.perTryTimer is None and upstream.awaitingHeaders:
                upstream.perTryTimer = self.callbacks.callLater(
                    perTry, lambda: self._onPerTryTimeout(upstream))
        if self._downstreamAbove:
            client.pauseReading()

    def _onRequestSent(self, upstream):
        self.info.lastUpstreamTxMonotonic = self.reactor.seconds()
        perTry = self.perTryTimeout
        if perTry and upstream.perTryTimer is None and upstream.awaitingHeaders:
            upstream.perTryTimer = self.callbacks.callLater(
                perTry, lambda: self._onPerTryTimeout(upstream))

    def _startRouteTimer(self):
        if self.timeout and self._routeTimer is None and not self._finished:
            self._routeTimer = self.callbacks.callLater(self.timeout, self._onRouteTimeout)

    # Failures and retries.

    def _onUpstreamFailure(self, upstream, reason):
        if upstream is not self._upstream:
            return
        transportFailure = ""
        if reason == REMOTE_CONNECTION_FAILURE:
            failed = upstream.pool.lastFailedConnection
            if failed is not None:
                transportFailure = failed.connectFailureDetail()
        if log.debugEnabled:
            log.debug("%supstream reset: reset reason: %s, transport failure reason: %s",
                      _tag(self.callbacks), reason, transportFailure)
        upstream.done = True
        self._endAttempt(upstream)
        if self._upstreamSpan is not None and not self._responseStarted:
            self._upstreamResetReason = reason
        monitor = upstream.host.outlierMonitor
        if monitor is not None and reason != OVERFLOW:
            # A failed connect or a reset: a local-origin error (a 503
            # unless the cluster splits them).
            monitor.putResult(LOCAL_ORIGIN_CONNECT_FAILED)
        info = self.info
        if reason == OVERFLOW:
            flag = ResponseFlag.UPSTREAM_OVERFLOW
        elif reason in _CONNECT_FAILURE_REASONS:
            flag = ResponseFlag.UPSTREAM_CONNECTION_FAILURE
            # Envoy 1.40's %UPSTREAM_TRANSPORT_FAILURE_REASON% for a refused
            # connect: delayed_connect_error:_Connection_refused.
            info.upstreamTransportFailureReason = transportFailure or reason
        elif reason == PROTOCOL_ERROR:
            flag = "UPE"
        else:
            flag = ResponseFlag.UPSTREAM_CONNECTION_TERMINATION
        if self._responseStarted:
            if reason == "connection termination":
                # The host closed in the middle of the body: Envoy's codec
                # reports that as a protocol error.
                flag = "UPE"
            # Envoy counts rq_reset_after_downstream_response_started for
            # gRPC only (chargeUpstreamAbort).
            info.setResponseFlag(flag)
            self._finish()
            self.callbacks.resetStream()
            return
        if reason != OVERFLOW:
            bits = self._retryBits
            if bits & _RESET_RETRY or (
                    flag == ResponseFlag.UPSTREAM_CONNECTION_FAILURE
                    and bits & _RETRY_CONNECT_FAILURE):
                if self._maybeRetry():
                    return
        info.setResponseFlag(flag)
        code = 502 if reason == PROTOCOL_ERROR else 503
        self._chargeCode(code)
        prefix = "retried and the latest " if self._retried else ""
        body = (_RESET_PREFIX + prefix + "reset reason: " + reason).encode("utf-8")
        if reason == OVERFLOW:
            self._localReply(code, body, "upstream_reset_before_response_started{overflow}",
                             _addOverloaded)
        else:
            # Envoy 1.40: {remote_connection_failure|delayed_connect_error:_Connection_refused}
            self._localReply(code, body, "upstream_reset_before_response_started{%s%s}" % (
                reason.replace(" ", "_"),
                "|" + transportFailure.replace(" ", "_") if transportFailure else ""))

    def _replay(self, upstream):
        """
        The host closed a reused connection without answering a byte: it
        closed it as idle while the request was on its way (the idle-close
        race). Send a request that is safe to send twice again at once, on
        another connection, without spending a retry (Envoy's pool does not
        count a connection lost before its stream as an attempt). Safe:
        an idempotent method (RFC 9110 9.2.2) whose request was complete and
        had no body, or whose body is still held for retries.

        @return: whether the request was sent again.
        """
        if upstream is not self._upstream or self._replays >= _MAX_REPLAYS:
            return False
        if not (self._downstreamComplete and self.request.method in _IDEMPOTENT):
            return False
        if not (self._headersOnly or (self._buffering and self._body is not None)):
            return False
        self._replays += 1
        upstream.done = True
        self._endAttempt(upstream)
        self._attempts -= 1
        self._startAttempt()
        return True

    def _maybeRetry(self, rateLimitedInterval=None):
        """
        Retry if a retry is left, else note C{URX}.

        @param rateLimitedInterval: seconds from the response's
            C{rate_limited_retry_back_off} reset header, or C{None}.
        @return: whether a retry was scheduled.
        """
        stats = self.clusterStats
        if self._retriesLeft <= 0:
            stats.upstream_rq_retry_limit_exceeded.inc()
            self.info.setResponseFlag(ResponseFlag.UPSTREAM_RETRY_LIMIT_EXCEEDED)
            return False
        retries = self.pools.retries
        if not self._retryingActive and not retries.tryAcquire():
            stats.upstream_rq_retry_overflow.inc()
            self.info.setResponseFlag(ResponseFlag.UPSTREAM_OVERFLOW)
            return False
        self._retriesLeft -= 1
        if log.debugEnabled:
            log.debug("%sperforming retry", _tag(self.callbacks))
        self._retryingActive = True
        self._retried = True
        stats.upstream_rq_retry.inc()
        if rateLimitedInterval is not None:
            # Envoy's JitteredLowerBoundBackOffStrategy, for this retry
            # only: uniform in [interval, 1.5 x interval).
            stats.upstream_rq_retry_backoff_ratelimited.inc()
            delay = rateLimitedInterval * (1.0 + 0.5 * self.config.rng())
        else:
            stats.upstream_rq_retry_backoff_exponential.inc()
            # Envoy's JitteredExponentialBackOffStrategy: uniform in
            # [0, (2^n - 1) * base), capped at max_interval.
            n = self._attempts
            ceiling = min(((1 << n) - 1) * self._baseInterval, self._maxInterval)
            delay = self.config.rng() * ceiling
        self._upstream = None
        self._retryTimer = self.callbacks.callLater(delay, self._retry)
        return True

    def _retry(self):
        self._retryTimer = None
        if not self._finished:
            self._startAttempt()

    def _endAttempt(self, upstream):
        if upstream.perTryTimer is not None:
            upstream.perTryTimer.cancel()
            upstream.perTryTimer = None
        if upstream.client is not None or upstream.handle is not None:
            upstream.cancel()

    def _retriable(self, status, headers):
        bits = self._retryBits
        if bits & _RETRY_ENVOY_RATELIMITED and headers.get(b"x-envoy-ratelimited") is not None:
            return True
        if bits & _RETRY_RETRIABLE_HEADERS and any(
                m.matches(headers) for m in self._retryPolicy.retriableHeaders):
            return True
        if status >= 500:
            if bits & _RETRY_5XX:
                return True
            if bits & _RETRY_GATEWAY_ERROR and 502 <= status <= 504:
                return True
        if status == 409 and bits & _RETRY_RETRIABLE_4XX:
            return True
        if bits & _RETRY_GRPC:
            grpcStatus = headers.get(b"grpc-status")
            if grpcStatus is not None and bits & _GRPC_RETRY_BITS.get(grpcStatus, 0):
                return True
        if bits & _RETRY_STATUS_CODES and status in self._retryCodes:
            return True
        return False

    def _resetInterval(self, headers):
        """
        Envoy's C{parseResetInterval}: the first C{reset_headers} value
        within C{max_interval}, in seconds, or C{None}.
        """
        policy = self._retryPolicy
        for name, format in policy.resetHeaders:
            value = headers.get(name)
            if value is None or not value.strip().isdigit():
                continue
            seconds = int(value)
            if format == "UNIX_TIMESTAMP":
                seconds = seconds - int(self.reactor.seconds())
                if seconds <= 0:
                    continue
            if seconds <= policy.rateLimitedMaxInterval:
                # Envoy keeps only intervals above 1 ms.
                return float(seconds) if seconds > 0 else None
        return None

    # The response.

    def _onResponseHeaders(self, upstream, headers, endStream):
        upstream.awaitingHeaders = False
        if upstream.perTryTimer is not None:
            upstream.perTryTimer.cancel()
            upstream.perTryTimer = None
        status = headers.status
        stats = self.clusterStats
        hostStats = upstream.hostStats
        if log.debugEnabled:
            tag = _tag(self.callbacks)
            end = "true" if endStream else "false"
            if log.traceEnabled:
                log.trace("%send_stream: %s, upstream response headers:\n%s", tag, end,
                          dumpResponseHeaders(headers))
            log.debug("%supstream headers complete: end_stream=%s", tag, end)
        if (self._retryBits and self._retriable(status, headers.headers)
                and not self._responseStarted):
            if self._maybeRetry(self._resetInterval(headers.headers)):
                hostStats.rq_error += 1
                # Envoy charges the retried response under retry. only.
                for counter in stats.prefixedRqCode("retry.", status):
                    counter.inc()
                upstream.cancel()
                return
        elif self._retried:
            stats.upstream_rq_retry_success.inc()
        host = upstream.host
        if host.outlierMonitor is not None:
            host.outlierMonitor.putHttpResponseCode(status)
        checker = host.healthChecker
        if checker is not None and headers.headers.get(
                b"x-envoy-immediate-health-check-fail") is not None:
            checker.immediateFailure(host)
        policy = self._redirectPolicy
        if (policy is not None and status in policy.redirectResponseCodes
                and self._setupRedirect(policy, headers)):
            return
        if status >= 500:
            hostStats.rq_error += 1
        else:
            hostStats.rq_success += 1
        self._chargeCode(status)
        self._responseStarted = True
        now = self.reactor.seconds()
        entries = headers.headers._entries
        if not self.config.suppressEnvoyHeaders and status != 101 and not (
                self._completeTime is None
                and getattr(upstream.pool, "terminatesConnect", False)):
            # Envoy times from the end of the downstream request (so retries
            # and back-off count), and does not time an upgrade's 101 nor a
            # tunnel whose request is not complete.
            since = self._completeTime
            if since is None:
                since = upstream.startTime
            ms = int((now - since) * 1000)
            entries.append(_SERVICE_TIMES[ms] if 0 <= ms < 1000 else (
                b"x-envoy-upstream-service-time", b"%d" % (ms,)))
        if self._setCookie is not None:
            entries.append((b"set-cookie", self._setCookie))
        entry = self.entry
        # The route's responseHeadersMutations, without the property call
        # when no weighted cluster can come first.
        mutations = (entry.responseHeadersMutations if entry.weightedClusters is None
                     else self.route.responseHeadersMutations)
        if mutations.levels:
            mutations.apply(headers.headers, FormatContext(self.info, self.request, headers))
        self.info.firstUpstreamRxMonotonic = now
        if endStream:
            upstream.pendingHeaders = headers
            return
        self._stream.encodeHeaders(headers, False)

    def _setupRedirect(self, policy, headers):
        """
        Envoy's C{setupRedirect}: follow the upstream's redirect with a new
        stream when the request and the C{location} allow it.

        @return: whether the redirect was followed (this filter is gone).
        """
        cb = self.callbacks
        location = headers.headers.get(b"location")
        body = b"".join(self._body) if self._body else b""
        if (self._downstreamComplete and not self._bodyOverflowed and location is not None
                and self._convertRequestForRedirect(policy, headers, location)):
            if self._body is None:
                body = b""      # a 303 dropped it
            if cb.recreateStream(headers, body):
                if log.debugEnabled:
                    log.debug("%sInternal redirect succeeded", _tag(cb))
                self.clusterStats.upstream_internal_redirect_succeeded_total.inc()
                return True
        self.clusterStats.upstream_internal_redirect_failed_total.inc()
        return False

    def _convertRequestForRedirect(self, policy, response, location):
        # Envoy's convertRequestHeadersForInternalRedirect.
        request = self.request
        stats = self.stats
        if request.path is None:
            return False
        url = parseAbsoluteUrl(location) if location else None
        if url is None:
            stats.passthrough_internal_redirect_bad_location.inc()
            return False
        scheme, hostAndPort, pathAndQuery = url
        cb = self.callbacks
        schemeIsHttp = (request.scheme == b"http"
                        or getattr(cb.connection, "ssl", None) is None)
        targetIsHttp = scheme == b"http"
        if not policy.allowCrossSchemeRedirect and schemeIsHttp != targetIsHttp:
            stats.passthrough_internal_redirect_unsafe_scheme.inc()
            return False
        filterState = self.info.filterState
        count = filterState.get(NUM_INTERNAL_REDIRECTS, 0)
        if count >= policy.maxInternalRedirects:
            stats.passthrough_internal_redirect_too_many_redirects.inc()
            return False
        entries = request.headers
        saved = (request.scheme, request.authority, request.path, list(entries._entries))
        for name in policy.responseHeadersToCopy:
            values = response.headers.getAll(name)
            entries.remove(name)
            for value in values:
                entries.add(name, value)
        request.scheme = scheme
        request.authority = hostAndPort
        fragment = pathAndQuery.find(b"#")
        request.path = pathAndQuery if fragment < 0 else pathAndQuery[:fragment]
        cb.clearRouteCache()
        route = cb.route()
        refused = None
        if route is None:
            refused = stats.passthrough_internal_redirect_no_route
        else:
            for predicate in policy.predicates:
                if not predicate.acceptTargetRoute(filterState, policy.routeName,
                                                   route.entry.name, not schemeIsHttp,
                                                   not targetIsHttp):
                    refused = stats.passthrough_internal_redirect_predicate
                    break
        if refused is not None:
            refused.inc()
            request.scheme, request.authority, request.path, entries._entries = saved
            return False
        if response.status == 303 and request.method not in (b"GET", b"HEAD"):
            # RFC 7231 6.4.4: the next request is a GET without the body.
            request.method = b"GET"
            request.contentLength = None
            request.chunked = False
            entries.remove(b"content-length")
            self._body = None
            self._bodySize = 0
        filterState[NUM_INTERNAL_REDIRECTS] = count + 1
        entries.set(b"x-envoy-original-url", b"%s://%s%s" % (
            b"http" if schemeIsHttp else b"https", saved[1] or b"", saved[2]))
        return True

    def _onResponseData(self, data):
        self._stream.encodeData(data, False)

    def _onResponseComplete(self, upstream):
        upstream.done = True
        now = self.info.lastUpstreamRxMonotonic = self.reactor.seconds()
        upstream.cancelDurationTimer()
        self._finish()
        elapsed = (now - upstream.startTime) * 1000.0
        stats = self.clusterStats
        stats.upstream_rq_time.recordValue(elapsed)
        stats.prefixedRqTime(self._origin()).recordValue(elapsed)
        headers = upstream.pendingHeaders
        end = upstream.pendingEnd
        if headers is not None:
            upstream.pendingHeaders = None
            self._stream.encodeHeaders(headers, True)
        elif end is None or end.__class__ is bytes:
            self._stream.encodeData(end or b"", True)
        else:
            self._stream.encodeTrailers(end)

    def _chargeCode(self, status):
        # Envoy's chargeResponseStat: the code, its class and completed, for
        # the cluster and again by origin.
        stats = self.clusterStats
        code, klass = stats.rqCode(status)
        code.value += 1
        klass.value += 1
        stats.upstream_rq_completed.value += 1
        code, klass, completed = stats.prefixedRqCode(self._origin(), status)
        code.value += 1
        klass.value += 1
        completed.value += 1

    def _origin(self):
        """
        Envoy's isEnvoyInternalRequest: C{x-envoy-internal: true} as
        forwarded, read once per request (the head was sent already).
        """
        origin = self._originPrefix
        if origin is None:
            if self.request.headers.get(b"x-envoy-internal") == b"true":
                origin = "internal."
            else:
                origin = "external."
            self._originPrefix = origin
        return origin

    # Timeouts.

    def _onPerTryTimeout(self, upstream):
        upstream.perTryTimer = None
        if upstream is not self._upstream or upstream.done or not upstream.awaitingHeaders:
            return
        self.clusterStats.upstream_rq_per_try_timeout.inc()
        if log.debugEnabled:
            log.debug("%supstream per try timeout", _tag(self.callbacks))
        upstream.hostStats.rq_timeout += 1
        if upstream.host.outlierMonitor is not None:
            upstream.host.outlierMonitor.putResult(LOCAL_ORIGIN_TIMEOUT)
        upstream.done = True
        upstream.cancel()
        if self._retryBits & _RESET_RETRY and self._maybeRetry():
            return
        self._timeoutReply()

    def _onMaxStreamDuration(self, upstream):
        """
        Envoy's C{onStreamMaxDurationReached} (the cluster's
        C{common_http_protocol_options.max_stream_duration}): the attempt is
        reset, retried as a reset when the policy allows, else answered 504
        (408 while the request is still arriving) with flag C{UMSDR}, no
        response code charged.
        """
        upstream.durationTimer = None
        if upstream is not self._upstream or upstream.done or self._finished:
            return
        self.clusterStats.upstream_rq_max_duration_reached.inc()
        if log.debugEnabled:
            log.debug("%supstream max stream duration reached", _tag(self.callbacks))
        upstream.done = True
        upstream.cancel()
        if (self._retryBits & _RESET_RETRY and not self._responseStarted
                and self._maybeRetry()):
            return
        self.info.setResponseFlag(ResponseFlag.UPSTREAM_MAX_STREAM_DURATION_REACHED)
        if self._responseStarted:
            self._finish()
            self.callbacks.resetStream()
            return
        self._localReply(504 if self._downstreamComplete else 408,
                         b"upstream max stream duration reached",
                         "upstream_max_stream_duration_reached")

    def _onRouteTimeout(self):
        self._routeTimer = None
        if self._finished:
            return
        stats = self.clusterStats
        stats.upstream_rq_timeout.inc()
        if log.debugEnabled:
            log.debug("%supstream timeout", _tag(self.callbacks))
        upstream = self._upstream
        if upstream is not None:
            upstream.hostStats.rq_timeout += 1
            if upstream.host.outlierMonitor is not None:
                upstream.host.outlierMonitor.putResult(LOCAL_ORIGIN_TIMEOUT)
            upstream.done = True
            upstream.cancel()
        if self._responseStarted:
            self.info.setResponseFlag(ResponseFlag.UPSTREAM_REQUEST_TIMEOUT)
            self._finish()
            self.callbacks.resetStream()
            return
        self._timeoutReply()

    def _timeoutReply(self):
        self.info.setResponseFlag(ResponseFlag.UPSTREAM_REQUEST_TIMEOUT)
        self._chargeCode(504)
        self._localReply(504, b"upstream request timeout", "upstream_response_timeout")

    def _localReply(self, code, body, details, modify=None):
        self._finish()
        if self._setCookie is not None:
            modify = _withSetCookie(self._setCookie, modify)
        self.callbacks.sendLocalReply(code, body, modify, details)

    # Flow control.

    def _upstreamAbove(self):
        self._paused += 1
        self.callbacks.onDecoderFilterAboveWriteBufferHighWatermark()

    def _upstreamBelow(self):
        if self._paused:
            self._paused -= 1
            self.callbacks.onDecoderFilterBelowWriteBufferLowWatermark()

    def onAboveWriteBufferHighWatermark(self):
        """The downstream is backed up: stop reading the response."""
        self._downstreamAbove = True
        upstream = self._upstream
        if upstream is not None and upstream.client is not None:
            upstream.client.pauseReading()

    def onBelowWriteBufferLowWatermark(self):
        """The downstream drained: read the response again."""
        self._downstreamAbove = False
        upstream = self._upstream
        if upstream is not None and upstream.client is not None:
            upstream.client.resumeReading()

    # The end.

    def _finish(self):
        """Stop timers and retries; the stream is being answered."""
        if self._finished:
            return
        self._finished = True
        if self._routeTimer is not None:
            self._routeTimer.cancel()
            self._routeTimer = None
        if self._retryTimer is not None:
            self._retryTimer.cancel()
            self._retryTimer = None
        if self._retryingActive:
            self._retryingActive = False
            self.pools.retries.release()
        while self._paused:
            self._paused -= 1
            self.callbacks.onDecoderFilterBelowWriteBufferLowWatermark()
        if self._bufferPaused:
            self._bufferPaused = False
            self.callbacks.onDecoderFilterBelowWriteBufferLowWatermark()

    def onDestroy(self):
        """The stream ended: abandon whatever is still in flight."""
        upstream = self._upstream
        self._upstream = None
        self._finish()
        span = self._upstreamSpan
        if span is not None:
            self._upstreamSpan = None
            info = self.info
            self.callbacks.tracingConfig.finishUpstreamSpan(
                span, self.request, info, info.responseCode, info.startTime + info.duration(),
                self._upstreamResetReason)
        if upstream is not None and not upstream.done:
            upstream.done = True
            upstream.cancel()


def _withSetCookie(value, modify):
    # A local reply carries the generated cookie too, as Envoy's does.
    def withCookie(response):
        response.headers.add(b"set-cookie", value)
        if modify is not None:
            modify(response)

    return withCookie


def _addOverloaded(response):
    response.headers._entries.append((b"x-envoy-overloaded", b"true"))
