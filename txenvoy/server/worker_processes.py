# -*- test-case-name: tests.e2e.test_worker_processes,tests.server.test_worker_processes -*-
"""
Worker processes (C{--worker-processes M}): past one core, as the GIL
lets worker threads overlap I/O but not Python work.

The main process keeps what Envoy's main thread owns: the bootstrap, the
admin, stats flushing, DNS and active health checks (each host set with its
health goes to the worker processes as it changes:
L{txenvoy.upstream.host_set_mirror}) and the listening sockets, bound here with
C{SO_REUSEPORT}, one per worker thread of each process, so the kernel
spreads connections over every worker. Each worker process
(L{txenvoy.server.worker_process}) gets, over a Unix sequenced-packet
socket: the config snapshot (the bootstrap as read, less the admin and
stats sinks), its listening sockets (C{SCM_RIGHTS}), the dynamic
resources the main process accepted (L{txenvoy.xds.process_mirror}: then
each new update, with the sockets of the listeners it adds), and the admin's
actions (C{/drain_listeners}, C{/healthcheck/fail} and C{/ok},
C{/runtime_modify}, C{/reset_counters}, C{/logging}). It sends its stats
back twice a second; the main process merges them into one view (as hot
restart merges the old epoch's). What the main process sends is queued
per worker process, so that one which reads nothing never stops the main
process (L{txenvoy.server.channel_outbox}).

Each worker process says once it serves (C{serving}: it adopted its
listening sockets and its worker threads run); L{WorkerProcesses.whenServing}
fires once every one of them does, which is when a hot restart's new epoch
lets the old one drain (L{txenvoy.server.hot_restart}).

A worker process that dies is logged, counted
(C{server.worker_process_restarts}) and replaced at once; its listening
sockets stay open here meanwhile, so connections the kernel gives them
wait in the backlog for the replacement instead of being refused. Only its
own in-flight requests are lost.
"""

import base64
import os
import signal
import socket
import sys

from twisted.application.service import Service
from twisted.internet import defer, protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from txenvoy.server.channel_outbox import STALL_KILL_S, ChannelOutbox
from txenvoy.server.hot_restart import MessageReader, ParentStatsMerger
from txenvoy.server.hot_restart_rpc import RpcStream
from txenvoy.upstream.host_set_mirror import HostSetRelay

log = Logger(namespace="main")

#: How often a worker process sends its stats (a request shows in
#: C{/stats} within this plus the admin's read).
STATS_PUSH_INTERVAL_S = 0.5

#: Wait before replacing a worker process that died; doubled (up to
#: L{MAX_RESPAWN_DELAY_S}) while they keep dying young.
RESPAWN_DELAY_S = 0.05
MAX_RESPAWN_DELAY_S = 5.0
YOUNG_DEATH_S = 2.0

#: After an exit-now stop (a second signal, a hot restart's terminate),
#: how long worker processes get before SIGKILL.
EXIT_NOW_WAIT_S = 5.0

#: What a worker process runs (C{python -c}): its entry point, which owns
#: the process's reactor, L{txenvoy.server.script.runWorkerProcess}.
WORKER_PROCESS_CODE = "from txenvoy.server.script import runWorkerProcess; runWorkerProcess()"


def adminOverrides(runtime):
    """
    C{{key: text}} of what C{/runtime_modify} set in C{runtime}'s admin
    layer: a worker process started later (a replacement) applies them, as
    the others did when they were made.
    """
    layer = runtime.adminLayer if runtime is not None else None
    if layer is None:
        return {}
    return {key: entry.raw for key, entry in layer.values.items()}


def snapshotOptions(options, logPath=None):
    """
    The L{ServerOptions} fields a worker process runs with; C{logPath}
    is where the main process logs, when not C{--log-path}.
    """
    return {
        "configPath": options.configPath, "concurrency": options.concurrency or 1,
        "logLevel": options.logLevel, "componentLogLevel": options.componentLogLevel,
        "logPath": options.logPath if logPath is None else logPath,
        "drainTimeS": options.drainTimeS,
        "drainStrategy": options.drainStrategy,
        "fileFlushIntervalMsec": options.fileFlushIntervalMsec,
        "shutdownDrainTimeS": options.shutdownDrainTimeS, "logFormat": options.logFormat,
        "logFormatEscaped": options.logFormatEscaped, "imports": list(options.imports),
        "serviceCluster": options.serviceCluster, "serviceNode": options.serviceNode,
        "serviceZone": options.serviceZone,
    }


class _Channel(protocol.ProcessProtocol):
    """One worker process: its pid, its channel, and what to do when it ends."""

    def __init__(self, owner, index):
        self.owner = owner
        self.index = index
        self.stream = None
        self.outbox = None
        self.reader = None
        self.ended = defer.Deferred()
        self.startedAt = 0.0
        self.pid = None
        #: Whether it said it serves.
        self.serving = False

    def processEnded(self, reason):
        self.owner._ended(self, reason.value)
        self.ended.callback(None)


class WorkerProcesses(Service):
    """
    The main process's side: spawns, feeds and replaces M worker processes.

    @ivar count: M.
    @ivar channels: the live L{_Channel}s by index.
    """

    name = "worker_processes"

    def __init__(self, reactor, server, count, executable=sys.executable):
        self.reactor = reactor
        self.server = server
        self.count = count
        self.executable = executable
        self.channels = {}
        self._sockets = {}
        self._mergers = {}
        self._delays = {}
        self._stopping = False
        self._resets = 0
        self._exitNow = False
        self._applied = {}
        self._servingWaiters = []
        #: The L{HostSetRelay} sending host sets on, once workers start.
        self.hostSets = None
        self.restarts = server.mainStats.counter("server.worker_process_restarts")
        server.mainStats.gauge("server.worker_processes").set(count)

    def startWorkers(self, listenerSockets):
        """
        Start every worker process with its share of C{listenerSockets}
        (C{[(address, sockets)]}, M times the threads per process sockets
        each, or one shared socket); the sockets stay open here.
        """
        self._sockets = list(listenerSockets)
        if self.hostSets is None:
            self.hostSets = HostSetRelay(self.server.clusterManager,
                                         self.server.mainDispatcher, self.broadcast)
        relay = getattr(self.server, "xdsRelay", None)
        if relay is not None:
            relay.send = self.broadcast
        for index in range(self.count):
            self._spawn(index)

    def _share(self, index):
        per = self.server.options.concurrency or 1
        for address, socks in self._sockets:
            for thread in range(per):
                n = index * per + thread
                yield address, thread, socks[n] if n < len(socks) else socks[0]

    def _spawn(self, index):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        channel = _Channel(self, index)
        channel.startedAt = self.reactor.seconds()
        args = [self.executable, "-c", WORKER_PROCESS_CODE]
        try:
            self.reactor.spawnProcess(channel, self.executable, args, env=dict(os.environ),
                                      childFDs={0: 0, 1: 1, 2: 2, 3: theirs.fileno()})
        finally:
            theirs.close()
        channel.stream = RpcStream(ours)
        channel.outbox = ChannelOutbox(self.reactor, ours,
                                       lambda waiting: self._stalled(channel, waiting))
        channel.pid = channel.transport.pid
        self.channels[index] = channel
        options = self.server.options
        per = options.concurrency or 1
        relay = getattr(self.server, "xdsRelay", None)
        snapshot = {
            "index": index, "workerIndexBase": index * per,
            "bootstrap": base64.b64encode(self.server.bootstrap.SerializeToString()).decode(),
            "options": snapshotOptions(options, getattr(self.server, "logDestination", None)),
            "logLevels": self.server.logLevels.levels(),
            "healthCheckFailed": self.server.healthCheckFailed, "resets": self._resets,
            "runtimeOverrides": adminOverrides(self.server.runtime),
            "hostSets": dict(self.hostSets.current) if self.hostSets is not None else {},
            "xds": relay.snapshot() if relay is not None else [],
        }
        send = channel.outbox.send
        send({"snapshot": snapshot})
        for address, thread, sock in self._share(index):
            send({"listen_socket": {"address": address, "worker_index": thread}},
                 sock.fileno())
        send({"snapshot_end": {}})
        channel.reader = MessageReader(channel.stream, lambda m, fds: self._received(channel, m, fds),
                                       lambda: None)
        self.reactor.addReader(channel.reader)
        log.info("started worker process {index} (pid {pid})", index=index,
                 pid=channel.pid)

    def addListenerSockets(self, address, socks):
        """
        A listener LDS added: each worker process gets its share of
        C{socks} (before the update that names it); they stay open here.
        """
        self._sockets.append((address, socks))
        for index, channel in list(self.channels.items()):
            if channel.outbox is None:
                continue
            for shareAddress, thread, sock in self._share(index):
                if shareAddress == address:
                    channel.outbox.send({"listen_socket": {
                        "address": address, "worker_index": thread}}, sock.fileno())

    def removeListenerSockets(self, address):
        """A listener LDS removed: its sockets are not given to new worker processes."""
        self._sockets = [(a, socks) for a, socks in self._sockets if a != address]

    def allServing(self):
        """Whether every one of the M worker processes said it serves."""
        return all(index in self.channels and self.channels[index].serving
                   for index in range(self.count))

    def whenServing(self):
        """
        A Deferred that fires once every worker process serves (at once if
        they do). One that dies before it serves holds it back until its
        replacement serves; meanwhile nothing changes, as Envoy's child
        that never starts its workers leaves its parent serving.
        """
        if self.allServing():
            return defer.succeed(None)
        d = defer.Deferred()
        self._servingWaiters.append(d)
        return d

    def _served(self, channel):
        if self.channels.get(channel.index) is not channel or channel.serving:
            return
        channel.serving = True
        log.info("worker process {index} (pid {pid}) serving", index=channel.index,
                 pid=channel.pid)
        if self.allServing():
            waiters, self._servingWaiters = self._servingWaiters, []
            for d in waiters:
                d.callback(None)

    def _received(self, channel, message, fds):
        for fd in fds:
            os.close(fd)
        if "serving" in message:
            self._served(channel)
            return
        stats = message.get("stats")
        if stats is not None:
            merger = self._mergers.get(channel.index)
            if merger is None:
                merger = self._mergers[channel.index] = ParentStatsMerger(
                    self.server.stats.shard("worker_process_%d" % (channel.index,)), None)
            resets = stats.get("resets", 0)
            if resets < self._resets:
                # Counted before the last /reset_counters reached it.
                merger.skipCounters(stats)
            elif resets > self._applied.get(channel.index, 0):
                # Its first count since the reset: from zero.
                merger.forgetCounters()
            self._applied[channel.index] = resets
            merger.merge(stats)

    def _closeChannel(self, channel):
        if channel.outbox is not None:
            channel.outbox.close()
            channel.outbox = None
        if channel.reader is not None:
            self.reactor.removeReader(channel.reader)
            channel.reader = None
        if channel.stream is not None:
            channel.stream.close()
            channel.stream = None

    def _ended(self, channel, reason):
        self._closeChannel(channel)
        self._applied.pop(channel.index, None)
        if self.channels.get(channel.index) is channel:
            del self.channels[channel.index]
        merger = self._mergers.get(channel.index)
        if merger is not None:
            # Its counts stay; its gauges (open connections) went with it.
            merger.parentTerminated()
        if self._stopping:
            return
        status = getattr(reason, "signal", None)
        how = ("killed by signal %d" % (status,) if status else
               "exited with code %s" % (getattr(reason, "exitCode", None),))
        self.restarts.inc()
        young = self.reactor.seconds() - channel.startedAt < YOUNG_DEATH_S
        delay = self._delays.get(channel.index, RESPAWN_DELAY_S) if young else RESPAWN_DELAY_S
        self._delays[channel.index] = min(delay * 2, MAX_RESPAWN_DELAY_S)
        log.error("worker process {index} (pid {pid}) {how}: its in-flight requests are lost; "
                  "starting a new one", index=channel.index, pid=channel.pid, how=how)
        self.reactor.callLater(delay, self._respawn, channel.index)

    def _respawn(self, index):
        if not self._stopping and index not in self.channels:
            self._spawn(index)

    def connectionCount(self):
        """Connections open in every worker process, as last reported."""
        return sum(m.connections for m in self._mergers.values())

    def resetCounters(self):
        """
        C{/reset_counters}: every worker process resets its own counters;
        until its stats say it did, what it counted before is not merged.
        """
        self._resets += 1
        self.broadcast({"admin": {"action": "reset_counters", "resets": self._resets}})

    def broadcast(self, message):
        """Send an admin action to every worker process."""
        for channel in list(self.channels.values()):
            if channel.outbox is not None:
                channel.outbox.send(message)

    def _stalled(self, channel, waiting):
        """
        C{channel}'s worker process has taken nothing for
        L{txenvoy.server.channel_outbox.STALL_KILL_S} while messages wait:
        it is stopped or stuck. Killed, it is replaced as any that died.
        """
        if self.channels.get(channel.index) is not channel or self._stopping:
            return
        log.error("worker process {index} (pid {pid}) took no message for {seconds:g} s "
                  "({waiting} waiting): killing it", index=channel.index, pid=channel.pid,
                  seconds=STALL_KILL_S, waiting=waiting)
        try:
            channel.transport.signalProcess("KILL")
        except Exception:
            pass

    def stopService(self):
        """
        SIGTERM every worker process (each drains for
        C{--shutdown-drain-time-s}, or at once after L{exitNow}), then
        SIGKILL those left two seconds past that.
        """
        Service.stopService(self)
        self._stopping = True
        if self.hostSets is not None:
            self.hostSets.close()
        waits = []
        for channel in list(self.channels.values()):
            try:
                channel.transport.signalProcess("TERM")
            except Exception:
                pass
            waits.append(channel.ended)
        limit = (EXIT_NOW_WAIT_S if self._exitNow
                 else self.server.options.shutdownDrainTimeS + 2)
        kill = self.reactor.callLater(limit, self._killAll)
        d = defer.DeferredList(waits)

        def done(result):
            if kill.active():
                kill.cancel()
            for socks in self._sockets:
                for s in socks[1]:
                    s.close()
            self._sockets = []
            return result
        return d.addBoth(done)

    def exitNow(self):
        """Ask every worker process to drop its connections and exit at once."""
        self._exitNow = True
        self.broadcast({"admin": {"action": "exit_now"}})

    def _killAll(self):
        for channel in list(self.channels.values()):
            try:
                os.kill(channel.pid, signal.SIGKILL)
            except (OSError, TypeError):
                pass
