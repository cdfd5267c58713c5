# -*- test-case-name: tests.e2e.test_dynamic_forward_proxy -*-
"""
Envoy's dynamic forward proxy cluster (C{cluster_type}
C{envoy.clusters.dynamic_forward_proxy}) and its C{CLUSTER_PROVIDED} load
balancer: a request goes to the address the DNS cache
(L{txenvoy.extensions.common.dns_cache}) holds for its C{:authority}
(port 80 by default, 443 for a TLS cluster), a TCP connection to the one
it holds for its SNI and the C{sni_dynamic_forward_proxy}'s port; a host
not resolved yet has no upstream (the filters resolve it first).

A worker makes the host it needs at once and posts it to the main thread,
which adds it to the membership, as the original destination cluster
does.
"""

from zope.interface import implementer

from txenvoy.config.registry import Category, extension
from txenvoy.extensions.common.dns_cache import getDnsCache, splitHost
from txenvoy.interfaces import ILoadBalancer
from txenvoy.network.address import formatAddress
from txenvoy.upstream.cluster import PrimaryCluster
from txenvoy.upstream.host import Host

__all__ = ["DynamicForwardProxyCluster", "DynamicForwardProxyLoadBalancer"]


class DynamicForwardProxyCluster(PrimaryCluster):
    """The main thread's side: hosts are added as workers make them."""

    sharedMembership = False

    def __init__(self, reactor, info, mainShard, resolver):
        PrimaryCluster.__init__(self, reactor, info, (), mainShard)
        self.dnsCache = getDnsCache(reactor, mainShard, info.dnsCacheConfig, resolver)
        self.defaultPort = 443 if info.transportSocket is not None else 80

    def createLoadBalancer(self, threadLocal, rng=None):
        return DynamicForwardProxyLoadBalancer(self)

    def addHost(self, host):
        """A worker made C{host} (main thread, posted)."""
        if not self._stopped:
            self.setHosts(self.hosts + (host,), membershipChanged=True)


@implementer(ILoadBalancer)
class DynamicForwardProxyLoadBalancer:
    """One worker's load balancer: host by the request's authority."""

    def __init__(self, cluster):
        self._cluster = cluster
        self._name = cluster.info.name
        self._hostMap = {}
        self._pending = {}

    def setHosts(self, hosts):
        """A new snapshot from the main thread."""
        hostMap = {h.addressString: h for h in hosts}
        for addr in [a for a in self._pending if a in hostMap]:
            del self._pending[addr]
        self._hostMap = hostMap

    def chooseHost(self, context=None):
        """
        @return: the L{Host} of the request's authority, or C{None} when
            the DNS cache has no address for it.
        """
        if context is None:
            return None
        cluster = self._cluster
        if context.downstreamHeaders is not None:
            authority = context.requestHeader(b":authority")
            if not authority:
                return None
            host, port = splitHost(authority.decode("latin-1"), cluster.defaultPort)
        else:
            # TCP (sni_dynamic_forward_proxy): the SNI, and the port the
            # filter put in the filter state.
            connection = context.downstreamConnection
            info = connection.streamInfo if connection is not None else None
            host = info.requestedServerName if info is not None else ""
            if not host:
                return None
            port = info.filterState.get("envoy.upstream.dynamic_port", cluster.defaultPort)
        entry = cluster.dnsCache.lookup(host, port)
        if entry is None or entry.address is None:
            return None
        addr = formatAddress(entry.address)
        found = self._hostMap.get(addr) or self._pending.get(addr)
        if found is not None:
            return found
        found = self._pending[addr] = Host(entry.address, hostname=host, clusterName=self._name)
        cluster.reactor.callFromThread(cluster.addHost, found)
        return found


@extension(Category.CLUSTER, None, "envoy.clusters.dynamic_forward_proxy")
def createDynamicForwardProxyCluster(info, context):
    """Build a L{DynamicForwardProxyCluster} on the main reactor."""
    return DynamicForwardProxyCluster(context.reactor, info, context.mainShard,
                                      context.dnsResolver)
