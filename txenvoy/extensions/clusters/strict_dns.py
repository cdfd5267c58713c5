# -*- test-case-name: tests.extensions.clusters.test_dns_clusters -*-
"""
Envoy's C{STRICT_DNS} cluster (C{envoy.cluster.strict_dns}): every
endpoint is resolved on its own schedule and makes one host per address
returned; a host whose address is unchanged across resolutions is kept
(with its stats).
"""

from txenvoy.config.registry import Category, extension
from txenvoy.upstream.dns import DnsClusterBase


class StrictDnsCluster(DnsClusterBase):
    """
    A C{STRICT_DNS} cluster: one host per resolved address of every
    endpoint.
    """

    def applyAnswer(self, target, ips):
        ep = target.endpoint
        old = {h.address[0]: h for h in target.hosts}
        hostname = ep.hostname or ep.address
        new = []
        for ip in ips:
            h = old.get(ip)
            if h is None:
                h = ep.makeHost(self.info.name, ip=ip, hostname=hostname)
            new.append(h)
        changed = [h.address[0] for h in target.hosts] != ips
        target.hosts = new
        if changed:
            hosts = []
            for t in self.targets:
                hosts.extend(t.hosts)
            self.stats.max_host_weight.set(max((h.weight for h in hosts), default=0))
            self.setHosts(hosts, membershipChanged=True)


@extension(Category.CLUSTER, None, "envoy.cluster.strict_dns")
def createStrictDnsCluster(info, context):
    """Build a L{StrictDnsCluster} on the main reactor."""
    return StrictDnsCluster(context.reactor, info, context.endpoints, context.mainShard,
                            context.dnsResolver, context.rng)
