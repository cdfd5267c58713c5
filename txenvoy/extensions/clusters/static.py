# -*- test-case-name: tests.extensions.clusters.test_static -*-
"""
Envoy's C{STATIC} cluster (C{envoy.cluster.static}): the configured IP
addresses, known at once.
"""

from txenvoy.config.registry import Category, extension
from txenvoy.upstream.cluster import PrimaryCluster


class StaticCluster(PrimaryCluster):
    """A C{STATIC} cluster: the configured IPs, known at once."""

    def __init__(self, reactor, info, endpoints, mainShard):
        PrimaryCluster.__init__(self, reactor, info, endpoints, mainShard)
        hosts = [ep.makeHost(info.name) for ep in endpoints]
        # Envoy counts a membership change for a non-empty static cluster
        # and leaves max_host_weight at 0 (only dynamic updates set it).
        self.setHosts(hosts, membershipChanged=bool(hosts))


@extension(Category.CLUSTER, None, "envoy.cluster.static")
def createStaticCluster(info, context):
    """Build a L{StaticCluster}."""
    return StaticCluster(context.reactor, info, context.endpoints, context.mainShard)
