# -*- test-case-name: tests.extensions.filters.http -*-
"""
What HTTP filter extensions share: L{RouteSpecificConfigs} (Envoy's
route-specific filter configs, from C{typed_per_filter_config}),
L{WorkerStats} (stat objects resolved once per worker), L{snapshotSource}
(the runtime seam) and L{httpStatPrefix}. Field checks live in
L{txenvoy.config.fields}.
"""

import sys

from twisted.logger import Logger

from txenvoy.config.errors import ConfigError

from txenvoy.config.registry import typeNameOf, unpackAny
from txenvoy.runtime import Snapshot
from txenvoy.stats.per_worker import perWorkerMethod

log = Logger(namespace="http")



class RouteSpecificConfigs:
    """
    The C{typed_per_filter_config} entries of one HTTP filter, compiled on
    first use and kept (Envoy's C{RouteSpecificFilterConfig}).

    The route table keeps the raw C{google.protobuf.Any} of every level;
    each one is compiled once, then found again by identity, so a request
    pays a dict lookup. The compiled object is shared by every worker, as
    Envoy shares it (a route's token bucket is one bucket).

    Envoy compiles (and checks) these when the route table loads; here a
    mistake in one shows on the first request of its route: it is logged
    and the filter's own config applies instead.

    @ivar compile: C{compile(message) -> config} for the unpacked message;
        may raise L{ConfigError}.
    @ivar typeNames: the message types accepted, full names.
    """

    #: Entries kept before the first sweep for configs of route tables
    #: that are gone (replaced by a reload).
    sweepAt = 1024

    def __init__(self, filterName, typeNames, compile):
        self.filterName = filterName
        self.typeNames = frozenset(typeNames)
        self.compile = compile
        self._cache = {}

    def compiled(self, source):
        """
        @param source: a C{google.protobuf.Any} from the route table (or a
            message kept there already unpacked).
        @return: its compiled config, or C{None} when it cannot be used
            (logged once).
        """
        key = id(source)
        entry = self._cache.get(key)
        if entry is not None and entry[0] is source:
            return entry[1]
        config = self._compileSource(source)
        cache = self._cache
        if len(cache) >= self.sweepAt:
            self._sweep()
        entry = cache.setdefault(key, (source, config))
        if entry[0] is not source:
            entry = cache[key] = (source, config)
        # Another worker may have compiled it first: everyone uses that one.
        return entry[1]

    def _sweep(self):
        """
        Forget the configs whose message only this cache still holds: their
        route table is gone, and the id may come back for another message.
        Protobuf messages take no weak references, hence the count.
        """
        cache = self._cache
        for key, entry in list(cache.items()):
            # The entry's tuple and getrefcount's own argument.
            if sys.getrefcount(entry[0]) <= 2:
                cache.pop(key, None)
        self.sweepAt = max(type(self).sweepAt, 2 * len(cache))

    def precompile(self, source, path):
        """
        Compile C{source} when the route table loads, as Envoy does, so
        that a mistake in it fails the config with its C{path} rather than
        showing on the first request.

        @raise ConfigError: naming C{path}.
        """
        try:
            config = self._compileOrRaise(source, path)
        except ConfigError as e:
            if path in str(e):
                raise
            raise ConfigError("%s: %s" % (path, e))
        self._cache[id(source)] = (source, config)

    def _compileOrRaise(self, source, path):
        if source.DESCRIPTOR.full_name == "google.protobuf.Any":
            typeName = typeNameOf(source)
            if typeName not in self.typeNames:
                raise ConfigError("%s: %s cannot configure %s per route" % (
                    path, typeName, self.filterName))
            source = unpackAny(source, path)
        return self.compile(source, path) if self.takesPath else self.compile(source)

    @property
    def takesPath(self):
        """Whether C{compile} takes the entry's field path as well."""
        return getattr(self.compile, "takesPath", False)

    def _compileSource(self, source):
        path = "typed_per_filter_config[%s]" % (self.filterName,)
        try:
            return self._compileOrRaise(source, path)
        except ConfigError as e:
            log.error("ignoring a route's config of {name}: {why}", name=self.filterName,
                      why=str(e))
            return None

    def mostSpecific(self, callbacks):
        """
        Envoy's C{resolveMostSpecificPerFilterConfig}: the config of the
        most specific level of the request's route that has one (the
        weighted cluster, the route, the virtual host, the route
        configuration).

        @return: a compiled config, or C{None}.
        """
        route = callbacks.route()
        if route is None:
            return None
        name = callbacks.filterConfigName
        # RouteMatch.mostSpecificPerFilterConfig, without its list: this
        # runs for every request of every filter that has route configs.
        weighted = route.weightedCluster
        source = weighted.perFilterConfig.get(name) if weighted is not None else None
        if source is None:
            source = route.entry.perFilterConfig.get(name)
            if source is None:
                source = route.virtualHost.perFilterConfig.get(name)
                if source is None:
                    source = route.routeTable.perFilterConfig.get(name)
                    if source is None:
                        return None
        entry = self._cache.get(id(source))
        if entry is not None and entry[0] is source:
            return entry[1]
        return self.compiled(source)

    def all(self, callbacks):
        """
        Envoy's C{getAllPerFilterConfig}, most specific first.

        @return: a list of compiled configs (possibly empty).
        """
        route = callbacks.route()
        if route is None:
            return []
        found = []
        for any_ in reversed(route.perFilterConfigs(callbacks.filterConfigName)):
            config = self.compiled(any_)
            if config is not None:
                found.append(config)
        return found


class _StatSet:
    """One worker's stat objects, as attributes."""


class WorkerStats:
    """
    Named counters and gauges of one filter config, resolved once per
    worker shard (stats are per-thread shards, summed when read).

    @ivar names: C{{attribute: full stat name}} of the counters.
    @ivar gaugeNames: the same for the gauges.
    """

    #: This worker's stat objects, made on first use on that worker.
    forDispatcher = perWorkerMethod(lambda self, d: self._build(d.stats))

    def __init__(self, counters=None, gauges=None):
        self.names = dict(counters or {})
        self.gaugeNames = dict(gauges or {})

    def _build(self, shard):
        stats = _StatSet()
        for attribute, name in self.names.items():
            setattr(stats, attribute, shard.counter(name))
        for attribute, name in self.gaugeNames.items():
            setattr(stats, attribute, shard.gauge(name))
        return stats

    def declare(self, context):
        """
        Show every stat at zero from the start, as Envoy does for the stats
        a filter config creates (on the main thread's shard).
        """
        mainStats = getattr(getattr(context, "server", None), "mainStats", None)
        if mainStats is not None:
            self._build(mainStats)
        return self


_EMPTY_SNAPSHOT = Snapshot(())


def snapshotSource(context):
    """
    The runtime seam: C{snapshot()} giving the current
    L{txenvoy.runtime.Snapshot}, or an empty one (every key at its
    default) when the context has no runtime.
    """
    runtime = getattr(context, "runtime", None)
    if runtime is None:
        return lambda: _EMPTY_SNAPSHOT
    return runtime.snapshot


def httpStatPrefix(context):
    """The connection manager's C{http.<stat_prefix>.}."""
    return getattr(context, "httpStatPrefix", "http.unknown.")


def perFilterConfigSources(routeTable, path):
    """
    Yield C{(perFilterConfig, cors, path)} for every level of a compiled
    route table that may hold route-specific filter configs: the table,
    each virtual host, route and weighted cluster, with the field path of
    its C{typed_per_filter_config} holder.
    """
    yield routeTable.perFilterConfig, None, path
    for v, vhost in enumerate(routeTable.virtualHosts):
        vpath = "%s.virtual_hosts[%d]" % (path, v)
        yield vhost.perFilterConfig, vhost.cors, vpath
        for r, entry in enumerate(vhost.routes):
            rpath = "%s.routes[%d]" % (vpath, r)
            yield entry.perFilterConfig, getattr(entry, "cors", None), rpath
            for w, weighted in enumerate(entry.weightedClusters or ()):
                yield (weighted.perFilterConfig, None,
                       "%s.route.weighted_clusters.clusters[%d]" % (rpath, w))
