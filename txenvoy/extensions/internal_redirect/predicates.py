# -*- test-case-name: tests.extensions.internal_redirect.test_predicates -*-
"""
The three internal redirect predicates Envoy 1.40 ships, each registered
by its C{@type} under C{envoy.internal_redirect_predicates}:

 - C{envoy.internal_redirect_predicates.previous_routes}: a redirect may
   not target a route that an earlier redirect from the same route
   already targeted in this request (a redirect loop ends there);
 - C{envoy.internal_redirect_predicates.allow_listed_routes}: only the
   routes named in C{allowed_route_names} may be targets;
 - C{envoy.internal_redirect_predicates.safe_cross_scheme}: an http
   request may not be redirected to https (the other way is allowed).

They are consulted after C{allow_cross_scheme_redirect}, with the
request's C{filterState}, which its internal redirects share.
"""

from zope.interface import implementer

from envoy.extensions.internal_redirect.allow_listed_routes.v3 import (  # noqa: F401
    allow_listed_routes_config_pb2,
)
from envoy.extensions.internal_redirect.previous_routes.v3 import (  # noqa: F401
    previous_routes_config_pb2,
)
from envoy.extensions.internal_redirect.safe_cross_scheme.v3 import (  # noqa: F401
    safe_cross_scheme_config_pb2,
)

from txenvoy.config.errors import ConfigError
from txenvoy.config.registry import Category, extension
from txenvoy.interfaces import IInternalRedirectPredicate

__all__ = ["AllowListedRoutesPredicate", "PreviousRoutesPredicate",
           "SafeCrossSchemePredicate"]

_PREFIX = "envoy.extensions.internal_redirect."
#: Envoy's filter state name prefix of the routes already targeted.
_PREVIOUS_ROUTES_STATE = "envoy.internal_redirect.previous_routes_predicate_state"


@implementer(IInternalRedirectPredicate)
class PreviousRoutesPredicate:
    """
    Envoy's C{PreviousRoutesPredicate}: the targets of the redirects made
    from one route are remembered (per request, under that route's name);
    a target seen before is refused.
    """

    name = "envoy.internal_redirect_predicates.previous_routes"

    def acceptTargetRoute(self, filterState, currentRouteName, targetRouteName,
                          downstreamIsHttps, targetIsHttps):
        key = "%s.%s" % (_PREVIOUS_ROUTES_STATE, currentRouteName)
        seen = filterState.get(key)
        if seen is None:
            seen = filterState[key] = set()
        if targetRouteName in seen:
            return False
        seen.add(targetRouteName)
        return True


@implementer(IInternalRedirectPredicate)
class AllowListedRoutesPredicate:
    """Envoy's C{AllowListedRoutesPredicate}: only the named routes are targets."""

    name = "envoy.internal_redirect_predicates.allow_listed_routes"

    def __init__(self, allowed):
        self.allowed = frozenset(allowed)

    def acceptTargetRoute(self, filterState, currentRouteName, targetRouteName,
                          downstreamIsHttps, targetIsHttps):
        return targetRouteName in self.allowed


@implementer(IInternalRedirectPredicate)
class SafeCrossSchemePredicate:
    """Envoy's C{SafeCrossSchemePredicate}: never from http to https."""

    name = "envoy.internal_redirect_predicates.safe_cross_scheme"

    def acceptTargetRoute(self, filterState, currentRouteName, targetRouteName,
                          downstreamIsHttps, targetIsHttps):
        return downstreamIsHttps or not targetIsHttps


_PREVIOUS = PreviousRoutesPredicate()
_SAFE = SafeCrossSchemePredicate()


@extension(Category.INTERNAL_REDIRECT_PREDICATE,
           _PREFIX + "previous_routes.v3.PreviousRoutesConfig",
           PreviousRoutesPredicate.name, fields=())
def createPreviousRoutes(message, context):
    return _PREVIOUS


@extension(Category.INTERNAL_REDIRECT_PREDICATE,
           _PREFIX + "allow_listed_routes.v3.AllowListedRoutesConfig",
           AllowListedRoutesPredicate.name, fields=("allowed_route_names",))
def createAllowListedRoutes(message, context):
    if not message.allowed_route_names:
        # Envoy's validation: at least one name.
        raise ConfigError("%s.allowed_route_names: value must contain at least 1 item(s)"
                          % (context.configPath,))
    return AllowListedRoutesPredicate(message.allowed_route_names)


@extension(Category.INTERNAL_REDIRECT_PREDICATE,
           _PREFIX + "safe_cross_scheme.v3.SafeCrossSchemeConfig",
           SafeCrossSchemePredicate.name, fields=())
def createSafeCrossScheme(message, context):
    return _SAFE
