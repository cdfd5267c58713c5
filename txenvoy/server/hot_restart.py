# -*- test-case-name: tests.server.test_hot_restart -*-
"""
Hot restart (Envoy's C{HotRestartImpl}, C{HotRestartingParent} and
C{HotRestartingChild}): a new process (epoch C{N}) takes over the listening
sockets of the running one (epoch C{N-1}) without refusing a connection.

The order is Envoy's:

 1. the new epoch reads and checks its config (a bad one exits 1 here,
    before the old epoch hears of it);
 2. it asks the old epoch to close its admin (C{shutdown_admin}), so it can
    bind the same admin address, and learns the first epoch's start time;
 3. for each listener (and each worker, with C{SO_REUSEPORT}) it asks for
    the old epoch's listening socket (C{pass_listen_socket}), which comes
    over C{SCM_RIGHTS}; an address the old epoch does not listen on is
    bound afresh;
 4. once its workers run (with C{--worker-processes}, once every worker
    process says it serves; until then, however long, the old epoch
    serves on), it tells the old epoch to drain
    (C{drain_listeners}: stop accepting; HTTP responses say
    C{connection: close} over C{--drain-time-s}, per C{--drain-strategy});
 5. C{--parent-shutdown-time-s} later it tells the old epoch to exit
    (C{terminate}); the old epoch exits 0 at once.

Meanwhile the new epoch fetches the old one's stats every second and
merges them as Envoy's C{StatMerger} does: counters carry over (each
increase of the parent's is added), gauges add the parent's current value
until it exits, except those Envoy never imports (state, not amounts).

txenvoy turns hot restart on when the command line names an epoch or a
base id (C{--restart-epoch}, C{--base-id}, C{--use-dynamic-base-id}), not
by default as Envoy does: two txenvoy processes started without these
flags never compete for base id 0's sockets.
"""

import os
import socket
import time

from twisted.internet.interfaces import IReadDescriptor
from twisted.logger import Logger
from zope.interface import implementer

from txenvoy.server.hot_restart_rpc import (DEFAULT_SOCKET_PATH, DomainSocketInUse,
                                            HotRestartError, PeerClosed, RpcStream,
                                            domainSocketAddress)

log = Logger(namespace="main")

#: C{/hot_restart_version}: this channel's encoding and message set.
HOT_RESTART_VERSION = "txenvoy.1"

#: How long the new epoch waits for each reply of the old one at start-up.
REPLY_TIMEOUT_S = 10.0

#: How often the new epoch merges the old one's stats.
STATS_MERGE_INTERVAL_S = 1.0

#: How long the new epoch waits for the old one's last stats before it
#: stops it anyway.
FINAL_STATS_WAIT_S = 1.0

#: Gauges Envoy declares C{NeverImport}: a state of this process, not an
#: amount the old epoch's share adds to. Matched on the name's last part.
NEVER_IMPORT = frozenset([
    "concurrency", "hot_restart_epoch", "live", "state", "version", "uptime",
    "days_until_first_cert_expiring", "seconds_until_first_ocsp_response_expiring",
    "stats_recent_lookups", "parent_connections", "total_connections",
    "total_listeners_active", "total_listeners_draining", "total_listeners_warming",
    "total_filter_chains_draining", "workers_started", "active_clusters", "warming_clusters",
    "membership_healthy", "membership_degraded", "membership_excluded", "membership_total",
    "max_host_weight", "num_keys", "num_layers", "admin_overrides_active",
    "cx_open", "cx_pool_open", "rq_open", "rq_pending_open", "rq_retry_open",
    "remaining_cx", "remaining_cx_pools", "remaining_pending", "remaining_rq",
    "remaining_retries", "connected_state", "pressure", "scale_percent", "active",
])


def neverImported(name):
    """Whether the new epoch ignores the old one's gauge C{name} (Envoy's C{NeverImport})."""
    if name.rsplit(".", 1)[-1] in NEVER_IMPORT:
        return True
    return ".version" in name or "connected_state" in name


def listenerAddress(host, port):
    """A listener's address as Envoy's C{pass_listen_socket} names it."""
    if ":" in host:
        return "tcp://[%s]:%d" % (host, port)
    return "tcp://%s:%d" % (host, port)


@implementer(IReadDescriptor)
class MessageReader:
    """Feeds each message arriving on a stream to a callable, on the reactor."""

    def __init__(self, stream, onMessage, onClosed=lambda: None):
        self._stream = stream
        self._onMessage = onMessage
        self._onClosed = onClosed

    def fileno(self):
        return self._stream.fileno()

    def doRead(self):
        while True:
            try:
                got = self._stream.receive()
            except PeerClosed:
                self._onClosed()
                return
            except HotRestartError as e:
                log.error("hot restart: {error}", error=e)
                continue
            except OSError:
                return
            if got is None:
                return
            message, fds = got
            try:
                self._onMessage(message, fds)
            except Exception:
                log.failure("hot restart: handling {message}", message=message)

    def connectionLost(self, reason):
        pass

    def logPrefix(self):
        return "hot-restart"


class HotRestart:
    """
    One process's two ends of the channel: as a parent (answering the next
    epoch) and as a child (asking the previous one).

    @ivar baseId: the base id in use (chosen, with C{--use-dynamic-base-id}).
    @ivar epoch: this process's C{--restart-epoch}.
    @ivar parentTerminated: whether this epoch told its parent to exit (or
        has none): no more messages go to it.
    """

    version = HOT_RESTART_VERSION

    def __init__(self, baseId, epoch, socketPath=DEFAULT_SOCKET_PATH, sleep=time.sleep):
        self.baseId = baseId
        self.epoch = epoch
        self._socketPath = socketPath
        self._child = RpcStream.bound(baseId, epoch, "child", socketPath, sleep)
        try:
            self._parent = RpcStream.bound(baseId, epoch, "parent", socketPath, sleep)
        except Exception:
            self._child.close()
            raise
        self._child.onRetry = lambda: log.error("hot restart sendmsg() connection refused, retrying")
        self._parentAddress = domainSocketAddress(baseId, epoch - 1, "parent", socketPath)
        self._childAddress = domainSocketAddress(baseId, epoch + 1, "child", socketPath)
        self.parentTerminated = epoch == 0
        self._server = None
        self._readers = []
        self._merger = None
        self._statsCall = self._terminateCall = None
        self._terminateAfterStats = False
        self._merging = False

    @classmethod
    def create(cls, baseId, epoch, dynamicBaseId=False, baseIdPath="", **kw):
        """
        Bind this epoch's sockets; with C{dynamicBaseId}, the first base id
        from C{baseId} on that no process holds (written to C{baseIdPath}).

        @raise HotRestartError: with Envoy's message.
        """
        while True:
            try:
                restart = cls(baseId, epoch, **kw)
                break
            except DomainSocketInUse:
                if not dynamicBaseId:
                    raise
                baseId += 1
        if baseIdPath:
            try:
                with open(baseIdPath, "w") as f:
                    f.write(str(baseId))
            except OSError as e:
                restart.close()
                raise HotRestartError("cannot write the base id to %s: %s"
                                      % (baseIdPath, e.strerror))
        return restart

    def close(self):
        """Stop answering and close both sockets (idempotent)."""
        for reader in self._readers:
            if self._server is not None:
                self._server.reactor.removeReader(reader)
        self._readers = []
        for call in (self._statsCall, self._terminateCall):
            if call is not None and call.active():
                call.cancel()
        self._statsCall = self._terminateCall = None
        self._child.close()
        self._parent.close()

    # As a child, at start-up (blocking, as Envoy's are).

    def _call(self, request, replyType):
        self._child.send(self._parentAddress, {"request": request})
        while True:
            message, fds = self._child.receive(timeout=REPLY_TIMEOUT_S)
            reply = message.get("reply", {})
            if replyType in reply:
                return reply[replyType], fds
            for fd in fds:
                os.close(fd)
            if "stats" not in reply:
                raise HotRestartError("the parent did not answer %s: %r"
                                      % (replyType, message))

    def shutdownParentAdmin(self):
        """
        Ask the old epoch to close its admin listener.

        @return: the first epoch's start time (Unix seconds), or C{None}
            without a parent.
        """
        if self.parentTerminated:
            return None
        reply, _ = self._call({"shutdown_admin": {"version": self.version}}, "shutdown_admin")
        if reply.get("version") != self.version:
            raise HotRestartError(
                "hot restart version mismatch: this epoch speaks %s, the running one %s"
                % (self.version, reply.get("version")))
        return reply.get("original_start_time_unix_seconds")

    def duplicateParentListenSocket(self, address, workerIndex):
        """
        The old epoch's listening socket for C{address} and worker
        C{workerIndex}, as a C{socket.socket}; C{None} when it has none.
        """
        if self.parentTerminated:
            return None
        reply, fds = self._call(
            {"pass_listen_socket": {"address": address, "worker_index": workerIndex}},
            "pass_listen_socket")
        if not fds:
            return None
        for extra in fds[1:]:
            os.close(extra)
        return socket.socket(fileno=fds[0])

    # As a child, once serving (on the main reactor).

    def mergeParentStats(self):
        """
        Merge the old epoch's stats every second from now on (its admin is
        closed: this epoch's C{/stats} is the one view of both), while it
        still serves alone too.
        """
        if self._merging or self.parentTerminated:
            return
        self._merging = True
        self._requestParentStats()

    def onWorkersStarted(self):
        """
        This epoch serves: drain the old one now, stop it after
        C{--parent-shutdown-time-s}, and merge its stats meanwhile.
        """
        if self.parentTerminated:
            return
        log.info("hot restart: draining epoch {parent}; it exits in {t:g} s",
                 parent=self.epoch - 1, t=self._server.options.parentShutdownTimeS)
        self._sendToParent({"request": {"drain_listeners": {}}})
        self.mergeParentStats()
        self._terminateCall = self._server.reactor.callLater(
            self._server.options.parentShutdownTimeS, self._lastStatsThenTerminate)

    def _lastStatsThenTerminate(self):
        """
        Merge the old epoch's stats one last time, so that what it counted
        up to its exit is kept, then stop it (or stop it anyway after
        L{FINAL_STATS_WAIT_S}).
        """
        self._terminateCall = None
        if self.parentTerminated:
            return
        if self._statsCall is not None and self._statsCall.active():
            self._statsCall.cancel()
        self._statsCall = None
        self._terminateAfterStats = True
        self._sendToParent({"request": {"stats": {}}})
        self._terminateCall = self._server.reactor.callLater(FINAL_STATS_WAIT_S,
                                                             self.terminateParent)

    def terminateParent(self):
        """Tell the old epoch to exit (Envoy's C{terminateParent})."""
        if self._terminateCall is not None and self._terminateCall.active():
            self._terminateCall.cancel()
        self._terminateCall = None
        if self.parentTerminated:
            return
        log.info("shutting down parent after drain")
        self._sendToParent({"request": {"terminate": {}}})
        self.parentTerminated = True
        if self._statsCall is not None and self._statsCall.active():
            self._statsCall.cancel()
        self._statsCall = None
        if self._merger is not None:
            self._merger.parentTerminated()

    def _sendToParent(self, message):
        try:
            self._child.send(self._parentAddress, message)
        except (HotRestartError, OSError) as e:
            log.error("hot restart: the previous epoch is gone ({error})", error=e)
            self.parentTerminated = True
            if self._merger is not None:
                self._merger.parentTerminated()

    def _requestParentStats(self):
        self._statsCall = None
        if self.parentTerminated:
            return
        self._sendToParent({"request": {"stats": {}}})
        if not self.parentTerminated:
            self._statsCall = self._server.reactor.callLater(STATS_MERGE_INTERVAL_S,
                                                             self._requestParentStats)

    def _onReplyFromParent(self, message, fds):
        for fd in fds:
            os.close(fd)
        stats = message.get("reply", {}).get("stats")
        if stats is not None and not self.parentTerminated:
            self._merger.merge(stats)
            if self._terminateAfterStats:
                self.terminateParent()

    # Both roles: wiring into the server.

    def attach(self, server):
        """
        Serve the next epoch's requests and read this one's replies on
        C{server}'s reactor.
        """
        self._server = server
        self._merger = ParentStatsMerger(server.stats.shard("hot_restart_parent"))
        for stream, handler in ((self._parent, self._onRequestFromChild),
                                (self._child, self._onReplyFromParent)):
            reader = MessageReader(stream, handler)
            self._readers.append(reader)
            server.reactor.addReader(reader)

    # As a parent (on the main reactor).

    def _reply(self, reply, fd=None):
        try:
            self._parent.send(self._childAddress, {"reply": reply}, fd)
        except (HotRestartError, OSError) as e:
            log.error("hot restart: cannot answer the next epoch: {error}", error=e)

    def _onRequestFromChild(self, message, fds):
        for fd in fds:
            os.close(fd)
        request = message.get("request")
        if not isinstance(request, dict) or len(request) != 1:
            log.error("child sent us an unfamiliar type of HotRestartMessage; ignoring.")
            self._parent.send(self._childAddress, {"didnt_recognize_your_last_message": True})
            return
        (kind, body), = request.items()
        server = self._server
        if kind == "shutdown_admin":
            log.warn("shutting down admin due to child startup")
            d = server.shutdownAdmin()
            reply = {"original_start_time_unix_seconds": int(server.startTimeFirstEpoch),
                     "version": self.version}
            d.addCallback(lambda _: self._reply({"shutdown_admin": reply}))
        elif kind == "pass_listen_socket":
            sock = server.listenerManager.passableSocket(body.get("address", ""),
                                                         int(body.get("worker_index", 0)))
            self._reply({"pass_listen_socket": {"fd": -1 if sock is None else sock.fileno()}},
                        None if sock is None else sock.fileno())
        elif kind == "stats":
            self._reply({"stats": exportStats(server)})
        elif kind == "drain_listeners":
            log.info("closing and draining listeners")
            server.drainForHotRestart()
        elif kind == "terminate":
            log.info("shutting down due to child request")
            server.exitNow()
            server.reactor.callLater(0, _stop, server.reactor)
        else:
            log.error("child sent us an unfamiliar type of HotRestartMessage; ignoring.")
            self._reply({"didnt_recognize_your_last_message": True})


def _stop(reactor):
    if reactor.running:
        reactor.stop()


def exportStats(server, histograms=False):
    """
    The old epoch's side of a stats request: every used stat's value;
    with C{histograms} (a worker process's report) the histograms' buckets
    too (Envoy does not carry histograms over a hot restart).
    """
    snapshot = server.stats.snapshot()
    used = snapshot.used
    out = {
        "counters": {n: v for n, v in snapshot.counters.items() if n in used and v},
        "gauges": {n: v for n, v in snapshot.gauges.items() if n in used},
        "num_connections": server.connectionCount(),
    }
    if histograms:
        out["histograms"] = {
            n: {"unit": h.unit, "count": h.count, "sum": h.sum,
                "buckets": [[k, v] for k, v in h.buckets.items()]}
            for n, h in snapshot.histograms.items() if h.used}
    return out


class ParentStatsMerger:
    """
    Envoy's C{StatMerger}: the old epoch's stats into a shard of this one's
    store (which sums shards when read).

    Counters: each increase of the parent's value since the last merge is
    added, so what the old epoch counted stays counted after it exits.
    Gauges: the parent's current value, dropped when it exits; gauges
    Envoy never imports are skipped.
    """

    def __init__(self, shard, connectionsGauge="server.parent_connections"):
        """
        @param connectionsGauge: the gauge the other side's open
            connections are shown in, or C{None} (worker processes: see
            L{connections}).
        """
        self._shard = shard
        self._connectionsGauge = connectionsGauge
        #: The other side's open connections, as last reported.
        self.connections = 0
        self._lastCounters = {}
        self._lastHistograms = {}
        self._gauges = set()

    def merge(self, stats):
        shard = self._shard
        for name, value in stats.get("counters", {}).items():
            delta = value - self._lastCounters.get(name, 0)
            self._lastCounters[name] = value
            if delta > 0:
                shard.counter(name).inc(delta)
        for name, value in stats.get("gauges", {}).items():
            if neverImported(name):
                continue
            gauge = shard.gauge(name)
            gauge.set(value)
            gauge.used = True
            self._gauges.add(name)
        for name, h in stats.get("histograms", {}).items():
            self._mergeHistogram(name, h)
        self.connections = stats.get("num_connections", 0)
        if self._connectionsGauge is not None:
            shard.gauge(self._connectionsGauge).set(self.connections)
            self._gauges.add(self._connectionsGauge)

    def _mergeHistogram(self, name, report):
        """Add what the other side recorded since its last report."""
        last = self._lastHistograms.get(name, {"count": 0, "sum": 0.0, "buckets": {}})
        if report["count"] <= last["count"]:
            return
        h = self._shard.histogram(name, report["unit"])
        buckets = dict((k, v) for k, v in report["buckets"])
        for k, v in buckets.items():
            delta = v - last["buckets"].get(k, 0)
            if delta > 0:
                h.buckets[k] = h.buckets.get(k, 0) + delta
                h.intervalBuckets[k] = h.intervalBuckets.get(k, 0) + delta
        h.count += report["count"] - last["count"]
        h.sum += report["sum"] - last["sum"]
        h.used = True
        self._lastHistograms[name] = {"count": report["count"], "sum": report["sum"],
                                      "buckets": buckets}

    def skipCounters(self, stats):
        """Take C{stats}' counters as the new base, adding nothing (after a reset)."""
        self._lastCounters.update(stats.get("counters", {}))
        stats["counters"] = {}

    def forgetCounters(self):
        """The other side's counters start again from zero."""
        self._lastCounters.clear()
        self._lastHistograms.clear()

    def parentTerminated(self):
        """
        The old epoch exited: its gauges no longer count, except
        C{server.hot_restart_generation}, which counts the epochs (Envoy
        1.40's epoch 1 shows 2 after its parent exited).
        """
        for name in self._gauges:
            if name != "server.hot_restart_generation":
                self._shard.gauge(name).set(0)
        self._gauges.clear()
        self._lastCounters.clear()
        self._lastHistograms.clear()
        self.connections = 0
