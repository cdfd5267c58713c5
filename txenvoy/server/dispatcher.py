# -*- test-case-name: tests.server.test_dispatcher -*-
"""
Envoy's C{Dispatcher}: one reactor and the thread that runs it.
"""

from zope.interface import implementer

from txenvoy.interfaces import IDispatcher

#: How many connection ids each dispatcher owns: dispatcher C{k} hands out
#: C{k * CONNECTION_ID_RANGE + 1}, C{+ 2}, ... from its own thread, so ids
#: are unique across threads with no lock (Envoy uses one atomic counter).
CONNECTION_ID_RANGE = 1 << 40


@implementer(IDispatcher)
class Dispatcher:
    """
    A reactor with a name and the stats shard of its thread.

    Objects created for a dispatcher (connections, thread-local clusters,
    stat objects) are used only on its thread; other threads L{post}.

    @ivar reactor: the reactor.
    @ivar name: C{'main_thread'} or C{'worker_N'}.
    @ivar stats: this thread's L{txenvoy.stats.store.StatsShard}.
    @ivar clusterManager: this thread's
        L{txenvoy.upstream.cluster_manager.ThreadLocalClusterManager}, set
        when the worker is set up.
    """

    def __init__(self, reactor, name, stats, idRange=0):
        """
        @param idRange: which range of connection ids this dispatcher owns
            (0 for the first).
        """
        self.reactor = reactor
        self.name = name
        self.stats = stats
        self.clusterManager = None
        #: This worker's internal listeners by name (Envoy's per-thread
        #: internal listener registry): C{ActiveListener}s that
        #: C{envoy_internal_address} endpoints connect to.
        self.internalListeners = {}
        self._lastConnectionId = idRange * CONNECTION_ID_RANGE

    def nextConnectionId(self):
        self._lastConnectionId += 1
        return self._lastConnectionId

    def post(self, f, *args, **kwargs):
        self.reactor.callFromThread(f, *args, **kwargs)

    def __repr__(self):
        return "<Dispatcher %s>" % (self.name,)
