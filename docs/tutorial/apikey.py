"""
An HTTP filter that lets a request through only with the right API key:
the filter of the tutorial (docs/tutorial/python-filter.rst).

Configured from Envoy YAML through C{TypedStruct}::

    - name: example.api_key
      typed_config:
        "@type": type.googleapis.com/xds.type.v3.TypedStruct
        type_url: type.googleapis.com/example.ApiKey
        value: {header: x-api-key, keys: [s3cret]}
"""

from zope.interface import implementer

from txenvoy.config.errors import ConfigError
from txenvoy.config.registry import Category, extension
from txenvoy.http.filter import FilterHeadersStatus, PassThroughFilter
from txenvoy.interfaces import IHttpFilterFactory
from txenvoy.stats.per_worker import PerWorker, StatsStruct


class ApiKeyFilter(PassThroughFilter):
    """One request: checked once its headers are complete."""

    def __init__(self, callbacks, config):
        PassThroughFilter.__init__(self, callbacks)
        self.config = config

    def decodeHeaders(self, headers, endStream):
        # Stats live in the worker's own shard: one thread owns each.
        stats = self.config.stats.get(self.callbacks.dispatcher)
        key = headers.headers.get(self.config.header)
        if key not in self.config.keys:
            stats.denied.inc()
            self.callbacks.sendLocalReply(401, b"missing or unknown API key\n",
                                          details="api_key_denied")
            return FilterHeadersStatus.StopIteration
        # The upstream never sees the key.
        headers.headers.remove(self.config.header)
        stats.allowed.inc()
        return FilterHeadersStatus.Continue


@implementer(IHttpFilterFactory)
class ApiKeyConfig:
    """The compiled config, built once when the config loads."""

    terminal = False

    def __init__(self, header, keys, statPrefix):
        self.header = header
        self.keys = keys
        # http.<stat_prefix>.api_key.allowed / .denied, made once per worker.
        self.stats = PerWorker(lambda dispatcher: StatsStruct(
            dispatcher.stats, statPrefix + "api_key.", counters=("allowed", "denied")))

    def createFilter(self, callbacks):
        return ApiKeyFilter(callbacks, self)


@extension(Category.HTTP_FILTER, "example.ApiKey")
def createApiKey(value, context):
    """C{value} is the TypedStruct's C{value}, as a dict."""
    keys = value.get("keys")
    if not keys:
        raise ConfigError("%s.keys: at least one key is needed" % (context.path,))
    return ApiKeyConfig(value.get("header", "x-api-key").encode("ascii"),
                        frozenset(k.encode("utf-8") for k in keys), context.httpStatPrefix)
