# -*- test-case-name: tests.upstream.test_resource_manager -*-
"""
A cluster's circuit breakers (Envoy's C{ResourceManagerImpl}): how many
connections, pending requests, requests, retries and connection pools the
whole cluster may have open at once, per route priority.

One L{ResourceManager} per priority lives on the cluster's immutable
L{txenvoy.upstream.cluster.ClusterInfo}, so every worker counts against the
same numbers, as Envoy's workers share one set of atomics per cluster.

Why a lock: a worker must check the limit and take a slot as one step, and
give the slot back exactly once. Under the GIL, C{self.current += 1} is
several bytecodes and a thread switch between them loses an update for
good (the count would drift and the breaker stay open or shut forever).
An uncontended C{threading.Lock} costs well under a microsecond and is
held only for the check-and-increment or the decrement, never while
anything else runs, so it cannot deadlock and the data path stays cheap.
(Envoy's C{canCreate()} then C{inc()} may overshoot by a few under
contention; the lock here never does.) Reads for the gauges and for
L{Resource.canCreate} take no lock: reading one int is atomic.

The C{circuit_breakers.<priority>.*_open} and, with C{track_remaining},
C{remaining_*} gauges are computed when the stats are read, from the
counts themselves, so the data path writes no gauge.
"""

import threading

__all__ = ["Resource", "RetryBudget", "ResourceManager", "ResourceGauge", "PRIORITIES", "UNLIMITED"]

#: Envoy's C{ResourcePriority}s, as the stats and routes spell them.
PRIORITIES = ("DEFAULT", "HIGH")

#: C{max_connection_pools} when not set: Envoy's C{uint64} max.
UNLIMITED = 2 ** 64 - 1

#: Envoy's stat names of each resource: (open gauge, remaining gauge).
_GAUGE_NAMES = (
    ("connections", "cx_open", "remaining_cx"),
    ("pendingRequests", "rq_pending_open", "remaining_pending"),
    ("requests", "rq_open", "remaining_rq"),
    ("retries", "rq_retry_open", "remaining_retries"),
    ("connectionPools", "cx_pool_open", "remaining_cx_pools"),
)


class Resource:
    """
    One counted resource with a limit, shared by every worker.

    @ivar max: the limit.
    @ivar current: how many are in use now.
    @ivar changed: whether L{current} ever changed (Envoy sets a
        C{*_open} gauge only when its count changes, so a limit of 0 shows
        0 until then).
    """

    __slots__ = ("max", "current", "changed", "_lock")

    def __init__(self, max):
        self.max = max
        self.current = 0
        self.changed = False
        self._lock = threading.Lock()

    def canCreate(self):
        """@return: whether one more is allowed now (no slot is taken)."""
        return self.current < self.max

    def tryAcquire(self):
        """
        Take a slot if the limit allows.

        @return: whether a slot was taken; if so, L{release} it once.
        """
        with self._lock:
            if self.current >= self.max:
                return False
            self.current += 1
        self.changed = True
        return True

    def acquire(self):
        """Take a slot even past the limit (Envoy's unconditional C{inc()})."""
        with self._lock:
            self.current += 1
        self.changed = True

    def release(self):
        """Give back a slot taken by L{tryAcquire} or L{acquire}."""
        with self._lock:
            self.current -= 1
        self.changed = True

    def remaining(self):
        """@return: how many more are allowed, never below 0."""
        return max(self.max - self.current, 0)

    def isOpen(self):
        """@return: the C{*_open} gauge: 1 once counted and at the limit."""
        return 1 if self.changed and self.current >= self.max else 0

    def __repr__(self):
        return "<Resource %d/%d>" % (self.current, self.max)


class RetryBudget(Resource):
    """
    C{retry_budget} in place of C{max_retries} (Envoy's C{RetryBudgetImpl}):
    the limit follows the load, C{budget_percent} of the requests active
    and pending at that priority, never below C{min_retry_concurrency}.

    Its gauges are Envoy's: C{rq_retry_open} still compares the count with
    C{max_retries}, and C{remaining_retries} shows C{max_retries} until the
    budget is first consulted, then 0 (a budget's remainder moves with
    other counts, so Envoy clears it).
    """

    __slots__ = ("budgetPercent", "minRetryConcurrency", "maxRetries", "_requests",
                 "_pending", "_consulted")

    def __init__(self, budgetPercent, minRetryConcurrency, maxRetries, requests, pending):
        self.budgetPercent = budgetPercent
        self.minRetryConcurrency = minRetryConcurrency
        self.maxRetries = maxRetries
        self._requests = requests
        self._pending = pending
        self._consulted = False
        self.current = 0
        self.changed = False
        self._lock = threading.Lock()

    def tryAcquire(self):
        self._consulted = True
        return Resource.tryAcquire(self)

    def canCreate(self):
        self._consulted = True
        return Resource.canCreate(self)

    def remaining(self):
        if self._consulted or self.changed:
            return 0
        return max(self.maxRetries - self.current, 0)

    def isOpen(self):
        return 1 if self.changed and self.current >= self.maxRetries else 0

    @property
    def max(self):
        active = self._requests.current + self._pending.current
        return max(int(self.budgetPercent / 100.0 * active), self.minRetryConcurrency)


class ResourceGauge:
    """
    A gauge whose value is read from a L{Resource} when the stats are read
    (C{cx_open} is 1 while no more may be created; C{remaining_cx} is
    what is left).
    """

    __slots__ = ("_resource", "_remaining", "used")

    def __init__(self, resource, remaining):
        self._resource = resource
        self._remaining = remaining
        self.used = True

    @property
    def value(self):
        if self._remaining:
            return self._resource.remaining()
        return self._resource.isOpen()


class ResourceManager:
    """
    The circuit breakers of one cluster at one priority.

    @ivar connections: C{max_connections}.
    @ivar pendingRequests: C{max_pending_requests}.
    @ivar requests: C{max_requests}.
    @ivar retries: C{max_retries}.
    @ivar connectionPools: C{max_connection_pools}.
    @ivar trackRemaining: C{track_remaining}.
    @ivar maxConnectionsPerHost: C{per_host_thresholds} C{max_connections}
        (compared with a host's C{cx_active} over every worker).
    """

    __slots__ = ("priority", "connections", "pendingRequests", "requests", "retries",
                 "connectionPools", "trackRemaining", "maxConnectionsPerHost")

    def __init__(self, thresholds):
        """
        @param thresholds: a L{txenvoy.upstream.cluster.Thresholds}.
        """
        self.priority = thresholds.priority
        self.connections = Resource(thresholds.maxConnections)
        self.pendingRequests = Resource(thresholds.maxPendingRequests)
        self.requests = Resource(thresholds.maxRequests)
        budget = thresholds.retryBudget
        if budget is None:
            self.retries = Resource(thresholds.maxRetries)
        else:
            self.retries = RetryBudget(budget[0], budget[1], thresholds.maxRetries,
                                       self.requests, self.pendingRequests)
        self.connectionPools = Resource(thresholds.maxConnectionPools)
        self.trackRemaining = thresholds.trackRemaining
        self.maxConnectionsPerHost = thresholds.maxConnectionsPerHost

    def gauges(self):
        """
        @return: C{[(name, gauge)]}: the C{circuit_breakers.<priority>.*}
            gauges, named as Envoy names them, for the main stats shard.
        """
        prefix = "circuit_breakers.%s." % (self.priority.lower(),)
        out = []
        for attr, openName, remainingName in _GAUGE_NAMES:
            resource = getattr(self, attr)
            out.append((prefix + openName, ResourceGauge(resource, False)))
            if self.trackRemaining:
                out.append((prefix + remainingName, ResourceGauge(resource, True)))
        return out
