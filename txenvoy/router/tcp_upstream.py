# -*- test-case-name: tests.router.test_tcp_upstream -*-
"""
CONNECT termination: the router's upstream for a route whose
C{upgrade_configs} has C{upgrade_type: CONNECT} with a C{connect_config}
(Envoy's C{source/extensions/upstreams/http/tcp}).

The request's C{CONNECT host:port} is not sent on: the router opens a plain
TCP connection to the host the cluster chose (for a dynamic forward proxy
cluster, the CONNECT authority resolved through the DNS cache), answers
C{200} once it is connected, then relays the bytes both ways. The end of
the client's stream is a half-close (FIN) towards the host; the host's FIN
ends the response.

A L{TcpPool} gives each stream its own connection (nothing is reused); the
L{TcpClient} is both the pool's client and its own codec, so the router's
L{txenvoy.router.router.UpstreamRequest} drives it as it drives an HTTP one.

An HTTP/1.1 client cannot half-close: its FIN resets the stream, and the
tunnel closes as Envoy's does, locally with its request active. An HTTP/2
client ends its stream (C{END_STREAM}) and the tunnel stays open the other
way until the host's FIN, which closes it as the host's.
"""

from collections import deque

from txenvoy.http.conn_pool import UpstreamWatermark
from txenvoy.http.headers import ResponseHeaders
from txenvoy.http.pool_base import CONNECTION_TERMINATION, PendingAccounting, ReadPausing


def tcpPoolFor(pools, host):
    """
    The L{TcpPool} of C{host} among a cluster's L{ClusterPools}, made on
    first use and kept beside the HTTP ones.
    """
    tcpPools = pools.__dict__.get("tcpPools")
    if tcpPools is None:
        tcpPools = pools.tcpPools = {}
    pool = tcpPools.get(host)
    if pool is None:
        pool = tcpPools[host] = TcpPool(pools, host)
    return pool


def _dropIfIdle(pool):
    # A pool without tunnels goes: a forward proxy meets many hosts.
    if not pool.pending and not pool.clients:
        tcpPools = pool.clusterPools.tcpPools
        if tcpPools.get(pool.host) is pool:
            del tcpPools[pool.host]


class TcpPool(PendingAccounting):
    """
    The CONNECT tunnels of one worker to one host: one new connection per
    stream, counted as Envoy's TCP pool counts them (the stream waits as a
    pending request until its connection is up; a failed connect ejects
    it with C{upstream_rq_pending_failure_eject}).
    """

    #: Tells the router its responses are made here, not by the host.
    terminatesConnect = True
    lastFailedConnection = None

    def __init__(self, clusterPools, host):
        self.clusterPools = clusterPools
        self.cluster = clusterPools.cluster
        self.stats = clusterPools.stats
        self.host = host
        self.hostStats = host.statsFor(self.cluster.workerName)
        self.pending = deque()
        #: C{{PendingStream: TcpClient}} while each connects.
        self.connecting = {}
        #: Its L{TcpClient}s, connecting or connected.
        self.clients = set()

    def newStream(self, callbacks):
        """
        Open a connection for C{callbacks} (an
        L{txenvoy.interfaces.IConnectionPoolCallbacks}).

        @return: a handle with C{cancel()} while it connects, or C{None}.
        """
        pending = self._queue(callbacks)
        if pending is None:
            return None
        if not self.clusterPools.connections.tryAcquire():
            self.stats.upstream_cx_overflow.inc()
            self.clusterPools.connections.acquire()
        client = self.connecting[pending] = TcpClient(self, pending)
        self.clients.add(client)
        client.start()
        return pending

    def cancelPending(self, pending):
        """The stream gave up while connecting: so does its connection."""
        super().cancelPending(pending)
        client = self.connecting.pop(pending, None)
        if client is not None:
            client.abort()

    def releaseClient(self, client):
        """A tunnel is never reused: its connection closes."""
        client.close()

    def _onConnected(self, client, pending):
        self.connecting.pop(pending, None)
        if pending.cancelled:
            client.abort()
            return
        self.pending.remove(pending)
        self._pendingDone()
        pending.callbacks.onPoolReady(client)

    def _onConnectFailed(self, client, pending, reason):
        self.lastFailedConnection = client.connection
        self.clusterPools.connections.release()
        self.connecting.pop(pending, None)
        self.clients.discard(client)
        if not pending.cancelled:
            self.pending.remove(pending)
            self._pendingDone()
            self.stats.upstream_rq_pending_failure_eject.inc()
            pending.callbacks.onPoolFailure(reason)
        _dropIfIdle(self)

    def _onClosed(self, client):
        self.clusterPools.connections.release()
        self.clients.discard(client)
        _dropIfIdle(self)


class TcpClient(ReadPausing):
    """
    One tunnel's upstream connection, and the codec the router writes the
    CONNECT stream to: C{encodeRequest} answers C{200} (the connection is
    up), C{encodeData} relays, and its end half-closes.
    """

    stream = None
    connection = None
    above = False               # the connection's write buffer is full
    connected = False
    closed = False
    closedUnanswered = False
    clientEnded = False         # the client's stream ended: FIN sent on
    finished = False            # both directions ended, the client's first
    # Its wire and header bytes are not counted (IClientCodec).
    wireBytesSent = wireBytesReceived = headerBytesSent = headerBytesReceived = 0

    def __init__(self, pool, pending):
        self.pool = pool
        self.pending = pending
        self.codec = self

    def start(self):
        """Open the connection."""
        pool = self.pool
        self.connection = pool.cluster.connect(pool.host, self)

    def attach(self, stream):
        """Carry C{stream} (called by the stream on pool ready)."""
        self.stream = stream
        if self.above:
            stream.onAboveWriteBufferHighWatermark()

    # The codec's side.

    def encodeRequest(self, request, endStream):
        """The tunnel is up: Envoy's TCP upstream answers C{200} itself."""
        stream = self.stream
        if stream is not None:
            stream.onResponseHeaders(ResponseHeaders(200), False)
        if endStream:
            self._halfClose()

    def encodeData(self, data, endStream):
        """Relay client bytes; their end is a half-close towards the host."""
        if self.closed:
            return
        if data:
            self.connection.write(data)
        if endStream:
            self._halfClose()

    def encodeTrailers(self, trailers):
        """Trailers end the client's stream: a half-close."""
        if not self.closed:
            self._halfClose()

    def _halfClose(self):
        self.clientEnded = True
        self.connection.loseWriteConnection()

    def closingWithIncompleteStream(self):
        """
        Whether the connection closes with its stream active: always, as
        in Envoy's TCP pool, unless the client (an HTTP/2 stream, which can
        half-close) ended first and the host's FIN ended the response.
        """
        return not self.finished

    # Flow control and giving up.

    def resetStream(self):
        """The stream was reset: close the tunnel now."""
        self.stream = None
        self.abort()

    def close(self):
        """Close once what is buffered is written."""
        if not self.closed:
            self.closed = True
            self.connection.close()
            self._stoppedConnecting()

    def abort(self):
        """Close now."""
        if not self.closed:
            self.closed = True
            self.connection.abort()
            self._stoppedConnecting()

    def _stoppedConnecting(self):
        # A connect given up makes no callback: its slot is given back here.
        if not self.connected:
            self.pool._onClosed(self)

    # UpstreamConnection callbacks.

    def onUpstreamConnected(self, connection):
        """Connected: the stream gets its tunnel."""
        self.connection = connection
        self.connected = True
        if self.closed:
            connection.abort()
            return
        # The client stops being read while the host's side is backed up.
        connection.registerProducer(UpstreamWatermark(self), True)
        self.pool._onConnected(self, self.pending)

    def onUpstreamConnectFailed(self, connection, reason):
        """The connect failed: the stream fails with C{reason}."""
        self.closed = True
        self.pool._onConnectFailed(self, self.pending, reason)

    def onUpstreamData(self, data):
        """Host bytes go to the client."""
        stream = self.stream
        if stream is not None and data:
            stream.onResponseData(data, False)

    def onUpstreamReadClosed(self):
        """The host's FIN ends the response."""
        stream = self.stream
        if self.clientEnded:
            # Both directions are done: the connection closes as the
            # host's, with no request active (Envoy, HTTP/2 clients).
            self.finished = True
        if stream is not None:
            self.stream = None
            stream.onResponseData(b"", True)
            stream.onResponseComplete()
        # Else Envoy's downstream stream is reset as the client's connection
        # closes (HTTP/1) or its stream is reset (HTTP/2, its request not
        # ended), and the router's reset closes the tunnel: a local close.
        if not self.closed and not self.finished:
            self.closed = True
            self.connection.close(local=True)

    def onUpstreamClosed(self, reason):
        """The connection is gone; a stream still open is reset."""
        self.closed = True
        self.pool._onClosed(self)
        stream = self.stream
        if stream is not None:
            self.stream = None
            stream.onUpstreamReset(CONNECTION_TERMINATION)
