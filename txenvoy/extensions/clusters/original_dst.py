# -*- test-case-name: tests.extensions.clusters.test_original_dst -*-
"""
Envoy's C{ORIGINAL_DST} cluster (C{envoy.cluster.original_dst}) and its
C{CLUSTER_PROVIDED} load balancer: each connection or request goes to the
address it was originally sent to, learned from

 1. the request header named by C{original_dst_lb_config} (with
    C{use_http_header}; C{x-envoy-original-dst-host} by default), when the
    request has one and its value is C{ip:port} (otherwise
    C{original_dst_host_invalid} is counted and the next source is tried);
 2. else the downstream connection's local address, but only when a
    listener filter restored it (C{original_dst} after an iptables
    redirect, or a PROXY protocol header).

C{upstream_port_override} then replaces the port. With no address the pick
fails (tcp_proxy closes, the router answers 503 C{no healthy upstream}).

A worker makes the host it needs at once and posts it to the main thread,
which adds it to the membership and posts the new snapshot to every
worker. Every C{cleanup_interval} the main thread drops the hosts no
worker picked since the previous sweep and that have no open connection.
"""

from zope.interface import implementer

from txenvoy.config.registry import Category, extension
from txenvoy.interfaces import ILoadBalancer
from txenvoy.network.address import formatAddress, parseInternetAddressAndPort
from txenvoy.server.logging import componentLogger
from txenvoy.upstream.cluster import PrimaryCluster
from txenvoy.upstream.host import Host

log = componentLogger("upstream")


class OriginalDstCluster(PrimaryCluster):
    """
    The main thread's side: membership grows as workers post new hosts and
    shrinks at each cleanup.
    """

    # Each worker process makes its own hosts, from its own connections.
    sharedMembership = False

    _cleanupTimer = None

    def __init__(self, reactor, info, mainShard):
        PrimaryCluster.__init__(self, reactor, info, (), mainShard)
        self.settings = info.originalDst
        # address string -> picked since the last sweep. Workers set True,
        # the main thread reads and clears (one store each, no lock).
        self.used = {}

    def createLoadBalancer(self, threadLocal, rng=None):
        return OriginalDstLoadBalancer(self, threadLocal)

    def start(self):
        PrimaryCluster.start(self)
        self._cleanupTimer = self.reactor.callLater(self.settings.cleanupInterval,
                                                    self.cleanup)

    def stop(self):
        timer, self._cleanupTimer = self._cleanupTimer, None
        if timer is not None and timer.active():
            timer.cancel()
        PrimaryCluster.stop(self)

    def addHost(self, host):
        """
        A worker made C{host} (main thread, posted). A second host for an
        address already known (two workers raced) is kept too, as Envoy
        keeps it: it may be in that worker's pools.
        """
        if self._stopped:
            return
        if log.debugEnabled:
            log.debug("addHost() adding %s %s.", host.hostname, host.addressString)
        self.used[host.addressString] = True
        self.setHosts(self.hosts + (host,), membershipChanged=True)

    def cleanup(self):
        """
        Envoy's C{OriginalDstCluster::cleanup}: keep an address picked since
        the last sweep (and forget that it was), or one with a connection
        still open; drop the others. Then schedule the next sweep.
        """
        self._cleanupTimer = None
        if self._stopped:
            return
        used = self.used
        keep = {}
        for addr in {h.addressString for h in self.hosts}:
            if used.get(addr):
                used[addr] = False
                keep[addr] = True
            else:
                keep[addr] = False
        for h in self.hosts:
            if not keep[h.addressString] and h.stats("cx_active"):
                keep[h.addressString] = True
        kept = tuple(h for h in self.hosts if keep[h.addressString])
        if len(kept) != len(self.hosts):
            for addr, k in keep.items():
                if not k:
                    if log.debugEnabled:
                        log.debug("Removing stale address %s.", addr)
                    used.pop(addr, None)
            self.setHosts(kept, membershipChanged=True)
        self._cleanupTimer = self.reactor.callLater(self.settings.cleanupInterval,
                                                    self.cleanup)


@implementer(ILoadBalancer)
class OriginalDstLoadBalancer:
    """
    One worker's C{CLUSTER_PROVIDED} load balancer of an
    L{OriginalDstCluster}: a map from address to host, rebuilt from each
    snapshot the main thread posts, plus the hosts this worker made that
    the main thread has not posted back yet.
    """

    def __init__(self, cluster, threadLocal):
        self._cluster = cluster
        self._settings = cluster.settings
        self._clusterName = cluster.info.name
        self._invalid = threadLocal.stats.original_dst_host_invalid
        self._hostMap = {}
        self._pending = {}

    def setHosts(self, hosts):
        """A new snapshot from the main thread (this worker's thread)."""
        hostMap = {}
        for h in hosts:
            hostMap.setdefault(h.addressString, h)
        pending = self._pending
        for addr in [a for a in pending if a in hostMap]:
            del pending[addr]
        self._hostMap = hostMap

    def _destination(self, context):
        headerName = self._settings.httpHeaderName
        if headerName is not None:
            value = context.requestHeader(headerName)
            if value is not None:
                address = parseInternetAddressAndPort(value.decode("latin-1"))
                if address is not None:
                    return address
                if log.debugEnabled:
                    log.debug("original_dst_load_balancer: invalid override header value. %s",
                              value.decode("latin-1"))
                self._invalid.inc()
        connection = context.downstreamConnection
        if connection is not None and connection.localAddressRestored:
            return connection.localAddress
        return None

    def chooseHost(self, context=None):
        """
        @return: the L{Host} for the context's original destination (made
            now if new), or C{None} when there is none.
        """
        address = self._destination(context) if context is not None else None
        if address is None:
            if log.debugEnabled:
                log.debug("original_dst_load_balancer: No downstream connection or no "
                          "original_dst.")
            return None
        port = self._settings.portOverride
        if port is not None:
            address = (address[0], port)
        addr = formatAddress(address)
        host = self._hostMap.get(addr) or self._pending.get(addr)
        if host is not None:
            self._cluster.used[addr] = True
            return host
        host = Host(address, hostname=self._clusterName + addr, clusterName=self._clusterName)
        if log.debugEnabled:
            log.debug("Created host %s %s.", host.hostname, addr)
        self._pending[addr] = host
        self._cluster.reactor.callFromThread(self._cluster.addHost, host)
        return host


@extension(Category.CLUSTER, None, "envoy.cluster.original_dst")
def createOriginalDstCluster(info, context):
    """Build an L{OriginalDstCluster} on the main reactor."""
    return OriginalDstCluster(context.reactor, info, context.mainShard)
