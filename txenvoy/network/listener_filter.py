# -*- test-case-name: tests.network.test_listener_filter -*-
"""
Listener filters as Protocol wrappers in an accepted connection's stack
(Envoy's C{ActiveTcpSocket}, one C{ListenerFilter} and its
C{ListenerFilterBuffer} at a time).

The accepted socket's protocol, L{txenvoy.network.connection.ServerConnection},
hands its bytes to the first L{ListenerFilterProtocol}. Each one reads
ahead into its own buffer and asks its filter: at accept (C{onAccept}) and,
while the filter stops iteration, on every read (C{onData}, with all the
bytes read so far). Once the filter continues, the protocol steps out of
the way: the connection's bytes go straight to the next layer, which first
gets what this one read (less what the filter consumed, a PROXY protocol
header). After the last filter comes the network filter chain.

The one C{listener_filters_timeout}, the stats
(C{downstream_pre_cx_active}, C{downstream_pre_cx_timeout},
C{downstream_listener_filter_remote_close}) and closing belong to the
connection, which is also what every filter is given as its
L{txenvoy.interfaces.IListenerFilterCallbacks}.
"""

from twisted.internet.protocol import Protocol

from txenvoy.server.logging import componentLogger, connTag

handlerLog = componentLogger("conn_handler")


class ListenerFilterProtocol(Protocol):
    """
    One listener filter of one accepted connection.

    @ivar filter: the L{txenvoy.interfaces.IListenerFilter}.
    @ivar connection: the connection (the filter's callbacks).
    @ivar next: the next layer, a Protocol: another
        L{ListenerFilterProtocol}, or the start of the network filter chain.
    @ivar buffer: the bytes read and not yet handed on.
    """

    def __init__(self, filter_, connection, nextLayer):
        self.filter = filter_
        self.connection = connection
        self.next = nextLayer
        self.buffer = b""
        self._decided = False

    def connectionMade(self):
        connection = self.connection
        connection.readInto(self)
        if self.filter.onAccept(connection):
            self._log("continue")
            self.continueFilterChain()
        elif not connection.closing():
            self._log("waiting for data")

    def dataReceived(self, data):
        # Only while the filter stops iteration: after it continues, the
        # connection reads into the next layer instead.
        self.buffer += data
        # Counted before the filter may consume a header.
        seen = len(self.buffer)
        if self._decided or not self.filter.onData(self.buffer):
            return
        self._log("continue after %d bytes" % (seen,))
        self.continueFilterChain()

    def consume(self, n):
        """Drop the first C{n} bytes read (a PROXY protocol header)."""
        self.buffer = self.buffer[n:]

    def continueFilterChain(self):
        """
        Step out of the way: the next layer gets the connection and what
        this one read.
        """
        if self._decided or self.connection.closing():
            return
        self._decided = True
        buffered, self.buffer = self.buffer, b""
        self.next.makeConnection(self.transport)
        if buffered and not self.connection.closing():
            self.next.dataReceived(buffered)

    def _log(self, what):
        if handlerLog.debugEnabled:
            handlerLog.debug("%slistener filter %s: %s",
                             connTag(self.connection.streamInfo.connectionId),
                             type(self.filter).__name__, what)


def stackListenerFilters(filters, connection, networkStage):
    """
    @param filters: the connection's L{txenvoy.interfaces.IListenerFilter}s,
        in config order.
    @param networkStage: the Protocol that starts the network filter chain.
    @return: the first layer of the stack (the last is C{networkStage}).
    """
    layer = networkStage
    for f in reversed(filters):
        layer = ListenerFilterProtocol(f, connection, layer)
    return layer
