# -*- test-case-name: tests.extensions.filters.network.test_connection_limit -*-
"""
C{envoy.filters.network.connection_limit}: at most C{max_connections}
open connections through this filter, over all workers.

As in Envoy, every connection that reaches the filter is counted while it
is open, including the ones over the limit that wait for their C{delay} to
run out, so C{connection_limit.<stat_prefix>.active_connections} can be
above the limit for a moment. A limited connection is counted in
C{limited_connections}, never reaches the next filter, its bytes are
dropped, and it is closed once C{delay} has passed (at once without one).
Envoy 1.40 closes it without flushing; with the client's bytes already read
that is a FIN (curl: "Empty reply from server"), which is what
C{loseConnection} does here too.

The count is shared by the workers in a small lock-protected object
(Envoy uses an atomic), touched on connect and close only.
"""

import threading

from zope.interface import implementer

from txenvoy.config.errors import ConfigError
from txenvoy.config.fields import durationSeconds
from txenvoy.config.registry import Category, extension
from txenvoy.extensions.filters.network.local_ratelimit import runtimeFeatureEnabled
from txenvoy.interfaces import INetworkFilterFactory
from txenvoy.network.filter import NetworkFilter
from txenvoy.stats.per_worker import perWorkerMethod


class ConnectionCounter:
    """
    The open connections of one filter config, over all workers.
    """

    def __init__(self, maxConnections):
        self.maxConnections = maxConnections
        self.count = 0
        self._lock = threading.Lock()

    def increment(self):
        """
        Count one more connection.

        @return: whether it is within the limit.
        """
        with self._lock:
            within = self.count < self.maxConnections
            self.count += 1
            return within

    def decrement(self):
        """A counted connection closed."""
        with self._lock:
            self.count -= 1


class ConnectionLimitFilter(NetworkFilter):
    """The filter for one connection."""

    _counted = False
    _timer = None

    def __init__(self, config, connection, nextProtocol):
        NetworkFilter.__init__(self, connection, nextProtocol)
        self.config = config

    def connectionMade(self):
        config = self.config
        if not config.enabled:
            self.next.makeConnection(self)
            return
        dispatcher = self.connection.dispatcher
        stats = self._stats = config.statsFor(dispatcher)
        self._counted = True
        stats.active_connections.inc()
        if config.counter.increment():
            self.next.makeConnection(self)
            return
        self.stopChain()
        stats.limited_connections.inc()
        if config.delay:
            # Holding the socket open a while slows down a client that
            # reconnects in a loop.
            self._timer = dispatcher.reactor.callLater(config.delay, self._close)
        else:
            self._close()

    def _close(self):
        self._timer = None
        self.transport.loseConnection()

    def connectionLost(self, reason):
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._counted:
            self._counted = False
            self.config.counter.decrement()
            self._stats.active_connections.dec()
        NetworkFilter.connectionLost(self, reason)


class _ConnectionLimitStats:
    """The per-worker C{connection_limit.<stat_prefix>.*} stat objects."""

    def __init__(self, shard, prefix):
        self.active_connections = shard.gauge(prefix + "active_connections")
        self.limited_connections = shard.counter(prefix + "limited_connections")


@implementer(INetworkFilterFactory)
class ConnectionLimitConfig:
    """
    A compiled C{ConnectionLimit} config.

    @ivar counter: the L{ConnectionCounter} shared by all workers.
    @ivar delay: seconds before a limited connection is closed, or 0.
    @ivar enabled: C{runtime_enabled.default_value} (runtime overrides are
        not read).
    """

    terminal = False

    #: This worker's stat objects, made on first use on that worker.
    statsFor = perWorkerMethod(lambda self, d: _ConnectionLimitStats(d.stats, self.statPrefix))

    def __init__(self, statPrefix, maxConnections, delay=0.0, enabled=True):
        self.statPrefix = "connection_limit.%s." % (statPrefix,)
        self.counter = ConnectionCounter(maxConnections)
        self.delay = delay
        self.enabled = enabled

    def buildFilter(self, connection, nextProtocol):
        return ConnectionLimitFilter(self, connection, nextProtocol)


@extension(Category.NETWORK_FILTER,
           "envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit",
           "envoy.filters.network.connection_limit")
def createConnectionLimit(message, context):
    path = context.configPath
    if not message.stat_prefix:
        raise ConfigError("%s: ConnectionLimitValidationError.StatPrefix: value length must be "
                          "at least 1 characters" % (path,))
    if not message.HasField("max_connections"):
        raise ConfigError("%s: Field 'max_connections' is missing" % (path,))
    if message.max_connections.value < 1:
        raise ConfigError("%s: ConnectionLimitValidationError.MaxConnections: value must be "
                          "greater than or equal to 1" % (path,))
    delay = 0.0
    if message.HasField("delay"):
        delay = durationSeconds(message.delay)
    config = ConnectionLimitConfig(message.stat_prefix, message.max_connections.value, delay,
                                   runtimeFeatureEnabled(message, "runtime_enabled"))
    mainStats = getattr(context.server, "mainStats", None)
    if mainStats is not None:
        # Envoy shows both stats at zero from the start.
        _ConnectionLimitStats(mainStats, config.statPrefix)
    return config
