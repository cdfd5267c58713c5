# -*- test-case-name: tests.server.test_server -*-
"""
The server (Envoy's C{InstanceImpl}): one C{MultiService} holding the main
dispatcher, stats, cluster manager, listener manager, workers, admin and
guard dog, started in the order of Envoy's C{RunHelper}.

Embedding::

    server = Server.fromConfig(reactor, configPath="envoy.yaml", concurrency=0)
    server.setServiceParent(application)
"""

import json
import time

from twisted.application.internet import TimerService
from twisted.application.service import IService, MultiService, Service
from twisted.internet import defer
from twisted.internet.task import deferLater
from twisted.logger import Logger

import txenvoy
from txenvoy import regex
from txenvoy.accesslog.filters import createAccessLog
from txenvoy.accesslog.manager import AccessLogManager
from txenvoy.admin.admin import AdminServer, checkAdminConfig
from txenvoy.config.context import FactoryContext
from txenvoy.config.errors import FAILED, UnsupportedField, attempt, report, skipOnError
from txenvoy.config.fields import checkFields
from txenvoy.config.loader import loadBootstrap
from txenvoy.config.node import describeNode
from txenvoy.config.registry import Category, loadPlugins
from txenvoy.runtime import Runtime
from txenvoy.server.dispatcher import Dispatcher
from txenvoy.server.drain import DrainManager, ShutdownDrain
from txenvoy.server.gc_freeze import GarbageFreezer
from txenvoy.server.guarddog import GuardDog, watchdogConfigsFromBootstrap
from txenvoy.server.listener_manager import ListenerManager
from txenvoy.server.logging import LogLevels
from txenvoy.server.options import ServerOptions
from txenvoy.server.overload_manager import OverloadManager
from txenvoy.server.run_helper import RunHelper
from txenvoy.server.worker import MainThreadWorker, Worker
from txenvoy.stats.flush import StatsFlusher, flushIntervalOf
from txenvoy.stats.store import StatsStore
from txenvoy.stats.histogram_settings import compileHistogramSettings
from txenvoy.stats.matcher import compileStatsMatcher
from txenvoy.stats.tags import TagProducer
from txenvoy.upstream.cluster_manager import ClusterManager
from txenvoy.xds.file_xds import FileXds
from txenvoy.xds.process_mirror import UpdateRelay
from txenvoy.xds.control_plane import ControlPlanes
from txenvoy.xds.discovery_file import UnknownDynamicFields
from txenvoy.xds.subscription_factory import SubscriptionFactory
from txenvoy.xds.rds_api import RouteConfigProviderManager
from txenvoy.xds.sds_api import SecretManager

log = Logger(namespace="main")

LIVE, DRAINING, PRE_INITIALIZING, INITIALIZING = 0, 1, 2, 3
_STATE_NAMES = {LIVE: "LIVE", DRAINING: "DRAINING", PRE_INITIALIZING: "PRE_INITIALIZING",
                INITIALIZING: "INITIALIZING"}


class Server(MultiService):
    """
    A whole txenvoy instance.

    @ivar reactor: the main reactor.
    @ivar stats: the L{StatsStore}; C{mainStats} is the main thread's shard.
    @ivar clusterManager: the L{txenvoy.upstream.cluster_manager.ClusterManager}.
    @ivar listenerManager: the L{ListenerManager}.
    @ivar workers: the worker services.
    @ivar bootstrap: the C{Bootstrap} message it was built from.
    @ivar options: the L{ServerOptions}.
    """

    def __init__(self, reactor, bootstrap, options=None, validateOnly=False):
        MultiService.__init__(self)
        self.reactor = reactor
        self.bootstrap = bootstrap
        self.options = options = options or ServerOptions()
        self.versionString = txenvoy.VERSION_STRING
        self.startTime = time.time()
        #: The start of the first hot restart epoch (C{server.uptime} counts from it).
        self.startTimeFirstEpoch = self.startTime
        #: The L{txenvoy.server.hot_restart.HotRestart}, when hot restart is on.
        self.hotRestart = None
        #: Where listening sockets come from before they are bound:
        #: C{f(address, workerIndex)} returns one or C{None} (hot restart,
        #: worker processes).
        self.listenSocketSource = None
        #: The L{txenvoy.server.worker_processes.WorkerProcesses}, with
        #: C{--worker-processes} above 1.
        self.workerProcesses = None
        #: Where the application log goes, when the entry point decided
        #: (C{twistd envoy}); worker processes log there too.
        self.logDestination = None
        self._state = PRE_INITIALIZING
        self.healthCheckFailed = False
        # The node only describes this proxy (/server_info, and an xDS
        # server's view of it): every field is kept as written.
        checkFields(bootstrap.node, ("id", "cluster", "locality", "metadata"), "node",
                    ("dynamic_parameters", "user_agent_name", "user_agent_version",
                     "user_agent_build_version", "extensions", "client_features",
                     "listening_addresses"))
        checkFields(bootstrap.node.locality, ("region", "zone", "sub_zone"), "node.locality")
        # As Envoy fills it in for xDS servers and /server_info.
        self.node = node = describeNode(bootstrap.node)

        self.drainManager = DrainManager(reactor, options.drainTimeS, options.drainStrategy)
        self._shutdownDrain = None
        self._exitNow = False
        self.initializedHook = None
        self.garbageFreezer = GarbageFreezer(reactor) if options.freezeGarbage else None
        self.stats = StatsStore()
        self.mainStats = self.stats.shard("main_thread")
        # Worker i owns connection id range i; the main thread the one after.
        self.mainDispatcher = Dispatcher(reactor, "main_thread", self.mainStats,
                                         idRange=options.concurrency)
        self._serverStats()

        self.runtime = Runtime(reactor, bootstrap.layered_runtime, self.mainStats,
                               serviceCluster=node.cluster)
        regex.useRuntimeLimits(self.runtime.snapshot())
        loadPlugins()

        self.logLevels = LogLevels()
        self.accessLogManager = AccessLogManager(
            reactor, self.stats.shard("access_log"),
            flushInterval=options.fileFlushIntervalMsec / 1000.0)
        # The control planes (ADS, api_config_source) that RDS, EDS and SDS
        # may name, shared with LDS and CDS (txenvoy.xds.file_xds).
        self.controlPlanes = ControlPlanes(self)
        # With worker processes the main process subscribes and sends each
        # accepted update to them (txenvoy.xds.process_mirror).
        self.xdsRelay = (UpdateRelay() if options.workerProcesses > 1 and not validateOnly
                         else None)
        self.subscriptions = SubscriptionFactory(
            reactor, self.controlPlanes, UnknownDynamicFields.ofServer(self), validateOnly,
            relay=self.xdsRelay, mirror=options.xdsMirror)
        # Upstream TLS contexts name secrets too, so it comes before clusters.
        self.secretManager = SecretManager(self.subscriptions, self.mainStats,
                                           bootstrap.static_resources.secrets)
        self.clusterManager = ClusterManager(
            reactor, self.stats, self.mainStats, list(bootstrap.static_resources.clusters),
            localClusterName=bootstrap.cluster_manager.local_cluster_name,
            validateOnly=validateOnly, accessLogManager=self.accessLogManager,
            membershipFromMain=options.membershipFromMain,
            edsSubscriptions=self.subscriptions, secretManager=self.secretManager)
        self.context = FactoryContext(
            reactor, self.stats, clusterManager=self.clusterManager,
            accessLogManager=self.accessLogManager, server=self, bootstrap=bootstrap,
            validateOnly=validateOnly, runtime=self.runtime)
        self._checkUnsupported(bootstrap)
        self.bootstrapExtensions = self._buildBootstrapExtensions(bootstrap)
        self.overloadManager = OverloadManager(reactor, bootstrap.overload_manager,
                                               self.mainStats, self.context)
        socketsPerListener = None
        if options.workerProcesses > 1 and not validateOnly:
            from txenvoy.server.worker_processes import WorkerProcesses

            # The connections are the worker processes'; none runs here.
            self.workers = [MainThreadWorker(self)]
            self.workerProcesses = WorkerProcesses(reactor, self, options.workerProcesses)
            socketsPerListener = options.workerProcesses * (options.concurrency or 1)
            self.logLevels.onChange = self._forwardLogLevels
        elif options.concurrency == 0:
            self.workers = [MainThreadWorker(self)]
        else:
            self.workers = [Worker(self, options.workerIndexBase + i)
                            for i in range(options.concurrency)]
        for worker in self.workers:
            self.overloadManager.registerWorker(worker.dispatcher)
        self.mainStats.gauge("server.concurrency").set(options.concurrency)
        self.routeConfigProviders = RouteConfigProviderManager(self.subscriptions,
                                                               self.mainStats)
        self.listenerManager = ListenerManager(
            self, bootstrap.static_resources.listeners, self.context,
            workerCount=socketsPerListener or len(self.workers))
        self.statsFlusher = self.admin = self.guardDog = None
        self.xds = None
        if bootstrap.HasField("dynamic_resources"):
            self.xds = attempt(FileXds, self, validateOnly)
            if self.xds is FAILED:
                self.xds = None
        # Inside a collection of errors each part is checked even when an
        # earlier one failed (txenvoy.config.errors).
        for build in (self._buildStats, self._buildAdmin, self._buildGuardDog):
            with skipOnError():
                build(validateOnly)
        self.runHelper = RunHelper(self.clusterManager, self.listenerManager, self.workers,
                                   onLive=self._onLive, initTargets=[self.xds],
                                   beforeWorkers=self._beforeWorkers)
        self.initialized = None
        self._addServices()

    @classmethod
    def fromConfig(cls, reactor, configPath=None, configYaml=None, configDict=None,
                   concurrency=0, **optionValues):
        """
        Build a server for embedding from a file, YAML text or a dict (the
        parsed YAML). Raises L{txenvoy.config.errors.ConfigError}.
        """

        if configDict is not None:
            configYaml = json.dumps(configDict)
        options = ServerOptions(concurrency=concurrency, configPath=configPath or "",
                                configYaml=configYaml or "", **optionValues)
        bootstrap = loadBootstrap(configPath, configYaml, options.serviceNode,
                                  options.serviceCluster, serviceZone=options.serviceZone)
        return cls(reactor, bootstrap, options)

    # Building.

    def _serverStats(self):
        s = self.mainStats.scope("server.")
        self._live = s.gauge("live")
        self._stateGauge = s.gauge("state")
        self._uptime = s.gauge("uptime")
        s.gauge("version").set(0)
        s.gauge("hot_restart_epoch").set(0)
        s.gauge("days_until_first_cert_expiring").set(4294967295)
        self._totalConnections = s.gauge("total_connections")
        for name in ("debug_assertion_failures", "envoy_bug_failures", "dynamic_unknown_fields",
                     "static_unknown_fields", "dropped_stat_flushes"):
            s.counter(name)
        self._stateGauge.set(PRE_INITIALIZING)

    def _buildBootstrapExtensions(self, bootstrap):
        """
        Envoy's C{bootstrap_extensions}, found by C{@type} in the registry
        (category C{envoy.bootstrap}); one txenvoy does not have is refused
        by name with its path. An extension that is an C{IService} runs as
        a part of the server.
        """
        built = []
        for i, entry in enumerate(bootstrap.bootstrap_extensions):
            extension = attempt(self.context.createExtension, Category.BOOTSTRAP, entry,
                                "bootstrap_extensions[%d]" % (i,))
            if extension is not FAILED:
                built.append(extension)
        return built

    def _checkUnsupported(self, bootstrap):
        """
        Reject, with the field path, every bootstrap field txenvoy does not
        honour yet, rather than ignore it silently.
        """

        checkFields(bootstrap, _BOOTSTRAP_FIELDS, "")
        checkFields(bootstrap.static_resources, ("listeners", "clusters", "secrets"),
                    "static_resources")
        checkFields(bootstrap.cluster_manager, ("local_cluster_name",), "cluster_manager")
        for i, layer in enumerate(bootstrap.layered_runtime.layers):
            if layer.WhichOneof("layer_specifier") not in ("static_layer", "admin_layer",
                                                           "disk_layer"):
                report(UnsupportedField("layered_runtime.layers[%d].%s"
                                        % (i, layer.WhichOneof("layer_specifier"))))

    def _buildStats(self, validateOnly):
        """Tag extraction, stats sinks and the periodic flush."""

        b = self.bootstrap
        if b.HasField("stats_config"):
            checkFields(b.stats_config, _STATS_CONFIG_FIELDS, "stats_config")
            self.stats.matcher = compileStatsMatcher(b.stats_config.stats_matcher,
                                                     "stats_config.stats_matcher")
            self.stats.histogramSettings = compileHistogramSettings(
                b.stats_config.histogram_bucket_settings,
                "stats_config.histogram_bucket_settings")
        self.tagProducer = TagProducer.fromStatsConfig(
            b.stats_config if b.HasField("stats_config") else None)
        sinks = [self.context.createExtension(Category.STATS_SINK, sink, "stats_sinks[%d]" % (i,))
                 for i, sink in enumerate(b.stats_sinks)]
        self.statsFlusher = None
        if not validateOnly:
            self.statsFlusher = StatsFlusher(self.reactor, self.stats, sinks, flushIntervalOf(b))

    def _buildAdmin(self, validateOnly):
        self.admin = None
        admin = self.bootstrap.admin

        checkAdminConfig(admin)
        if not admin.HasField("address"):
            return

        logs = [createAccessLog(al, self.context, "admin.access_log[%d]" % (i,))
                for i, al in enumerate(admin.access_log)]
        if not validateOnly:
            self.admin = AdminServer(self.reactor, self, admin, accessLogs=logs)

    def _buildGuardDog(self, validateOnly):

        main, worker = watchdogConfigsFromBootstrap(self.bootstrap)
        if not validateOnly:
            self.guardDog = GuardDog(self.reactor, self.stats.shard("guard_dog"), main, worker,
                                     mainDispatcher=self.mainDispatcher)

    def _addServices(self):
        """
        The parts of the server as child services, in the order Envoy's
        C{InstanceImpl} and C{RunHelper} start them. L{stopService} stops
        them in reverse, each once the one after it has stopped. In
        validate mode the timers, admin and guard dog are not built.
        """
        uptime = TimerService(1, self._tickUptime)
        uptime.clock = self.reactor
        parts = [
            ("access_log", self.accessLogManager),
            ("runtime", self.runtime),
            ("overload_manager", self.overloadManager),
            ("stats_flush", self.statsFlusher),
            ("uptime", uptime),
            ("admin", self.admin),
            ("guard_dog", self.guardDog),
            ("cluster_manager", self.clusterManager),
            # The subscriptions watch their files before any listener
            # serves, as Envoy's start in the cluster and listener
            # managers' initialization: a file moved into place once a
            # listener answers is never missed.
            ("xds", self.xds),
            ("sds", self.secretManager),
            ("rds", self.routeConfigProviders),
            ("listener_manager", self.listenerManager),
            ("workers", self.runHelper),
            ("worker_processes", self.workerProcesses),
        ]
        workers = [name for name, _ in parts].index("workers")
        for i, extension in enumerate(self.bootstrapExtensions):
            if IService.providedBy(extension):
                # Before the workers start, as Envoy's onServerInitialized
                # callbacks run.
                parts.insert(workers, ("bootstrap_extension_%d" % (i,), extension))
                workers += 1
        for name, part in parts:
            if part is not None:
                part.setName(name)
                part.setServiceParent(self)

    # Hot restart (txenvoy.server.hot_restart).

    def useHotRestart(self, hotRestart):
        """
        Take part in hot restart through C{hotRestart}: before anything
        binds, the previous epoch's admin is closed and its listening
        sockets are taken over; once serving, the previous epoch drains.
        """
        self.hotRestart = hotRestart
        self.listenSocketSource = hotRestart.duplicateParentListenSocket
        self.hotRestartVersion = hotRestart.version
        s = self.mainStats.scope("server.")
        s.gauge("hot_restart_epoch").set(hotRestart.epoch)
        s.gauge("hot_restart_generation").inc()
        s.gauge("parent_connections")
        hotRestart.attach(self)

    def shutdownAdmin(self):
        """The next epoch starts: close the admin listener (a C{Deferred})."""
        if self.admin is None:
            return defer.succeed(None)
        return self.admin.stop()

    def drainForHotRestart(self):
        """
        The next epoch serves: stop accepting and close connections
        gradually over C{--drain-time-s} (Envoy's C{drainListeners}), then
        ask those left to close when idle.
        """
        self._forward("hot_restart_drain")
        self._setState(DRAINING)
        self.drainManager.startDrainSequence()
        self.listenerManager.stopListeners(self.workers)
        self.reactor.callLater(self.options.drainTimeS, self._drainConnections)

    def _drainConnections(self):
        for worker in self.workers:
            worker.drainConnections()

    def privilegedStartService(self):
        if self.hotRestart is not None:
            # Before the admin binds the address the previous epoch holds.
            start = self.hotRestart.shutdownParentAdmin()
            if start is not None:
                self.startTimeFirstEpoch = start
        MultiService.privilegedStartService(self)

    # Lifecycle (Envoy's RunHelper; the order is L{_addServices}).

    def startService(self):
        self._setState(INITIALIZING)
        MultiService.startService(self)
        log.info("starting main dispatch loop")
        self.initialized = self.runHelper.initialized

    def _beforeWorkers(self):
        # The one collection of the whole heap, while no worker serves: a
        # pause of tens of milliseconds no request waits for.
        if self.garbageFreezer is not None:
            self.garbageFreezer.freezeNow()

    def _onLive(self):
        self._setState(LIVE)
        self._live.set(0 if self.healthCheckFailed else 1)
        if self.garbageFreezer is not None:
            self.garbageFreezer.schedule()
        if self.hotRestart is not None:
            if self.workerProcesses is not None:
                # The previous epoch drains once this one's worker
                # processes serve, not once they are spawned; it serves
                # alone until then, and its counts show here meanwhile.
                self.hotRestart.mergeParentStats()
                log.info("hot restart: epoch {parent} drains once the worker processes serve",
                         parent=self.hotRestart.epoch - 1)
                self.workerProcesses.whenServing().addCallback(
                    lambda _: self.hotRestart.onWorkersStarted() if self.running else None)
            else:
                self.hotRestart.onWorkersStarted()
        if self.initializedHook is not None:
            self.initializedHook()

    @defer.inlineCallbacks
    def stopService(self):
        """
        Stop accepting, let in-flight connections finish for up to
        C{--shutdown-drain-time-s} (idle HTTP connections are closed at
        once; L{exitNow} cuts it short), then stop the parts in reverse
        start order. Envoy drops in-flight work on SIGTERM; txenvoy drains
        first.
        """
        log.info("shutting down server instance")
        if self._state == LIVE:
            yield self._drainForShutdown()
        Service.stopService(self)
        for part in reversed(list(self)):
            if not part.running:
                continue
            try:
                yield defer.maybeDeferred(part.stopService)
            except Exception:
                log.failure("{name} failed to stop", name=part.name)
        if self.garbageFreezer is not None:
            self.garbageFreezer.stop()
        if self.hotRestart is not None:
            self.hotRestart.close()
        # Let what was posted to the main reactor (the main watchdog's
        # stop) run before the server counts as stopped.
        yield deferLater(self.reactor, 0, lambda: None)

    def _drainForShutdown(self):
        self._setState(DRAINING)
        self.drainManager.startDrainSequence()
        self.listenerManager.stopListeners(self.workers)
        for worker in self.workers:
            worker.drainConnections()
        timeout = 0 if self._exitNow else self.options.shutdownDrainTimeS
        self._shutdownDrain = ShutdownDrain(self.reactor, self.connectionCount, timeout, log)
        return self._shutdownDrain.start()

    def exitNow(self):
        """
        Skip or cut short the shutdown drain: a stop now closes every
        connection at once (Envoy's SIGINT, a second SIGTERM).
        """
        self._exitNow = True
        if self._shutdownDrain is not None:
            self._shutdownDrain.cut()
        if self.workerProcesses is not None:
            self.workerProcesses.exitNow()

    def connectionCount(self):
        """Downstream connections open on every worker."""
        return sum(w.connectionCount() for w in self.workers)

    def _tickUptime(self):
        self._uptime.set(int(time.time() - self.startTimeFirstEpoch))
        # Envoy's: this process's connections and a draining parent's.
        total = self.connectionCount() + self.stats.gaugeValue("server.parent_connections")
        if self.workerProcesses is not None:
            total += self.workerProcesses.connectionCount()
        self._totalConnections.set(total)

    # What the admin and signals act on.

    def _setState(self, state):
        self._state = state
        self._stateGauge.set(state)

    def state(self):
        """C{"LIVE"}, C{"DRAINING"}, C{"PRE_INITIALIZING"} or C{"INITIALIZING"}."""
        return _STATE_NAMES[self._state]

    def _forward(self, action, **fields):
        """Send an admin action on to the worker processes, if any."""
        if self.workerProcesses is not None:
            fields["action"] = action
            self.workerProcesses.broadcast({"admin": fields})

    def _forwardLogLevels(self):
        self._forward("logging", levels=self.logLevels.levels())

    def runtimeModified(self, items):
        """C{POST /runtime_modify} applied C{items}: the worker processes follow."""
        self._forward("runtime_modify", items=items)

    def resetCounters(self):
        """C{POST /reset_counters}: every counter back to zero, in every process."""
        self.stats.resetCounters()
        if self.workerProcesses is not None:
            self.workerProcesses.resetCounters()

    def failHealthcheck(self):
        """C{POST /healthcheck/fail}: /ready answers 503 and server.live is 0."""
        self._forward("healthcheck_fail")
        self.healthCheckFailed = True
        self._live.set(0)
        self._setState(DRAINING)

    def passHealthcheck(self):
        self._forward("healthcheck_ok")
        self.healthCheckFailed = False
        self._live.set(1)
        self._setState(LIVE)

    def drainClose(self):
        """
        Whether a filter that can close gracefully should close its
        connection now: while draining, or after C{/healthcheck/fail}.
        """
        return self.healthCheckFailed or self.drainManager.drainClose()

    def drainListeners(self, graceful=False, inboundOnly=False, skipExit=False):
        """
        C{POST /drain_listeners}: stop accepting, at once or after
        C{--drain-time-s} with C{graceful}.
        """
        self._forward("drain_listeners", graceful=graceful, inboundOnly=inboundOnly)
        if graceful:
            self.drainManager.startDrainSequence()
            self.reactor.callLater(self.options.drainTimeS, self.listenerManager.stopListeners,
                                   self.workers, inboundOnly)
        else:
            self.listenerManager.stopListeners(self.workers, inboundOnly)

    def shutdown(self):
        """C{POST /quitquitquit}: stop the reactor (exit 0)."""
        self.reactor.stop()

    def commandLineOptions(self):
        return self.options.asServerInfo()



# stats_config fields txenvoy honours.
_STATS_CONFIG_FIELDS = ("stats_tags", "use_all_default_tags", "stats_matcher",
                        "histogram_bucket_settings")

# Bootstrap fields txenvoy honours (or that change nothing it does).
_BOOTSTRAP_FIELDS = {
    "node", "static_resources", "admin", "cluster_manager", "stats_flush_interval",
    "stats_flush_on_admin", "stats_sinks", "stats_config", "watchdogs", "watchdog",
    "layered_runtime", "enable_dispatcher_stats", "stats_server_version_override",
    "use_tcp_for_dns_lookups", "overload_manager", "bootstrap_extensions",
    "dynamic_resources",
}
