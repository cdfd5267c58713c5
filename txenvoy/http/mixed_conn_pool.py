# -*- test-case-name: tests.http.test_mixed_conn_pool -*-
"""
The upstream pool of a cluster with C{auto_config} (Envoy's
C{HttpConnPoolImplMixed}): each TLS connection offers ALPN C{h2} and
C{http/1.1}, and once its handshake is done it joins the HTTP/2 pool or the
HTTP/1.1 pool of the same host, according to what the host chose (HTTP/1.1
when it chose nothing).

While the protocol of the host is not known, streams wait here and one
connection is opened; its handshake decides. From then on a stream goes
straight to the pool of that protocol, whose own connections offer ALPN the
same way. Each pool counts its connections as Envoy's do
(C{upstream_cx_http1_total} or C{upstream_cx_http2_total}).
"""

from collections import deque

from zope.interface import implementer

from txenvoy.http.pool_base import PendingAccounting
from txenvoy.interfaces import IHttpConnPool, IUpstreamConnectionCallbacks
from txenvoy.server.logging import componentLogger, connTag
from txenvoy.upstream.resource_manager import UNLIMITED

__all__ = ["MixedConnPool", "ALPN_PROTOCOLS", "HTTP11", "HTTP2"]

log = componentLogger("pool")

HTTP11 = b"http/1.1"
HTTP2 = b"h2"

#: What C{auto_config} offers, in Envoy's order.
ALPN_PROTOCOLS = (HTTP2, HTTP11)


@implementer(IUpstreamConnectionCallbacks)
class _AlpnClient:
    """
    The first connection to a host, until its handshake is done; then the
    connection belongs to an HTTP/1.1 L{ActiveClient} or an
    L{Http2ActiveClient}, which it passes everything on to.
    """

    delegate = None

    def __init__(self, pool):
        self.pool = pool
        self.connection = None

    def start(self):
        pool = self.pool
        self.connection = pool.cluster.connect(pool.host, self, pool.socketOptions)

    def onUpstreamConnected(self, connection):
        negotiated = getattr(connection.transport, "negotiatedProtocol", None)
        self.delegate = self.pool._onNegotiated(self, connection, negotiated)

    def onUpstreamConnectFailed(self, connection, reason):
        self.pool._onConnectFailed(self, reason)

    def onUpstreamData(self, data):
        self.delegate.onUpstreamData(data)

    def onUpstreamReadClosed(self):
        self.delegate.onUpstreamReadClosed()

    def onUpstreamClosed(self, reason):
        self.delegate.onUpstreamClosed(reason)

    def closingWithIncompleteStream(self):
        delegate = self.delegate
        return delegate is not None and delegate.closingWithIncompleteStream()


@implementer(IHttpConnPool)
class MixedConnPool(PendingAccounting):
    """
    The C{auto_config} connections of one worker to one host.

    @ivar protocol: L{HTTP2} or L{HTTP11} once a handshake said, else
        C{None}.
    @ivar http1: the L{HttpConnPool} its HTTP/1.1 connections join.
    @ivar http2: the L{Http2ConnPool} its HTTP/2 connections join.
    @ivar pending: L{PendingStream}s waiting for the first handshake.
    """

    def __init__(self, clusterPools, host, socketOptions, http1, http2):
        """
        @param socketOptions: the transport socket options of every
            connection, offering L{ALPN_PROTOCOLS}.
        @param http1: an L{txenvoy.http.conn_pool.HttpConnPool} of C{host}
            with the same options.
        @param http2: an L{txenvoy.http.http2.conn_pool.Http2ConnPool} of
            C{host} with the same options.
        """
        self.clusterPools = clusterPools
        self.cluster = clusterPools.cluster
        self.stats = clusterPools.stats
        self.host = host
        self.socketOptions = socketOptions
        self.hostStats = host.statsFor(self.cluster.workerName)
        self.protocol = None
        self.pending = deque()
        self.probe = None
        self.http1 = http1
        self.http2 = http2
        # Its parts: dropped with it, once all of it is idle.
        http1.mixedPool = http2.mixedPool = self
        self._lastFailed = None

    @property
    def lastFailedConnection(self):
        """The last connection that failed to connect, for the router's log line."""
        return (self._lastFailed or self.http1.lastFailedConnection
                or self.http2.lastFailedConnection)

    mixedPool = None

    def isIdle(self):
        """Whether it has no connection and no waiting stream, nor its parts."""
        return (self.probe is None and not self.pending and self.http1.isIdle()
                and self.http2.isIdle())

    def _poolOf(self, protocol):
        return self.http2 if protocol == HTTP2 else self.http1

    # IHttpConnPool

    def newStream(self, callbacks):
        """A stream on the pool of the host's protocol, or wait for the first handshake."""
        if self.protocol is not None:
            return self._poolOf(self.protocol).newStream(callbacks)
        pending = self._queue(callbacks)
        if pending is not None and self.probe is None:
            self._connect()
        return pending

    def releaseClient(self, client):
        """Given back to the pool it came from."""
        client.pool.releaseClient(client)

    def closeIdle(self):
        """Close the idle connections of both protocols."""
        self.http1.closeIdle()
        self.http2.closeIdle()

    # The first connection.

    def _connect(self):
        connections = self.clusterPools.connections
        perHost = self.clusterPools.resources.maxConnectionsPerHost
        if not ((perHost >= UNLIMITED or self.host.stats("cx_active") < perHost)
                and connections.tryAcquire()):
            # The host has no connection at all: one is opened anyway, as
            # both pools do, so that its streams are not stranded.
            self.stats.upstream_cx_overflow.inc()
            connections.acquire()
        self.probe = _AlpnClient(self)
        self.probe.start()

    def _onNegotiated(self, probe, connection, negotiated):
        """
        The first handshake is done: the connection joins the pool of the
        protocol chosen, and the waiting streams follow it there.

        @return: the client that now owns C{connection}.
        """
        self.probe = None
        protocol = HTTP2 if negotiated == HTTP2 else HTTP11
        self.protocol = protocol
        pool = self._poolOf(protocol)
        if log.debugEnabled:
            log.debug("%sALPN negotiated %r", connTag(connection.connectionId), negotiated)
        waiting = list(self.pending)
        self.pending.clear()
        return pool.adopt(connection, waiting)

    def _onConnectFailed(self, probe, reason):
        self.probe = None
        self._lastFailed = probe.connection
        self.clusterPools.connections.release()
        self._ejectPending(reason)
        if self.isIdle():
            self.clusterPools._onPoolIdle(self)
