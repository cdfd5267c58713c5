# -*- test-case-name: tests.extensions.filters.http.test_rbac -*-
"""
C{envoy.filters.http.rbac}: allow or deny requests by their headers,
addresses and TLS peer, with policies (C{rules}) or a unified C{matcher}
(the engine of L{txenvoy.rbac}, shared with the network filter).

Behaviour copied from Envoy 1.40 (C{RoleBasedAccessControlFilter};
checked against the binary with C{15-rbac-http.yaml} and variants, pinned
in C{tests/extensions/filters/http/test_rbac.py}):

 - the shadow engine (C{shadow_rules} / C{shadow_matcher}) is evaluated
   first and only counted: C{http.<prefix>.rbac.<shadow_rules_stat_prefix>
   .shadow_allowed} / C{shadow_denied}; it writes
   C{<shadow_rules_stat_prefix>shadow_engine_result} (C{allowed} /
   C{denied}) and, when a policy matched,
   C{<shadow_rules_stat_prefix>shadow_effective_policy_id} into the
   dynamic metadata namespace C{envoy.filters.http.rbac};
 - the enforcing engine (C{rules} / C{matcher}) counts
   C{http.<prefix>.rbac.<rules_stat_prefix>.allowed} / C{denied}, writes
   C{<rules_stat_prefix>enforced_engine_result} and
   C{<rules_stat_prefix>enforced_effective_policy_id} the same way, and a
   denied request is answered C{403}, body C{RBAC: access denied},
   details C{rbac_access_denied_matched_policy[<policy or none>]}, with no
   response flag;
 - with neither engine everything is allowed and nothing is counted;
 - a C{typed_per_filter_config} C{RBACPerRoute} replaces both engines for
   the route (an empty one turns RBAC off there); the stats stay the
   filter's.
"""

from zope.interface import implementer

from envoy.extensions.filters.http.rbac.v3 import rbac_pb2  # noqa: F401

from txenvoy.config.errors import UnsupportedField
from txenvoy.config.fields import checkFields
from txenvoy.config.registry import Category, extension
from txenvoy.http.filter import ConfiguredFilter, FilterHeadersStatus
from txenvoy.interfaces import IHttpFilterFactory, IStreamDecoderFilter
from txenvoy.rbac import PeerIdentity, RbacInput, createEngine, statPrefixJoin
from txenvoy.server.logging import componentLogger

from txenvoy.http.filter_config import RouteSpecificConfigs, WorkerStats, httpStatPrefix

__all__ = ["RbacConfig", "RbacFilter", "rbacStatNames", "createRbac"]

log = componentLogger("rbac")

_NAME = "envoy.filters.http.rbac"
_RBAC = "envoy.extensions.filters.http.rbac.v3.RBAC"
_RBAC_PER_ROUTE = "envoy.extensions.filters.http.rbac.v3.RBACPerRoute"

_FIELDS = frozenset(("rules", "rules_stat_prefix", "matcher", "shadow_rules", "shadow_matcher",
                     "shadow_rules_stat_prefix", "track_per_rule_stats"))


def rbacStatNames(statPrefix, rulesStatPrefix="", shadowRulesStatPrefix=""):
    """
    Envoy's HTTP RBAC stat names: C{{attribute: full name}}.

    @param statPrefix: the connection manager's C{http.<stat_prefix>.}.
    """
    base = statPrefixJoin(statPrefix, "rbac.")
    return {
        "allowed": statPrefixJoin(base + rulesStatPrefix, "allowed"),
        "denied": statPrefixJoin(base + rulesStatPrefix, "denied"),
        "shadow_allowed": statPrefixJoin(base + shadowRulesStatPrefix, "shadow_allowed"),
        "shadow_denied": statPrefixJoin(base + shadowRulesStatPrefix, "shadow_denied"),
    }


class _Engines:
    """The enforcing and shadow engines of a config (the filter's or a route's)."""

    __slots__ = ("engine", "shadow")

    def __init__(self, message, path):
        checkFields(message, _FIELDS, path)
        if message.track_per_rule_stats:
            raise UnsupportedField(path + ".track_per_rule_stats")
        self.engine = createEngine(message, "rules", "matcher", path)
        self.shadow = createEngine(message, "shadow_rules", "shadow_matcher", path)


def _compilePerRoute(message):
    path = "typed_per_filter_config[%s]" % (_NAME,)
    checkFields(message, ("rbac",), path)
    return _Engines(message.rbac, path + ".rbac")


@implementer(IHttpFilterFactory)
class RbacConfig:
    """
    A compiled HTTP C{RBAC}; the filter factory.

    @ivar engines: the filter's own engines.
    """

    terminal = False

    def __init__(self, engines, statPrefix, rulesStatPrefix="", shadowRulesStatPrefix=""):
        self.engines = engines
        self.stats = WorkerStats(rbacStatNames(statPrefix, rulesStatPrefix,
                                               shadowRulesStatPrefix))
        self.enforcedResultField = rulesStatPrefix + "enforced_engine_result"
        self.enforcedPolicyField = rulesStatPrefix + "enforced_effective_policy_id"
        self.shadowResultField = shadowRulesStatPrefix + "shadow_engine_result"
        self.shadowPolicyField = shadowRulesStatPrefix + "shadow_effective_policy_id"
        self.routeConfigs = RouteSpecificConfigs(_NAME, (_RBAC_PER_ROUTE,), _compilePerRoute)

    def createFilter(self, callbacks):
        """@return: a L{RbacFilter} for one request."""
        return RbacFilter(self, callbacks)


def rbacInput(callbacks, request):
    """The L{RbacInput} of one request."""
    connection = callbacks.connection
    remote = callbacks.streamInfo.downstreamRemoteAddress
    input = RbacInput.fromConnection(connection, None, request,
                                     remoteIp=remote[0] if remote else None)
    ssl = getattr(connection, "ssl", None)
    if ssl is not None:
        input.ssl = PeerIdentity(ssl.uriSanPeerCertificate, ssl.dnsSansPeerCertificate,
                                 ssl.subjectPeerCertificate)
    return input


@implementer(IStreamDecoderFilter)
class RbacFilter(ConfiguredFilter):
    """The RBAC filter of one request (request direction only)."""

    def decodeHeaders(self, headers, endStream):
        config = self.config
        callbacks = self.callbacks
        engines = config.routeConfigs.mostSpecific(callbacks) or config.engines
        shadow = engines.shadow
        engine = engines.engine
        if shadow is None and engine is None:
            return FilterHeadersStatus.Continue
        input = rbacInput(callbacks, headers)
        stats = config.stats.forDispatcher(callbacks.dispatcher)
        fields = {}
        if shadow is not None:
            allowed, policy = shadow.evaluate(input)
            if log.debugEnabled:
                _logDecision(callbacks, "shadow", allowed, policy)
            if allowed:
                stats.shadow_allowed.inc()
            else:
                stats.shadow_denied.inc()
            if policy:
                fields[config.shadowPolicyField] = policy
            fields[config.shadowResultField] = "allowed" if allowed else "denied"
        if engine is not None:
            allowed, policy = engine.evaluate(input)
            if log.debugEnabled:
                _logDecision(callbacks, "enforced", allowed, policy)
            if policy:
                fields[config.enforcedPolicyField] = policy
            fields[config.enforcedResultField] = "allowed" if allowed else "denied"
        _setMetadata(callbacks.streamInfo, fields)
        if engine is None or allowed:
            if engine is not None:
                stats.allowed.inc()
            return FilterHeadersStatus.Continue
        stats.denied.inc()
        callbacks.sendLocalReply(403, b"RBAC: access denied", None,
                                 "rbac_access_denied_matched_policy[%s]" % (policy or "none",))
        return FilterHeadersStatus.StopIteration


def _logDecision(callbacks, kind, allowed, policy):
    # Envoy's "enforced denied, matched policy none".
    stream = getattr(callbacks, "stream", None)
    logTag = getattr(stream, "logTag", None)
    log.debug("%s%s %s, matched policy %s", logTag() if logTag is not None else "", kind,
              "allowed" if allowed else "denied", policy or "none")


def _setMetadata(info, fields):
    metadata = info.dynamicMetadata
    existing = metadata.get(_NAME)
    if existing is None:
        metadata[_NAME] = fields
    else:
        existing.update(fields)


@extension(Category.HTTP_FILTER, _RBAC, _NAME)
def createRbac(message, context):
    """Compile an HTTP C{RBAC} message."""
    path = context.configPath
    config = RbacConfig(_Engines(message, path), httpStatPrefix(context),
                        message.rules_stat_prefix, message.shadow_rules_stat_prefix)
    config.stats.declare(context)
    return config
