# -*- test-case-name: tests.network.test_connection -*-
"""
A downstream connection: the Protocol every accepted socket gets.

It follows Envoy's accept path (C{ActiveTcpListener::onAccept}): run the
listener filters (reading ahead, stopping and continuing, with
C{listener_filters_timeout}), pick a filter chain, count the connection,
then hand the socket to the network filter chain. Once the chain is built
the chain's head receives the socket's bytes directly: this object stays
only to keep the listener's books (active connections, length histogram)
and to carry half-close.
"""

from twisted.internet import error
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from zope.interface import implementer

from txenvoy.interfaces import IListenerFilterCallbacks
from txenvoy.network.filter import forwardReadConnectionLost
from txenvoy.network.filter_chain import ConnectionMatchInfo
from txenvoy.network.stream_info import StreamInfo
from txenvoy.server.logging import componentLogger, connTag

log = componentLogger("connection")
handlerLog = componentLogger("conn_handler")

@implementer(IHalfCloseableProtocol, IListenerFilterCallbacks)
class ServerConnection(Protocol):
    """
    One accepted downstream connection (Envoy's C{ServerConnectionImpl}
    plus its C{ActiveTcpSocket} while listener filters run).

    Listener filters call the methods under "listener filter callbacks";
    network filters read L{dispatcher}, L{streamInfo} and L{listener}.

    @ivar listener: the L{txenvoy.network.listener.ActiveListener}.
    @ivar dispatcher: the worker's L{txenvoy.server.dispatcher.Dispatcher}.
    @ivar streamInfo: the connection's L{StreamInfo}.
    @ivar filterChain: the chosen L{txenvoy.network.filter_chain.FilterChain}.
    """

    filterChain = None
    head = None
    # Set by a TLS transport socket: its SslConnectionInfo, and the
    # negotiated ALPN protocol (str) once the handshake is done.
    ssl = None
    negotiatedProtocol = None
    _counted = False
    _buffer = b""
    _timer = None
    _closed = False
    _filterIndex = None
    _waitingForData = False
    #: Whether this side closed (set by whoever closes: the HTTP connection
    #: manager, tcp_proxy, a listener filter); Envoy's close type in logs.
    closedLocally = False
    # Whether the listener counted it against its own connection limit.
    limited = False

    def __init__(self, listener, remoteAddress):
        self.listener = listener
        self.dispatcher = listener.dispatcher
        self.streamInfo = info = StreamInfo(self.dispatcher.reactor)
        info.connectionId = self.dispatcher.nextConnectionId()
        self.remoteAddress = (remoteAddress.host, remoteAddress.port)
        info.downstreamRemoteAddress = info.downstreamDirectRemoteAddress = self.remoteAddress
        self.transportProtocol = "raw_buffer"
        self.applicationProtocols = ()

    def connectionMade(self):
        host = self.transport.getHost()
        self.localAddress = (host.host, host.port)
        self.streamInfo.downstreamLocalAddress = self.localAddress
        self.transport.bufferSize = self.listener.config.perConnectionBufferLimitBytes
        factories = self.listener.config.listenerFilters
        if not factories:
            self._newConnection()
            return
        self.listener.stats.downstream_pre_cx_active.inc()
        self._filters = [f.buildListenerFilter(self) for f in factories]
        self._filterIndex = -1
        self._waitingForData = False
        timeout = self.listener.config.listenerFiltersTimeout
        if timeout:
            self._timer = self.dispatcher.reactor.callLater(timeout, self._onListenerFiltersTimeout)
        self.continueFilterChain(True)

    # Listener filter callbacks.

    def continueFilterChain(self, success):
        """
        Run the next listener filters (Envoy's C{continueFilterChain}).
        Called with C{False}, close the socket.
        """
        if self._closed:
            return
        if not success:
            if handlerLog.debugEnabled:
                handlerLog.debug("%slistener filter %s: closing the socket",
                                 connTag(self.streamInfo.connectionId),
                                 type(self._filters[self._filterIndex]).__name__)
            self._endListenerFilters()
            self.closedLocally = True
            self.transport.abortConnection()
            return
        self._waitingForData = False
        while self._filterIndex + 1 < len(self._filters):
            self._filterIndex += 1
            f = self._filters[self._filterIndex]
            if f.onAccept(self):
                if handlerLog.debugEnabled:
                    handlerLog.debug("%slistener filter %s: continue",
                                     connTag(self.streamInfo.connectionId), type(f).__name__)
                continue
            if self._closed or self.transport.disconnecting:
                return
            # Stopped: decide now on what was already read, else wait for more.
            seen = len(self._buffer)
            if not (f.maxReadBytes and self._buffer and f.onData(self._buffer)):
                self._waitingForData = not (self._closed or self.transport.disconnecting)
                if handlerLog.debugEnabled and self._waitingForData:
                    handlerLog.debug("%slistener filter %s: waiting for data",
                                     connTag(self.streamInfo.connectionId), type(f).__name__)
                return
            if handlerLog.debugEnabled:
                handlerLog.debug("%slistener filter %s: continue after %d bytes",
                                 connTag(self.streamInfo.connectionId), type(f).__name__, seen)
        self._endListenerFilters()
        self._newConnection()

    def consume(self, n):
        """Drop C{n} bytes already read (a PROXY protocol header)."""
        self._buffer = self._buffer[n:]

    def setRequestedServerName(self, name):
        # Envoy's socket keeps the requested server name in lower case.
        self.streamInfo.requestedServerName = name.lower()

    def setDetectedTransportProtocol(self, protocol):
        self.transportProtocol = protocol

    def setRequestedApplicationProtocols(self, protocols):
        self.applicationProtocols = tuple(protocols)

    def restoreRemoteAddress(self, address):
        """Set the client address learned from a PROXY header."""
        self.remoteAddress = address
        self.streamInfo.downstreamRemoteAddress = address

    def restoreLocalAddress(self, address):
        self.localAddress = address
        self.streamInfo.downstreamLocalAddress = address

    def closeSocket(self):
        """
        A listener filter rejects the connection (reset, as Envoy does;
        Envoy 1.40 counts no listener stat for it).
        """
        if handlerLog.debugEnabled:
            handlerLog.debug("%slistener filter rejected the connection",
                             connTag(self.streamInfo.connectionId))
        self._endListenerFilters()
        self.closedLocally = True
        self.transport.abortConnection()

    def _endListenerFilters(self):
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        if self._filterIndex is not None:
            self.listener.stats.downstream_pre_cx_active.dec()
            self._filterIndex = None

    def _onListenerFiltersTimeout(self):
        self._timer = None
        self.listener.stats.downstream_pre_cx_timeout.inc()
        if handlerLog.debugEnabled:
            handlerLog.debug("listener filter times out after %d ms",
                             self.listener.config.listenerFiltersTimeout * 1000)
        if self.listener.config.continueOnListenerFiltersTimeout:
            self._endListenerFilters()
            self._newConnection()
        else:
            self._endListenerFilters()
            self.closedLocally = True
            self.transport.abortConnection()

    # The network filter chain.

    def matchInfo(self):
        """What filter chain matching sees for this connection."""
        return ConnectionMatchInfo(
            self.localAddress, self.remoteAddress, self.streamInfo.downstreamDirectRemoteAddress,
            self.streamInfo.requestedServerName, self.transportProtocol, self.applicationProtocols)

    def _newConnection(self):
        listener = self.listener
        chain = listener.config.filterChainManager.findFilterChain(self.matchInfo)
        if chain is None:
            listener.stats.no_filter_chain_match.inc()
            if handlerLog.debugEnabled:
                handlerLog.debug("closing connection from %s:%d: no matching filter chain found",
                                 self.remoteAddress[0], self.remoteAddress[1])
            self.closedLocally = True
            self.transport.abortConnection()
            return
        self.filterChain = chain
        if handlerLog.debugEnabled:
            tag = connTag(self.streamInfo.connectionId)
            handlerLog.debug("%snew connection from %s:%d", tag, self.remoteAddress[0],
                             self.remoteAddress[1])
            handlerLog.debug("%sfilter chain '%s' matched", tag, chain.name or "<unnamed>")
        listener.onConnectionCreated(self)
        self._counted = True
        head = chain.buildFilterChain(self) if chain.filterFactories else None
        if head is None:
            listener.stats.network_extension_config_missing.inc()
            if handlerLog.debugEnabled:
                handlerLog.debug("%sclosing connection from %s:%d: no filters",
                                 connTag(self.streamInfo.connectionId),
                                 self.remoteAddress[0], self.remoteAddress[1])
            self.closedLocally = True
            self.transport.loseConnection()
            return
        if chain.transportSocket is not None:
            head = chain.transportSocket.wrap(self, head)
        self.head = head
        # From now on the head reads the socket directly.
        self.dataReceived = head.dataReceived
        head.makeConnection(self.transport)
        buffered, self._buffer = self._buffer, b""
        if buffered and not self._closed:
            head.dataReceived(buffered)

    def dataReceived(self, data):
        # Only reached while listener filters run.
        self._buffer += data
        if self._waitingForData:
            f = self._filters[self._filterIndex]
            seen = len(self._buffer)
            if f.onData(self._buffer):
                if handlerLog.debugEnabled:
                    handlerLog.debug("%slistener filter %s: continue after %d bytes",
                                     connTag(self.streamInfo.connectionId), type(f).__name__,
                                     seen)
                self.continueFilterChain(True)

    def readConnectionLost(self):
        if self.head is not None:
            forwardReadConnectionLost(self.head, self.transport)
        else:
            if self._filterIndex is not None:
                self.listener.stats.downstream_listener_filter_remote_close.inc()
                self._endListenerFilters()
            self.transport.loseConnection()

    def writeConnectionLost(self):
        p = IHalfCloseableProtocol(self.head, None)
        if p is not None:
            p.writeConnectionLost()

    def connectionLost(self, reason):
        self._closed = True
        self.listener.onSocketClosed(self)
        if log.debugEnabled:
            tag = connTag(self.streamInfo.connectionId)
            if not self.closedLocally:
                if reason is not None and not reason.check(error.ConnectionDone):
                    log.debug("%sread error: %s", tag, reason.getErrorMessage())
                log.debug("%sremote close", tag)
            log.debug("%sclosing socket: %d", tag, 1 if self.closedLocally else 0)
        if self._counted and handlerLog.debugEnabled:
            handlerLog.debug("%sadding to cleanup list", connTag(self.streamInfo.connectionId))
        self._endListenerFilters()
        if self._counted:
            self.listener.onConnectionDestroyed(self)
        if self.head is not None:
            self.head.connectionLost(reason)
