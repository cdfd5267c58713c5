# -*- test-case-name: tests.e2e.test_ext_authz_grpc -*-
"""
C{envoy.filters.network.ext_authz}: a connection's first bytes wait for
the gRPC authorization service (C{envoy.service.auth.v3.Authorization}).

As in Envoy 1.40, the next filter is connected at once and the check is
made when the first bytes arrive; they (and any that follow) are held
until the answer. An OK answer lets them through; a denial, or an error
without C{failure_mode_allow}, closes the connection (counted in
C{cx_closed}). The C{CheckRequest} carries the connection's source and
destination addresses.

Stats: C{ext_authz.<stat_prefix>.} C{total}, C{ok}, C{denied}, C{error},
C{failure_mode_allowed}, C{cx_closed}, C{disabled} and the gauge
C{active} (checks in flight).
"""

from twisted.internet.defer import CancelledError
from zope.interface import implementer

from envoy.extensions.filters.network.ext_authz.v3 import ext_authz_pb2  # noqa: F401

from txenvoy.config.errors import ConfigError
from txenvoy.config.registry import Category, extension
from txenvoy.extensions.filters.common.ext_authz_grpc import (
    GrpcAuthorizationService,
    checkRequest,
)
from txenvoy.grpc.async_client import compileEnvoyGrpc
from txenvoy.interfaces import INetworkFilterFactory
from txenvoy.network.filter import NetworkFilter, forwardReadConnectionLost
from txenvoy.stats.per_worker import StatsStruct, perWorkerMethod

__all__ = ["NetworkExtAuthzConfig", "NetworkExtAuthzFilter", "createNetworkExtAuthz"]

_COUNTERS = ("cx_closed", "denied", "error", "failure_mode_allowed", "ok", "total", "disabled")
_GAUGES = ("active",)

_NOT_STARTED, _CALLING, _ALLOWED, _CLOSED = range(4)


class NetworkExtAuthzFilter(NetworkFilter):
    """The filter of one connection: bytes wait for the check's answer."""

    _state = _NOT_STARTED
    _pending = None
    _held = b""
    _finHeld = False

    def __init__(self, config, connection, nextProtocol):
        NetworkFilter.__init__(self, connection, nextProtocol)
        self.config = config
        self.stats = config.statsFor(connection.dispatcher)

    def dataReceived(self, data):
        state = self._state
        if state == _ALLOWED:
            self.next.dataReceived(data)
        elif state == _CLOSED:
            return
        else:
            self._held += data
            if state == _NOT_STARTED:
                self._check()

    def readConnectionLost(self):
        if self._state == _ALLOWED:
            forwardReadConnectionLost(self.next, self)
        elif self._state == _CALLING:
            self._finHeld = True
        elif self._state == _NOT_STARTED:
            # Envoy checks a FIN that comes before any byte too.
            self._finHeld = True
            self._check()

    def connectionLost(self, reason):
        pending = self._pending
        if pending is not None:
            self._pending = None
            self.stats.active.dec()
            pending.cancel()
        NetworkFilter.connectionLost(self, reason)

    def _check(self):
        self._state = _CALLING
        stats = self.stats
        stats.total.inc()
        stats.active.inc()
        dispatcher = self.connection.dispatcher
        request = checkRequest(self.connection.streamInfo, dispatcher.reactor.seconds())
        d = self._pending = self.config.service.check(dispatcher, request)
        d.addCallbacks(self._onAnswer, self._onFailure)

    def _done(self):
        if self._pending is not None:
            self._pending = None
            self.stats.active.dec()

    def _onAnswer(self, answer):
        self._done()
        if answer.allowed:
            self.stats.ok.inc()
            self._allow()
        else:
            self.stats.denied.inc()
            self._close()

    def _onFailure(self, reason):
        if reason.check(CancelledError):
            return
        self._done()
        stats = self.stats
        stats.error.inc()
        if self.config.failureModeAllow:
            stats.failure_mode_allowed.inc()
            self._allow()
        else:
            self._close()

    def _allow(self):
        self._state = _ALLOWED
        held, self._held = self._held, b""
        self.continueReading(held)
        if self._finHeld and not self.chainStopped:
            forwardReadConnectionLost(self.next, self)

    def _close(self):
        self._state = _CLOSED
        self._held = b""
        self.stats.cx_closed.inc()
        self.connection.streamInfo.connectionTerminationDetails = "ext_authz_denied"
        self.transport.loseConnection()


@implementer(INetworkFilterFactory)
class NetworkExtAuthzConfig:
    """A compiled network C{ExtAuthz}."""

    terminal = False

    #: This worker's stat objects, made on first use on that worker.
    statsFor = perWorkerMethod(lambda self, d: StatsStruct(
        d.stats, self.statPrefix, counters=_COUNTERS, gauges=_GAUGES))

    def __init__(self, statPrefix, service, failureModeAllow):
        self.statPrefix = "ext_authz.%s." % (statPrefix,)
        self.service = service
        self.failureModeAllow = failureModeAllow

    def buildFilter(self, connection, nextProtocol):
        return NetworkExtAuthzFilter(self, connection, nextProtocol)


@extension(Category.NETWORK_FILTER, "envoy.extensions.filters.network.ext_authz.v3.ExtAuthz",
           "envoy.filters.network.ext_authz",
           fields=("stat_prefix", "grpc_service", "failure_mode_allow", "transport_api_version"))
def createNetworkExtAuthz(message, context):
    """Compile a network C{ExtAuthz}."""
    path = context.configPath
    if not message.stat_prefix:
        raise ConfigError("%s: ExtAuthzValidationError.StatPrefix: value length must be at "
                          "least 1 characters" % (path,))
    if not message.HasField("grpc_service"):
        raise ConfigError("%s.grpc_service: the authorization service is required" % (path,))
    target = compileEnvoyGrpc(message.grpc_service, path + ".grpc_service", context.bootstrap)
    config = NetworkExtAuthzConfig(message.stat_prefix, GrpcAuthorizationService(target),
                                   message.failure_mode_allow)
    mainStats = getattr(context.server, "mainStats", None)
    if mainStats is not None:
        # Envoy shows the stats at zero from the start.
        StatsStruct(mainStats, config.statPrefix, counters=_COUNTERS, gauges=_GAUGES)
    return config
