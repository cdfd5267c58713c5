# -*- test-case-name: tests.config.test_context -*-
"""
What an extension factory may use while the config is compiled.
"""

from txenvoy.config import registry


class FactoryContext:
    """
    Handed to every L{txenvoy.interfaces.IExtensionFactory.create}.

    Everything here belongs to the main thread: factories run when the
    config loads, never on the data path. Per-worker objects (stats shards,
    thread-local clusters) are reached at connection time through the
    connection's dispatcher.

    @ivar reactor: the main reactor (timers for main-thread work).
    @ivar stats: the L{txenvoy.stats.store.StatsStore}.
    @ivar clusterManager: the L{txenvoy.upstream.cluster_manager.ClusterManager},
        or C{None} while clusters are not built yet.
    @ivar accessLogManager: the L{txenvoy.accesslog.manager.AccessLogManager}.
    @ivar server: the L{txenvoy.server.server.Server}, or C{None} (validate).
    @ivar bootstrap: the whole C{Bootstrap} message.
    @ivar path: the field path of the extension being built, for messages.
    @ivar configPath: the field path of its config message: C{<path>.typed_config},
        or C{<path>.typed_config.value} for one written as a C{TypedStruct}.
    @ivar validateOnly: True in C{--mode validate}: build, but open nothing.
    """

    def __init__(self, reactor, stats, clusterManager=None, accessLogManager=None,
                 server=None, bootstrap=None, path="", validateOnly=False,
                 runtime=None, secretManager=None):
        self.reactor = reactor
        self.stats = stats
        self.clusterManager = clusterManager
        self.accessLogManager = accessLogManager
        self.server = server
        self.bootstrap = bootstrap
        self.path = path
        self.configPath = path + ".typed_config"
        self.validateOnly = validateOnly
        self.runtime = runtime
        self._secretManager = secretManager

    @property
    def secretManager(self):
        """
        The L{txenvoy.xds.sds_api.SecretManager} SDS secrets come from
        (the server's, unless given), or C{None}.
        """
        if self._secretManager is not None:
            return self._secretManager
        return getattr(self.server, "secretManager", None)

    def child(self, path, configPath=None):
        """
        A copy of this context for a nested field path; its config is at
        C{configPath}, by default C{<path>.typed_config}.
        """
        c = object.__new__(FactoryContext)
        c.__dict__.update(self.__dict__)
        c.path = path
        c.configPath = path + ".typed_config" if configPath is None else configPath
        return c

    def createExtension(self, category, typedExtension, path):
        """
        Build a nested extension (an access logger inside tcp_proxy, an HTTP
        filter inside the connection manager).
        """
        return registry.createExtension(category, typedExtension, self, path)
