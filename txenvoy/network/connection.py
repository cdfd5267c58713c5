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

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from zope.interface import implementer

from txenvoy.network.filter import forwardReadConnectionLost
from txenvoy.network.filter_chain import ConnectionMatchInfo
from txenvoy.network.stream_info import StreamInfo

log = Logger(namespace="connection")

_nextConnectionId = [0]


@implementer(IHalfCloseableProtocol)
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

    def __init__(self, listener, remoteAddress):
        self.listener = listener
        self.dispatcher = listener.dispatcher
        self.streamInfo = info = StreamInfo(self.dispatcher.reactor)
        _nextConnectionId[0] += 1
        info.connectionId = _nextConnectionId[0]
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
            self._endListenerFilters()
            self.transport.abortConnection()
            return
        self._waitingForData = False
        while self._filterIndex + 1 < len(self._filters):
            self._filterIndex += 1
            f = self._filters[self._filterIndex]
            if f.onAccept(self):
                continue
            if self._closed or self.transport.disconnecting:
                return
            # Stopped: decide now on what was already read, else wait for more.
            if not (f.maxReadBytes and self._buffer and f.onData(self._buffer)):
                self._waitingForData = not (self._closed or self.transport.disconnecting)
                return
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
        self._endListenerFilters()
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
        if self.listener.config.continueOnListenerFiltersTimeout:
            self._endListenerFilters()
            self._newConnection()
        else:
            self._endListenerFilters()
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
            log.debug("closing connection from {peer}: no matching filter chain",
                      peer=self.remoteAddress)
            self.transport.abortConnection()
            return
        self.filterChain = chain
        listener.onConnectionCreated(self)
        self._counted = True
        head = chain.buildFilterChain(self) if chain.filterFactories else None
        if head is None:
            listener.stats.network_extension_config_missing.inc()
            log.debug("closing connection from {peer}: no filters", peer=self.remoteAddress)
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
            if f.onData(self._buffer):
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
        self._endListenerFilters()
        if self._counted:
            self.listener.onConnectionDestroyed(self)
        if self.head is not None:
            self.head.connectionLost(reason)
