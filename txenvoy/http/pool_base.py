# -*- test-case-name: tests.http.test_conn_pool -*-
"""
What the HTTP/1.1 and HTTP/2 connection pools share: Envoy's reset reasons
as they appear in local reply bodies, the direct writer of their
connections, the handle of a stream waiting for a connection and the
accounting of those waits.
"""

from twisted.internet import tcp

from txenvoy.privates import queueUnsent, unsentBytes

__all__ = ["OVERFLOW", "CONNECTION_TERMINATION", "PROTOCOL_ERROR", "directWriter",
           "directSequenceWriter", "IdleTimer",
           "PendingStream", "PendingAccounting", "countAlpnConnection"]

#: Envoy's reset reasons, as they appear in local reply bodies.
OVERFLOW = "overflow"
CONNECTION_TERMINATION = "connection termination"
PROTOCOL_ERROR = "protocol error"


def _sendNow(transport, data):
    # Twisted queues every write and sends it once the reactor sees the
    # socket writable, at the cost of two epoll changes and a dispatch per
    # write. txenvoy's reactor sends the small writes of a loop turn
    # together at its end; otherwise, when nothing is queued, the socket is
    # tried at once. Whatever it does not take goes the usual way, so
    # ordering and back-pressure hold.
    atTurnEnd = getattr(transport.reactor, "writeAtTurnEnd", None)
    if atTurnEnd is not None and atTurnEnd(transport, data):
        return
    if unsentBytes(transport) or not transport.connected or transport.disconnecting:
        transport.write(data)
        return
    try:
        sent = transport.socket.send(data)
    except (BlockingIOError, InterruptedError):
        sent = 0
    except OSError:
        # Let Twisted meet the error and close the connection its way.
        transport.write(data)
        return
    if sent < len(data):
        queueUnsent(transport, data, sent)


#: Below this many bytes in all, a sequence is joined and sent as one
#: buffer; above, it is handed to the kernel as it is (C{sendmsg}), so that
#: a large body is not copied once more to put a head in front of it.
GATHER_MIN_BYTES = 64 * 1024

#: At most this many buffers in one C{sendmsg} (well under Linux's
#: C{IOV_MAX} of 1024); a longer sequence is joined.
GATHER_MAX_BUFFERS = 64


def _sendSequenceNow(transport, buffers):
    if len(buffers) > GATHER_MAX_BUFFERS or sum(map(len, buffers)) < GATHER_MIN_BYTES:
        _sendNow(transport, b"".join(buffers))
        return
    if unsentBytes(transport) or not transport.connected or transport.disconnecting:
        transport.writeSequence([bytes(b) for b in buffers])
        return
    try:
        sent = transport.socket.sendmsg(buffers)
    except (BlockingIOError, InterruptedError):
        sent = 0
    except OSError:
        transport.writeSequence([bytes(b) for b in buffers])
        return
    for i, piece in enumerate(buffers):
        if sent >= len(piece):
            sent -= len(piece)
            continue
        # What the kernel did not take, in order, the usual way.
        queueUnsent(transport, piece, sent, buffers[i + 1:])
        return


def directSequenceWriter(transport):
    """
    @return: C{writeSequence(buffers)} for C{transport}, as L{directWriter}
        but for several buffers: a large sequence (a response head and its
        body) goes to a plain TCP socket in one C{sendmsg}, without joining.
    """
    if isinstance(transport, tcp.Connection):
        return lambda buffers: _sendSequenceNow(transport, buffers)
    return lambda buffers: transport.write(b"".join(buffers))


def directWriter(transport):
    """
    @return: C{write(data)} for C{transport}: a plain TCP transport gets
        bytes sent at once when nothing is queued before them; any other
        transport (TLS, a network filter) its own C{write}.
    """
    if isinstance(transport, tcp.Connection):
        return lambda data: _sendNow(transport, data)
    return transport.write


def countAlpnConnection(pool):
    """
    A connection of an C{auto_config} pool came up: Envoy's mixed pool
    replaces its ALPN client with one of the protocol chosen, which counts
    the connection again in the cluster's C{upstream_cx_total} and the
    host's C{cx_total}; so does txenvoy.
    """
    pool.stats.upstream_cx_total.inc()
    pool.hostStats.cx_total += 1


class ReadPausing:
    """
    A pool client's C{pauseReading} / C{resumeReading} of its
    C{connection} (the downstream is backed up), each done once.
    """

    _readPaused = False

    def pauseReading(self):
        """Stop reading from the host (the downstream is backed up)."""
        if not self._readPaused:
            self._readPaused = True
            self.connection.pauseReading()

    def resumeReading(self):
        """Read from the host again."""
        if self._readPaused:
            self._readPaused = False
            self.connection.resumeReading()


class IdleTimer:
    """
    A pool client's upstream C{idle_timeout}: the connection closes once it
    has been idle in the pool that long (Envoy's idle timer, enabled when
    its last stream ends and disabled when one starts).

    A keep-alive connection goes idle and busy again for every request. A
    reactor timer started and cancelled each time costs more than the rest
    of the pool's work for the request, so the reactor timer, once started,
    is left running: going busy only forgets when the idleness began, and a
    timer that fires early is started again for what is left.

    Clients using this have C{pool} (its C{clusterPools.idleTimeout} and
    C{cluster.reactor}) and define C{_onIdleTimeout}, called once idle for
    the whole timeout.
    """

    _idleTimer = None
    _idleSince = None       # reactor time it went idle, while it is

    def startIdleTimer(self):
        """Idle in the pool: close after the cluster's C{idle_timeout}."""
        pool = self.pool
        timeout = pool.clusterPools.idleTimeout
        if timeout:
            reactor = pool.cluster.reactor
            self._idleSince = reactor.seconds()
            if self._idleTimer is None:
                self._idleTimer = reactor.callLater(timeout, self._onIdleTimer)

    def stopIdleTimer(self):
        """Busy again: idleness no longer counts (the reactor timer may run on)."""
        self._idleSince = None

    def _cancelIdleTimer(self):
        # Closing: nothing is to fire any more.
        self._idleSince = None
        timer = self._idleTimer
        if timer is not None:
            self._idleTimer = None
            if timer.active():
                timer.cancel()

    def _onIdleTimer(self):
        self._idleTimer = None
        since = self._idleSince
        if since is None:
            # Busy now; going idle again starts the timer again.
            return
        pool = self.pool
        reactor = pool.cluster.reactor
        left = since + pool.clusterPools.idleTimeout - reactor.seconds()
        if left > 0:
            self._idleTimer = reactor.callLater(left, self._onIdleTimer)
            return
        self._idleSince = None
        self._onIdleTimeout()


class PendingStream:
    """
    A stream waiting for a connection (either pool: its C{cancelPending});
    C{cancel()} withdraws it.
    """

    __slots__ = ("pool", "callbacks", "cancelled")

    def __init__(self, pool, callbacks):
        self.pool = pool
        self.callbacks = callbacks
        self.cancelled = False

    def cancel(self):
        """Give up waiting (the downstream went away, or a timeout)."""
        if not self.cancelled:
            self.cancelled = True
            self.pool.cancelPending(self)


class PendingAccounting:
    """
    A pool's waiting streams: a base of both pools, which have C{pending}
    (a deque of L{PendingStream}), C{clusterPools}, C{stats} and
    C{hostStats}.
    """

    def _queue(self, callbacks):
        """
        Let a stream wait for a connection, within C{max_pending_requests}.

        @return: its L{PendingStream}, or C{None} when it failed at once as
            an overflow (C{upstream_rq_pending_overflow}).
        """
        if not self.clusterPools.pendingRequests.tryAcquire():
            self.stats.upstream_rq_pending_overflow.inc()
            callbacks.onPoolFailure(OVERFLOW)
            return None
        pending = PendingStream(self, callbacks)
        self.pending.append(pending)
        stats = self.stats
        stats.upstream_rq_pending_total.inc()
        stats.upstream_rq_pending_active.inc()
        self.hostStats.rq_pending_active += 1
        return pending

    def _adopt(self, client, connection, waiting):
        """
        Make C{client} the owner of C{connection}, connected by another
        (C{auto_config}'s first connection), and let the streams that
        waited for that connection, L{PendingStream}s oldest first, wait
        here now.
        """
        for pending in waiting:
            pending.pool = self
        self.pending.extend(waiting)
        client.connection = connection
        connection.callbacks = client
        self.connecting.append(client)
        client.onUpstreamConnected(connection)
        return client

    def _ejectPending(self, reason):
        """
        A connect failed: as Envoy, every stream waiting on the host fails
        with C{reason} (C{upstream_rq_pending_failure_eject}), rather than
        waiting for the next attempt.
        """
        failed = list(self.pending)
        self.pending.clear()
        for pending in failed:
            self._pendingDone()
            self.stats.upstream_rq_pending_failure_eject.inc()
        for pending in failed:
            pending.callbacks.onPoolFailure(reason)

    def _pendingDone(self):
        # A stream stopped waiting: given a connection, or withdrawn.
        self.clusterPools.pendingRequests.release()
        self.stats.upstream_rq_pending_active.dec()
        self.hostStats.rq_pending_active -= 1

    def cancelPending(self, pending):
        """See L{txenvoy.interfaces.IHttpConnPool.cancelPending}."""
        try:
            self.pending.remove(pending)
        except ValueError:
            return
        self._pendingDone()
        self.stats.upstream_rq_cancelled.inc()
