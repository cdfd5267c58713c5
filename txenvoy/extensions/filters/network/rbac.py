# -*- test-case-name: tests.extensions.filters.network.test_rbac -*-
"""
C{envoy.filters.network.rbac}: allow or deny a connection by its addresses,
SNI and TLS peer, with policies (C{rules}) or a unified C{matcher}.

Like Envoy, the filter decides when bytes arrive, not on connect: the next
filter (tcp_proxy) is connected at once, and the first bytes are held until
the policy is checked. Allowed, they go on; denied, they are dropped and
the connection is closed (after C{delay_deny} if set, reading paused
meanwhile). With C{enforcement_type: CONTINUOUS} every read is checked
again and counted again; with the default C{ONE_TIME_ON_FIRST_BYTE} the
first answer holds. A FIN before any byte is checked as a read too when the
next filter supports half-close (Envoy passes it to C{onData} with
C{end_stream}); otherwise the FIN closes the connection unchecked.

Stats, per worker, with Envoy's names: C{<stat_prefix>.rbac.allowed},
C{<stat_prefix>.rbac.denied} and, under C{shadow_rules_stat_prefix},
C{<stat_prefix>.rbac.<shadow prefix>.shadow_allowed} /
C{shadow_denied} (a trailing dot of a prefix is not doubled; there is no
C{network.} in front).
"""

from twisted.internet.interfaces import IHalfCloseableProtocol
from zope.interface import implementer

from txenvoy.config.errors import ConfigError
from txenvoy.config.fields import durationSeconds
from txenvoy.config.registry import Category, extension
from txenvoy.interfaces import INetworkFilterFactory
from txenvoy.network.filter import NetworkFilter, forwardReadConnectionLost
from txenvoy.rbac import RbacInput, createEngine, statPrefixJoin
from txenvoy.server.logging import componentLogger, connTag
from txenvoy.stats.per_worker import perWorkerMethod

log = componentLogger("rbac")

# envoy.extensions.filters.network.rbac.v3.RBAC.EnforcementType
ONE_TIME_ON_FIRST_BYTE = 0
CONTINUOUS = 1


class RbacFilter(NetworkFilter):
    """
    The filter for one connection.

    @ivar allowed: C{None} until checked, then the enforced answer.
    """

    allowed = None
    # Set once a one-time check allowed the connection: bytes then go
    # straight on.
    _passThrough = False
    _shadowChecked = False
    _input = None
    _delayTimer = None

    def __init__(self, config, connection, nextProtocol):
        NetworkFilter.__init__(self, connection, nextProtocol)
        self.config = config
        self.stats = config.statsFor(connection.dispatcher)

    def dataReceived(self, data):
        if self._passThrough or self._check():
            self.next.dataReceived(data)

    def readConnectionLost(self):
        if self.allowed is False:
            return
        if IHalfCloseableProtocol(self.next, None) is not None and not self._check():
            return
        forwardReadConnectionLost(self.next, self)

    def connectionLost(self, reason):
        if self._delayTimer is not None:
            self._delayTimer.cancel()
            self._delayTimer = None
        NetworkFilter.connectionLost(self, reason)

    def _check(self):
        """
        Check the policies for this read (Envoy's C{onData}).

        @return: whether the bytes may go on.
        """
        allowed = self.allowed
        config = self.config
        if allowed is False:
            return False
        continuous = config.continuous
        if allowed is not None and not continuous:
            return True
        if self._input is None:
            self._input = RbacInput.fromConnection(self.connection, self.transport)
        stats = self.stats
        shadow = config.shadowEngine
        if shadow is not None and (continuous or not self._shadowChecked):
            self._shadowChecked = True
            shadowAllowed, shadowPolicy = shadow.evaluate(self._input)
            if log.debugEnabled:
                self._logDecision("shadow", shadowAllowed, shadowPolicy)
            if shadowAllowed:
                stats.shadow_allowed.inc()
            else:
                stats.shadow_denied.inc()
        engine = config.engine
        if engine is None:
            # No enforcing policy: everything is allowed, nothing counted.
            self.allowed = True
            self._passThrough = not continuous
            return True
        allowed, policy = engine.evaluate(self._input)
        if log.debugEnabled:
            self._logDecision("enforced", allowed, policy)
        self.allowed = allowed
        if allowed:
            stats.allowed.inc()
            self._passThrough = not continuous
            return True
        stats.denied.inc()
        self.connection.streamInfo.connectionTerminationDetails = (
            "rbac_access_denied_matched_policy[%s]" % (policy or "none",))
        if config.delayDeny:
            self.transport.pauseProducing()
            self._delayTimer = self.connection.dispatcher.reactor.callLater(
                config.delayDeny, self._close)
        else:
            self._close()
        return False

    def _logDecision(self, kind, allowed, policy):
        # Envoy's "enforced denied, matched policy none".
        log.debug("%s%s %s, matched policy %s", connTag(self.connection.streamInfo.connectionId),
                  kind, "allowed" if allowed else "denied", policy or "none")

    def _close(self):
        self._delayTimer = None
        self.transport.loseConnection()


class _RbacStats:
    """The per-worker RBAC stat objects."""

    def __init__(self, shard, names):
        for attribute, name in names.items():
            setattr(self, attribute, shard.counter(name))


def rbacStatNames(statPrefix, shadowStatPrefix=""):
    """
    Envoy's network RBAC stat names: C{{attribute: full name}}.
    """
    base = statPrefixJoin(statPrefix, "rbac.")
    shadow = base + shadowStatPrefix
    return {
        "allowed": statPrefixJoin(base, "allowed"),
        "denied": statPrefixJoin(base, "denied"),
        "shadow_allowed": statPrefixJoin(shadow, "shadow_allowed"),
        "shadow_denied": statPrefixJoin(shadow, "shadow_denied"),
    }


@implementer(INetworkFilterFactory)
class RbacConfig:
    """
    A compiled network C{RBAC} config.

    @ivar engine: the enforcing engine, or C{None} (allow everything).
    @ivar shadowEngine: the shadow engine, or C{None}.
    @ivar continuous: C{enforcement_type: CONTINUOUS}.
    @ivar delayDeny: seconds to wait before closing a denied connection.
    """

    terminal = False

    #: This worker's stat objects, made on first use on that worker.
    statsFor = perWorkerMethod(lambda self, d: _RbacStats(d.stats, self.statNames))

    def __init__(self, statPrefix, engine, shadowEngine=None, shadowStatPrefix="",
                 continuous=False, delayDeny=0.0):
        self.statNames = rbacStatNames(statPrefix, shadowStatPrefix)
        self.engine = engine
        self.shadowEngine = shadowEngine
        self.continuous = continuous
        self.delayDeny = delayDeny

    def buildFilter(self, connection, nextProtocol):
        return RbacFilter(self, connection, nextProtocol)


@extension(Category.NETWORK_FILTER, "envoy.extensions.filters.network.rbac.v3.RBAC",
           "envoy.filters.network.rbac",
           fields=("rules", "matcher", "shadow_rules", "shadow_matcher",
                   "shadow_rules_stat_prefix", "stat_prefix", "enforcement_type", "delay_deny"))
def createRbac(message, context):
    path = context.configPath
    if not message.stat_prefix:
        raise ConfigError("%s: RBACValidationError.StatPrefix: value length must be at least "
                          "1 characters" % (path,))
    engine = createEngine(message, "rules", "matcher", path, network=True)
    shadow = createEngine(message, "shadow_rules", "shadow_matcher", path, network=True)
    delay = 0.0
    if message.HasField("delay_deny"):
        delay = durationSeconds(message.delay_deny)
    config = RbacConfig(message.stat_prefix, engine, shadow, message.shadow_rules_stat_prefix,
                        message.enforcement_type == CONTINUOUS, delay)
    mainStats = getattr(context.server, "mainStats", None)
    if mainStats is not None:
        # Envoy shows the four counters at zero from the start.
        for name in config.statNames.values():
            mainStats.counter(name)
    return config
