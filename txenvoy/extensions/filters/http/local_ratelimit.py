# -*- test-case-name: tests.extensions.filters.http.test_local_ratelimit -*-
"""
C{envoy.filters.http.local_ratelimit}: a token bucket on requests, shared
by every worker.

Behaviour copied from Envoy 1.40 (checked against the binary, pinned in
C{tests/extensions/filters/http/test_local_ratelimit.py}):

 - the filter does nothing unless C{filter_enabled} (a
   C{RuntimeFractionalPercent}) says so; unset means off, so the usual
   setup is an empty filter on the connection manager and a config per
   route in C{typed_per_filter_config}, which replaces the filter's own
   (its bucket is the route's own, shared by every request of the route);
 - a request takes a token; without one it counts in C{rate_limited}, and
   when C{filter_enforced} says so it is answered here: C{status} (429
   unless a code of 400 or more is set), body C{local_rate_limited},
   details C{local_rate_limited}, flag C{RL}, with
   C{response_headers_to_add}; not enforced, it goes on with
   C{request_headers_to_add_when_not_enforced};
 - the bucket starts full and refills continuously at
   C{tokens_per_fill / fill_interval} tokens a second, up to
   C{max_tokens} (Envoy 1.40's C{AtomicTokenBucketImpl}; no timer runs);
   without a C{token_bucket} every request is allowed;
 - C{local_rate_limit_per_downstream_connection} gives each connection a
   bucket of its own;
 - stats are C{<stat_prefix>.http_local_rate_limit.enabled}, C{enforced},
   C{ok}, C{rate_limited} and C{shadow_mode}, with no C{http.} in front.

C{descriptors}, C{rate_limits}, C{local_cluster_rate_limit},
C{enable_x_ratelimit_headers} and C{rate_limited_as_resource_exhausted}
are not implemented: they are rejected (C{UnsupportedField}).
"""

import threading

from zope.interface import implementer

from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2  # noqa: F401

from txenvoy.config.errors import ConfigError, UnsupportedField
from txenvoy.config.fields import checkFields, wholeMilliseconds
from txenvoy.config.registry import Category, extension
from txenvoy.http.filter import ConfiguredFilter, FilterHeadersStatus
from txenvoy.http.header_mutation import FormatContext, compileHeaderMutation
from txenvoy.interfaces import IHttpFilterFactory, IStreamDecoderFilter
from txenvoy.network.stream_info import ResponseFlag
from txenvoy.runtime import RuntimeFractionalPercent

from txenvoy.http.filter_config import RouteSpecificConfigs, WorkerStats, snapshotSource

__all__ = ["AtomicTokenBucket", "LocalRateLimitConfig", "LocalRateLimitFilter",
           "createLocalRateLimit"]

_NAME = "envoy.filters.http.local_ratelimit"
_LOCAL_RATE_LIMIT = "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"

# Envoy refuses faster fill timers.
MIN_FILL_INTERVAL = 0.05

_COUNTERS = ("enabled", "enforced", "ok", "rate_limited", "shadow_mode")

# Fields whose only effect is on descriptors, which are rejected.
_FIELDS = frozenset(("stat_prefix", "status", "token_bucket", "filter_enabled", "filter_enforced",
                     "request_headers_to_add_when_not_enforced", "response_headers_to_add",
                     "descriptors", "stage", "local_rate_limit_per_downstream_connection",
                     "vh_rate_limits", "always_consume_default_token_bucket",
                     "max_dynamic_descriptors"))

#: The connection's filter state key of its own bucket (Envoy's).
PER_CONNECTION_KEY = "per_connection_local_rate_limiter"


class AtomicTokenBucket:
    """
    Envoy's C{AtomicTokenBucketImpl}: the bucket is one instant, the time
    at which it was (or will be) empty; the tokens are the time since then
    times the fill rate, up to C{maxTokens}. Taking a token moves that
    instant on by one token's worth. It starts full.

    The instant is kept in whole nanoseconds, as Envoy keeps it, so that
    a run of takes does not drift below a whole token.

    Shared by every worker, so L{consume} takes a lock.
    """

    def __init__(self, maxTokens, fillRate):
        self.maxTokens = maxTokens
        self.fillRate = fillRate
        self._emptyNs = None
        self._lock = threading.Lock()

    def _tokens(self, nowNs):
        emptyNs = self._emptyNs
        if emptyNs is None:
            emptyNs = self._emptyNs = nowNs - int(self.maxTokens / self.fillRate * 1e9)
        if nowNs <= emptyNs:
            return 0.0
        return min(self.maxTokens, (nowNs - emptyNs) / 1e9 * self.fillRate)

    def consume(self, now):
        """
        Take one token.

        @param now: the caller's reactor time, in seconds.
        @return: whether there was a token.
        """
        nowNs = int(now * 1e9)
        with self._lock:
            tokens = self._tokens(nowNs)
            if tokens < 1:
                return False
            self._emptyNs = nowNs - int((tokens - 1) / self.fillRate * 1e9)
            return True

    def remaining(self, now):
        """The whole tokens in the bucket at C{now}."""
        with self._lock:
            return int(self._tokens(int(now * 1e9)))


class _AlwaysAllow:
    """No token bucket configured: nothing is limited."""

    @staticmethod
    def consume(now):
        return True


@implementer(IHttpFilterFactory)
class LocalRateLimitConfig:
    """
    A compiled C{LocalRateLimit}: the filter's own (and its factory) or a
    route's.

    @ivar bucket: the shared L{AtomicTokenBucket} (or an always-allow one).
    @ivar status: the status of the reply.
    @ivar filterEnabled: a L{RuntimeFractionalPercent}, or C{None} (off).
    @ivar filterEnforced: the same for enforcing.
    @ivar perConnection: C{local_rate_limit_per_downstream_connection}.
    """

    terminal = False
    #: The route-specific configs (on the filter's own config only).
    routeConfigs = None

    def __init__(self, message, path, snapshot, perRoute=False):
        checkFields(message, _FIELDS, path)
        if not message.stat_prefix:
            raise ConfigError("%s: Proto constraint validation failed (LocalRateLimitValidation"
                              "Error.StatPrefix: value length must be at least 1 characters)"
                              % (path,))
        if message.descriptors:
            raise UnsupportedField(path + ".descriptors")
        self.snapshot = snapshot
        code = message.status.code if message.HasField("status") else 0
        self.status = code if code >= 400 else 429
        self.maxTokens = self.fillRate = None
        tb = message.token_bucket
        interval = wholeMilliseconds(tb.fill_interval) if message.HasField("token_bucket") else 0.0
        if perRoute and not message.HasField("token_bucket"):
            raise ConfigError("%s: local rate limit token bucket must be set for per filter "
                              "configs" % (path,))
        if interval > 0:
            if interval < MIN_FILL_INTERVAL:
                raise ConfigError("%s.token_bucket.fill_interval: local rate limit token bucket "
                                  "fill timer must be >= 50ms" % (path,))
            perFill = tb.tokens_per_fill.value if tb.HasField("tokens_per_fill") else 1
            self.maxTokens = tb.max_tokens
            self.fillRate = perFill / interval
            self.bucket = AtomicTokenBucket(self.maxTokens, self.fillRate)
        else:
            # Envoy ignores a token bucket without a fill interval.
            self.bucket = _AlwaysAllow()
        self.filterEnabled = (RuntimeFractionalPercent(message.filter_enabled)
                              if message.HasField("filter_enabled") else None)
        self.filterEnforced = (RuntimeFractionalPercent(message.filter_enforced)
                               if message.HasField("filter_enforced") else None)
        self.responseHeaders = compileHeaderMutation(
            message.response_headers_to_add, (), path + ".response_headers_to_add")
        self.requestHeaders = compileHeaderMutation(
            message.request_headers_to_add_when_not_enforced, (),
            path + ".request_headers_to_add_when_not_enforced")
        self.perConnection = message.local_rate_limit_per_downstream_connection
        prefix = message.stat_prefix + ".http_local_rate_limit."
        self.stats = WorkerStats({name: prefix + name for name in _COUNTERS})

    def enabled(self, snapshot):
        """C{filter_enabled} for this request."""
        flag = self.filterEnabled
        return flag is not None and flag.enabled(snapshot)

    def enforced(self, snapshot):
        """C{filter_enforced} for this request."""
        flag = self.filterEnforced
        return flag is not None and flag.enabled(snapshot)

    def bucketFor(self, callbacks):
        """The bucket this request takes a token from."""
        if not self.perConnection:
            return self.bucket
        if self.fillRate is None:
            return self.bucket
        state = callbacks.connection.streamInfo.filterState
        bucket = state.get(PER_CONNECTION_KEY)
        if bucket is None:
            bucket = state[PER_CONNECTION_KEY] = AtomicTokenBucket(self.maxTokens, self.fillRate)
        return bucket

    def createFilter(self, callbacks):
        """@return: a L{LocalRateLimitFilter} for one request."""
        return LocalRateLimitFilter(self, callbacks)


@implementer(IStreamDecoderFilter)
class LocalRateLimitFilter(ConfiguredFilter):
    """The local rate limit filter of one request (request direction only)."""

    def decodeHeaders(self, headers, endStream):
        config = self.config
        callbacks = self.callbacks
        used = config.routeConfigs.mostSpecific(callbacks) or config
        snapshot = config.snapshot()
        if not used.enabled(snapshot):
            return FilterHeadersStatus.Continue
        dispatcher = callbacks.dispatcher
        stats = used.stats.forDispatcher(dispatcher)
        stats.enabled.inc()
        if used.bucketFor(callbacks).consume(dispatcher.reactor.seconds()):
            stats.ok.inc()
            return FilterHeadersStatus.Continue
        stats.rate_limited.inc()
        info = callbacks.streamInfo
        if not used.enforced(snapshot):
            if used.requestHeaders:
                used.requestHeaders.apply(headers.headers, FormatContext(info, headers))
            return FilterHeadersStatus.Continue
        stats.enforced.inc()
        modify = None
        if used.responseHeaders:
            mutation = used.responseHeaders

            def modify(response):
                mutation.apply(response.headers, FormatContext(info, headers, response))

        info.setResponseFlag(ResponseFlag.RATE_LIMITED)
        callbacks.sendLocalReply(used.status, b"local_rate_limited", modify,
                                 "local_rate_limited")
        return FilterHeadersStatus.StopIteration


def _compilePerRoute(snapshot):
    def compile(message):
        return LocalRateLimitConfig(message, "typed_per_filter_config[%s]" % (_NAME,),
                                    snapshot, perRoute=True)

    return compile


@extension(Category.HTTP_FILTER, _LOCAL_RATE_LIMIT, _NAME)
def createLocalRateLimit(message, context):
    """Compile a C{LocalRateLimit} message."""
    path = context.configPath
    snapshot = snapshotSource(context)
    config = LocalRateLimitConfig(message, path, snapshot)
    config.routeConfigs = RouteSpecificConfigs(_NAME, (_LOCAL_RATE_LIMIT,),
                                               _compilePerRoute(snapshot))
    config.stats.declare(context)
    return config
