# -*- test-case-name: tests.e2e.test_sni_cluster -*-
"""
C{envoy.filters.network.sni_cluster}: the connection's SNI (found by the
C{tls_inspector} listener filter, or by a TLS transport socket) names the
upstream cluster of the C{tcp_proxy} that follows.

As in Envoy, the name goes into the connection's filter state under
C{envoy.tcp_proxy.cluster}, which C{tcp_proxy} reads before its own
C{cluster}; a connection without SNI keeps the configured cluster, and
one whose SNI names no cluster is closed by C{tcp_proxy}
(C{downstream_cx_no_route}).
"""

from zope.interface import implementer

from envoy.extensions.filters.network.sni_cluster.v3 import sni_cluster_pb2  # noqa: F401

from txenvoy.config.registry import Category, extension
from txenvoy.interfaces import INetworkFilterFactory
from txenvoy.network.filter import NetworkFilter

__all__ = ["TCP_PROXY_CLUSTER", "SniClusterConfig", "SniClusterFilter"]

#: Envoy's filter state key of the cluster tcp_proxy connects to.
TCP_PROXY_CLUSTER = "envoy.tcp_proxy.cluster"


class SniClusterFilter(NetworkFilter):
    """Sets the connection's cluster from its SNI on connect."""

    def connectionMade(self):
        info = self.connection.streamInfo
        if info.requestedServerName:
            info.filterState[TCP_PROXY_CLUSTER] = info.requestedServerName
        NetworkFilter.connectionMade(self)


@implementer(INetworkFilterFactory)
class SniClusterConfig:
    """The (empty) C{SniCluster} config."""

    terminal = False

    def buildFilter(self, connection, nextProtocol):
        return SniClusterFilter(connection, nextProtocol)


@extension(Category.NETWORK_FILTER,
           "envoy.extensions.filters.network.sni_cluster.v3.SniCluster",
           "envoy.filters.network.sni_cluster", fields=())
def createSniCluster(message, context):
    """Compile a C{SniCluster} (it has no fields)."""
    return SniClusterConfig()
