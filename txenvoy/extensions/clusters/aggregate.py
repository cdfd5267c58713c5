# -*- test-case-name: tests.extensions.clusters.test_aggregate -*-
"""
Envoy's aggregate cluster (C{cluster_type} C{envoy.clusters.aggregate}):
failover across clusters. The priority levels of the listed clusters are
laid end to end, in order (the first cluster's P0, P1..., then the
next's), levels without hosts left out, and Envoy's priority load is
computed over them: the first cluster takes the load while it is healthy
enough and spills the rest to the next, level by level.

A request goes to the level picked, through that cluster's own load
balancer restricted to that level (its policy, and its panic mode). A
listed cluster that does not exist, or the aggregate cluster itself,
contributes nothing, as in Envoy.
"""

import random

from zope.interface import implementer

from txenvoy.config.registry import Category, extension
from txenvoy.interfaces import ILoadBalancer
from txenvoy.upstream.cluster import PrimaryCluster
from txenvoy.upstream.load_balancer import priorityState


class AggregateCluster(PrimaryCluster):
    """The main thread's side: it has no hosts of its own."""

    # No hosts of its own to take from a main process.
    sharedMembership = False

    def __init__(self, reactor, info, mainShard):
        PrimaryCluster.__init__(self, reactor, info, (), mainShard)

    def createLoadBalancer(self, threadLocal, rng=None):
        return AggregateLoadBalancer(self.info, threadLocal, rng)


@implementer(ILoadBalancer)
class AggregateLoadBalancer:
    """
    One worker's load balancer of an aggregate cluster. It reads the
    worker's own clusters (their latest host snapshots) and recomputes the
    combined levels whenever one of them got a new snapshot.
    """

    def __init__(self, info, threadLocal, rng=None):
        self._names = info.aggregateClusters
        self._config = info.lbConfig
        self._dispatcher = threadLocal.dispatcher
        self._rng = rng if rng is not None else random.random
        self._seen = None
        self._levels = ()
        self._table = ()

    def setHosts(self, hosts):
        """The aggregate cluster's own membership (always empty)."""

    def _refresh(self):
        manager = self._dispatcher.clusterManager
        clusters = []
        for name in self._names:
            tlc = manager.getThreadLocalCluster(name)
            if tlc is not None:
                clusters.append(tlc)
        seen = [(tlc, tlc.hosts) for tlc in clusters]
        if self._seen is not None and len(seen) == len(self._seen) and all(
                a is c and b is d for (a, b), (c, d) in zip(seen, self._seen)):
            return
        self._seen = seen
        levels = []
        counts = []
        for tlc, hosts in seen:
            perPriority = {}
            for h in hosts:
                c = perPriority.setdefault(h.priority, [0, 0, 0, 0])
                c[0] += 1
                if h.excluded:
                    continue
                c[1] += 1
                if h.healthy:
                    if h.degraded:
                        c[3] += 1
                    else:
                        c[2] += 1
            factor = tlc.info.lbConfig.overprovisioningFactor
            for priority in sorted(perPriority):
                allHosts, total, healthy, degraded = perPriority[priority]
                levels.append((tlc, priority))
                counts.append((total, healthy, degraded, factor))
        self._levels = levels
        if not levels:
            self._table = ()
            return
        healthyLoad, degradedLoad, _ = priorityState(
            counts, self._config.overprovisioningFactor, self._config.healthyPanicThreshold)
        table = []
        acc = 0
        for i, load in enumerate(healthyLoad):
            if load:
                acc += load
                table.append((acc, i, False))
        for i, load in enumerate(degradedLoad):
            if load:
                acc += load
                table.append((acc, i, True))
        self._table = tuple(table)

    def chooseHost(self, context=None):
        """
        @return: a host of the level picked, from its own cluster's load
            balancer, or C{None}.
        """
        self._refresh()
        table = self._table
        if not table:
            return None
        draw = int(self._rng() * 100) + 1
        for bound, index, degraded in table:
            if draw <= bound:
                break
        tlc, priority = self._levels[index]
        lb = tlc.loadBalancer
        pick = getattr(lb, "chooseHostInPriority", None)
        if pick is None:
            return lb.chooseHost(context)
        return pick(priority, degraded, context)


@extension(Category.CLUSTER, None, "envoy.clusters.aggregate")
def createAggregateCluster(info, context):
    """Build an L{AggregateCluster}."""
    return AggregateCluster(context.reactor, info, context.mainShard)
