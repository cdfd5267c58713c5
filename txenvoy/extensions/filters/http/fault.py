# -*- test-case-name: tests.extensions.filters.http.test_fault -*-
"""
C{envoy.filters.http.fault}: inject delays and aborts into requests, for
chaos testing, steered by the config, the runtime and request headers.

Behaviour copied from Envoy 1.40 (C{FaultFilter}; checked against the
binary, pinned in C{tests/extensions/filters/http/test_fault.py}):

 - a request is considered when the route goes to C{upstream_cluster} (if
   set), its C{x-envoy-downstream-service-node} is one of
   C{downstream_nodes} (if set), and every C{headers} matcher holds;
 - a delay comes first: C{fixed_delay}, or the milliseconds of
   C{x-envoy-fault-delay-request} with C{header_delay}, injected for
   C{percentage} of requests; the runtime keys
   C{fault.http.delay.fixed_delay_percent} and
   C{fault.http.delay.fixed_duration_ms} override both (their names
   changed by C{delay_percent_runtime} and C{delay_duration_runtime});
   the request waits on the worker's reactor, flag C{DI}, then goes on
   or is aborted;
 - an abort answers with C{http_status} (or C{x-envoy-fault-abort-request},
   200 to 599, with C{header_abort}), body C{fault filter abort}, details
   C{fault_filter_abort}, flag C{FI}; C{fault.http.abort.abort_percent}
   and C{fault.http.abort.http_status} override the config;
 - with C{header_*} the percentage may be lowered by
   C{x-envoy-fault-*-request-percentage};
 - C{x-envoy-downstream-service-cluster: <c>} brings in the keys
   C{fault.http.<c>.*}, which replace the general ones, and the counters
   C{http.<prefix>.fault.<c>.aborts_injected} / C{delays_injected};
 - at most C{max_active_faults} requests (the runtime key
   C{fault.http.max_active_faults}) are faulted at once; a request that
   would go over counts in C{faults_overflow} and is left alone;
 - a C{typed_per_filter_config} C{HTTPFault} replaces the filter's
   settings for the route (the runtime keys still apply).

Stats: C{http.<prefix>.fault.aborts_injected}, C{delays_injected},
C{faults_overflow}, C{response_rl_injected} and the gauge
C{active_faults}.

C{response_rate_limit}, C{abort.grpc_status} and C{filter_metadata} are
not implemented: they are rejected (C{UnsupportedField}).
"""

import re
import threading

from zope.interface import implementer

from envoy.extensions.filters.http.fault.v3 import fault_pb2  # noqa: F401

from txenvoy.config.errors import ConfigError
from txenvoy.config.fields import checkFields
from txenvoy.config.registry import Category, extension
from txenvoy.http.filter import (
    ConfiguredFilter,
    FilterDataStatus,
    FilterHeadersStatus,
    FilterTrailersStatus,
)
from txenvoy.router.matcher import compileHeaderMatchers
from txenvoy.interfaces import IHttpFilterFactory, IStreamDecoderFilter
from txenvoy.network.stream_info import ResponseFlag
from txenvoy.runtime.runtime import FractionalPercent, fractionalPercent

from txenvoy.http.filter_config import (
    RouteSpecificConfigs,
    WorkerStats,
    httpStatPrefix,
    snapshotSource,
)

__all__ = ["FaultSettings", "FaultConfig", "FaultFilter", "createFault"]

_NAME = "envoy.filters.http.fault"
_HTTP_FAULT = "envoy.extensions.filters.http.fault.v3.HTTPFault"

ABORT_REQUEST = b"x-envoy-fault-abort-request"
ABORT_REQUEST_PERCENTAGE = b"x-envoy-fault-abort-request-percentage"
DELAY_REQUEST = b"x-envoy-fault-delay-request"
DELAY_REQUEST_PERCENTAGE = b"x-envoy-fault-delay-request-percentage"
DOWNSTREAM_CLUSTER = b"x-envoy-downstream-service-cluster"
DOWNSTREAM_NODE = b"x-envoy-downstream-service-node"

_UINT = re.compile(rb"\A[0-9]+\Z")
_UINT32_MAX = 2 ** 32 - 1
_UINT64_MAX = 2 ** 64 - 1

_FIELDS = frozenset(("delay", "abort", "upstream_cluster", "headers", "downstream_nodes",
                     "max_active_faults", "delay_percent_runtime", "abort_percent_runtime",
                     "delay_duration_runtime", "abort_http_status_runtime",
                     "max_active_faults_runtime", "response_rate_limit_percent_runtime",
                     "abort_grpc_status_runtime", "disable_downstream_cluster_stats"))


def _headerUint(headers, name, limit):
    """
    The first value of an untrusted header as an unsigned integer (Envoy's
    C{absl::SimpleAtoi}), or C{None}.
    """
    value = headers.get(name)
    if value is None:
        return None
    value = value.strip(b" \t")
    if value[:1] == b"+":
        value = value[1:]
    if not _UINT.match(value):
        return None
    number = int(value)
    return number if number <= limit else None


class _HeaderPercentage:
    """
    Envoy's C{HeaderPercentageProvider}: the configured percentage, lowered
    by a request header's numerator.
    """

    __slots__ = ("header", "percent")

    def __init__(self, header, percent):
        self.header = header
        self.percent = percent

    def __call__(self, headers):
        numerator = _headerUint(headers, self.header, _UINT32_MAX)
        percent = self.percent
        if numerator is None:
            return percent
        return FractionalPercent(min(numerator, percent.numerator), percent.denominator)


def _fixedPercentage(percent):
    return lambda headers: percent


def _fixedValue(value):
    return lambda headers: value


def _headerAbortStatus(headers):
    code = _headerUint(headers, ABORT_REQUEST, _UINT64_MAX)
    if code is not None and 200 <= code < 600:
        return code
    return None


def _headerDelayMs(headers):
    return _headerUint(headers, DELAY_REQUEST, _UINT64_MAX)


class FaultSettings:
    """
    A compiled C{HTTPFault} (Envoy's C{FaultSettings}): the filter's own
    settings, or one route's.

    @ivar abortStatus: C{f(headers) -> int or None}, or C{None} without an
        abort.
    @ivar abortPercentage: C{f(headers) -> FractionalPercent}.
    @ivar delayMs: C{f(headers) -> int or None}, or C{None} without a delay.
    @ivar delayPercentage: C{f(headers) -> FractionalPercent}.
    """

    def __init__(self, message, path):
        checkFields(message, _FIELDS, path)
        self.matchers = compileHeaderMatchers(message.headers, path + ".headers")
        self.upstreamCluster = message.upstream_cluster or None
        self.downstreamNodes = frozenset(n.encode("utf-8") for n in message.downstream_nodes)
        self.maxActiveFaults = (message.max_active_faults.value
                                if message.HasField("max_active_faults") else None)
        self.disableDownstreamClusterStats = message.disable_downstream_cluster_stats
        self.delayPercentKey = (message.delay_percent_runtime
                                or "fault.http.delay.fixed_delay_percent")
        self.abortPercentKey = message.abort_percent_runtime or "fault.http.abort.abort_percent"
        self.delayDurationKey = (message.delay_duration_runtime
                                 or "fault.http.delay.fixed_duration_ms")
        self.abortHttpStatusKey = (message.abort_http_status_runtime
                                   or "fault.http.abort.http_status")
        self.maxActiveFaultsKey = (message.max_active_faults_runtime
                                   or "fault.http.max_active_faults")
        self.abortStatus = None
        self.abortPercentage = None
        self.delayMs = None
        self.delayPercentage = None
        if message.HasField("abort"):
            self._compileAbort(message.abort, path + ".abort")
        if message.HasField("delay"):
            self._compileDelay(message.delay, path + ".delay")

    def _compileAbort(self, abort, path):
        checkFields(abort, ("http_status", "header_abort", "percentage"), path)
        percent = fractionalPercent(abort.percentage)
        which = abort.WhichOneof("error_type")
        if which == "http_status":
            status = abort.http_status
            if not 200 <= status < 600:
                raise ConfigError("%s.http_status: Proto constraint validation failed "
                                  "(FaultAbortValidationError.HttpStatus: value must be inside "
                                  "range [200, 600))" % (path,))
            self.abortStatus = _fixedValue(status)
            self.abortPercentage = _fixedPercentage(percent)
        elif which == "header_abort":
            self.abortStatus = _headerAbortStatus
            self.abortPercentage = _HeaderPercentage(ABORT_REQUEST_PERCENTAGE, percent)
        else:
            raise ConfigError("%s: Proto constraint validation failed (FaultAbortValidationError."
                              "ErrorType: value is required)" % (path,))

    def _compileDelay(self, delay, path):
        checkFields(delay, ("fixed_delay", "header_delay", "percentage"), path)
        percent = fractionalPercent(delay.percentage)
        which = delay.WhichOneof("fault_delay_secifier")
        if which == "fixed_delay":
            fixed = delay.fixed_delay
            if fixed.seconds * 10 ** 9 + fixed.nanos <= 0:
                raise ConfigError("%s.fixed_delay: Proto constraint validation failed "
                                  "(FaultDelayValidationError.FixedDelay: value must be greater "
                                  "than 0s)" % (path,))
            # Envoy keeps whole milliseconds.
            self.delayMs = _fixedValue(fixed.seconds * 1000 + fixed.nanos // 1000000)
            self.delayPercentage = _fixedPercentage(percent)
        elif which == "header_delay":
            self.delayMs = _headerDelayMs
            self.delayPercentage = _HeaderPercentage(DELAY_REQUEST_PERCENTAGE, percent)
        else:
            raise ConfigError("%s: Proto constraint validation failed (FaultDelayValidationError."
                              "FaultDelaySecifier: value is required)" % (path,))


class _ActiveFaults:
    """
    The requests being faulted, counted over every worker (Envoy reads its
    process-wide gauge for C{max_active_faults}).
    """

    def __init__(self):
        self.value = 0
        self._lock = threading.Lock()

    def tryInc(self, limit):
        with self._lock:
            if limit is not None and self.value >= limit:
                return False
            self.value += 1
            return True

    def dec(self):
        with self._lock:
            self.value -= 1


_COUNTERS = ("aborts_injected", "delays_injected", "faults_overflow", "response_rl_injected")


@implementer(IHttpFilterFactory)
class FaultConfig:
    """
    A compiled C{HTTPFault}; the filter factory.

    @ivar settings: the filter's L{FaultSettings}.
    @ivar snapshot: C{snapshot()} giving the runtime snapshot.
    """

    terminal = False

    def __init__(self, settings, statPrefix, snapshot):
        self.settings = settings
        self.snapshot = snapshot
        self.statPrefix = statPrefix + "fault."
        self.stats = WorkerStats({name: self.statPrefix + name for name in _COUNTERS},
                                 {"active_faults": self.statPrefix + "active_faults"})
        self.active = _ActiveFaults()
        self.routeConfigs = RouteSpecificConfigs(
            _NAME, (_HTTP_FAULT,),
            lambda message: FaultSettings(message, "typed_per_filter_config[%s]" % (_NAME,)))

    def createFilter(self, callbacks):
        """@return: a L{FaultFilter} for one request."""
        return FaultFilter(self, callbacks)


@implementer(IStreamDecoderFilter)
class FaultFilter(ConfiguredFilter):
    """The fault filter of one request (request direction only)."""

    _settings = None
    _headers = None
    _snapshot = None
    _timer = None
    _active = False
    _downstreamCluster = None

    def decodeHeaders(self, headers, endStream):
        config = self.config
        callbacks = self.callbacks
        settings = config.routeConfigs.mostSpecific(callbacks) or config.settings
        if settings.upstreamCluster is not None:
            route = callbacks.route()
            if route is None or route.clusterName != settings.upstreamCluster:
                return FilterHeadersStatus.Continue
        entries = headers.headers
        if settings.downstreamNodes:
            node = entries.get(DOWNSTREAM_NODE)
            if node is None or node not in settings.downstreamNodes:
                return FilterHeadersStatus.Continue
        for matcher in settings.matchers:
            if not matcher.matches(entries, headers.authority, headers.path, headers.method):
                return FilterHeadersStatus.Continue
        if settings.delayMs is None and settings.abortStatus is None:
            return FilterHeadersStatus.Continue
        self._settings = settings
        self._headers = entries
        cluster = entries.get(DOWNSTREAM_CLUSTER)
        if cluster is not None:
            self._downstreamCluster = cluster.decode("utf-8", "surrogateescape")
        delay = self._delayMs()
        if delay is not None and self._tryIncActiveFaults():
            self._timer = callbacks.callLater(delay / 1000.0, self._onDelayed)
            self._count("delays_injected")
            callbacks.streamInfo.setResponseFlag(ResponseFlag.DELAY_INJECTED)
            return FilterHeadersStatus.StopIteration
        status = self._abortStatus()
        if status is not None and self._tryIncActiveFaults():
            self._abort(status)
            return FilterHeadersStatus.StopIteration
        return FilterHeadersStatus.Continue

    def decodeData(self, data, endStream):
        if self._timer is None:
            return FilterDataStatus.Continue
        return FilterDataStatus.StopIterationAndWatermark

    def decodeTrailers(self, trailers):
        if self._timer is None:
            return FilterTrailersStatus.Continue
        return FilterTrailersStatus.StopIteration

    def onDestroy(self):
        timer = self._timer
        if timer is not None:
            self._timer = None
            timer.cancel()
        if self._active:
            self._active = False
            self._releaseActiveFault()

    # Decisions (Envoy's isDelayEnabled, delayDuration, isAbortEnabled,
    # abortHttpStatus), each against the request's runtime snapshot.

    def _runtime(self):
        # One snapshot per decision round, taken only when one is needed.
        snapshot = self._snapshot
        if snapshot is None:
            snapshot = self._snapshot = self.config.snapshot()
        return snapshot

    def _key(self, general, suffix):
        cluster = self._downstreamCluster
        if cluster is None:
            return general
        return "fault.http.%s.%s" % (cluster, suffix)

    def _delayMs(self):
        settings = self._settings
        if settings.delayMs is None:
            return None
        # Envoy decides on the percentage first; a header-driven delay
        # without its header is no delay whatever the draw, so the header
        # is read first and the draw saved.
        ms = settings.delayMs(self._headers)
        if ms is None:
            return None
        snapshot = self._runtime()
        percent = settings.delayPercentage(self._headers)
        if not snapshot.featureEnabledFractional(
                self._key(settings.delayPercentKey, "delay.fixed_delay_percent"), percent):
            return None
        ms = snapshot.getInteger(settings.delayDurationKey, ms)
        if self._downstreamCluster is not None:
            ms = snapshot.getInteger(self._key(None, "delay.fixed_duration_ms"), ms)
        return ms if ms > 0 else None

    def _abortStatus(self):
        settings = self._settings
        if settings.abortStatus is None:
            return None
        code = settings.abortStatus(self._headers)
        if code is None:
            return None
        snapshot = self._runtime()
        percent = settings.abortPercentage(self._headers)
        if not snapshot.featureEnabledFractional(
                self._key(settings.abortPercentKey, "abort.abort_percent"), percent):
            return None
        if self._downstreamCluster is not None:
            # Envoy: the cluster's key falls back to the configured status,
            # not to the general runtime key.
            return snapshot.getInteger(self._key(None, "abort.http_status"), code)
        return snapshot.getInteger(settings.abortHttpStatusKey, code)

    # Active faults.

    def _tryIncActiveFaults(self):
        if self._active:
            return True
        config = self.config
        settings = self._settings
        limit = self._runtime().getInteger(settings.maxActiveFaultsKey, -1)
        if limit == -1:
            limit = settings.maxActiveFaults
        if not config.active.tryInc(limit):
            config.stats.forDispatcher(self.callbacks.dispatcher).faults_overflow.inc()
            return False
        self._active = True
        config.stats.forDispatcher(self.callbacks.dispatcher).active_faults.inc()
        return True

    def _releaseActiveFault(self):
        config = self.config
        config.active.dec()
        config.stats.forDispatcher(self.callbacks.dispatcher).active_faults.dec()

    # Injection.

    def _count(self, name):
        dispatcher = self.callbacks.dispatcher
        getattr(self.config.stats.forDispatcher(dispatcher), name).inc()
        cluster = self._downstreamCluster
        if cluster and not self._settings.disableDownstreamClusterStats:
            dispatcher.stats.counter("%s%s.%s" % (self.config.statPrefix, cluster, name)).inc()

    def _onDelayed(self):
        """The delay is over (Envoy's C{postDelayInjection})."""
        self._timer = None
        self._snapshot = None
        status = self._abortStatus()
        if status is not None:
            self._abort(status)
            return
        # A delay alone stops counting as active once it is over.
        if self._active:
            self._active = False
            self._releaseActiveFault()
        self.callbacks.continueDecoding()

    def _abort(self, status):
        self._count("aborts_injected")
        callbacks = self.callbacks
        callbacks.streamInfo.setResponseFlag(ResponseFlag.FAULT_INJECTED)
        callbacks.sendLocalReply(status, b"fault filter abort", None, "fault_filter_abort")


@extension(Category.HTTP_FILTER, _HTTP_FAULT, _NAME)
def createFault(message, context):
    """Compile an C{HTTPFault} message."""
    path = context.configPath
    config = FaultConfig(FaultSettings(message, path), httpStatPrefix(context),
                         snapshotSource(context))
    config.stats.declare(context)
    return config
