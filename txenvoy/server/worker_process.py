# -*- test-case-name: tests.e2e.test_worker_processes,tests.server.test_worker_process -*-
"""
One worker process (L{txenvoy.server.script.runWorkerProcess}), started by
L{txenvoy.server.worker_processes.WorkerProcesses} with its channel to the
main process on descriptor 3.

It builds a server from the main process's config snapshot, less the
admin and the stats sinks (the main process keeps both), serves its share
of the listening sockets on its own worker threads, sends its stats twice a
second (and once, when its workers run, that it serves) and applies the
admin actions and the host sets (with their
health: the main process runs DNS and health checks) the main process
forwards. It exits
when the main process goes away, and drains on SIGTERM as the main process
does. Its entry point gives it its reactor.
"""

import base64
import os
import socket
import sys

from twisted.logger import Logger

CHANNEL_FD = 3

#: After an exit-now, how long the connections get to be aborted before
#: the process goes.
EXIT_NOW_GRACE_S = 0.2

log = Logger(namespace="main")


def importAnyTypes(message):
    """
    Import the message types every C{Any} in C{message} names (nested ones
    too), as loading the config did in the main process, so that the
    snapshot's typed configs unpack here.
    """
    from google.protobuf.descriptor import FieldDescriptor

    from txenvoy.config.protos import importTypeName, messageClass

    for field, value in message.ListFields():
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        if field.message_type.GetOptions().map_entry:
            valueField = field.message_type.fields_by_name["value"]
            if valueField.type != FieldDescriptor.TYPE_MESSAGE:
                continue
            values = list(value.values())
        elif not hasattr(value, "ListFields"):
            values = list(value)  # a repeated field
        else:
            values = [value]
        for item in values:
            if item.DESCRIPTOR.full_name == "google.protobuf.Any":
                if not importTypeName(item.type_url):
                    continue
                inner = messageClass(item.type_url)()
                item.Unpack(inner)
                typeUrl = getattr(inner, "type_url", None)
                if isinstance(typeUrl, str) and typeUrl:
                    importTypeName(typeUrl)
                importAnyTypes(inner)
            else:
                importAnyTypes(item)


def _keep(sockets, body, fd):
    """
    Keep a listening socket the main process passed, until a listener
    takes it: in order, by address and worker index (listeners on port 0
    share their configured address, and take theirs in the order the main
    process bound them, which is the config's).
    """
    key = (body["address"], body["worker_index"])
    sockets.setdefault(key, []).append(socket.socket(fileno=fd))


def _take(sockets, address, index):
    """The first socket L{_keep} kept for C{address} and worker C{index}, or C{None}."""
    waiting = sockets.get((address, index))
    if not waiting:
        return None
    sock = waiting.pop(0)
    if not waiting:
        del sockets[(address, index)]
    return sock


def _receiveSnapshot(stream):
    """The snapshot message and its listening sockets (L{_keep})."""
    snapshot, sockets = None, {}
    while True:
        message, fds = stream.receive(timeout=60)
        if "snapshot" in message:
            snapshot = message["snapshot"]
        elif "listen_socket" in message and fds:
            body = message["listen_socket"]
            _keep(sockets, body, fds[0])
        elif "snapshot_end" in message:
            return snapshot, sockets


class WorkerProcessAgent:
    """
    The worker process's end of the channel: stats out, admin actions in.
    """

    def __init__(self, reactor, server, stream, sockets=None):
        """
        @param sockets: the listening sockets the main process passed and
            no listener took yet (L{_keep}); those of listeners LDS adds
            later join them.
        """
        self.reactor = reactor
        self.server = server
        self.stream = stream
        self.sockets = {} if sockets is None else sockets
        #: The main process's C{/reset_counters} count this process applied.
        self.resets = 0
        #: Each cluster's last host set from the main process, for a
        #: cluster CDS adds after it (the main process sends its hosts as
        #: it activates it, before the update that adds it here).
        self.hostSets = {}
        server.clusterManager.onMirroredStart = self._onMirroredStart
        server.clusterManager.activationListeners.append(self._onClusterChange)

    def onLive(self):
        """
        The server is live (its listeners took their sockets): once every
        worker thread ran, tell the main process this process serves.
        """
        workers = list(self.server.workers)
        pending = [len(workers)]
        mainPost = self.server.mainDispatcher.post

        def ran():
            pending[0] -= 1
            if pending[0] == 0:
                self.sendServing()
        for worker in workers:
            worker.dispatcher.post(mainPost, ran)
        if not workers:
            self.sendServing()

    def sendServing(self):
        """Say this process serves (the main process's hot restart waits for it)."""
        from txenvoy.server.hot_restart_rpc import HotRestartError

        try:
            self.stream.send(None, {"serving": {}})
        except (HotRestartError, OSError):
            self.mainGone()

    def pushStats(self):
        from txenvoy.server.hot_restart import exportStats
        from txenvoy.server.hot_restart_rpc import HotRestartError
        from txenvoy.xds.process_mirror import mainOwnedStat

        try:
            stats = exportStats(self.server, histograms=True)
            for kind in ("counters", "gauges", "histograms"):
                values = stats.get(kind, {})
                for name in [n for n in values if mainOwnedStat(n)]:
                    del values[name]
            stats["resets"] = self.resets
            self.stream.send(None, {"stats": stats})
        except (HotRestartError, OSError):
            self.mainGone()

    def exitAtOnce(self):
        """
        The main process exits at once (a hot restart's terminate, a second
        signal): write the access logs and the last stats, and go, without
        the orderly stop of every part.
        """
        try:
            self.server.accessLogManager.stop()
        except Exception:
            log.failure("flushing the access logs")
        self.pushStats()
        os._exit(0)

    def mainGone(self):
        """The main process went away: stop at once."""
        self.server.exitNow()
        if self.reactor.running:
            self.reactor.stop()

    def applyHostSet(self, name, hosts):
        """A cluster's new host set with its health, from the main process."""
        from txenvoy.upstream.host_set_mirror import applyHostSet

        self.hostSets[name] = hosts
        manager = self.server.clusterManager
        for cluster in (manager.get(name), manager.warming.get(name)):
            if cluster is not None and cluster.sharedMembership:
                applyHostSet(cluster, hosts)

    def _onMirroredStart(self, cluster):
        """A cluster CDS added here: the hosts the main process sent for it."""
        from txenvoy.upstream.host_set_mirror import applyHostSet

        hosts = self.hostSets.get(cluster.info.name)
        if hosts is not None:
            applyHostSet(cluster, hosts)

    def _onClusterChange(self, name, cluster):
        if cluster is None:
            # CDS removed it: a cluster of that name added later gets the
            # host set the main process sends for it then.
            self.hostSets.pop(name, None)

    def onMessage(self, message, fds):
        listen = message.get("listen_socket")
        if listen is not None and fds:
            _keep(self.sockets, listen, fds[0])
            fds = fds[1:]
        for fd in fds:
            os.close(fd)
        hostSet = message.get("host_set")
        if hostSet is not None:
            self.applyHostSet(hostSet["cluster"], hostSet["hosts"])
            return
        update = message.get("xds_update")
        if update is not None:
            self.server.options.xdsMirror.onUpdate(update)
            return
        action = message.get("admin")
        if action is None:
            return
        server = self.server
        kind = action.get("action")
        if kind == "drain_listeners":
            server.drainListeners(graceful=action.get("graceful", False),
                                  inboundOnly=action.get("inboundOnly", False))
        elif kind == "hot_restart_drain":
            server.drainForHotRestart()
        elif kind == "healthcheck_fail":
            server.failHealthcheck()
        elif kind == "healthcheck_ok":
            server.passHealthcheck()
        elif kind == "reset_counters":
            server.stats.resetCounters()
            self.resets = action.get("resets", self.resets)
        elif kind == "runtime_modify":
            try:
                server.runtime.mergeValues(action.get("items", {}))
            except ValueError as e:
                log.error("runtime_modify: {error}", error=e)
        elif kind == "logging":
            server.logLevels.setLevels(action.get("levels", {}))
        elif kind == "exit_now":
            server.exitNow()
            self.reactor.callLater(EXIT_NOW_GRACE_S, self.exitAtOnce)


def main(reactor):
    """
    Serve as a worker process on C{reactor} until the main process goes
    away or a signal stops it, then exit.

    @param reactor: the process's reactor, not yet running (the entry
        point, L{txenvoy.server.script.runWorkerProcess}, installs it).
    """
    from twisted.internet.task import LoopingCall
    from twisted.logger import globalLogBeginner

    from envoy.config.bootstrap.v3 import bootstrap_pb2

    from txenvoy.server.hot_restart import MessageReader
    from txenvoy.server.hot_restart_rpc import RpcStream
    from txenvoy.server.logging import makeObserver, openLogOutput
    from txenvoy.server.options import ServerOptions
    from txenvoy.server.server import Server
    from txenvoy.server.signals import SignalHandlers
    from txenvoy.server.tap import importModules
    from txenvoy.server.worker_processes import STATS_PUSH_INTERVAL_S
    from txenvoy.xds.process_mirror import UpdateMirror

    stream = RpcStream(socket.socket(fileno=CHANNEL_FD))
    snapshot, sockets = _receiveSnapshot(stream)
    options = ServerOptions(**snapshot["options"])
    options.workerIndexBase = snapshot["workerIndexBase"]
    options.membershipFromMain = True
    options.xdsMirror = UpdateMirror(reactor, snapshot.get("xds", ()))
    importModules(options.imports)
    bootstrap = bootstrap_pb2.Bootstrap.FromString(base64.b64decode(snapshot["bootstrap"]))
    importAnyTypes(bootstrap)
    bootstrap.ClearField("admin")
    bootstrap.ClearField("stats_sinks")
    server = Server(reactor, bootstrap, options)
    agent = WorkerProcessAgent(reactor, server, stream, sockets)
    server.initializedHook = agent.onLive
    server.listenSocketSource = lambda address, index: _take(sockets, address, index)
    for name, hosts in snapshot.get("hostSets", {}).items():
        agent.applyHostSet(name, hosts)
    server.logLevels.setLevels(snapshot["logLevels"])
    server.logLevels.bindLoggers()
    if snapshot.get("healthCheckFailed"):
        server.failHealthcheck()
    overrides = snapshot.get("runtimeOverrides")
    if overrides:
        server.runtime.mergeValues(overrides)
    out = openLogOutput(options.logPath or None)
    globalLogBeginner.beginLoggingTo([makeObserver(out, server.logLevels)],
                                     redirectStandardIO=False)
    agent.resets = snapshot.get("resets", 0)
    reader = MessageReader(stream, agent.onMessage, agent.mainGone)
    reactor.addReader(reader)
    signals = SignalHandlers(reactor, server, server.accessLogManager.reopen)
    reactor.callWhenRunning(signals.install)
    pusher = LoopingCall(agent.pushStats)
    pusher.clock = reactor
    server.privilegedStartService()
    server.startService()
    reactor.callWhenRunning(pusher.start, STATS_PUSH_INTERVAL_S)
    reactor.addSystemEventTrigger("before", "shutdown", server.stopService)
    reactor.addSystemEventTrigger("before", "shutdown",
                                  lambda: pusher.stop() if pusher.running else None)
    reactor.run(installSignalHandlers=False)
    # A last push, so what this process counted before it stopped is kept.
    agent.pushStats()
    sys.exit(0)

