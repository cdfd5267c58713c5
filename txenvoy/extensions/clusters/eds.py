# -*- test-case-name: tests.extensions.clusters.test_eds -*-
"""
Envoy's C{EDS} cluster (C{envoy.cluster.eds}): its hosts are the
C{ClusterLoadAssignment} its subscription gives (priorities, localities
and their weights, endpoint weights and health status), replaced whole on
each update. A host whose endpoint is unchanged is kept, with its health
check state and stats. An update for another cluster, with more than one
assignment or an invalid endpoint is rejected whole and the hosts stay.
"""

import time

from txenvoy.config.errors import ConfigError, collectErrors
from txenvoy.config.registry import Category, extension
from txenvoy.upstream.cluster import EDS, PrimaryCluster, _localityWeights, compileLoadAssignment
from txenvoy.upstream.host import DEGRADED_EDS_HEALTH, FAILED_EDS_HEALTH, Host
from txenvoy.xds.resources import ENDPOINT_TYPE
from txenvoy.xds.subscription_factory import weakHandler

_EDS_FLAGS = frozenset([FAILED_EDS_HEALTH, DEGRADED_EDS_HEALTH])


def _membership(clusterName, known):
    """
    What L{compileLoadAssignment} makes of each endpoint of an update, in
    its one pass over them: the host, kept from C{known} (C{{key: Host}} of
    the hosts in use) when its endpoint is unchanged, else a new one.

    What makes a host the same one across updates is its address and
    priority, and what it is (locality, names, metadata); its weight and
    health status may change in place, which is only noted: the update
    may still be rejected.

    @return: C{(make, byEndpoint, created, inPlace)}: C{make} takes
        L{EndpointSpec}'s arguments; C{byEndpoint} the C{{key: Host}} of
        the update; C{created} the priorities that new hosts joined;
        C{inPlace} C{[(host, weight, health status, flags)]}.
    """
    byEndpoint, created, inPlace = {}, set(), []
    find = known.get
    newPriority = created.add
    changed = inPlace.append

    def make(address, port, hostname, weight, priority, locality, flags, status, path,
             healthCheck, hashKey, metadata, filterMetadata):
        key = (address, port, priority, hostname, locality, healthCheck, hashKey,
               repr(metadata) if metadata else "", repr(filterMetadata) if filterMetadata else "")
        host = find(key)
        if host is None or key in byEndpoint:
            host = Host((address, port), hostname, weight, priority, locality, clusterName, flags,
                        status, healthCheck[0], healthCheck[1], healthCheck[2], hashKey, metadata,
                        bool(metadata) and metadata.get("canary", ("",))[0] == "true",
                        filterMetadata)
            newPriority(priority)
        elif (host.weight != weight or host.edsHealthStatus() != status
              or host.healthFlagSet() & _EDS_FLAGS != frozenset(flags)):
            changed((host, weight, status, flags))
        byEndpoint[key] = host
        return host

    return make, byEndpoint, created, inPlace


class EdsCluster(PrimaryCluster):
    """
    An C{EDS} cluster.

    @ivar assignment: the C{ClusterLoadAssignment} in use, or C{None}.
    @ivar versionInfo: the C{version_info} it came with.
    @ivar lastUpdated: its wall-clock time.
    """

    def __init__(self, reactor, info, mainShard, subscriptions, path):
        PrimaryCluster.__init__(self, reactor, info, [], mainShard)
        configSource, self.serviceName = info.edsConfig
        scope = mainShard.scope(info.statPrefix)
        self._updateEmpty = scope.counter("update_empty")
        self._noRebuild = scope.counter("update_no_rebuild")
        self.assignment = None
        self.versionInfo = None
        self.lastUpdated = None
        self._byEndpoint = {}
        # Whether the hosts in use came from endpoints all different, so
        # that the same assignment again changes nothing.
        self._distinct = False
        self.subscription = None
        if subscriptions is not None:
            self.subscription = subscriptions.subscribe(
                configSource, path + ".eds_cluster_config.eds_config", scope, ENDPOINT_TYPE,
                weakHandler(self.onConfigUpdate), self.serviceName)

    def start(self):
        """
        Read the assignment (from a file), then watch it; initialized after
        that first read. From a control plane, the cluster warms until the
        first assignment arrives (or is rejected, or C{initial_fetch_timeout}
        passes), as Envoy's EDS cluster initializes.
        """
        if self.subscription is not None:
            # A first read that fails leaves the cluster empty, yet
            # initialized, as Envoy lets the server start.
            self.subscription.refresh()
            self.subscription.start()
            warming = getattr(self.subscription, "initialized", None)
            if warming is not None:
                warming.addCallback(self._warmed)
                return
        PrimaryCluster.start(self)

    def _warmed(self, ignored):
        if not self._stopped:
            PrimaryCluster.start(self)

    def stop(self):
        if self.subscription is not None:
            self.subscription.stop()
        PrimaryCluster.stop(self)

    def onConfigUpdate(self, resources, versionInfo):
        """
        Apply a state-of-the-world update.

        @raise ConfigError: the update is rejected; the hosts stay.
        """
        if not resources:
            self._updateEmpty.inc()
            return
        if len(resources) != 1:
            raise ConfigError("Unexpected EDS resource length: %d" % (len(resources),))
        assignment = resources[0]
        if assignment.cluster_name != self.serviceName:
            raise ConfigError("Unexpected EDS cluster (expecting %s): %s"
                              % (self.serviceName, assignment.cluster_name))
        if self._distinct and assignment == self.assignment:
            # What the update would find: every host kept as it is.
            # (Duplicate endpoints would make new hosts again.)
            self.versionInfo = versionInfo
            self.lastUpdated = time.time()
            self._noRebuild.inc()
            return
        make, byEndpoint, created, inPlace = _membership(self.info.name, self._byEndpoint)
        with collectErrors():
            hosts = compileLoadAssignment(assignment, "resources[0]", EDS, make)
        lbConfig = self.info.lbConfig
        factor = lbConfig.overprovisioningFactor
        policy = assignment.policy
        if policy.HasField("overprovisioning_factor"):
            factor = policy.overprovisioning_factor.value
            if factor < 1:
                raise ConfigError("resources[0].policy.overprovisioning_factor: value must be "
                                  "greater than 0")
        for host, weight, status, flags in inPlace:
            # As Envoy: the host stays (its active health state and
            # stats too); its weight and EDS health change.
            host.weight = weight
            host.setEdsHealthStatus(status, flags)
        now = time.time()
        self.assignment = assignment
        self.versionInfo = versionInfo
        self.lastUpdated = now
        weights = _localityWeights(assignment) if lbConfig.localityWeights is not None else None
        # Envoy counts a membership change per priority whose hosts were
        # added or removed: the priorities new hosts joined, and those of
        # the hosts not kept.
        kept = {id(h) for h in hosts}
        changedPriorities = len(created.union(
            h.priority for h in self.hosts if id(h) not in kept))
        if (not changedPriorities and not inPlace and factor == lbConfig.overprovisioningFactor
                and weights == lbConfig.localityWeights):
            self._noRebuild.inc()
            return
        # Read by each worker's load balancer when the new hosts reach it.
        lbConfig.overprovisioningFactor = factor
        if weights is not None:
            lbConfig.localityWeights = weights
        self._byEndpoint = byEndpoint
        self._distinct = len(byEndpoint) == len(hosts)
        self.stats.max_host_weight.set(max((h.weight for h in hosts), default=0))
        self.setHosts(hosts, membershipChanged=bool(changedPriorities))
        for ignored in range(changedPriorities - 1):
            self.stats.membership_change.inc()


@extension(Category.CLUSTER, None, "envoy.cluster.eds")
def createEdsCluster(info, context):
    """Build an L{EdsCluster} subscribed through the cluster manager's factory."""
    return EdsCluster(context.reactor, info, context.mainShard, context.edsSubscriptions,
                      context.path)
