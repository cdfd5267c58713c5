# -*- test-case-name: tests.http.test_conn_pool -*-
"""
Upstream HTTP/1.1 connection pools (Envoy's C{Http1::ConnPoolImpl} and
C{ConnPoolImplBase}), one per worker, per cluster, per host.

A stream asks its pool with L{HttpConnPool.newStream}; the pool answers
C{callbacks.onPoolReady(client)} with an L{ActiveClient} (at once when a
kept-alive connection is idle), or C{callbacks.onPoolFailure(reason)} with
Envoy's reset reason text. A client carries one request at a time and
passes the response to its stream: C{onResponseHeaders(headers,
endStream)}, C{onResponseData(data, endStream)},
C{onResponseTrailers(trailers)}, C{onResponseComplete()} and
C{onUpstreamReset(reason)}. On C{onResponseComplete} the client is already
back in the pool (or closed), so a request waiting on the same worker can
have it at once.

Each L{ActiveClient} is in one of Envoy's C{ActiveClient} states:
L{CONNECTING}, L{READY} (idle, in C{pool.ready}), L{BUSY} (carrying a
request), L{DRAINING} (closing: never handed out again) and L{CLOSED}.

Behaviour copied from Envoy 1.40:
 - connections are kept alive and reused, most recently used first; a
   connection the host closes, or whose response said
   C{connection: close} (C{upstream_cx_close_notify}), or that reached
   C{max_requests_per_connection}, is dropped; one idle for the cluster's
   C{common_http_protocol_options.idle_timeout} (1 hour unless set) is
   closed (C{upstream_cx_idle_timeout}); one older than
   C{max_connection_duration} is closed when idle, or after its response
   (C{upstream_cx_max_duration_reached});
 - a connection the host closes leaves the idle list at its FIN, and an
   idle connection is looked at (L{UpstreamConnection.peek}) before it is
   handed out, so that a request is not written to a connection the host
   closed a moment ago (the idle-close race);
 - closes are counted as Envoy counts them: C{upstream_cx_destroy_remote}
   when the host closed first, and C{upstream_cx_destroy_with_active_rq}
   (with C{_local_} / C{_remote_}) when a response was incomplete;
 - requests wait in a pending queue while connections are opened, bounded
   by the cluster's circuit breakers (of the route's priority): past
   C{max_pending_requests} a request fails at once with C{overflow}
   (C{upstream_rq_pending_overflow}), and so does one that would pass
   C{max_requests} when handed a connection (C{upstream_rq_active_overflow});
   past C{max_connections} (or the host's C{per_host_thresholds}
   C{max_connections}) no new connection is opened (C{upstream_cx_overflow}) and requests wait for one to free up,
   except that a host with no connection at all always gets one, so its
   requests are not stranded; past C{max_connection_pools} no pool is made
   for a new host (C{upstream_cx_pool_overflow}, and the router answers
   C{no healthy upstream}); a pool left with no connection and no waiting
   request is dropped and gives its slot back, as Envoy drops idle pools;
 - a failed connect fails every request pending on that host
   (C{upstream_rq_pending_failure_eject});
 - a request abandoned while its response is in progress closes its
   connection (HTTP/1.1 cannot reuse it).

The circuit breakers count for the whole cluster, across workers (see
L{txenvoy.upstream.resource_manager}). A connection holds a
C{max_connections} slot from its connect to its close, a request a
C{max_requests} slot while it has a connection, a waiting request a
C{max_pending_requests} slot.

Flow control: each client registers a producer on its connection, so when
the connection's write buffer passes the cluster's
C{per_connection_buffer_limit_bytes} its stream is told
C{onAboveWriteBufferHighWatermark()} (the router then stops reading the
downstream connection), and C{onBelowWriteBufferLowWatermark()} once it
drained.
"""

from collections import deque

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from txenvoy.http.http1.client_codec import ClientCodec
from txenvoy.http.http2.conn_pool import Http2ConnPool
from txenvoy.http.mixed_conn_pool import ALPN_PROTOCOLS, MixedConnPool
from txenvoy.http.pool_base import (
    CONNECTION_TERMINATION,
    OVERFLOW,
    PROTOCOL_ERROR,
    PendingAccounting,
    IdleTimer,
    PendingStream,
    ReadPausing,
    countAlpnConnection,
    directSequenceWriter,
    directWriter,
)
from txenvoy.interfaces import IHttpConnPool, IUpstreamConnectionCallbacks
from txenvoy.server.logging import componentLogger, connTag
from txenvoy.upstream.connection import PEEK_CLOSED, PEEK_IDLE
from txenvoy.upstream.http_protocol_options import TransportSocketOptions
from txenvoy.upstream.resource_manager import UNLIMITED

__all__ = ["HttpConnPool", "ActiveClient", "ClusterPools", "poolsFor", "OVERFLOW",
           "CONNECTION_TERMINATION", "PROTOCOL_ERROR", "directWriter", "CONNECTING",
           "READY", "BUSY", "DRAINING", "CLOSED"]

#: Envoy's C{ActiveClient::State}s.
CONNECTING = "CONNECTING"
READY = "READY"
BUSY = "BUSY"
DRAINING = "DRAINING"
CLOSED = "CLOSED"

log = componentLogger("pool")


class ClusterPools:
    """
    One worker's HTTP pools of one cluster at one priority, and the
    cluster-wide circuit breakers of that priority.

    @ivar cluster: the L{txenvoy.upstream.cluster_manager.ThreadLocalCluster}.
    @ivar resources: the cluster's
        L{txenvoy.upstream.resource_manager.ResourceManager} of the priority.
    """

    def __init__(self, cluster, priority="DEFAULT"):
        self.cluster = cluster
        self.stats = cluster.stats
        self.resources = resources = cluster.info.resourceManagers[priority]
        self.connections = resources.connections
        self.pendingRequests = resources.pendingRequests
        self.requests = resources.requests
        self.retries = resources.retries
        self.maxRequestsPerConnection = cluster.info.maxRequestsPerConnection
        self.idleTimeout = cluster.info.upstreamIdleTimeout
        self.maxConnectionDuration = cluster.info.upstreamMaxConnectionDuration
        self.maxHeadersCount = cluster.info.upstreamMaxHeadersCount
        self.maxResponseHeadersKb = cluster.info.upstreamMaxResponseHeadersKb
        self.enableTrailers = cluster.info.upstreamEnableTrailers
        #: C{explicit_http_config.http2_protocol_options} (or
        #: C{use_downstream_protocol_config}'s): the host speaks HTTP/2.
        self.http2Options = cluster.info.upstreamHttp2Options
        self.useDownstreamProtocol = cluster.info.upstreamUseDownstreamProtocol
        self.autoConfig = cluster.info.upstreamAutoConfig
        self._pools = {}

    def poolFor(self, host, socketOptions=None, downstreamHttp2=False):
        """
        @param downstreamHttp2: the request came over HTTP/2 (for
            C{use_downstream_protocol_config}).
        @param socketOptions: the request's
            L{txenvoy.upstream.http_protocol_options.TransportSocketOptions}
            (C{auto_sni}, C{auto_san_validation}), or C{None}; as in Envoy,
            requests with different options never share a connection.
        @return: the L{HttpConnPool} of C{host}, made on first use, or
            C{None} past C{max_connection_pools}
            (C{upstream_cx_pool_overflow}).
        """
        http2 = self.http2Options is not None and (
            downstreamHttp2 or not self.useDownstreamProtocol)
        key = host if socketOptions is None else (host, socketOptions)
        if self.autoConfig:
            key = (key, "alpn")
        elif http2:
            key = (key, "h2")
        pool = self._pools.get(key)
        if pool is None:
            if not self.resources.connectionPools.tryAcquire():
                self.stats.upstream_cx_pool_overflow.inc()
                return None
            if self.autoConfig:
                pool = self._mixedPool(host, socketOptions)
            elif http2:
                pool = Http2ConnPool(self, host, socketOptions, self.http2Options)
            else:
                pool = HttpConnPool(self, host, socketOptions)
            pool.poolKey = key
            self._pools[key] = pool
        return pool

    def _mixedPool(self, host, socketOptions):
        # auto_config: a connection offers h2 and http/1.1 by ALPN and joins
        # the pool of what the host chose.
        options = (socketOptions if socketOptions is not None
                   else TransportSocketOptions()).withAlpnFallback(ALPN_PROTOCOLS)
        http1 = HttpConnPool(self, host, options)
        http2 = Http2ConnPool(self, host, options, self.http2Options)
        return MixedConnPool(self, host, options, http1, http2)

    def _onPoolIdle(self, pool):
        """
        C{pool} has no connection and no waiting request: drop it (the part
        of an C{auto_config} pool: that pool, once all of it is idle).
        """
        owner = pool.mixedPool
        if owner is not None:
            if not owner.isIdle():
                return
            pool = owner
        key = pool.poolKey
        if self._pools.get(key) is pool:
            del self._pools[key]
            self.resources.connectionPools.release()

    def drainConnections(self):
        """Close every idle connection (the cluster or host went away)."""
        for pool in list(self._pools.values()):
            pool.closeIdle()


def poolsFor(cluster, priority="DEFAULT"):
    """
    The L{ClusterPools} of a worker's cluster at a route priority, made on
    first use and kept on the cluster object, so that every listener of the
    worker shares them.
    """
    if priority == "DEFAULT":
        pools = cluster.__dict__.get("httpConnPools")
        if pools is None:
            pools = cluster.httpConnPools = ClusterPools(cluster)
        return pools
    pools = cluster.__dict__.get("httpConnPoolsHigh")
    if pools is None:
        pools = cluster.httpConnPoolsHigh = ClusterPools(cluster, priority)
    return pools




@implementer(IHttpConnPool)
class HttpConnPool(PendingAccounting):
    """
    The connections of one worker to one host of one cluster.

    @ivar host: the L{txenvoy.upstream.host.Host}.
    @ivar ready: idle, connected clients; the last is used first.
    @ivar busy: clients carrying a request.
    @ivar connecting: clients not connected yet.
    @ivar pending: L{PendingStream}s waiting, oldest first.
    @ivar socketOptions: the transport socket options its connections are
        made with, or C{None}.
    """

    #: The L{txenvoy.http.mixed_conn_pool.MixedConnPool} it is part of
    #: (C{auto_config}: its connections offer ALPN), or C{None}.
    mixedPool = None

    def __init__(self, clusterPools, host, socketOptions=None):
        self.clusterPools = clusterPools
        self.cluster = clusterPools.cluster
        self.stats = clusterPools.stats
        self.host = host
        self.socketOptions = socketOptions
        self.hostStats = host.statsFor(self.cluster.workerName)
        self.ready = []
        self.busy = set()
        self.connecting = []
        self.pending = deque()

    def newStream(self, callbacks):
        """
        Get a connection for one request.

        @param callbacks: C{onPoolReady(client)} and C{onPoolFailure(reason)};
            either may be called before this returns.
        @return: a handle with C{cancel()} while the request waits, else
            C{None}.
        """
        ready = self.ready
        while ready:
            client = ready.pop()
            if client.checkIdle():
                if not self.clusterPools.requests.tryAcquire():
                    ready.append(client)
                    self._requestsOverflow(callbacks)
                    return None
                client.hasRequestSlot = True
                client.state = BUSY
                self.busy.add(client)
                if log.debugEnabled:
                    tag = connTag(client.connection.connectionId)
                    log.debug("%susing existing fully connected connection", tag)
                    log.debug("%screating stream", tag)
                callbacks.onPoolReady(client)
                return None
        cp = self.clusterPools
        stats = self.stats
        if not cp.pendingRequests.tryAcquire():
            stats.upstream_rq_pending_overflow.inc()
            if log.debugEnabled:
                log.debug("max pending streams overflow")
            callbacks.onPoolFailure(OVERFLOW)
            return None
        if log.debugEnabled:
            log.debug("queueing stream due to no available connections (ready=%d busy=%d "
                      "connecting=%d)", len(ready), len(self.busy), len(self.connecting))
        pending = PendingStream(self, callbacks)
        self.pending.append(pending)
        stats.upstream_rq_pending_total.inc()
        stats.upstream_rq_pending_active.inc()
        self.hostStats.rq_pending_active += 1
        if len(self.connecting) < len(self.pending):
            self._tryConnect()
        return pending

    def _requestsOverflow(self, callbacks):
        # Envoy's attachStreamToClient: past max_requests the stream fails
        # as an overflow.
        self.stats.upstream_rq_active_overflow.inc()
        if log.debugEnabled:
            log.debug("max streams overflow")
        callbacks.onPoolFailure(OVERFLOW)

    def _tryConnect(self):
        """
        Open a connection if C{max_connections} allows, or if this host has
        none at all (Envoy opens one anyway, or its requests would wait
        for ever); else count C{upstream_cx_overflow}.
        """
        connections = self.clusterPools.connections
        # Envoy's canCreateConnection: the host's own limit
        # (per_host_thresholds), then the cluster's.
        perHost = self.clusterPools.resources.maxConnectionsPerHost
        if (perHost >= UNLIMITED or self.host.stats("cx_active") < perHost) \
                and connections.tryAcquire():
            self._connect()
            return
        self.stats.upstream_cx_overflow.inc()
        if not (self.ready or self.busy or self.connecting):
            connections.acquire()
            self._connect()
        elif log.debugEnabled:
            log.debug("max connections overflow: not creating a new connection")

    def _connect(self):
        """Open a connection; its C{max_connections} slot is already taken."""
        if log.debugEnabled:
            log.debug("trying to create new connection")
            log.debug("creating a new connection (connecting=%d)", len(self.connecting))
        self.stats.upstream_cx_http1_total.inc()
        client = ActiveClient(self)
        self.connecting.append(client)
        client.start()

    def adopt(self, connection, waiting):
        """
        Take C{connection}, connected by another (C{auto_config}'s first
        connection, whose handshake chose HTTP/1.1), as one of this pool's,
        with the streams that waited for it.

        @param waiting: L{PendingStream}s, oldest first; they wait here now.
        @return: its L{ActiveClient}.
        """
        self.stats.upstream_cx_http1_total.inc()
        client = self._adopt(ActiveClient(self), connection, waiting)
        # One connection each for the others, as newStream would open.
        for _ in range(len(self.pending) - len(self.connecting)):
            self._tryConnect()
        return client

    def _takePending(self):
        pending = self.pending.popleft()
        self._pendingDone()
        return pending

    # Client life cycle.

    def _onConnected(self, client):
        self.connecting.remove(client)
        self._assignOrIdle(client)

    def _assignOrIdle(self, client):
        while self.pending:
            pending = self._takePending()
            if not self.clusterPools.requests.tryAcquire():
                self._requestsOverflow(pending.callbacks)
                continue
            client.hasRequestSlot = True
            client.state = BUSY
            self.busy.add(client)
            if log.debugEnabled:
                tag = connTag(client.connection.connectionId)
                log.debug("%sattaching to next stream", tag)
                log.debug("%screating stream", tag)
            pending.callbacks.onPoolReady(client)
            return
        client.state = READY
        self.ready.append(client)
        client.startIdleTimer()

    def _onConnectFailed(self, client, reason):
        #: The last connection that failed to connect, for the router's
        #: log line (C{transport failure reason: ...}).
        self.lastFailedConnection = client.connection
        if log.debugEnabled:
            log.debug("%sclient disconnected, failure reason: %s",
                      connTag(client.connection.connectionId),
                      client.connection.connectFailureDetail())
        self.connecting.remove(client)
        self.clusterPools.connections.release()
        # Envoy fails every request waiting on this host when a connect
        # fails, rather than leaving them for the next attempt.
        failed = list(self.pending)
        self.pending.clear()
        stats = self.stats
        for pending in failed:
            self._pendingDone()
            stats.upstream_rq_pending_failure_eject.inc()
        for pending in failed:
            pending.callbacks.onPoolFailure(reason)
        self._checkIdle()

    def isIdle(self):
        """Whether it has no connection and no waiting stream."""
        return not (self.ready or self.busy or self.connecting or self.pending)

    def _checkIdle(self):
        if self.isIdle():
            self.clusterPools._onPoolIdle(self)

    def releaseClient(self, client):
        """A client finished its request (or was given back unused) and can be reused."""
        if client.hasRequestSlot:
            client.releaseRequestSlot()
        self.busy.discard(client)
        self._assignOrIdle(client)

    def _retire(self, client):
        """C{client} is closing: it is never handed out again."""
        if client.state == READY:
            try:
                self.ready.remove(client)
            except ValueError:
                pass
        client.state = DRAINING

    def _onClosed(self, client):
        if log.debugEnabled:
            log.debug("%sclient disconnected, failure reason: ",
                      connTag(client.connection.connectionId))
        client.releaseRequestSlot()
        self.busy.discard(client)
        self._retire(client)
        client.state = CLOSED
        self.clusterPools.connections.release()
        self.stats.upstream_rq_per_cx.recordValue(client.requests)
        if self.pending and len(self.connecting) < len(self.pending):
            self._tryConnect()
        self._checkIdle()

    lastFailedConnection = None

    def closeIdle(self):
        """Close every idle connection."""
        for client in list(self.ready):
            client.close()


def _closesConnection(value, version):
    # Envoy's HeaderUtility::shouldCloseConnection: "connection: close", or
    # HTTP/1.0 without "connection: keep-alive". (C{value}: the response's
    # first connection header, as its codec read it.)
    if value is not None:
        value = value.lower()
        if b"close" in value:
            return True
    return version == "HTTP/1.0" and (value is None or b"keep-alive" not in value)


@implementer(IPushProducer)
class UpstreamWatermark:
    """
    Registered as the producer of a client's connection: Twisted pauses it
    when the connection's write buffer passes the limit, and resumes it
    once drained. Only called at those crossings.
    """

    __slots__ = ("client",)

    def __init__(self, client):
        self.client = client

    def pauseProducing(self):
        client = self.client
        # Twisted pauses again on every write while the buffer is full, and
        # resumes once: only the crossing counts.
        if client.above:
            return
        client.above = True
        stream = client.stream
        if stream is not None:
            stream.onAboveWriteBufferHighWatermark()

    def resumeProducing(self):
        client = self.client
        if client.above:
            client.above = False
            stream = client.stream
            if stream is not None:
                stream.onBelowWriteBufferLowWatermark()

    def stopProducing(self):
        """Nothing to stop."""
        pass


@implementer(IUpstreamConnectionCallbacks)
class ActiveClient(ReadPausing, IdleTimer):
    """
    One upstream HTTP/1.1 connection of a pool: an
    L{txenvoy.upstream.connection.UpstreamConnection} (whose callbacks it
    is) and a L{ClientCodec} (whose callbacks it is too).

    @ivar state: L{CONNECTING}, L{READY}, L{BUSY}, L{DRAINING} or L{CLOSED}.
    @ivar stream: the stream its current request belongs to, or C{None}.
    @ivar codec: the L{ClientCodec}; a stream writes its request with
        C{codec.encodeRequest}, C{encodeData}, C{encodeTrailers}.
    @ivar connection: the L{UpstreamConnection}.
    @ivar requests: how many requests it carried to their end.
    @ivar closedUnanswered: the host closed this connection, which had
        carried requests before, without a byte of the response to the
        current one: the host most likely closed it as idle while the
        request was on its way, and never read it.
    """

    stream = None
    above = False
    connected = False
    closed = False
    closedUnanswered = False
    _incomplete = False         # a request started, its response not complete
    _reset = False              # abandoned by its stream before the response ended
    _answered = False           # response bytes came for the current request
    _durationTimer = None
    _expired = False            # past max_connection_duration: no new request
    hasRequestSlot = False      # holds a max_requests slot for its request

    def __init__(self, pool):
        self.pool = pool
        self.state = CONNECTING
        self.requests = 0
        self.connection = None
        self.codec = None
        self._watermark = UpstreamWatermark(self)
        # Read for every request it carries, as attributes of the instance:
        # Python reads a class-level default several times slower.
        self.closed = False
        self.above = False
        self._expired = False
        self._readPaused = False

    def start(self):
        """Open the connection."""
        pool = self.pool
        self.connection = pool.cluster.connect(pool.host, self, pool.socketOptions)

    def attach(self, stream):
        """Carry C{stream}'s request (called by the stream on pool ready)."""
        self.stream = stream
        self._incomplete = True
        self._answered = False
        if self.above:
            stream.onAboveWriteBufferHighWatermark()

    def releaseRequestSlot(self):
        """The request is over: give back its C{max_requests} slot."""
        if self.hasRequestSlot:
            self.hasRequestSlot = False
            self.pool.clusterPools.requests.release()

    def _detach(self):
        self.releaseRequestSlot()
        stream = self.stream
        self.stream = None
        if stream is not None and self.above:
            stream.onBelowWriteBufferLowWatermark()
        if self._readPaused:
            self._readPaused = False
            self.connection.resumeReading()
        return stream

    def checkIdle(self):
        """
        Whether this idle connection can take a request now. The host may
        have closed it a moment ago, its FIN not read yet: then it is
        closed here (as the host's close) and never handed out.
        """
        self._idleSince = None      # stopIdleTimer(), inline: once per request
        if self.closed:
            return False
        if not self.codec.keepAlive:
            # Its codec cannot take a request (its end was met, or an
            # error): encodeRequest would raise. Never handed out.
            self.abort()
            return False
        seen = self.connection.peek()
        if seen == PEEK_IDLE:
            return True
        if seen == PEEK_CLOSED:
            self.onUpstreamReadClosed()
        else:
            # Bytes nobody asked for: the codec meets them when the reactor
            # reads them (a protocol error); until then it is not handed out.
            self.pool._retire(self)
        return False

    def _onIdleTimeout(self):
        if self.state == READY:
            self.pool.stats.upstream_cx_idle_timeout.inc()
            self.close()

    def _onMaxDuration(self):
        self._durationTimer = None
        if self.closed:
            return
        self.pool.stats.upstream_cx_max_duration_reached.inc()
        if self.state == READY:
            self.close()
        else:
            # Draining: it closes once its response is complete.
            self._expired = True

    def closingWithIncompleteStream(self):
        """Whether a response is incomplete (for the connection's stats)."""
        return self._incomplete or self._reset

    def resetStream(self):
        """
        Abandon the current request: HTTP/1.1 cannot reuse a connection in
        the middle of an exchange, so it is closed (with its request active,
        for the stats, even if the rest of the response was already read).
        """
        self._reset = self._incomplete
        self._detach()
        self.abort()

    def _closing(self):
        self.closed = True
        self._cancelIdleTimer()
        timer = self._durationTimer
        if timer is not None:
            self._durationTimer = None
            if timer.active():
                timer.cancel()
        self.pool._retire(self)

    def close(self):
        """Close the connection once what is buffered is written."""
        if not self.closed:
            self._closing()
            conn = self.connection
            if conn is not None:
                conn.unregisterProducer()
                conn.close()

    def abort(self):
        """Close the connection now."""
        if not self.closed:
            self._closing()
            conn = self.connection
            if conn is not None:
                conn.unregisterProducer()
                conn.abort()

    # UpstreamConnection callbacks.

    def onUpstreamConnected(self, connection):
        """Connected: start the codec and serve a waiting request."""
        self.connection = connection
        self.connected = True
        if self.pool.mixedPool is not None:
            countAlpnConnection(self.pool)
        self._tx = self.pool.stats.upstream_cx_tx_bytes_total
        self._write = directWriter(connection.transport)
        self._writeSequence = directSequenceWriter(connection.transport)
        cp = self.pool.clusterPools
        self.codec = ClientCodec(self, self, maxResponseHeadersKb=cp.maxResponseHeadersKb,
                                 maxHeadersCount=cp.maxHeadersCount,
                                 enableTrailers=cp.enableTrailers, reader=connection)
        connection.registerProducer(self._watermark, True)
        if self.closed:
            connection.abort()
            return
        duration = self.pool.clusterPools.maxConnectionDuration
        if duration:
            self._durationTimer = self.pool.cluster.reactor.callLater(
                duration, self._onMaxDuration)
        self.pool._onConnected(self)

    def onUpstreamConnectFailed(self, connection, reason):
        """The connect failed: every request waiting on the host fails."""
        self.closed = True
        self.state = CLOSED
        self.pool._onConnectFailed(self, reason)

    def write(self, data):
        """The codec's transport: count and send request bytes."""
        if not self.closed:
            # (Bytes added make the counter used.)
            self._tx.value += len(data)
            self._write(data)

    def writeSequence(self, buffers):
        """The codec's transport: count and send several buffers at once."""
        if not self.closed:
            for data in buffers:
                self._tx.value += len(data)
            self._writeSequence(list(buffers))

    def onUpstreamData(self, data):
        """Response bytes, parsed with downstream writes held until done."""
        self._answered = True
        stream = self.stream
        corker = stream.corker if stream is not None else None
        if corker is None:
            self.codec.dataReceived(data)
            return
        # What one read of the response produces goes downstream in one
        # write (a response head and its body, typically).
        corker.cork()
        try:
            self.codec.dataReceived(data)
        finally:
            corker.uncork()

    def onUpstreamReadClosed(self):
        """
        The host sent FIN. HTTP/1.1 has no half-close: the host is done
        with the connection, which leaves the pool at once. A response
        delimited by the end of the connection ends here.
        """
        if self.stream is not None and self.requests and not self._answered:
            self.closedUnanswered = True
        codec = self.codec
        if codec is not None:
            codec.connectionLost()
        self.close()

    def onUpstreamClosed(self, reason):
        """The connection is gone: drop it, reset the request it carried."""
        self._closing()
        codec = self.codec
        if codec is not None:
            # A response delimited by the end of the connection ends here.
            codec.connectionLost(reason)
        if self.stream is not None:
            if self._answered:
                # Envoy's codec meets the end of the connection in the
                # middle of a response as a protocol error.
                self.pool.stats.upstream_cx_protocol_error.inc()
            elif self.requests:
                self.closedUnanswered = True
        self.pool._onClosed(self)
        if self.stream is not None:
            self._detach().onUpstreamReset(CONNECTION_TERMINATION)

    # ClientCodec callbacks.

    def onResponseHeaders(self, headers, endStream):
        """Passed to the stream."""
        # Only a response with a connection header, or an HTTP/1.0 one,
        # can ask for the close.
        connection = self.codec.responseConnection
        if (connection is not None or headers.version != "HTTP/1.1") and _closesConnection(
                connection, headers.version):
            self.pool.stats.upstream_cx_close_notify.inc()
        self.stream.onResponseHeaders(headers, endStream)

    def onResponseData(self, data, endStream):
        """Passed to the stream."""
        stream = self.stream
        if stream is not None:
            stream.onResponseData(data, endStream)

    def onResponseTrailers(self, trailers):
        """Passed to the stream."""
        stream = self.stream
        if stream is not None:
            stream.onResponseTrailers(trailers)

    def onResponseComplete(self):
        """Back to the pool (or closed), then the stream hears the end."""
        self.requests += 1
        self._incomplete = False
        stream = self._detach()
        pool = self.pool
        if log.debugEnabled:
            log.debug("%sresponse complete", connTag(self.connection.connectionId))
        maxRequests = pool.clusterPools.maxRequestsPerConnection
        if maxRequests and self.requests >= maxRequests:
            pool.stats.upstream_cx_max_requests.inc()
            if log.debugEnabled:
                log.debug("%smax requests per connection reached",
                          connTag(self.connection.connectionId))
            self.close()
        elif self.codec.keepAlive and not self.closed and not self._expired:
            pool.releaseClient(self)
        else:
            if log.debugEnabled:
                log.debug("%ssaw upstream close connection", connTag(self.connection.connectionId))
            self.close()
        if stream is not None:
            stream.onResponseComplete()

    def onProtocolError(self, details):
        """The host's response could not be parsed: close, reset the request."""
        self.pool.stats.upstream_cx_protocol_error.inc()
        stream = self._detach()
        self.abort()
        if stream is not None:
            stream.onUpstreamReset(PROTOCOL_ERROR)

    def __repr__(self):
        return "<ActiveClient %s %s requests=%d>" % (self.pool.host.addressString, self.state,
                                                     self.requests)
