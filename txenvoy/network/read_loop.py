# -*- test-case-name: tests.network.test_read_loop -*-
"""
Reading a socket again within one readiness event when a read filled the
buffer, as Envoy's C{RawBufferSocket::doRead} reads until the socket is
drained (or the connection's buffer limit is reached).

Twisted reads once per event, at most the transport's C{bufferSize}
(which txenvoy sets to C{per_connection_buffer_limit_bytes}). A response
a few bytes longer than that is read in two events: its tail waits a whole
turn of the reactor behind every other ready socket, which is what limited
1 MiB responses when several connections are busy.
"""

from errno import EWOULDBLOCK

from twisted.internet import main, tcp
from twisted.internet.posixbase import PosixReactorBase

from txenvoy.privates import GatheringWrite, SlotOrMethod, SlottedTCPClient, SlottedTCPConnector

#: At most this many reads per readiness event, so that one busy socket
#: cannot keep the others waiting.
MAX_READS_PER_EVENT = 4


class _DrainingRead:
    """
    C{doRead} of a TCP transport that reads again while each read fills
    the buffer and its protocol still wants bytes (its C{readingWanted()}:
    it may pause reading from C{dataReceived}). Each read takes at most
    the transport's C{bufferSize} (the connection's buffer limit) and at
    most the protocol's C{readLimit} when that is not 0; the protocol may
    change it from C{dataReceived}.
    """

    def doRead(self):
        protocol = self.protocol
        for _ in range(MAX_READS_PER_EVENT):
            size = self.bufferSize
            limit = protocol.readLimit
            if limit and limit < size:
                size = limit
            try:
                data = self.socket.recv(size)
            except OSError as e:
                if e.args[0] == EWOULDBLOCK:
                    return None
                return main.CONNECTION_LOST
            if not data:
                return main.CONNECTION_DONE
            protocol.dataReceived(data)
            if (len(data) < size or self.disconnecting or not self.connected
                    or not protocol.readingWanted()):
                return None
        return None


class _DrainingClient(_DrainingRead, tcp.Client):
    """A client connection that reads as L{_DrainingRead}."""


class UpstreamTCPClient(GatheringWrite, SlottedTCPClient):
    """
    The client connection of upstream TCP connections, with no instance
    dict (an idle connection's memory; see
    L{txenvoy.privates.SlottedTCPClient}). It reads as Twisted's until
    L{readUntilDrained} makes it read as L{_DrainingRead}: a TLS
    connection's protocol, the TLS layer, reads its own way. It writes as
    L{GatheringWrite} once connected: a large request body is not joined
    into new strings, and the downstream it pauses resumes at Envoy's low
    watermark.
    """

    __slots__ = ()

    doWrite = SlotOrMethod(SlottedTCPClient._doWrite, GatheringWrite.doWrite)


class _DrainingUpstreamClient(UpstreamTCPClient):
    """An L{UpstreamTCPClient} that reads as L{_DrainingRead}."""

    __slots__ = ()

    doRead = SlotOrMethod(SlottedTCPClient._doRead, _DrainingRead.doRead)


class UpstreamTCPConnector(SlottedTCPConnector):
    """Connects an L{UpstreamTCPClient}."""

    transportClass = UpstreamTCPClient


class _DrainingUpstreamConnector(SlottedTCPConnector):
    """
    Connects a client that reads as L{_DrainingRead} from the start: its
    class is not swapped once connected (which would give the instance a
    dict of its own).
    """

    transportClass = _DrainingUpstreamClient


class _LossOnly:
    """
    What a connected client's connector is reduced to by L{keepLossOnly}:
    once connected, Twisted only tells it of the loss.
    """

    __slots__ = ()

    def connectionLost(self, reason):
        pass


_LOSS_ONLY = _LossOnly()


def keepLossOnly(transport):
    """
    Drop a connected client transport's connector (and with it the
    factory) for a shared stand-in, when its factory does nothing on loss:
    every idle upstream connection would otherwise hold both, and a cycle
    between connector and transport. The caller knows its factory.
    """
    transport.connector = _LOSS_ONLY


def connectTCP(reactor, host, port, factory, timeout=30, bindAddress=None, draining=False):
    """
    C{reactor.connectTCP}, with an L{UpstreamTCPClient} when C{reactor} is
    one of Twisted's real reactors (a fake one keeps its own bookkeeping).

    @param draining: whether the client reads as L{_DrainingRead} once
        connected (the factory's protocol is the socket's own, with
        C{readingWanted()} and C{readLimit}), as L{readUntilDrained} would
        make it.
    """
    if not isinstance(reactor, PosixReactorBase):
        return reactor.connectTCP(host, port, factory, timeout=timeout, bindAddress=bindAddress)
    connectorClass = _DrainingUpstreamConnector if draining else UpstreamTCPConnector
    connector = connectorClass(host, port, factory, timeout, bindAddress, reactor)
    connector.connect()
    return connector


_DRAINING = {tcp.Client: _DrainingClient, UpstreamTCPClient: _DrainingUpstreamClient}


def readUntilDrained(transport):
    """
    Make C{transport} (a plain TCP client connection; any other is left
    as it is: TLS and other wrappers read their own way) read as
    L{_DrainingRead}. Its protocol must have C{readingWanted()} and
    C{readLimit}.

    The transport's class is swapped for a subclass that only changes
    C{doRead}: nothing is added per connection, and no cycle is made.
    """
    draining = _DRAINING.get(type(transport))
    if draining is not None:
        transport.__class__ = draining
