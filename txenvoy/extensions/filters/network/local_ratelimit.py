# -*- test-case-name: tests.extensions.filters.network.test_local_ratelimit -*-
"""
C{envoy.filters.network.local_ratelimit}: a token bucket on new
connections. A connection that finds the bucket empty is closed before any
later filter sees it, and counted in
C{local_rate_limit.<stat_prefix>.rate_limited}.

Envoy 1.40 keeps one bucket per filter config, shared by every worker (with
C{--concurrency 2} and C{max_tokens: 5}, five connections in all got
through, spread over both workers). The same is done here: the bucket is a
small lock-protected object touched once per connection, never per byte.
C{share_key} shares one bucket between filter configs with the same key and
the same C{token_bucket}, as Envoy's C{SharedRateLimitSingleton} does.

There is no fill timer: the tokens a timer would have added are computed
from the clock when a connection arrives, so an idle filter costs nothing.
"""

import threading
import weakref

from zope.interface import implementer

from txenvoy.config.errors import ConfigError
from txenvoy.config.fields import durationSeconds
from txenvoy.config.registry import Category, extension
from txenvoy.interfaces import INetworkFilterFactory
from txenvoy.network.filter import NetworkFilter
from txenvoy.stats.per_worker import perWorkerMethod

# Envoy refuses faster fill timers.
MIN_FILL_INTERVAL = 0.05


class TokenBucket:
    """
    Envoy's token bucket: starts full with C{maxTokens}; every
    C{fillInterval} seconds C{tokensPerFill} tokens are added, up to
    C{maxTokens}.

    Shared by all workers, so L{consume} takes a lock.
    """

    def __init__(self, maxTokens, tokensPerFill, fillInterval):
        self.maxTokens = maxTokens
        self.tokensPerFill = tokensPerFill
        self.fillInterval = fillInterval
        self._tokens = maxTokens
        self._lastFill = None
        self._lock = threading.Lock()

    def consume(self, now):
        """
        Take one token.

        @param now: the current time in seconds (the caller's reactor).
        @return: whether there was a token.
        """
        with self._lock:
            last = self._lastFill
            if last is None or now < last:
                # First use, or a clock that went back: fills count from now.
                self._lastFill = now
            else:
                fills = int((now - last) // self.fillInterval)
                if fills:
                    self._tokens = min(self.maxTokens,
                                       self._tokens + fills * self.tokensPerFill)
                    self._lastFill = last + fills * self.fillInterval
            if self._tokens > 0:
                self._tokens -= 1
                return True
            return False


# share_key -> bucket, for the configs alive at the moment.
_sharedBuckets = weakref.WeakValueDictionary()
_sharedLock = threading.Lock()


def sharedTokenBucket(shareKey, maxTokens, tokensPerFill, fillInterval):
    """
    The bucket shared by every filter config with this C{share_key} and
    token bucket settings; made on first use, dropped with its last user.
    """
    key = (shareKey, maxTokens, tokensPerFill, fillInterval)
    with _sharedLock:
        bucket = _sharedBuckets.get(key)
        if bucket is None:
            bucket = _sharedBuckets[key] = TokenBucket(maxTokens, tokensPerFill, fillInterval)
        return bucket


class LocalRateLimitFilter(NetworkFilter):
    """
    The filter for one connection: on connect, take a token or close.

    A limited connection never reaches the next filter: Envoy stops the
    filter chain at this filter's C{onNewConnection}, so the next filter
    neither sees the connection nor its bytes.
    """


    def __init__(self, config, connection, nextProtocol):
        NetworkFilter.__init__(self, connection, nextProtocol)
        self.config = config

    def connectionMade(self):
        config = self.config
        dispatcher = self.connection.dispatcher
        if config.enabled and not config.bucket.consume(dispatcher.reactor.seconds()):
            self.stopChain()
            config.statsFor(dispatcher).rate_limited.inc()
            self.transport.loseConnection()
            return
        self.next.makeConnection(self)


class _LocalRateLimitStats:
    """The per-worker C{local_rate_limit.<stat_prefix>.*} stat objects."""

    def __init__(self, shard, prefix):
        self.rate_limited = shard.counter(prefix + "rate_limited")


@implementer(INetworkFilterFactory)
class LocalRateLimitConfig:
    """
    A compiled C{LocalRateLimit} config.

    @ivar bucket: the L{TokenBucket}, shared by all workers.
    @ivar enabled: C{runtime_enabled.default_value} (only the default is
        honoured; runtime overrides of C{runtime_key} are not read).
    """

    terminal = False

    #: This worker's stat objects, made on first use on that worker.
    statsFor = perWorkerMethod(lambda self, d: _LocalRateLimitStats(d.stats, self.statPrefix))

    def __init__(self, statPrefix, bucket, enabled=True):
        self.statPrefix = "local_rate_limit.%s." % (statPrefix,)
        self.bucket = bucket
        self.enabled = enabled

    def buildFilter(self, connection, nextProtocol):
        return LocalRateLimitFilter(self, connection, nextProtocol)


def runtimeFeatureEnabled(message, field):
    """
    The C{default_value} of an optional C{RuntimeFeatureFlag} field;
    C{True} when the field is unset.
    """
    if not message.HasField(field):
        return True
    flag = getattr(message, field)
    return flag.default_value.value if flag.HasField("default_value") else True


@extension(Category.NETWORK_FILTER,
           "envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit",
           "envoy.filters.network.local_ratelimit",
           fields=("stat_prefix", "token_bucket", "runtime_enabled", "share_key"))
def createLocalRateLimit(message, context):
    path = context.configPath
    if not message.stat_prefix:
        raise ConfigError("%s: LocalRateLimitValidationError.StatPrefix: value length must be "
                          "at least 1 characters" % (path,))
    if not message.HasField("token_bucket"):
        raise ConfigError("%s: LocalRateLimitValidationError.TokenBucket: value is required"
                          % (path,))
    tb = message.token_bucket
    interval = durationSeconds(tb.fill_interval)
    if interval < MIN_FILL_INTERVAL:
        raise ConfigError("%s.token_bucket.fill_interval: local rate limit token bucket fill "
                          "timer must be >= 50ms" % (path,))
    perFill = tb.tokens_per_fill.value if tb.HasField("tokens_per_fill") else 1
    if message.share_key:
        bucket = sharedTokenBucket(message.share_key, tb.max_tokens, perFill, interval)
    else:
        bucket = TokenBucket(tb.max_tokens, perFill, interval)
    config = LocalRateLimitConfig(message.stat_prefix, bucket,
                                  runtimeFeatureEnabled(message, "runtime_enabled"))
    mainStats = getattr(context.server, "mainStats", None)
    if mainStats is not None:
        # Envoy shows the counter at zero from the start.
        _LocalRateLimitStats(mainStats, config.statPrefix)
    return config
