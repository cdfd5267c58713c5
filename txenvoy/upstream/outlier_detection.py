# -*- test-case-name: tests.upstream.test_outlier_detection -*-
"""
Outlier detection (Envoy's C{Outlier::DetectorImpl}): C{clusters[].
outlier_detection}, passive ejection of hosts that answer badly.

Workers report each response of a host to its L{HostMonitor}
(C{putHttpResponseCode}); when a host reaches C{consecutive_5xx} or
C{consecutive_gateway_failure} in a row the worker posts to the main
reactor, where the L{Detector} ejects it (C{failed_outlier_check}) and the
cluster re-posts its membership to every worker. Every C{interval} the main
reactor brings back hosts whose ejection time is over (C{base_ejection_time}
times the number of recent ejections, capped by C{max_ejection_time}, plus
jitter) and runs the success-rate and failure-percentage detectors over the
requests of the interval just ended.

Without C{split_external_local_origin_errors} (the default) a failed
connect or a reset counts as a 503 and a timeout as a 504, as Envoy maps
them. With it, those local-origin errors are counted apart (Envoy's
C{putResultWithLocalExternalSplit}): C{consecutive_local_origin_failure} in
a row eject the host (C{enforcing_consecutive_local_origin_failure}), a
connection handed to a request resets the count, and the success-rate and
failure-percentage detectors run twice, over the hosts' responses and over
their local-origin results (C{enforcing_local_origin_success_rate},
C{enforcing_failure_percentage_local_origin}).
"""

import math
import random as _random
import threading

from txenvoy.config.errors import ConfigError, UnsupportedField, report
from txenvoy.config.fields import checkFields, durationSeconds
from txenvoy.upstream.host import FAILED_ACTIVE_HC, FAILED_OUTLIER_CHECK

CONSECUTIVE_5XX = "consecutive_5xx"
CONSECUTIVE_GATEWAY_FAILURE = "consecutive_gateway_failure"
SUCCESS_RATE = "success_rate"
FAILURE_PERCENTAGE = "failure_percentage"
CONSECUTIVE_LOCAL_ORIGIN_FAILURE = "consecutive_local_origin_failure"
LOCAL_ORIGIN_SUCCESS_RATE = "local_origin_success_rate"
LOCAL_ORIGIN_FAILURE_PERCENTAGE = "local_origin_failure_percentage"

# Envoy's Outlier::Result, for putResult.
LOCAL_ORIGIN_CONNECT_SUCCESS = "LocalOriginConnectSuccess"
LOCAL_ORIGIN_CONNECT_FAILED = "LocalOriginConnectFailed"
LOCAL_ORIGIN_TIMEOUT = "LocalOriginTimeout"

#: Envoy's C{ALL_OUTLIER_DETECTION_STATS} counters (C{outlier_detection.*}).
COUNTERS = (
    "ejections_consecutive_5xx", "ejections_detected_consecutive_5xx",
    "ejections_detected_consecutive_gateway_failure", "ejections_detected_success_rate",
    "ejections_detected_failure_percentage", "ejections_enforced_consecutive_5xx",
    "ejections_enforced_consecutive_gateway_failure", "ejections_enforced_success_rate",
    "ejections_enforced_failure_percentage", "ejections_enforced_total", "ejections_overflow",
    "ejections_success_rate", "ejections_total",
    "ejections_detected_consecutive_local_origin_failure",
    "ejections_enforced_consecutive_local_origin_failure",
    "ejections_detected_local_origin_success_rate",
    "ejections_enforced_local_origin_success_rate",
    "ejections_detected_local_origin_failure_percentage",
    "ejections_enforced_local_origin_failure_percentage",
)
GAUGES = ("ejections_active",)

_FIELDS = (
    "consecutive_5xx", "interval", "base_ejection_time", "max_ejection_percent",
    "enforcing_consecutive_5xx", "enforcing_success_rate", "success_rate_minimum_hosts",
    "success_rate_request_volume", "success_rate_stdev_factor", "consecutive_gateway_failure",
    "enforcing_consecutive_gateway_failure", "split_external_local_origin_errors",
    "failure_percentage_threshold", "enforcing_failure_percentage",
    "failure_percentage_minimum_hosts", "failure_percentage_request_volume",
    "max_ejection_time", "max_ejection_time_jitter",
    "successful_active_health_check_uneject_host", "always_eject_one_host",
    "consecutive_local_origin_failure", "enforcing_consecutive_local_origin_failure",
    "enforcing_local_origin_success_rate", "enforcing_failure_percentage_local_origin",
)

#: The gateway errors of C{consecutive_gateway_failure}.
_GATEWAY = frozenset((502, 503, 504))


class OutlierConfig:
    """The compiled C{OutlierDetection} (Envoy's defaults; times in seconds)."""

    def __init__(self, **kw):
        self.consecutive5xx = kw.pop("consecutive_5xx", 5)
        self.consecutiveGatewayFailure = kw.pop("consecutive_gateway_failure", 5)
        self.interval = kw.pop("interval", 10.0)
        self.baseEjectionTime = kw.pop("base_ejection_time", 30.0)
        self.maxEjectionTime = kw.pop("max_ejection_time", max(300.0, self.baseEjectionTime))
        self.maxEjectionTimeJitter = kw.pop("max_ejection_time_jitter", 0.0)
        self.maxEjectionPercent = kw.pop("max_ejection_percent", 10)
        self.enforcing = {
            CONSECUTIVE_5XX: kw.pop("enforcing_consecutive_5xx", 100),
            CONSECUTIVE_GATEWAY_FAILURE: kw.pop("enforcing_consecutive_gateway_failure", 0),
            SUCCESS_RATE: kw.pop("enforcing_success_rate", 100),
            FAILURE_PERCENTAGE: kw.pop("enforcing_failure_percentage", 0),
            CONSECUTIVE_LOCAL_ORIGIN_FAILURE: kw.pop(
                "enforcing_consecutive_local_origin_failure", 100),
            LOCAL_ORIGIN_SUCCESS_RATE: kw.pop("enforcing_local_origin_success_rate", 100),
            LOCAL_ORIGIN_FAILURE_PERCENTAGE: kw.pop(
                "enforcing_failure_percentage_local_origin", 0),
        }
        self.splitExternalLocalOriginErrors = kw.pop("split_external_local_origin_errors",
                                                     False)
        self.consecutiveLocalOriginFailure = kw.pop("consecutive_local_origin_failure", 5)
        self.successRateMinimumHosts = kw.pop("success_rate_minimum_hosts", 5)
        self.successRateRequestVolume = kw.pop("success_rate_request_volume", 100)
        self.successRateStdevFactor = kw.pop("success_rate_stdev_factor", 1900)
        self.failurePercentageThreshold = kw.pop("failure_percentage_threshold", 85)
        self.failurePercentageMinimumHosts = kw.pop("failure_percentage_minimum_hosts", 5)
        self.failurePercentageRequestVolume = kw.pop("failure_percentage_request_volume", 50)
        self.unejectOnHealthCheck = kw.pop("successful_active_health_check_uneject_host", True)
        self.alwaysEjectOneHost = kw.pop("always_eject_one_host", False)
        if kw:
            raise TypeError("unknown OutlierConfig settings: %s" % (sorted(kw),))


def compileOutlierDetection(proto, path):
    """
    Compile C{Cluster.outlier_detection}.

    @return: an L{OutlierConfig}, or C{None} when the field is not set.
    @raise ConfigError: for an invalid or unsupported setting.
    """
    if not proto.HasField("outlier_detection"):
        return None
    opath = path + ".outlier_detection"
    od = proto.outlier_detection
    checkFields(od, _FIELDS, opath)
    kw = {}
    for name in ("interval", "base_ejection_time", "max_ejection_time"):
        if od.HasField(name):
            t = durationSeconds(getattr(od, name))
            if t <= 0:
                raise ConfigError("%s.%s: value must be greater than 0s "
                                  "(OutlierDetectionValidationError.%s)"
                                  % (opath, name, "".join(p.capitalize()
                                                          for p in name.split("_"))))
            kw[name] = t
    if od.HasField("max_ejection_time_jitter"):
        kw["max_ejection_time_jitter"] = max(0.0, durationSeconds(od.max_ejection_time_jitter))
    for name in ("max_ejection_percent", "enforcing_consecutive_5xx", "enforcing_success_rate",
                 "enforcing_consecutive_gateway_failure", "failure_percentage_threshold",
                 "enforcing_failure_percentage", "enforcing_consecutive_local_origin_failure",
                 "enforcing_local_origin_success_rate",
                 "enforcing_failure_percentage_local_origin"):
        if od.HasField(name):
            v = getattr(od, name).value
            if v > 100:
                raise ConfigError("%s.%s: value must be less than or equal to 100"
                                  % (opath, name))
            kw[name] = v
    for name in ("consecutive_5xx", "consecutive_gateway_failure", "success_rate_minimum_hosts",
                 "success_rate_request_volume", "success_rate_stdev_factor",
                 "failure_percentage_minimum_hosts", "failure_percentage_request_volume",
                 "consecutive_local_origin_failure"):
        if od.HasField(name):
            kw[name] = getattr(od, name).value
    for name in ("successful_active_health_check_uneject_host", "always_eject_one_host"):
        if od.HasField(name):
            kw[name] = getattr(od, name).value
    kw["split_external_local_origin_errors"] = od.split_external_local_origin_errors
    if len(od.monitors):
        report(UnsupportedField(opath + ".monitors"))
    config = OutlierConfig(**kw)
    if (od.HasField("base_ejection_time") and od.HasField("max_ejection_time")
            and config.baseEjectionTime > config.maxEjectionTime):
        raise ConfigError("%s: base_ejection_time (%s) is larger than max_ejection_time (%s)"
                          % (opath, config.baseEjectionTime, config.maxEjectionTime))
    return config


class HostMonitor:
    """
    One host's outlier state (Envoy's C{DetectorHostMonitorImpl}). Workers
    call L{putHttpResponseCode}; everything else runs on the main reactor.
    """

    def __init__(self, detector, host):
        self.detector = detector
        self.host = host
        self._lock = threading.Lock()
        self.consecutive5xx = 0
        self.consecutiveGateway = 0
        self.consecutiveLocalOrigin = 0
        self._split = detector.config.splitExternalLocalOriginErrors
        # Split mode's own counts: [success, total] of the hosts'
        # responses and of the local-origin results, since the last interval.
        self._external = [0, 0]
        self._localOrigin = [0, 0]
        self.numEjections = 0
        self.ejectTimeBackoff = 0
        self.lastEjectionTime = None
        self.lastUnejectionTime = None
        self.jitter = 0.0
        # Cumulative (success, total) at the last interval, to take the
        # requests of each interval from the host's per-worker stats.
        self._lastCounts = (0, 0)

    def putResult(self, result):
        """
        A local-origin result (Envoy's C{putResult}, any thread):
        L{LOCAL_ORIGIN_CONNECT_SUCCESS} when a request gets a connection,
        L{LOCAL_ORIGIN_CONNECT_FAILED} for a failed connect or a reset,
        L{LOCAL_ORIGIN_TIMEOUT}.
        """
        if not self._split:
            # Unsplit, a success changes nothing that is read, and an error
            # is a 503 or 504 response.
            if result != LOCAL_ORIGIN_CONNECT_SUCCESS:
                self.putHttpResponseCode(504 if result == LOCAL_ORIGIN_TIMEOUT else 503)
            return
        cfg = self.detector.config
        if result == LOCAL_ORIGIN_CONNECT_SUCCESS:
            with self._lock:
                self.consecutiveLocalOrigin = 0
                self._localOrigin[0] += 1
                self._localOrigin[1] += 1
            return
        with self._lock:
            self._localOrigin[1] += 1
            self.consecutiveLocalOrigin += 1
            reached = self.consecutiveLocalOrigin == cfg.consecutiveLocalOriginFailure
        if reached:
            self.detector.notifyConsecutiveError(self.host, CONSECUTIVE_LOCAL_ORIGIN_FAILURE)

    def putHttpResponseCode(self, code):
        """A response (or, unsplit, a failure mapped to 503/504) came back (any thread)."""
        if code < 500:
            if self._split:
                with self._lock:
                    self._external[0] += 1
                    self._external[1] += 1
                    self.consecutive5xx = 0
                    self.consecutiveGateway = 0
            elif self.consecutive5xx or self.consecutiveGateway:
                with self._lock:
                    self.consecutive5xx = 0
                    self.consecutiveGateway = 0
            return
        cfg = self.detector.config
        with self._lock:
            self._external[1] += 1
            if code in _GATEWAY:
                self.consecutiveGateway += 1
                gateway = self.consecutiveGateway == cfg.consecutiveGatewayFailure
            else:
                self.consecutiveGateway = 0
                gateway = False
            self.consecutive5xx += 1
            fivexx = self.consecutive5xx == cfg.consecutive5xx
        if gateway:
            self.detector.notifyConsecutiveError(self.host, CONSECUTIVE_GATEWAY_FAILURE)
        if fivexx:
            self.detector.notifyConsecutiveError(self.host, CONSECUTIVE_5XX)

    def resetConsecutive(self, kind=None):
        with self._lock:
            if kind in (None, CONSECUTIVE_5XX):
                self.consecutive5xx = 0
            if kind in (None, CONSECUTIVE_GATEWAY_FAILURE):
                self.consecutiveGateway = 0
            if kind in (None, CONSECUTIVE_LOCAL_ORIGIN_FAILURE):
                self.consecutiveLocalOrigin = 0

    def intervalCounts(self):
        """
        @return: C{(success, total)} requests since the last call: from the
            host's per-worker C{rq_success} / C{rq_error}, or in split mode
            the responses only.
        """
        success = self.host.stats("rq_success")
        total = success + self.host.stats("rq_error")
        lastSuccess, lastTotal = self._lastCounts
        self._lastCounts = (success, total)
        with self._lock:
            external, self._external = self._external, [0, 0]
        if self.detector.config.splitExternalLocalOriginErrors:
            return external[0], external[1]
        return success - lastSuccess, total - lastTotal

    def localOriginIntervalCounts(self):
        """@return: C{(success, total)} local-origin results since the last call."""
        with self._lock:
            counts, self._localOrigin = self._localOrigin, [0, 0]
        return counts[0], counts[1]


class Detector:
    """
    The outlier detector of one cluster, on the main reactor.

    @ivar monitors: C{{Host: HostMonitor}}.
    """

    def __init__(self, reactor, cluster, config, mainShard, rng=None):
        self.reactor = reactor
        self.cluster = cluster
        self.config = config
        self._rng = rng if rng is not None else _random.random
        scope = mainShard.scope(cluster.info.statPrefix + "outlier_detection.")
        self.stats = {n: scope.counter(n) for n in COUNTERS}
        self.ejectionsActive = scope.gauge("ejections_active")
        self.monitors = {}
        self._timer = None
        self._stopped = False

    # --- membership and timer -------------------------------------------

    def onHosts(self, hosts):
        """The membership changed (main thread)."""
        current = set(hosts)
        for host in list(self.monitors):
            if host not in current:
                del self.monitors[host]
                host.outlierMonitor = None
                if host.hasHealthFlag(FAILED_OUTLIER_CHECK):
                    self.ejectionsActive.dec()
        for host in hosts:
            if host not in self.monitors:
                self.monitors[host] = host.outlierMonitor = HostMonitor(self, host)

    def start(self):
        """Arm the interval timer."""
        self._arm()

    def stop(self):
        self._stopped = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _arm(self):
        if not self._stopped:
            self._timer = self.reactor.callLater(self.config.interval, self._onInterval)

    def _now(self):
        return self.reactor.seconds()

    def _random(self, n):
        """Envoy's C{random() % n} for a positive integer C{n}."""
        return int(self._rng() * (1 << 53)) % n

    # --- consecutive errors (posted from workers) ------------------------

    def notifyConsecutiveError(self, host, kind):
        """A worker saw C{host} reach a consecutive-error threshold (any thread)."""
        self.reactor.callFromThread(self._onConsecutiveError, host, kind)

    def _onConsecutiveError(self, host, kind):
        monitor = self.monitors.get(host)
        if monitor is None or self._stopped or host.hasHealthFlag(FAILED_OUTLIER_CHECK):
            return
        self.stats["ejections_detected_" + kind].inc()
        changed = self._eject(host, kind)
        if kind == CONSECUTIVE_5XX:
            self.stats["ejections_consecutive_5xx"].inc()
        monitor.resetConsecutive(kind)
        if changed:
            self.cluster.refreshHealth()

    # --- ejection (Envoy's ejectHost / checkHostForUneject) ---------------

    def _eject(self, host, kind):
        """@return: whether the host was ejected."""
        cfg = self.config
        maxPercent = min(100, cfg.maxEjectionPercent)
        active = self.ejectionsActive.value
        ejectedPercent = 100.0 * (active + 1) / len(self.monitors)
        if not (ejectedPercent <= maxPercent or (cfg.alwaysEjectOneHost and active == 0)):
            self.stats["ejections_overflow"].inc()
            return False
        if kind in (CONSECUTIVE_5XX, SUCCESS_RATE):
            self.stats["ejections_total"].inc()
        if self._random(100) >= cfg.enforcing[kind]:
            return False
        self.ejectionsActive.inc()
        self.stats["ejections_enforced_total"].inc()
        self.stats["ejections_enforced_" + kind].inc()
        monitor = self.monitors[host]
        host.setHealthFlag(FAILED_OUTLIER_CHECK)
        monitor.numEjections += 1
        monitor.lastEjectionTime = self._now()
        if monitor.ejectTimeBackoff * cfg.baseEjectionTime < (cfg.maxEjectionTime
                                                              + cfg.baseEjectionTime):
            monitor.ejectTimeBackoff += 1
        jitterMs = int(cfg.maxEjectionTimeJitter * 1000)
        monitor.jitter = self._random(jitterMs + 1) / 1000.0 if jitterMs else 0.0
        return True

    def _uneject(self, host, monitor):
        self.ejectionsActive.dec()
        host.clearHealthFlag(FAILED_OUTLIER_CHECK)
        monitor.resetConsecutive()
        monitor.lastUnejectionTime = self._now()

    def _checkForUneject(self, host, monitor, now):
        cfg = self.config
        if not host.hasHealthFlag(FAILED_OUTLIER_CHECK):
            # Healthy for a whole interval since its last return: the next
            # ejection is shorter again.
            if (monitor.lastUnejectionTime is not None
                    and now - monitor.lastUnejectionTime >= cfg.interval
                    and monitor.ejectTimeBackoff):
                monitor.ejectTimeBackoff -= 1
            return False
        ejectFor = min(cfg.baseEjectionTime * monitor.ejectTimeBackoff, cfg.maxEjectionTime)
        if ejectFor + monitor.jitter <= now - monitor.lastEjectionTime + 1e-9:
            self._uneject(host, monitor)
            return True
        return False

    def onHealthCheckPassed(self, host):
        """
        An active health check found C{host} healthy: an ejected host comes
        back at once (C{successful_active_health_check_uneject_host}).
        """
        monitor = self.monitors.get(host)
        if (monitor is None or not self.config.unejectOnHealthCheck
                or not host.hasHealthFlag(FAILED_OUTLIER_CHECK)
                or host.hasHealthFlag(FAILED_ACTIVE_HC)):
            return False
        self._uneject(host, monitor)
        return True

    # --- the interval ------------------------------------------------------

    def _onInterval(self):
        self._timer = None
        now = self._now()
        changed = False
        counts = []
        localCounts = []
        for host, monitor in list(self.monitors.items()):
            if self._checkForUneject(host, monitor, now):
                changed = True
            counts.append((host, monitor.intervalCounts()))
            localCounts.append((host, monitor.localOriginIntervalCounts()))
        if self._processSuccessRate(counts):
            changed = True
        if self.config.splitExternalLocalOriginErrors and self._processSuccessRate(
                localCounts, LOCAL_ORIGIN_SUCCESS_RATE, LOCAL_ORIGIN_FAILURE_PERCENTAGE):
            changed = True
        if changed:
            self.cluster.refreshHealth()
        self._arm()

    def _processSuccessRate(self, counts, successRate=SUCCESS_RATE,
                            failurePercentage=FAILURE_PERCENTAGE):
        cfg = self.config
        n = len(self.monitors)
        if n < cfg.successRateMinimumHosts and n < cfg.failurePercentageMinimumHosts:
            return False
        srHosts, fpHosts = [], []
        for host, (success, total) in counts:
            if host.hasHealthFlag(FAILED_OUTLIER_CHECK) or not total:
                continue
            rate = success * 100.0 / total
            if total >= cfg.successRateRequestVolume:
                srHosts.append((host, rate))
            if total >= cfg.failurePercentageRequestVolume:
                fpHosts.append((host, rate))
        changed = False
        if srHosts and len(srHosts) >= cfg.successRateMinimumHosts:
            mean = sum(r for _, r in srHosts) / len(srHosts)
            stdev = math.sqrt(sum((r - mean) ** 2 for _, r in srHosts) / len(srHosts))
            threshold = mean - (cfg.successRateStdevFactor / 1000.0) * stdev
            for host, rate in srHosts:
                if rate < threshold:
                    if successRate == SUCCESS_RATE:
                        self.stats["ejections_success_rate"].inc()
                    self.stats["ejections_detected_" + successRate].inc()
                    changed = self._eject(host, successRate) or changed
        if fpHosts and len(fpHosts) >= cfg.failurePercentageMinimumHosts:
            for host, rate in fpHosts:
                if host.hasHealthFlag(FAILED_OUTLIER_CHECK):
                    continue
                if 100.0 - rate >= cfg.failurePercentageThreshold:
                    self.stats["ejections_detected_" + failurePercentage].inc()
                    changed = self._eject(host, failurePercentage) or changed
        return changed
