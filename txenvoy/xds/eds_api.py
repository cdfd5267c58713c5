# -*- test-case-name: tests.xds.test_eds_api -*-
"""
EDS subscriptions (Envoy's C{EdsClusterImpl} subscribes through its
cluster manager's subscription factory): an C{EDS} cluster asks for its
C{ClusterLoadAssignment} by its service name from its C{eds_config}, and
is handed C{onConfigUpdate(resources, versionInfo)} by whichever transport
carries it (a file today). The cluster itself is
L{txenvoy.extensions.clusters.eds}.
"""

from txenvoy.xds.config_source import checkExists, fileSourceOf
from txenvoy.xds.discovery_file import ENDPOINT_TYPE, readDiscoveryResponse
from txenvoy.xds.path_subscription import FileSubscription


class EdsSubscriptionFactory:
    """
    Makes the subscription of each C{EDS} cluster.

    @ivar validateOnly: in C{--mode validate} a source is checked but no
        file is required to exist.
    """

    def __init__(self, reactor, unknownFields=None, validateOnly=False):
        """
        @param unknownFields: the L{txenvoy.xds.discovery_file.UnknownDynamicFields}
            policy.
        """
        self.reactor = reactor
        self._unknownFields = unknownFields
        self.validateOnly = validateOnly

    def subscribe(self, configSource, path, scope, onUpdate):
        """
        A subscription to C{configSource} counting in C{scope} (the
        cluster's C{cluster.<name>.}); not read yet (its C{refresh}
        reads, its C{start} watches).

        @raise ConfigError: a source txenvoy cannot read, or (serving) a
            file that is not there.
        @return: a L{FileSubscription}, or C{None} in validate mode.
        """
        source = fileSourceOf(configSource, path)
        if source is None:
            return None
        if self.validateOnly:
            return None
        checkExists(source)
        unknownFields = self._unknownFields
        return FileSubscription(
            self.reactor, source, scope,
            lambda p: readDiscoveryResponse(p, ENDPOINT_TYPE, unknownFields), onUpdate)
