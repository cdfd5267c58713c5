# -*- test-case-name: tests.e2e.test_udp_proxy -*-
"""
C{envoy.filters.udp_listener.udp_proxy}: datagrams from each downstream
source address make a session with one upstream host of the route's
cluster, over a UDP socket of its own; what the host answers goes back to
that source from the listener's address.

Behaviour copied from Envoy 1.40 (pinned in C{tests/e2e/test_udp_proxy.py}):

 - the cluster is the C{matcher}'s C{on_no_match} C{Route} (or the
   deprecated C{cluster}); a cluster that does not exist, or without a
   healthy host, drops the datagram (C{downstream_sess_no_route} /
   the cluster's C{upstream_cx_none_healthy});
 - the host is picked once per session by the cluster's load balancer,
   with the hash of C{hash_policies} (C{source_ip}: the source IP;
   C{key}: the key) for RING_HASH and MAGLEV clusters;
 - a session ends after C{idle_timeout} (60 s by default) without a
   datagram either way (C{idle_timeout});
 - stats C{udp.<stat_prefix>.} C{downstream_sess_total},
   C{downstream_sess_active}, C{downstream_sess_rx_datagrams} / C{_bytes}
   / C{_errors}, C{downstream_sess_tx_*}, C{downstream_sess_no_route},
   C{idle_timeout}, C{session_filter_config_missing}, and the cluster's
   C{udp.sess_rx_datagrams}, C{udp.sess_tx_datagrams} (and their errors
   and drops) and C{upstream_cx_rx_bytes_total} / C{upstream_cx_tx_bytes_total}.
"""

from twisted.internet.protocol import DatagramProtocol
from zope.interface import implementer

from envoy.extensions.filters.udp.udp_proxy.v3 import route_pb2, udp_proxy_pb2  # noqa: F401

from txenvoy.config.errors import ConfigError, UnsupportedField
from txenvoy.config.fields import checkFields, durationSeconds
from txenvoy.config.registry import Category, extension, unpackAny
from txenvoy.stats.per_worker import StatsStruct, perWorkerMethod
from txenvoy.upstream.hashing import xxHash64
from txenvoy.upstream.load_balancer_context import LoadBalancerContext

__all__ = ["UdpProxyConfig", "UdpProxyFilter"]

_COUNTERS = ("downstream_sess_no_route", "downstream_sess_rx_bytes",
             "downstream_sess_rx_datagrams", "downstream_sess_rx_errors",
             "downstream_sess_total", "downstream_sess_tx_bytes", "downstream_sess_tx_datagrams",
             "downstream_sess_tx_errors", "idle_timeout", "session_filter_config_missing")
_GAUGES = ("downstream_sess_active",)
_CLUSTER_COUNTERS = ("sess_rx_datagrams", "sess_rx_datagrams_dropped", "sess_rx_errors",
                     "sess_tunnel_buffer_overflow", "sess_tunnel_failure",
                     "sess_tunnel_success", "sess_tx_datagrams", "sess_tx_errors")
_ROUTE = "envoy.extensions.filters.udp.udp_proxy.v3.Route"

DEFAULT_IDLE_TIMEOUT = 60.0


class _Session(DatagramProtocol):
    """One downstream source and its upstream socket."""

    def __init__(self, proxy, peer, host, clusterStats, clusterUdp):
        self.proxy = proxy
        self.peer = peer
        self.host = host
        self._clusterStats = clusterStats
        self._clusterUdp = clusterUdp
        self._timer = None
        self.port = None

    def start(self, reactor):
        ip = self.host.address[0]
        self.port = reactor.listenUDP(0, self, interface="::" if ":" in ip else "0.0.0.0")
        self.port.connect(*self.host.address)
        self._touch()

    def _touch(self):
        timer = self._timer
        timeout = self.proxy.config.idleTimeout
        if timer is not None and timer.active():
            timer.reset(timeout)
        else:
            self._timer = self.proxy.dispatcher.reactor.callLater(timeout, self._onIdle)

    def send(self, data):
        """A datagram from downstream to the host."""
        self._touch()
        try:
            self.transport.write(data)
        except OSError:
            self._clusterUdp.sess_tx_errors.inc()
            return
        self._clusterUdp.sess_tx_datagrams.inc()
        self._clusterStats.upstream_cx_tx_bytes_total.inc(len(data))

    def datagramReceived(self, data, addr):
        self._touch()
        self._clusterUdp.sess_rx_datagrams.inc()
        self._clusterStats.upstream_cx_rx_bytes_total.inc(len(data))
        proxy = self.proxy
        stats = proxy.stats
        if proxy.listener.send(data, self.peer):
            stats.downstream_sess_tx_datagrams.inc()
            stats.downstream_sess_tx_bytes.inc(len(data))
        else:
            stats.downstream_sess_tx_errors.inc()

    def connectionRefused(self):
        # ICMP port unreachable from the host: Envoy counts a receive error.
        self._clusterUdp.sess_rx_errors.inc()

    def _onIdle(self):
        self._timer = None
        self.proxy.stats.idle_timeout.inc()
        self.proxy.endSession(self)

    def close(self):
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        port, self.port = self.port, None
        if port is not None:
            port.stopListening()


class UdpProxyFilter:
    """One worker's udp_proxy: its sessions by downstream source."""

    def __init__(self, config, dispatcher, listener):
        self.config = config
        self.dispatcher = dispatcher
        self.listener = listener
        self.stats = config.statsFor(dispatcher)
        self.sessions = {}

    def onData(self, data, peer):
        """A datagram from C{peer} to the listener."""
        session = self.sessions.get(peer)
        if session is None:
            session = self._newSession(peer)
            if session is None:
                # Envoy counts a datagram in its session: none, no count.
                return
        stats = self.stats
        stats.downstream_sess_rx_datagrams.inc()
        stats.downstream_sess_rx_bytes.inc(len(data))
        session.send(data)

    def _newSession(self, peer):
        config = self.config
        dispatcher = self.dispatcher
        cluster = dispatcher.clusterManager.getThreadLocalCluster(config.cluster)
        if cluster is None:
            self.stats.downstream_sess_no_route.inc()
            return None
        hashKey = config.hashOf(peer)
        host = cluster.chooseHost(LoadBalancerContext(None, None, hashKey))
        if host is None:
            cluster.stats.upstream_cx_none_healthy.inc()
            return None
        stats = self.stats
        stats.downstream_sess_total.inc()
        stats.downstream_sess_active.inc()
        session = _Session(self, peer, host, cluster.stats, config.clusterUdpStats(
            dispatcher, cluster))
        session.start(dispatcher.reactor)
        self.sessions[peer] = session
        return session

    def endSession(self, session):
        if self.sessions.get(session.peer) is session:
            del self.sessions[session.peer]
            self.stats.downstream_sess_active.dec()
        session.close()

    def stop(self):
        """The listener stopped: end every session."""
        for session in list(self.sessions.values()):
            self.endSession(session)


class UdpProxyConfig:
    """A compiled C{UdpProxyConfig}; makes one filter per worker."""

    statsFor = perWorkerMethod(lambda self, d: StatsStruct(
        d.stats, self.statPrefix, counters=_COUNTERS, gauges=_GAUGES))

    def __init__(self, statPrefix, cluster, idleTimeout, hashPolicy):
        self.statPrefix = "udp.%s." % (statPrefix,)
        self.cluster = cluster
        self.idleTimeout = idleTimeout
        self._hashPolicy = hashPolicy
        self._clusterUdp = {}

    def hashOf(self, peer):
        """The session's hash key (C{hash_policies}), or C{None}."""
        policy = self._hashPolicy
        if policy is None:
            return None
        kind, key = policy
        return xxHash64((peer[0] if kind == "source_ip" else key).encode("utf-8"))

    def clusterUdpStats(self, dispatcher, cluster):
        """C{cluster.<name>.udp.*} on this worker."""
        key = (dispatcher.name, self.cluster)
        stats = self._clusterUdp.get(key)
        if stats is None:
            stats = self._clusterUdp[key] = StatsStruct(
                dispatcher.stats, "cluster.%s.udp." % (self.cluster,), counters=_CLUSTER_COUNTERS)
        return stats

    def createUdpFilter(self, dispatcher, listener):
        return UdpProxyFilter(self, dispatcher, listener)


def _routeCluster(message, path):
    """The cluster of the C{matcher}: its C{on_no_match} C{Route}."""
    matcher = message.matcher
    mpath = path + ".matcher"
    checkFields(matcher, ("on_no_match",), mpath)
    action = matcher.on_no_match
    checkFields(action, ("action",), mpath + ".on_no_match")
    apath = mpath + ".on_no_match.action.typed_config"
    typeName = action.action.typed_config.type_url.rsplit("/", 1)[-1]
    if typeName != _ROUTE:
        raise UnsupportedField(apath, "only %s" % (_ROUTE,))
    route = unpackAny(action.action.typed_config, apath)
    if not route.cluster:
        raise ConfigError("%s.cluster: value length must be at least 1 characters" % (apath,))
    return route.cluster


@extension(Category.UDP_LISTENER_FILTER,
           "envoy.extensions.filters.udp.udp_proxy.v3.UdpProxyConfig",
           "envoy.filters.udp_listener.udp_proxy",
           fields=("stat_prefix", "cluster", "matcher", "idle_timeout", "hash_policies"))
def createUdpProxy(message, context):
    """Compile a C{UdpProxyConfig}."""
    path = context.configPath
    if not message.stat_prefix:
        raise ConfigError("%s.stat_prefix: value length must be at least 1 characters" % (path,))
    which = message.WhichOneof("route_specifier")
    if which == "matcher":
        cluster = _routeCluster(message, path)
    elif which == "cluster":
        cluster = message.cluster
    else:
        raise ConfigError("%s: UdpProxyConfigValidationError.RouteSpecifier: value is required"
                          % (path,))
    idle = (durationSeconds(message.idle_timeout) if message.HasField("idle_timeout")
            else DEFAULT_IDLE_TIMEOUT)
    policy = None
    if len(message.hash_policies) > 1:
        raise ConfigError("%s.hash_policies: value must contain no more than 1 item(s)" % (path,))
    for hp in message.hash_policies:
        kind = hp.WhichOneof("policy_specifier")
        policy = (kind, hp.key if kind == "key" else None)
    config = UdpProxyConfig(message.stat_prefix, cluster, idle, policy)
    mainStats = getattr(context.server, "mainStats", None)
    if mainStats is not None:
        # Envoy shows the stats at zero from the start.
        StatsStruct(mainStats, config.statPrefix, counters=_COUNTERS, gauges=_GAUGES)
    return config
