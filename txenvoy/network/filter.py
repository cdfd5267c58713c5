# -*- test-case-name: tests.network.test_filter -*-
"""
The base of non-terminal network filters.

A network filter chain is a stack of Protocols built per connection from the
filter chain's C{filters} list: the first filter receives the connection's
bytes and passes them on to the next, for which it acts as the transport.
A terminal filter (tcp_proxy, http_connection_manager, echo,
direct_response) is a plain Protocol at the bottom of the stack, given the
real transport when it is the only filter, so the common case costs nothing
per byte.

Unlike Twisted's C{ProtocolWrapper}, L{NetworkFilter} carries TCP half-close
both ways: the peer's FIN reaches the next protocol's C{readConnectionLost}
and the next protocol's C{loseWriteConnection} sends a FIN.
"""

from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer, ITransport
from twisted.internet.protocol import Protocol
from zope.interface import implementer


@implementer(IHalfCloseableProtocol, ITransport, IPushProducer)
class NetworkFilter(Protocol):
    """
    Pass-through read and write filter. Subclasses override the read side
    (C{connectionMade} to decide at connection time, C{dataReceived} to see
    or hold bytes) or the write side (C{write}) and call C{self.next} or
    C{self.transport} to continue.

    To stop iteration (Envoy's C{StopIteration}), hold the bytes and do not
    call the next protocol; to continue, call L{continueReading} with them.
    A filter that rejects the connection calls L{stopChain}: the next
    protocol then never hears of this connection again.

    @ivar connection: the L{txenvoy.network.connection.ServerConnection}.
    @ivar next: the next Protocol in the chain.
    """

    chainStopped = False

    def __init__(self, connection, nextProtocol):
        self.connection = connection
        self.next = nextProtocol
        self.disconnecting = False

    def stopChain(self):
        """
        Stop the filter chain here for good (a rejected connection): bytes,
        half-close and close are no longer passed on.
        """
        self.chainStopped = True

    # Protocol side: bytes from the connection (or the filter before us).

    def connectionMade(self):
        """Envoy's C{onNewConnection}: continue by default."""
        self.next.makeConnection(self)

    def dataReceived(self, data):
        if not self.chainStopped:
            self.next.dataReceived(data)

    def continueReading(self, data):
        """Hand held bytes to the next protocol (Envoy's C{continueReading})."""
        if data:
            self.next.dataReceived(data)

    def readConnectionLost(self):
        if not self.chainStopped:
            forwardReadConnectionLost(self.next, self)

    def writeConnectionLost(self):
        p = IHalfCloseableProtocol(self.next, None)
        if p is not None and not self.chainStopped:
            p.writeConnectionLost()

    def connectionLost(self, reason):
        if not self.chainStopped:
            self.next.connectionLost(reason)

    # Transport side: what the next protocol sees as its transport.

    def write(self, data):
        self.transport.write(data)

    def writeSequence(self, seq):
        self.transport.writeSequence(seq)

    def loseConnection(self):
        self.disconnecting = True
        self.transport.loseConnection()

    def abortConnection(self):
        self.disconnecting = True
        self.transport.abortConnection()

    def loseWriteConnection(self):
        self.transport.loseWriteConnection()

    def getPeer(self):
        return self.transport.getPeer()

    def getHost(self):
        return self.transport.getHost()

    def registerProducer(self, producer, streaming):
        self.transport.registerProducer(producer, streaming)

    def unregisterProducer(self):
        self.transport.unregisterProducer()

    def pauseProducing(self):
        self.transport.pauseProducing()

    def resumeProducing(self):
        self.transport.resumeProducing()

    def stopProducing(self):
        self.transport.stopProducing()

    def __getattr__(self, name):
        # Everything else a transport offers (setTcpNoDelay, getHandle,
        # bufferSize...) comes from the real transport.
        transport = self.__dict__.get("transport")
        # Dunder names (zope's __provides__ among them) stay our own, or the
        # filter would claim the transport's interfaces instead of its own.
        if transport is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(transport, name)


def forwardReadConnectionLost(protocol, transport):
    """
    Deliver the peer's FIN to C{protocol}: as C{readConnectionLost} if it
    supports half-close, else by closing the connection, which is what Envoy
    does for a connection whose filters did not enable half-close.
    """
    p = IHalfCloseableProtocol(protocol, None)
    if p is not None:
        p.readConnectionLost()
    else:
        transport.loseConnection()
