# -*- test-case-name: tests.server.test_run_helper -*-
"""
Envoy's C{RunHelper}: the last service of the server. Once the cluster
manager has initialized (every cluster that waits for warm-up has its
first membership), it starts the workers and adds every listener to them
(C{ListenerManagerImpl::startWorkers}); until then nothing accepts.
"""

from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.logger import Logger

log = Logger(namespace="main")


class RunHelper(MultiService):
    """
    The workers, as child services started only after initialization.

    @ivar workers: the worker services, in order.
    @ivar initialized: once started, a Deferred that fires after the
        workers started and C{onLive} ran.
    """

    name = "workers"

    def __init__(self, clusterManager, listenerManager, workers, onLive=lambda: None,
                 initTargets=(), beforeWorkers=lambda: None):
        """
        @param clusterManager: a started service with an C{initialized}
            Deferred.
        @param listenerManager: has C{startWorkers(workers)}.
        @param workers: the worker services.
        @param onLive: called once the workers run.
        @param beforeWorkers: called once initialized, before the first
            worker starts: the last moment no connection is served.
        @param initTargets: what else the workers wait for once the
            clusters are initialized (Envoy's init manager targets: the
            first LDS and CDS updates from a control plane), each with an
            C{initialized} Deferred.
        """
        MultiService.__init__(self)
        self._clusterManager = clusterManager
        self._listenerManager = listenerManager
        self._onLive = onLive
        self._beforeWorkers = beforeWorkers
        self._initTargets = [t for t in initTargets if t is not None]
        self.workers = list(workers)
        for worker in self.workers:
            self.addService(worker)
        self.initialized = None

    def startService(self):
        # Not MultiService's: the workers wait for initialization.
        Service.startService(self)
        initialized = self._clusterManager.initialized
        if initialized is None:
            initialized = defer.succeed(None)
        for target in self._initTargets:
            initialized.addCallback(lambda _, t=target: t.initialized)
        self.initialized = initialized.addCallback(self._startWorkers)
        self.initialized.addErrback(lambda f: log.failure("initialization failed", f))

    def _startWorkers(self, _):
        if not self.running:
            return
        log.info("all clusters initialized. initializing init manager")
        self._beforeWorkers()
        for worker in self.workers:
            worker.startService()
        self._listenerManager.startWorkers(self.workers)
        log.info("all dependencies initialized. starting workers")
        self._onLive()

    def stopService(self):
        Service.stopService(self)
        return defer.DeferredList([defer.maybeDeferred(worker.stopService)
                                   for worker in reversed(self.workers) if worker.running])
