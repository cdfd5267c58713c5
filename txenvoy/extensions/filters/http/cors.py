# -*- test-case-name: tests.extensions.filters.http.test_cors -*-
"""
C{envoy.filters.http.cors}: Cross-Origin Resource Sharing, with the
policy in C{typed_per_filter_config["envoy.filters.http.cors"]}
(C{envoy.extensions.filters.http.cors.v3.CorsPolicy}) of the route
configuration, virtual host and route, most specific first; without any,
the deprecated C{cors} fields of the route and virtual host are used.

Behaviour copied from Envoy 1.40 (C{CorsFilter}; checked against the
binary, pinned in C{tests/extensions/filters/http/test_cors.py}):

 - a request with a non-empty C{Origin} is a CORS request when the most
   specific policy is enabled (C{filter_enabled}, on by default); it
   counts in C{http.<prefix>.cors.origin_valid} or C{origin_invalid}
   (also in shadow mode, C{shadow_enabled}, where nothing else happens);
 - an origin is allowed when a C{allow_origin_string_match} matcher
   matches it, or matches C{*};
 - a preflight (C{OPTIONS} with C{Access-Control-Request-Method}) is
   answered here, C{200}, details C{cors_response}, with
   C{access-control-allow-origin} (allowed origins only),
   C{-allow-credentials}, C{-allow-methods} (C{*} echoes the requested
   method), C{-allow-headers} (C{*} echoes the requested headers),
   C{-max-age} and C{-allow-private-network}; a preflight from an origin
   not allowed goes on to the upstream unless
   C{forward_not_matching_preflights: false};
 - every other response to an allowed origin (local replies and the
   preflight answer included) gets C{access-control-allow-origin},
   C{-allow-credentials} and C{-expose-headers}.
"""

from zope.interface import implementer

from envoy.config.route.v3 import route_components_pb2  # noqa: F401
from envoy.extensions.filters.http.cors.v3 import cors_pb2  # noqa: F401

from txenvoy.config.registry import Category, extension
from txenvoy.config.fields import checkFields
from txenvoy.http.filter import ConfiguredFilter, FilterHeadersStatus
from txenvoy.http.headers import HeaderMap, ResponseHeaders
from txenvoy.router.matcher import compileStringMatcher
from txenvoy.interfaces import IHttpFilterFactory, IStreamDecoderFilter, IStreamEncoderFilter
from txenvoy.runtime import RuntimeFractionalPercent

from txenvoy.http.filter_config import (
    RouteSpecificConfigs,
    WorkerStats,
    httpStatPrefix,
    snapshotSource,
)

__all__ = ["CorsPolicy", "CorsConfig", "CorsFilter", "compileCorsPolicy", "createCors"]

_NAME = "envoy.filters.http.cors"
_CORS_POLICY = "envoy.extensions.filters.http.cors.v3.CorsPolicy"

ORIGIN = b"origin"
REQUEST_METHOD = b"access-control-request-method"
REQUEST_HEADERS = b"access-control-request-headers"
REQUEST_PRIVATE_NETWORK = b"access-control-request-private-network"
ALLOW_ORIGIN = b"access-control-allow-origin"
ALLOW_CREDENTIALS = b"access-control-allow-credentials"
ALLOW_METHODS = b"access-control-allow-methods"
ALLOW_HEADERS = b"access-control-allow-headers"
MAX_AGE = b"access-control-max-age"
EXPOSE_HEADERS = b"access-control-expose-headers"
ALLOW_PRIVATE_NETWORK = b"access-control-allow-private-network"

_POLICY_FIELDS = frozenset((
    "allow_origin_string_match", "allow_methods", "allow_headers", "expose_headers", "max_age",
    "allow_credentials", "filter_enabled", "shadow_enabled", "allow_private_network_access",
    "forward_not_matching_preflights"))


class CorsPolicy:
    """
    One compiled C{CorsPolicy} (of the CORS extension or of the route
    API, which have the same fields).

    Unset optional booleans are C{None}, so that a less specific policy
    can supply them.
    """

    __slots__ = ("allowOrigins", "allowMethods", "allowHeaders", "exposeHeaders", "maxAge",
                 "allowCredentials", "allowPrivateNetworkAccess", "forwardNotMatchingPreflights",
                 "filterEnabled", "shadowEnabled")

    def __init__(self, message, path="cors"):
        checkFields(message, _POLICY_FIELDS, path)
        self.allowOrigins = tuple(
            compileStringMatcher(m, "%s.allow_origin_string_match[%d]" % (path, i))
            for i, m in enumerate(message.allow_origin_string_match))
        self.allowMethods = message.allow_methods.encode("utf-8")
        self.allowHeaders = message.allow_headers.encode("utf-8")
        self.exposeHeaders = message.expose_headers.encode("utf-8")
        self.maxAge = message.max_age.encode("utf-8")
        self.allowCredentials = _optionalBool(message, "allow_credentials")
        self.allowPrivateNetworkAccess = _optionalBool(message, "allow_private_network_access")
        self.forwardNotMatchingPreflights = _optionalBool(message,
                                                          "forward_not_matching_preflights")
        self.filterEnabled = (RuntimeFractionalPercent(message.filter_enabled)
                              if message.HasField("filter_enabled") else None)
        self.shadowEnabled = (RuntimeFractionalPercent(message.shadow_enabled)
                              if message.HasField("shadow_enabled") else None)

    def enabled(self, snapshot):
        """C{filter_enabled}, on when unset."""
        flag = self.filterEnabled
        return flag is None or flag.enabled(snapshot)

    def shadow(self, snapshot):
        """C{shadow_enabled}, off when unset."""
        flag = self.shadowEnabled
        return flag is not None and flag.enabled(snapshot)


def _optionalBool(message, field):
    return getattr(message, field).value if message.HasField(field) else None


def compileCorsPolicy(message, path="cors"):
    """Compile a C{CorsPolicy} message into a L{CorsPolicy}."""
    return CorsPolicy(message, path)


compileCorsPolicy.takesPath = True


def _first(policies, attribute, default):
    # Envoy: the most specific policy that sets the field wins.
    for policy in policies:
        value = getattr(policy, attribute)
        if value:
            return value
    return default


def _firstOptional(policies, attribute, default):
    for policy in policies:
        value = getattr(policy, attribute)
        if value is not None:
            return value
    return default


@implementer(IHttpFilterFactory)
class CorsConfig:
    """
    A compiled C{Cors}; the filter factory.

    @ivar snapshot: C{snapshot()} giving the runtime snapshot.
    """

    terminal = False

    def __init__(self, statPrefix, snapshot):
        self.snapshot = snapshot
        prefix = statPrefix + "cors."
        self.stats = WorkerStats({"origin_valid": prefix + "origin_valid",
                                  "origin_invalid": prefix + "origin_invalid"})
        self.routeConfigs = RouteSpecificConfigs(_NAME, (_CORS_POLICY,), compileCorsPolicy)
        # The deprecated route-level policies (envoy.config.route.v3.CorsPolicy).
        self.legacyPolicies = RouteSpecificConfigs(
            _NAME, ("envoy.config.route.v3.CorsPolicy",), compileCorsPolicy)

    def policiesFor(self, callbacks):
        """The policies of the request's route, most specific first."""
        policies = self.routeConfigs.all(callbacks)
        if policies:
            return policies
        route = callbacks.route()
        found = []
        for holder in (route.entry, route.virtualHost):
            message = getattr(holder, "cors", None)
            if message is not None:
                policy = self.legacyPolicies.compiled(message)
                if policy is not None:
                    found.append(policy)
        return found

    def createFilter(self, callbacks):
        """@return: a L{CorsFilter} for one request."""
        return CorsFilter(self, callbacks)


@implementer(IStreamDecoderFilter, IStreamEncoderFilter)
class CorsFilter(ConfiguredFilter):
    """The CORS filter of one request (both directions)."""

    _policies = ()
    _origin = None
    _corsRequest = False

    def decodeHeaders(self, headers, endStream):
        entries = headers.headers
        origin = entries.get(ORIGIN)
        # Envoy looks at the policies first; without an origin nothing
        # comes of it, so the cheap test goes first.
        if not origin:
            return FilterHeadersStatus.Continue
        callbacks = self.callbacks
        route = callbacks.route()
        # Redirects and direct responses have no route entry in Envoy.
        if route is None or route.entry.isDirectResponse:
            return FilterHeadersStatus.Continue
        config = self.config
        policies = config.policiesFor(callbacks)
        if not policies:
            return FilterHeadersStatus.Continue
        snapshot = config.snapshot()
        first = policies[0]
        enabled = first.enabled(snapshot)
        if not enabled and not first.shadow(snapshot):
            return FilterHeadersStatus.Continue
        stats = config.stats.forDispatcher(callbacks.dispatcher)
        allowed = False
        for match in _first(policies, "allowOrigins", ()):
            if match(b"*") or match(origin):
                allowed = True
                break
        if allowed:
            stats.origin_valid.inc()
            self._origin = origin
        else:
            stats.origin_invalid.inc()
        if not enabled:
            return FilterHeadersStatus.Continue
        self._corsRequest = True
        self._policies = policies
        if headers.method != b"OPTIONS":
            return FilterHeadersStatus.Continue
        requestMethod = entries.get(REQUEST_METHOD)
        if not requestMethod:
            return FilterHeadersStatus.Continue
        if not allowed and _firstOptional(policies, "forwardNotMatchingPreflights", True):
            return FilterHeadersStatus.Continue
        self._preflight(entries, policies, origin if allowed else None, requestMethod)
        return FilterHeadersStatus.StopIteration

    def _preflight(self, entries, policies, origin, requestMethod):
        """Answer a preflight request (CORS 6.2)."""
        reply = []
        if origin is not None:
            reply.append((ALLOW_ORIGIN, origin))
        if _firstOptional(policies, "allowCredentials", False):
            reply.append((ALLOW_CREDENTIALS, b"true"))
        methods = _first(policies, "allowMethods", b"")
        if methods:
            reply.append((ALLOW_METHODS, requestMethod if methods == b"*" else methods))
        allowHeaders = _first(policies, "allowHeaders", b"")
        if allowHeaders:
            if allowHeaders == b"*":
                allowHeaders = entries.get(REQUEST_HEADERS) or b""
            reply.append((ALLOW_HEADERS, allowHeaders))
        maxAge = _first(policies, "maxAge", b"")
        if maxAge:
            reply.append((MAX_AGE, maxAge))
        if (_firstOptional(policies, "allowPrivateNetworkAccess", False)
                and entries.get(REQUEST_PRIVATE_NETWORK) == b"true"):
            reply.append((ALLOW_PRIVATE_NETWORK, b"true"))
        callbacks = self.callbacks
        callbacks.streamInfo.responseCodeDetails = "cors_response"
        callbacks.encodeHeaders(ResponseHeaders(200, HeaderMap(reply)), True)

    def encodeHeaders(self, headers, endStream):
        origin = self._origin
        if not self._corsRequest or origin is None:
            return FilterHeadersStatus.Continue
        entries = headers.headers
        policies = self._policies
        entries.set(ALLOW_ORIGIN, origin)
        if _firstOptional(policies, "allowCredentials", False):
            entries.set(ALLOW_CREDENTIALS, b"true")
        expose = _first(policies, "exposeHeaders", b"")
        if expose:
            entries.set(EXPOSE_HEADERS, expose)
        return FilterHeadersStatus.Continue


@extension(Category.HTTP_FILTER, "envoy.extensions.filters.http.cors.v3.Cors", _NAME)
def createCors(message, context):
    """Compile a C{Cors} message (it has no fields: policies live on routes)."""
    config = CorsConfig(httpStatPrefix(context), snapshotSource(context))
    config.stats.declare(context)
    return config
