# -*- test-case-name: tests.e2e.test_dynamic_forward_proxy -*-
"""
C{envoy.filters.network.sni_dynamic_forward_proxy}: a connection's SNI
(from C{tls_inspector}) is resolved through the DNS cache
(L{txenvoy.extensions.common.dns_cache}) before the C{tcp_proxy} that
follows connects to a dynamic forward proxy cluster, which picks the
host of that SNI and C{port_value}.

As in Envoy 1.40, the filter chain waits for the answer with nothing read;
a connection without SNI goes on untouched, and one whose name does not
resolve goes on too (the cluster then has no host and C{tcp_proxy}
closes it). Past C{max_hosts} the connection is closed.
"""

from zope.interface import implementer

from envoy.extensions.filters.network.sni_dynamic_forward_proxy.v3 import (  # noqa: F401
    sni_dynamic_forward_proxy_pb2,
)

from txenvoy.config.errors import ConfigError
from txenvoy.config.registry import Category, extension
from txenvoy.extensions.common.dns_cache import compileDnsCacheConfig, getDnsCache
from txenvoy.interfaces import INetworkFilterFactory
from txenvoy.network.filter import NetworkFilter

__all__ = ["DYNAMIC_PORT", "SniDynamicForwardProxyConfig", "SniDynamicForwardProxyFilter"]

#: Envoy's filter state key of the port a dynamic forward proxy cluster
#: connects to for a connection.
DYNAMIC_PORT = "envoy.upstream.dynamic_port"


class SniDynamicForwardProxyFilter(NetworkFilter):
    """One connection: the chain waits until its SNI is resolved."""

    _closed = False
    _started = False  # the next filter was told of the connection

    def __init__(self, config, connection, nextProtocol):
        NetworkFilter.__init__(self, connection, nextProtocol)
        self.config = config

    def connectionMade(self):
        info = self.connection.streamInfo
        name = info.requestedServerName
        if not name:
            self._start()
            return
        config = self.config
        info.filterState[DYNAMIC_PORT] = config.port
        entry = config.dnsCache.load(name, config.port, self.connection.dispatcher,
                                     self._onLoaded)
        if entry is not None:
            self._start()
            return
        self.transport.pauseProducing()

    def _onLoaded(self, entry):
        if self._closed:
            return
        if entry is None:
            self.stopChain()
            self.transport.loseConnection()
            return
        self.transport.resumeProducing()
        self._start()

    def _start(self):
        self._started = True
        NetworkFilter.connectionMade(self)

    def connectionLost(self, reason):
        self._closed = True
        if self._started:
            NetworkFilter.connectionLost(self, reason)


@implementer(INetworkFilterFactory)
class SniDynamicForwardProxyConfig:
    """A compiled C{FilterConfig}."""

    terminal = False

    def __init__(self, dnsCache, port):
        self.dnsCache = dnsCache
        self.port = port

    def buildFilter(self, connection, nextProtocol):
        return SniDynamicForwardProxyFilter(self, connection, nextProtocol)


@extension(Category.NETWORK_FILTER,
           "envoy.extensions.filters.network.sni_dynamic_forward_proxy.v3.FilterConfig",
           "envoy.filters.network.sni_dynamic_forward_proxy",
           fields=("dns_cache_config", "port_value"))
def createSniDynamicForwardProxy(message, context):
    """Compile a C{FilterConfig}."""
    path = context.configPath
    if not message.HasField("dns_cache_config"):
        raise ConfigError("%s.dns_cache_config: value is required" % (path,))
    if not 0 < message.port_value <= 65535:
        raise ConfigError("%s.port_value: value must be inside range [1, 65535]" % (path,))
    settings = compileDnsCacheConfig(message.dns_cache_config, path + ".dns_cache_config")
    mainShard = getattr(context.server, "mainStats", None)
    if mainShard is None:
        from txenvoy.stats.store import StatsStore

        mainShard = StatsStore().shard("main_thread")
    return SniDynamicForwardProxyConfig(getDnsCache(context.reactor, mainShard, settings),
                                        message.port_value)
