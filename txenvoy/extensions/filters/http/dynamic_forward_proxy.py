# -*- test-case-name: tests.e2e.test_dynamic_forward_proxy -*-
"""
C{envoy.filters.http.dynamic_forward_proxy}: before a request is routed
to a dynamic forward proxy cluster, its C{:authority} is resolved through
the DNS cache both share (L{txenvoy.extensions.common.dns_cache}); the
request waits for the answer, never the worker.

As in Envoy 1.40: a request whose route's cluster is not a dynamic
forward proxy cluster goes on untouched; a host the cache cannot resolve
to an address of its family is answered C{503} with the body
C{DNS resolution failure} (details C{dns_resolution_failure}, flag
C{DF}); past C{max_hosts}, C{503} C{DNS cache overflow}.
"""

from zope.interface import implementer

from envoy.extensions.filters.http.dynamic_forward_proxy.v3 import (  # noqa: F401
    dynamic_forward_proxy_pb2,
)

from txenvoy.config.errors import ConfigError
from txenvoy.config.registry import Category, extension
from txenvoy.extensions.common.dns_cache import compileDnsCacheConfig, getDnsCache, splitHost
from txenvoy.http.filter import ConfiguredFilter, FilterHeadersStatus
from txenvoy.interfaces import IHttpFilterFactory, IStreamDecoderFilter
from txenvoy.upstream.cluster import DYNAMIC_FORWARD_PROXY

__all__ = ["DynamicForwardProxyConfig", "DynamicForwardProxyFilter"]


@implementer(IHttpFilterFactory)
class DynamicForwardProxyConfig:
    """A compiled C{FilterConfig}; the filter factory."""

    terminal = False

    def __init__(self, dnsCache):
        self.dnsCache = dnsCache

    def createFilter(self, callbacks):
        return DynamicForwardProxyFilter(self, callbacks)


@implementer(IStreamDecoderFilter)
class DynamicForwardProxyFilter(ConfiguredFilter):
    """The filter of one request."""

    _waiting = False
    _destroyed = False

    def decodeHeaders(self, headers, endStream):
        callbacks = self.callbacks
        route = callbacks.route()
        name = route.clusterName if route is not None else None
        cluster = (callbacks.dispatcher.clusterManager.getThreadLocalCluster(name)
                   if name else None)
        if cluster is None or cluster.info.type != DYNAMIC_FORWARD_PROXY:
            return FilterHeadersStatus.Continue
        authority = (headers.authority or b"").decode("latin-1")
        defaultPort = 443 if cluster.info.transportSocket is not None else 80
        host, port = splitHost(authority, defaultPort)
        entry = self.config.dnsCache.load(host, port, callbacks.dispatcher, self._onLoaded)
        if entry is None:
            self._waiting = True
            return FilterHeadersStatus.StopAllIterationAndWatermark
        return (FilterHeadersStatus.Continue if self._check(entry)
                else FilterHeadersStatus.StopAllIterationAndWatermark)

    def onDestroy(self):
        self._destroyed = True

    def _check(self, entry):
        """Whether the request may go on; else it was answered."""
        if entry is None:
            self.callbacks.sendLocalReply(503, b"DNS cache overflow", None, "dns_cache_overflow")
            return False
        if entry.address is None:
            self.callbacks.streamInfo.setResponseFlag("DF")
            self.callbacks.sendLocalReply(503, b"DNS resolution failure", None,
                                          "dns_resolution_failure")
            return False
        return True

    def _onLoaded(self, entry):
        if self._destroyed or not self._waiting:
            return
        self._waiting = False
        if self._check(entry):
            self.callbacks.continueDecoding()


@extension(Category.HTTP_FILTER,
           "envoy.extensions.filters.http.dynamic_forward_proxy.v3.FilterConfig",
           "envoy.filters.http.dynamic_forward_proxy", fields=("dns_cache_config",))
def createDynamicForwardProxy(message, context):
    """Compile a C{FilterConfig} (with a C{dns_cache_config})."""
    path = context.configPath
    if not message.HasField("dns_cache_config"):
        raise ConfigError("%s.dns_cache_config: txenvoy implements the DNS cache "
                          "(sub_cluster_config is not implemented)" % (path,))
    settings = compileDnsCacheConfig(message.dns_cache_config, path + ".dns_cache_config")
    server = context.server
    mainShard = getattr(server, "mainStats", None)
    if mainShard is None:
        # Validation without a server: a cache of its own.
        from txenvoy.stats.store import StatsStore

        mainShard = StatsStore().shard("main_thread")
    return DynamicForwardProxyConfig(getDnsCache(context.reactor, mainShard, settings))
