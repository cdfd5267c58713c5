# -*- test-case-name: tests.network.test_user_space -*-
"""
Connections that never leave the process (Envoy's user space I/O handles,
C{source/extensions/io_socket/user_space}): a cluster endpoint with an
C{envoy_internal_address} reaches an internal listener of the same worker
through a pair of in-memory transports on that worker's reactor.

Each L{UserSpaceTransport} behaves as a TCP transport does for the
protocols above it: bytes written arrive at the peer on a later reactor
turn, in order; L{UserSpaceTransport.loseWriteConnection} is a FIN the peer
reads after the data (C{readConnectionLost} for a half-closeable protocol,
C{connectionLost} for any other); C{loseConnection} closes once what was
written has been handed over; C{abortConnection} resets both ends.

Back-pressure has Envoy's two levels: the peer accepts at most the
internal listener's buffer (C{buffer_size_kb} of the
C{envoy.bootstrap.internal_listener} bootstrap extension, 64 KiB by
default) that it has not read yet, as a kernel's socket buffer would;
what a writer writes beyond that waits in its own transport, and above the
transport's C{bufferSize} (the connection's buffer limit) the producer
registered with it is paused until its writes have moved on. A peer that
pauses reading (C{pauseProducing}) stops taking bytes, so the writer backs
up.

Addresses print as Envoy prints them: the listener's end is
C{envoy://<listener>/<endpoint_id>}, the client's
C{envoy://internal_client_address/}.
"""

import collections

import attr
from twisted.internet import error, interfaces
from twisted.python.failure import Failure
from zope.interface import implementer

#: The bootstrap extension that turns internal listeners on.
INTERNAL_LISTENER_TYPE = "envoy.extensions.bootstrap.internal_listener.v3.InternalListener"

#: Envoy's default C{buffer_size_kb}.
DEFAULT_BUFFER_SIZE = 64 * 1024


@attr.s(frozen=True, slots=True)
class InternalAddress:
    """
    An C{envoy.config.core.v3.EnvoyInternalAddress}: the internal listener
    a connection goes to, and the endpoint id that tells endpoints of the
    same listener apart.
    """

    listenerName = attr.ib()
    endpointId = attr.ib(default="")

    def __str__(self):
        return "envoy://%s/%s" % (self.listenerName, self.endpointId)


#: What the listener's side sees as its peer.
CLIENT_ADDRESS = InternalAddress("internal_client_address")


def internalBufferSize(bootstrap):
    """
    The buffer size of the C{envoy.bootstrap.internal_listener} bootstrap
    extension in C{bootstrap}, in bytes, or C{None} when it is not there
    (internal listeners are then refused, as Envoy refuses them).
    """
    from txenvoy.config.registry import typeNameOf, unpackAny

    if bootstrap is None:
        return None
    for i, entry in enumerate(bootstrap.bootstrap_extensions):
        if typeNameOf(entry.typed_config) == INTERNAL_LISTENER_TYPE:
            config = unpackAny(entry.typed_config,
                               "bootstrap_extensions[%d].typed_config" % (i,))
            if config.HasField("buffer_size_kb"):
                return config.buffer_size_kb.value * 1024
            return DEFAULT_BUFFER_SIZE
    return None


_EOF = object()


@implementer(interfaces.ITransport, interfaces.IConsumer, interfaces.IPushProducer,
             interfaces.IHalfCloseableDescriptor)
class UserSpaceTransport:
    """
    One end of an in-memory connection; see the module docstring.

    @ivar bufferSize: above this many bytes waiting in this transport a
        registered streaming producer is paused (Twisted's meaning).
    @ivar capacity: how many unread bytes this end accepts from its peer.
    @ivar passthrough: what the client's transport socket hands over to
        the listener's side (Envoy's passthrough metadata and filter state
        objects): C{{"metadata": {namespace: {key: value}},
        "filterState": {name: object}}}.
    """

    connected = False
    disconnecting = False
    disconnected = False
    protocol = None
    producer = None
    #: Whether this end closed (not just its write side).
    _closed = False
    bufferSize = 1024 * 1024

    def __init__(self, reactor, host, peerAddress, capacity):
        self.reactor = reactor
        self._host = host
        self._peerAddress = peerAddress
        self.capacity = capacity
        self.peer = None
        self.passthrough = {}
        # Bytes (and the _EOF mark) the peer wrote that our protocol has
        # not read yet; _inboxSize counts the bytes.
        self._inbox = collections.deque()
        self._inboxSize = 0
        # Bytes written that the peer had no room for yet.
        self._pending = collections.deque()
        self._pendingSize = 0
        self._eofPending = False
        self._writeClosed = False
        self._readPaused = False
        self._delivery = None
        self._streaming = False
        self._producerPaused = False
        self._closeWhenFlushed = False

    # --- ITransport --------------------------------------------------------

    def getHost(self):
        return self._host

    def getPeer(self):
        return self._peerAddress

    def write(self, data):
        if not data or self.disconnected or self.disconnecting or self._writeClosed:
            return
        self._pending.append(data)
        self._pendingSize += len(data)
        self._flush()
        if self._pendingSize > self.bufferSize:
            self._pauseProducer()

    def writeSequence(self, seq):
        self.write(b"".join(seq))

    def loseWriteConnection(self):
        """Half-close: the peer reads a FIN after everything written."""
        if self._writeClosed or self.disconnected:
            return
        self._writeClosed = True
        self._eofPending = True
        self._flush()
        p = interfaces.IHalfCloseableProtocol(self.protocol, None)
        if p is not None:
            self.reactor.callLater(0, self._writeConnectionLost, p)

    def _writeConnectionLost(self, p):
        if not self.disconnected:
            p.writeConnectionLost()

    def loseConnection(self):
        """Close once what was written has been handed to the peer."""
        if self.disconnected or self.disconnecting:
            return
        self.disconnecting = True
        if self._pending:
            self._closeWhenFlushed = True
            return
        self._closeNow()

    def abortConnection(self):
        """Reset: both ends are lost now, whatever was still unread."""
        if self.disconnected:
            return
        peer = self.peer
        self._closed = True
        self._lost(Failure(error.ConnectionAborted()))
        if peer is not None and not peer.disconnected:
            peer._lost(Failure(error.ConnectionLost("Connection reset by peer")))

    # --- IConsumer ----------------------------------------------------------

    def registerProducer(self, producer, streaming):
        if self.producer is not None:
            raise RuntimeError("Cannot register producer %s, because producer %s was never "
                               "unregistered." % (producer, self.producer))
        if self.disconnected:
            producer.stopProducing()
            return
        self.producer = producer
        self._streaming = streaming
        self._producerPaused = False
        if not streaming:
            producer.resumeProducing()

    def unregisterProducer(self):
        self.producer = None
        self._producerPaused = False

    def _pauseProducer(self):
        if self.producer is not None and self._streaming and not self._producerPaused:
            self._producerPaused = True
            self.producer.pauseProducing()

    def _resumeProducer(self):
        if self.producer is not None and self._producerPaused:
            self._producerPaused = False
            self.producer.resumeProducing()

    # --- IPushProducer: our protocol's reading ------------------------------

    def pauseProducing(self):
        self._readPaused = True

    def resumeProducing(self):
        if self._readPaused:
            self._readPaused = False
            self._scheduleDelivery()

    def stopProducing(self):
        self.loseConnection()

    # Twisted's FileDescriptor names, which some callers use.
    stopReading = pauseProducing
    startReading = resumeProducing

    # --- moving bytes -------------------------------------------------------

    def _flush(self):
        """Hand the peer as many pending bytes as it has room for."""
        peer = self.peer
        if peer is None or peer.disconnected:
            return
        moved = False
        while self._pending:
            room = peer.capacity - peer._inboxSize
            if room <= 0:
                break
            chunk = self._pending.popleft()
            if len(chunk) > room:
                self._pending.appendleft(chunk[room:])
                chunk = chunk[:room]
            self._pendingSize -= len(chunk)
            peer._inbox.append(chunk)
            peer._inboxSize += len(chunk)
            moved = True
        if not self._pending:
            if self._eofPending:
                self._eofPending = False
                peer._inbox.append(_EOF)
                moved = True
            if self._producerPaused:
                self._resumeProducer()
            if self._closeWhenFlushed:
                self._closeWhenFlushed = False
                self._closeNow()
        if moved:
            peer._scheduleDelivery()

    def _scheduleDelivery(self):
        if self._delivery is None and self._inbox and not self._readPaused \
                and not self.disconnected:
            self._delivery = self.reactor.callLater(0, self._deliver)

    def _deliver(self):
        """One read: what is unread now, then a FIN if it follows."""
        self._delivery = None
        if not self._inbox or self._readPaused or self.disconnected:
            return
        if self._inbox[0] is not _EOF:
            chunks = []
            while self._inbox and self._inbox[0] is not _EOF:
                chunks.append(self._inbox.popleft())
            data = b"".join(chunks)
            self._inboxSize -= len(data)
            self.protocol.dataReceived(data)
            if self.peer is not None:
                # Room again: the writer moves its pending bytes on (read
                # on a later turn, as the next read of a socket would be).
                self.peer._flush()
        if self._inbox and self._inbox[0] is _EOF and not self._readPaused \
                and not self.disconnected:
            self._inbox.popleft()
            self._readConnectionLost()
            return
        self._scheduleDelivery()

    def _readConnectionLost(self):
        peer = self.peer
        if peer is None or peer._closed:
            # The peer closed, not just its write side: nothing written
            # here could be read any more.
            self._lost(Failure(error.ConnectionDone()))
            return
        p = interfaces.IHalfCloseableProtocol(self.protocol, None)
        if p is None:
            self._lost(Failure(error.ConnectionDone()))
        else:
            p.readConnectionLost()

    def _closeNow(self):
        """Our close: the peer reads a FIN after our bytes, and we are gone."""
        peer = self.peer
        self._closed = True
        if peer is not None and not peer.disconnected:
            if not self._writeClosed or self._eofPending:
                self._eofPending = False
                peer._inbox.append(_EOF)
            peer._scheduleDelivery()
        self.reactor.callLater(0, self._lost, Failure(error.ConnectionDone()))

    def _lost(self, reason):
        if self.disconnected:
            return
        self.disconnected = True
        self.connected = False
        self.disconnecting = False
        if self._delivery is not None and self._delivery.active():
            self._delivery.cancel()
        self._delivery = None
        self._inbox.clear()
        self._pending.clear()
        self._pendingSize = self._inboxSize = 0
        producer = self.producer
        self.producer = None
        if producer is not None:
            producer.stopProducing()
        protocol = self.protocol
        if protocol is not None:
            protocol.connectionLost(reason)

    # What TCP-specific callers may ask of a transport.

    def setTcpNoDelay(self, enabled):
        pass

    def setTcpKeepAlive(self, enabled):
        pass


def connectPair(reactor, clientProtocol, serverFactory, listenerAddress, capacity,
                passthrough=None):
    """
    Connect C{clientProtocol} to a protocol C{serverFactory} builds for
    C{CLIENT_ADDRESS}, on C{reactor}; both see C{connectionMade} at once
    (as Envoy's internal connection is up when created).

    @param listenerAddress: the L{InternalAddress} the client asked for
        (the listener's side's local address).
    @param capacity: the listener's buffer size in bytes.
    @param passthrough: what the listener's side may read from its
        transport's C{passthrough}.
    @return: the two transports C{(client, server)}, or C{None} when the
        factory refused the connection (the client is then not connected).
    """
    server = UserSpaceTransport(reactor, listenerAddress, CLIENT_ADDRESS, capacity)
    client = UserSpaceTransport(reactor, CLIENT_ADDRESS, listenerAddress, capacity)
    server.peer, client.peer = client, server
    server.passthrough = passthrough or {}
    serverProtocol = serverFactory.buildProtocol(CLIENT_ADDRESS)
    if serverProtocol is None:
        return None
    server.protocol, client.protocol = serverProtocol, clientProtocol
    server.connected = client.connected = True
    serverProtocol.makeConnection(server)
    clientProtocol.makeConnection(client)
    return client, server
