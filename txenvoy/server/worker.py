# -*- test-case-name: tests.server.test_worker -*-
"""
Workers: a reactor of their own, run in a thread (Envoy's C{WorkerImpl}).

Each worker owns its connections, its thread-local clusters and its stats
shard; the main thread talks to it only by posting. With C{--concurrency 0}
txenvoy's L{MainThreadWorker} puts the connections on the main reactor
instead, for embedding in an application that runs its own reactor.
"""

import socket
import threading

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger

from txenvoy.network.accept import ListenerPort, UnixListenerPort
from txenvoy.network.listener import ActiveListener
from txenvoy.network.pipe import PipeAddress, bindPipe
from txenvoy.privates import markNotIOThread
from txenvoy.server.dispatcher import Dispatcher
from txenvoy.server.drain import DrainManager
from txenvoy.server.logging import componentLogger

log = Logger(namespace="main")
configLog = componentLogger("config")


def newReactor():
    """
    A fresh, uninstalled reactor for a worker thread. Never the global one:
    nothing of a worker may be scheduled on the main reactor by accident.
    """
    from txenvoy.privates import EPollReactor

    if EPollReactor is not None:
        reactor = EPollReactor()
    else:  # not Linux
        from twisted.internet.pollreactor import PollReactor
        reactor = PollReactor()
    markNotIOThread(reactor)
    return reactor


class _WorkerBase(Service):
    """What both worker kinds share: listeners added by post."""

    def __init__(self, server, dispatcher):
        self.server = server
        self.dispatcher = dispatcher
        self.activeListeners = {}
        #: Listeners replaced or removed by LDS whose connections drain.
        self.drainingListeners = []

    def addListener(self, config, sock, completion):
        """
        Post to this worker: start accepting on C{sock} (an already bound
        and listening socket, which the worker adopts and closes), then post
        C{completion(success)} back to the main thread.
        """
        self.dispatcher.post(self._addListener, config, sock, completion)

    def _addListener(self, config, sock, completion):
        if sock is None:
            # An internal listener: connections come from this worker's own
            # clusters (txenvoy.network.user_space), never from a socket.
            self.activeListeners[config.name] = active = ActiveListener(self.dispatcher, config)
            self.dispatcher.internalListeners[config.name] = active
            self.server.mainDispatcher.post(completion, True)
            return
        adopt = self._adoptUdp if getattr(config, "isUdp", False) else self._adoptStream
        try:
            self.activeListeners[config.name] = adopt(config, sock)
            ok = True
        except Exception:
            log.failure("worker {name} failed to add listener {listener}",
                        name=self.dispatcher.name, listener=config.name)
            ok = False
        finally:
            sock.close()
        self.server.mainDispatcher.post(completion, ok)

    def _adoptStream(self, config, sock):
        """@return: the L{ActiveListener} accepting on (a duplicate of) C{sock}."""
        active = ActiveListener(self.dispatcher, config)
        family = sock.family
        portClass = UnixListenerPort if family == socket.AF_UNIX else ListenerPort
        active.port = portClass.adopt(self.dispatcher.reactor, sock.fileno(), family, active)
        return active

    def _adoptUdp(self, config, sock):
        """
        @return: the C{ActiveUdpListener} reading (a duplicate of) C{sock}:
            each UDP listener filter gets the datagrams of this worker's
            socket (Envoy's ActiveUdpListener; one filter, udp_proxy, in
            practice).
        """
        from txenvoy.network.udp_listener import ActiveUdpListener

        active = ActiveUdpListener(self.dispatcher, config)
        active.port = self.dispatcher.reactor.adoptDatagramPort(
            sock.fileno(), sock.family, active.protocol)
        return active

    def stopListener(self, name):
        """Post: stop accepting on one listener (connections stay)."""
        self.dispatcher.post(self._stopListener, name)

    def _stopListener(self, name):
        self.dispatcher.internalListeners.pop(name, None)
        active = self.activeListeners.get(name)
        if active is not None and active.port is not None:
            active.port.stopListening()
            active.port = None

    def replaceListener(self, config, drainTimeS, keptChains=None):
        """
        Post: new connections on listener C{config.name}'s socket get
        C{config}; the old version's connections drain for up to
        C{drainTimeS} seconds, then close (an LDS update).

        @param keptChains: for Envoy's filter-chain-only (in-place)
            update, the keys of the chains left unchanged: connections on
            them stay, on the new version, and are not drained.
        """
        self.dispatcher.post(self._replaceListener, config, drainTimeS, keptChains)

    def _replaceListener(self, config, drainTimeS, keptChains=None):
        old = self.activeListeners.get(config.name)
        if old is None:
            return
        new = ActiveListener(self.dispatcher, config)
        port, old.port = old.port, None
        if port is not None:
            port.factory = new
        new.port = port
        self.activeListeners[config.name] = new
        if config.isInternal:
            self.dispatcher.internalListeners[config.name] = new
        if keptChains:
            _keepConnections(old, new, keptChains)
        self._drainListener(old, drainTimeS)

    def removeListener(self, name, drainTimeS):
        """
        Post: stop accepting on listener C{name}; its connections drain
        for up to C{drainTimeS} seconds, then close (an LDS removal).
        """
        self.dispatcher.post(self._removeListener, name, drainTimeS)

    def _removeListener(self, name, drainTimeS):
        old = self.activeListeners.pop(name, None)
        self.dispatcher.internalListeners.pop(name, None)
        if old is None:
            return
        if old.port is not None:
            old.port.stopListening()
            old.port = None
        self._drainListener(old, drainTimeS)

    def _drainListener(self, active, drainTimeS):
        if not active.connections:
            return
        self.drainingListeners.append(active)
        # As Envoy's per-listener drain: each response from now on may close
        # its connection (always with --drain-strategy immediate, more and
        # more likely over the drain time with gradual); what is left open
        # closes at the end.
        drain = DrainManager(self.dispatcher.reactor, drainTimeS,
                             self.server.options.drainStrategy)
        drain.startDrainSequence()
        for conn in list(active.connections):
            startDrain = _findStartDrain(conn.head)
            manager = getattr(startDrain, "__self__", None)
            if manager is not None and hasattr(manager, "listenerDrain"):
                manager.listenerDrain = drain
        self.dispatcher.reactor.callLater(drainTimeS, self._closeDrained, active)

    def _closeDrained(self, active):
        if active in self.drainingListeners:
            self.drainingListeners.remove(active)
        for conn in list(active.connections):
            conn.closedLocally = True
            conn.transport.loseConnection()

    def drainConnections(self):
        """
        Post: ask every connection's filter chain to close gracefully
        (C{startDrain}: an HTTP connection closes when idle).
        """
        self.dispatcher.post(self._drainConnections)

    def _drainConnections(self):
        for active in list(self.activeListeners.values()) + self.drainingListeners:
            for conn in list(active.connections):
                startDrain = _findStartDrain(conn.head)
                if startDrain is not None:
                    startDrain()

    def connectionCount(self):
        return sum(len(a.connections) for a in
                   list(self.activeListeners.values()) + list(self.drainingListeners))

    def _closeEverything(self):
        self.dispatcher.internalListeners.clear()
        for active in list(self.activeListeners.values()) + self.drainingListeners:
            if active.port is not None:
                active.port.stopListening()
                active.port = None
            for conn in list(active.connections):
                conn.closedLocally = True
                conn.transport.abortConnection()


def _findStartDrain(protocol):
    """
    The C{startDrain} of the first protocol in a connection's stack that
    has one, looking through network filters (C{next}) and TLS
    (C{wrappedProtocol}).
    """
    while protocol is not None:
        startDrain = getattr(protocol, "startDrain", None)
        if startDrain is not None:
            return startDrain
        protocol = getattr(protocol, "next", None) or getattr(protocol, "wrappedProtocol", None)
    return None


class Worker(_WorkerBase):
    """
    A worker thread running its own reactor.
    """

    def __init__(self, server, index):
        self.index = index
        reactor = newReactor()
        stats = server.stats.shard("worker_%d" % (index,))
        _WorkerBase.__init__(self, server, Dispatcher(reactor, "worker_%d" % (index,), stats,
                                                      idRange=index))
        self.name = self.dispatcher.name
        self._thread = None
        self._stopped = None
        self._watchDog = None

    def startService(self):
        Service.startService(self)
        if configLog.debugEnabled:
            configLog.debug("starting worker %d", self.index)
        reactor = self.dispatcher.reactor
        self.dispatcher.clusterManager = self.server.clusterManager.createThreadLocal(self.dispatcher)
        self._stopped = defer.Deferred()
        mainPost = self.server.mainDispatcher.post
        reactor.addSystemEventTrigger("after", "shutdown", mainPost, self._stopped.callback, None)
        self._thread = threading.Thread(
            target=reactor.run, kwargs={"installSignalHandlers": False},
            name="txenvoy-" + self.name, daemon=True)
        self._thread.start()
        if self.server.guardDog is not None:
            self._watchDog = self.server.guardDog.watch(self.dispatcher)

    def stopService(self):
        Service.stopService(self)
        reactor = self.dispatcher.reactor
        if self._watchDog is not None:
            self.server.guardDog.unwatch(self._watchDog)
            self._watchDog = None
        self.dispatcher.post(self._closeEverything)
        self.dispatcher.post(reactor.stop)
        thread = self._thread
        return self._stopped.addCallback(lambda _: thread.join(5))


class MainThreadWorker(_WorkerBase):
    """
    The C{--concurrency 0} worker: connections live on the main reactor.
    """

    name = "main_thread"

    def __init__(self, server):
        _WorkerBase.__init__(self, server, server.mainDispatcher)

    def startService(self):
        Service.startService(self)
        self.dispatcher.clusterManager = self.server.clusterManager.createThreadLocal(self.dispatcher)

    def stopService(self):
        Service.stopService(self)
        self._closeEverything()


def bindListenSockets(config, count, inherited=None, listen=True):
    """
    Bind C{count} listening sockets for one listener on the main thread,
    one per worker, with C{SO_REUSEPORT} (Envoy's C{enable_reuse_port}
    default) so the kernel spreads connections over the workers.

    @param listen: whether to listen at once; with C{False} the TCP
        sockets are only bound, and L{listenOn} listens when the workers
        start.

    @param inherited: called with a worker index, returns the listening
        socket a previous epoch hands over for it (hot restart), or C{None}
        to bind one.
    @raise BindError: with Envoy's message, naming the address.
    """
    if isinstance(config.address, PipeAddress):
        return _bindPipe(config, count, inherited)
    host, port = config.address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets = []
    try:
        for index in range(count if config.enableReusePort else 1):
            s = inherited(index) if inherited is not None else None
            if s is not None:
                s.setblocking(False)
                sockets.append(s)
                port = s.getsockname()[1]
                continue
            udp = getattr(config, "isUdp", False)
            s = socket.socket(family, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
            sockets.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if config.enableReusePort and hasattr(socket, "SO_REUSEPORT"):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind((host, port))
            # Port 0: every worker's socket shares the first one's port.
            port = s.getsockname()[1]
            if not udp:
                # Envoy sets TCP_NODELAY on every connection; set on the
                # listening socket, Linux gives it to each accepted one
                # with no call per connection.
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if listen:
                    s.listen(config.backlog)
            s.setblocking(False)
    except OSError as e:
        for s in sockets:
            s.close()
        raise BindError(
            "listener '%s' failed to bind or apply socket options: cannot bind '%s:%d': %s"
            % (config.name, host, port, e.strerror or e))
    if not config.enableReusePort:
        # One socket, adopted by every worker (each adopt dups the fd).
        sockets = [sockets[0]] + [socket.fromfd(sockets[0].fileno(), family, socket.SOCK_STREAM)
                                  for _ in range(count - 1)]
    return sockets


def listenOn(config, sockets):
    """
    Listen on a TCP listener's sockets bound by L{bindListenSockets} with
    C{listen=False} (Envoy's C{doFinalPreWorkerInit}, as the workers
    start): until the server has initialized, a connection to the port is
    refused rather than accepted by the kernel and left waiting. Sockets
    a previous epoch handed over already listen; listening again changes
    nothing.

    @raise BindError: with the address, when another socket listens on it.
    """
    if getattr(config, "isUdp", False) or not isinstance(config.address, tuple):
        return
    for s in sockets:
        if s is None:
            continue
        try:
            s.listen(config.backlog)
        except OSError as e:
            raise BindError("listener '%s' failed to listen on '%s:%d': %s"
                            % (config.name, config.address[0], config.address[1],
                               e.strerror or e))


def _bindPipe(config, count, inherited=None):
    """
    One Unix socket for every worker (each adopts a duplicate): the one a
    previous epoch hands over, or a new one.
    """
    sock = inherited(0) if inherited is not None else None
    try:
        if sock is None:
            sock = bindPipe(config.address, config.backlog)
        else:
            sock.setblocking(False)
    except OSError as e:
        raise BindError(
            "listener '%s' failed to bind or apply socket options: cannot bind '%s': %s"
            % (config.name, config.address.path, e.strerror or e))
    return [sock] + [socket.fromfd(sock.fileno(), socket.AF_UNIX, socket.SOCK_STREAM)
                     for _ in range(count - 1)]


class BindError(Exception):
    """A listener's address could not be bound; fatal at start-up."""


def _chainKeys(config):
    """C{{id(chain): key}} of a listener version's compiled filter chains."""
    from txenvoy.xds.lds_api import chainKey

    proto = getattr(config, "proto", None)
    manager = getattr(config, "filterChainManager", None)
    if proto is None or manager is None:
        return {}
    keys = {}
    chains = list(manager.chains)
    if len(chains) == len(proto.filter_chains):
        for chain, chainProto in zip(chains, proto.filter_chains):
            keys[id(chain)] = chainKey(chainProto)
    if manager.defaultChain is not None and proto.HasField("default_filter_chain"):
        keys[id(manager.defaultChain)] = chainKey(proto.default_filter_chain)
    return keys


def _keepConnections(old, new, keptChains):
    """
    Move the connections of C{old} whose filter chain is unchanged to
    C{new} (Envoy's in-place update drains only the changed chains). A
    connection counted against the old version's connection limit stays
    and drains.
    """
    keys = _chainKeys(old.config)
    for conn in list(old.connections):
        if conn.limited or keys.get(id(conn.filterChain)) not in keptChains:
            continue
        old.connections.discard(conn)
        new.connections.add(conn)
        conn.listener = new
