# -*- test-case-name: tests.test_privates -*-
"""
Every private attribute of Twisted and pyOpenSSL that txenvoy relies on,
named once, each with the reason no public API serves.

A release of either may move any of them without notice. That is why they
are reached only from here, why C{tests/test_privates.py} checks each one
against the installed versions (it fails loudly, naming the attribute,
rather than letting a proxy misbehave), and why C{pyproject.toml} caps
Twisted and pyOpenSSL at the newest releases this was tested with: raise
the caps once that test passes on a new release.

What is used, and why:

Twisted, C{twisted.protocols.tls.TLSMemoryBIOProtocol} (L{TLSTransport}):
 - C{_tlsConnection}: the C{OpenSSL.SSL.Connection} of one TLS connection,
   for the handshake's stats (cipher, version, curve, session reuse) and
   for C{close_notify} as a write half-close; Twisted exposes no accessor.
 - C{_handshakeDone}: whether the handshake finished; Twisted tells the
   wrapped protocol only when it provides C{IHandshakeListener}, and
   txenvoy must know it inside the transport too.
 - C{_appSendBuffer}: application data written before the handshake
   finished; C{close_notify} must wait until it is sent.
 - C{_checkHandshakeStatus}, C{_flushReceiveBIO}, C{_flushSendBIO},
   C{_shutdownTLS}, C{_tlsShutdownFinished}, C{_unbufferPendingWrites},
   C{_write}, C{_aborted}, C{_lostTLSConnection}: overridden or called
   by the subclasses that count Envoy's C{ssl.*} stats before the
   application hears of the handshake and carry TCP half-close through
   TLS, which Twisted's transport does not do.
 - C{BufferingTLSTransport._aggregator}: its small-write buffer, flushed
   before a close so the last bytes precede C{close_notify}.

Twisted, C{twisted.internet.abstract.FileDescriptor} (L{unsentBytes}):
 - C{dataBuffer}, C{offset}, C{_tempDataLen}: the transport's write
   buffer. The write fast path and splice may only write to the socket
   directly when it is empty, or the kernel would reorder bytes.
 - C{tcp.Connection._writeDisconnecting}: a write half-close in progress
   (L{writeDisconnecting}); splice must not take such a socket over.
 - C{tcp.Connection._writeDisconnected}: the write half already shut down
   (L{writeDisconnected}); a connection closed after its response may be
   closed at once only when nothing is pending on its write side.
 - C{PosixReactorBase._disconnectSelectable} (L{disconnectNow}): what the
   reactor calls once a closing transport is flushed; calling it directly
   closes a connection with nothing left to write with C{close(2)} alone,
   without the switch to writing C{loseConnection} makes first.

Twisted, C{twisted.internet.abstract.FileDescriptor} (L{GatheringWrite},
L{queueUnsent}):
 - C{dataBuffer}, C{offset}, C{_tempDataBuffer}, C{_tempDataLen},
   C{producer}, C{streamingProducer}, C{producerPaused},
   C{_postLoseConnection}, C{_closeWriteConnection}, C{_maybePauseProducer}:
   the write buffer and what Twisted's C{doWrite} does once it is empty.
   Its C{doWrite} joins what is queued behind the unsent part into one new
   string whenever less than 128 KiB is left of it (a copy of every queued
   body byte) and sends 128 KiB per writable event;
   L{GatheringWrite.doWrite} hands the queued strings to one C{sendmsg} as
   they are, and again while the socket takes all. L{queueUnsent} leaves
   the unsent part of a string sent directly in place (C{dataBuffer} and
   C{offset}) instead of copying it into a new one for C{write}.
 - C{_isSendBufferFull}: overridden by L{GatheringWrite} to count only the
   bytes not yet sent against the buffer limit, as Envoy's high watermark.

Twisted, C{twisted.internet.tcp.Port} (L{adoptListeningPort}):
 - C{_fromListeningDescriptor}: what C{reactor.adoptStreamPort} builds a
   port with; called on a subclass (L{txenvoy.network.accept.ListenerPort})
   whose accept loop counts the connections dropped when descriptors run
   out. C{adoptStreamPort} always builds Twisted's own class.
 - C{_preexistingSocket} (L{adoptListeningUnixPort}): the socket such a
   port starts with. Set directly for a Unix socket: C{tcp.Port}'s
   constructor cannot read an abstract socket's name, and C{unix.Port}
   would chmod the path to its own mode and unlink it when one worker
   stops listening.

Twisted, C{twisted.internet.epollreactor.EPollReactor} (L{EPollReactor}):
 - C{_poller}, C{_selectables}, C{_doReadOrWrite}: its poll loop, rewritten
   to hand each ready descriptor to C{_doReadOrWrite} directly. Twisted's
   wraps every event in C{log.callWithLogger} (a legacy log context and
   two more calls), a measurable share of a small request's CPU, for a
   context txenvoy's logging never reads.
 - C{tcp.Connection._tempDataBuffer}, C{_tempDataLen}, C{dataBuffer},
   C{offset}, C{_aborting} and C{EPollReactor._writes} (the descriptors
   watched for writability) (L{EPollReactor.writeAtTurnEnd}): small
   writes made while the loop dispatches ready descriptors are put in the
   transport's own write buffer, where C{loseConnection} and every other
   writer see them in order, and sent once all ready descriptors had their
   turn, unless Twisted's own write path took the transport over
   meanwhile. Twisted's C{write} would also ask epoll for writability (two
   C{epoll_ctl} and one more event per write).

Twisted, the reactor:
 - C{_registerAsIOThread} (L{markNotIOThread}): a worker's reactor would
   otherwise claim the process-wide "I/O thread" marker when it runs.
 - C{_exitSignal} (L{forgetExitSignal}): twistd re-raises SIGTERM/SIGINT
   after the reactor stops (exit status 143); Envoy exits 0.

Twisted, C{twisted.internet.tcp.Client} and C{Connector} (L{SlottedTCPClient},
L{SlottedTCPConnector}):
 - C{connector}, C{addr}, C{_requiresResolution}, C{reactor},
   C{_tempDataBuffer}, C{_tempDataLen}, C{socket}, C{fileno}, C{protocol},
   C{realAddress}, C{connected}, C{disconnected}, C{disconnecting},
   C{logstr}, C{bufferSize}, the write buffer and producer state
   (C{dataBuffer}, C{offset}, C{producer}, ...), C{_writeDisconnecting},
   C{_writeDisconnected}, C{_aborting}, and the C{doRead} / C{doWrite} that
   C{doConnect} sets on the instance while connecting: every attribute a
   client connection sets on itself, kept in slots. Twisted's client sets
   them in an instance dict that CPython 3.11 makes a full dict (some
   450 bytes) once the class's shared keys run out, which a burst of
   connections does: the largest part of an idle upstream connection.
 - C{Connector._makeTransport}: builds the client transport; overridden so
   the connector builds the slotted one (C{reactor.connectTCP} always
   builds Twisted's own).

pyOpenSSL, C{OpenSSL.SSL._lib} / C{_ffi} and C{Connection._ssl} (the
C{SSL*} those calls take):
 - C{SSL_session_reused} (L{sessionReused}): no public call says whether
   a session was resumed (C{ssl.session_reused}).
 - C{X509_verify_cert_error_string} (L{verifyErrorString}): OpenSSL's
   text for a verify error number, for upstream failure reasons.
"""

import errno
import select
import sys
from types import FunctionType

from OpenSSL import SSL
from OpenSSL.SSL import Error, WantReadError
from twisted.internet import main, tcp
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.main import CONNECTION_DONE
from twisted.protocols.tls import BufferingTLSTransport
from twisted.python import log as legacyLog
from twisted.python.failure import Failure

#: (owner, attribute) pairs C{tests/test_privates.py} checks on classes.
CLASS_ATTRIBUTES = (
    ("twisted.protocols.tls.TLSMemoryBIOProtocol", "_checkHandshakeStatus"),
    ("twisted.protocols.tls.TLSMemoryBIOProtocol", "_flushReceiveBIO"),
    ("twisted.protocols.tls.TLSMemoryBIOProtocol", "_flushSendBIO"),
    ("twisted.protocols.tls.TLSMemoryBIOProtocol", "_shutdownTLS"),
    ("twisted.protocols.tls.TLSMemoryBIOProtocol", "_tlsShutdownFinished"),
    ("twisted.protocols.tls.TLSMemoryBIOProtocol", "_unbufferPendingWrites"),
    ("twisted.protocols.tls.TLSMemoryBIOProtocol", "_write"),
    ("twisted.protocols.tls.TLSMemoryBIOProtocol", "_aborted"),
    ("twisted.protocols.tls.TLSMemoryBIOProtocol", "_lostTLSConnection"),
    ("twisted.internet.tcp.Connection", "_writeDisconnecting"),
    ("twisted.internet.tcp.Connection", "_postLoseConnection"),
    ("twisted.internet.tcp.Connection", "_closeWriteConnection"),
    ("twisted.internet.tcp.Connection", "_isSendBufferFull"),
    ("twisted.internet.tcp.Connection", "_maybePauseProducer"),
    ("twisted.internet.tcp.Connection", "_writeDisconnected"),
    ("twisted.internet.posixbase.PosixReactorBase", "_disconnectSelectable"),
    ("twisted.internet.tcp.Port", "_fromListeningDescriptor"),
    ("twisted.internet.tcp.Port", "_preexistingSocket"),
    ("twisted.internet.epollreactor.EPollReactor", "_doReadOrWrite"),
    ("twisted.internet.base.ReactorBase", "_registerAsIOThread"),
    ("twisted.internet.base.ReactorBase", "_exitSignal"),
    ("twisted.internet.tcp.Connector", "_makeTransport"),
    ("OpenSSL.SSL._lib", "SSL_session_reused"),
    ("OpenSSL.SSL._lib", "X509_verify_cert_error_string"),
    ("OpenSSL.SSL._ffi", "string"),
)

#: Attributes set on a connected L{TLSTransport} instance.
TLS_INSTANCE_ATTRIBUTES = ("_tlsConnection", "_handshakeDone", "_appSendBuffer", "_aggregator")

#: Attributes set on an C{OpenSSL.SSL.Connection} instance.
OPENSSL_CONNECTION_ATTRIBUTES = ("_ssl",)

#: Attributes set on a connected C{tcp.Connection} instance.
TCP_INSTANCE_ATTRIBUTES = ("dataBuffer", "offset", "_tempDataLen")

#: Attributes a connected C{tcp.Client} sets on itself (L{SlottedTCPClient}
#: keeps them in slots; C{fileno}, C{doRead} and C{doWrite} fall back to
#: the class's methods when unset, as they do on Twisted's instance).
CLIENT_INSTANCE_ATTRIBUTES = (
    "connector", "addr", "_requiresResolution", "reactor", "_tempDataBuffer", "_tempDataLen",
    "socket", "protocol", "realAddress", "connected", "disconnected", "disconnecting", "logstr",
    "bufferSize", "dataBuffer", "offset", "producer", "streamingProducer", "producerPaused",
    "_writeDisconnecting", "_writeDisconnected", "_aborting")

#: Attributes L{EPollReactor.writeAtTurnEnd} and its flush use on a
#: C{tcp.Connection}.
TCP_QUEUE_ATTRIBUTES = ("_tempDataBuffer", "_tempDataLen", "dataBuffer", "offset", "_aborting",
                        "_writeDisconnected", "producer", "streamingProducer")

#: Attributes set on an C{EPollReactor} instance.
EPOLL_INSTANCE_ATTRIBUTES = ("_poller", "_selectables", "_writes")

try:
    from twisted.internet.epollreactor import EPollReactor as _TwistedEPollReactor
except ImportError:  # not Linux
    _TwistedEPollReactor = None


if _TwistedEPollReactor is not None:

    _EPOLLIN = select.EPOLLIN

    class EPollReactor(_TwistedEPollReactor):
        """
        Twisted's epoll reactor, whose poll loop calls each ready
        descriptor's C{doRead}/C{doWrite} (through C{_doReadOrWrite}, which
        logs their exceptions and disconnects) without a log context per
        event. What escapes C{_doReadOrWrite} (a C{connectionLost} that
        raised) is logged, as Twisted's loop does, and the loop goes on.

        Small writes made during that dispatch are sent together once
        every ready descriptor had its turn (L{writeAtTurnEnd}), as Envoy's
        connections write from a write event that runs after the loop's
        ready events. A peer asleep in its own poll is woken by the first
        of them rather than by each: sent one by one, every request through
        the proxy woke nginx and wrk on the other core, and those wakeups
        were nearly half of the proxy's kernel time.
        """

        #: A write up to this many bytes in all, per transport and turn,
        #: waits for the turn's end; a larger one goes out at once.
        TURN_WRITE_LIMIT = 64 * 1024

        _dispatching = False

        def __init__(self):
            _TwistedEPollReactor.__init__(self)
            self._turnWrites = {}

        def writeAtTurnEnd(self, transport, data):
            """
            Append C{data} to the write buffer of C{transport} (a
            C{tcp.Connection} of this reactor) and send it when the
            current dispatch ends, along with the turn's other writes.

            @return: whether it was taken; if not (no dispatch running,
                too large, or the transport is gone or its write side
                shut), the caller writes it its own way.
            """
            if not self._dispatching:
                return False
            queued = self._turnWrites
            size = len(data)
            taken = queued.get(transport, 0) + size
            if (taken > self.TURN_WRITE_LIMIT or not transport.connected
                    or transport._writeDisconnected):
                return False
            queued[transport] = taken
            # Behind whatever Twisted's own path still has to send, if
            # anything: that path then sends it all, in order.
            transport._tempDataBuffer.append(data)
            transport._tempDataLen += size
            return True

        def onlyTurnWrites(self, transport):
            """
            Whether all that C{transport} has left to write was given to
            L{writeAtTurnEnd} this turn (nothing put it under Twisted's
            own write path, which watches it for writability).
            """
            return transport in self._turnWrites and transport.fileno() not in self._writes

        def _sendTurnWrites(self):
            """
            Send what L{writeAtTurnEnd} buffered this turn. A transport
            under Twisted's own write path (something else wrote to it, it
            is closing the Twisted way, or it had bytes left from before)
            is left to that path, which sends it all in order when the
            socket is writable; so is what the socket does not take now,
            and a transport feeding a pull producer (which that path asks
            for more once drained).
            """
            queued = self._turnWrites
            self._turnWrites = {}
            writes = self._writes
            for transport in queued:
                if (not transport.connected or transport._aborting
                        or transport.fileno() in writes):
                    continue
                if transport.dataBuffer or (transport.producer is not None
                                            and not transport.streamingProducer):
                    transport.startWriting()
                    continue
                pieces = transport._tempDataBuffer
                data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
                transport._tempDataBuffer = []
                transport._tempDataLen = 0
                try:
                    sent = transport.socket.send(data)
                except OSError:
                    # Twisted's doWrite meets the error again and closes.
                    sent = 0
                if sent < len(data):
                    queueUnsent(transport, data, sent)

        def doPoll(self, timeout):
            if timeout is None:
                timeout = -1
            try:
                events = self._poller.poll(timeout, len(self._selectables))
            except OSError as e:
                if e.errno == errno.EINTR:
                    return
                raise
            selectables = self._selectables
            dispatch = self._doReadOrWrite
            self._dispatching = True
            try:
                for fd, event in events:
                    selectable = selectables.get(fd)
                    if selectable is None:
                        continue
                    try:
                        if event == _EPOLLIN:
                            # Readable and nothing else, most events:
                            # C{_doReadOrWrite}'s read, without its flag
                            # tests and C{fileno()} check (a descriptor
                            # closed in this turn is no longer in
                            # C{_selectables}).
                            try:
                                why = selectable.doRead()
                            except BaseException:
                                why = sys.exc_info()[1]
                                legacyLog.err()
                            if why:
                                self._disconnectSelectable(selectable, why, True)
                        else:
                            dispatch(selectable, fd, event)
                    except Exception:
                        legacyLog.err(None, "dispatching an event of %r" % (selectable,))
            finally:
                self._dispatching = False
                if self._turnWrites:
                    self._sendTurnWrites()

        doIteration = doPoll

else:
    EPollReactor = None


class TLSTransport(BufferingTLSTransport):
    """
    Twisted's buffering TLS transport with the private state its
    subclasses need given public names.

    The subclasses (L{txenvoy.extensions.transport_sockets.tls}) override
    C{_onHandshakeDone}, called once the handshake is done and before the
    wrapped protocol hears of it.
    """

    @property
    def tlsConnection(self):
        """The C{OpenSSL.SSL.Connection}, or C{None} once closed."""
        return self._tlsConnection

    @property
    def handshakeDone(self):
        """Whether the TLS handshake finished."""
        return self._handshakeDone

    @property
    def appDataPending(self):
        """Whether application data written before the handshake waits."""
        return bool(self._appSendBuffer)

    def flushSmallWrites(self):
        """Send what the small-write aggregator holds now."""
        self._aggregator.flush()

    def _onHandshakeDone(self):
        """The handshake just finished; override."""

    def _checkHandshakeStatus(self):
        # Twisted's, with the bookkeeping done before the application hears
        # about the handshake.
        if self._aborted:
            return
        try:
            self._tlsConnection.do_handshake()
        except WantReadError:
            self._flushSendBIO()
        except Error:
            self._tlsShutdownFinished(Failure())
        else:
            self._handshakeDone = True
            self._onHandshakeDone()
            if IHandshakeListener.providedBy(self.wrappedProtocol):
                self.wrappedProtocol.handshakeCompleted()


def unsentBytes(transport):
    """How many bytes a Twisted C{FileDescriptor} transport still holds."""
    return len(transport.dataBuffer) - transport.offset + getattr(transport, "_tempDataLen", 0)


def onlyTurnWrites(transport):
    """
    Whether all a TCP transport has left to write goes out at the end of
    its reactor's current turn (L{EPollReactor.writeAtTurnEnd}).
    """
    check = getattr(transport.reactor, "onlyTurnWrites", None)
    return check is not None and check(transport)


#: At most this many strings in one C{sendmsg} (Linux's C{IOV_MAX} is 1024).
GATHER_MAX_BUFFERS = 64


class GatheringWrite:
    """
    C{doWrite} for a C{tcp.Connection} subclass: what is queued goes to
    the socket with C{sendmsg}, each string as it is (no join, no copy),
    again as long as the socket takes everything offered; what it does not
    take stays queued where it was. Once the buffer is empty it does what
    Twisted's C{doWrite} does: resumes the producer, or finishes a close
    or a write half-close. It adds no attribute of its own (slotted
    transports keep having no instance dict).

    Its streaming producer is paused and resumed at Envoy's watermarks:
    paused once more than C{bufferSize} bytes wait to be sent (the high
    watermark, C{per_connection_buffer_limit_bytes}), resumed once no more
    than half of that wait (the low one).
    """

    __slots__ = ()

    def doWrite(self):
        send = self.socket.sendmsg
        while True:
            pieces = self._tempDataBuffer
            data = self.dataBuffer
            offset = self.offset
            head = len(data) - offset
            if head:
                iov = [memoryview(data)[offset:] if offset else data]
                iov += pieces[:GATHER_MAX_BUFFERS - 1]
            elif pieces:
                iov = pieces[:GATHER_MAX_BUFFERS]
            else:
                break
            try:
                sent = send(iov)
            except (BlockingIOError, InterruptedError):
                return None
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    return None
                return main.CONNECTION_LOST
            if head:
                if sent < head:
                    self.offset = offset + sent
                    if self.producerPaused and self.streamingProducer:
                        self._belowLowWatermark()
                    return None
                sent -= head
                self.dataBuffer = b""
                self.offset = 0
            # Whole strings sent leave the list; a string sent in part
            # becomes the unsent head, as it stands.
            offered = len(iov) - 1 if head else len(iov)
            done = taken = 0
            while done < offered:
                size = len(pieces[done])
                if sent < size:
                    break
                sent -= size
                taken += size
                done += 1
            full = done < offered
            if sent:
                piece = pieces[done]
                taken += len(piece)
                self.dataBuffer = piece
                self.offset = sent
                done += 1
            if done:
                del pieces[:done]
                self._tempDataLen -= taken
            if full:
                if self.producerPaused and self.streamingProducer:
                    self._belowLowWatermark()
                return None
        self.dataBuffer = b""
        self.offset = 0
        self.stopWriting()
        if self.producer is not None and (not self.streamingProducer or self.producerPaused):
            self.producerPaused = False
            self.producer.resumeProducing()
        elif self.disconnecting:
            return self._postLoseConnection()
        elif self._writeDisconnecting:
            self._writeDisconnected = True
            return self._closeWriteConnection()
        return None

    def _belowLowWatermark(self):
        # Envoy's low watermark, half the high one: a paused producer
        # resumes once the bytes not yet sent are down to it, rather than
        # once all are sent, so that it refills the buffer meanwhile.
        if self.producer is not None and unsentBytes(self) <= self.bufferSize // 2:
            self.producerPaused = False
            self.producer.resumeProducing()

    def _isSendBufferFull(self):
        # Envoy's high watermark: the bytes not yet sent, past the
        # connection's buffer limit (Twisted counts the sent part of the
        # head string too).
        return unsentBytes(self) > self.bufferSize


def queueUnsent(transport, data, sent, rest=()):
    """
    Queue what the socket did not take of C{data} (a string sent directly
    while C{transport}'s buffer was empty), after its first C{sent} bytes,
    then the strings C{rest}, to be sent when the socket is writable. A
    C{bytes} C{data} stays as it is (no copy of its unsent part).
    """
    if type(data) is bytes:
        transport.dataBuffer = data
        transport.offset = sent
    else:
        transport.dataBuffer = bytes(data[sent:])
        transport.offset = 0
    if rest:
        transport.writeSequence([bytes(b) for b in rest])
    else:
        transport._maybePauseProducer()
        transport.startWriting()


def writeDisconnected(transport):
    """Whether a TCP transport's write side is already shut down."""
    return getattr(transport, "_writeDisconnected", False)


def disconnectNow(transport):
    """
    Close a transport the way the reactor does once it flushed a closing
    one: out of the reactor's sets, then C{connectionLost(ConnectionDone)}.
    """
    transport.reactor._disconnectSelectable(transport, CONNECTION_DONE, False)


def writeDisconnecting(transport):
    """Whether a TCP transport is half-closing its write side."""
    return getattr(transport, "_writeDisconnecting", False)


def adoptListeningPort(portClass, reactor, fileDescriptor, addressFamily, factory):
    """
    An unstarted C{portClass} (a C{tcp.Port} subclass) on a duplicate of a
    listening socket's descriptor, as C{reactor.adoptStreamPort} makes.
    """
    return portClass._fromListeningDescriptor(reactor, fileDescriptor, addressFamily, factory)


def adoptListeningUnixPort(portClass, reactor, fileDescriptor, factory):
    """
    An unstarted C{portClass} (a C{tcp.Port} subclass with Unix transports)
    on a duplicate of a listening Unix socket's descriptor.
    """
    import socket

    port = portClass(None, factory, None, "", reactor)
    port._preexistingSocket = socket.fromfd(fileDescriptor, socket.AF_UNIX, socket.SOCK_STREAM)
    return port


def markNotIOThread(reactor):
    """Keep a worker thread's reactor from claiming the I/O thread marker."""
    reactor._registerAsIOThread = False


def forgetExitSignal(reactor):
    """Make twistd exit 0 after SIGTERM / SIGINT, as Envoy does."""
    if getattr(reactor, "_exitSignal", None) is not None:
        reactor._exitSignal = None


def sessionReused(tlsConnection):
    """Whether an C{OpenSSL.SSL.Connection} resumed a session."""
    reused = getattr(SSL._lib, "SSL_session_reused", None)
    if reused is None:
        return False
    return bool(reused(tlsConnection._ssl))


def verifyErrorString(errno):
    """OpenSSL's text for an X509 verify error number."""
    return SSL._ffi.string(SSL._lib.X509_verify_cert_error_string(errno)).decode()


class SlotOrMethod:
    """
    An attribute kept in a slot (C{member}, the slot's descriptor) that,
    holding C{None}, is C{method} bound to the instance: what a method is
    once the instance attribute shadowing it is deleted. (C{None} rather
    than an empty slot: the reactor reads C{doRead} on every event, and an
    empty slot would raise and catch an C{AttributeError} each time.) A
    plain function in the slot is bound to the instance as a method would
    be: a method for one instance, with no bound method held by it
    (L{txenvoy.network.splice.arm}).
    """

    __slots__ = ("member", "method")

    def __init__(self, member, method):
        self.member = member
        self.method = method

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        value = self.member.__get__(instance, owner)
        if value is None:
            return self.method.__get__(instance, owner)
        if type(value) is FunctionType:
            return value.__get__(instance, owner)
        return value

    def __set__(self, instance, value):
        self.member.__set__(instance, value)

    def __delete__(self, instance):
        self.member.__set__(instance, None)


# The class defaults the slots of SlottedTCPClient hide, set per instance.
_CLIENT_DEFAULTS = tuple((name, getattr(tcp.Client, name)) for name in CLIENT_INSTANCE_ATTRIBUTES
                         if hasattr(tcp.Client, name))


class SlottedTCPClient(tcp.Client):
    """
    Twisted's TCP client connection with every attribute it sets on itself
    in a slot, so that it has no instance dict (see the module docstring).
    A subclass reading its own way gives C{doRead} as
    C{SlotOrMethod(SlottedTCPClient._doRead, itsDoRead)}.
    """

    __slots__ = CLIENT_INSTANCE_ATTRIBUTES + ("_fileno", "_doRead", "_doWrite")

    def __init__(self, host, port, bindAddress, connector, reactor=None):
        for name, value in _CLIENT_DEFAULTS:
            setattr(self, name, value)
        self._fileno = self._doRead = self._doWrite = None
        tcp.Client.__init__(self, host, port, bindAddress, connector, reactor)


SlottedTCPClient.fileno = SlotOrMethod(SlottedTCPClient._fileno, tcp.Client.fileno)
SlottedTCPClient.doRead = SlotOrMethod(SlottedTCPClient._doRead, tcp.Client.doRead)
SlottedTCPClient.doWrite = SlotOrMethod(SlottedTCPClient._doWrite, tcp.Client.doWrite)


class SlottedTCPConnector(tcp.Connector):
    """A TCP connector whose connections are C{transportClass}."""

    transportClass = SlottedTCPClient

    def _makeTransport(self):
        return self.transportClass(self.host, self.port, self.bindAddress, self, self.reactor)
