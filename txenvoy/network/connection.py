# -*- test-case-name: tests.network.test_connection -*-
"""
A downstream connection: the Protocol every accepted socket gets.

It follows Envoy's accept path (C{ActiveTcpListener::onAccept}): run the
listener filters (Protocol wrappers that read ahead, stop and continue,
L{txenvoy.network.listener_filter}; one C{listener_filters_timeout}), pick
a filter chain, count the connection, then hand the socket to the network
filter chain. Once the chain is built
the chain's head receives the socket's bytes directly: this object stays
only to keep the listener's books (active connections, length histogram)
and to carry half-close.
"""

from twisted.internet import error
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from zope.interface import implementer

from txenvoy.interfaces import IListenerFilterCallbacks
from txenvoy.network.address import addressTuple
from txenvoy.network.filter import forwardReadConnectionLost
from txenvoy.network.filter_chain import ConnectionMatchInfo
from txenvoy.network.listener_filter import stackListenerFilters
from txenvoy.network.pipe import PipeAddress
from txenvoy.network.stream_info import StreamInfo
from txenvoy.server.logging import componentLogger, connTag

log = componentLogger("connection")
handlerLog = componentLogger("conn_handler")

#: A Unix client's name: the kernel gives it none.
_UNNAMED_PIPE = PipeAddress("")


def _dropData(data):
    """Bytes nobody reads (a plain function: no cycle through the connection)."""


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
    @ivar listenerFilterLayer: the
        L{txenvoy.network.listener_filter.ListenerFilterProtocol} reading
        the socket now, or C{None} once the listener filters are done.
    """

    # One per accepted connection, idle ones included: slots keep it free
    # of a per-instance dict (an idle tcp_proxy connection's memory).
    # Attributes a filter adds of its own still go to a __dict__.
    __slots__ = ("factory", "transport", "connected", "dataReceived", "listener", "dispatcher",
                 "streamInfo", "remoteAddress", "localAddress", "transportProtocol",
                 "applicationProtocols", "filterChain", "head", "ssl", "negotiatedProtocol",
                 "_counted", "_timer", "_closed", "_filtersRunning", "listenerFilterLayer",
                 "closedLocally", "limited", "localAddressRestored")

    def __init__(self, listener, remoteAddress):
        self.factory = None
        self.transport = None
        self.connected = 0
        self.dataReceived = _dropData
        self.filterChain = None
        self.head = None
        # Set by a TLS transport socket: its SslConnectionInfo, and the
        # negotiated ALPN protocol (str) once the handshake is done.
        self.ssl = None
        self.negotiatedProtocol = None
        self._counted = False
        self._timer = None
        self._closed = False
        self._filtersRunning = False
        self.listenerFilterLayer = None
        #: Whether this side closed (set by whoever closes: the HTTP
        #: connection manager, tcp_proxy, a listener filter); Envoy's close
        #: type in logs.
        self.closedLocally = False
        # Whether the listener counted it against its own connection limit.
        self.limited = False
        #: Whether a listener filter restored the local address
        #: (original_dst, proxy_protocol): an ORIGINAL_DST cluster only
        #: trusts such an address.
        self.localAddressRestored = False
        self.localAddress = None
        self.listener = listener
        self.dispatcher = listener.dispatcher
        self.streamInfo = info = StreamInfo(self.dispatcher.reactor)
        info.connectionId = self.dispatcher.nextConnectionId()
        self.remoteAddress = addressTuple(remoteAddress)
        info.downstreamRemoteAddress = info.downstreamDirectRemoteAddress = self.remoteAddress
        self.transportProtocol = "raw_buffer"
        self.applicationProtocols = ()

    def connectionMade(self):
        # An accepted TCP connection shares its listener's tuple.
        hostTuple = getattr(self.transport, "hostTuple", None)
        self.localAddress = (hostTuple() if hostTuple is not None
                             else addressTuple(self.transport.getHost()))
        client = getattr(self.transport, "client", None)
        if client == self.remoteAddress and type(client) is tuple:
            # The accepted socket's own tuple: one per connection, not two.
            info = self.streamInfo
            self.remoteAddress = info.downstreamRemoteAddress = client
            info.downstreamDirectRemoteAddress = client
        if self.remoteAddress[0] == _UNNAMED_PIPE:
            # Envoy: the kernel names no Unix client, so the peer is given
            # the listener's own name.
            self.remoteAddress = self.localAddress
            info = self.streamInfo
            info.downstreamRemoteAddress = info.downstreamDirectRemoteAddress = self.localAddress
        self.streamInfo.downstreamLocalAddress = self.localAddress
        passthrough = getattr(self.transport, "passthrough", None)
        if passthrough:
            # An internal connection: what the client's internal_upstream
            # transport socket passed through (txenvoy.network.user_space).
            self.streamInfo.dynamicMetadata.update(passthrough.get("metadata", {}))
            self.streamInfo.filterState.update(passthrough.get("filterState", {}))
        self.transport.bufferSize = self.listener.config.perConnectionBufferLimitBytes
        factories = self.listener.config.listenerFilters
        if not factories:
            self._newConnection()
            return
        self.listener.stats.downstream_pre_cx_active.inc()
        self._filtersRunning = True
        filters = [f.buildListenerFilter(self) for f in factories]
        timeout = self.listener.config.listenerFiltersTimeout
        if timeout:
            self._timer = self.dispatcher.reactor.callLater(timeout, self._onListenerFiltersTimeout)
        stackListenerFilters(filters, self, _NetworkStage(self)).makeConnection(self.transport)

    # Listener filter callbacks.

    def readInto(self, layer):
        """
        The socket's bytes go to C{layer} from now on (the listener filter
        that reads ahead now; see L{txenvoy.network.listener_filter}).
        """
        self.listenerFilterLayer = layer
        self.dataReceived = layer.dataReceived

    def closing(self):
        """Whether the socket is closed or closing (or was rejected)."""
        return self._closed or self.closedLocally or self.transport.disconnecting

    def continueFilterChain(self, success):
        """
        The current listener filter decided (Envoy's C{continueFilterChain}):
        go on to the next layer, or with C{False} close the socket.
        """
        if self._closed or self.listenerFilterLayer is None:
            return
        if not success:
            if handlerLog.debugEnabled:
                handlerLog.debug("%slistener filter %s: closing the socket",
                                 connTag(self.streamInfo.connectionId),
                                 type(self.listenerFilterLayer.filter).__name__)
            self._endListenerFilters()
            self.closedLocally = True
            self.transport.abortConnection()
            return
        self.listenerFilterLayer.continueFilterChain()

    def consume(self, n):
        """Drop C{n} bytes already read (a PROXY protocol header)."""
        self.listenerFilterLayer.consume(n)

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
        self.localAddressRestored = True
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
        self.listenerFilterLayer = None
        if self._filtersRunning:
            self.listener.stats.downstream_pre_cx_active.dec()
            self._filtersRunning = False
            # Until the network chain reads them: a closing socket's bytes.
            self.dataReceived = _dropData

    def _onListenerFiltersTimeout(self):
        self._timer = None
        self.listener.stats.downstream_pre_cx_timeout.inc()
        if handlerLog.debugEnabled:
            handlerLog.debug("listener filter times out after %d ms",
                             self.listener.config.listenerFiltersTimeout * 1000)
        if self.listener.config.continueOnListenerFiltersTimeout:
            buffered = self.listenerFilterLayer.buffer if self.listenerFilterLayer is not None else b""
            self._endListenerFilters()
            self._newConnection(buffered)
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

    def _newConnection(self, buffered=b""):
        """
        Pick the filter chain and build it; C{buffered} is what the listener
        filters read and did not consume.
        """
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
        if buffered and not self._closed:
            head.dataReceived(buffered)

    def splicePump(self):
        """
        The started splice pump of the chain's head, asked for by an armed
        transport (L{txenvoy.network.splice.arm}); C{None} if none.
        """
        head = self.head
        return head.splicePump() if head is not None else None

    def readConnectionLost(self):
        if self.head is not None:
            forwardReadConnectionLost(self.head, self.transport)
        else:
            if self._filtersRunning:
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
        head = self.head
        if head is not None:
            # The chain's head holds this connection: dropping it here
            # leaves no cycle, so reference counting frees the connection.
            self.head = None
            self.dataReceived = _dropData
            head.connectionLost(reason)


class _NetworkStage(Protocol):
    """
    The layer after the last listener filter: picks the filter chain and
    builds it, then hands it what the listener filters read.
    """

    def __init__(self, connection):
        self.connection = connection

    def connectionMade(self):
        connection = self.connection
        connection._endListenerFilters()
        connection._newConnection()

    def dataReceived(self, data):
        head = self.connection.head
        if head is not None and not self.connection.closing():
            head.dataReceived(data)
