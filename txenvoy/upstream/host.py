# -*- test-case-name: tests.upstream.test_cluster -*-
"""
Upstream hosts (Envoy's C{Upstream::Host}): one address of a cluster, its
weight, priority, health and per-host stats.

A L{Host} is created and its membership and health are changed on the main
thread; workers read it (address, weight, health) and each worker writes
only its own L{HostStats} slot, so no lock is needed on the data path.
Readers (admin C{/clusters}) sum the slots.
"""

from txenvoy.network.address import formatAddress

# Envoy's health flag names, in the order Envoy prints them in /clusters
# (Host::HealthFlag, printed by HostUtility::healthFlagsToString).
FAILED_ACTIVE_HC = "failed_active_hc"
FAILED_OUTLIER_CHECK = "failed_outlier_check"
FAILED_EDS_HEALTH = "failed_eds_health"
DEGRADED_ACTIVE_HC = "degraded_active_hc"
DEGRADED_EDS_HEALTH = "degraded_eds_health"
PENDING_DYNAMIC_REMOVAL = "pending_dynamic_removal"
PENDING_ACTIVE_HC = "pending_active_hc"
EXCLUDED_VIA_IMMEDIATE_HC_FAIL = "excluded_via_immediate_hc_fail"
ACTIVE_HC_TIMEOUT = "active_hc_timeout"
EDS_STATUS_DRAINING = "eds_status_draining"

HEALTH_FLAG_ORDER = (
    FAILED_ACTIVE_HC,
    FAILED_OUTLIER_CHECK,
    FAILED_EDS_HEALTH,
    DEGRADED_ACTIVE_HC,
    DEGRADED_EDS_HEALTH,
    PENDING_DYNAMIC_REMOVAL,
    PENDING_ACTIVE_HC,
    EXCLUDED_VIA_IMMEDIATE_HC_FAIL,
    ACTIVE_HC_TIMEOUT,
    EDS_STATUS_DRAINING,
)

# Flags that make a host unhealthy, and flags that make it degraded (a
# degraded host only takes traffic when there are not enough healthy ones).
_UNHEALTHY_FLAGS = frozenset(
    (FAILED_ACTIVE_HC, FAILED_OUTLIER_CHECK, FAILED_EDS_HEALTH, ACTIVE_HC_TIMEOUT,
     EDS_STATUS_DRAINING)
)
_DEGRADED_FLAGS = frozenset((DEGRADED_ACTIVE_HC, DEGRADED_EDS_HEALTH))
_NO_FLAGS = frozenset()
_EXCLUDED_FLAGS = frozenset(
    (PENDING_DYNAMIC_REMOVAL, PENDING_ACTIVE_HC, EXCLUDED_VIA_IMMEDIATE_HC_FAIL)
)

# Flags a worker process sets itself, from the responses it sees.
_LOCAL_FLAGS = frozenset((FAILED_OUTLIER_CHECK,))

#: The per-host stats of Envoy's C{/clusters}, in the order it prints them.
HOST_STAT_NAMES = (
    "cx_active",
    "cx_connect_fail",
    "cx_total",
    "rq_active",
    "rq_error",
    "rq_pending_active",
    "rq_success",
    "rq_timeout",
    "rq_total",
)

#: The ones that are gauges (JSON C{/clusters} marks them C{"type": "GAUGE"}).
HOST_GAUGE_NAMES = frozenset(("cx_active", "rq_active", "rq_pending_active"))


class HostStats:
    """
    One worker's counts for one host. Only that worker writes it, with plain
    integer arithmetic (C{hostStats.rq_active += 1}).
    """

    __slots__ = HOST_STAT_NAMES

    def __init__(self):
        for name in HOST_STAT_NAMES:
            setattr(self, name, 0)


class Locality:
    """Where a host runs (Envoy's C{core.v3.Locality})."""

    __slots__ = ("region", "zone", "subZone")

    def __init__(self, region="", zone="", subZone=""):
        self.region = region
        self.zone = zone
        self.subZone = subZone

    def __eq__(self, other):
        if not isinstance(other, Locality):
            return NotImplemented
        return (self.region, self.zone, self.subZone) == (
            other.region, other.zone, other.subZone)

    def __hash__(self):
        return hash((self.region, self.zone, self.subZone))

    def __repr__(self):
        return "Locality(%r, %r, %r)" % (self.region, self.zone, self.subZone)


_NO_LOCALITY = Locality()


class Host:
    """
    One upstream endpoint of a cluster.

    @ivar address: C{(ip, port)}. For a C{LOGICAL_DNS} cluster the main thread
        replaces it when DNS answers differently; a worker reads it once per
        connection attempt.
    @ivar addressString: C{"ip:port"} (C{"[ip6]:port"} for IPv6), as printed
        by C{/clusters} and C{%UPSTREAM_HOST%}.
    @ivar hostname: the endpoint's C{hostname}, or the DNS name it was
        resolved from.
    @ivar weight: the load balancing weight, a positive integer.
    @ivar priority: the endpoint group's priority (0 is the highest).
    @ivar locality: a L{Locality}.
    @ivar clusterName: the name of the cluster this host belongs to.
    @ivar hashKey: the endpoint's C{envoy.lb} C{hash_key} metadata, which
        consistent-hash load balancers hash instead of its address (C{""}
        when unset).
    @ivar filterMetadata: the endpoint's C{filter_metadata}, C{{namespace:
        dict}}, or C{None}.
    @ivar metadata: the endpoint's C{envoy.lb} metadata, as
        L{txenvoy.upstream.metadata_match.hostValues} gives it (subset load
        balancing matches it).
    """

    __slots__ = (
        "address", "addressString", "hostname", "weight", "priority",
        "locality", "clusterName", "_flags", "_healthy", "_degraded",
        "_perWorker", "canary", "_edsStatus", "healthChecker", "outlierMonitor",
        "healthCheckPort", "healthCheckHostname", "disableActiveHealthCheck",
        "hashKey", "metadata", "filterMetadata",
    )

    def __init__(self, address, hostname="", weight=1, priority=0,
                 locality=None, clusterName="", healthFlags=(),
                 edsHealthStatus="HEALTHY", healthCheckPort=0, healthCheckHostname="",
                 disableActiveHealthCheck=False, hashKey="", metadata=None, canary=False,
                 filterMetadata=None):
        ip, port = address[0], int(address[1])
        self.address = (ip, port)
        # formatAddress, without its calls: an EDS update makes thousands.
        if not isinstance(ip, str):
            self.addressString = str(ip)
        elif ":" in ip:
            self.addressString = "[%s]:%d" % (ip, port)
        else:
            self.addressString = "%s:%d" % (ip, port)
        self.hostname = hostname
        self.weight = int(weight)
        self.priority = int(priority)
        self.locality = locality if locality is not None else _NO_LOCALITY
        self.clusterName = clusterName
        self.metadata = metadata if metadata is not None else {}
        self.filterMetadata = filterMetadata
        # envoy.lb metadata canary: true (omit_canary_hosts).
        self.canary = canary
        # The cluster's active health checker (main thread), or None: a
        # worker reports x-envoy-immediate-health-check-fail through it.
        self.healthChecker = None
        # Its outlier detection HostMonitor, or None: workers report each
        # response to it.
        self.outlierMonitor = None
        # The endpoint's health_check_config: the port and Host header
        # active checks use (0 / "" for the host's own), or no checks.
        self.healthCheckPort = healthCheckPort
        self.healthCheckHostname = healthCheckHostname
        self.disableActiveHealthCheck = disableActiveHealthCheck
        self.hashKey = hashKey
        self._edsStatus = edsHealthStatus
        if healthFlags:
            self._flags = frozenset(healthFlags)
            self._recompute()
        else:
            self._flags = _NO_FLAGS
            self._healthy = True
            self._degraded = False
        # worker name -> HostStats. Each worker inserts its own slot once;
        # dict.setdefault is atomic under the GIL.
        self._perWorker = {}

    def _recompute(self):
        flags = self._flags
        self._healthy = not (flags & _UNHEALTHY_FLAGS) and not (flags & _EXCLUDED_FLAGS)
        self._degraded = self._healthy and bool(flags & _DEGRADED_FLAGS)

    def setAddress(self, address):
        """
        Change the address (C{LOGICAL_DNS} re-resolution). Main thread only;
        workers see it at their next connection attempt.
        """
        address = (address[0], int(address[1]))
        # One attribute store each: a worker reading in between sees the old
        # or the new address tuple, never a torn one.
        self.addressString = formatAddress(address)
        self.address = address

    @property
    def healthy(self):
        """True unless a failure (or exclusion) health flag is set."""
        return self._healthy

    @property
    def degraded(self):
        """True when healthy but marked degraded (takes traffic last)."""
        return self._degraded

    @property
    def excluded(self):
        """True when excluded from load balancing altogether."""
        return bool(self._flags & _EXCLUDED_FLAGS)

    def hasHealthFlag(self, flag):
        """@return: whether one of the C{FAILED_*}/C{DEGRADED_*} flags is set."""
        return flag in self._flags

    def setHealthFlag(self, flag):
        """Set a health flag (main thread: health checker, outlier detector)."""
        self._flags = self._flags | {flag}
        self._recompute()

    def clearHealthFlag(self, flag):
        """Clear a health flag (main thread)."""
        self._flags = self._flags - {flag}
        self._recompute()

    def setEdsHealthStatus(self, status, flags):
        """
        Take the health status an EDS update gives a kept host (main
        thread): C{status} as L{edsHealthStatus} reports it, C{flags} its
        C{FAILED_EDS_HEALTH} or C{DEGRADED_EDS_HEALTH} flag, if any.
        """
        self._edsStatus = status
        self._flags = (self._flags - {FAILED_EDS_HEALTH, DEGRADED_EDS_HEALTH}) | frozenset(flags)
        self._recompute()

    def healthFlagSet(self):
        """@return: the set health flags, a frozenset of their names."""
        return self._flags

    def replaceHealthFlags(self, flags):
        """
        Take the main process's health flags (a worker process): all of
        them but C{failed_outlier_check}, which this process's own outlier
        detection keeps.
        """
        own = self._flags & _LOCAL_FLAGS
        self._flags = frozenset(flags).difference(_LOCAL_FLAGS) | own
        self._recompute()

    def healthFlags(self):
        """
        @return: C{"healthy"}, or the set flags as Envoy prints them in
            C{/clusters}, e.g. C{"/failed_active_hc/failed_eds_health"}.
        """
        flags = self._flags
        if not flags:
            return "healthy"
        return "".join("/" + f for f in HEALTH_FLAG_ORDER if f in flags)

    def edsHealthStatus(self):
        """
        @return: the C{eds_health_status} of JSON C{/clusters}: the
            endpoint's configured C{health_status} (C{"HEALTHY"},
            C{"UNHEALTHY"}, C{"DRAINING"}, C{"TIMEOUT"}, C{"DEGRADED"}),
            C{"HEALTHY"} when it was left C{UNKNOWN}.
        """
        return self._edsStatus

    def statsFor(self, workerName):
        """
        The L{HostStats} slot of one worker, created on first use. Call it
        on that worker only, and keep the result rather than calling it per
        request.
        """
        s = self._perWorker.get(workerName)
        if s is None:
            s = self._perWorker.setdefault(workerName, HostStats())
        return s

    def stats(self, name):
        """
        The value of one per-host stat (C{cx_total}, C{rq_active}...) summed
        over every worker. Safe from any thread.
        """
        total = 0
        # list() copies the values in one C call, so a worker adding its
        # slot meanwhile cannot break the iteration.
        for s in list(self._perWorker.values()):
            total += getattr(s, name)
        return total

    def allStats(self):
        """@return: C{{name: value}} for L{HOST_STAT_NAMES}, summed."""
        slots = list(self._perWorker.values())
        return {n: sum(getattr(s, n) for s in slots) for n in HOST_STAT_NAMES}

    def __repr__(self):
        return "<Host %s %s w=%d p=%d %s>" % (
            self.clusterName, self.addressString, self.weight, self.priority,
            self.healthFlags())


