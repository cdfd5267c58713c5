# -*- test-case-name: tests.e2e.test_ratelimit -*-
"""
C{envoy.filters.network.ratelimit}: a new connection asks the gRPC rate
limit service with the filter's C{domain} and C{descriptors}.

As in Envoy 1.40, the filter chain stops at this filter until the answer:
the next filter (tcp_proxy) is not connected and nothing is read ; a
limited connection is reset, as Envoy's close with unread bytes is). C{OK} continues; C{OVER_LIMIT}, or a failed call with
C{failure_mode_deny}, closes the connection (C{cx_closed}).

Stats: C{ratelimit.<stat_prefix>.} C{total}, C{ok}, C{over_limit},
C{error}, C{failure_mode_allowed}, C{cx_closed} and the gauge C{active}.
"""

from twisted.internet.defer import CancelledError
from zope.interface import implementer

from envoy.extensions.filters.network.ratelimit.v3 import rate_limit_pb2  # noqa: F401

from txenvoy.config.errors import ConfigError
from txenvoy.config.fields import checkFields, durationSeconds
from txenvoy.config.registry import Category, extension
from txenvoy.extensions.filters.common.ratelimit_grpc import (
    DEFAULT_TIMEOUT,
    OVER_LIMIT,
    compileRateLimitService,
)
from txenvoy.interfaces import INetworkFilterFactory
from txenvoy.network.filter import NetworkFilter, forwardReadConnectionLost
from txenvoy.stats.per_worker import StatsStruct, perWorkerMethod

__all__ = ["NetworkRateLimitConfig", "NetworkRateLimitFilter", "createNetworkRateLimit"]

_COUNTERS = ("cx_closed", "error", "failure_mode_allowed", "ok", "over_limit", "total")
_GAUGES = ("active",)


class NetworkRateLimitFilter(NetworkFilter):
    """The filter of one connection: the chain waits for the answer."""

    _pending = None
    _held = b""
    _finHeld = False
    _continued = False

    def __init__(self, config, connection, nextProtocol):
        NetworkFilter.__init__(self, connection, nextProtocol)
        self.config = config
        self.stats = config.statsFor(connection.dispatcher)

    def connectionMade(self):
        # Envoy reads nothing while the chain waits: bytes stay in the
        # socket, so closing a limited connection resets it.
        self.transport.pauseProducing()
        stats = self.stats
        stats.total.inc()
        stats.active.inc()
        d = self._pending = self.config.client.limit(self.connection.dispatcher,
                                                     self.config.descriptors)
        d.addCallbacks(self._onAnswer, self._onFailure)

    def dataReceived(self, data):
        if self._continued:
            NetworkFilter.dataReceived(self, data)
        elif not self.chainStopped:
            self._held += data

    def readConnectionLost(self):
        if self._continued:
            NetworkFilter.readConnectionLost(self)
        else:
            self._finHeld = True

    def connectionLost(self, reason):
        self._cancel()
        if self._continued:
            NetworkFilter.connectionLost(self, reason)

    def _cancel(self):
        pending = self._pending
        if pending is not None:
            self._pending = None
            self.stats.active.dec()
            pending.cancel()

    def _done(self):
        if self._pending is not None:
            self._pending = None
            self.stats.active.dec()

    def _onAnswer(self, response):
        self._done()
        if response.overall_code == OVER_LIMIT:
            self.stats.over_limit.inc()
            self._close()
        else:
            self.stats.ok.inc()
            self._continue()

    def _onFailure(self, reason):
        if reason.check(CancelledError):
            return
        self._done()
        stats = self.stats
        stats.error.inc()
        if self.config.failureModeDeny:
            self._close()
        else:
            stats.failure_mode_allowed.inc()
            self._continue()

    def _continue(self):
        self._continued = True
        self.transport.resumeProducing()
        self.next.makeConnection(self)
        held, self._held = self._held, b""
        self.continueReading(held)
        if self._finHeld and not self.chainStopped:
            forwardReadConnectionLost(self.next, self)

    def _close(self):
        self.stopChain()
        self._held = b""
        self.stats.cx_closed.inc()
        self.transport.abortConnection()


@implementer(INetworkFilterFactory)
class NetworkRateLimitConfig:
    """A compiled network C{RateLimit}."""

    terminal = False

    #: This worker's stat objects, made on first use on that worker.
    statsFor = perWorkerMethod(lambda self, d: StatsStruct(
        d.stats, self.statPrefix, counters=_COUNTERS, gauges=_GAUGES))

    def __init__(self, statPrefix, client, descriptors, failureModeDeny):
        self.statPrefix = "ratelimit.%s." % (statPrefix,)
        self.client = client
        self.descriptors = descriptors
        self.failureModeDeny = failureModeDeny

    def buildFilter(self, connection, nextProtocol):
        return NetworkRateLimitFilter(self, connection, nextProtocol)


@extension(Category.NETWORK_FILTER, "envoy.extensions.filters.network.ratelimit.v3.RateLimit",
           "envoy.filters.network.ratelimit",
           fields=("stat_prefix", "domain", "descriptors", "timeout", "failure_mode_deny",
                   "rate_limit_service"))
def createNetworkRateLimit(message, context):
    """Compile a network C{RateLimit}."""
    path = context.configPath
    for field in ("stat_prefix", "domain"):
        if not getattr(message, field):
            raise ConfigError("%s.%s: value length must be at least 1 characters"
                              % (path, field))
    if not message.descriptors:
        raise ConfigError("%s.descriptors: value must contain at least 1 item(s)" % (path,))
    descriptors = []
    for i, descriptor in enumerate(message.descriptors):
        dpath = "%s.descriptors[%d]" % (path, i)
        checkFields(descriptor, ("entries", "hits_addend"), dpath)
        entries = [(entry.key, entry.value) for entry in descriptor.entries]
        addend = descriptor.hits_addend.value if descriptor.HasField("hits_addend") else None
        descriptors.append((entries, addend))
    timeout = (durationSeconds(message.timeout) if message.HasField("timeout")
               else DEFAULT_TIMEOUT)
    client = compileRateLimitService(message.rate_limit_service, path + ".rate_limit_service",
                                     context.bootstrap, message.domain, timeout)
    config = NetworkRateLimitConfig(message.stat_prefix, client, descriptors,
                                    message.failure_mode_deny)
    mainStats = getattr(context.server, "mainStats", None)
    if mainStats is not None:
        # Envoy shows the stats at zero from the start.
        StatsStruct(mainStats, config.statPrefix, counters=_COUNTERS, gauges=_GAUGES)
    return config
