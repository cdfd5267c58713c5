# -*- test-case-name: tests.upstream.test_thread_aware_lb -*-
"""
Envoy's C{ThreadAwareLoadBalancerBase}: the frame the consistent-hash
load balancers (RING_HASH, MAGLEV) share.

Per priority level a hash table (a ring, a Maglev table) is built over
the level's healthy hosts, or over all of them when the level is in panic,
with each host's weight normalized so that the level's weights sum to 1.
A request's hash (from the route's C{hash_policy}, or a random 64-bit
number when it yields none) picks the priority level (C{hash % 100 + 1}
against the priority loads, as Envoy's C{choosePriority}) and then the
host in that level's table.

Tables depend only on the host list, so they are built in C{setHosts} on
first use, never per pick; and since every worker receives the same list,
the tables a worker builds are shared with the others through a small
cache keyed by the hosts and their weights (they are immutable).
"""

import threading

from zope.interface import implementer

from txenvoy.interfaces import ILoadBalancer
from txenvoy.upstream.load_balancer import LoadBalancer

_HEALTHY = 0
_ALL = 2
_MAX_UINT64 = 1 << 64

#: Envoy's C{hash_key} in the C{envoy.lb} filter metadata of an endpoint.
LB_METADATA_NAMESPACE = "envoy.lb"
HASH_KEY = "hash_key"


def hostHashKey(host, useHostname):
    """
    Envoy's C{HashingLoadBalancer::hashKey}: the endpoint's
    C{envoy.lb} C{hash_key} metadata when set, else its hostname (with
    C{use_hostname_for_hashing}) or its C{ip:port}.
    """
    key = getattr(host, "hashKey", "")
    if key:
        return key
    return host.hostname if useHostname else host.addressString


def normalizeHostWeights(hosts):
    """
    Envoy's C{normalizeHostWeights}: each host's weight over the sum.

    @return: C{(normalized, minWeight, maxWeight)} where C{normalized} is a
        list of C{(host, weight)} in host order, with weights summing to 1;
        C{(1.0, 0.0)} as the bounds of an empty list, as Envoy starts them.
    """
    total = 0
    for h in hosts:
        total += h.weight
    normalized = []
    lo = 1.0
    hi = 0.0
    for h in hosts:
        w = h.weight * 1.0 / total
        normalized.append((h, w))
        if w < lo:
            lo = w
        if w > hi:
            hi = w
    return normalized, lo, hi


class TableCache:
    """
    The last few tables one cluster's policy built, shared by its workers.

    A table is immutable once built; two workers building the same one at
    once waste a little work and keep one of the two results.
    """

    _SIZE = 8

    def __init__(self, policy):
        """
        @param policy: the policy's settings: C{policy.buildTable(normalized,
            minWeight, maxWeight)} returns a table with C{chooseHost(hash,
            attempt)} and C{stats()}; C{policy.statPrefix} and
            C{policy.statNames} name its gauges.
        """
        self.policy = policy
        self._build = policy.buildTable
        self._tables = {}
        self._lock = threading.Lock()

    def tableFor(self, hosts):
        """The table for C{hosts} (a sequence of L{Host}), built once."""
        key = tuple((id(h), h.weight, getattr(h, "hashKey", ""), h.addressString, h.hostname)
                    for h in hosts)
        entry = self._tables.get(key)
        if entry is not None:
            return entry[0]
        normalized, lo, hi = normalizeHostWeights(hosts)
        table = self._build(normalized, lo, hi)
        with self._lock:
            if len(self._tables) >= self._SIZE:
                self._tables.pop(next(iter(self._tables)))
            # The hosts stay alive with the entry, so that an id() in the
            # key is never reused by another host meanwhile.
            self._tables[key] = (table, tuple(hosts))
        return table


@implementer(ILoadBalancer)
class ThreadAwareLoadBalancer(LoadBalancer):
    """
    A consistent-hash load balancer of one cluster on one worker: the
    priority and panic logic of L{LoadBalancer}, then a hash table per
    level.

    @ivar tables: the policy's L{TableCache}.
    """

    #: Retry host predicates are applied here, by moving on in the table;
    #: picking again would only find the same host for the same hash.
    handlesHostSelectionRetries = True

    def __init__(self, config, tables, workerName="main_thread", panicCounter=None, rng=None):
        self.tables = tables
        LoadBalancer.__init__(self, config, workerName, panicCounter, rng)

    def setHosts(self, hosts):
        """Take a new host list; the tables are rebuilt on first use."""
        LoadBalancer.setHosts(self, hosts)
        # The base class's fast path takes no hash; always go through
        # chooseHost's hash-aware path.
        self._fast = None

    def _picker(self, priority, source):
        # Envoy builds one table per level, over its healthy hosts (not the
        # degraded ones) or, in panic, over all of them.
        source = _ALL if source == _ALL else _HEALTHY
        key = (priority, source)
        table = self._pickers.get(key)
        if table is None:
            level = self._levels[priority]
            hosts = level.hosts if source == _ALL else level.healthy
            table = self.tables.tableFor(hosts) if hosts else _EMPTY
            self._pickers[key] = table
        return table

    def chooseHost(self, context=None):
        """
        @param context: C{None} or an object whose C{computeHashKey()}
            returns the request's hash (an C{int} below 2**64) or C{None};
            with no hash, a random one is used (Envoy's fallback).
        @return: a L{txenvoy.upstream.host.Host} or C{None}.
        """
        h = self._hash(context)
        table = self._choosePicker(h % 100)
        if table is None:
            return None
        return _select(table, h, context)

    def chooseHostInPriority(self, priority, degraded=False, context=None):
        """
        Pick within one priority level (an aggregate cluster's choice):
        its table, built over its healthy hosts or, in panic, all of them.
        """
        if priority >= len(self._levels):
            return None
        source = _HEALTHY
        if self._panic[priority]:
            if self._panicCounter is not None:
                self._panicCounter.inc()
            if self.config.failTrafficOnPanic:
                return None
            source = _ALL
        return _select(self._picker(priority, source), self._hash(context), context)

    def _hash(self, context):
        h = None
        if context is not None:
            h = context.computeHashKey()
        if h is None:
            h = int(self._rng() * _MAX_UINT64)
        return h


class MainThreadTables:
    """
    The tables built on the main thread at each host update, as Envoy's
    C{ThreadAwareLoadBalancerBase::refresh} builds them, for the policy's
    gauges (C{cluster.<name>.ring_hash_lb.size}, C{min_hashes_per_host},
    ...; C{maglev_lb.min_entries_per_host}, ...). The workers then find the
    same tables in the cache rather than building them again.
    """

    def __init__(self, config, scope):
        """
        @param config: the cluster's L{LbConfig} (with C{hashing}).
        @param scope: the cluster's main-thread stats scope.
        """
        self._lb = ThreadAwareLoadBalancer(config, config.hashing)
        policy = config.hashing.policy
        self._gauges = dict((name, scope.gauge(policy.statPrefix + name))
                            for name in policy.statNames)

    def refresh(self, hosts):
        """Build each level's table for C{hosts} and set the gauges."""
        lb = self._lb
        lb.setHosts(hosts)
        for priority, panic in enumerate(lb._panic):
            stats = lb._picker(priority, _ALL if panic else _HEALTHY).stats()
            # Envoy leaves the gauges alone for a level with no hosts.
            if stats:
                for name, value in stats.items():
                    self._gauges[name].set(value)


def _select(table, h, context):
    # Envoy's retry host predicates: with the request's retry host
    # selection in the context, each attempt moves on in the table (the
    # ring's next point, Maglev's altered hash) until one is accepted.
    selection = getattr(context, "retryHostSelection", None)
    if selection is None:
        return table.chooseHost(h, 0)
    host = None
    for attempt in range(selection.hostSelectionRetryCount + 1):
        host = table.chooseHost(h, attempt)
        if host is None or not selection.shouldSelectAnotherHost(host):
            return host
    return host


def newLoadBalancer(config, workerName="main_thread", panicCounter=None, rng=None):
    """
    One worker's load balancer for a cluster's L{LbConfig}: a
    L{ThreadAwareLoadBalancer} for RING_HASH and MAGLEV, else a
    L{LoadBalancer}.
    """
    if config.hashing is not None:
        return ThreadAwareLoadBalancer(config, config.hashing, workerName, panicCounter, rng)
    return LoadBalancer(config, workerName, panicCounter, rng)


class _EmptyTable:
    def chooseHost(self, h, attempt):
        return None

    def stats(self):
        return None


_EMPTY = _EmptyTable()
