# -*- test-case-name: tests.network.test_accept -*-
"""
The accept loop of a worker's listening socket, with Envoy's books kept
when the process runs out of file descriptors.

Twisted's C{tcp.Port.doRead} already survives C{EMFILE}: it closes a
reserved descriptor, accepts the waiting connections and closes them, so
the listen backlog drains instead of waking the reactor forever. But it
only says so in log events of its own namespace, and counts nothing. The
listener has to know, so L{ListenerPort} runs the same loop itself and
hands every connection it had to drop to its factory's
C{onAcceptError(count, errno)}; L{txenvoy.network.listener.ActiveListener}
counts them in the listener's C{downstream_global_cx_overflow} (the
process-wide connection limit, which the descriptor limit is) and logs
them through an L{OverflowLog}, at most one line per interval.

Only the accept loop is replaced: transports, addresses and the rest of
the port are Twisted's.
"""

import errno
import os
import socket
from sys import intern

from twisted.internet import main, tcp, unix
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.logger import Logger
from twisted.python import log as legacyLog

from txenvoy import privates
from txenvoy.network.address import addressTuple
from txenvoy.privates import (GatheringWrite, disconnectNow, onlyTurnWrites, unsentBytes,
                              writeDisconnected)

log = Logger(namespace="conn_handler")

#: accept(2) errors that mean a resource (descriptors, buffers) ran out.
EXHAUSTED = frozenset([errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM])
_RETRY = frozenset([errno.EPERM, errno.ECONNABORTED, errno.EINTR])
_DONE = frozenset([errno.EAGAIN, errno.EWOULDBLOCK])
#: Seconds a port stops accepting when a resource ran out and nothing
#: could be done about the waiting connections.
PAUSE_AFTER_EXHAUSTED = 0.5


class ReservedDescriptor:
    """
    One descriptor kept open so that, once the process hits its limit, it
    can be closed to make room for accepting (and closing) the waiting
    connections; reopened afterwards.
    """

    def __init__(self):
        self._fd = None
        self.reserve()

    def reserve(self):
        if self._fd is None:
            try:
                self._fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                self._fd = None

    def release(self):
        """Close the reserved descriptor; say whether there was one."""
        if self._fd is None:
            return False
        os.close(self._fd)
        self._fd = None
        return True

    def close(self):
        self.release()


#: The addresses that name no one interface: a socket accepted on a
#: listener bound to one of these is asked for its own local address.
_ANY_HOSTS = frozenset(["0.0.0.0", "::"])


def _ignoreRead(transport):
    """
    The read of a connection closed at the start of the next turn, before
    the next poll: none.
    """
    return None


class AcceptedConnection(GatheringWrite, tcp.Server):
    """
    Twisted's server transport, made cheaper for a proxy that accepts a
    connection per request.

     - Its local address is the listener's when the listener is bound to
       one address (not a wildcard), as Envoy's listener hands out its own
       address then: no C{getsockname} per connection.
     - Its log prefix and C{repr} are built when first asked for, not
       formatted for every connection.
     - Closed with nothing left to write (a response with
       C{connection: close} went out whole), it is closed at the start of
       the reactor's next turn, together with every other connection
       closed in this turn, instead of being switched from reading to
       writing for the reactor to see it writable and only then close it
       (three C{epoll_ctl} and one more event per connection).
     - What waits to be written goes out as it was queued, in one
       C{sendmsg} per writable event while the socket takes it all
       (L{txenvoy.privates.GatheringWrite}): Twisted's own C{doWrite}
       joins a large response's queued reads into new strings and sends
       128 KiB per event.
    """

    #: Called as C{readHook(transport)} in place of a read, when set: a
    #: connection closing at the start of the next turn ignores reads, an
    #: armed splice builds its pump (L{txenvoy.network.splice.arm}). One
    #: attribute, read on every event in place of a flag.
    readHook = None
    # Envoy closes a socket with close(2) alone (its FIN, or its reset
    # when unread bytes are left, is the kernel's), not shutdown(2) first.
    _shouldShutdown = False

    def __init__(self, sock, protocol, client, server, sessionno, reactor):
        # tcp.Server.__init__, minus the eager log strings.
        tcp.Connection.__init__(self, sock, protocol, reactor)
        if len(client) != 2:
            self._addressType = IPv6Address
        self.server = server
        self.client = client
        self.sessionno = sessionno
        self.hostname = client[0]
        self.startReading()
        self.connected = 1

    @property
    def logstr(self):
        protocol = getattr(self, "protocol", None)
        prefix = self._getLogPrefix(protocol) if protocol is not None else "-"
        return "%s,%s,%s" % (prefix, self.sessionno, self.hostname)

    @property
    def repstr(self):
        protocol = getattr(self, "protocol", None)
        return "<%s #%s on %s>" % (type(protocol).__name__, self.sessionno,
                                   self.server._realPortNumber)

    def loseConnection(self):
        if (self.TLS or self.producer is not None or not self.connected or self.disconnecting
                or writeDisconnected(self)
                or (unsentBytes(self) and not onlyTurnWrites(self))):
            tcp.Server.loseConnection(self)
            return
        # Twisted's state for a transport that is closing, minus the write
        # event: reads are ignored from now on (see doRead). What waits for
        # the end of this turn is sent before the next turn closes it.
        self.disconnecting = 1
        self.readHook = _ignoreRead
        self.server.closeSoon(self)

    def doRead(self):
        # Twisted's doRead and _dataReceived in one call.
        hook = self.readHook
        if hook is not None:
            return hook(self)
        try:
            data = self.socket.recv(self.bufferSize)
        except OSError as e:
            if e.args[0] == errno.EWOULDBLOCK:
                return None
            return main.CONNECTION_LOST
        if not data:
            return main.CONNECTION_DONE
        self.protocol.dataReceived(data)
        return None

    def _closeNow(self):
        """The turn after L{loseConnection}: close, or flush first."""
        self.readHook = None
        if not self.connected:
            return
        if unsentBytes(self) or self.producer is not None:
            # Written to, or given a producer, after loseConnection: flush
            # and close the way Twisted does.
            self.stopReading()
            self.startWriting()
            return
        disconnectNow(self)

    def getHost(self):
        known = self.server.boundHost
        if known is not None:
            return known
        return tcp.Server.getHost(self)

    def hostTuple(self):
        """
        C{addressTuple(self.getHost())}: the listener's own tuple when it
        is bound to one address, shared by all its connections.
        """
        known = self.server.boundHostTuple
        if known is not None:
            return known
        return addressTuple(self.getHost())


class ListenerPort(tcp.Port):
    """
    A C{tcp.Port} adopting an already bound socket, whose accept loop
    reports the connections it had to drop (see the module docstring).

    @ivar boundHost: the listening address when it names one interface
        (every accepted socket's local address then), else C{None}.
    @ivar boundHostTuple: C{addressTuple(boundHost)}, or C{None}.
    """

    _reserve = None
    boundHost = None
    boundHostTuple = None
    transport = AcceptedConnection
    _closing = None

    def closeSoon(self, connection):
        """
        Close C{connection} (an L{AcceptedConnection} with nothing left to
        write) at the start of the reactor's next turn: one reactor call
        for every connection closed in this turn.
        """
        closing = self._closing
        if closing is None:
            closing = self._closing = []
        if not closing:
            self.reactor.callLater(0, self._closeAll)
        closing.append(connection)

    def _closeAll(self):
        closing, self._closing = self._closing, []
        for connection in closing:
            try:
                connection._closeNow()
            except Exception:
                legacyLog.err(None, "closing %r failed" % (connection,))

    @classmethod
    def adopt(cls, reactor, fileDescriptor, addressFamily, factory):
        """
        Start accepting on a listening socket's (duplicated) descriptor, as
        C{reactor.adoptStreamPort} does.
        """
        port = privates.adoptListeningPort(cls, reactor, fileDescriptor, addressFamily,
                                           factory)
        port._reserve = ReservedDescriptor()
        port.startListening()
        host = port.getHost()
        if host.host not in _ANY_HOSTS:
            port.boundHost = host
            port.boundHostTuple = addressTuple(host)
        return port

    def connectionLost(self, reason):
        if self._reserve is not None:
            self._reserve.close()
        tcp.Port.connectionLost(self, reason)

    def _address(self, addr):
        if len(addr) == 4:
            host = socket.getnameinfo(addr, socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)[0]
            return IPv6Address("TCP", host, addr[1], addr[2], addr[3])
        return IPv4Address("TCP", addr[0], addr[1])

    def doRead(self):
        """Accept what waits, up to C{numberAccepts} at a time (Twisted's)."""
        accepted = 0
        try:
            for _ in range(self.numberAccepts):
                try:
                    skt, addr = self.socket.accept()
                except OSError as e:
                    if e.errno in _DONE:
                        break
                    if e.errno in _RETRY:
                        continue
                    if e.errno in EXHAUSTED:
                        self._onExhausted(e.errno)
                        break
                    raise
                accepted += 1
                if type(addr) is tuple and len(addr) == 2:
                    # IPv4: the transport's tuple is the connection's
                    # remote address too (ServerConnection), with its host
                    # text shared by the connections from one client.
                    addr = (intern(addr[0]), addr[1])
                protocol = self.factory.buildProtocol(self._address(addr))
                if protocol is None:
                    skt.close()
                    continue
                s = self.sessionno
                self.sessionno = s + 1
                transport = self.transport(skt, protocol, addr, self, s, self.reactor)
                protocol.makeConnection(transport)
        except Exception:
            legacyLog.err(None, "listener accept loop failed")
        if accepted == self.numberAccepts:
            self.numberAccepts += 20
        else:
            self.numberAccepts = max(1, accepted)

    def _onExhausted(self, err):
        """
        accept(2) failed for want of a resource. With C{EMFILE} and the
        reserve available, make room and drop every waiting connection;
        otherwise drop none (they wait in the backlog). Either way the
        factory hears of it.
        """
        dropped = 0
        if err == errno.EMFILE and self._reserve is not None and self._reserve.release():
            try:
                while dropped < 10000:
                    try:
                        skt, _ = self.socket.accept()
                    except OSError:
                        break
                    skt.close()
                    dropped += 1
            finally:
                self._reserve.reserve()
        else:
            # Nothing to make room with: rather than wake up at once for
            # the same waiting connections, stop accepting for a moment.
            self.stopReading()
            self.reactor.callLater(PAUSE_AFTER_EXHAUSTED, self._resumeAfterExhausted)
        onAcceptError = getattr(self.factory, "onAcceptError", None)
        if onAcceptError is not None:
            onAcceptError(dropped, err)

    def _resumeAfterExhausted(self):
        if self.connected and not self.disconnecting and not getattr(
                self.factory, "acceptPaused", False):
            self.startReading()


class OverflowLog:
    """
    One warning line per C{interval} at most for connections dropped at
    accept time, carrying how many were dropped since the last line, so a
    flood of them cannot flood the log.
    """

    def __init__(self, clock, name, interval=5.0):
        self._clock = clock
        self._name = name
        self.interval = interval
        self._last = None
        self._dropped = 0
        self._events = 0

    def record(self, dropped, err):
        """Count C{dropped} connections lost to C{err}; maybe log."""
        self._dropped += dropped
        self._events += 1
        now = self._clock.seconds()
        if self._last is not None and now - self._last < self.interval:
            return False
        self._last = now
        log.warn("listener '{listener}': cannot accept connections: {error} ({code}); "
                 "{dropped} connection(s) closed in {events} event(s) since the last message",
                 listener=self._name, error=os.strerror(err), code=errno.errorcode.get(err, err),
                 dropped=self._dropped, events=self._events)
        self._dropped = 0
        self._events = 0
        return True


class UnixListenerPort(ListenerPort):
    """
    A L{ListenerPort} on a Unix domain socket (Envoy's C{pipe} listener):
    the same accept loop, with Twisted's Unix server transport and
    C{UNIXAddress}es.
    """

    addressFamily = socket.AF_UNIX
    transport = unix.Server

    @classmethod
    def adopt(cls, reactor, fileDescriptor, addressFamily, factory):
        port = privates.adoptListeningUnixPort(cls, reactor, fileDescriptor, factory)
        port._reserve = ReservedDescriptor()
        port.startListening()
        return port

    def _address(self, addr):
        return UNIXAddress(addr or None)

    def getHost(self):
        return UNIXAddress(self.socket.getsockname())
