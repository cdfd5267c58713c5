# -*- test-case-name: tests.extensions.clusters.test_dns_clusters -*-
"""
Envoy's C{LOGICAL_DNS} cluster (C{envoy.cluster.logical_dns}): one
endpoint, one host, whose address is the first one returned; a new answer
changes the address of the same host, so membership does not churn with
round-robin DNS.
"""

from txenvoy.config.registry import Category, extension
from txenvoy.upstream.dns import DnsClusterBase


class LogicalDnsCluster(DnsClusterBase):
    """
    A C{LOGICAL_DNS} cluster: one host for the single endpoint, at the
    first address DNS returned most recently.
    """

    def applyAnswer(self, target, ips):
        if not ips:
            # Envoy keeps the logical host when an answer is empty.
            return
        ep = target.endpoint
        if not target.hosts:
            host = ep.makeHost(self.info.name, ip=ips[0], hostname=ep.hostname or ep.address)
            target.hosts = [host]
            self.stats.max_host_weight.set(host.weight)
            self.setHosts(target.hosts, membershipChanged=True)
        else:
            host = target.hosts[0]
            if host.address[0] != ips[0]:
                host.setAddress((ips[0], ep.port))
                # Worker threads read the new address from the host; worker
                # processes need the host set again.
                self._post(self.hosts)


@extension(Category.CLUSTER, None, "envoy.cluster.logical_dns")
def createLogicalDnsCluster(info, context):
    """Build a L{LogicalDnsCluster} on the main reactor."""
    return LogicalDnsCluster(context.reactor, info, context.endpoints, context.mainShard,
                             context.dnsResolver, context.rng)
