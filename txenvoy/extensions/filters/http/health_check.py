# -*- test-case-name: tests.extensions.filters.http.test_health_check -*-
"""
C{envoy.filters.http.health_check}: answer (or mark) the requests a load
balancer sends to check this server.

Behaviour copied from Envoy 1.40 (checked against the binary, pinned in
C{tests/extensions/filters/http/test_health_check.py}):

 - a request matching every C{headers} matcher is a health check;
 - without C{pass_through_mode} it is answered here: C{200} with an empty
   body, details C{health_check_ok}; after C{POST /healthcheck/fail}
   C{503}, details C{health_check_failed}, flag C{LH};
 - with C{pass_through_mode} it goes on, unless the server failed its
   health check (then C{503} as above) or C{cache_time} holds an answer
   from an earlier one (then that status, details
   C{health_check_cached});
 - every response to a health check gets
   C{x-envoy-upstream-healthchecked-cluster: <node.cluster>}, and while the
   server fails its health check every response gets
   C{x-envoy-immediate-health-check-fail: true};
 - the stats C{http.<prefix>.health_check.*} count the requests answered
   here: C{request_total}, then C{ok} or C{failed} by the status sent, and
   C{cached_response} for a cached answer; forwarded ones count nothing.
"""

import threading

from zope.interface import implementer

from envoy.extensions.filters.http.health_check.v3 import health_check_pb2  # noqa: F401

from txenvoy.config.errors import ConfigError, UnsupportedField
from txenvoy.config.fields import durationSeconds
from txenvoy.config.registry import Category, extension
from txenvoy.http.filter import (
    ConfiguredFilter,
    FilterDataStatus,
    FilterHeadersStatus,
    FilterTrailersStatus,
)
from txenvoy.router.matcher import compileHeaderMatchers
from txenvoy.interfaces import IHttpFilterFactory, IStreamDecoderFilter, IStreamEncoderFilter
from txenvoy.network.stream_info import ResponseFlag

from txenvoy.http.filter_config import WorkerStats, httpStatPrefix

__all__ = ["HealthCheckConfig", "HealthCheckFilter", "HealthCheckCache", "createHealthCheck"]

_COUNTERS = ("request_total", "failed", "ok", "cached_response", "failed_cluster_not_found",
             "failed_cluster_empty", "failed_cluster_unhealthy", "degraded")

_HEALTHCHECKED_CLUSTER = b"x-envoy-upstream-healthchecked-cluster"
_IMMEDIATE_FAIL = b"x-envoy-immediate-health-check-fail"
_DEGRADED = b"x-envoy-degraded"


class HealthCheckCache:
    """
    The answer kept with C{cache_time} (Envoy's C{HealthCheckCacheManager}),
    shared by every worker.

    Envoy forgets the answer on a timer that fires every C{cache_time}; the
    same windows are computed here from the clock when asked, so an idle
    server runs no timer.
    """

    def __init__(self, interval):
        self.interval = interval
        self._epoch = None
        self._window = None
        self.code = 200
        self.degraded = False
        self._lock = threading.Lock()

    def _windowAt(self, now):
        if self._epoch is None:
            self._epoch = now
        return int((now - self._epoch) // self.interval)

    def useCachedResponse(self, now):
        """Whether an answer was kept in the current window."""
        with self._lock:
            return self._windowAt(now) == self._window

    def setCachedResponse(self, code, degraded, now):
        """Keep C{code} until the current window ends."""
        with self._lock:
            self.code = code
            self.degraded = degraded
            self._window = self._windowAt(now)


@implementer(IHttpFilterFactory)
class HealthCheckConfig:
    """
    A compiled C{HealthCheck}; the filter factory.

    @ivar passThrough: C{pass_through_mode}.
    @ivar matchers: the compiled C{headers}.
    @ivar cache: a L{HealthCheckCache}, or C{None}.
    @ivar clusterName: C{bytes}, the node's cluster.
    @ivar server: the server (C{healthCheckFailed}), or C{None}.
    """

    terminal = False

    def __init__(self, passThrough, matchers, clusterName=b"", cacheTime=0.0, server=None,
                 statPrefix="http.unknown."):
        self.passThrough = passThrough
        self.matchers = tuple(matchers)
        self.clusterName = clusterName
        self.cache = HealthCheckCache(cacheTime) if cacheTime > 0 else None
        self.server = server
        prefix = statPrefix + "health_check."
        self.stats = WorkerStats({name: prefix + name for name in _COUNTERS})

    def healthCheckFailed(self):
        """Whether the server fails health checks (C{/healthcheck/fail})."""
        server = self.server
        return server is not None and getattr(server, "healthCheckFailed", False)

    def createFilter(self, callbacks):
        """@return: a L{HealthCheckFilter} for one request."""
        return HealthCheckFilter(self, callbacks)


@implementer(IStreamDecoderFilter, IStreamEncoderFilter)
class HealthCheckFilter(ConfiguredFilter):
    """
    The health check filter of one request. Both directions: it marks
    responses while the server fails its health check, whatever the
    request was.
    """

    _healthCheck = False
    _handling = False

    def decodeHeaders(self, headers, endStream):
        config = self.config
        entries = headers.headers
        for matcher in config.matchers:
            if not matcher.matches(entries, headers.authority, headers.path, headers.method):
                return FilterHeadersStatus.Continue
        self._healthCheck = True
        callbacks = self.callbacks
        callbacks.streamInfo.healthCheck = True
        cache = config.cache
        if (not config.passThrough or config.healthCheckFailed()
                or (cache is not None
                    and cache.useCachedResponse(callbacks.dispatcher.reactor.seconds()))):
            self._handling = True
            if endStream:
                self._complete()
            return FilterHeadersStatus.StopIteration
        return FilterHeadersStatus.Continue

    def decodeData(self, data, endStream):
        if not self._handling:
            return FilterDataStatus.Continue
        if endStream:
            self._complete()
        return FilterDataStatus.StopIterationNoBuffer

    def decodeTrailers(self, trailers):
        if not self._handling:
            return FilterTrailersStatus.Continue
        self._complete()
        return FilterTrailersStatus.StopIteration

    def encodeHeaders(self, headers, endStream):
        config = self.config
        if self._healthCheck:
            entries = headers.headers
            cache = config.cache
            if cache is not None:
                cache.setCachedResponse(headers.status, entries.get(_DEGRADED) is not None,
                                        self.callbacks.dispatcher.reactor.seconds())
            entries.set(_HEALTHCHECKED_CLUSTER, config.clusterName)
        if config.healthCheckFailed():
            headers.headers.set(_IMMEDIATE_FAIL, b"true")
        return FilterHeadersStatus.Continue

    def _complete(self):
        """Answer the health check here (Envoy's C{onComplete})."""
        config = self.config
        callbacks = self.callbacks
        stats = config.stats.forDispatcher(callbacks.dispatcher)
        degraded = False
        if config.healthCheckFailed():
            code = 503
            details = "health_check_failed"
            callbacks.streamInfo.setResponseFlag(ResponseFlag.FAILED_LOCAL_HEALTH_CHECK)
        else:
            code = 200
            details = "health_check_ok"
            cache = config.cache
            if cache is not None:
                code = cache.code
                degraded = cache.degraded
                details = "health_check_cached"
                stats.cached_response.inc()
                if degraded:
                    stats.degraded.inc()
            if not 200 <= code < 300:
                callbacks.streamInfo.setResponseFlag(ResponseFlag.FAILED_LOCAL_HEALTH_CHECK)
        stats.request_total.inc()
        if 200 <= code < 300:
            stats.ok.inc()
        else:
            stats.failed.inc()
        modify = _markDegraded if degraded else None
        callbacks.sendLocalReply(code, b"", modify, details)


def _markDegraded(response):
    response.headers.set(_DEGRADED, b"")


def _clusterName(context):
    server = getattr(context, "server", None)
    node = getattr(server, "node", None)
    if node is None:
        bootstrap = getattr(context, "bootstrap", None)
        node = bootstrap.node if bootstrap is not None else None
    cluster = node.cluster if node is not None else ""
    return cluster.encode("utf-8")


@extension(Category.HTTP_FILTER, "envoy.extensions.filters.http.health_check.v3.HealthCheck",
           "envoy.filters.http.health_check",
           fields=("pass_through_mode", "cache_time", "headers",
                   "cluster_min_healthy_percentages"))
def createHealthCheck(message, context):
    """Compile a C{HealthCheck} message."""
    path = context.configPath
    if not message.HasField("pass_through_mode"):
        raise ConfigError("%s: Proto constraint validation failed (HealthCheckValidationError."
                          "PassThroughMode: value is required)" % (path,))
    passThrough = message.pass_through_mode.value
    # Envoy ignores the percentages in pass-through mode.
    if message.cluster_min_healthy_percentages and not passThrough:
        raise UnsupportedField(path + ".cluster_min_healthy_percentages")
    cacheTime = durationSeconds(message.cache_time) if message.HasField("cache_time") else 0.0
    if int(cacheTime * 1000) and not passThrough:
        raise ConfigError("%s: cache_time_ms must not be set when path_through_mode is "
                          "disabled" % (path,))
    config = HealthCheckConfig(
        passThrough, compileHeaderMatchers(message.headers, path + ".headers"),
        _clusterName(context), cacheTime, getattr(context, "server", None),
        httpStatPrefix(context))
    config.stats.declare(context)
    return config
