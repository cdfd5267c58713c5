# -*- test-case-name: tests.xds.test_file_xds -*-
"""
C{dynamic_resources} from files: the CDS and LDS file subscriptions of a
server, read once while it is built (clusters first, as Envoy's CDS
initializes before LDS) and watched while it runs.
"""

from twisted.application.service import Service

from txenvoy.config.errors import ConfigError
from txenvoy.config.fields import checkFields
from txenvoy.xds.cds_api import CdsApi
from txenvoy.xds.config_source import DYNAMIC_FIELDS, checkExists, fileSourceOf
from txenvoy.xds.discovery_file import (
    CLUSTER_TYPE,
    LISTENER_TYPE,
    UnknownDynamicFields,
    readDiscoveryResponse,
)
from txenvoy.xds.lds_api import LdsApi
from txenvoy.xds.path_subscription import FileSubscription


class FileXds(Service):
    """
    The file subscriptions of one server.

    @ivar lds: the L{LdsApi}, or C{None}.
    @ivar cds: the L{CdsApi}, or C{None}.
    """

    def __init__(self, server, validateOnly=False):
        self.lds = self.cds = None
        self.subscriptions = []
        self._apis = []
        dynamic = server.bootstrap.dynamic_resources
        checkFields(dynamic, DYNAMIC_FIELDS, "dynamic_resources")
        if server.options.workerProcesses > 1:
            # Each worker process would watch the files by itself.
            raise ConfigError("dynamic_resources: not implemented with --worker-processes "
                              "above 1 (use --concurrency)")
        reactor = server.reactor
        stats = server.mainStats
        self._unknownFields = UnknownDynamicFields.ofServer(server)
        if dynamic.HasField("cds_config"):
            source = fileSourceOf(dynamic.cds_config, "dynamic_resources.cds_config")
            if source is not None and not validateOnly:
                checkExists(source)
                self.cds = CdsApi(server.clusterManager, reactor)
                self._apis.append(("cds", self.cds, self._subscribe(
                    reactor, source, stats.scope("cluster_manager.cds."), CLUSTER_TYPE,
                    self.cds.onConfigUpdate)))
        if dynamic.HasField("lds_config"):
            source = fileSourceOf(dynamic.lds_config, "dynamic_resources.lds_config")
            if source is not None and not validateOnly:
                checkExists(source)
                self.lds = LdsApi(server.listenerManager, server.context,
                                  server.options.drainTimeS, reactor)
                self._apis.append(("lds", self.lds, self._subscribe(
                    reactor, source, stats.scope("listener_manager.lds."), LISTENER_TYPE,
                    self.lds.onConfigUpdate)))

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
        under C{"lds_draining"} the removed listeners still draining.
        """
        state = {}
        for key, api, subscription in self._apis:
            state[key] = (subscription.lastVersion, dict(api.dynamic))
        if self.lds is not None:
            state["lds_draining"] = self.lds.drainingNow()
        return state

    def startService(self):
        Service.startService(self)
        for subscription in self.subscriptions:
            subscription.start()

    def stopService(self):
        Service.stopService(self)
        for subscription in self.subscriptions:
            subscription.stop()

