# -*- test-case-name: tests.rbac.test_engine -*-
"""
Role based access control, shared by C{envoy.filters.network.rbac} and
C{envoy.filters.http.rbac} (Envoy's C{source/extensions/filters/common/rbac}).

An engine is compiled once from either C{rules} (L{engine.PolicyEngine})
or a unified C{matcher} (L{matcher.RbacMatcherEngine}); both answer
C{evaluate(input) -> (allowed, policyName)} for an L{engine.RbacInput}.
"""

from txenvoy.rbac.engine import (
    ALLOW, DENY, LOG, PeerIdentity, PolicyEngine, RbacInput, createPolicyEngine,
    peerIdentityOf, statPrefixJoin)
from txenvoy.rbac.matcher import RbacMatcherEngine, createMatcherEngine


def createEngine(message, rulesField, matcherField, path, network=False):
    """
    The engine for one pair of fields of an RBAC filter config
    (C{rules}/C{matcher} or C{shadow_rules}/C{shadow_matcher}).

    As in Envoy, a matcher wins over rules (the rules are then ignored).

    @return: an engine, or C{None} when neither field is set (no policy is
        enforced: everything is allowed and nothing is counted).
    """
    if message.HasField(matcherField):
        return createMatcherEngine(getattr(message, matcherField),
                                   "%s.%s" % (path, matcherField), network)
    if message.HasField(rulesField):
        return createPolicyEngine(getattr(message, rulesField),
                                  "%s.%s" % (path, rulesField), network)
    return None


__all__ = [
    "ALLOW", "DENY", "LOG", "PeerIdentity", "PolicyEngine", "RbacInput",
    "RbacMatcherEngine", "createEngine", "createMatcherEngine", "createPolicyEngine",
    "peerIdentityOf", "statPrefixJoin",
]
