# -*- test-case-name: tests.e2e.test_ratelimit -*-
"""
C{envoy.filters.http.ratelimit}: ask the gRPC rate limit service whether a
request may go on, with the descriptors its route's and virtual host's
C{rate_limits} make of it (L{txenvoy.router.rate_limit_policy}).

Behaviour copied from Envoy 1.40 (pinned in C{tests/e2e/test_ratelimit.py}):

 - the route's C{rate_limits} of the filter's C{stage} make the
   descriptors, then the virtual host's when the route has none (or
   always, with C{include_vh_rate_limits}); no descriptor, no call; no
   route or no cluster of the route, no call;
 - the call carries the filter's C{domain} and waits C{timeout} (20 ms
   by default);
 - C{OK} (or C{UNKNOWN}) lets the request through, with the answer's
   C{request_headers_to_add} on the request and C{response_headers_to_add}
   on the response, counted in C{cluster.<route's cluster>.ratelimit.ok};
 - C{OVER_LIMIT} is answered with C{rate_limited_status} (429), no body,
   C{x-envoy-ratelimited: true} (unless
   C{disable_x_envoy_ratelimited_header}) and the answer's
   C{response_headers_to_add}, details C{request_rate_limited}, flag C{RL},
   counted in C{ratelimit.over_limit} and as a 429 of the cluster;
 - a failed call counts in C{ratelimit.error}; with C{failure_mode_deny}
   it is answered with C{status_on_error} (500), details
   C{rate_limiter_error}, flag C{RLSE}, else the request goes on
   (C{ratelimit.failure_mode_allowed});
 - C{enable_x_ratelimit_headers: DRAFT_VERSION_03} adds
   C{x-ratelimit-limit}, C{-remaining} and C{-reset} to the response;
 - C{filter_enabled} (a runtime fraction, 100% when unset) leaves the
   requests it does not take alone (no call); C{filter_enforced} (100%
   when unset) decides whether C{OVER_LIMIT} is answered: when not, it is
   counted as usual and the request goes on, its response getting the
   answer's headers and C{x-envoy-ratelimited};
 - a C{rate_limits} entry's C{disable_key} is read in the runtime as
   C{ratelimit.<disable_key>.http_filter_enabled} (100 when unset).
"""

from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from zope.interface import implementer

from envoy.extensions.filters.http.ratelimit.v3 import rate_limit_pb2  # noqa: F401

from txenvoy.config.errors import ConfigError
from txenvoy.config.fields import durationSeconds
from txenvoy.config.registry import Category, extension
from txenvoy.extensions.filters.common.ratelimit_grpc import (
    DEFAULT_TIMEOUT,
    OVER_LIMIT,
    compileRateLimitService,
    xRateLimitHeaders,
)
from txenvoy.http.filter import ConfiguredFilter, FilterHeadersStatus
from txenvoy.http.filter_config import snapshotSource
from txenvoy.interfaces import IHttpFilterFactory, IStreamDecoderFilter, IStreamEncoderFilter
from txenvoy.network.stream_info import ResponseFlag
from txenvoy.router.rate_limit_policy import DescriptorInput
from txenvoy.runtime import RuntimeFractionalPercent

__all__ = ["RateLimitConfig", "RateLimitFilter", "createRateLimit"]

log = Logger(namespace="ratelimit")

_RATELIMITED = b"x-envoy-ratelimited"


def _pairs(headers):
    """C{HeaderValue}s as C{[(name, value)]} (bytes)."""
    return [(h.key.lower().encode("latin-1"), h.raw_value or h.value.encode("utf-8"))
            for h in headers]


@implementer(IHttpFilterFactory)
class RateLimitConfig:
    """A compiled HTTP C{RateLimit}; the filter factory."""

    terminal = False

    #: C{snapshot()} of the runtime.
    snapshot = staticmethod(snapshotSource(None))
    filterEnabled = None        # a RuntimeFractionalPercent; None: always
    filterEnforced = None

    def __init__(self, client, stage, failureModeDeny, rateLimitedStatus, statusOnError,
                 xRateLimitHeaders, ratelimitedHeader, localServiceCluster):
        self.client = client
        self.stage = stage
        self.failureModeDeny = failureModeDeny
        self.rateLimitedStatus = rateLimitedStatus
        self.statusOnError = statusOnError
        self.xRateLimitHeaders = xRateLimitHeaders
        self.ratelimitedHeader = ratelimitedHeader
        self.localServiceCluster = localServiceCluster

    def createFilter(self, callbacks):
        return RateLimitFilter(self, callbacks)

    def descriptors(self, routeMatch, head, streamInfo):
        """The request's C{[(entries, hitsAddend)]}."""
        entry = routeMatch.entry
        request = DescriptorInput(head, streamInfo.downstreamRemoteAddress,
                                  routeMatch.clusterName, self.localServiceCluster,
                                  streamInfo.dynamicMetadata, entry.metadata)
        out = []
        policies = list(entry.rateLimits)
        if entry.includeVhRateLimits or not policies:
            policies.extend(routeMatch.virtualHost.rateLimits)
        snapshot = None
        for policy in policies:
            if policy.stage != self.stage:
                continue
            if policy.disableKey:
                if snapshot is None:
                    snapshot = self.snapshot()
                if not snapshot.featureEnabled(
                        "ratelimit.%s.http_filter_enabled" % (policy.disableKey,), 100):
                    continue
            entries = policy.descriptor(request)
            if entries is not None:
                out.append((entries, policy.hitsAddend))
        return out


@implementer(IStreamDecoderFilter, IStreamEncoderFilter)
class RateLimitFilter(ConfiguredFilter):
    """The ratelimit filter of one request."""

    _pending = None
    _inCall = False
    _answered = None
    _responseHeaders = ()
    _cluster = None

    def decodeHeaders(self, headers, endStream):
        config = self.config
        if config.filterEnabled is not None and not config.filterEnabled.enabled(
                config.snapshot()):
            return FilterHeadersStatus.Continue
        callbacks = self.callbacks
        route = callbacks.route()
        if route is None or getattr(route.entry, "rateLimits", None) is None:
            return FilterHeadersStatus.Continue
        cluster = (callbacks.dispatcher.clusterManager.getThreadLocalCluster(route.clusterName)
                   if route.clusterName else None)
        if cluster is None:
            return FilterHeadersStatus.Continue
        descriptors = self.config.descriptors(route, headers, callbacks.streamInfo)
        if not descriptors:
            return FilterHeadersStatus.Continue
        self._cluster = cluster
        self._clusterName = route.clusterName
        self._headers = headers
        self._inCall = True
        d = self._pending = self.config.client.limit(callbacks.dispatcher, descriptors)
        d.addCallbacks(self._onAnswer, self._onFailure).addErrback(self._onBug)
        self._inCall = False
        answered = self._answered
        if answered is None:
            return FilterHeadersStatus.StopAllIterationAndWatermark
        return (FilterHeadersStatus.Continue if answered
                else FilterHeadersStatus.StopAllIterationAndWatermark)

    def encodeHeaders(self, headers, endStream):
        for name, value in self._responseHeaders:
            headers.headers.add(name, value)
        return FilterHeadersStatus.Continue

    def onDestroy(self):
        pending = self._pending
        if pending is not None:
            self._pending = None
            pending.cancel()

    def _count(self, name):
        # Envoy counts in the route's cluster's scope, on first use.
        self.callbacks.dispatcher.stats.counter(
            "cluster.%s.ratelimit.%s" % (self._clusterName, name)).inc()

    def _proceed(self):
        if self._inCall:
            self._answered = True
        else:
            self.callbacks.continueDecoding()

    def _stop(self):
        if self._inCall:
            self._answered = False

    def _onAnswer(self, response):
        self._pending = None
        config = self.config
        callbacks = self.callbacks
        extra = _pairs(response.response_headers_to_add)
        limits = xRateLimitHeaders(response.statuses) if config.xRateLimitHeaders else []
        if response.overall_code == OVER_LIMIT:
            self._count("over_limit")
            stats = self._cluster.stats
            code, klass = stats.rqCode(429)
            code.inc()
            klass.inc()
            stats.upstream_rq_completed.inc()
            if config.filterEnforced is not None and not config.filterEnforced.enabled(
                    config.snapshot()):
                # Counted, not enforced: the request goes on and its
                # response carries what a 429 would have.
                for name, value in _pairs(response.request_headers_to_add):
                    self._headers.headers.add(name, value)
                self._responseHeaders = extra + (
                    [(_RATELIMITED, b"true")] if config.ratelimitedHeader else []) + limits
                self._proceed()
                return

            def modify(head):
                # Envoy's order: the service's headers, x-envoy-ratelimited,
                # then the x-ratelimit-* ones.
                for name, value in extra:
                    head.headers.add(name, value)
                if config.ratelimitedHeader:
                    head.headers.add(_RATELIMITED, b"true")
                for name, value in limits:
                    head.headers.add(name, value)

            self._stop()
            callbacks.streamInfo.setResponseFlag(ResponseFlag.RATE_LIMITED)
            callbacks.sendLocalReply(config.rateLimitedStatus, b"", modify,
                                     "request_rate_limited")
            return
        self._count("ok")
        for name, value in _pairs(response.request_headers_to_add):
            self._headers.headers.add(name, value)
        self._responseHeaders = extra + limits
        self._proceed()

    def _onBug(self, reason):
        # A bug while applying the answer: the request must not hang.
        log.failure("applying a rate limit answer", reason)
        self.callbacks.resetStream()

    def _onFailure(self, reason):
        if reason.check(CancelledError):
            return
        self._pending = None
        config = self.config
        self._count("error")
        if config.failureModeDeny:
            self._stop()
            callbacks = self.callbacks
            callbacks.streamInfo.setResponseFlag(ResponseFlag.RATELIMIT_SERVICE_ERROR)
            callbacks.sendLocalReply(config.statusOnError, b"", None, "rate_limiter_error")
            return
        self._count("failure_mode_allowed")
        self._proceed()


def _localServiceCluster(context):
    server = getattr(context, "server", None)
    node = getattr(server, "node", None)
    if node is None:
        bootstrap = getattr(context, "bootstrap", None)
        node = bootstrap.node if bootstrap is not None else None
    return node.cluster if node is not None else ""


@extension(Category.HTTP_FILTER, "envoy.extensions.filters.http.ratelimit.v3.RateLimit",
           "envoy.filters.http.ratelimit",
           fields=("domain", "stage", "timeout", "failure_mode_deny", "rate_limit_service",
                   "enable_x_ratelimit_headers", "disable_x_envoy_ratelimited_header",
                   "rate_limited_status", "status_on_error", "request_type",
                   "filter_enabled", "filter_enforced"))
def createRateLimit(message, context):
    """Compile an HTTP C{RateLimit}."""
    path = context.configPath
    if not message.domain:
        raise ConfigError("%s.domain: RateLimitValidationError.Domain: value length must be "
                          "at least 1 characters" % (path,))
    if message.request_type not in ("", "both"):
        raise ConfigError("%s.request_type: txenvoy implements \"both\"" % (path,))
    timeout = (durationSeconds(message.timeout) if message.HasField("timeout")
               else DEFAULT_TIMEOUT)
    client = compileRateLimitService(message.rate_limit_service, path + ".rate_limit_service",
                                     context.bootstrap, message.domain, timeout)
    limited = message.rate_limited_status.code
    config = RateLimitConfig(
        client, message.stage, message.failure_mode_deny,
        limited if limited >= 400 else 429, message.status_on_error.code or 500,
        message.enable_x_ratelimit_headers == 1, not message.disable_x_envoy_ratelimited_header,
        _localServiceCluster(context))
    config.snapshot = snapshotSource(context)
    if message.HasField("filter_enabled"):
        config.filterEnabled = RuntimeFractionalPercent(message.filter_enabled)
    if message.HasField("filter_enforced"):
        config.filterEnforced = RuntimeFractionalPercent(message.filter_enforced)
    return config
