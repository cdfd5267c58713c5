# -*- test-case-name: tests.xds.test_file_xds -*-
"""
The CDS handler (Envoy's C{CdsApiImpl}, state of the world): an update
names every dynamic cluster; one not named any more is removed, a new one
added, a changed one replaced. An update with any invalid cluster is
rejected whole and nothing changes.
"""

from txenvoy.config.errors import ConfigError, collectErrors


class CdsApi:
    """
    @ivar dynamic: C{{name: (proto, versionInfo, lastUpdated)}} of the
        clusters CDS gave, for C{/config_dump}.
    @ivar replaced: the same of the clusters that serve on while the
        version replacing them warms (C{dynamic_active_clusters} beside the
        new one's C{dynamic_warming_clusters}).
    """

    def __init__(self, clusterManager, clock):
        self._manager = clusterManager
        self._clock = clock
        self.dynamic = {}
        self.replaced = {}

    def onConfigUpdate(self, resources, versionInfo):
        manager = self._manager
        names = set()
        added, modified, changed = [], [], {}
        for i, proto in enumerate(resources):
            if proto.name in names:
                raise ConfigError("duplicate cluster %s found" % (proto.name,))
            names.add(proto.name)
            known = self.dynamic.get(proto.name)
            if known is None and manager.get(proto.name) is not None:
                raise ConfigError("Error adding/updating cluster(s) %s: a static cluster has "
                                  "that name" % (proto.name,))
            if known is not None and known[0] == proto:
                continue
            try:
                # Every mistake of the cluster, raised before anything changes.
                with collectErrors():
                    cluster = manager.compileDynamic(proto, "resources[%d]" % (i,))
            except ConfigError as e:
                raise ConfigError("Error adding/updating cluster(s) %s: %s"
                                  % (proto.name, e.message))
            (added if known is None else modified).append(cluster)
            changed[proto.name] = proto
        removed = [name for name in self.dynamic if name not in names]
        manager.applyUpdate(added, modified, removed)
        warming = manager.warmingNames()
        self.replaced = {n: e for n, e in self.replaced.items() if n in warming}
        for cluster in modified:
            name = cluster.info.name
            if name in warming:
                self.replaced.setdefault(name, self.dynamic[name])
        now = self._clock.seconds()
        for name in removed:
            del self.dynamic[name]
        for name, proto in changed.items():
            self.dynamic[name] = (proto, versionInfo, now)
