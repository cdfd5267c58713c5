# -*- test-case-name: tests.server.test_channel_outbox -*-
"""
What the main process sends a worker process, queued instead of blocking.

The main process owns admin, xDS, health checks and stats flushing; a send
that blocked on one worker process's full channel (a process still
starting, or stopped, or stuck with the GIL held) would stop all of that
for every worker process. Each message is queued in order, with the
descriptor it passes, and written as the channel takes it; a worker process
that has taken nothing for L{STALL_KILL_S} while messages wait is killed,
and then replaced like any other that died, with the current config.
"""

import collections
import socket
import struct

from zope.interface import implementer
from twisted.internet.interfaces import IWriteDescriptor
from twisted.logger import Logger

from txenvoy.server.hot_restart_rpc import encode

log = Logger(namespace="main")

#: How long a worker process may leave its channel full while messages
#: wait before it is killed: longer than a start on a loaded machine.
STALL_KILL_S = 60.0


@implementer(IWriteDescriptor)
class ChannelOutbox:
    """
    The sending side of one worker process's sequenced-packet channel.

    It writes through a descriptor of its own (a C{dup} of C{sock}): a
    reactor keeps one selectable per descriptor number, so waiting to write
    on the number the channel's reader is registered with would replace
    that reader, and the channel's next incoming message would go to
    C{doRead} here, fail, and close the outbox with all it held.

    @param onStalled: called once when the queue has not moved for
        L{STALL_KILL_S}.
    """

    def __init__(self, reactor, sock, onStalled):
        self.reactor = reactor
        self.socket = sock.dup()
        self._onStalled = onStalled
        self._queue = collections.deque()
        self._writing = False
        self._stallTimer = None

    def fileno(self):
        return self.socket.fileno()

    def logPrefix(self):
        return "worker-channel"

    def __len__(self):
        """Packets waiting."""
        return len(self._queue)

    def send(self, message, fd=None):
        """
        Queue C{message} (with C{fd} passed beside its only packet) and
        write what the channel takes now.
        """
        chunks = encode(message)
        if fd is not None and len(chunks) != 1:
            raise ValueError("an fd passing message was too long for one sendmsg().")
        ancillary = ([(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))]
                     if fd is not None else [])
        queue = self._queue
        for chunk in chunks:
            queue.append((chunk, ancillary))
            ancillary = []
        if not self._writing:
            self.doWrite()

    def doWrite(self):
        """Write queued packets until the channel is full or the queue empty."""
        queue = self._queue
        sendmsg = self.socket.sendmsg
        moved = False
        while queue:
            chunk, ancillary = queue[0]
            try:
                sendmsg([chunk], ancillary)
            except BlockingIOError:
                break
            except OSError as e:
                # Its end is gone: the process ended (processEnded follows).
                log.debug("worker channel: {error}", error=e)
                self.close()
                return
            queue.popleft()
            moved = True
        if moved and self._stallTimer is not None:
            self._stallTimer.cancel()
            self._stallTimer = None
        if queue:
            if not self._writing:
                self._writing = True
                self.reactor.addWriter(self)
            if self._stallTimer is None:
                self._stallTimer = self.reactor.callLater(STALL_KILL_S, self._stalled)
        elif self._writing:
            self._writing = False
            self.reactor.removeWriter(self)

    def _stalled(self):
        self._stallTimer = None
        self._onStalled(len(self._queue))

    def close(self):
        """Drop what is queued; stop writing; close this side's descriptor."""
        if self._writing:
            self._writing = False
            self.reactor.removeWriter(self)
        if self._stallTimer is not None:
            self._stallTimer.cancel()
            self._stallTimer = None
        self._queue.clear()
        self.socket.close()

    def connectionLost(self, reason):
        # The reactor dropped the descriptor (the worker process's end
        # closed): its end is handled by processEnded.
        self._writing = False
        self.close()
