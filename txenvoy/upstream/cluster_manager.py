# -*- test-case-name: tests.upstream.test_cluster_manager -*-
"""
The cluster manager (Envoy's C{ClusterManagerImpl}) and its per-worker
face (C{ThreadLocalClusterManagerImpl}).

The L{ClusterManager} and every L{PrimaryCluster} live on the main thread:
they own membership and DNS. Each worker gets a
L{ThreadLocalClusterManager} holding one L{ThreadLocalCluster} per cluster:
the worker's load balancer state and stat objects. New memberships reach
workers through C{dispatcher.post}.
"""

import collections
import random as _random
import threading
import time

from twisted.application.service import Service
from twisted.internet import defer

from txenvoy.config import messages
from txenvoy.config.errors import FAILED, ConfigError, attempt, report
from txenvoy.config.registry import Category, createByName
from txenvoy.server.logging import componentLogger
from txenvoy.upstream import connection
from txenvoy.upstream.cluster import (
    CLUSTER_FACTORY_NAMES,
    ClusterFactoryContext,
    ClusterStats,
    compileCluster,
)
from txenvoy.upstream.dns import GetAddrInfoResolver
from txenvoy.upstream.health_check_event_logger import HealthCheckEventLogger
from txenvoy.upstream.health_checker import HealthChecker
from txenvoy.upstream.outlier_detection import Detector
from txenvoy.upstream.retry_host_selection import chooseHostWithRetryPredicates
from txenvoy.upstream.load_balancer import LoadBalancer
from txenvoy.upstream.thread_aware_lb import newLoadBalancer

log = componentLogger("upstream")


class ThreadLocalCluster:
    """
    One cluster as one worker sees it.

    @ivar info: the shared L{ClusterInfo}.
    @ivar stats: this worker's L{ClusterStats} (C{stats.upstream_cx_total},
        ..., C{stats.rqCode(200)}).
    @ivar hosts: the membership last posted to this worker.
    @ivar dispatcher: the owning worker's dispatcher.
    @ivar reactor: its reactor.
    @ivar workerName: its name (C{"worker_0"}, C{"main_thread"}).
    @ivar loadBalancer: the L{LoadBalancer}.
    @ivar contextFree: its policy picks without reading a request's
        L{txenvoy.upstream.load_balancer_context.LoadBalancerContext} (the
        policies of L{LoadBalancer} itself: round robin, least request,
        random), so a caller with no retry host selection need not build
        one.
    """

    def __init__(self, info, dispatcher, rng=None, primary=None):
        """
        @param primary: the L{PrimaryCluster}; when given, it builds this
            worker's load balancer (C{createLoadBalancer}), as Envoy's
            thread-aware load balancer factory does, so that a cluster type
            may bring its own (C{CLUSTER_PROVIDED}).
        """
        self.info = info
        self.dispatcher = dispatcher
        self.reactor = dispatcher.reactor
        self.workerName = dispatcher.name
        self.stats = ClusterStats(dispatcher.stats.scope(info.statPrefix))
        self.hosts = ()
        if primary is not None:
            self.loadBalancer = primary.createLoadBalancer(self, rng)
        else:
            self.loadBalancer = newLoadBalancer(
                info.lbConfig, self.workerName, self.stats.lb_healthy_panic, rng)
        self.contextFree = type(self.loadBalancer).chooseHost is LoadBalancer.chooseHost

    def updateHosts(self, hosts):
        """Take a new membership (runs on this worker, posted by main)."""
        if log.debugEnabled:
            old, new = set(self.hosts), set(hosts)
            log.debug("membership update for TLS cluster %s added %d removed %d",
                      self.info.name, len(new - old), len(old - new))
        self.hosts = hosts
        self.loadBalancer.setHosts(hosts)

    def chooseHost(self, context=None):
        """
        Pick a host with the cluster's load balancing policy.

        The caller counts C{upstream_cx_none_healthy} (tcp_proxy, router)
        when this returns C{None}, as Envoy's callers do.

        @return: a L{Host}, or C{None} when there is none to offer.
        """
        selection = getattr(context, "retryHostSelection", None)
        if selection is not None and not getattr(self.loadBalancer,
                                                 "handlesHostSelectionRetries", False):
            return chooseHostWithRetryPredicates(self.loadBalancer, context, selection)
        return self.loadBalancer.chooseHost(context)

    def connect(self, host, callbacks, socketOptions=None):
        """
        Open a TCP connection to C{host} on this worker's reactor.

        @param callbacks: see L{txenvoy.upstream.connection}.
        @param socketOptions: per-request transport socket options
            (L{txenvoy.upstream.http_protocol_options.TransportSocketOptions}),
            or C{None}.
        @return: an L{UpstreamConnection}, connecting.
        """
        if host.clusterName != self.info.name:
            # An aggregate cluster's host: its own cluster's settings
            # (timeouts, transport socket, stats) make the connection.
            owner = self.dispatcher.clusterManager.getThreadLocalCluster(host.clusterName)
            if owner is not None:
                return connection.connectUpstream(owner, host, callbacks, socketOptions)
        return connection.connectUpstream(self, host, callbacks, socketOptions)

    def __repr__(self):
        return "<ThreadLocalCluster %s on %s>" % (self.info.name, self.workerName)


class ThreadLocalClusterManager:
    """
    A worker's clusters (Envoy's C{ThreadLocalClusterManagerImpl}).

    @ivar dispatcher: the worker's dispatcher.
    @ivar clusters: C{{name: ThreadLocalCluster}}.
    """

    #: The longest a worker spends on one slice of a CDS update before it
    #: serves its connections again (seconds).
    UPDATE_SLICE = 0.005

    def __init__(self, clusterManager, dispatcher):
        self.dispatcher = dispatcher
        self.clusters = {}
        self._clusterManager = clusterManager
        self._updates = collections.deque()
        self._updating = False

    def runUpdate(self, ops):
        """
        On the worker: apply one CDS update's C{ops} (C{(f, args)}, in
        order) in slices of at most L{UPDATE_SLICE}, serving connections
        between them, so a thousand clusters never stall the worker.
        """
        self._updates.extend(ops)
        if not self._updating:
            self._updating = True
            self._runSlice()

    def _runSlice(self):
        deadline = time.monotonic() + self.UPDATE_SLICE
        updates = self._updates
        while updates:
            f, args = updates.popleft()
            f(*args)
            if updates and time.monotonic() >= deadline:
                self.dispatcher.reactor.callLater(0, self._runSlice)
                return
        self._updating = False

    def getThreadLocalCluster(self, name):
        """@return: the L{ThreadLocalCluster} named C{name}, or C{None}."""
        return self.clusters.get(name)

    def shutdown(self):
        """Stop receiving membership updates (worker shutting down)."""
        self._clusterManager._releaseThreadLocal(self)


class ClusterManager(Service):
    """
    Every configured cluster (Envoy's C{ClusterManagerImpl}), on the main
    thread. As a service it starts membership discovery when started
    (L{initialized}) and cancels its timers when stopped.

    @ivar clusters: C{{name: PrimaryCluster}} in config order.
    @ivar localClusterName: C{cluster_manager.local_cluster_name}.
    @ivar initialized: once started, the Deferred of L{initialize}.
    """

    def __init__(self, reactor, stats, mainShard, clusterProtos, localClusterName="",
                 validateOnly=False, pathPrefix="static_resources.clusters",
                 dnsResolver=None, rng=None, accessLogManager=None, membershipFromMain=False,
                 edsSubscriptions=None, secretManager=None):
        """
        @param reactor: the main reactor (DNS timers and thread pool).
        @param stats: the L{StatsStore}.
        @param mainShard: the main thread's L{StatsShard}.
        @param clusterProtos: C{envoy.config.cluster.v3.Cluster} messages.
        @param localClusterName: must name one of them when set.
        @param validateOnly: compile only; never resolve or start timers.
        @param pathPrefix: field path of the cluster list, for messages.
        @param dnsResolver: an object with C{resolve(name, family)} returning
            a Deferred list of IPs; default L{GetAddrInfoResolver}.
        @param rng: a C{random()}-like function for load balancers and DNS
            jitter; default C{random.random}.
        @param accessLogManager: the L{txenvoy.accesslog.manager.AccessLogManager}
            that writes health check event logs (C{event_log_path}); without
            one they are not written.
        @param membershipFromMain: in a worker process: the clusters whose
            membership is the main thread's neither resolve nor check their
            hosts; the main process sends them
            (L{txenvoy.upstream.host_set_mirror}).
        @param edsSubscriptions: the
            L{txenvoy.xds.subscription_factory.SubscriptionFactory} of C{EDS}
            clusters.
        @param secretManager: the L{txenvoy.xds.sds_api.SecretManager} of
            the SDS secrets upstream TLS contexts name.
        @raise ConfigError: naming the field of the first invalid setting.
        """
        self.reactor = reactor
        self.statsStore = stats
        self.mainShard = mainShard
        self.validateOnly = validateOnly
        self.accessLogManager = accessLogManager
        self.localClusterName = localClusterName
        self.membershipFromMain = membershipFromMain
        self.edsSubscriptions = edsSubscriptions
        self.secretManager = secretManager
        self._rng = rng if rng is not None else _random.random
        self._resolver = dnsResolver if dnsResolver is not None else GetAddrInfoResolver(reactor)
        self._protos = list(clusterProtos)
        self._lock = threading.Lock()
        self._threadLocals = []
        self._started = False
        self.initialized = None
        self.clusters = {}
        #: C{{name: PrimaryCluster}} of the CDS clusters not yet warm.
        self.warming = {}
        #: Called with C{(name, cluster)} each time a cluster becomes the
        #: active one of its name, and with C{(name, None)} when CDS
        #: removes it (the main process's host set relay follows them).
        self.activationListeners = []
        #: In a worker process: called with each cluster CDS added that
        #: waits for its hosts from the main process.
        self.onMirroredStart = None
        compiled = []
        names = set()
        for i, proto in enumerate(self._protos):
            path = "%s[%d]" % (pathPrefix, i)
            compiledCluster = attempt(compileCluster, proto, path,
                                      secretManager=secretManager)
            if compiledCluster is FAILED:
                names.add(proto.name)
                continue
            info, endpoints = compiledCluster
            if info.name in names:
                report(messages.duplicateCluster(info.name, path + ".name"))
                continue
            names.add(info.name)
            compiled.append((info, endpoints, path))
        if localClusterName and localClusterName not in names:
            report(ConfigError("cluster_manager.local_cluster_name: local cluster '%s' must "
                               "be defined" % (localClusterName,)))
        cm = mainShard.scope("cluster_manager.")
        self._activeClusters = cm.gauge("active_clusters")
        self._clusterAdded = cm.counter("cluster_added")
        for name in ("cluster_modified", "cluster_removed", "cluster_updated",
                     "cluster_updated_via_merge", "update_merge_cancelled",
                     "update_out_of_merge_window"):
            cm.counter(name)
        self._warmingClusters = cm.gauge("warming_clusters")
        for info, endpoints, path in compiled:
            cluster = attempt(self._makeCluster, info, endpoints, path)
            if cluster is FAILED:
                continue
            self.clusters[info.name] = cluster
            self._clusterAdded.inc()
            self._activeClusters.inc()

    def _makeCluster(self, info, endpoints, path):
        context = ClusterFactoryContext(self.reactor, self.mainShard, endpoints,
                                        self._resolver, self._rng, path,
                                        self.edsSubscriptions)
        cluster = createByName(Category.CLUSTER, CLUSTER_FACTORY_NAMES[info.type], info,
                               context, path + ".type")
        if info.outlierDetection is not None and not self.validateOnly:
            cluster.attachOutlierDetector(Detector(
                self.reactor, cluster, info.outlierDetection, self.mainShard, self._rng))
        mirrored = self.membershipFromMain and cluster.sharedMembership
        if info.healthCheck is not None and not self.validateOnly and not mirrored:
            cluster.attachHealthChecker(HealthChecker(
                self.reactor, cluster, info.healthCheck, self.mainShard, self._rng,
                self._eventLogger(info, path)))
        return cluster

    def _eventLogger(self, info, path):
        config = info.healthCheck
        if not config.eventLogPaths or self.accessLogManager is None:
            return None
        writers = []
        for logPath in config.eventLogPaths:
            try:
                writers.append(self.accessLogManager.fileWriter(logPath))
            except ConfigError as e:
                raise ConfigError("%s.health_checks[0]: %s" % (path, e))
        return HealthCheckEventLogger(self.reactor, writers, config.kind, info.name)

    def initialize(self):
        """
        Start membership discovery (DNS) on the main reactor.

        @return: a Deferred fired once every cluster that has
            C{wait_for_warm_on_init} (the default) has its first membership:
            at once for C{STATIC}, after the first resolution (success or
            failure) of every endpoint for the DNS types. In validate mode,
            nothing starts and it fires at once.
        """
        if self.validateOnly:
            return defer.succeed(None)
        if not self._started:
            self._started = True
            for cluster in self.clusters.values():
                if log.debugEnabled:
                    log.debug("cm init: adding: cluster=%s", cluster.info.name)
                if self.membershipFromMain and cluster.sharedMembership:
                    cluster.startMirrored()
                else:
                    cluster.start()
        waits = [c.whenInitialized() for c in self.clusters.values()
                 if c.info.waitForWarmOnInit]
        if not waits:
            return defer.succeed(None)
        d = defer.gatherResults(waits, consumeErrors=True)
        d.addCallback(lambda _: None)
        return d

    def createThreadLocal(self, dispatcher):
        """
        Build a worker's clusters. Call it when the worker is set up,
        before its reactor serves traffic (or on the worker's own thread),
        and keep the result on the worker.

        @param dispatcher: the worker's dispatcher (C{name}, C{reactor},
            C{stats}, C{post}).
        @return: a L{ThreadLocalClusterManager}.
        """
        tlcm = ThreadLocalClusterManager(self, dispatcher)
        for name, primary in self.clusters.items():
            if log.debugEnabled:
                log.debug("adding TLS cluster %s", name)
            tlc = ThreadLocalCluster(primary.info, dispatcher, self._rng, primary)
            primary._register(tlc)
            tlcm.clusters[name] = tlc
        dispatcher.stats.gauge(
            "thread_local_cluster_manager.%s.clusters_inflated" % (dispatcher.name,)
        ).set(len(tlcm.clusters))
        with self._lock:
            self._threadLocals.append(tlcm)
        return tlcm

    def _releaseThreadLocal(self, tlcm):
        with self._lock:
            if tlcm in self._threadLocals:
                self._threadLocals.remove(tlcm)
        for name, tlc in tlcm.clusters.items():
            primary = self.clusters.get(name)
            if primary is not None:
                primary._unregister(tlc)

    def get(self, name):
        """@return: the L{PrimaryCluster} named C{name}, or C{None}."""
        return self.clusters.get(name)

    def stop(self):
        """Cancel every DNS timer (main thread)."""
        for cluster in list(self.clusters.values()) + list(self.warming.values()):
            cluster.stop()

    def startService(self):
        Service.startService(self)
        self.initialized = self.initialize()

    def stopService(self):
        Service.stopService(self)
        self.stop()

    def configDump(self):
        """@return: the configured C{Cluster} messages, for C{/config_dump}."""
        return list(self._protos)

    # Dynamic clusters (CDS: txenvoy.xds.cds_api).

    def compileDynamic(self, proto, path):
        """
        Compile a cluster from CDS and build its primary, not yet in use.

        @raise ConfigError: naming C{path}.
        """
        info, endpoints = compileCluster(proto, path, addedViaApi=True,
                                         secretManager=self.secretManager)
        return self._makeCluster(info, endpoints, path)

    def applyUpdate(self, added, modified, removed):
        """
        Apply one CDS update: C{added} and C{modified} primaries (from
        L{compileDynamic}) start and warm, as Envoy's: each stays in
        L{warming} (C{cluster_manager.warming_clusters}) until its first
        membership is known (an C{EDS} cluster's first assignment, or its
        C{initial_fetch_timeout}), the cluster it replaces serving on
        meanwhile; then it reaches every worker by a post. C{removed} names
        leave every worker. Requests already sent keep the cluster they
        chose until they finish.
        """
        cm = self.mainShard.scope("cluster_manager.")
        ops = []
        for cluster in added + modified:
            name = cluster.info.name
            superseded = self.warming.pop(name, None)
            if superseded is not None:
                superseded.stop()
            if name in self.clusters or superseded is not None:
                cm.counter("cluster_modified").inc()
            else:
                self._clusterAdded.inc()
            if not self._started:
                ops.append(self._activate(cluster))
                continue
            self.warming[name] = cluster
            if self.membershipFromMain and cluster.sharedMembership:
                # Warm once the main process sent its first hosts.
                cluster.startMirrored(waitForHosts=True)
                if self.onMirroredStart is not None:
                    self.onMirroredStart(cluster)
            else:
                cluster.start()
            warmed = cluster.whenInitialized()
            if warmed.called:
                ops.append(self._activate(cluster))
            else:
                warmed.addCallback(self._onWarmed, cluster)
        for name in removed:
            warming = self.warming.pop(name, None)
            if warming is not None:
                warming.stop()
            old = self.clusters.pop(name, None)
            if old is not None:
                old.stop()
                self._activeClusters.dec()
                ops.append((self._removeThreadLocal, name))
                for listener in self.activationListeners:
                    listener(name, None)
            cm.counter("cluster_removed").inc()
        self._warmingClusters.set(len(self.warming))
        self._post(ops)

    def _onWarmed(self, ignored, cluster):
        if self.warming.get(cluster.info.name) is not cluster:
            # Replaced or removed while it warmed.
            return
        self._post([self._activate(cluster)])
        self._warmingClusters.set(len(self.warming))

    def _activate(self, cluster):
        """
        Make a warmed (or not yet started) cluster the active one of its
        name, stopping the one it replaces.

        @return: the worker operation that installs it.
        """
        name = cluster.info.name
        self.warming.pop(name, None)
        old = self.clusters.get(name)
        self.clusters[name] = cluster
        if old is not None:
            old.stop()
        else:
            self._activeClusters.inc()
        for listener in self.activationListeners:
            listener(name, cluster)
        return (self._addThreadLocal, cluster)

    def _post(self, ops):
        if not ops:
            return
        for tlcm in self._threadLocalManagers():
            tlcm.dispatcher.post(tlcm.runUpdate, [(f, (tlcm, arg)) for f, arg in ops])

    def whenWarmed(self):
        """
        A Deferred firing once every cluster warming now is warm (or was
        replaced or removed meanwhile).
        """
        waits = [cluster.whenInitialized() for cluster in self.warming.values()]
        d = defer.gatherResults(waits, consumeErrors=True)
        d.addBoth(lambda _: None)
        return d

    def warmingNames(self):
        """The names of the CDS clusters still warming (C{dynamic_warming_clusters})."""
        return set(self.warming)

    @staticmethod
    def _removeThreadLocal(tlcm, name):
        tlcm.clusters.pop(name, None)

    def _threadLocalManagers(self):
        with self._lock:
            return list(self._threadLocals)

    def _addThreadLocal(self, tlcm, primary):
        """On the worker: its own face of a new or changed cluster."""
        tlc = ThreadLocalCluster(primary.info, tlcm.dispatcher, self._rng, primary)
        primary._register(tlc)
        tlcm.clusters[primary.info.name] = tlc
