# -*- test-case-name: tests.xds.test_file_xds -*-
"""
C{dynamic_resources}: the CDS and LDS subscriptions of a server, to files
(read once while the server is built, clusters first, as Envoy's CDS
initializes before LDS, and watched while it runs) or to a control plane
(L{txenvoy.xds.control_plane}: CDS starts with the server, LDS once CDS
has its first update, and the workers wait for both, as Envoy's init
manager waits, or for their C{initial_fetch_timeout}). With worker
processes, the main process alone subscribes and each worker process
applies what it accepted (L{txenvoy.xds.process_mirror}).
"""

from twisted.application.service import Service
from twisted.internet import defer

from txenvoy.config.fields import checkFields
from txenvoy.xds.cds_api import CdsApi
from txenvoy.xds.config_source import DYNAMIC_FIELDS, checkExists, fileSourceOf
from txenvoy.xds.control_plane import ControlPlanes, isControlPlane
from txenvoy.xds.discovery_file import (
    CLUSTER_TYPE,
    LISTENER_TYPE,
    UnknownDynamicFields,
    readDiscoveryResponse,
)
from txenvoy.xds.lds_api import LdsApi
from txenvoy.xds.path_subscription import FileSubscription
from txenvoy.xds.process_mirror import CDS_KEY, LDS_KEY


class FileXds(Service):
    """
    The file subscriptions of one server.

    @ivar lds: the L{LdsApi}, or C{None}.
    @ivar cds: the L{CdsApi}, or C{None}.
    @ivar initialized: a Deferred firing once the control-plane
        subscriptions had their first update (or gave up waiting); at once
        for files.
    """

    def __init__(self, server, validateOnly=False):
        self._server = server
        self.lds = self.cds = None
        self.subscriptions = []
        self._apis = []
        self._remote = []
        self.initialized = defer.Deferred()
        dynamic = server.bootstrap.dynamic_resources
        checkFields(dynamic, DYNAMIC_FIELDS + ("ads_config",), "dynamic_resources")
        # The server's, shared with RDS, EDS and SDS; one of its own otherwise.
        self.controlPlanes = getattr(server, "controlPlanes", None) or ControlPlanes(server)
        reactor = server.reactor
        stats = server.mainStats
        self._unknownFields = UnknownDynamicFields.ofServer(server)
        factory = server.subscriptions
        self._relay, mirror = factory.relay, factory.mirror
        if mirror is not None and not validateOnly:
            # A worker process: the main process subscribes, and sends.
            self._mirrored(mirror, dynamic)
            return
        if dynamic.HasField("cds_config") and isControlPlane(dynamic.cds_config):
            self.cds = CdsApi(server.clusterManager, reactor)
            self._remoteSubscribe("cds", self.cds, dynamic.cds_config,
                                  "dynamic_resources.cds_config",
                                  stats.scope("cluster_manager.cds."), CLUSTER_TYPE)
        elif dynamic.HasField("cds_config"):
            source = fileSourceOf(dynamic.cds_config, "dynamic_resources.cds_config")
            if source is not None and not validateOnly:
                checkExists(source)
                self.cds = CdsApi(server.clusterManager, reactor)
                self._apis.append(("cds", self.cds, self._subscribe(
                    reactor, source, stats.scope("cluster_manager.cds."), CLUSTER_TYPE,
                    self._handler(CDS_KEY, self.cds))))
        if dynamic.HasField("lds_config") and isControlPlane(dynamic.lds_config):
            self.lds = LdsApi(server.listenerManager, server.context,
                              server.options.drainTimeS, reactor)
            self._remoteSubscribe("lds", self.lds, dynamic.lds_config,
                                  "dynamic_resources.lds_config",
                                  stats.scope("listener_manager.lds."), LISTENER_TYPE)
        elif dynamic.HasField("lds_config"):
            source = fileSourceOf(dynamic.lds_config, "dynamic_resources.lds_config")
            if source is not None and not validateOnly:
                checkExists(source)
                self.lds = LdsApi(server.listenerManager, server.context,
                                  server.options.drainTimeS, reactor)
                self._apis.append(("lds", self.lds, self._subscribe(
                    reactor, source, stats.scope("listener_manager.lds."), LISTENER_TYPE,
                    self._handler(LDS_KEY, self.lds))))

    def _mirrored(self, mirror, dynamic):
        """
        A worker process's LDS and CDS: the main process's updates, applied
        here as they come (the first while the server is built).
        """
        server = self._server
        if dynamic.HasField("cds_config"):
            self.cds = CdsApi(server.clusterManager, server.reactor)
            self._apis.append(("cds", self.cds, self._mirror(mirror, CDS_KEY, self.cds)))
        if dynamic.HasField("lds_config"):
            self.lds = LdsApi(server.listenerManager, server.context,
                              server.options.drainTimeS, server.reactor)
            self._apis.append(("lds", self.lds, self._mirror(mirror, LDS_KEY, self.lds)))

    def _mirror(self, mirror, key, api):
        subscription = mirror.subscribe(key, api.onConfigUpdate)
        subscription.refresh()
        self.subscriptions.append(subscription)
        return subscription

    def _handler(self, key, api):
        """C{api}'s handler, sent on to the worker processes when there are."""
        if self._relay is None:
            return api.onConfigUpdate
        return self._relay.wrap(key, api.onConfigUpdate)

    def _remoteSubscribe(self, key, api, source, path, scope, typeUrl):
        subscription, transport = self.controlPlanes.subscription(
            source, path, scope, typeUrl, self._handler(key, api))
        self._remote.append((subscription, transport))
        self._apis.append((key, api, subscription))

    def _subscribe(self, reactor, source, scope, typeUrl, onUpdate):
        unknownFields = self._unknownFields
        subscription = FileSubscription(
            reactor, source, scope,
            lambda path: readDiscoveryResponse(path, typeUrl, unknownFields), onUpdate)
        subscription.refresh()
        self.subscriptions.append(subscription)
        return subscription

    def dumpState(self):
        """
        What C{/config_dump} shows of LDS and CDS: C{{"lds"|"cds":
        (versionInfo, {name: (proto, versionInfo, lastUpdated)})}}, and
        under C{"lds_draining"} the removed listeners still draining,
        under C{"lds_warming"} and C{"cds_warming"} the names still warming.
        """
        state = {}
        for key, api, subscription in self._apis:
            state[key] = (subscription.lastVersion, dict(api.dynamic))
        if self.lds is not None:
            state["lds_draining"] = self.lds.drainingNow()
            state["lds_warming"] = self._server.listenerManager.warmingNames()
        if self.cds is not None:
            warming = self._server.clusterManager.warmingNames()
            state["cds_warming"] = warming
            state["cds_replaced"] = {n: e for n, e in self.cds.replaced.items()
                                     if n in warming}
        return state

    def startService(self):
        Service.startService(self)
        for subscription in self.subscriptions:
            subscription.start()
        self._startRemote(list(self._remote))

    def _startRemote(self, remaining):
        """
        Start each control-plane subscription once the one before it
        (CDS before LDS) had its first update, then fire L{initialized}.
        """
        if not self.running:
            return
        if not remaining:
            if not self.initialized.called:
                self.initialized.callback(None)
            return
        subscription, transport = remaining.pop(0)
        subscription.start(transport)
        d = subscription.initialized
        if subscription.typeUrl == CLUSTER_TYPE:
            # As Envoy's cluster manager init: the clusters of CDS's first
            # update warm (EDS, TLS secrets) before LDS is asked for.
            d.addCallback(lambda _: self._server.clusterManager.whenWarmed())
        d.addCallback(lambda _: self._startRemote(remaining))

    def stopService(self):
        Service.stopService(self)
        for subscription in self.subscriptions:
            subscription.stop()
        for subscription, _ in self._remote:
            subscription.stop()
        self.controlPlanes.stop()

