# -*- test-case-name: tests.router.test_vhost_matcher -*-
"""
A virtual host's C{matcher} (Envoy's sublinear routing): the unified
matcher (C{xds.type.matcher.v3.Matcher}) picks the routes to try by
request header values, from exact or prefix maps, instead of trying every
route in order.

Each action is an C{envoy.config.route.v3.Route} or a
C{envoy.config.route.v3.RouteList}, compiled as the virtual host's own
routes are; the routes an action gives are then matched as usual, so a
C{Route} whose own C{match} does not hold gives no route (Envoy's 404 with
C{NR}), as Envoy 1.40 does. The tree is compiled once, by the matcher
compiler the RBAC filters use (L{txenvoy.rbac.matcher.compileMatcher});
its inputs are the request's headers (C{HttpRequestHeaderMatchInput}).
"""

from txenvoy.config.errors import ConfigError, UnsupportedExtension
from txenvoy.config.registry import typeNameOf, unpackAny
from txenvoy.rbac.matcher import compileMatcher, headerInput

_HEADER_INPUT = "envoy.type.matcher.v3.HttpRequestHeaderMatchInput"
_ROUTE = "envoy.config.route.v3.Route"
_ROUTE_LIST = "envoy.config.route.v3.RouteList"


class RouteMatcherInput:
    """What a virtual host matcher's inputs read from a request."""

    __slots__ = ("headers", "authority", "path", "method")

    def __init__(self, headers, authority, path, method):
        self.headers = headers
        self.authority = authority
        self.path = path
        self.method = method


def _input(typed, path):
    typeName = typeNameOf(typed.typed_config)
    if typeName != _HEADER_INPUT:
        # Envoy refuses every other input here, the query parameter too.
        raise ConfigError(
            "requirement violation while creating route match tree: INVALID_ARGUMENT: Route "
            "table can only match on request headers, saw %s @ %s.typed_config"
            % (typed.typed_config.type_url, path))
    config = unpackAny(typed.typed_config, path + ".typed_config")
    return headerInput(config.header_name.lower().encode("utf-8"))


def compileVirtualHostMatcher(matcher, path, compileRoutes):
    """
    Compile a virtual host's C{matcher}.

    @param compileRoutes: C{(routes, path) -> rows}: the virtual host's
        own route compiler, for the C{Route} messages of an action.
    @return: C{input -> rows or None}, for a L{RouteMatcherInput}.
    """

    def action(typed, apath):
        typeName = typeNameOf(typed.typed_config)
        cpath = apath + ".typed_config"
        if typeName == _ROUTE:
            return compileRoutes([unpackAny(typed.typed_config, cpath)], cpath, single=True)
        if typeName == _ROUTE_LIST:
            return compileRoutes(unpackAny(typed.typed_config, cpath).routes, cpath + ".routes")
        raise UnsupportedExtension(cpath, typeName, typed.name)

    return compileMatcher(matcher, path, _input, action)
