# -*- test-case-name: tests.server.test_listener_manager -*-
"""
The listener manager (Envoy's C{ListenerManagerImpl}).

Listeners are compiled and their sockets bound on the main thread, so a
bad address or a port in use is a start-up error naming the address: as a
service it binds in C{privilegedStartService}, as Twisted's
C{StreamServerEndpointService} does, and closes what no worker adopted when
stopped. Then C{startWorkers} adds every listener to every worker by a post; each worker
posts its result back and only the main thread counts
C{listener_manager.listener_create_success} / C{listener_create_failure}.
"""

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger

from txenvoy.config.errors import FAILED, ConfigError, attempt
from txenvoy.network.address import formatAddress
from txenvoy.network.listener import ListenerConfig
from txenvoy.server.hot_restart import listenerAddress
from txenvoy.server.logging import componentLogger
from txenvoy.server.worker import bindListenSockets, listenOn

log = Logger(namespace="config")
debugLog = componentLogger("config")


def _passName(address):
    """
    How a hot restart names a listener's socket: C{tcp://ip:port}, or a
    pipe's path, as Envoy's C{asString} gives it.
    """
    if isinstance(address, tuple):
        return listenerAddress(*address)
    return str(address)


class ListenerManager(Service):
    """
    Every listener of the server, bound on the main thread.

    @ivar listeners: the L{ListenerConfig}s, in config order (a second
        static listener with an existing name is skipped, as Envoy does).
    """

    def __init__(self, server, listenerProtos, context, workerCount=1):
        """
        @param workerCount: how many sockets to bind per listener, one per
            worker (with C{SO_REUSEPORT}).
        """
        self.server = server
        self._workerCount = workerCount
        self.listeners = []
        names = set()
        for i, proto in enumerate(listenerProtos):
            config = attempt(ListenerConfig, proto, context,
                             "static_resources.listeners[%d]" % (i,))
            if config is FAILED:
                continue
            if proto.name and proto.name in names:
                continue
            names.add(config.name)
            self.listeners.append(config)
        stats = server.mainStats.scope("listener_manager.")
        self._stats = stats
        self.createSuccess = stats.counter("listener_create_success")
        self.createFailure = stats.counter("listener_create_failure")
        for name in ("listener_added", "listener_modified", "listener_removed",
                     "listener_stopped", "listener_in_place_updated"):
            stats.counter(name)
        for name in ("total_listeners_warming", "total_listeners_draining",
                     "total_filter_chains_draining", "workers_started"):
            stats.gauge(name)
        self.totalActive = stats.gauge("total_listeners_active")
        #: Names of the added listeners still warming (not on the workers).
        self._warming = {}
        self._sockets = {}
        self._configuredAddress = {}
        self._passable = {}
        self._bound = False
        self.stopped = False
        #: The workers, once started (a listener added later goes to them).
        self._workers = None
        #: The L{txenvoy.server.worker_processes.WorkerProcesses}, once started.
        self._processes = None
        self._draining = stats.gauge("total_listeners_draining")

    def privilegedStartService(self):
        Service.privilegedStartService(self)
        self.bind(self._workerCount)

    def startService(self):
        Service.startService(self)
        if not self._bound:
            # Started by a parent that was already running: no privileged step.
            self.bind(self._workerCount)

    def stopService(self):
        Service.stopService(self)
        self.closeSockets()

    def bind(self, workerCount):
        """
        Bind every listener's sockets (one per worker). Raises
        L{txenvoy.server.worker.BindError} for the first that fails.
        """
        source = getattr(self.server, "listenSocketSource", None)
        try:
            for config in self.listeners:
                if config.isInternal:
                    # No socket: reached inside the process.
                    self._sockets[config.name] = [None] * self._workerCount
                    self._stats.counter("listener_added").inc()
                    continue
                inherited = None
                address = _passName(config.address)
                if source is not None:
                    inherited = lambda i, a=address: source(a, i)
                self._configuredAddress[config.name] = address
                # Listening starts with the workers (startWorkers).
                self._sockets[config.name] = bindListenSockets(config, workerCount, inherited,
                                                               listen=False)
                if isinstance(config.address, tuple):
                    # Port 0 in the config: the kernel's choice, for /listeners.
                    config.address = (config.address[0],
                                      self._sockets[config.name][0].getsockname()[1])
                if debugLog.debugEnabled:
                    debugLog.debug("Create listen socket for listener %s on address %s",
                                   config.name, formatAddress(config.address))
                self._stats.counter("listener_added").inc()
        except Exception:
            self.closeSockets()
            raise
        self._bound = True

    def closeSockets(self):
        for socks in list(self._sockets.values()) + list(self._passable.values()):
            for s in socks:
                if s is not None:
                    s.close()
        self._sockets.clear()
        self._passable.clear()

    def passableSocket(self, address, workerIndex):
        """
        Hot restart: the listening socket of the listener at C{address}
        (as configured, or as bound) for worker C{workerIndex}, to pass to
        the next epoch; C{None} when there is none (any more).
        """
        for config in self.listeners:
            socks = self._passable.get(config.name)
            if not socks:
                continue
            if address in (self._configuredAddress.get(config.name),
                           _passName(config.address)):
                if len(socks) == 1:
                    return socks[0]
                return socks[workerIndex] if workerIndex < len(socks) else None
        return None

    def startWorkers(self, workers):
        """
        Envoy's C{startWorkers}: add each listener to each worker, its
        sockets listening from now on.
        """
        for config in self.listeners:
            if not config.isInternal:
                listenOn(config, self._sockets.get(config.name, ()))
        processes = getattr(self.server, "workerProcesses", None)
        if processes is not None:
            # Worker processes serve them; the sockets stay open here for
            # their replacements and for the next hot restart epoch.
            shares = []
            for config in self.listeners:
                socks = self._sockets.pop(config.name)
                if config.isInternal:
                    # Each worker process serves its own internal listeners.
                    continue
                self._passable[config.name] = socks
                self.totalActive.inc()
                shares.append((self._configuredAddress[config.name], socks))
            processes.startWorkers(shares)
            self._processes = processes
            self._stats.gauge("workers_started").set(1)
            return
        self._workers = list(workers)
        for config in self.listeners:
            socks = self._sockets[config.name]
            if getattr(self.server, "hotRestart", None) is not None and not config.isInternal:
                # Kept for the next epoch: each worker closes its own copy.
                self._passable[config.name] = [s.dup() for s in socks]
            # A listener LDS gave before the workers started may still wait
            # for its RDS: as Envoy's initial listeners it counts as active
            # (the server's init waits for it), and serves once it arrived.
            self.totalActive.inc()
            self._whenWarm(config, lambda config: self._startOnWorkers(config, counted=True),
                           initial=True)
        self._stats.gauge("workers_started").set(1)

    def _onListenerCreated(self, config, worker):
        def done(success):
            if success:
                self.createSuccess.inc()
            else:
                self.createFailure.inc()
                log.error("listener '{name}' failed to start on {worker}",
                          name=config.name, worker=worker.name)
        return done

    def stopListeners(self, workers, inboundOnly=False):
        """Stop accepting on every listener (drain); connections stay."""
        stopped = self._stats.counter("listener_stopped")
        for config in self.listeners:
            if inboundOnly and config.proto.traffic_direction == 2:  # OUTBOUND
                continue
            if debugLog.debugEnabled:
                debugLog.debug("draining listener: name=%s, address=%s", config.name,
                               formatAddress(config.address))
            for worker in workers:
                worker.stopListener(config.name)
            for s in self._passable.pop(config.name, ()):
                s.close()
            stopped.inc()
        self.stopped = True

    # Dynamic listeners (LDS: txenvoy.xds.lds_api).

    def get(self, name):
        """@return: the L{ListenerConfig} named C{name}, or C{None}."""
        for config in self.listeners:
            if config.name == name:
                return config
        return None

    def applyUpdate(self, added, modified, removed, drainTimeS, inPlace=()):
        """
        Apply one LDS update, all or nothing: C{added} listeners are bound
        first (a failure raises L{ConfigError} and changes nothing), then
        C{modified} ones replace theirs on every worker, whose old
        connections drain, and C{removed} names stop accepting and drain.

        @param added: L{ListenerConfig}s with new names.
        @param modified: L{ListenerConfig}s replacing one of the same name
            and address.
        @param removed: names.
        @param inPlace: the names of the C{modified} listeners whose filter
            chains alone changed (counted as Envoy's in-place update); a
            mapping of them to the keys of their unchanged chains
            (L{txenvoy.xds.lds_api.unchangedChains}), whose connections
            are kept rather than drained.
        """
        if self._bound:
            bound = {}
            started = self._workers is not None or self._processes is not None
            # A worker process's are the main process's (bound there).
            source = getattr(self.server, "listenSocketSource", None)
            configured = {}
            try:
                for config in added:
                    address = configured[config.name] = _passName(config.address)
                    inherited = (None if source is None
                                 else lambda i, a=address: source(a, i))
                    # Before the workers start, startWorkers listens.
                    bound[config.name] = ([None] * self._workerCount if config.isInternal
                                          else bindListenSockets(config, self._workerCount,
                                                                 inherited, listen=started))
            except Exception as e:
                for socks in bound.values():
                    for sock in socks:
                        if sock is not None:
                            sock.close()
                raise ConfigError("error adding listener '%s': %s" % (config.name, e))
            for config in added:
                if isinstance(config.address, tuple) and not config.isInternal:
                    config.address = (config.address[0],
                                      bound[config.name][0].getsockname()[1])
                self._configuredAddress[config.name] = configured[config.name]
                self._sockets[config.name] = bound[config.name]
        if self._processes is not None:
            self._applyForProcesses(added, modified, removed, drainTimeS, inPlace)
            return
        stats = self._stats
        for config in added:
            self.listeners.append(config)
            if self._bound:
                # Before binding, bind() counts it.
                stats.counter("listener_added").inc()
            if self._workers is not None:
                self._whenWarm(config, self._startOnWorkers, added=True)
        for config in modified:
            gauge = self._replaceConfig(config, inPlace)
            if self._workers is not None:
                kept = inPlace.get(config.name) if isinstance(inPlace, dict) else None
                self._whenWarm(config, lambda config, kept=kept, gauge=gauge:
                               self._replaceOnWorkers(config, drainTimeS, kept, gauge))
        for name in removed:
            config = self.get(name)
            self.listeners.remove(config)
            stats.counter("listener_removed").inc()
            socks = self._sockets.pop(name, ())
            for sock in socks:
                if sock is not None:
                    sock.close()
            if self._workers is not None and self._warming.pop(name, None) is None:
                self.totalActive.dec()
                for worker in self._workers:
                    worker.removeListener(name, drainTimeS)
                self._drainFor(drainTimeS, self._draining)

    def _replaceConfig(self, config, inPlace):
        """
        A modified listener takes its predecessor's place (and address),
        counted as Envoy counts it.

        @return: the gauge its draining counts in: filter chains for an
            in-place update, whole listeners otherwise.
        """
        stats = self._stats
        index = self.listeners.index(self.get(config.name))
        config.address = self.listeners[index].address
        self.listeners[index] = config
        stats.counter("listener_modified").inc()
        if config.name in inPlace:
            stats.counter("listener_in_place_updated").inc()
            return stats.gauge("total_filter_chains_draining")
        return self._draining

    def _applyForProcesses(self, added, modified, removed, drainTimeS, inPlace):
        """
        L{applyUpdate} in the main process of worker processes: each
        process applies the same update (L{txenvoy.xds.process_mirror}) and
        serves; here the new listeners' sockets go to them first, and the
        listener gauges are kept as the main thread keeps them.
        """
        stats = self._stats
        processes = self._processes
        for config in added:
            self.listeners.append(config)
            stats.counter("listener_added").inc()
            socks = self._sockets.pop(config.name)
            if not config.isInternal:
                self._passable[config.name] = socks
                processes.addListenerSockets(self._configuredAddress[config.name], socks)
            self._whenWarm(config, lambda config: self.totalActive.inc(), added=True)
        for config in modified:
            gauge = self._replaceConfig(config, inPlace)
            self._whenWarm(config, lambda config, gauge=gauge:
                           self._drainFor(drainTimeS, gauge))
        for name in removed:
            config = self.get(name)
            self.listeners.remove(config)
            stats.counter("listener_removed").inc()
            for sock in self._passable.pop(name, ()):
                if sock is not None:
                    sock.close()
            processes.removeListenerSockets(self._configuredAddress.pop(name, None))
            if self._warming.pop(name, None) is None:
                self.totalActive.dec()
                self._drainFor(drainTimeS, self._draining)

    def warmingNames(self):
        """The names of the added listeners still warming (C{/config_dump}'s C{warming_state})."""
        return frozenset(self._warming)

    def _whenWarm(self, config, action, added=False, initial=False):
        """
        Envoy's listener warming: C{action(config)} once what the listener
        waits on (its RDS from a control plane) arrived; at once when it
        waits on nothing. Meanwhile it counts in C{total_listeners_warming}.
        """
        pending = [target.whenReady() for target in getattr(config, "initTargets", ())]
        ready = defer.gatherResults(pending) if pending else defer.succeed(None)
        if ready.called:
            action(config)
            return
        warming = self._stats.gauge("total_listeners_warming")
        if not initial:
            warming.inc()
        if added:
            self._warming[config.name] = config

        def warmed(ignored):
            if not initial:
                warming.dec()
            if self._warming.get(config.name) is config:
                del self._warming[config.name]
            if self.get(config.name) is config and (self._workers is not None
                                                    or self._processes is not None):
                action(config)
        ready.addCallback(warmed)

    def _replaceOnWorkers(self, config, drainTimeS, kept, gauge):
        for worker in self._workers:
            worker.replaceListener(config, drainTimeS, kept)
            self.createSuccess.inc()
        self._drainFor(drainTimeS, gauge)

    def _startOnWorkers(self, config, counted=False):
        socks = self._sockets.pop(config.name)
        if not counted:
            self.totalActive.inc()
        if debugLog.debugEnabled:
            debugLog.debug("add active listener: name=%s, address=%s", config.name,
                           formatAddress(config.address))
        for worker, sock in zip(self._workers, socks):
            worker.addListener(config, sock, self._onListenerCreated(config, worker))

    def _drainFor(self, drainTimeS, gauge):
        """Count one listener version (or its filter chains) draining for C{drainTimeS}."""
        gauge.inc()
        self.server.reactor.callLater(drainTimeS, gauge.dec)
