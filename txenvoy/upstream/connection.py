# -*- test-case-name: tests.upstream.test_connection -*-
"""
One upstream TCP connection (Envoy's upstream C{Network::ClientConnection}
plus the accounting its connection pools do).

An L{UpstreamConnection} is the Twisted protocol for a socket the worker's
reactor opens to a host. It counts Envoy's C{cluster.<name>.upstream_cx_*}
stats and the host's C{cx_*} stats, and hands everything else to a
callbacks object (tcp_proxy's upstream side, an HTTP codec):

 - C{onUpstreamConnected(upstreamConnection)}
 - C{onUpstreamConnectFailed(upstreamConnection, reason)}: C{reason} is
   Envoy's text (L{CONNECT_TIMEOUT}, L{REMOTE_CONNECTION_FAILURE} or
   L{LOCAL_CONNECTION_FAILURE}); the Twisted failure is kept as
   C{upstreamConnection.failureReason}
 - C{onUpstreamData(data)}
 - C{onUpstreamReadClosed()}: the host half-closed (FIN); we may still
   write
 - C{onUpstreamClosed(reason)}: fully closed; C{reason} is the Twisted
   C{Failure} given to C{connectionLost}

Reads go straight to C{onUpstreamData} through a small closure that adds
the byte count, bound once when the connection is made: the per-read cost
is one extra Python call.
"""

import errno
import os
import select
import socket
from sys import intern

from twisted.internet import error, tcp
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from txenvoy.network.address import addressTuple
from txenvoy.network.pipe import PipeAddress
from txenvoy.network.read_loop import connectTCP, keepLossOnly, readUntilDrained
from txenvoy.network.user_space import InternalAddress, connectPair
from txenvoy.server.logging import componentLogger, connTag

log = componentLogger("connection")

#: Envoy's reset reasons for a failed upstream connect, as they appear in
#: local reply bodies (C{... reset reason: connection timeout}).
CONNECT_TIMEOUT = "connection timeout"
REMOTE_CONNECTION_FAILURE = "remote connection failure"
LOCAL_CONNECTION_FAILURE = "local connection failure"

_CONNECTING = 0
_CONNECTED = 1
_FAILED = 2
_CLOSED = 3

#: What L{UpstreamConnection.peek} finds on an idle connection.
PEEK_IDLE = 0       # nothing: the host has not closed it
PEEK_CLOSED = 1     # the host's FIN or reset waits to be read
PEEK_DATA = 2       # bytes nobody asked for wait to be read

_PEEK_FLAGS = socket.MSG_PEEK | getattr(socket, "MSG_DONTWAIT", 0)
_HAS_POLL = hasattr(select, "poll")


class _UpstreamFactory(ClientFactory):
    """Routes the connector's events to its one L{UpstreamConnection}."""

    noisy = False

    def __init__(self, connection):
        self._connection = connection

    def buildProtocol(self, addr):
        return self._connection._buildProtocol()

    def clientConnectionFailed(self, connector, reason):
        self._connection._connectFailed(reason)

    def clientConnectionLost(self, connector, reason):
        pass


@implementer(IHalfCloseableProtocol)
class UpstreamConnection(Protocol):
    """
    A connection to one upstream host, owned by one worker.

    The callbacks may also have C{closingWithIncompleteStream()}: whether
    closing now interrupts a request (Envoy counts those closes again in
    C{upstream_cx_destroy_{local,remote}_with_active_rq}). Without it, a
    connected connection always carries one (a TCP proxy's connection is
    its stream, as Envoy's TCP pool counts it).

    @ivar host: the L{txenvoy.upstream.host.Host}.
    @ivar hostStats: this worker's L{txenvoy.upstream.host.HostStats} for
        that host (the HTTP side counts C{rq_*} there).
    @ivar cluster: the worker's L{ThreadLocalCluster}.
    @ivar transport: the Twisted transport once connected, else C{None}.
    @ivar connected: True between connect and close.
    @ivar failureReason: the Twisted C{Failure} of a failed connect.
    @ivar timedOut: whether the connect timed out.
    @ivar closedLocally: whether we (not the host) closed it.
    @ivar connectionId: its id, from the same sequence as downstream
        connections' (Envoy's C{[C1]} in C{Attached upstream connection [C1]}).
    """

    # One per upstream connection, idle ones included: slots keep it free
    # of a per-instance dict (an idle tcp_proxy connection's memory).
    __slots__ = ("factory", "transport", "connected", "_rx", "_poller",
                 "transportFailureReason", "cluster", "host", "callbacks", "socketOptions",
                 "connectionId", "hostStats", "failureReason", "timedOut", "closedLocally",
                 "_state", "_reactor", "_stats", "_connector", "_timer", "_startTime",
                 "_pendingWrites", "_pendingWriteClose", "_pendingProducer", "_readPaused",
                 "_readClosed", "_writeClosed", "_localAddress", "readLimit")

    def __init__(self, cluster, host, callbacks, socketOptions=None):
        self.factory = None
        self.transport = None
        self.connected = False
        self._poller = None
        #: Why the transport socket failed to connect (Envoy's
        #: C{%UPSTREAM_TRANSPORT_FAILURE_REASON%}, e.g. C{TLS_error:|...}),
        #: or C{""}.
        self.transportFailureReason = ""
        self.cluster = cluster
        self.host = host
        self.callbacks = callbacks
        self.socketOptions = socketOptions
        self.connectionId = cluster.dispatcher.nextConnectionId()
        self.hostStats = host.statsFor(cluster.workerName)
        self.failureReason = None
        self.timedOut = False
        self.closedLocally = False
        self._state = _CONNECTING
        self._reactor = cluster.reactor
        self._stats = cluster.stats
        self._rx = cluster.stats.upstream_cx_rx_bytes_total
        self._connector = None
        self._timer = None
        self._startTime = 0.0
        # What is written before the connection is up; a list only then.
        self._pendingWrites = None
        self._pendingWriteClose = False
        self._pendingProducer = None
        self._readPaused = False
        self._readClosed = False
        self._localAddress = None
        self._writeClosed = False
        #: The most bytes the next read takes (0: the buffer limit, which
        #: no read exceeds); the HTTP/1.1 codec reads heads in small reads,
        #: bodies in large ones.
        self.readLimit = 0

    # --- connecting ----------------------------------------------------

    def _start(self):
        info = self.cluster.info
        stats = self._stats
        hs = self.hostStats
        stats.upstream_cx_total.inc()
        # Active from the attempt until destroyed, as Envoy's pools count.
        stats.upstream_cx_active.inc()
        hs.cx_total += 1
        hs.cx_active += 1
        reactor = self._reactor
        self._startTime = reactor.seconds()
        ip, port = self.host.address
        if log.debugEnabled:
            log.debug("%sconnecting to %s", connTag(self.connectionId), self.host.addressString)
        self._timer = reactor.callLater(info.connectTimeout, self._onConnectTimeout)
        factory = _UpstreamFactory(self)
        transportSocket = info.transportSocket
        if transportSocket is not None:
            if self.socketOptions is None:
                factory = transportSocket.wrapProtocolFactory(factory, reactor, self.host,
                                                              self.cluster)
            else:
                factory = transportSocket.wrapProtocolFactory(factory, reactor, self.host,
                                                              self.cluster, self.socketOptions)
        try:
            if isinstance(ip, InternalAddress):
                self._connector = _InternalConnector(self.cluster, ip, factory, transportSocket,
                                                     self.host)
            elif isinstance(ip, PipeAddress):
                self._connector = reactor.connectUNIX(ip.sockaddr, factory,
                                                      timeout=info.connectTimeout)
            else:
                # With no transport socket this is the socket's protocol,
                # which reads until drained (see connectionMade).
                self._connector = connectTCP(
                    reactor, ip, port, factory, timeout=info.connectTimeout,
                    bindAddress=info.bindAddress, draining=transportSocket is None)
        except Exception:
            # Report on the next turn, as a refused connect would be, so
            # that callbacks never run before connect() returns.
            failure = Failure()
            reactor.callLater(0, self._connectFailed, failure)
            return
        if log.debugEnabled:
            log.debug("%sconnection in progress", connTag(self.connectionId))

    def _onConnectTimeout(self):
        self._timer = None
        if self._state != _CONNECTING:
            return
        if log.debugEnabled:
            log.debug("%sconnect timeout", connTag(self.connectionId))
        self.timedOut = True
        # Leave the connecting state first: stopping the connector reports
        # a failure of its own, which must find the attempt already over.
        self._state = _FAILED
        self._stopConnecting(self._connector)
        self._fail(Failure(error.TimeoutError("connect to %s" % (self.host.addressString,))))

    def _stopConnecting(self, connector):
        self._connector = None
        if connector is not None:
            try:
                connector.stopConnecting()
            except error.NotConnectingError:
                # Connected, but the transport socket's handshake is not
                # done: drop the socket.
                transport = getattr(connector, "transport", None)
                if transport is not None:
                    transport.abortConnection()

    def _cancelTimer(self):
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _connectFailed(self, reason):
        if self._state != _CONNECTING:
            # Our own timeout or cancel already accounted for it.
            return
        if reason.check(error.TimeoutError):
            self.timedOut = True
        self._fail(reason)

    def _fail(self, reason):
        self._state = _FAILED
        self._cancelTimer()
        self._connector = None
        self.failureReason = reason
        self.transportFailureReason = getattr(reason.value, "transportFailureReason", "")
        stats = self._stats
        hs = self.hostStats
        stats.upstream_cx_connect_fail.inc()
        hs.cx_connect_fail += 1
        local = False
        if self.timedOut:
            stats.upstream_cx_connect_timeout.inc()
            text = CONNECT_TIMEOUT
            local = True
        elif reason.check(error.ConnectBindError):
            stats.bind_errors.inc()
            text = LOCAL_CONNECTION_FAILURE
            local = True
        else:
            text = REMOTE_CONNECTION_FAILURE
        if log.debugEnabled:
            tag = connTag(self.connectionId)
            if not self.timedOut:
                log.debug("%s%s", tag, self.connectFailureDetail())
            log.debug("%sclosing socket: %d", tag, 1 if local else 0)
        # Envoy destroys the failed connection like any other: it shows in
        # upstream_cx_destroy{,_local,_remote} and upstream_cx_length_ms.
        self._destroyed(local, False)
        self._pendingWrites = None
        self.callbacks.onUpstreamConnectFailed(self, text)

    def connectFailureDetail(self):
        """
        Why the connect failed, in Envoy's words for its debug log and its
        C{failure reason} (C{delayed connect error: Connection refused}).
        """
        reason = self.failureReason
        if reason is None:
            return ""
        if self.timedOut:
            return "connect timeout"
        if self.transportFailureReason:
            return self.transportFailureReason
        value = reason.value
        code = getattr(value, "osError", None)
        if code is None and isinstance(value, error.ConnectionRefusedError):
            code = errno.ECONNREFUSED
        if isinstance(code, int):
            return "delayed connect error: %s" % (os.strerror(code),)
        return "delayed connect error: %s" % (reason.getErrorMessage(),)

    def _destroyed(self, local, activeRequest):
        stats = self._stats
        stats.upstream_cx_destroy.inc()
        if local:
            stats.upstream_cx_destroy_local.inc()
        else:
            stats.upstream_cx_destroy_remote.inc()
        if activeRequest:
            stats.upstream_cx_destroy_with_active_rq.inc()
            if local:
                stats.upstream_cx_destroy_local_with_active_rq.inc()
            else:
                stats.upstream_cx_destroy_remote_with_active_rq.inc()
        stats.upstream_cx_active.dec()
        self.hostStats.cx_active -= 1
        stats.upstream_cx_length_ms.recordValue(
            (self._reactor.seconds() - self._startTime) * 1000.0)

    def localAddress(self):
        """
        C{(host, port)} of our end once connected, else C{None} (Envoy's
        C{%UPSTREAM_LOCAL_ADDRESS%}). Asked once per connection, not per
        request: it does not change.
        """
        local = self._localAddress
        if local is None:
            transport = self.transport
            if transport is None:
                return None
            local = None
            sock = getattr(transport, "socket", None)
            if isinstance(sock, socket.socket):
                name = sock.getsockname()
                if type(name) is tuple and len(name) == 2:
                    # IPv4: held by every connection, with its host text
                    # shared (a worker has few local addresses).
                    local = (intern(name[0]), name[1])
            if local is None:
                local = addressTuple(transport.getHost())
            if self.connected:
                self._localAddress = local
        return local

    def _buildProtocol(self):
        if self._state != _CONNECTING:
            return None
        return self

    def connectionMade(self):
        if log.debugEnabled:
            log.debug("%sconnected", connTag(self.connectionId))
        self._state = _CONNECTED
        self._connector = None
        self._cancelTimer()
        self.connected = True
        now = self._reactor.seconds()
        stats = self._stats
        stats.upstream_cx_connect_ms.recordValue((now - self._startTime) * 1000.0)
        transport = self.transport
        info = self.cluster.info
        # Writes beyond the limit pause a registered producer (Envoy's
        # high watermark; Twisted resumes it once the buffer drains).
        transport.bufferSize = info.perConnectionBufferLimitBytes
        _setSocketOptions(transport, info.tcpKeepalive)
        readUntilDrained(transport)
        connector = getattr(transport, "connector", None)
        if connector is not None and type(getattr(connector, "factory", None)) is _UpstreamFactory:
            # Ours does nothing on loss, and nothing else asks for it.
            keepLossOnly(transport)
        logstr = getattr(transport, "logstr", None)
        if type(logstr) is str:
            # The same text for every connection ("UpstreamConnection,client").
            transport.logstr = intern(logstr)

        self._rx.used = True
        stats.upstream_cx_tx_bytes_total.used = True

        if self._pendingProducer is not None:
            producer, streaming = self._pendingProducer
            self._pendingProducer = None
            transport.registerProducer(producer, streaming)
        if self._readPaused:
            transport.pauseProducing()
        self.callbacks.onUpstreamConnected(self)
        if self._state != _CONNECTED:
            return
        pending, self._pendingWrites = self._pendingWrites, None
        if pending:
            self.writeSequence(pending)
        if self._pendingWriteClose:
            self.loseWriteConnection()

    def dataReceived(self, data):
        # A method, not a closure made per connection: an idle connection
        # (a tcp_proxy one, spliced) holds nothing for it.
        self._rx.value += len(data)
        self.callbacks.onUpstreamData(data)

    def splicePump(self):
        """
        The callbacks' started splice pump, asked for by an armed transport
        (L{txenvoy.network.splice.arm}).
        """
        return self.callbacks.splicePump()

    # --- closing -------------------------------------------------------

    def readConnectionLost(self):
        """The host sent FIN: tell the callbacks; close if we did too."""
        self._readClosed = True
        self.callbacks.onUpstreamReadClosed()
        if self._writeClosed and self._state == _CONNECTED:
            # Twisted does not call connectionLost once both halves are
            # shut; the host's FIN came last, so the close is remote.
            self.transport.loseConnection()

    def writeConnectionLost(self):
        """Our FIN went out; close if the host's came already."""
        self._writeClosed = True
        if self._readClosed and self._state == _CONNECTED:
            self.closedLocally = True
            self.transport.loseConnection()

    def connectionLost(self, reason=None):
        if self._state != _CONNECTED:
            return
        self._state = _CLOSED
        self.connected = False
        if log.debugEnabled:
            tag = connTag(self.connectionId)
            if not self.closedLocally:
                if reason is not None and not reason.check(error.ConnectionDone):
                    log.debug("%sread error: %s", tag, reason.getErrorMessage())
                log.debug("%sremote close", tag)
            log.debug("%sclosing socket: %d", tag, 1 if self.closedLocally else 0)
        incomplete = getattr(self.callbacks, "closingWithIncompleteStream", None)
        self._destroyed(self.closedLocally, True if incomplete is None else incomplete())
        self.callbacks.onUpstreamClosed(reason)

    # --- the callbacks' side -------------------------------------------

    def write(self, data):
        """Send bytes (buffered until connected)."""
        if self._state == _CONNECTED:
            tx = self._stats.upstream_cx_tx_bytes_total
            tx.value += len(data)
            self.transport.write(data)
        elif self._state == _CONNECTING:
            if self._pendingWrites is None:
                self._pendingWrites = []
            self._pendingWrites.append(data)

    def writeSequence(self, seq):
        """Send several byte strings at once."""
        if not isinstance(seq, (list, tuple)):
            seq = list(seq)
        if self._state == _CONNECTED:
            tx = self._stats.upstream_cx_tx_bytes_total
            tx.value += sum(map(len, seq))
            self.transport.writeSequence(seq)
        elif self._state == _CONNECTING:
            if self._pendingWrites is None:
                self._pendingWrites = []
            self._pendingWrites.extend(seq)

    def loseWriteConnection(self):
        """Half-close: send FIN upstream once buffered data is written."""
        if self._state == _CONNECTED:
            if not self._writeClosed:
                self.transport.loseWriteConnection()
        elif self._state == _CONNECTING:
            self._pendingWriteClose = True

    def close(self, local=None):
        """
        Flush what is buffered, then close (or stop connecting). After the
        host's FIN the close is the host's (C{upstream_cx_destroy_remote}),
        unless C{local} says whose it is (tcp_proxy's half-closed sessions).
        """
        if self._state == _CONNECTED:
            self.closedLocally = not self._readClosed if local is None else local
            self.transport.loseConnection()
        elif self._state == _CONNECTING:
            self._cancel()

    def abort(self):
        """Close now, dropping buffered data (or stop connecting)."""
        if self._state == _CONNECTED:
            self.closedLocally = not self._readClosed
            self.transport.abortConnection()
        elif self._state == _CONNECTING:
            self._cancel()

    def peek(self):
        """
        Look at the socket, without reading, for what the host sent since
        the reactor last read it: on an idle keep-alive connection, a FIN
        that is already here means the host closed it a moment ago and a
        request written now would be lost. One non-blocking
        C{recv(MSG_PEEK)}; other transports (TLS) say L{PEEK_IDLE}.

        @return: L{PEEK_IDLE}, L{PEEK_CLOSED} (the close then counts as the
            host's) or L{PEEK_DATA}.
        """
        transport = self.transport
        if self._state != _CONNECTED or not isinstance(transport, tcp.Connection):
            return PEEK_IDLE
        # A poll of this one socket costs a third of a failing recv (which
        # raises); only a readable socket is peeked at.
        if _HAS_POLL:
            poller = self._poller
            if poller is None:
                poller = self._poller = select.poll()
                poller.register(transport.socket.fileno(), select.POLLIN)
            if not poller.poll(0):
                return PEEK_IDLE
        try:
            data = transport.socket.recv(1, _PEEK_FLAGS)
        except (BlockingIOError, InterruptedError):
            return PEEK_IDLE
        except OSError:
            self._readClosed = True
            return PEEK_CLOSED
        if data:
            return PEEK_DATA
        self._readClosed = True
        return PEEK_CLOSED

    def _cancel(self):
        # The caller gave up (its downstream went away): no callbacks.
        if log.debugEnabled:
            log.debug("%sclosing socket: 1", connTag(self.connectionId))
        self._state = _CLOSED
        self.closedLocally = True
        self._cancelTimer()
        self._pendingWrites = None
        self._stopConnecting(self._connector)
        self._destroyed(True, False)

    def readingWanted(self):
        """Whether bytes from the host are wanted now (L{txenvoy.network.read_loop})."""
        return not self._readPaused and self._state == _CONNECTED

    def pauseReading(self):
        """Stop reading from the host (downstream is backed up)."""
        if not self._readPaused:
            self._readPaused = True
            self._stats.upstream_flow_control_paused_reading_total.inc()
            if self._state == _CONNECTED:
                self.transport.pauseProducing()

    def resumeReading(self):
        """Read from the host again."""
        if self._readPaused:
            self._readPaused = False
            self._stats.upstream_flow_control_resumed_reading_total.inc()
            if self._state == _CONNECTED:
                self.transport.resumeProducing()

    def registerProducer(self, producer, streaming):
        """
        Let C{producer} (the downstream transport) be paused while this
        connection's write buffer is above
        C{per_connection_buffer_limit_bytes}.
        """
        if self._state == _CONNECTED:
            self.transport.registerProducer(producer, streaming)
        elif self._state == _CONNECTING:
            self._pendingProducer = (producer, streaming)

    def unregisterProducer(self):
        """Undo L{registerProducer}."""
        if self._state == _CONNECTED:
            self.transport.unregisterProducer()
        self._pendingProducer = None

    def __repr__(self):
        return "<UpstreamConnection %s %s>" % (self.host.addressString,
                                               ("connecting", "connected", "failed",
                                                "closed")[self._state])


class _InternalConnector:
    """
    A connect to an internal listener of this worker (Envoy's
    C{envoy_internal_address}), made on the next reactor turn as a socket's
    would be: with no such listener the connect is refused (Envoy's
    C{remote connection failure}).
    """

    def __init__(self, cluster, address, factory, transportSocket, host):
        self._dispatcher = cluster.dispatcher
        self._address = address
        self._factory = factory
        passthrough = getattr(transportSocket, "passthroughFor", None)
        self._passthrough = passthrough(host, cluster.info) if passthrough is not None else None
        self._call = cluster.reactor.callLater(0, self._connect)
        self.transport = None

    def _connect(self):
        self._call = None
        factory = self._factory
        active = self._dispatcher.internalListeners.get(self._address.listenerName)
        if active is None:
            factory.clientConnectionFailed(self, Failure(error.ConnectionRefusedError(
                "no internal listener named '%s'" % (self._address.listenerName,))))
            return
        protocol = factory.buildProtocol(self._address)
        if protocol is None:
            return
        pair = connectPair(self._dispatcher.reactor, protocol, active, self._address,
                           active.config.internalBufferSize, self._passthrough)
        if pair is None:
            # The listener's limits refused it: reset at once.
            factory.clientConnectionFailed(self, Failure(error.ConnectionRefusedError(
                "internal listener '%s' refused the connection"
                % (self._address.listenerName,))))
            return
        self.transport = pair[0]

    def stopConnecting(self):
        if self._call is None:
            raise error.NotConnectingError()
        self._call.cancel()
        self._call = None
        self._factory.clientConnectionFailed(self, Failure(error.UserError()))


def _setSocketOptions(transport, keepalive):
    # Envoy sets TCP_NODELAY on every upstream connection.
    setNoDelay = getattr(transport, "setTcpNoDelay", None)
    if setNoDelay is not None:
        try:
            setNoDelay(True)
        except OSError:
            pass
    if keepalive is None:
        return
    try:
        transport.setTcpKeepAlive(True)
        sock = transport.getHandle()
    except (AttributeError, OSError):
        return
    for opt, value in (("TCP_KEEPCNT", keepalive.probes),
                       ("TCP_KEEPIDLE", keepalive.time),
                       ("TCP_KEEPINTVL", keepalive.interval)):
        if value is not None and hasattr(socket, opt):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)
            except OSError:
                pass


def connectUpstream(cluster, host, callbacks, socketOptions=None):
    """
    Open a connection from a worker to C{host}.

    @param cluster: the worker's L{ThreadLocalCluster}.
    @param socketOptions: the request's transport socket options, or C{None}.
    @return: the L{UpstreamConnection}, connecting.
    """
    conn = UpstreamConnection(cluster, host, callbacks, socketOptions)
    conn._start()
    return conn
