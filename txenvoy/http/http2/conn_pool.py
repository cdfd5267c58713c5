# -*- test-case-name: tests.http.http2.test_conn_pool -*-
"""
The upstream HTTP/2 connection pool (Envoy's C{Http2::ConnPoolImpl} over
C{MultiplexedActiveClientBase}) and its client codec on the C{h2} library.

One connection carries many streams: a stream asks with
L{Http2ConnPool.newStream} and gets, through C{onPoolReady}, an
L{Http2StreamClient} that the router drives exactly as it drives an
HTTP/1.1 pool's client (C{codec.encodeRequest}, C{encodeData},
C{encodeTrailers}, C{resetStream}, C{pauseReading}...); the response comes
back through the same C{onResponseHeaders} / C{onResponseData} /
C{onResponseTrailers} / C{onResponseComplete} / C{onUpstreamReset}.

Behaviour copied from Envoy:
 - a connection takes streams up to the peer's
   C{SETTINGS_MAX_CONCURRENT_STREAMS} (and the configured
   C{max_concurrent_streams}); past that, and while connections are being
   opened, streams wait (C{max_pending_requests}), and a new connection is
   opened when the waiting streams outnumber the room being made
   (C{max_connections}); C{max_requests} bounds the streams of the cluster;
 - a GOAWAY from the host drains the connection: no new stream goes on it,
   the streams it names finish, and those above its last stream id were
   never processed: they end as a connection termination the router
   replays on another connection without spending a retry (an idempotent,
   complete request), as Envoy retries them;
 - C{upstream_cx_http2_total} counts the connections, C{upstream_rq_total}
   (the router) every stream;
 - C{common_http_protocol_options}: a connection that has carried
   C{max_requests_per_connection} streams takes no more
   (C{upstream_cx_max_requests}), one older than C{max_connection_duration}
   neither (C{upstream_cx_max_duration_reached}); both close once their
   streams are done; C{idle_timeout} closes one without streams
   (C{upstream_cx_idle_timeout});
 - C{connection_keepalive}: a PING every C{interval}; no ACK within
   C{timeout} closes the connection (C{http2.keepalive_timeout} of the
   cluster), failing its streams;
 - flow control: response bytes are acknowledged as the stream takes them,
   except while the downstream is backed up; request bytes wait for the
   host's window.
"""

from collections import deque

from h2.config import H2Configuration
from h2.connection import ConnectionState, H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    PingAckReceived,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import H2Error, ProtocolError
from h2.settings import SettingCodes
from hpack import HPACKError
from zope.interface import implementer

from txenvoy.http.headers import HeaderMap, ResponseHeaders
from txenvoy.http.http2.options import DEFAULT_HTTP2_OPTIONS
from txenvoy.http.pool_base import (
    CONNECTION_TERMINATION,
    OVERFLOW,
    PROTOCOL_ERROR,
    IdleTimer,
    PendingAccounting,
    countAlpnConnection,
    directWriter,
)
from txenvoy.interfaces import IClientCodec, IHttpConnPool, IUpstreamConnectionCallbacks
from txenvoy.server.logging import componentLogger, connTag
from txenvoy.stats.per_worker import StatsStruct

__all__ = ["Http2ConnPool", "Http2ActiveClient", "Http2StreamClient", "REMOTE_RESET",
           "REMOTE_REFUSED_STREAM_RESET"]

log = componentLogger("pool")

#: Envoy's reset reasons for a stream the host reset.
REMOTE_RESET = "remote reset"
REMOTE_REFUSED_STREAM_RESET = "remote refused stream reset"

# Request headers HTTP/2 forbids; the connection manager strips most of
# them already, the codec makes sure.
_CONNECTION_SPECIFIC = frozenset([b"connection", b"keep-alive", b"proxy-connection",
                                  b"transfer-encoding", b"upgrade", b"host"])

# Envoy's upstream HTTP/2 defaults (its Http2ProtocolOptions for clusters).
_UPSTREAM_DEFAULT_STREAMS = 2147483647




@implementer(IClientCodec)
class Http2StreamClient:
    """
    One stream of an upstream HTTP/2 connection: the pool's "client" for
    one request, and its request encoder (C{codec} is itself).

    @ivar stream: the router's upstream request, or C{None}.
    @ivar connection: the L{txenvoy.upstream.connection.UpstreamConnection}.
    """

    closedUnanswered = False
    keepAlive = False
    hasRequestSlot = False
    stream = None
    streamId = None
    # A stream's wire and header bytes are not counted (IClientCodec).
    wireBytesSent = wireBytesReceived = headerBytesSent = headerBytesReceived = 0

    def __init__(self, client):
        self.client = client
        self.connection = client.connection
        self.codec = self
        self.responseInProgress = True
        self._pending = []
        self._pendingEnd = False
        self._pendingTrailers = None
        self._readPaused = False
        self._unacked = 0
        self._done = False
        self._requestSent = False

    def attach(self, stream):
        """Carry C{stream}'s request."""
        self.stream = stream
        if self.client.above:
            stream.onAboveWriteBufferHighWatermark()

    # The request (IClientCodec).

    def encodeRequest(self, request, endStream):
        """Write the request's HEADERS, with its pseudo-headers first."""
        client = self.client
        scheme = request.scheme or (b"https" if client.tls else b"http")
        block = [(b":method", request.method)]
        if request.method == b"CONNECT":
            block.append((b":authority", request.authority or b""))
        else:
            block.append((b":scheme", scheme))
            block.append((b":authority", request.authority or b""))
            block.append((b":path", request.path or b"/"))
        for name, value in request.headers.items():
            if name in _CONNECTION_SPECIFIC:
                continue
            if name == b"te" and value.lower() != b"trailers":
                continue
            block.append((name, value))
        self.streamId = client.openStream(self, block, endStream)
        self._requestSent = True
        if endStream:
            self._pendingEnd = False

    def encodeData(self, data, endStream):
        """Write request body bytes as the host's windows allow."""
        if self._done:
            return
        if data:
            self._pending.append(data)
        if endStream:
            self._pendingEnd = True
        self.client.flushStream(self)

    def encodeTrailers(self, trailers):
        """End the request with trailers."""
        if self._done:
            return
        block = [(n, v) for n, v in trailers.items() if n not in _CONNECTION_SPECIFIC]
        if block:
            self._pendingTrailers = block
        else:
            self._pendingEnd = True
        self.client.flushStream(self)

    # What the router calls on its client.

    def resetStream(self):
        """Abandon the request: RST_STREAM (CANCEL); the connection stays."""
        if not self._done:
            self.client.resetStream(self)

    def pauseReading(self):
        """Stop acknowledging response bytes (the downstream is backed up)."""
        self._readPaused = True

    def resumeReading(self):
        """Acknowledge what was held back."""
        if self._readPaused:
            self._readPaused = False
            if self._unacked:
                self.client.acknowledge(self)

    def releaseRequestSlot(self):
        """Give back the stream's C{max_requests} slot."""
        if self.hasRequestSlot:
            self.hasRequestSlot = False
            self.client.pool.clusterPools.requests.release()


@implementer(IUpstreamConnectionCallbacks)
class Http2ActiveClient(IdleTimer):
    """
    One upstream HTTP/2 connection of a pool and its C{h2} connection.

    @ivar streams: C{{streamId: Http2StreamClient}} in flight.
    @ivar draining: a GOAWAY came (or the pool closes it): no new stream.
    """

    above = False
    closed = False
    connected = False
    draining = False
    _durationTimer = None
    _pingTimer = None
    _pingTimeout = None

    def __init__(self, pool):
        self.pool = pool
        self.connection = None
        self.streams = {}
        self.reserved = 0           # streams handed out, HEADERS not sent yet
        self.requests = 0
        self.opened = 0             # streams handed out, for max_requests_per_connection
        self.tls = pool.cluster.info.transportSocket is not None
        options = pool.options
        self._h2 = H2Connection(H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=False,
            normalize_outbound_headers=False, validate_inbound_headers=True))
        self._h2.local_settings = type(self._h2.local_settings)(client=True, initial_values={
            SettingCodes.ENABLE_PUSH: 0,
            SettingCodes.HEADER_TABLE_SIZE: options.hpackTableSize,
            SettingCodes.INITIAL_WINDOW_SIZE: options.initialStreamWindowSize,
        })
        self.peerMaxStreams = min(options.maxConcurrentStreams, _UPSTREAM_DEFAULT_STREAMS)

    def start(self):
        pool = self.pool
        self.connection = pool.cluster.connect(pool.host, self, pool.socketOptions)

    @property
    def capacity(self):
        """How many more streams this connection takes now."""
        if self.draining or self.closed:
            return 0
        return self.peerMaxStreams - len(self.streams) - self.reserved

    def newStream(self):
        """Reserve room for one stream; its HEADERS follow (L{openStream})."""
        self.reserved += 1
        self.opened += 1
        self.stopIdleTimer()
        maxRequests = self.pool.clusterPools.maxRequestsPerConnection
        if maxRequests and self.opened >= maxRequests and not self.draining:
            # Envoy's remaining_streams_ reached 0: the connection drains.
            self.pool.stats.upstream_cx_max_requests.inc()
            self._drain()
        return Http2StreamClient(self)

    def _drain(self):
        """No new stream here; closed once the streams in flight are done."""
        self.draining = True
        self.pool.onDraining(self)

    def openStream(self, stream, block, endStream):
        h2 = self._h2
        self.reserved -= 1
        streamId = h2.get_next_available_stream_id()
        self.streams[streamId] = stream
        try:
            h2.send_headers(streamId, block, end_stream=endStream)
        except H2Error:
            pass
        self._flush()
        return streamId

    def flushStream(self, stream):
        """Send what the host's windows allow of C{stream}'s request body."""
        if self.closed or stream.streamId is None or stream._done:
            return
        h2 = self._h2
        sid = stream.streamId
        pending = stream._pending
        try:
            while pending:
                window = h2.local_flow_control_window(sid)
                if window <= 0:
                    break
                chunk = pending[0]
                size = min(window, h2.max_outbound_frame_size)
                if len(chunk) > size:
                    pending[0] = chunk[size:]
                    chunk = chunk[:size]
                else:
                    pending.pop(0)
                last = not pending and stream._pendingEnd and stream._pendingTrailers is None
                h2.send_data(sid, chunk, end_stream=last)
                if last:
                    stream._pendingEnd = False
            if not pending:
                if stream._pendingTrailers is not None:
                    block, stream._pendingTrailers = stream._pendingTrailers, None
                    stream._pendingEnd = False
                    h2.send_headers(sid, block, end_stream=True)
                elif stream._pendingEnd:
                    stream._pendingEnd = False
                    h2.end_stream(sid)
        except H2Error:
            pass
        self._flush()

    def acknowledge(self, stream):
        unacked, stream._unacked = stream._unacked, 0
        if self.closed or stream._done:
            return
        try:
            self._h2.acknowledge_received_data(unacked, stream.streamId)
        except H2Error:
            return
        self._flush()

    def resetStream(self, stream):
        """The router abandoned C{stream}."""
        if stream.streamId is None:
            # Never opened: only its reservation goes.
            self.reserved -= 1
            self._endStream(stream, None)
            return
        if not self.closed:
            try:
                self._h2.reset_stream(stream.streamId, ErrorCodes.CANCEL)
            except H2Error:
                pass
            self._flush()
        self._endStream(stream, None)

    def _endStream(self, stream, notify, *args):
        if stream._done:
            return
        stream._done = True
        stream.responseInProgress = False
        self.streams.pop(stream.streamId, None)
        stream.releaseRequestSlot()
        target = stream.stream
        stream.stream = None
        if target is not None and self.above:
            target.onBelowWriteBufferLowWatermark()
        self.pool.onStreamDone(self)
        if notify is not None and target is not None:
            getattr(target, notify)(*args)

    # UpstreamConnection callbacks.

    def onUpstreamConnected(self, connection):
        self.connection = connection
        self.connected = True
        if self.pool.mixedPool is not None:
            countAlpnConnection(self.pool)
        self._tx = self.pool.stats.upstream_cx_tx_bytes_total
        self._write = directWriter(connection.transport)
        h2 = self._h2
        h2.initiate_connection()
        extra = self.pool.options.initialConnectionWindowSize - 65535
        if extra > 0:
            h2.increment_flow_control_window(extra)
        self._flush()
        if self.closed:
            connection.abort()
            return
        reactor = self.pool.cluster.reactor
        duration = self.pool.clusterPools.maxConnectionDuration
        if duration:
            self._durationTimer = reactor.callLater(duration, self._onMaxDuration)
        if self.pool.options.keepaliveInterval:
            self._pingTimer = reactor.callLater(self.pool.options.keepaliveInterval,
                                                self._sendPing)
        self.pool.onConnected(self)

    def _onMaxDuration(self):
        self._durationTimer = None
        if self.closed:
            return
        self.pool.stats.upstream_cx_max_duration_reached.inc()
        if not self.draining:
            self._drain()
        if not self.streams and not self.reserved:
            self.close()

    # Keepalive (connection_keepalive).

    def _sendPing(self):
        self._pingTimer = None
        if self.closed:
            return
        try:
            self._h2.ping(b"\x00" * 8)
        except H2Error:
            return
        self._flush()
        self._pingTimeout = self.pool.cluster.reactor.callLater(
            self.pool.options.keepaliveTimeout, self._onPingTimeout)

    def _onPingAck(self):
        timer, self._pingTimeout = self._pingTimeout, None
        if timer is None:
            return
        if timer.active():
            timer.cancel()
        interval = self.pool.options.keepaliveInterval
        if interval and not self.closed:
            self._pingTimer = self.pool.cluster.reactor.callLater(interval, self._sendPing)

    def _onPingTimeout(self):
        self._pingTimeout = None
        if self.closed:
            return
        self.pool.http2Stats().keepalive_timeout.inc()
        self._fail(CONNECTION_TERMINATION)
        self.abort()

    def _cancelTimers(self):
        self._cancelIdleTimer()
        for name in ("_durationTimer", "_pingTimer", "_pingTimeout"):
            timer = getattr(self, name)
            setattr(self, name, None)
            if timer is not None and timer.active():
                timer.cancel()

    def onUpstreamConnectFailed(self, connection, reason):
        self.closed = True
        self.pool.onConnectFailed(self, reason)

    def onUpstreamData(self, data):
        if self.closed:
            return
        try:
            events = self._h2.receive_data(data)
        except (ProtocolError, HPACKError, H2Error, ValueError, IndexError, KeyError,
                UnicodeError):
            self.pool.stats.upstream_cx_protocol_error.inc()
            self._flush()
            self._fail(PROTOCOL_ERROR)
            self.abort()
            return
        for event in events:
            self._handle(event)
        self._flush()

    def onUpstreamReadClosed(self):
        self.close()

    def onUpstreamClosed(self, reason):
        self.closed = True
        self._cancelTimers()
        self._fail(CONNECTION_TERMINATION)
        self.pool.onClosed(self)

    def _fail(self, reason):
        for stream in list(self.streams.values()):
            self._endStream(stream, "onUpstreamReset", reason)

    # Events.

    def _handle(self, event):
        kind = type(event)
        stream = self.streams.get(getattr(event, "stream_id", None))
        if kind is ResponseReceived:
            if stream is None:
                return
            status = 0
            headers = []
            for name, value in event.headers:
                if name == b":status":
                    status = int(value)
                elif name[:1] != b":":
                    headers.append((name, value))
            ended = event.stream_ended is not None
            target = stream.stream
            if target is not None:
                target.onResponseHeaders(ResponseHeaders(status, HeaderMap.fromList(headers)),
                                         ended)
            if ended:
                self._complete(stream)
        elif kind is DataReceived:
            length = event.flow_controlled_length
            if stream is None:
                if length:
                    self._h2.acknowledge_received_data(length, event.stream_id)
                return
            if length:
                if stream._readPaused:
                    stream._unacked += length
                else:
                    self._h2.acknowledge_received_data(length, event.stream_id)
            ended = event.stream_ended is not None
            target = stream.stream
            if target is not None:
                target.onResponseData(event.data, ended)
            if ended:
                self._complete(stream)
        elif kind is TrailersReceived:
            if stream is None:
                return
            target = stream.stream
            if target is not None:
                target.onResponseTrailers(HeaderMap.fromList(
                    [(n, v) for n, v in event.headers if n[:1] != b":"]))
            self._complete(stream)
        elif kind is StreamEnded:
            pass
        elif kind is StreamReset:
            if stream is not None:
                reason = (REMOTE_REFUSED_STREAM_RESET
                          if event.error_code == ErrorCodes.REFUSED_STREAM else REMOTE_RESET)
                if reason == REMOTE_REFUSED_STREAM_RESET:
                    # Never processed: safe to send again elsewhere.
                    stream.closedUnanswered = True
                    reason = CONNECTION_TERMINATION
                self._endStream(stream, "onUpstreamReset", reason)
        elif kind is RemoteSettingsChanged:
            changed = event.changed_settings.get(SettingCodes.MAX_CONCURRENT_STREAMS)
            if changed is not None:
                self.peerMaxStreams = min(changed.new_value,
                                          self.pool.options.maxConcurrentStreams)
                self.pool.onCapacity(self)
        elif kind is WindowUpdated:
            targets = (list(self.streams.values()) if event.stream_id == 0
                       else [stream] if stream is not None else [])
            for s in targets:
                if s._pending or s._pendingEnd or s._pendingTrailers is not None:
                    self.flushStream(s)
        elif kind is ConnectionTerminated:
            self._onGoAway(event)
        elif kind is PingAckReceived:
            self._onPingAck()

    def _reopenAfterGoAway(self):
        machine = self._h2.state_machine
        if machine.state == ConnectionState.CLOSED:
            machine.state = ConnectionState.CLIENT_OPEN

    def _complete(self, stream):
        self.requests += 1
        self._endStream(stream, "onResponseComplete")

    def _onGoAway(self, event):
        self.draining = True
        # h2 closes its state machine on a GOAWAY; the streams it spares
        # still run to their end (RFC 9113 section 6.8), so it reopens.
        self._reopenAfterGoAway()
        self.pool.stats.upstream_cx_close_notify.inc()
        last = event.last_stream_id
        for sid, stream in sorted(self.streams.items()):
            if last is not None and sid > last:
                # The host never processed it: replayed elsewhere.
                stream.closedUnanswered = True
                self._endStream(stream, "onUpstreamReset", CONNECTION_TERMINATION)
        self.pool.onDraining(self)
        if not self.streams:
            self.close()

    # Closing.

    def startIdleTimer(self):
        if not self.closed:
            IdleTimer.startIdleTimer(self)

    def _onIdleTimeout(self):
        if not self.streams and not self.reserved:
            self.pool.stats.upstream_cx_idle_timeout.inc()
            self.close()

    def close(self):
        """GOAWAY, then close once written."""
        if self.closed:
            return
        self.closed = True
        self._cancelTimers()
        conn = self.connection
        if conn is not None and self.connected:
            try:
                self._h2.close_connection()
            except H2Error:
                pass
            self._flush()
            conn.close()

    def abort(self):
        if self.closed and self.connection is None:
            return
        self.closed = True
        self._cancelTimers()
        if self.connection is not None:
            self.connection.abort()

    def closingWithIncompleteStream(self):
        """Whether a stream is in flight (for the connection's stats)."""
        return bool(self.streams)

    def _flush(self):
        data = self._h2.data_to_send()
        if data and self.connected and not (self.closed and self.connection is None):
            # (Bytes added make the counter used.)
            self._tx.value += len(data)
            self._write(data)


@implementer(IHttpConnPool)
class Http2ConnPool(PendingAccounting):
    """
    The HTTP/2 connections of one worker to one host of one cluster.

    @ivar clients: connected clients taking streams, newest last.
    @ivar connecting: clients not connected yet.
    @ivar pending: L{PendingStream}s waiting, oldest first.
    """

    #: The L{txenvoy.http.mixed_conn_pool.MixedConnPool} it is part of, or
    #: C{None}.
    mixedPool = None

    def __init__(self, clusterPools, host, socketOptions=None, options=DEFAULT_HTTP2_OPTIONS):
        self.clusterPools = clusterPools
        self.cluster = clusterPools.cluster
        self.stats = clusterPools.stats
        self.host = host
        self.socketOptions = socketOptions
        self.options = options
        self.hostStats = host.statsFor(self.cluster.workerName)
        self.clients = []
        self.draining = []
        self.connecting = []
        self.pending = deque()
        self.lastFailedConnection = None

    def http2Stats(self):
        """The cluster's C{http2.*} codec counters (Envoy's per-cluster codec stats)."""
        cluster = self.cluster
        return StatsStruct(cluster.dispatcher.stats, cluster.info.statPrefix + "http2.",
                           ("keepalive_timeout",))

    # IHttpConnPool

    def newStream(self, callbacks):
        """A stream on a connection with room, else wait for one."""
        for client in reversed(self.clients):
            if client.capacity > 0:
                self._attach(client, callbacks)
                return None
        pending = self._queue(callbacks)
        if pending is None:
            return None
        room = sum(c.capacity for c in self.connecting)
        if room < len(self.pending):
            self._tryConnect()
        return pending

    def releaseClient(self, client):
        """A stream handed out and given back unused (its request abandoned)."""
        client.resetStream()

    def closeIdle(self):
        """Close the connections that carry no stream."""
        for client in list(self.clients):
            if not client.streams and not client.reserved:
                client.close()

    # Streams.

    def _attach(self, client, callbacks):
        if not self.clusterPools.requests.tryAcquire():
            self.stats.upstream_rq_active_overflow.inc()
            callbacks.onPoolFailure(OVERFLOW)
            return
        stream = client.newStream()
        stream.hasRequestSlot = True
        if log.debugEnabled:
            log.debug("%screating stream", connTag(client.connection.connectionId))
        callbacks.onPoolReady(stream)

    def _serve(self, client):
        while self.pending and client.capacity > 0:
            pending = self.pending.popleft()
            self._pendingDone()
            self._attach(client, pending.callbacks)

    def _tryConnect(self):
        connections = self.clusterPools.connections
        if connections.tryAcquire():
            self._connect()
            return
        self.stats.upstream_cx_overflow.inc()
        if not (self.clients or self.connecting):
            connections.acquire()
            self._connect()

    def adopt(self, connection, waiting):
        """
        Take C{connection}, connected by another (C{auto_config}'s first
        connection, whose handshake chose C{h2}), as one of this pool's,
        with the streams that waited for it.

        @param waiting: L{PendingStream}s, oldest first; they wait here now.
        @return: its L{Http2ActiveClient}.
        """
        self.stats.upstream_cx_http2_total.inc()
        return self._adopt(Http2ActiveClient(self), connection, waiting)

    def _connect(self):
        self.stats.upstream_cx_http2_total.inc()
        client = Http2ActiveClient(self)
        self.connecting.append(client)
        client.start()

    # What the clients tell.

    def onConnected(self, client):
        self.connecting.remove(client)
        self.clients.append(client)
        self._serve(client)
        if not client.streams and not client.reserved:
            client.startIdleTimer()
        if self.pending:
            room = sum(c.capacity for c in self.connecting)
            if room < len(self.pending):
                self._tryConnect()

    def onCapacity(self, client):
        """The host's SETTINGS changed how many streams a connection takes."""
        if client in self.clients:
            self._serve(client)

    def onStreamDone(self, client):
        if client in self.clients:
            self._serve(client)
            if not client.streams and not client.reserved:
                client.startIdleTimer()
        elif client in self.draining and not client.streams and not client.reserved:
            client.close()

    def onDraining(self, client):
        if client in self.clients:
            self.clients.remove(client)
            self.draining.append(client)
        if self.pending and not self.connecting:
            self._tryConnect()

    def onConnectFailed(self, client, reason):
        self.lastFailedConnection = client.connection
        self.connecting.remove(client)
        self.clusterPools.connections.release()
        self._ejectPending(reason)
        self._checkIdle()

    def onClosed(self, client):
        for group in (self.clients, self.draining, self.connecting):
            if client in group:
                group.remove(client)
        self.clusterPools.connections.release()
        self.stats.upstream_rq_per_cx.recordValue(client.requests)
        if self.pending:
            room = sum(c.capacity for c in self.connecting)
            if room < len(self.pending):
                self._tryConnect()
        self._checkIdle()

    def isIdle(self):
        """Whether it has no connection and no waiting stream."""
        return not (self.clients or self.draining or self.connecting or self.pending)

    def _checkIdle(self):
        if self.isIdle():
            self.clusterPools._onPoolIdle(self)
