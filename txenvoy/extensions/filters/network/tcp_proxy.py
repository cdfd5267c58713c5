# -*- test-case-name: tests.extensions.filters.network.test_tcp_proxy -*-
"""
C{envoy.filters.network.tcp_proxy}: L4 proxying to a cluster.

Bytes flow with Twisted's producer/consumer back-pressure: each side's
transport is registered as the producer of the other, so when one side's
write buffer passes the buffer limit the other side stops reading (Envoy's
watermarks, with the low watermark at zero). Half-close is carried both
ways: a FIN from one side becomes a FIN to the other, and the connection
pair closes once both directions are done.

A plain TCP connection with no other filter takes the fast path once the
upstream is connected: L{txenvoy.network.splice} moves its bytes in the
kernel and reports byte counts and FINs back here, so stats, access logs
and half-close are those of the ordinary path.
"""

import random

from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Protocol
from zope.interface import implementer

from txenvoy.config.errors import ConfigError, UnsupportedField
from txenvoy.config.fields import checkFields, durationSeconds
from txenvoy.config.registry import Category, extension
from txenvoy.http.hash_policy import generateHash
from txenvoy.router.config import HashPolicy
from txenvoy.interfaces import INetworkFilterFactory, IUpstreamConnectionCallbacks
from txenvoy.network import splice
from txenvoy.network.stream_info import ResponseFlag
from txenvoy.network.timer_heap import TimerHeap
from txenvoy.server.logging import componentLogger, connTag
from txenvoy.stats.per_worker import PerWorker, StatsStruct, perWorkerMethod
from txenvoy.upstream.load_balancer_context import LoadBalancerContext

log = componentLogger("filter")

DEFAULT_IDLE_TIMEOUT = 3600.0

# TcpProxy fields txenvoy implements; any other set field is rejected.
_SUPPORTED = {"stat_prefix", "cluster", "weighted_clusters", "idle_timeout",
              "max_connect_attempts", "access_log", "max_downstream_connection_duration",
              "access_log_options", "downstream_idle_timeout", "upstream_idle_timeout",
              "hash_policy"}

_COUNTERS = ("downstream_cx_total", "downstream_cx_no_route", "downstream_cx_rx_bytes_total",
             "downstream_cx_tx_bytes_total", "downstream_flow_control_paused_reading_total",
             "downstream_flow_control_resumed_reading_total", "idle_timeout",
             "max_downstream_connection_duration", "upstream_flush_total")
_GAUGES = ("downstream_cx_rx_bytes_buffered", "downstream_cx_tx_bytes_buffered",
           "upstream_flush_active")


@implementer(IPushProducer)
class _CountingProducer:
    """
    Stands between a consumer and the downstream transport it pauses, to
    count C{downstream_flow_control_*_reading_total} as Envoy does. Only
    called when a buffer crosses its limit, never per byte.
    """

    def __init__(self, transport, stats):
        self._transport = transport
        self._stats = stats

    def pauseProducing(self):
        self._stats.downstream_flow_control_paused_reading_total.inc()
        self._transport.pauseProducing()

    def resumeProducing(self):
        self._stats.downstream_flow_control_resumed_reading_total.inc()
        self._transport.resumeProducing()

    def stopProducing(self):
        self._transport.stopProducing()


@implementer(IHalfCloseableProtocol, IUpstreamConnectionCallbacks)
class TcpProxyFilter(Protocol):
    """
    The tcp_proxy terminal filter for one downstream connection; it is also
    the callbacks object of its upstream connection.
    """

    # One per connection, idle ones included: slots keep it free of a
    # per-instance dict.
    __slots__ = ("factory", "transport", "connected", "config", "connection", "dispatcher",
                 "stats", "streamInfo", "cluster", "upstream", "_attempts", "_seconds",
                 "_pending", "_connected", "_downstreamReadClosed", "_upstreamReadClosed",
                 "_closed", "_idleTimer", "_durationTimer", "_lastActive", "_splice",
                 "_cxSlot", "_requestStats", "_upstreamFinLast")

    def __init__(self, config, connection):
        self.factory = self.transport = self.cluster = self.upstream = None
        self.connected = 0
        self._connected = self._closed = self._upstreamFinLast = False
        self._downstreamReadClosed = self._upstreamReadClosed = False
        self._idleTimer = self._durationTimer = self._splice = None
        self._cxSlot = self._requestStats = None
        self._lastActive = 0.0
        self.config = config
        self.connection = connection
        self.dispatcher = connection.dispatcher
        self.stats = config.statsFor(self.dispatcher)
        self.streamInfo = connection.streamInfo
        self._attempts = 0
        self._seconds = self.dispatcher.reactor.seconds
        self._pending = []
        # Envoy counts the connection when the filter is created, so one
        # closed by an earlier filter (a rate limiter) still counts.
        self.stats.downstream_cx_total.inc()

    def connectionMade(self):
        if log.debugEnabled:
            log.debug("%snew tcp proxy session", connTag(self.streamInfo.connectionId))
        # A filter before (sni_cluster) may name the cluster, as Envoy's
        # PerConnectionCluster filter state does.
        clusterName = (self.streamInfo.filterStateValue("envoy.tcp_proxy.cluster")
                       or self.config.pickCluster())
        cluster = self.dispatcher.clusterManager.getThreadLocalCluster(clusterName)
        if cluster is None:
            self.stats.downstream_cx_no_route.inc()
            self.streamInfo.setResponseFlag(ResponseFlag.NO_CLUSTER_FOUND)
            if log.debugEnabled:
                log.debug("%sCluster not found %s and no on demand cluster set.",
                          connTag(self.streamInfo.connectionId), clusterName)
            self.connection.closedLocally = True
            self.transport.loseConnection()
            return
        self.cluster = cluster
        self.streamInfo.upstreamCluster = clusterName
        # Nothing is read from downstream until the upstream is there.
        self.transport.pauseProducing()
        reactor = self.dispatcher.reactor
        if self.config.maxDownstreamConnectionDuration:
            self._durationTimer = reactor.callLater(
                self.config.maxDownstreamConnectionDuration, self._onMaxDuration)
        if self.config.idleTimeout:
            # One reactor call per worker for every connection's timeout.
            self._idleTimer = self.config.idleTimersFor(self.dispatcher).callLater(
                self.config.idleTimeout, TcpProxyFilter._onIdleTimeout, self)
        self._connect()

    def _connect(self):
        hashKey = None
        hashing = self.cluster.info.lbConfig.hashing
        if hashing is not None:
            policies = hashing.policy.hashPolicies or self.config.hashPolicies
            if policies:
                hashKey = generateHash(policies, None, self.streamInfo)
        host = self.cluster.chooseHost(LoadBalancerContext(self.connection, None, hashKey))
        if host is None:
            self.cluster.stats.upstream_cx_none_healthy.inc()
            self.streamInfo.setResponseFlag(ResponseFlag.NO_HEALTHY_UPSTREAM)
            self._closeDownstream()
            return
        # Envoy checks the cluster's DEFAULT max_connections (1024 unless
        # set) before each connect; past it the downstream is closed (UO).
        connections = self.cluster.info.resourceManagers["DEFAULT"].connections
        if not connections.tryAcquire():
            self.cluster.stats.upstream_cx_overflow.inc()
            self.streamInfo.setResponseFlag(ResponseFlag.UPSTREAM_OVERFLOW)
            if log.debugEnabled:
                log.debug("%sTCP:onInitFailure: resource limit exceeded",
                          connTag(self.streamInfo.connectionId))
            self._closeDownstream()
            return
        self._cxSlot = connections
        self._attempts += 1
        self.streamInfo.upstreamHost = host.addressString
        if log.debugEnabled:
            log.debug("%sCreating connection to cluster %s", connTag(self.streamInfo.connectionId),
                      self.streamInfo.upstreamCluster)
        self.upstream = self.cluster.connect(host, self)

    # Upstream callbacks.

    def onUpstreamConnected(self, upstream):
        if self._closed:
            upstream.close()
            return
        self._connected = True
        self.upstream = upstream
        self.streamInfo.upstreamLocalAddress = upstream.localAddress()
        # Envoy's TCP pool attaches a "stream" to the connection: counted
        # as a request of the host and of the cluster while it lasts.
        # The host's stats (the cluster's are self.cluster's): no tuple
        # held by every connection.
        self._requestStats = upstream.hostStats
        upstream.hostStats.rq_total += 1
        upstream.hostStats.rq_active += 1
        self.cluster.stats.upstream_rq_total.inc()
        self.cluster.stats.upstream_rq_active.inc()
        if log.debugEnabled:
            log.debug("%sTCP:onUpstreamEvent(), requestedServerName: %s",
                      connTag(self.streamInfo.connectionId),
                      self.streamInfo.requestedServerName or "")
        transport = self.transport
        if (not self._downstreamReadClosed
                and splice.eligible(self.connection, transport, upstream.transport)):
            # Read-ahead goes out through the transport; the pump waits
            # for it to be written before it takes the sockets.
            if self._pending:
                upstream.writeSequence(self._pending)
            self._pending = None
            if splice.arm(transport, upstream.transport):
                # No pump until the first byte either way (splicePump):
                # an idle connection holds none.
                self._splice = splice.ARMED
                transport.resumeProducing()
                return
            self._splice = self._newPump()
            self._splice.start()
            return
        # Each side produces for the other: back-pressure both ways.
        upstream.registerProducer(_CountingProducer(transport, self.stats), True)
        transport.registerProducer(upstream.transport, True)
        if self._pending:
            upstream.writeSequence(self._pending)
            self._pending = None
        transport.resumeProducing()
        if self._downstreamReadClosed:
            upstream.loseWriteConnection()

    def onUpstreamConnectFailed(self, upstream, reason):
        self._releaseSlot()
        if self._closed:
            return
        if log.debugEnabled:
            log.debug("%supstream connect failed: %s, %s", connTag(self.streamInfo.connectionId),
                      reason, upstream.connectFailureDetail())
        if self._attempts < self.config.maxConnectAttempts:
            self._connect()
            return
        self.cluster.stats.upstream_cx_connect_attempts_exceeded.inc()
        self.streamInfo.setResponseFlag(ResponseFlag.UPSTREAM_CONNECTION_FAILURE)
        self.streamInfo.upstreamTransportFailureReason = reason
        self._closeDownstream()

    def onUpstreamData(self, data):
        self._lastActive = self._seconds()
        self.streamInfo.bytesSent += len(data)
        self.stats.downstream_cx_tx_bytes_total.inc(len(data))
        self.transport.write(data)

    def onUpstreamReadClosed(self):
        self._upstreamReadClosed = True
        if self._downstreamReadClosed:
            self._upstreamFinLast = True
            self._closeDownstream()
        else:
            self.transport.loseWriteConnection()

    def onUpstreamClosed(self, reason):
        if self._splice is splice.ARMED:
            splice.disarm(self.upstream.transport)
        self._releaseSlot()
        self._endRequest()
        self.upstream = None
        if not self._closed:
            self._closeDownstream()

    # Splice callbacks (the fast path's reads, FINs and pauses).

    def onSpliceBytes(self, fromDownstream, toDownstream):
        self._lastActive = self._seconds()
        clusterStats = self.cluster.stats
        if fromDownstream:
            self.streamInfo.bytesReceived += fromDownstream
            self.stats.downstream_cx_rx_bytes_total.inc(fromDownstream)
            clusterStats.upstream_cx_tx_bytes_total.inc(fromDownstream)
        if toDownstream:
            self.streamInfo.bytesSent += toDownstream
            self.stats.downstream_cx_tx_bytes_total.inc(toDownstream)
            clusterStats.upstream_cx_rx_bytes_total.inc(toDownstream)

    def onSpliceReadClosed(self, fromDownstream):
        if fromDownstream:
            self._downstreamReadClosed = True
        else:
            self._upstreamReadClosed = True
            self._upstreamFinLast = self._downstreamReadClosed
        if self._downstreamReadClosed and self._upstreamReadClosed:
            self._closeDownstream()

    def onSplicePaused(self, fromDownstream):
        if fromDownstream:
            self.stats.downstream_flow_control_paused_reading_total.inc()

    def onSpliceResumed(self, fromDownstream):
        if fromDownstream:
            self.stats.downstream_flow_control_resumed_reading_total.inc()

    def onSpliceFallback(self):
        # No pipe to be had (out of file descriptors): the ordinary path,
        # wired as onUpstreamConnected would have.
        self._splice = None
        transport = self.transport
        upstream = self.upstream
        upstream.registerProducer(_CountingProducer(transport, self.stats), True)
        transport.registerProducer(upstream.transport, True)
        transport.resumeProducing()
        upstream.transport.resumeProducing()

    def _newPump(self):
        # The accept path set the transport's bufferSize to the listener's
        # per_connection_buffer_limit_bytes.
        return splice.SplicePump(self.dispatcher.reactor, self.transport,
                                 self.upstream.transport, self,
                                 getattr(self.transport, "bufferSize", None))

    def splicePump(self):
        """
        The pump of an armed pair, started: one of its sockets is readable
        (L{txenvoy.network.splice.arm}). C{None} once not armed.
        """
        if self._splice is not splice.ARMED:
            return None
        pump = self._splice = self._newPump()
        pump.start()
        return pump

    def _stopSplice(self):
        pump, self._splice = self._splice, None
        if pump is splice.ARMED:
            splice.disarm(self.transport)
            if self.upstream is not None:
                splice.disarm(self.upstream.transport)
        elif pump is not None:
            pump.stop()

    # Downstream side.

    def dataReceived(self, data):
        self._lastActive = self._seconds()
        self.streamInfo.bytesReceived += len(data)
        self.stats.downstream_cx_rx_bytes_total.inc(len(data))
        if self._connected:
            self.upstream.write(data)
        else:
            # Bytes read ahead by listener filters, before the upstream is up.
            self._pending.append(data)

    def readConnectionLost(self):
        self._downstreamReadClosed = True
        if not self._connected:
            # Envoy keeps connecting; the FIN is passed on once connected.
            return
        if self._upstreamReadClosed:
            self._closeDownstream()
        else:
            self.upstream.loseWriteConnection()

    def writeConnectionLost(self):
        if self._downstreamReadClosed:
            self.transport.loseConnection()

    def connectionLost(self, reason):
        self._closed = True
        self._releaseSlot()
        self._endRequest()
        self._stopSplice()
        self._cancelTimers()
        upstream = self.upstream
        if upstream is not None:
            self.upstream = None
            if self._connected:
                # Envoy half-closes both sides: the upstream's close is the
                # host's only when its FIN ended the session; otherwise our
                # FIN (or close) to a host that had sent its own is local.
                upstream.close(local=not self._upstreamFinLast)
            else:
                upstream.abort()
        info = self.streamInfo
        info.onComplete()
        for logger in self.config.accessLogs:
            logger.log(info, None, None)

    def _endRequest(self):
        """The upstream session is over: no longer an active request."""
        hostStats = self._requestStats
        if hostStats is not None:
            self._requestStats = None
            hostStats.rq_active -= 1
            self.cluster.stats.upstream_rq_active.dec()

    def _releaseSlot(self):
        """Give back the upstream connection's C{max_connections} slot."""
        slot = self._cxSlot
        if slot is not None:
            self._cxSlot = None
            slot.release()

    def _closeDownstream(self):
        # The pump gives the sockets back before the transports close them.
        self._stopSplice()
        self.connection.closedLocally = True
        self.transport.loseConnection()

    # Timers.

    def _cancelTimers(self):
        if self._idleTimer is not None:
            self.config.idleTimersFor(self.dispatcher).cancel(self._idleTimer)
        t = self._durationTimer
        if t is not None and t.active():
            t.cancel()
        self._idleTimer = self._durationTimer = None

    def _onIdleTimeout(self):
        # Activity only notes the time; the timer re-arms itself for the
        # rest of the idle_timeout after the last activity (as Envoy's reset
        # timer would end), so the data path never touches the timer heap.
        left = self._lastActive + self.config.idleTimeout - self._seconds()
        if left > 0:
            self._idleTimer = self.config.idleTimersFor(self.dispatcher).callLater(
                left, TcpProxyFilter._onIdleTimeout, self)
            return
        self._idleTimer = None
        self.stats.idle_timeout.inc()
        self.connection.streamInfo.connectionTerminationDetails = "tcp_proxy idle timeout"
        self._closeDownstream()

    def _onMaxDuration(self):
        self._durationTimer = None
        self.stats.max_downstream_connection_duration.inc()
        self._closeDownstream()


@implementer(INetworkFilterFactory)
class TcpProxyConfig:
    """
    A compiled C{TcpProxy} config.

    @ivar clusters: C{[(name, weight)]}.
    @ivar hashPolicies: the C{hash_policy} (at most one, C{source_ip} or
        C{filter_state}) as L{txenvoy.router.config.HashPolicy} objects,
        for a RING_HASH or MAGLEV cluster.
    """

    terminal = True
    hashPolicies = ()

    #: This worker's C{tcp.<stat_prefix>.*} stat objects.
    statsFor = perWorkerMethod(lambda self, d: StatsStruct(
        d.stats, self.statPrefix, counters=_COUNTERS, gauges=_GAUGES))

    def __init__(self, statPrefix, clusters, idleTimeout, maxConnectAttempts, accessLogs,
                 maxDownstreamConnectionDuration=0.0, rng=random.random):
        self.statPrefix = "tcp.%s." % (statPrefix,)
        self.clusters = clusters
        self.idleTimeout = idleTimeout
        self.maxConnectAttempts = maxConnectAttempts
        self.accessLogs = accessLogs
        self.maxDownstreamConnectionDuration = maxDownstreamConnectionDuration
        self._totalWeight = sum(w for _, w in clusters)
        self._rng = rng
        #: This worker's L{TimerHeap} of idle timeouts.
        self.idleTimersFor = PerWorker(lambda d: TimerHeap(d.reactor)).get

    def pickCluster(self):
        if len(self.clusters) == 1:
            return self.clusters[0][0]
        point = self._rng() * self._totalWeight
        for name, weight in self.clusters:
            point -= weight
            if point < 0:
                return name
        return self.clusters[-1][0]

    def buildFilter(self, connection, nextProtocol):
        return TcpProxyFilter(self, connection)


@extension(Category.NETWORK_FILTER,
           "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
           "envoy.filters.network.tcp_proxy", fields=_SUPPORTED)
def createTcpProxy(message, context):
    from txenvoy.accesslog.filters import createAccessLog

    path = context.configPath
    which = message.WhichOneof("cluster_specifier")
    if which == "cluster":
        clusters = [(message.cluster, 1)]
    elif which == "weighted_clusters":
        clusters = []
        for i, wc in enumerate(message.weighted_clusters.clusters):
            if wc.HasField("metadata_match"):
                raise UnsupportedField("%s.weighted_clusters.clusters[%d].metadata_match" % (path, i))
            clusters.append((wc.name, wc.weight))
        if not clusters or not sum(w for _, w in clusters):
            raise ConfigError("%s.weighted_clusters: the sum of weights must be above 0" % (path,))
    else:
        raise ConfigError("%s: TcpProxyValidationError: value is required for cluster_specifier"
                          % (path,))
    idle = (durationSeconds(message.idle_timeout) if message.HasField("idle_timeout")
            else DEFAULT_IDLE_TIMEOUT)
    attempts = (message.max_connect_attempts.value
                if message.HasField("max_connect_attempts") else 1)
    duration = (durationSeconds(message.max_downstream_connection_duration)
                if message.HasField("max_downstream_connection_duration") else 0.0)
    logs = [createAccessLog(al, context, "%s.access_log[%d]" % (path, i))
            for i, al in enumerate(message.access_log)]
    config = TcpProxyConfig(message.stat_prefix, clusters, idle, attempts, logs, duration)
    config.hashPolicies = _compileHashPolicy(message, path)
    return config


def _compileHashPolicy(message, path):
    # envoy.type.v3.HashPolicy: one source_ip or filter_state policy (the
    # proto allows at most one), hashed as Envoy's Network::HashPolicyImpl.
    if len(message.hash_policy) > 1:
        raise ConfigError("%s.hash_policy: value must contain no more than 1 item(s)" % (path,))
    out = []
    for i, policy in enumerate(message.hash_policy):
        ppath = "%s.hash_policy[%d]" % (path, i)
        checkFields(policy, ("source_ip", "filter_state"), ppath)
        which = policy.WhichOneof("policy_specifier")
        if which == "source_ip":
            out.append(HashPolicy("source_ip"))
        elif which == "filter_state":
            if not policy.filter_state.key:
                raise ConfigError("%s.filter_state.key: value length must be at least 1 "
                                  "characters" % (ppath,))
            out.append(HashPolicy("filter_state", policy.filter_state.key))
        else:
            raise ConfigError("%s.policy_specifier: is required" % (ppath,))
    return tuple(out)
