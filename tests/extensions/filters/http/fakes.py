"""
The HTTP filter tests' names for L{txenvoy.testing}'s fakes, plus routes
compiled from YAML and a helper compiling a filter from the YAML of its
C{typed_config} without C{@type}.

    config = compileFilter(FAULT, "abort: {http_status: 503, percentage: {numerator: 100}}")
    callbacks = FakeCallbacks(config)
    f = config.createFilter(callbacks)
    f.decodeHeaders(request("GET", "/"), True)
    callbacks.localReplies[0].code        # 503
"""

import os

import yaml

from envoy.config.route.v3 import route_pb2
from txenvoy.config.loader import parseDict
from txenvoy.config.registry import loadPlugins
from txenvoy.http.filter import filterRoles
from txenvoy.http.headers import HeaderMap
from txenvoy.router.config import RouteTable
from txenvoy.testing.http_filter import (  # noqa: F401 (the tests' names for them)
    FILTER_PATH as PATH,
    FakeDownstreamConnection as FakeConnection,
    FakeServer,
    FakeSsl,
    FakeStreamFilterCallbacks as FakeCallbacks,
    LocalReply,
    compileHttpFilter,
    makeFactoryContext as makeContext,
    makeHttpFilter,
    requestHeaders as request,
    responseHeaders as response,
    runtimeWith,
    structValue,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))))
EXAMPLES = os.path.join(os.path.dirname(REPO), "shared", "envoy-examples")

FAULT = "envoy.extensions.filters.http.fault.v3.HTTPFault"
HEALTH_CHECK = "envoy.extensions.filters.http.health_check.v3.HealthCheck"
CORS = "envoy.extensions.filters.http.cors.v3.Cors"
LOCAL_RATELIMIT = "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
BUFFER = "envoy.extensions.filters.http.buffer.v3.Buffer"
HEADER_TO_METADATA = "envoy.extensions.filters.http.header_to_metadata.v3.Config"
RBAC = "envoy.extensions.filters.http.rbac.v3.RBAC"

_FILTER_NAMES = {
    FAULT: "envoy.filters.http.fault",
    HEALTH_CHECK: "envoy.filters.http.health_check",
    CORS: "envoy.filters.http.cors",
    LOCAL_RATELIMIT: "envoy.filters.http.local_ratelimit",
    BUFFER: "envoy.filters.http.buffer",
    HEADER_TO_METADATA: "envoy.filters.http.header_to_metadata",
    RBAC: "envoy.filters.http.rbac",
}


def compileFilter(typeName, text="{}", context=None):
    """
    Compile an HTTP filter from the YAML of its C{typed_config} (without
    C{@type}) through the registry, as the connection manager does.
    """
    typed = dict(yaml.safe_load(text) or {})
    typed["@type"] = "type.googleapis.com/" + typeName
    return compileHttpFilter(typed, _FILTER_NAMES.get(typeName, typeName), context)


def routeTable(text):
    """Compile a C{RouteConfiguration} given as YAML."""
    loadPlugins()
    config = parseDict(yaml.safe_load(text), route_pb2.RouteConfiguration())
    return RouteTable.fromProto(config, "route_config")


def routeFor(table, path, method=b"GET", authority=b"example.com", headers=()):
    """The L{RouteMatch} of a request in a compiled table."""
    if isinstance(table, str):
        table = routeTable(table)
    return table.route(authority, path, HeaderMap(list(headers)), method)


def makeFilter(config, typeName=None, **kw):
    """
    A filter from C{config} with fresh L{FakeCallbacks} (its
    C{filterConfigName} is the filter's usual name).

    @return: C{(filter, callbacks)}.
    """
    kw.setdefault("filterConfigName", _FILTER_NAMES.get(typeName, ""))
    return makeHttpFilter(config, **kw)


def roles(filter_):
    """C{(isDecoder, isEncoder)}, as the connection manager decides them."""
    return filterRoles(filter_)
