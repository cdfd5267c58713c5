# -*- test-case-name: tests.upstream.test_load_balancer -*-
"""
Load balancers: ROUND_ROBIN, RANDOM and LEAST_REQUEST, each with weights,
plus Envoy's priority levels and panic mode (C{LoadBalancerBase}).

One L{LoadBalancer} lives on each worker for each cluster and is touched
only by that worker, so its state (round robin positions, EDF deadlines)
needs no lock. The main thread hands it new host lists through
L{LoadBalancer.setHosts}, posted to the worker.

How a host is chosen, as in Envoy:

 1. Hosts are grouped by priority. Each level gets a share of the load
    from how healthy it is, times the overprovisioning factor (1.4): a level
    with 5 healthy hosts out of 10 takes 70% and spills 30% to the next.
 2. A level whose healthy (plus degraded) hosts fall below the
    C{healthy_panic_threshold} (50% by default) is in panic: it balances
    over all its hosts, healthy or not, and counts C{lb_healthy_panic}.
 3. Within the chosen level and host subset, the policy picks the host.

Work that depends only on the host list is done in L{LoadBalancer.setHosts},
never per pick; the common case (one level, not in panic) costs one method
call per pick.
"""

import heapq
import random as _random
from bisect import bisect_right
from itertools import accumulate

from zope.interface import implementer

from txenvoy.interfaces import ILoadBalancer
from txenvoy.upstream.locality import localityWeightedPicker

ROUND_ROBIN = "ROUND_ROBIN"
RANDOM = "RANDOM"
LEAST_REQUEST = "LEAST_REQUEST"

SUPPORTED_POLICIES = (ROUND_ROBIN, RANDOM, LEAST_REQUEST)

#: Envoy's default overprovisioning factor, in percent.
DEFAULT_OVERPROVISIONING_FACTOR = 140

# Above this many weighted hosts, round robin switches from smooth weighted
# round robin (O(n) per pick, perfectly even interleaving) to an earliest
# deadline first scheduler (O(log n) per pick), as Envoy uses.
_SMOOTH_WRR_MAX_HOSTS = 16

_HEALTHY = 0
_DEGRADED = 1
_ALL = 2


class LbConfig:
    """
    The compiled load balancing settings of one cluster.

    @ivar policy: one of L{SUPPORTED_POLICIES}.
    @ivar choiceCount: LEAST_REQUEST: hosts sampled per pick (default 2).
    @ivar activeRequestBias: LEAST_REQUEST with unequal weights: the exponent
        of C{weight / (rq_active + 1) ** bias} (default 1.0).
    @ivar healthyPanicThreshold: percent, default 50; 0 disables panic.
    @ivar overprovisioningFactor: percent, default 140.
    @ivar updateMergeWindow: seconds (C{common_lb_config.update_merge_window},
        default 1): health-only changes within it of the last update reach
        workers together at its end.
    @ivar localityWeights: with C{locality_weighted_lb_config}, C{{priority:
        {localityKey: weight}}} (see L{txenvoy.upstream.locality}); else
        C{None}.
    @ivar failTrafficOnPanic: C{zone_aware_lb_config.fail_traffic_on_panic}:
        a level in panic offers no host instead of all of them.
    @ivar hashing: RING_HASH and MAGLEV: the cluster's
        L{txenvoy.upstream.thread_aware_lb.TableCache}; else C{None}.
    """

    __slots__ = ("policy", "choiceCount", "activeRequestBias",
                 "healthyPanicThreshold", "overprovisioningFactor", "updateMergeWindow",
                 "localityWeights", "failTrafficOnPanic", "hashing")

    def __init__(self, policy=ROUND_ROBIN, choiceCount=2, activeRequestBias=1.0,
                 healthyPanicThreshold=50.0,
                 overprovisioningFactor=DEFAULT_OVERPROVISIONING_FACTOR,
                 updateMergeWindow=1.0):
        self.updateMergeWindow = updateMergeWindow
        self.hashing = None
        self.policy = policy
        self.choiceCount = choiceCount
        self.activeRequestBias = activeRequestBias
        self.healthyPanicThreshold = healthyPanicThreshold
        self.overprovisioningFactor = overprovisioningFactor
        self.localityWeights = None
        self.failTrafficOnPanic = False


def computePriorityLoad(levels, overprovisioningFactor=DEFAULT_OVERPROVISIONING_FACTOR):
    """
    Envoy's C{recalculatePerPriorityState}: spread 100% of the load over
    priority levels by their health.

    @param levels: per priority, C{(total, healthy, degraded)} host counts,
        optionally with a fourth item: that level's own overprovisioning
        factor (an aggregate cluster's levels come from several clusters).
    @return: C{(healthyLoad, degradedLoad, normalizedTotalAvailability)}:
        two lists of integer percentages that together sum to 100, and the
        total availability (0..100) used for the panic decision.
    """
    n = len(levels)
    health = [0] * n
    degraded = [0] * n
    for i, level in enumerate(levels):
        total, healthy, deg = level[:3]
        factor = level[3] if len(level) > 3 else overprovisioningFactor
        if total > 0:
            health[i] = min(100, factor * healthy // total)
            degraded[i] = min(100, factor * deg // total)
    normalized = min(100, sum(health) + sum(degraded))
    healthyLoad = [0] * n
    degradedLoad = [0] * n
    if n == 0:
        return [100], [0], 0
    if normalized == 0:
        # Everything is unavailable: all load to P0 (where panic applies).
        healthyLoad[0] = 100
        return healthyLoad, degradedLoad, 0

    def distribute(load, availability, totalLoad):
        first = -1
        for i, a in enumerate(availability):
            if first < 0 and a > 0:
                first = i
            load[i] = min(totalLoad, a * 100 // normalized)
            totalLoad -= load[i]
        return first, totalLoad

    firstHealthy, remaining = distribute(healthyLoad, health, 100)
    firstDegraded, remaining = distribute(degradedLoad, degraded, remaining)
    if remaining:
        # Rounding leftovers go to the first level that can take them.
        if firstHealthy >= 0:
            healthyLoad[firstHealthy] += remaining
        else:
            degradedLoad[firstDegraded] += remaining
    return healthyLoad, degradedLoad, normalized


def priorityState(counts, overprovisioningFactor, healthyPanicThreshold):
    """
    Envoy's C{LoadBalancerBase::recalculatePerPriorityState} and
    C{recalculatePerPriorityPanic}: the load of each level and whether it
    is in panic; in total panic, load follows the number of hosts per level
    (C{recalculateLoadInTotalPanic}).

    @param counts: as L{computePriorityLoad}'s C{levels}.
    @return: C{(healthyLoad, degradedLoad, panic)}, lists per level.
    """
    healthyLoad, degradedLoad, normalized = computePriorityLoad(counts, overprovisioningFactor)
    threshold = min(100.0, healthyPanicThreshold)
    if threshold == 0 and normalized == 0:
        panic = [False] * len(counts)
    else:
        panic = [
            False if normalized == 100 else isInPanic(c[0], c[1], c[2], threshold)
            for c in counts
        ]
    if panic and all(panic):
        totalHosts = sum(c[0] for c in counts)
        if totalHosts:
            healthyLoad = [100 * c[0] // totalHosts for c in counts]
            degradedLoad = [0] * len(counts)
            firstNonEmpty = next(i for i, c in enumerate(counts) if c[0])
            healthyLoad[firstNonEmpty] += 100 - sum(healthyLoad)
    return healthyLoad, degradedLoad, panic


def isInPanic(total, healthy, degraded, threshold):
    """
    Envoy's C{isHostSetInPanic}: whether healthy plus degraded hosts are
    below C{threshold} percent of the level (an empty level is in panic
    unless the threshold is 0).
    """
    if total == 0:
        return threshold > 0
    return (100.0 * (healthy + degraded) / total) < threshold


# --- pickers: one per (priority, host subset), rebuilt on membership change


def _allEqual(weights):
    first = weights[0]
    for w in weights:
        if w != first:
            return False
    return True


class _Edf:
    """
    Earliest deadline first over weighted entries (Envoy's
    C{EdfScheduler}): each pick returns the entry with the smallest deadline
    and re-adds it at C{deadline + 1/weight}, where the weight may be
    recomputed at that moment (least request uses live active counts).
    """

    __slots__ = ("_heap", "_weightOf")

    def __init__(self, items, weightOf, rng):
        self._weightOf = weightOf
        heap = []
        for order, item in enumerate(items):
            w = weightOf(item)
            # A random first deadline within one period spreads workers
            # that share a host list.
            heap.append((rng() / w, order, item))
        heapq.heapify(heap)
        self._heap = heap

    def pick(self):
        deadline, order, item = self._heap[0]
        w = self._weightOf(item)
        heapq.heapreplace(self._heap, (deadline + 1.0 / w, order, item))
        return item


def _roundRobinPicker(hosts, rng):
    n = len(hosts)
    if n == 1:
        only = hosts[0]
        return lambda: only
    weights = [h.weight for h in hosts]
    if _allEqual(weights):
        # Plain rotation from a random start, so that workers do not all
        # begin with the same host (Envoy seeds each worker's index too).
        state = [int(rng() * n)]
        seq = tuple(hosts)
        last = n - 1

        def pick():
            i = state[0]
            state[0] = i + 1 if i < last else 0
            return seq[i]

        return pick
    if n <= _SMOOTH_WRR_MAX_HOSTS:
        return _SmoothWeightedRoundRobin(hosts).pick
    return _Edf(hosts, lambda h: h.weight, rng).pick


class _SmoothWeightedRoundRobin:
    """
    nginx's smooth weighted round robin: weights 5, 1, 1 give
    C{a a b a c a a} rather than C{a a a a a b c}.
    """

    __slots__ = ("_hosts", "_weights", "_current", "_total")

    def __init__(self, hosts):
        self._hosts = tuple(hosts)
        self._weights = [h.weight for h in hosts]
        self._current = [0] * len(hosts)
        self._total = sum(self._weights)

    def pick(self):
        current = self._current
        weights = self._weights
        best = 0
        bestValue = None
        for i in range(len(current)):
            v = current[i] + weights[i]
            current[i] = v
            if bestValue is None or v > bestValue:
                best = i
                bestValue = v
        current[best] -= self._total
        return self._hosts[best]


def _randomPicker(hosts, rng):
    n = len(hosts)
    if n == 1:
        only = hosts[0]
        return lambda: only
    seq = tuple(hosts)
    weights = [h.weight for h in hosts]
    if _allEqual(weights):
        return lambda: seq[int(rng() * n)]
    cumulative = list(accumulate(weights))
    total = cumulative[-1]

    def pick():
        return seq[bisect_right(cumulative, rng() * total)]

    return pick


def _leastRequestPicker(hosts, rng, workerName, choiceCount, bias):
    n = len(hosts)
    if n == 1:
        only = hosts[0]
        return lambda: only
    seq = tuple(hosts)
    stats = tuple(h.statsFor(workerName) for h in hosts)
    weights = [h.weight for h in hosts]
    if _allEqual(weights):
        # Power of k choices (k = choice_count, 2 by default), sampled with
        # replacement as Envoy does: the candidate with fewer active
        # requests on this worker wins; a tie keeps the first sampled.
        def pick():
            best = int(rng() * n)
            bestActive = stats[best].rq_active
            for _ in range(choiceCount - 1):
                i = int(rng() * n)
                a = stats[i].rq_active
                if a < bestActive:
                    best = i
                    bestActive = a
            return seq[best]

        return pick
    # Unequal weights: EDF where each host's weight is scaled down by its
    # active requests when it is re-queued (Envoy's
    # weight / (active_requests + 1) ^ active_request_bias).
    if bias == 0.0:
        def weightOf(i):
            return weights[i]
    elif bias == 1.0:
        def weightOf(i):
            return weights[i] / (stats[i].rq_active + 1)
    else:
        def weightOf(i):
            return weights[i] / ((stats[i].rq_active + 1) ** bias)
    edf = _Edf(range(n), weightOf, rng)

    def pick():
        return seq[edf.pick()]

    return pick


class _Level:
    """The hosts of one priority level, split by health."""

    __slots__ = ("hosts", "healthy", "degraded")

    def __init__(self):
        self.hosts = []
        self.healthy = []
        self.degraded = []


@implementer(ILoadBalancer)
class LoadBalancer:
    """
    The load balancer of one cluster on one worker.

    @ivar config: the cluster's L{LbConfig}.
    """

    def __init__(self, config, workerName="main_thread", panicCounter=None, rng=None):
        """
        @param config: an L{LbConfig}.
        @param workerName: the owning worker; least request reads this
            worker's C{rq_active} of each host.
        @param panicCounter: the worker's C{lb_healthy_panic} counter, or
            C{None}.
        @param rng: a function returning a float in [0, 1) (default
            C{random.random}); tests pass a seeded one.
        """
        self.config = config
        self._workerName = workerName
        self._panicCounter = panicCounter
        self._rng = rng if rng is not None else _random.random
        self._levels = []
        self._pickers = {}
        self._fast = None
        self._cumulative = ()
        self._panic = ()
        self._noHosts = True
        self.setHosts(())

    def setHosts(self, hosts):
        """
        Take a new host list (called on this worker, with a list the main
        thread built). Resets the policy's rotation state, as Envoy does when
        it rebuilds a load balancer on membership change.
        """
        levels = []
        for h in hosts:
            p = h.priority
            while len(levels) <= p:
                levels.append(_Level())
            level = levels[p]
            if h.excluded:
                continue
            level.hosts.append(h)
            if h.healthy:
                if h.degraded:
                    level.degraded.append(h)
                else:
                    level.healthy.append(h)
        if not levels:
            levels.append(_Level())
        counts = [(len(l.hosts), len(l.healthy), len(l.degraded)) for l in levels]
        healthyLoad, degradedLoad, panic = priorityState(
            counts, self.config.overprovisioningFactor, self.config.healthyPanicThreshold)
        self._levels = levels
        self._panic = tuple(panic)
        self._pickers = {}
        self._noHosts = not any(c[0] for c in counts)
        # Cumulative (bound, priority, source) table for choosing a level;
        # only consulted when more than one entry has load.
        table = []
        acc = 0
        for p, load in enumerate(healthyLoad):
            if load:
                acc += load
                table.append((acc, p, _HEALTHY))
        for p, load in enumerate(degradedLoad):
            if load:
                acc += load
                table.append((acc, p, _DEGRADED))
        self._cumulative = tuple(table)
        self._fast = None
        if len(table) == 1:
            _, p, source = table[0]
            if not panic[p]:
                self._fast = self._picker(p, source)

    def _picker(self, priority, source):
        key = (priority, source)
        picker = self._pickers.get(key)
        if picker is not None:
            return picker
        level = self._levels[priority]
        if source == _HEALTHY:
            hosts = level.healthy
        elif source == _DEGRADED:
            hosts = level.degraded
        else:
            hosts = level.hosts
        localityWeights = self.config.localityWeights
        if not hosts:
            picker = _none
        elif localityWeights is not None and source != _ALL:
            picker = localityWeightedPicker(
                level.hosts, hosts, localityWeights.get(priority, {}),
                self.config.overprovisioningFactor, self._policyPicker)
        else:
            picker = self._policyPicker(hosts)
        self._pickers[key] = picker
        return picker

    def _policyPicker(self, hosts):
        cfg = self.config
        policy = cfg.policy
        if policy == ROUND_ROBIN:
            return _roundRobinPicker(hosts, self._rng)
        if policy == RANDOM:
            return _randomPicker(hosts, self._rng)
        return _leastRequestPicker(
            hosts, self._rng, self._workerName, cfg.choiceCount, cfg.activeRequestBias)

    def priorityAvailability(self):
        """
        @return: per level, C{(healthy, degraded)} availability in percent
            (Envoy's C{per_priority_health_} and C{per_priority_degraded_}),
            for a retry priority to reshape the load.
        """
        factor = self.config.overprovisioningFactor
        out = []
        for level in self._levels:
            total = len(level.hosts)
            if not total:
                out.append((0, 0))
                continue
            out.append((min(100, factor * len(level.healthy) // total),
                        min(100, factor * len(level.degraded) // total)))
        return out

    def chooseHostWithPriorityLoad(self, healthyLoad, degradedLoad, context=None):
        """
        Pick with a priority load a retry priority computed, in place of
        the cluster's (Envoy's C{determinePriorityLoad}).
        """
        draw = int(self._rng() * 100) + 1
        acc = 0
        for degraded, loads in ((False, healthyLoad), (True, degradedLoad)):
            for priority, load in enumerate(loads):
                acc += load
                if load and draw <= acc:
                    return self.chooseHostInPriority(priority, degraded, context)
        return None

    def chooseHostInPriority(self, priority, degraded=False, context=None):
        """
        Pick within one priority level only, as Envoy does under a context
        whose C{determinePriorityLoad} puts all load there (an aggregate
        cluster's choice of level): its healthy (or degraded) hosts, or all
        of them when the level is in panic. C{context} is for the hashing
        load balancers.

        @return: a host, or C{None}.
        """
        if priority >= len(self._levels):
            return None
        if self._panic[priority]:
            if self._panicCounter is not None:
                self._panicCounter.inc()
            if self.config.failTrafficOnPanic:
                return None
            return self._picker(priority, _ALL)()
        return self._picker(priority, _DEGRADED if degraded else _HEALTHY)()

    def chooseHost(self, context=None):
        """
        @param context: unused by these policies (hash-based ones would read
            C{context.hashKey}).
        @return: a L{txenvoy.upstream.host.Host}, or C{None} when the cluster
            has no host to offer (no hosts, or none healthy with panic
            disabled).
        """
        fast = self._fast
        if fast is not None:
            return fast()
        picker = self._choosePicker(int(self._rng() * 100))
        return picker() if picker is not None else None

    def _choosePicker(self, draw):
        """
        Envoy's C{choosePriority} then panic check: the picker of the level
        that C{draw} (0..99) falls in, or C{None} when there are no hosts.
        """
        table = self._cumulative
        if len(table) == 1:
            _, priority, source = table[0]
        else:
            # A number in 1..100 against the cumulative healthy then
            # degraded loads.
            draw += 1
            for bound, priority, source in table:
                if draw <= bound:
                    break
        if self._panic[priority]:
            if self._panicCounter is not None:
                self._panicCounter.inc()
            if self._noHosts or self.config.failTrafficOnPanic:
                return None
            source = _ALL
        return self._picker(priority, source)


def _none():
    return None
