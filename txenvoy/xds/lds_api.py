# -*- test-case-name: tests.xds.test_file_xds -*-
"""
The LDS handler (Envoy's C{LdsApiImpl}, state of the world): an update
names every dynamic listener; one not named any more is removed, a new
name is added, a changed one replaces its predecessor (whose connections
drain), an unchanged one is left alone. An update with any invalid
listener is rejected whole and nothing changes.
"""

from txenvoy.config.errors import ConfigError, collectErrors
from txenvoy.network.listener import ListenerConfig


class LdsApi:
    """
    @ivar dynamic: C{{name: (proto, versionInfo, lastUpdated)}} of the
        listeners LDS gave, for C{/config_dump}.
    @ivar draining: those it removed, while they drain: C{{name: (proto,
        versionInfo, lastUpdated, drainEnd)}}.
    """

    def __init__(self, listenerManager, context, drainTimeS, clock):
        self._manager = listenerManager
        self._context = context
        self._drainTimeS = drainTimeS
        self._clock = clock
        self.dynamic = {}
        self.draining = {}

    def onConfigUpdate(self, resources, versionInfo):
        manager = self._manager
        names = set()
        added, modified, inPlace = [], [], {}
        for i, proto in enumerate(resources):
            if proto.name in names:
                raise ConfigError("duplicate listener %s found" % (proto.name,))
            names.add(proto.name)
            existing = manager.get(proto.name)
            if existing is not None and proto.name not in self.dynamic:
                raise ConfigError("error adding listener '%s': a static listener has that name"
                                  % (proto.name,))
            known = self.dynamic.get(proto.name)
            if known is not None and known[0] == proto:
                continue
            try:
                # Every mistake of the listener, raised before anything changes.
                with collectErrors():
                    config = ListenerConfig(proto, self._context, "resources[%d]" % (i,))
            except ConfigError as e:
                raise ConfigError("Error adding/updating listener(s) %s: %s"
                                  % (proto.name, e.message))
            if existing is None:
                added.append(config)
            elif existing.address != config.address and not (
                    isinstance(config.address, tuple) and config.address[1] == 0):
                raise ConfigError(
                    "error updating listener '%s': the address cannot be changed (remove the "
                    "listener and add it under another name)" % (proto.name,))
            else:
                modified.append(config)
                if _onlyFilterChainsDiffer(known[0], proto):
                    inPlace[proto.name] = unchangedChains(known[0], proto)
        removed = [name for name in self.dynamic if name not in names]
        manager.applyUpdate(added, modified, removed, self._drainTimeS, inPlace)
        now = self._clock.seconds()
        for name in removed:
            proto, version, _ = self.dynamic.pop(name)
            self.draining[name] = (proto, version, now, now + self._drainTimeS)
        for config in added + modified:
            version = versionInfo
            if config.name in inPlace:
                # As Envoy dumps it: an in-place update keeps the version
                # the listener was added with.
                version = self.dynamic[config.name][1]
            self.dynamic[config.name] = (config.proto, version, now)

    def drainingNow(self):
        """
        The removed listeners still draining: C{{name: (proto, versionInfo,
        lastUpdated)}}, for C{/config_dump}'s C{draining_state}.
        """
        now = self._clock.seconds()
        for name, entry in list(self.draining.items()):
            if entry[3] <= now:
                del self.draining[name]
        return {name: entry[:3] for name, entry in self.draining.items()
                if name not in self.dynamic}


def chainKey(chain):
    """What identifies a filter chain across versions: its whole config."""
    return chain.SerializeToString(deterministic=True)


def unchangedChains(old, new):
    """
    The keys (L{chainKey}) of the filter chains C{new} keeps as they were
    in C{old}: their connections are not drained by an in-place update.
    """
    def keys(listener):
        chains = list(listener.filter_chains)
        if listener.HasField("default_filter_chain"):
            chains.append(listener.default_filter_chain)
        return {chainKey(c) for c in chains}

    return frozenset(keys(old) & keys(new))


def _onlyFilterChainsDiffer(old, new):
    """
    Whether Envoy updates the listener in place (C{listener_in_place_updated}):
    nothing but its filter chains changed.
    """
    copies = []
    for message in (old, new):
        copy = type(message)()
        copy.CopyFrom(message)
        copy.ClearField("filter_chains")
        copy.ClearField("default_filter_chain")
        copies.append(copy)
    return copies[0] == copies[1]
