# -*- test-case-name: tests.network.test_splice -*-
"""
Kernel-side byte moving for plain TCP proxying, with Linux C{splice(2)}.

A tcp_proxy connection with no other network filter and no TLS has nothing
to do with its bytes but pass them on. L{SplicePump} takes both sockets out
of the reactor's ordinary read handling and moves bytes socket -> pipe ->
socket inside the kernel, one pipe per direction, so no byte is copied into
Python.

The reactor keeps one selectable per file descriptor, so while the pump runs
each socket is represented by one L{_SpliceEnd}: readable means "move bytes
out of me", writable means "the bytes waiting for me can go now". The
transports stay connected but idle; on an error or a hang-up the pump hands
the socket back and calls the transport's own C{connectionLost}, the call
the reactor would have made, so that protocols, stats, access logs and
cluster accounting run as they do without splice.

Back-pressure: a direction reads from its source only while its pipe has
room; when the destination would block, the source leaves the reactor's
read set and the destination joins the write set until the pipe drains.
A direction therefore never holds more than one pipe's capacity.

An idle connection holds no pump: L{arm} leaves both transports in the
reactor's read set as they are, with their class swapped for one whose
C{doRead} asks the protocol for the pump (C{splicePump()}) on the first
readiness event, before a byte is read into Python. Most of a proxy's
connections may be idle at any time, and a pump with its two ends and two
directions is some 600 bytes per connection.
"""

import errno
import inspect
import os
import socket

from twisted.internet import main, tcp
from twisted.internet.interfaces import IPullProducer, IReadDescriptor, IWriteDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from txenvoy.privates import SlotOrMethod, unsentBytes, writeDisconnecting

log = Logger(namespace="connection")

#: Whether this Python and OS have C{os.splice} (Linux, Python 3.10+).
AVAILABLE = hasattr(os, "splice") and hasattr(os, "SPLICE_F_NONBLOCK")

#: Whether tcp_proxy uses the fast path where it can. C{TXENVOY_SPLICE=0}
#: in the environment turns it off for a whole process (end-to-end tests
#: compare both paths on the same binary); tests in-process set it directly.
ENABLED = AVAILABLE and os.environ.get("TXENVOY_SPLICE", "1") != "0"

#: The largest pipe asked for with C{F_SETPIPE_SZ} (Linux's default
#: C{fs.pipe-max-size}); a connection's buffer limit lowers it. The kernel
#: rounds up to a power of two pages and may give less (an unprivileged
#: user past C{fs.pipe-user-pages-soft}); the pump uses what it got. Bigger
#: pipes mean fewer system calls: 1 MiB took about 0.45 CPU-seconds per GiB
#: moved here, 64 KiB about 0.8.
PIPE_SIZE = 1 << 20

# Bounds the work done for one readiness event, so one busy connection
# cannot keep the others of its worker waiting.
_MAX_ROUNDS = 4

if AVAILABLE:
    import fcntl

    _splice = os.splice
    _FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
    # Linux's values; the constants are named in fcntl from Python 3.10.
    _F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
    _F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)


def eligible(connection, downstream, upstream):
    """
    Whether a tcp_proxy connection may use the fast path: splice is on, the
    downstream filter chain is the terminal filter alone with no transport
    socket, and both transports are plain TCP sockets the reactor owns.

    @param connection: the L{txenvoy.network.connection.ServerConnection}
        (anything without a C{filterChain} is not eligible).
    @param downstream: the downstream transport.
    @param upstream: the upstream transport.
    """
    if not ENABLED:
        return False
    chain = getattr(connection, "filterChain", None)
    if chain is None or len(chain.filterFactories) != 1 or chain.transportSocket is not None:
        return False
    for transport in (downstream, upstream):
        if not isinstance(transport, tcp.Connection) or not transport.connected:
            return False
        if transport.disconnecting or writeDisconnecting(transport):
            return False
    return True


def _armedDoRead(transport):
    """
    The first readiness event of an armed transport: its protocol's
    C{splicePump()} builds and starts the pump, which disarms both
    transports and moves what made this one readable. A transport closing
    meanwhile, or a protocol with no pump to give (not armed any more),
    reads as it did before arming.
    """
    pump = None
    if transport.connected and not transport.disconnecting:
        pump = transport.protocol.splicePump()
    if pump is None:
        disarm(transport)
        return transport.doRead()
    return pump.readable(transport)


class _Armed:
    """The state of a pair L{arm} armed: no pump yet."""

    def __repr__(self):
        return "<splice armed>"


#: What a caller may keep in place of its pump while the pair is armed.
ARMED = _Armed()


class _InSlot:
    """
    Arms a transport whose C{doRead} lives in a slot (a
    L{txenvoy.privates.SlotOrMethod}, the upstream client): the slot holds
    L{_armedDoRead}, bound when read.
    """

    def __init__(self, member):
        self.member = member

    def armable(self, transport):
        # Empty once connected; a connecting client's holds doConnect.
        return self.member.__get__(transport) is None

    def arm(self, transport):
        self.member.__set__(transport, _armedDoRead)

    def disarm(self, transport):
        if self.member.__get__(transport) is _armedDoRead:
            self.member.__set__(transport, None)


class _InHook:
    """
    Arms a transport that reads through its C{readHook} when set (the
    accepted connection, L{txenvoy.network.accept.AcceptedConnection}).
    """

    def armable(self, transport):
        # A connection closing at the next turn has its own.
        return transport.readHook is None

    def arm(self, transport):
        transport.readHook = _armedDoRead

    def disarm(self, transport):
        if transport.readHook is _armedDoRead:
            transport.readHook = None


class _BySubclass:
    """
    Arms any other TCP transport by swapping its class for a subclass
    reading through L{_armedDoRead}. (CPython gives the instance a dict of
    its own then: the two ways above hold nothing more per connection.)
    """

    def __init__(self, cls):
        self.cls = cls
        self.armed = type(cls.__name__, (cls,), {
            "__slots__": (), "doRead": _armedDoRead, "__module__": cls.__module__})

    def armable(self, transport):
        return True

    def arm(self, transport):
        transport.__class__ = self.armed

    def disarm(self, transport):
        if type(transport) is self.armed:
            transport.__class__ = self.cls


#: How each transport class is armed, and each armed subclass disarmed.
_ARMING = {}


def _armingFor(cls):
    arming = _ARMING.get(cls)
    if arming is None:
        doRead = inspect.getattr_static(cls, "doRead")
        if isinstance(doRead, SlotOrMethod):
            arming = _InSlot(doRead.member)
        elif hasattr(cls, "readHook"):
            arming = _InHook()
        else:
            arming = _BySubclass(cls)
            _ARMING[arming.armed] = arming
        _ARMING[cls] = arming
    return arming


def arm(downstream, upstream):
    """
    Defer the pump of an L{eligible} pair to the first readiness event of
    either socket (see the module docstring). The transports must be
    reading; their protocols must have C{splicePump()}: the started
    L{SplicePump} of the pair, or C{None} when the pair is not armed any
    more.

    @return: whether both are armed. Not when a transport still has bytes
        to write (the pump must wait for them from the start), reads its
        own way for now, or is not a TCP transport; then neither is, and
        the caller starts the pump.
    """
    for transport in (downstream, upstream):
        if (not isinstance(transport, tcp.Connection) or unsentBytes(transport)
                or not _armingFor(type(transport)).armable(transport)):
            return False
    for transport in (downstream, upstream):
        _armingFor(type(transport)).arm(transport)
    return True


def disarm(transport):
    """Let an armed transport read as before (nothing if not armed)."""
    if isinstance(transport, tcp.Connection):
        _armingFor(type(transport)).disarm(transport)


class _Direction:
    """One direction of the pair: source socket -> pipe -> sink socket."""

    __slots__ = ("source", "sink", "pipeRead", "pipeWrite", "inPipe", "eof", "finished",
                 "blocked", "fromDownstream")

    def __init__(self, source, sink, fromDownstream):
        self.source = source
        self.sink = sink
        self.fromDownstream = fromDownstream
        self.pipeRead = self.pipeWrite = -1
        self.inPipe = 0
        self.eof = False
        self.finished = False
        self.blocked = False


@implementer(IReadDescriptor, IWriteDescriptor)
class _SpliceEnd:
    """
    What the reactor sees of one socket while the pump runs.

    @ivar transport: the socket's Twisted transport.
    @ivar outbound: the L{_Direction} reading from this socket.
    @ivar inbound: the L{_Direction} writing to this socket.
    """

    # One per socket of every spliced connection, idle ones included.
    __slots__ = ("pump", "transport", "socket", "fd", "outbound", "inbound", "reading",
                 "writing")

    def __init__(self, pump, transport):
        self.pump = pump
        self.transport = transport
        self.socket = transport.getHandle()
        self.fd = self.socket.fileno()
        self.outbound = self.inbound = None
        self.reading = self.writing = False

    def fileno(self):
        # Live, so that a socket closed behind our back reads as -1 and the
        # reactor looks us up by identity instead of by a reused number.
        return self.socket.fileno()

    def doRead(self):
        self.pump._readable(self.outbound)

    def doWrite(self):
        self.pump._writable(self.inbound)

    def connectionLost(self, reason):
        # The reactor dropped us (a hang-up, or shutdown's disconnectAll).
        self.reading = self.writing = False
        self.pump._lose(self, reason)

    def logPrefix(self):
        return "splice"


@implementer(IPullProducer)
class _FlushWaiter:
    """
    Registered on a transport that still has bytes to write when the pump
    starts: Twisted calls a pull producer's C{resumeProducing} each time
    the transport's buffer has drained.
    """

    def __init__(self, pump, transport):
        self.pump = pump
        self.transport = transport

    def resumeProducing(self):
        if unsentBytes(self.transport):
            return
        self.transport.unregisterProducer()
        self.pump._flushed(self)

    def stopProducing(self):
        # The transport was lost while flushing: its protocol's
        # connectionLost stops the pump.
        pass


class SplicePump:
    """
    Moves the bytes of one downstream/upstream socket pair in the kernel.

    C{callbacks} (the tcp_proxy filter) is told:

     - C{onSpliceBytes(fromDownstream, toDownstream)}: bytes read from each
       side since the last call (counted from splice's return values when
       they leave the source, as the ordinary path counts reads);
     - C{onSpliceReadClosed(fromDownstream)}: that side sent FIN, every
       byte before it reached the other side and the other side got a FIN;
     - C{onSplicePaused(fromDownstream)} / C{onSpliceResumed(fromDownstream)}:
       that side stopped / resumed being read because the other side
       would not take more;
     - C{onSpliceFallback()}: no pipe could be made; the pump is stopped,
       both transports are left not reading, and the caller wires the
       ordinary path.

    Errors and hang-ups go to the transports' own C{connectionLost}.

    @ivar running: whether the pump owns the sockets.
    """

    __slots__ = ("reactor", "callbacks", "_pipeSize", "_down", "_up", "_toUpstream",
                 "_toDownstream", "_waiters", "_capacity", "running", "stopped")

    def __init__(self, reactor, downstream, upstream, callbacks, bufferLimit=None):
        """
        @param bufferLimit: the connection's buffer limit
            (C{per_connection_buffer_limit_bytes}); each direction then
            holds at most that much (rounded up to whole pages), as the
            ordinary path's watermarks would.
        """
        self.reactor = reactor
        self.callbacks = callbacks
        self.running = self.stopped = False
        self._pipeSize = min(PIPE_SIZE, bufferLimit) if bufferLimit else PIPE_SIZE
        self._down = _SpliceEnd(self, downstream)
        self._up = _SpliceEnd(self, upstream)
        self._toUpstream = _Direction(self._down, self._up, True)
        self._toDownstream = _Direction(self._up, self._down, False)
        self._down.outbound = self._up.inbound = self._toUpstream
        self._up.outbound = self._down.inbound = self._toDownstream
        self._waiters = []
        self._capacity = 0

    # --- life cycle ------------------------------------------------------

    def start(self):
        """
        Take both sockets over. Bytes the transports still buffer for
        writing (what was read before the upstream connected) are written
        by them first.
        """
        for end in (self._down, self._up):
            disarm(end.transport)
            end.transport.stopReading()
            if unsentBytes(end.transport):
                waiter = _FlushWaiter(self, end.transport)
                self._waiters.append(waiter)
                end.transport.registerProducer(waiter, False)
        if not self._waiters:
            self._run()

    def readable(self, transport):
        """
        C{transport}'s socket was readable when the pump started (the
        event that started it, see L{arm}): move its bytes now rather
        than on the next turn.
        """
        if self.running:
            end = self._down if transport is self._down.transport else self._up
            self._readable(end.outbound)

    def _flushed(self, waiter):
        self._waiters.remove(waiter)
        if not self._waiters and not self.stopped:
            self._run()

    def _run(self):
        self.running = True
        for end in (self._down, self._up):
            self._startReading(end)

    def stop(self):
        """
        Give the sockets back (not reading, not writing) and close the
        pipes. Bytes still in a pipe are dropped, as a closing connection
        drops its buffers. Safe to call more than once.
        """
        if self.stopped:
            return
        self.stopped = True
        self.running = False
        for waiter in self._waiters:
            if waiter.transport.producer is waiter:
                waiter.transport.unregisterProducer()
        self._waiters = []
        reactor = self.reactor
        for end in (self._down, self._up):
            if end.reading:
                end.reading = False
                reactor.removeReader(end)
            if end.writing:
                end.writing = False
                reactor.removeWriter(end)
        for d in (self._toUpstream, self._toDownstream):
            for fd in (d.pipeRead, d.pipeWrite):
                if fd >= 0:
                    os.close(fd)
            d.pipeRead = d.pipeWrite = -1

    def _openPipes(self):
        # Made on the first readable event, not at connect: an idle
        # connection then costs no pipe, and no file descriptor.
        opened = []
        try:
            for d in (self._toUpstream, self._toDownstream):
                r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
                opened += [r, w]
                try:
                    size = fcntl.fcntl(w, _F_SETPIPE_SZ, self._pipeSize)
                except OSError:
                    size = fcntl.fcntl(w, _F_GETPIPE_SZ, 0)
                d.pipeRead, d.pipeWrite = r, w
                self._capacity = min(self._capacity or size, size)
        except OSError as e:
            for fd in opened:
                os.close(fd)
            for d in (self._toUpstream, self._toDownstream):
                d.pipeRead = d.pipeWrite = -1
            log.debug("splice: no pipe ({error}), using the ordinary path", error=e)
            return False
        return True

    def _fallback(self):
        self.stop()
        self.callbacks.onSpliceFallback()

    # --- registration ------------------------------------------------------

    def _startReading(self, end):
        if not end.reading:
            end.reading = True
            self.reactor.addReader(end)

    def _stopReading(self, end):
        if end.reading:
            end.reading = False
            self.reactor.removeReader(end)

    # --- moving bytes ------------------------------------------------------

    def _readable(self, d):
        """C{d}'s source has bytes or EOF: move them as far as the sink takes."""
        if not d.source.reading:
            # A readiness event from the same poll batch, after we stopped.
            return
        if d.pipeRead < 0 and not self._openPipes():
            self._fallback()
            return
        # Live descriptors: a socket its transport closed reads as -1 (an
        # EBADF below), never as a number some new connection now holds.
        src = d.source.socket.fileno()
        pipeWrite = d.pipeWrite
        capacity = self._capacity
        moved = 0
        # Reading only runs with an empty pipe (a non-empty one means the
        # sink is blocked and the source is out of the read set), so each
        # round may fill the whole pipe.
        for _ in range(_MAX_ROUNDS):
            try:
                n = _splice(src, pipeWrite, capacity, None, None, _FLAGS)
            except BlockingIOError:
                break
            except OSError as e:
                self._report(d, moved)
                self._lose(d.source, e)
                return
            if n == 0:
                d.eof = True
                break
            moved += n
            d.inPipe = n
            try:
                self._drain(d)
            except OSError as e:
                self._report(d, moved)
                self._lose(d.sink, e)
                return
            if d.inPipe:
                d.blocked = True
                break
            if n < capacity:
                # A short read: the socket had no more for now.
                break
        self._report(d, moved)
        if d.blocked:
            self._stopReading(d.source)
            if not d.sink.writing:
                d.sink.writing = True
                self.reactor.addWriter(d.sink)
            self.callbacks.onSplicePaused(d.fromDownstream)
        elif d.eof:
            self._stopReading(d.source)
            self._finish(d)

    def _drain(self, d):
        """Move the pipe's bytes to the sink until empty or it would block."""
        sink = d.sink.socket.fileno()
        pipeRead = d.pipeRead
        while d.inPipe:
            try:
                n = _splice(pipeRead, sink, d.inPipe, None, None, _FLAGS)
            except BlockingIOError:
                return
            if n <= 0:
                return
            d.inPipe -= n

    def _writable(self, d):
        """C{d}'s sink can take bytes again."""
        if not d.sink.writing:
            return
        try:
            self._drain(d)
        except OSError as e:
            self._lose(d.sink, e)
            return
        if d.inPipe:
            return
        d.blocked = False
        d.sink.writing = False
        self.reactor.removeWriter(d.sink)
        if d.eof:
            self._finish(d)
        else:
            self._startReading(d.source)
            self.callbacks.onSpliceResumed(d.fromDownstream)

    def _finish(self, d):
        """C{d}'s source sent FIN and every byte reached the sink: pass the FIN on."""
        if d.finished:
            return
        d.finished = True
        try:
            d.sink.socket.shutdown(socket.SHUT_WR)
        except OSError as e:
            if e.errno != errno.ENOTCONN:
                self._lose(d.sink, e)
                return
        self.callbacks.onSpliceReadClosed(d.fromDownstream)

    def _report(self, d, moved):
        if not moved:
            return
        if d.fromDownstream:
            self.callbacks.onSpliceBytes(moved, 0)
        else:
            self.callbacks.onSpliceBytes(0, moved)

    # --- errors ----------------------------------------------------------

    def _lose(self, end, reason):
        """
        C{end}'s socket failed or hung up: stop, and deliver the loss to
        its transport as the reactor would have.
        """
        self.stop()
        if not isinstance(reason, Failure):
            log.debug("splice: {error} on fd {fd}", error=reason, fd=end.fd)
            reason = Failure(main.CONNECTION_LOST)
        transport = end.transport
        if not transport.disconnected:
            transport.connectionLost(reason)

