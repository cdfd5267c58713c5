# -*- test-case-name: tests.xds.test_rds_api -*-
"""
RDS (Envoy's C{RdsRouteConfigSubscription} and
C{RouteConfigProviderManagerImpl}): an C{HttpConnectionManager} whose
C{rds} names a route configuration gets its route table from a
subscription, shared by every connection manager naming the same
C{config_source} and C{route_config_name}.

An update swaps the table of each connection manager at once; a stream
keeps the table it started with (Envoy's snapped route config), so an
update touches only new streams. An update that does not compile, names
another route configuration or holds more than one is rejected whole and
the previous table keeps serving.

The subscription is handed C{onConfigUpdate(resources, versionInfo)} by
whichever transport carries it, so it is the same for any. It lives as
long as a connection manager it feeds: once the last listener using it is
gone (drained, or never used because its update was rejected) it stops,
and a control plane is no longer asked for its route configuration.
"""

import time
import weakref

from twisted.application.service import Service
from twisted.internet import defer

from txenvoy.config.errors import ConfigError, collectErrors
from txenvoy.config.fields import checkFields
from txenvoy.router.config import RouteTable
from txenvoy.xds.resources import ROUTE_TYPE
from txenvoy.xds.subscription_factory import weakHandler


class RdsRouteConfigSubscription:
    """
    One route configuration, by name, from one config source.

    @ivar routeTable: the current L{RouteTable}, or C{None} before the
        first update (every request then gets C{404}, as Envoy's empty
        route configuration).
    @ivar proto: the C{RouteConfiguration} it was compiled from.
    @ivar versionInfo: the C{version_info} that last changed it.
    @ivar lastUpdated: its wall-clock time.
    """

    def __init__(self, name, scope, onUnused=None):
        """
        @param onUnused: called with this subscription, from whatever
            thread drops the last reference to a connection manager it
            fed, when none is left (Envoy's provider, shared by reference
            count, destroyed with the last listener using it).
        """
        self.name = name
        self.routeTable = None
        self.proto = None
        self.versionInfo = None
        self.lastUpdated = None
        self.subscription = None
        # The connection managers fed; those whose listener is gone drop out.
        self._managers = weakref.WeakKeyDictionary()
        self._onUnused = onUnused
        self._refs = set()
        self._updateEmpty = scope.counter("update_empty")
        self._configReload = scope.counter("config_reload")
        self._configReloadTime = scope.gauge("config_reload_time_ms")

    def attach(self, managerConfig, precompile):
        """
        Feed C{managerConfig.routeTable} from now on.

        @param precompile: C{f(routeTable)} compiling what the connection
            manager's filters keep per route; raises L{ConfigError}.
        """
        self._managers[managerConfig] = precompile
        self._refs.add(weakref.ref(managerConfig, self._managerGone))
        if self.routeTable is not None:
            precompile(self.routeTable)
        managerConfig.routeTable = self.routeTable

    def whenReady(self):
        """
        A Deferred firing once the first update was applied or rejected,
        or C{initial_fetch_timeout} passed (at once for a file, read when
        the subscription was made): what a listener warms on.
        """
        initialized = getattr(self.subscription, "initialized", None)
        if initialized is None:
            return defer.succeed(None)
        d = defer.Deferred()

        def fire(result):
            if not d.called:
                d.callback(None)
            return result
        initialized.addBoth(fire)
        return d

    def _managerGone(self, ref):
        self._refs.discard(ref)
        if not self._refs and self._onUnused is not None:
            self._onUnused(self)

    def managers(self):
        """The connection manager configs fed now."""
        return list(self._managers.keys())

    def onConfigUpdate(self, resources, versionInfo):
        """
        Apply a state-of-the-world update.

        @raise ConfigError: the update is rejected; nothing changed.
        """
        if not resources:
            # As Envoy: counted, and the table in use stays.
            self._updateEmpty.inc()
            return
        if len(resources) != 1:
            raise ConfigError("Unexpected RDS resource length: %d" % (len(resources),))
        proto = resources[0]
        if proto.name != self.name:
            raise ConfigError("Unexpected RDS configuration (expecting %s): %s"
                              % (self.name, proto.name))
        if proto == self.proto:
            return
        # Envoy's default for RDS: validate_clusters is false, a route to an
        # unknown cluster answers 503 when used.
        with collectErrors():
            table = RouteTable.fromProto(proto, "resources[0]")
        managers = list(self._managers.items())
        with collectErrors():
            for managerConfig, precompile in managers:
                precompile(table)
        # Each stream holds the table it started with.
        self.routeTable = table
        for managerConfig, ignored in managers:
            managerConfig.routeTable = table
        now = time.time()
        self.proto = proto
        self.versionInfo = versionInfo
        self.lastUpdated = now
        self._configReload.inc()
        self._configReloadTime.set(int(now * 1000))


class RouteConfigProviderManager(Service):
    """
    The RDS subscriptions of one server, one per distinct C{rds} message
    (config source and route configuration name), as Envoy shares them.
    """

    def __init__(self, subscriptions, stats):
        """
        @param subscriptions: the server's
            L{txenvoy.xds.subscription_factory.SubscriptionFactory}.
        """
        self._factory = subscriptions
        self._stats = stats
        self._subscriptions = {}

    def subscribe(self, rds, statPrefix, path):
        """
        The subscription for an C{Rds} message, created (and read once) the
        first time it is named.

        @param statPrefix: the connection manager's C{http.<prefix>.}; the
            stats are C{<statPrefix>rds.<route_config_name>.*}, under the
            prefix of the first connection manager that named it.
        @param path: the C{rds} field path, for messages.
        @return: an L{RdsRouteConfigSubscription}, or C{None} in validate
            mode.
        @raise ConfigError: a source txenvoy cannot read.
        """
        checkFields(rds, ("config_source", "route_config_name"), path)
        if not rds.HasField("config_source"):
            raise ConfigError("%s.config_source: value is required" % (path,))
        key = rds.SerializeToString(deterministic=True)
        rdsSubscription = self._subscriptions.get(key)
        if rdsSubscription is not None:
            return rdsSubscription
        name = rds.route_config_name
        scope = self._stats.scope("%srds.%s." % (statPrefix, name))
        rdsSubscription = RdsRouteConfigSubscription(
            name, scope, lambda unused: self._factory.reactor.callFromThread(
                self._release, key, unused))
        subscription = self._factory.subscribe(
            rds.config_source, path + ".config_source", scope, ROUTE_TYPE,
            weakHandler(rdsSubscription.onConfigUpdate), name)
        if subscription is None:
            return None
        rdsSubscription.subscription = subscription
        self._subscriptions[key] = rdsSubscription
        subscription.refresh()
        if self.running:
            subscription.start()
        return rdsSubscription

    def _release(self, key, rdsSubscription):
        """
        Stop a subscription no listener uses any more (its last one was
        removed and drained, or a rejected update compiled it): RDS then
        asks the control plane for the names still used, as Envoy does.
        """
        if self._subscriptions.get(key) is not rdsSubscription or rdsSubscription.managers():
            return
        del self._subscriptions[key]
        rdsSubscription.subscription.stop()

    def dumpState(self):
        """
        What C{/config_dump} shows as C{dynamic_route_configs}: C{[(proto,
        versionInfo, lastUpdated)]} of each subscription that has a route
        configuration and still feeds a connection manager.
        """
        return [(s.proto, s.versionInfo, s.lastUpdated)
                for s in self._subscriptions.values()
                if s.proto is not None and s.managers()]

    def startService(self):
        Service.startService(self)
        for s in self._subscriptions.values():
            s.subscription.start()

    def stopService(self):
        Service.stopService(self)
        for s in self._subscriptions.values():
            s.subscription.stop()
