# -*- test-case-name: tests.router.test_config -*-
"""
Envoy's route table (C{RouteConfiguration}), compiled once when the config
loads into plain Python objects that route a request without touching a
protobuf message::

    table = RouteTable.fromProto(hcm.route_config, path, knownClusters)
    match = table.route(authority, path, headers, method)

Behaviour copied from Envoy 1.40 (C{source/common/router/config_impl.cc},
checked against the binary where marked in the tests):

Virtual hosts are chosen by C{domains}, case-insensitively: an exact domain
first, then the longest suffix wildcard (C{*.example.com},
C{*-bar.example.com}; never the bare C{example.com}), then the longest
prefix wildcard (C{foo.*}, and C{api.example.com:*} for any port), then
C{*}. The Host is matched with its port, so C{a.example.com:8080} does not
match C{a.example.com} unless C{ignore_port_in_host_matching} is set or the
caller strips the port (C{stripAnyHostPort}, the connection manager's
C{strip_any_host_port}). The virtual host chosen for a Host value is kept in
a small bounded cache.

Routes are tried in order and the first match wins. Path matching ignores
the query string and fragment; C{prefix}, C{path} and
C{path_separated_prefix} honour C{case_sensitive}; C{safe_regex} must
match the whole path. Header, query parameter and gRPC conditions must all
hold (see L{txenvoy.router.matcher}).

Header mutations: by default Envoy applies the route's, then the virtual
host's, then the route configuration's C{*_headers_to_add/remove}, so the
least specific level wins an overwrite; C{most_specific_header_mutations_wins}
reverses the order so the route wins. A weighted cluster's own mutations are
applied before all of them. (Checked on the binary: with all three levels
overwriting C{x-order}, the upstream and the client see the route
configuration's value.)
"""

import bisect
import os
import random
import weakref

from txenvoy.config import registry
from txenvoy.config.context import FactoryContext
from txenvoy.config.datasource import readDataSource
from txenvoy.config.errors import FAILED, ConfigError, UnsupportedField, attempt
from txenvoy.config.fields import checkFields, wholeMilliseconds
from txenvoy.http.header_mutation import EMPTY, HeaderMutations, compileHeaderMutation
from txenvoy.router.matcher import (
    compileHeaderMatchers,
    compileQueryParameterMatcher,
    queryOf,
)
from txenvoy.regex import compileRegexMatcher, compileRegexRewrite
from txenvoy.router.internal_redirect import compileInternalRedirectPolicy
from txenvoy.router.rate_limit_policy import compileRateLimits
from txenvoy.router.vhost_matcher import RouteMatcherInput, compileVirtualHostMatcher
from txenvoy.tracing.http_tracer import compileDecorator, compileRouteTracing
from txenvoy.upstream.metadata_match import mergeCriteria, metadataCriteria
from txenvoy.upstream.retry_host_selection import compilePredicates, compileRetryPriority

__all__ = [
    "RouteTable",
    "RouteMatch",
    "RouteEntry",
    "VirtualHost",
    "WeightedCluster",
    "RetryPolicy",
    "HashPolicy",
    "DirectResponse",
    "DEFAULT_TIMEOUT",
    "DEFAULT_RETRY_POLICY",
]

#: Envoy's route timeout when C{timeout} is not set, in seconds.
DEFAULT_TIMEOUT = 15.0
#: Envoy's retry back-off base interval when C{retry_back_off} is not set.
DEFAULT_BASE_INTERVAL = 0.025
#: Envoy's C{max_direct_response_body_size_bytes} default.
DEFAULT_MAX_DIRECT_RESPONSE_BODY_SIZE = 4096

# How many distinct Host values keep their virtual host cached; past this
# the cache starts over, so a client sending random Hosts cannot grow it.
# Longer Host values are matched each time and never kept, so the cache is
# bounded in bytes too (a Host may be as long as the whole request head).
_VHOST_CACHE_SIZE = 1024
_VHOST_CACHE_KEY_MAX = 256

# Retry conditions Envoy knows (RetryStateImpl::parseRetryOn and
# parseRetryGrpcOn); anything else in retry_on is ignored, as Envoy does.
_RETRY_ON = frozenset((
    "5xx", "gateway-error", "connect-failure", "envoy-ratelimited", "retriable-4xx",
    "refused-stream", "retriable-status-codes", "retriable-headers", "reset",
    "reset-before-request", "http3-post-connect-failure",
    "cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable",
))

_REDIRECT_CODES = {0: 301, 1: 302, 2: 303, 3: 307, 4: 308}
_CLUSTER_NOT_FOUND_CODES = {0: 503, 1: 404, 2: 500}
_TLS_REQUIREMENTS = {0: "NONE", 1: "EXTERNAL_ONLY", 2: "ALL"}
_PRIORITIES = {0: "DEFAULT", 1: "HIGH"}
_DENOMINATORS = {0: 100, 1: 10000, 2: 1000000}

# Fields of each message that this module compiles (or keeps, or knows to
# be irrelevant without the feature that reads them, such as tracing). Any
# other field that is set is rejected as unsupported rather than ignored.
_ROUTE_CONFIG_FIELDS = frozenset((
    "name", "virtual_hosts", "cluster_specifier_plugins", "internal_only_headers", "response_headers_to_add",
    "response_headers_to_remove", "request_headers_to_add", "request_headers_to_remove",
    "most_specific_header_mutations_wins", "validate_clusters",
    "max_direct_response_body_size_bytes", "ignore_port_in_host_matching",
    "ignore_path_parameters_in_path_matching", "typed_per_filter_config", "metadata",
))
_VHOST_FIELDS = frozenset((
    "name", "domains", "routes", "require_tls", "request_headers_to_add",
    "request_headers_to_remove", "response_headers_to_add", "response_headers_to_remove",
    "cors", "typed_per_filter_config", "include_request_attempt_count",
    "include_attempt_count_in_response", "include_is_timeout_retry_header", "retry_policy",
    "per_request_buffer_limit_bytes", "request_body_buffer_limit", "metadata", "matcher",
    "rate_limits",
))
_ROUTE_FIELDS = frozenset((
    "name", "match", "route", "redirect", "direct_response", "metadata", "decorator",
    "typed_per_filter_config", "request_headers_to_add", "request_headers_to_remove",
    "response_headers_to_add", "response_headers_to_remove", "tracing",
    "per_request_buffer_limit_bytes", "request_body_buffer_limit",
))
_MATCH_FIELDS = frozenset((
    "prefix", "path", "safe_regex", "path_separated_prefix", "case_sensitive",
    "runtime_fraction", "headers", "query_parameters", "grpc", "connect_matcher",
))
_ACTION_FIELDS = frozenset((
    "cluster", "cluster_header", "weighted_clusters", "cluster_not_found_response_code",
    "prefix_rewrite", "regex_rewrite", "host_rewrite_literal", "auto_host_rewrite",
    "host_rewrite_header", "host_rewrite_path_regex", "append_x_forwarded_host", "timeout",
    "idle_timeout", "flush_timeout", "retry_policy", "priority", "hash_policy", "cors",
    "max_grpc_timeout", "grpc_timeout_offset", "upgrade_configs", "max_stream_duration",
    "include_vh_rate_limits", "max_internal_redirects", "metadata_match",
    "request_mirror_policies", "rate_limits", "cluster_specifier_plugin",
    "inline_cluster_specifier_plugin", "internal_redirect_policy", "internal_redirect_action",
))
_WEIGHTED_FIELDS = frozenset(("clusters", "total_weight", "runtime_key_prefix", "header_name"))
_CLUSTER_WEIGHT_FIELDS = frozenset((
    "name", "cluster_header", "weight", "request_headers_to_add", "request_headers_to_remove",
    "response_headers_to_add", "response_headers_to_remove", "typed_per_filter_config",
    "host_rewrite_literal", "metadata_match",
))
_RETRY_FIELDS = frozenset((
    "retry_on", "num_retries", "per_try_timeout", "per_try_idle_timeout",
    "retry_host_predicate", "host_selection_retry_max_attempts", "retriable_status_codes",
    "retry_back_off", "retriable_headers", "retriable_request_headers",
    "rate_limited_retry_back_off", "retry_priority",
))
_REDIRECT_FIELDS = frozenset((
    "https_redirect", "scheme_redirect", "host_redirect", "port_redirect", "path_redirect",
    "prefix_rewrite", "regex_rewrite", "response_code", "strip_query",
))
_DIRECT_FIELDS = frozenset(("status", "body"))
_HASH_FIELDS = frozenset(("header", "cookie", "connection_properties", "query_parameter",
                          "filter_state", "terminal"))
_UPGRADE_FIELDS = frozenset(("upgrade_type", "enabled", "connect_config"))

_QUERY_OR_FRAGMENT = b"?#"
_SEPARATOR = b"/?#"


def _optionalSeconds(message, field):
    return wholeMilliseconds(getattr(message, field)) if message.HasField(field) else None


def _pathEnd(path):
    """Where the path proper ends: at the first C{?} or C{#}."""
    q = path.find(b"?")
    h = path.find(b"#")
    if q < 0:
        return len(path) if h < 0 else h
    return q if h < 0 or q < h else h


def getPortStart(host):
    """
    Envoy's C{HeaderUtility::getPortStart}: the index of the C{:} that
    starts the port of a Host value, or -1 (an IPv6 literal's colons are
    not a port).
    """
    colon = host.rfind(b":")
    if colon < 0:
        return -1
    bracket = host.rfind(b"]")
    if bracket < 0 or bracket < colon:
        return colon
    return -1


def _stripPort(host):
    colon = getPortStart(host)
    return host if colon < 0 else host[:colon]


def _processRequestHost(host, newScheme, newPort, requestProtocol):
    """
    Envoy's C{processRequestHost} for redirects: drop the request's port
    when the redirect sets one, or when the scheme changes away from the
    port's default (C{:80} for http, C{:443} for https).
    """
    if not host:
        return host
    if host[:1] == b"[":
        end = host.rfind(b"]:")
        if end >= 0:
            end += 1
    else:
        end = host.rfind(b":")
    if end >= 0:
        port = host[end:]
        remove = bool(newPort)
        if newScheme != requestProtocol:
            protocol = requestProtocol.lower()
            remove = remove or (protocol == b"https" and port == b":443")
            remove = remove or (protocol == b"http" and port == b":80")
        if remove:
            return host[:end]
    return host


class _Frozen:
    """Attribute holder that refuses assignment after construction."""

    __slots__ = ()

    def _init(self, **attributes):
        for name, value in attributes.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError("%s is immutable" % (type(self).__name__,))

    def __delattr__(self, name):
        raise AttributeError("%s is immutable" % (type(self).__name__,))


class RetryPolicy(_Frozen):
    """
    A compiled C{RetryPolicy}, with Envoy's defaults resolved.

    @ivar retryOn: the retry conditions, a frozenset of C{str}
        (C{"5xx"}, C{"connect-failure"}...); unknown names are dropped.
    @ivar numRetries: C{num_retries} (default 1).
    @ivar perTryTimeout: seconds, or 0 for none.
    @ivar perTryIdleTimeout: seconds, or 0 for none.
    @ivar baseInterval: back-off base in seconds (default 0.025).
    @ivar maxInterval: back-off cap in seconds (default 10 x base).
    @ivar retriableStatusCodes: a frozenset of ints.
    @ivar retriableHeaders: L{HeaderMatcher}s for response headers.
    @ivar retriableRequestHeaders: L{HeaderMatcher}s for request headers.
    @ivar hostSelectionRetryMaxAttempts: default 1.
    @ivar retryHostPredicates: the kinds of C{retry_host_predicate}
        (L{txenvoy.upstream.retry_host_selection}).
    @ivar retryPriorityUpdateFrequency: C{retry_priority}
        C{previous_priorities}' C{update_frequency}, or 0 without one.
    @ivar resetHeaders: C{rate_limited_retry_back_off.reset_headers} as
        C{(lowercase name bytes, "SECONDS" or "UNIX_TIMESTAMP")}, or C{()}.
    @ivar rateLimitedMaxInterval: its C{max_interval} in seconds (300).
    """

    __slots__ = (
        "retryOn", "numRetries", "perTryTimeout", "perTryIdleTimeout", "baseInterval",
        "maxInterval", "retriableStatusCodes", "retriableHeaders", "retriableRequestHeaders",
        "hostSelectionRetryMaxAttempts", "retryHostPredicates", "resetHeaders",
        "rateLimitedMaxInterval", "retryPriorityUpdateFrequency",
    )

    def __init__(self, retryOn=frozenset(), numRetries=1, perTryTimeout=0.0,
                 perTryIdleTimeout=0.0, baseInterval=DEFAULT_BASE_INTERVAL, maxInterval=None,
                 retriableStatusCodes=frozenset(), retriableHeaders=(),
                 retriableRequestHeaders=(), hostSelectionRetryMaxAttempts=1,
                 retryHostPredicates=(), resetHeaders=(), rateLimitedMaxInterval=300.0,
                 retryPriorityUpdateFrequency=0):
        self._init(
            retryOn=frozenset(retryOn), numRetries=numRetries, perTryTimeout=perTryTimeout,
            perTryIdleTimeout=perTryIdleTimeout, baseInterval=baseInterval,
            maxInterval=baseInterval * 10 if maxInterval is None else maxInterval,
            retriableStatusCodes=frozenset(retriableStatusCodes),
            retriableHeaders=tuple(retriableHeaders),
            retriableRequestHeaders=tuple(retriableRequestHeaders),
            hostSelectionRetryMaxAttempts=hostSelectionRetryMaxAttempts,
            retryHostPredicates=tuple(retryHostPredicates),
            retryPriorityUpdateFrequency=retryPriorityUpdateFrequency,
            resetHeaders=tuple(resetHeaders),
            rateLimitedMaxInterval=rateLimitedMaxInterval,
        )

    def __repr__(self):
        return "<RetryPolicy on=%s retries=%d>" % (sorted(self.retryOn), self.numRetries)


#: The policy of a route with no C{retry_policy} anywhere: no conditions, so
#: no retries unless the request asks (C{x-envoy-retry-on}).
DEFAULT_RETRY_POLICY = RetryPolicy()


class HashPolicy(_Frozen):
    """
    One compiled C{RouteAction.HashPolicy}, for a consistent-hash load
    balancer.

    @ivar kind: C{"header"}, C{"cookie"}, C{"source_ip"},
        C{"query_parameter"}, C{"filter_state"} or C{"none"} (a
        C{source_ip: false} that hashes nothing).
    @ivar name: header name (lower-case C{bytes}), cookie name (C{bytes}),
        query parameter name (C{bytes}) or filter state key (C{str});
        C{None} for C{source_ip}.
    @ivar terminal: stop at this policy when it yields a hash.
    @ivar rewrite: for C{header}, C{rewrite(bytes) -> bytes} from its
        C{regex_rewrite}, else C{None}.
    @ivar cookieTtl: whole seconds, or C{None} (no cookie is generated).
    @ivar cookiePath: the generated cookie's path, C{str}.
    @ivar cookieAttributes: C{((name, value), ...)}.
    """

    __slots__ = ("kind", "name", "terminal", "rewrite", "cookieTtl", "cookiePath",
                 "cookieAttributes")

    def __init__(self, kind, name=None, terminal=False, rewrite=None, cookieTtl=None,
                 cookiePath="", cookieAttributes=()):
        self._init(kind=kind, name=name, terminal=terminal, rewrite=rewrite,
                   cookieTtl=cookieTtl, cookiePath=cookiePath,
                   cookieAttributes=tuple(cookieAttributes))

    def __repr__(self):
        return "<HashPolicy %s %r>" % (self.kind, self.name)


class DirectResponse(_Frozen):
    """
    A C{direct_response}: the status and the body, read once at load.
    """

    __slots__ = ("status", "body")

    def __init__(self, status, body=b""):
        self._init(status=status, body=body)

    def __iter__(self):
        return iter((self.status, self.body))

    def __repr__(self):
        return "<DirectResponse %d %r>" % (self.status, self.body[:40])


class _Redirect(_Frozen):
    """A compiled C{RedirectAction}."""

    __slots__ = ("scheme", "host", "port", "path", "pathHasQuery", "prefixRewrite",
                 "regexRewrite", "stripQuery", "responseCode")

    def __init__(self, scheme, host, port, path, prefixRewrite, regexRewrite, stripQuery,
                 responseCode):
        self._init(scheme=scheme, host=host, port=port, path=path,
                   pathHasQuery=path is not None and b"?" in path,
                   prefixRewrite=prefixRewrite, regexRewrite=regexRewrite,
                   stripQuery=stripQuery, responseCode=responseCode)


def newUri(redirect, scheme, authority, path, forwardedProto=None, matchedSize=None):
    """
    Envoy's C{Http::Utility::newUri}: the URL a C{RedirectAction} (a
    compiled L{_Redirect}, or C{None} for none) makes of a request.

    @param scheme: the request's scheme (C{:scheme}), C{bytes}.
    @param authority: the request's Host, C{bytes}.
    @param path: the request's path with its query, C{bytes}.
    @param forwardedProto: C{x-forwarded-proto}, which decides whether a
        default port is dropped; C{scheme} when not given.
    @param matchedSize: how much of the path the route's match consumed
        (for C{prefix_rewrite}); the whole path when not given.
    @return: C{bytes}.
    """
    if forwardedProto is None:
        forwardedProto = scheme
    if redirect is None:
        host = _processRequestHost(authority or b"", scheme, b"", forwardedProto)
        if path[:1] != b"/":
            path = b"/" + path
        return b"%s://%s%s" % (scheme, host, path)
    if redirect.prefixRewrite is not None:
        size = matchedSize
        if size is None:
            size = _pathEnd(path)
        path = redirect.prefixRewrite + path[size:]
    elif redirect.regexRewrite is not None:
        end = _pathEnd(path)
        path = redirect.regexRewrite(path[:end]) + path[end:]
    finalScheme = redirect.scheme if redirect.scheme is not None else scheme
    port = redirect.port
    if redirect.host is not None:
        host = redirect.host
    else:
        host = _processRequestHost(authority or b"", finalScheme, port, forwardedProto)
    if redirect.path is not None:
        if redirect.pathHasQuery:
            path = redirect.path
        else:
            query = path.find(b"?")
            path = redirect.path if query < 0 else redirect.path + path[query:]
    if path[:1] != b"/":
        path = b"/" + path
    if redirect.stripQuery and not redirect.pathHasQuery:
        query = path.find(b"?")
        if query >= 0:
            path = path[:query]
    return b"%s://%s%s%s" % (finalScheme, host, port, path)


def compileRedirectAction(redirect, path):
    """Compile a C{RedirectAction} (a route's C{redirect}) into a L{_Redirect}."""
    checkFields(redirect, _REDIRECT_FIELDS, path)
    scheme = None
    which = redirect.WhichOneof("scheme_rewrite_specifier")
    if which == "https_redirect" and redirect.https_redirect:
        scheme = b"https"
    elif which == "scheme_redirect" and redirect.scheme_redirect:
        scheme = redirect.scheme_redirect.encode("utf-8")
    pathRewrite = redirect.WhichOneof("path_rewrite_specifier")
    regexRewrite = None
    if pathRewrite == "regex_rewrite":
        regexRewrite = compileRegexRewrite(redirect.regex_rewrite, path + ".regex_rewrite")
    return _Redirect(
        scheme=scheme,
        host=redirect.host_redirect.encode("utf-8") or None,
        port=b":%d" % (redirect.port_redirect,) if redirect.port_redirect else b"",
        path=(redirect.path_redirect.encode("utf-8")
              if pathRewrite == "path_redirect" and redirect.path_redirect else None),
        prefixRewrite=(redirect.prefix_rewrite.encode("utf-8")
                       if pathRewrite == "prefix_rewrite" and redirect.prefix_rewrite
                       else None),
        regexRewrite=regexRewrite,
        stripQuery=redirect.strip_query,
        responseCode=_REDIRECT_CODES[redirect.response_code],
    )


class WeightedCluster(_Frozen):
    """
    One cluster of C{weighted_clusters}.

    @ivar name: the cluster name (C{str}), or C{None} with C{clusterHeader}.
    @ivar clusterHeader: lower-case header name (C{bytes}) naming the
        cluster, or C{None}.
    @ivar weight: its weight.
    @ivar hostRewriteLiteral: C{bytes} or C{None}.
    @ivar requestHeadersMutations: this cluster's mutations followed by the
        route's chain (L{HeaderMutations}).
    @ivar responseHeadersMutations: likewise for the response.
    @ivar perFilterConfig: C{{filterName: google.protobuf.Any}}.
    @ivar metadataMatch: the route's C{metadata_match} criteria merged with
        this cluster's (see L{txenvoy.upstream.metadata_match}), or C{None}.
    """

    __slots__ = ("name", "clusterHeader", "weight", "hostRewriteLiteral",
                 "requestHeadersMutations", "responseHeadersMutations", "perFilterConfig",
                 "_requestLevel", "_responseLevel", "metadataMatch")

    def clusterName(self, headers):
        """
        @return: the cluster name, C{str}, or C{None} when it comes from a
            header the request does not carry.
        """
        if self.clusterHeader is None:
            return self.name
        return _headerClusterName(headers, self.clusterHeader)

    def __repr__(self):
        return "<WeightedCluster %r weight=%d>" % (self.name or self.clusterHeader, self.weight)


def _headerClusterName(headers, name):
    # Envoy uses the first value only: the header is untrusted input.
    value = headers.get(name)
    if not value:
        return None
    return value.decode("utf-8", "surrogateescape")


class VirtualHost(_Frozen):
    """
    A compiled C{VirtualHost}.

    @ivar name: C{str}.
    @ivar domains: the configured domains, C{str}.
    @ivar routes: the L{RouteEntry}s, in order.
    @ivar requireTls: C{"NONE"}, C{"EXTERNAL_ONLY"} or C{"ALL"}.
    @ivar perFilterConfig: C{{filterName: google.protobuf.Any}}, raw; the
        filter that owns an entry unpacks it.
    @ivar cors: the (deprecated) C{cors} policy message, or C{None}.
    @ivar retryPolicy: the virtual host's L{RetryPolicy}, or C{None}.
    @ivar requestHeadersMutation: this level's L{HeaderMutation}.
    @ivar responseHeadersMutation: this level's L{HeaderMutation}.
    @ivar routeTable: the L{RouteTable} it belongs to.
    @ivar rateLimits: the C{rate_limits}, L{RateLimitPolicyEntry}s.
    """

    __slots__ = (
        "name", "domains", "routes", "requireTls", "perFilterConfig", "cors", "retryPolicy",
        "requestHeadersMutation", "responseHeadersMutation", "includeRequestAttemptCount",
        "includeAttemptCountInResponse", "includeIsTimeoutRetryHeader",
        "perRequestBufferLimitBytes", "requestBodyBufferLimit", "metadata", "_tableRef",
        "rateLimits", "_table", "_sslRedirect", "_matcher", "__weakref__",
    )

    @property
    def routeTable(self):
        # A weak reference up: a strong one would make a reference cycle
        # with the table's own, and a replaced route configuration would
        # wait for a collection of the whole heap to be freed
        # (txenvoy.server.gc_freeze). A RouteMatch holds the table.
        return self._tableRef()

    def __repr__(self):
        return "<VirtualHost %r>" % (self.name,)


# Marks a value not looked up yet (None is a valid answer).
_UNKNOWN = object()

# Path match kinds, tested inline in RouteTable.route.
_PREFIX, _EXACT, _PREFIX_CI, _EXACT_CI, _SEPARATED, _SEPARATED_CI, _REGEX, _NEVER, _CONNECT = \
    range(9)


class RouteEntry(_Frozen):
    """
    A compiled C{Route}: what to do with a request that matched it.

    Forwarding routes (C{route}) carry the cluster, timeouts, retries and
    rewrites; C{redirect} and C{direct_response} routes carry
    L{redirectLocation} and L{directResponse}.

    @ivar name: the route's C{name}, C{str}.
    @ivar virtualHost: its L{VirtualHost}.
    @ivar pathSpecifier: C{(kind, value)}, e.g. C{("prefix", "/v1/")}.
    @ivar cluster: the static cluster name, C{str}, or C{None}.
    @ivar clusterHeader: lower-case header name for C{cluster_header}, or
        C{None}.
    @ivar weightedClusters: a tuple of L{WeightedCluster}, or C{None}.
    @ivar clusterSpecifier: the L{txenvoy.interfaces.IClusterSpecifierPlugin}
        of C{inline_cluster_specifier_plugin} / C{cluster_specifier_plugin},
        or C{None}.
    @ivar totalWeight: the sum of the weights (C{total_weight} is ignored,
        as in Envoy 1.40).
    @ivar clusterNotFoundResponseCode: 503 (default), 404 or 500.
    @ivar timeout: seconds; 0 disables the route timeout.
    @ivar idleTimeout: seconds, or C{None}.
    @ivar retryPolicy: a L{RetryPolicy} (the virtual host's when the route
        has none; L{DEFAULT_RETRY_POLICY} when neither has one).
    @ivar prefixRewrite: C{bytes} or C{None}.
    @ivar regexRewrite: C{rewrite(pathBytes) -> bytes} or C{None}.
    @ivar hostRewriteLiteral: C{bytes} or C{None}.
    @ivar autoHostRewrite: whether the upstream host's name replaces Host.
    @ivar hostRewriteHeader: lower-case header name, or C{None}.
    @ivar hashPolicies: a tuple of L{HashPolicy}.
    @ivar upgradeMap: C{{upgradeType (lower-case bytes): enabled}}.
    @ivar connectConfig: a CONNECT is terminated here (a TCP tunnel).
    @ivar connectAllowPost: so is a POST (C{connect_config.allow_post}).
    @ivar isRedirect: this is a C{redirect} route.
    @ivar directResponse: a L{DirectResponse} for C{direct_response}, else
        C{None}.
    @ivar isDirectResponse: a C{redirect} or C{direct_response} route
        (nothing is forwarded).
    @ivar responseCode: the status of a redirect or direct response.
    @ivar addsLocation: the response gets a C{location} header
        (L{redirectLocation}): every redirect, and a direct response with a
        3xx or 201 status, as in Envoy.
    @ivar requestHeadersMutations: L{HeaderMutations} in Envoy's order.
    @ivar responseHeadersMutations: L{HeaderMutations} in Envoy's order.
    @ivar perFilterConfig: C{{filterName: google.protobuf.Any}}, raw.
    @ivar decorator: a L{txenvoy.tracing.http_tracer.Decorator}, or C{None}.
    @ivar tracing: a L{txenvoy.tracing.http_tracer.RouteTracing}, or C{None}.
    @ivar metadataMatch: the C{metadata_match} criteria for subset load
        balancing (L{txenvoy.upstream.metadata_match}), or C{None}.
    @ivar internalRedirectPolicy: a
        L{txenvoy.router.internal_redirect.InternalRedirectPolicy}, or
        C{None} (upstream redirects go to the client).
    @ivar routerOptions: the route has retries, a per-try timeout, gRPC or
        stream duration timeouts, an idle timeout, an internal redirect
        policy, mirrors, request header mutations, rewrites, CONNECT
        termination or weighted clusters: computed once, so the router
        tests them only for such routes.
    """

    __slots__ = (
        "name", "_vhostRef", "pathSpecifier", "caseSensitive", "cluster", "clusterHeader",
        "clusterSpecifier",
        "weightedClusters", "totalWeight", "clusterNotFoundResponseCode", "timeout",
        "idleTimeout", "flushTimeout", "maxStreamDuration", "grpcTimeoutHeaderMax",
        "grpcTimeoutHeaderOffset", "maxGrpcTimeout", "grpcTimeoutOffset", "retryPolicy",
        "prefixRewrite", "regexRewrite", "hostRewriteLiteral", "autoHostRewrite",
        "hostRewriteHeader", "hostRewritePathRegex", "appendXForwardedHost", "hashPolicies",
        "upgradeMap", "connectConfig", "connectAllowPost", "isRedirect", "redirect",
        "directResponse", "isDirectResponse",
        "responseCode", "addsLocation", "requestHeadersMutations",
        "responseHeadersMutations", "perFilterConfig", "cors", "metadata", "priority",
        "includeVhRateLimits", "perRequestBufferLimitBytes", "requestBodyBufferLimit",
        "requestHeadersMutation", "responseHeadersMutation", "decorator", "tracing",
        "metadataMatch", "mirrorPolicies", "rateLimits", "internalRedirectPolicy",
        "_matchedSize", "_weightEnds",
        "_randomHeader", "_rng", "routerOptions",
    )

    def _init(self, **attributes):
        _Frozen._init(self, **attributes)
        policy = self.retryPolicy
        # Whether the router has more to do for this route than send it
        # with its timeout: one test per request for the common route.
        object.__setattr__(self, "routerOptions", bool(
            self.weightedClusters is not None or policy.retryOn or policy.perTryTimeout
            or self.maxGrpcTimeout is not None or self.grpcTimeoutHeaderMax is not None
            or self.maxStreamDuration is not None or self.idleTimeout is not None
            or self.internalRedirectPolicy is not None or self.mirrorPolicies
            or self.requestHeadersMutations or self.prefixRewrite is not None
            or self.regexRewrite is not None or self.hostRewriteLiteral is not None
            or self.hostRewriteHeader is not None or self.hostRewritePathRegex is not None
            or self.autoHostRewrite or self.connectConfig))

    @property
    def virtualHost(self):
        # Weak, as VirtualHost.routeTable; a RouteMatch holds the table.
        return self._vhostRef()

    def clusterName(self, headers):
        """
        The cluster to forward to, for forwarding routes.

        For C{weighted_clusters} this picks one at random (prefer
        L{RouteMatch.clusterName}, picked once per request).

        @return: C{str}, or C{None} (no cluster: a direct response, or a
            C{cluster_header} the request does not carry).
        """
        if self.cluster is not None:
            return self.cluster
        if self.clusterHeader is not None:
            return _headerClusterName(headers, self.clusterHeader)
        if self.clusterSpecifier is not None:
            return self.clusterSpecifier.clusterName(headers)
        if self.weightedClusters is not None:
            return self._pickWeighted(headers).clusterName(headers)
        return None

    def _pickWeighted(self, headers):
        ends = self._weightEnds
        total = ends[-1]
        selected = None
        if self._randomHeader is not None:
            values = headers.getAll(self._randomHeader)
            # Envoy only trusts a single, numeric value.
            if len(values) == 1 and values[0].isdigit():
                selected = int(values[0]) % total
        if selected is None:
            selected = int(self._rng() * total)
            if selected >= total:
                selected = total - 1
        return self.weightedClusters[bisect.bisect_right(ends, selected)]

    def rewritePath(self, path):
        """
        Apply C{prefix_rewrite} (to the matched prefix: the route's prefix
        or path, or the whole path for a regex route) or C{regex_rewrite}
        (to the path without its query, which is kept).

        @return: the path to send upstream, C{bytes} (C{path} itself when
            there is no rewrite).
        """
        prefix = self.prefixRewrite
        if prefix is not None:
            size = self._matchedSize
            if size is None:
                size = _pathEnd(path)
            return prefix + path[size:]
        rewrite = self.regexRewrite
        if rewrite is not None:
            end = _pathEnd(path)
            return rewrite(path[:end]) + path[end:]
        return path

    def rewriteHost(self, headers, path):
        """
        The Host to send upstream from C{host_rewrite_literal},
        C{host_rewrite_header} or C{host_rewrite_path_regex}.

        @return: C{bytes}, or C{None} to keep the request's Host (or, with
            L{autoHostRewrite}, to use the upstream host's name).
        """
        if self.hostRewriteLiteral is not None:
            return self.hostRewriteLiteral
        if self.hostRewriteHeader is not None:
            return headers.get(self.hostRewriteHeader) or None
        if self.hostRewritePathRegex is not None:
            end = _pathEnd(path)
            return self.hostRewritePathRegex(path[:end]) or None
        return None

    def upgradeEnabled(self, upgradeType):
        """
        @param upgradeType: lower-case C{bytes} (C{b"websocket"}).
        @return: C{True} or C{False} when the route configures it, else
            C{None} (the connection manager's C{upgrade_configs} decide).
        """
        return self.upgradeMap.get(upgradeType)

    def redirectLocation(self, scheme, authority, path, forwardedProto=None):
        """
        The C{location} header Envoy sends for this redirect (or for a
        direct response with a 3xx or 201 status), as Envoy's
        C{Http::Utility::newUri} builds it.

        @param scheme: the request's scheme (C{:scheme}), C{bytes}.
        @param authority: the request's Host, C{bytes}.
        @param path: the request's path with its query, C{bytes}.
        @param forwardedProto: C{x-forwarded-proto}, which decides whether a
            default port is dropped; C{scheme} when not given.
        @return: C{bytes}.
        """
        return newUri(self.redirect, scheme, authority, path, forwardedProto,
                      self._matchedSize)

    def __repr__(self):
        kind, value = self.pathSpecifier
        return "<RouteEntry %r %s=%r>" % (self.name, kind, value)


def _entryDefaults(name, vhost):
    """The attributes of a L{RouteEntry} before its action is compiled."""
    return dict(
        name=name,
        _vhostRef=weakref.ref(vhost),
        pathSpecifier=("prefix", ""),
        caseSensitive=True,
        cluster=None, clusterHeader=None, weightedClusters=None, totalWeight=0,
        clusterSpecifier=None, clusterNotFoundResponseCode=503,
        timeout=0.0, idleTimeout=None, flushTimeout=None, maxStreamDuration=None,
        grpcTimeoutHeaderMax=None, grpcTimeoutHeaderOffset=None, maxGrpcTimeout=None,
        grpcTimeoutOffset=None,
        retryPolicy=DEFAULT_RETRY_POLICY,
        prefixRewrite=None, regexRewrite=None, hostRewriteLiteral=None,
        autoHostRewrite=False, hostRewriteHeader=None, hostRewritePathRegex=None,
        appendXForwardedHost=False, hashPolicies=(), upgradeMap={}, connectConfig=False,
        connectAllowPost=False,
        isRedirect=False, redirect=None, directResponse=None, isDirectResponse=False,
        responseCode=None, addsLocation=False,
        requestHeadersMutation=None, responseHeadersMutation=None,
        requestHeadersMutations=EMPTY, responseHeadersMutations=EMPTY,
        perFilterConfig={}, cors=None, metadata=None, decorator=None, tracing=None,
        metadataMatch=None, mirrorPolicies=(), internalRedirectPolicy=None,
        priority="DEFAULT", includeVhRateLimits=False, rateLimits=(),
        perRequestBufferLimitBytes=vhost.perRequestBufferLimitBytes,
        requestBodyBufferLimit=vhost.requestBodyBufferLimit,
        _matchedSize=None, _weightEnds=None,
        _randomHeader=None, _rng=None,
    )


class _SslRedirectEntry(RouteEntry):
    """
    The route Envoy answers with when a virtual host's C{require_tls} is not
    met: a 301 to the same Host and path over https, with no header
    mutations.
    """

    __slots__ = ()

    def __init__(self, virtualHost):
        attributes = _entryDefaults("", virtualHost)
        attributes.update(isRedirect=True, isDirectResponse=True, responseCode=301,
                          addsLocation=True)
        self._init(**attributes)

    def redirectLocation(self, scheme, authority, path, forwardedProto=None):
        """
        Envoy's C{createSslRedirectPath}: C{https://<Host><path>}, the Host
        kept as it is (port included).
        """
        return b"https://%s%s" % (authority or b"", path)


class RouteMatch:
    """
    The result of L{RouteTable.route}.

    @ivar entry: the L{RouteEntry}.
    @ivar virtualHost: the L{VirtualHost}.
    @ivar clusterName: the cluster picked for this request (C{str}), or
        C{None} (direct response, or a missing C{cluster_header}).
    @ivar weightedCluster: the picked L{WeightedCluster}, or C{None}.
    @ivar routeTable: the L{RouteTable}: a match keeps its whole route
        configuration alive (its parts point up to it weakly).
    """

    __slots__ = ("entry", "virtualHost", "clusterName", "weightedCluster", "routeTable")

    @property
    def metadataMatch(self):
        """
        The request's C{metadata_match} criteria: the weighted cluster's
        (merged with the route's) or the route's, or C{None}.
        """
        weighted = self.weightedCluster
        if weighted is not None:
            return weighted.metadataMatch
        return self.entry.metadataMatch

    def __init__(self, entry, virtualHost, clusterName=None, weightedCluster=None,
                 routeTable=None):
        self.entry = entry
        self.virtualHost = virtualHost
        self.clusterName = clusterName
        self.weightedCluster = weightedCluster
        self.routeTable = routeTable if routeTable is not None else virtualHost.routeTable

    def rewritePath(self, path):
        """See L{RouteEntry.rewritePath}."""
        return self.entry.rewritePath(path)

    def redirectLocation(self, scheme, authority, path, forwardedProto=None):
        """See L{RouteEntry.redirectLocation}."""
        return self.entry.redirectLocation(scheme, authority, path, forwardedProto)

    @property
    def requestHeadersMutations(self):
        """The L{HeaderMutations} for the request, weighted cluster first."""
        weighted = self.weightedCluster
        if weighted is not None:
            return weighted.requestHeadersMutations
        return self.entry.requestHeadersMutations

    @property
    def responseHeadersMutations(self):
        """The L{HeaderMutations} for the response, weighted cluster first."""
        weighted = self.weightedCluster
        if weighted is not None:
            return weighted.responseHeadersMutations
        return self.entry.responseHeadersMutations

    def rewriteHost(self, headers, path):
        """
        See L{RouteEntry.rewriteHost}; falls back to the weighted cluster's
        C{host_rewrite_literal}.
        """
        host = self.entry.rewriteHost(headers, path)
        if host is None and self.weightedCluster is not None:
            host = self.weightedCluster.hostRewriteLiteral
        return host

    def perFilterConfigs(self, filterName):
        """
        Every C{typed_per_filter_config} entry for C{filterName}, least
        specific first (route configuration, virtual host, route, weighted
        cluster), as Envoy's C{perFilterConfigs} lists them.
        """
        found = []
        table = self.routeTable
        for holder in (table, self.virtualHost, self.entry, self.weightedCluster):
            if holder is not None:
                config = holder.perFilterConfig.get(filterName)
                if config is not None:
                    found.append(config)
        return found

    def mostSpecificPerFilterConfig(self, filterName):
        """The most specific entry of L{perFilterConfigs}, or C{None}."""
        found = self.perFilterConfigs(filterName)
        return found[-1] if found else None

    def __repr__(self):
        return "<RouteMatch %r %r cluster=%r>" % (
            self.virtualHost.name, self.entry.name, self.clusterName)


class RouteTable:
    """
    A compiled C{RouteConfiguration}. Build with L{fromProto}.

    @ivar name: the route configuration's name.
    @ivar virtualHosts: the L{VirtualHost}s, in config order.
    @ivar internalOnlyHeaders: lower-case C{bytes} names.
    @ivar requestHeadersMutation: this level's L{HeaderMutation}.
    @ivar responseHeadersMutation: this level's L{HeaderMutation}.
    @ivar mostSpecificHeaderMutationsWins: the config flag.
    @ivar perFilterConfig: C{{filterName: google.protobuf.Any}}, raw.
    """

    def __init__(self):
        self.name = ""
        self.virtualHosts = ()
        self.internalOnlyHeaders = ()
        self.requestHeadersMutation = None
        self.responseHeadersMutation = None
        self.mostSpecificHeaderMutationsWins = False
        self.ignorePortInHostMatching = False
        self.ignorePathParametersInPathMatching = False
        self.perFilterConfig = {}
        self._exact = {}
        self._suffixes = ()
        self._prefixes = ()
        self._default = None
        self._onlyDefault = False
        self._vhostCache = {}

    @classmethod
    def fromProto(cls, routeConfiguration, path, knownClusters=None, rng=random.random):
        """
        Compile an C{envoy.config.route.v3.RouteConfiguration}.

        @param path: the config path of the message, for error messages
            (C{static_resources.listeners[0]...typed_config.route_config}).
        @param knownClusters: the names of the configured clusters; a route
            naming a static cluster that is not among them is an error
            (unless C{validate_clusters} is false). C{None} skips the check.
        @param rng: C{rng() -> float in [0, 1)} used to pick weighted
            clusters.
        @raise ConfigError: for anything Envoy rejects, with its message.
        @raise UnsupportedField: for a field txenvoy cannot honour.
        """
        return _Compiler(routeConfiguration, path, knownClusters, rng).compile(cls())

    # -- virtual host selection ------------------------------------------------

    def virtualHostFor(self, authority):
        """
        @param authority: the Host value, C{bytes}, or C{None}.
        @return: the L{VirtualHost} serving it, or C{None}.
        """
        if self._onlyDefault:
            return self._default
        if authority is None:
            return None
        cache = self._vhostCache
        try:
            return cache[authority]
        except KeyError:
            pass
        vhost = self._findVirtualHost(authority)
        if len(authority) > _VHOST_CACHE_KEY_MAX:
            return vhost
        if len(cache) >= _VHOST_CACHE_SIZE:
            cache.clear()
        cache[authority] = vhost
        return vhost

    def _findVirtualHost(self, authority):
        host = authority
        if self.ignorePortInHostMatching:
            host = _stripPort(host)
        host = host.lower()
        vhost = self._exact.get(host)
        if vhost is not None:
            return vhost
        size = len(host)
        for length, domains in self._suffixes:
            # ">=": "*.foo.com" does not match ".foo.com".
            if length < size:
                vhost = domains.get(host[size - length:])
                if vhost is not None:
                    return vhost
        for length, domains in self._prefixes:
            if length < size:
                vhost = domains.get(host[:length])
                if vhost is not None:
                    return vhost
        return self._default

    # -- routing ---------------------------------------------------------------

    def route(self, authority, path, headers, method, stripAnyHostPort=False):
        """
        Find the route for a request.

        @param authority: the Host (C{:authority}), C{bytes} or C{None}.
        @param path: the path with its query, C{bytes}.
        @param headers: the request's header map: C{get(name)} and
            C{getAll(name)} with lower-case C{bytes} names.
        @param method: C{bytes}.
        @param stripAnyHostPort: drop any port from C{authority} first (the
            connection manager's C{strip_any_host_port}).
        @return: a L{RouteMatch}, or C{None} when no virtual host or route
            matches (Envoy's 404 C{NR}).
        """
        if stripAnyHostPort and authority:
            authority = _stripPort(authority)
        if self._onlyDefault:
            vhost = self._default
        else:
            vhost = self._vhostCache.get(authority, _UNKNOWN)
            if vhost is _UNKNOWN:
                vhost = self.virtualHostFor(authority)
        if vhost is None:
            return None
        table = vhost._table
        if path is None:
            # Envoy's supportsPathlessHeaders: only a CONNECT route matches
            # a request without a path.
            if method != b"CONNECT":
                return None
            table = [row for row in table if row[0] == _CONNECT]
            path = b""
        if vhost._sslRedirect is not None:
            if self._needsSslRedirect(vhost, headers):
                return RouteMatch(vhost._sslRedirect, vhost, None, None, self)
        matchPath = path
        if self.ignorePathParametersInPathMatching:
            semicolon = path.find(b";")
            if semicolon >= 0:
                matchPath = path[:semicolon]
        pathOnly = None
        query = _UNKNOWN
        if vhost._matcher is not None:
            # Sublinear routing: the matcher picks the routes to try.
            table = vhost._matcher(RouteMatcherInput(headers, authority, path, method))
            if table is None:
                return None
        for kind, pattern, size, headerMatchers, queryMatchers, grpc, entry in table:
            if kind == _PREFIX:
                if not matchPath.startswith(pattern):
                    continue
            elif kind == _EXACT:
                if not matchPath.startswith(pattern) or (
                        len(matchPath) != size and matchPath[size] not in _QUERY_OR_FRAGMENT):
                    continue
            elif kind == _REGEX:
                if pathOnly is None:
                    pathOnly = matchPath[:_pathEnd(matchPath)]
                if not pattern(pathOnly):
                    continue
            elif kind == _PREFIX_CI:
                if matchPath[:size].lower() != pattern:
                    continue
            elif kind == _EXACT_CI:
                if matchPath[:size].lower() != pattern or (
                        len(matchPath) != size and matchPath[size] not in _QUERY_OR_FRAGMENT):
                    continue
            elif kind == _SEPARATED:
                if not matchPath.startswith(pattern) or (
                        len(matchPath) != size and matchPath[size] not in _SEPARATOR):
                    continue
            elif kind == _SEPARATED_CI:
                if matchPath[:size].lower() != pattern or (
                        len(matchPath) != size and matchPath[size] not in _SEPARATOR):
                    continue
            elif kind == _CONNECT:
                if method != b"CONNECT":
                    continue
            else:
                continue
            if grpc and not _isGrpc(headers):
                continue
            if headerMatchers:
                for matcher in headerMatchers:
                    if not matcher.matches(headers, authority, path, method):
                        break
                else:
                    headerMatchers = None
                if headerMatchers is not None:
                    continue
            if queryMatchers:
                if query is _UNKNOWN:
                    query = queryOf(path)
                for matcher in queryMatchers:
                    if not matcher.matchesQuery(query):
                        break
                else:
                    queryMatchers = None
                if queryMatchers is not None:
                    continue
            if entry.cluster is not None or entry.isDirectResponse:
                return RouteMatch(entry, vhost, entry.cluster, None, self)
            return _dynamicMatch(entry, vhost, headers, self)
        return None

    def _needsSslRedirect(self, vhost, headers):
        scheme = headers.get(b"x-forwarded-proto") or b"http"
        if scheme == b"https":
            return False
        return not (vhost.requireTls == "EXTERNAL_ONLY"
                    and headers.get(b"x-envoy-internal") == b"true")

    def __repr__(self):
        return "<RouteTable %r vhosts=%d>" % (self.name, len(self.virtualHosts))


def _dynamicMatch(entry, vhost, headers, table):
    if entry.weightedClusters is not None:
        weighted = entry._pickWeighted(headers)
        return RouteMatch(entry, vhost, weighted.clusterName(headers), weighted, table)
    if entry.clusterSpecifier is not None:
        return RouteMatch(entry, vhost, entry.clusterSpecifier.clusterName(headers), None, table)
    return RouteMatch(entry, vhost, _headerClusterName(headers, entry.clusterHeader), None,
                      table)


def _isGrpc(headers):
    # Envoy's Grpc::Common::hasGrpcContentType: "application/grpc" exactly
    # or followed by "+" (so not application/grpc-web).
    contentType = headers.get(b"content-type")
    if contentType is None or not contentType.startswith(b"application/grpc"):
        return False
    return len(contentType) == 16 or contentType[16:17] == b"+"


# -- compilation -----------------------------------------------------------------


def compileHashPolicy(policy, path):
    """
    One C{RouteAction.HashPolicy} (of a route, or of a RingHash or Maglev
    policy's C{consistent_hashing_lb_config}) as a L{HashPolicy}.
    """
    checkFields(policy, _HASH_FIELDS, path)
    which = policy.WhichOneof("policy_specifier")
    terminal = policy.terminal
    if which == "header":
        header = policy.header
        rewrite = None
        if header.HasField("regex_rewrite"):
            rewrite = compileRegexRewrite(header.regex_rewrite, path + ".header.regex_rewrite")
        return HashPolicy("header", header.header_name.lower().encode("utf-8"), terminal,
                          rewrite)
    if which == "cookie":
        cookie = policy.cookie
        # Envoy keeps only the ttl's whole seconds.
        return HashPolicy(
            "cookie", cookie.name.encode("utf-8"), terminal,
            cookieTtl=cookie.ttl.seconds if cookie.HasField("ttl") else None,
            cookiePath=cookie.path,
            cookieAttributes=[(a.name, a.value) for a in cookie.attributes])
    if which == "connection_properties":
        if not policy.connection_properties.source_ip:
            # Envoy's source_ip: false hashes nothing.
            return HashPolicy("none", None, terminal)
        return HashPolicy("source_ip", None, terminal)
    if which == "query_parameter":
        return HashPolicy("query_parameter", policy.query_parameter.name.encode("utf-8"),
                          terminal)
    if which == "filter_state":
        return HashPolicy("filter_state", policy.filter_state.key, terminal)
    raise UnsupportedField("%s.%s" % (path, which or "policy_specifier"))


class _Compiler:
    """Turns one C{RouteConfiguration} into a L{RouteTable}."""

    def __init__(self, config, path, knownClusters, rng):
        self.config = config
        self.path = path
        self.rng = rng
        validate = not config.HasField("validate_clusters") or config.validate_clusters.value
        self.knownClusters = knownClusters if validate else None
        if config.HasField("max_direct_response_body_size_bytes"):
            self.maxBodySize = config.max_direct_response_body_size_bytes.value
        else:
            self.maxBodySize = DEFAULT_MAX_DIRECT_RESPONSE_BODY_SIZE

    def compile(self, table):
        config = self.config
        path = self.path
        checkFields(config, _ROUTE_CONFIG_FIELDS, path)
        table.name = config.name
        table.internalOnlyHeaders = tuple(
            h.lower().encode("utf-8") for h in config.internal_only_headers)
        table.requestHeadersMutation = compileHeaderMutation(
            config.request_headers_to_add, config.request_headers_to_remove,
            path + ".request_headers_to_add", path + ".request_headers_to_remove")
        table.responseHeadersMutation = compileHeaderMutation(
            config.response_headers_to_add, config.response_headers_to_remove,
            path + ".response_headers_to_add", path + ".response_headers_to_remove")
        table.mostSpecificHeaderMutationsWins = config.most_specific_header_mutations_wins
        table.ignorePortInHostMatching = config.ignore_port_in_host_matching
        table.ignorePathParametersInPathMatching = config.ignore_path_parameters_in_path_matching
        table.perFilterConfig = dict(config.typed_per_filter_config)
        self.clusterSpecifiers = {}
        for i, plugin in enumerate(config.cluster_specifier_plugins):
            where = "%s.cluster_specifier_plugins[%d]" % (path, i)
            self.clusterSpecifiers[plugin.extension.name] = self.compileClusterSpecifier(
                plugin, where)
        self.table = table
        vhosts = []
        exact = {}
        suffixes = {}
        prefixes = {}
        for v, vhostConfig in enumerate(config.virtual_hosts):
            vhostPath = "%s.virtual_hosts[%d]" % (path, v)
            vhost = attempt(self.compileVirtualHost, vhostConfig, vhostPath)
            if vhost is FAILED:
                continue
            vhosts.append(vhost)
            for d, domainName in enumerate(vhostConfig.domains):
                domain = domainName.encode("utf-8").lower()
                domainPath = "%s.domains[%d]" % (vhostPath, d)
                if domain == b"*":
                    if table._default is not None:
                        raise ConfigError(
                            "Only a single wildcard domain is permitted in route %s @ %s"
                            % (config.name, domainPath))
                    table._default = vhost
                    continue
                if domain[:1] == b"*":
                    bucket = suffixes.setdefault(len(domain) - 1, {})
                    key = domain[1:]
                elif domain[-1:] == b"*":
                    bucket = prefixes.setdefault(len(domain) - 1, {})
                    key = domain[:-1]
                else:
                    bucket = exact
                    key = domain
                if key in bucket:
                    raise ConfigError(
                        "Only unique values for domains are permitted. Duplicate entry of "
                        "domain %s in route %s @ %s"
                        % (domain.decode("utf-8"), config.name, domainPath))
                bucket[key] = vhost
        table.virtualHosts = tuple(vhosts)
        table._exact = exact
        table._suffixes = tuple(sorted(suffixes.items(), reverse=True))
        table._prefixes = tuple(sorted(prefixes.items(), reverse=True))
        table._onlyDefault = not (exact or suffixes or prefixes)
        return table

    # -- virtual hosts -----------------------------------------------------------

    def compileVirtualHost(self, config, path):
        checkFields(config, _VHOST_FIELDS, path)
        vhost = VirtualHost.__new__(VirtualHost)
        retryPolicy = None
        if config.HasField("retry_policy"):
            retryPolicy = self.compileRetryPolicy(config.retry_policy, path + ".retry_policy")
        requireTls = _TLS_REQUIREMENTS[config.require_tls]
        vhost._init(
            name=config.name,
            domains=tuple(config.domains),
            requireTls=requireTls,
            perFilterConfig=dict(config.typed_per_filter_config),
            cors=config.cors if config.HasField("cors") else None,
            retryPolicy=retryPolicy,
            requestHeadersMutation=compileHeaderMutation(
                config.request_headers_to_add, config.request_headers_to_remove,
                path + ".request_headers_to_add", path + ".request_headers_to_remove"),
            responseHeadersMutation=compileHeaderMutation(
                config.response_headers_to_add, config.response_headers_to_remove,
                path + ".response_headers_to_add", path + ".response_headers_to_remove"),
            includeRequestAttemptCount=config.include_request_attempt_count,
            includeAttemptCountInResponse=config.include_attempt_count_in_response,
            includeIsTimeoutRetryHeader=config.include_is_timeout_retry_header,
            perRequestBufferLimitBytes=(config.per_request_buffer_limit_bytes.value
                                        if config.HasField("per_request_buffer_limit_bytes")
                                        else None),
            requestBodyBufferLimit=(config.request_body_buffer_limit.value
                                    if config.HasField("request_body_buffer_limit") else None),
            metadata=config.metadata if config.HasField("metadata") else None,
            _tableRef=weakref.ref(self.table),
            rateLimits=compileRateLimits(config.rate_limits, path + ".rate_limits"),
        )
        # The redirect route's entry (its match is made per request).
        object.__setattr__(vhost, "_sslRedirect",
                           None if requireTls == "NONE" else _SslRedirectEntry(vhost))
        entries = []

        def compileRoutes(routes, rpath, single=False):
            table = []
            for r, routeConfig in enumerate(routes):
                compiled = attempt(self.compileRoute, routeConfig, vhost,
                                   rpath if single else "%s[%d]" % (rpath, r))
                if compiled is FAILED:
                    # Reported inside a collection of errors; the next route
                    # is checked.
                    continue
                entry, row = compiled
                entries.append(entry)
                table.append(row)
            return tuple(table)

        object.__setattr__(vhost, "_table", compileRoutes(config.routes, path + ".routes"))
        matcher = None
        if config.HasField("matcher"):
            matcher = compileVirtualHostMatcher(config.matcher, path + ".matcher",
                                                compileRoutes)
        object.__setattr__(vhost, "_matcher", matcher)
        object.__setattr__(vhost, "routes", tuple(entries))
        return vhost

    # -- routes ------------------------------------------------------------------

    def compileRoute(self, config, vhost, path):
        checkFields(config, _ROUTE_FIELDS, path)
        if not config.HasField("match"):
            raise ConfigError("Invalid route config: match is required @ %s.match" % (path,))
        action = config.WhichOneof("action")
        if action is None:
            raise ConfigError("Invalid route config: one of route, redirect or direct_response "
                              "is required @ %s" % (path,))
        entry = RouteEntry.__new__(RouteEntry)
        row, matchedSize, pathSpecifier, caseSensitive = self.compileMatch(
            config.match, entry, path + ".match")
        requestLevel = compileHeaderMutation(
            config.request_headers_to_add, config.request_headers_to_remove,
            path + ".request_headers_to_add", path + ".request_headers_to_remove")
        responseLevel = compileHeaderMutation(
            config.response_headers_to_add, config.response_headers_to_remove,
            path + ".response_headers_to_add", path + ".response_headers_to_remove")
        table = self.table
        if table.mostSpecificHeaderMutationsWins:
            requestChain = (table.requestHeadersMutation, vhost.requestHeadersMutation,
                            requestLevel)
            responseChain = (table.responseHeadersMutation, vhost.responseHeadersMutation,
                             responseLevel)
        else:
            requestChain = (requestLevel, vhost.requestHeadersMutation,
                            table.requestHeadersMutation)
            responseChain = (responseLevel, vhost.responseHeadersMutation,
                             table.responseHeadersMutation)
        attributes = _entryDefaults(config.name, vhost)
        attributes.update(
            pathSpecifier=pathSpecifier,
            caseSensitive=caseSensitive,
            requestHeadersMutation=requestLevel,
            responseHeadersMutation=responseLevel,
            requestHeadersMutations=HeaderMutations(requestChain),
            responseHeadersMutations=HeaderMutations(responseChain),
            perFilterConfig=dict(config.typed_per_filter_config),
            metadata=config.metadata if config.HasField("metadata") else None,
            _matchedSize=matchedSize,
            _rng=self.rng,
        )
        if config.HasField("per_request_buffer_limit_bytes"):
            attributes["perRequestBufferLimitBytes"] = config.per_request_buffer_limit_bytes.value
        if config.HasField("request_body_buffer_limit"):
            attributes["requestBodyBufferLimit"] = config.request_body_buffer_limit.value
        if config.HasField("decorator"):
            attributes["decorator"] = compileDecorator(config.decorator, path + ".decorator")
        if config.HasField("tracing"):
            attributes["tracing"] = compileRouteTracing(config.tracing, path + ".tracing")
        if action == "route":
            self.compileRouteAction(config.route, attributes, vhost, requestChain,
                                    responseChain, path + ".route")
        elif action == "redirect":
            self.compileRedirect(config.redirect, attributes, path + ".redirect")
        elif action == "direct_response":
            self.compileDirectResponse(config.direct_response, attributes,
                                       path + ".direct_response")
        else:
            raise UnsupportedField("%s.%s" % (path, action))
        entry._init(**attributes)
        return entry, row + (entry,)

    def compileMatch(self, match, entry, path):
        """
        @return: C{(row, matchedSize, pathSpecifier, caseSensitive)} where
            C{row} is the route's line of the virtual host's match table
            without the entry.
        """
        checkFields(match, _MATCH_FIELDS, path)
        caseSensitive = match.case_sensitive.value if match.HasField("case_sensitive") else True
        which = match.WhichOneof("path_specifier")
        if which is None:
            raise ConfigError("Invalid route config: one of prefix, path, safe_regex or "
                              "path_separated_prefix is required @ %s" % (path,))
        matchedSize = None
        if which == "connect_matcher":
            # Envoy's ConnectRouteEntryImpl: any CONNECT (not an extended
            # CONNECT), the only kind of route a request without a path
            # can match.
            kind, pattern, size = _CONNECT, None, 0
            specifier = ("connect_matcher", "")
        elif which == "safe_regex":
            kind, size = _REGEX, 0
            pattern = compileRegexMatcher(match.safe_regex, path + ".safe_regex")
            specifier = ("safe_regex", match.safe_regex.regex)
        else:
            text = getattr(match, which)
            specifier = (which, text)
            raw = text.encode("utf-8")
            size = matchedSize = len(raw)
            if b"?" in raw or b"#" in raw:
                # Envoy matches the path without its query and fragment, so
                # such a pattern can never match.
                kind, pattern = _NEVER, None
            elif which == "prefix":
                kind, pattern = (_PREFIX, raw) if caseSensitive else (_PREFIX_CI, raw.lower())
            elif which == "path":
                kind, pattern = (_EXACT, raw) if caseSensitive else (_EXACT_CI, raw.lower())
            else:
                kind, pattern = ((_SEPARATED, raw) if caseSensitive
                                 else (_SEPARATED_CI, raw.lower()))
        if match.HasField("runtime_fraction"):
            fraction = match.runtime_fraction.default_value
            if fraction.numerator < _DENOMINATORS[fraction.denominator]:
                raise UnsupportedField(path + ".runtime_fraction",
                                       "only a default_value of 100% is supported")
        headerMatchers = compileHeaderMatchers(match.headers, path + ".headers")
        queryMatchers = tuple(
            compileQueryParameterMatcher(q, "%s.query_parameters[%d]" % (path, i))
            for i, q in enumerate(match.query_parameters))
        row = (kind, pattern, size, headerMatchers or None, queryMatchers or None,
               match.HasField("grpc"))
        return row, matchedSize, specifier, caseSensitive

    def compileClusterSpecifier(self, plugin, path):
        """
        Build a C{ClusterSpecifierPlugin}'s extension (an
        L{IClusterSpecifierPlugin}).
        """
        checkFields(plugin, ("extension",), path)
        return registry.createExtension(registry.Category.CLUSTER_SPECIFIER, plugin.extension,
                                        FactoryContext(None, None, path=path),
                                        path + ".extension")

    def checkCluster(self, name, path, label="cluster"):
        if self.knownClusters is not None and name not in self.knownClusters:
            raise ConfigError("route: unknown %s '%s' @ %s" % (label, name, path))

    def compileRouteAction(self, action, attributes, vhost, requestChain, responseChain, path):
        checkFields(action, _ACTION_FIELDS, path)
        if action.HasField("metadata_match"):
            attributes["metadataMatch"] = metadataCriteria(action.metadata_match)
        which = action.WhichOneof("cluster_specifier")
        if which == "cluster":
            self.checkCluster(action.cluster, path + ".cluster")
            attributes["cluster"] = action.cluster
        elif which == "cluster_header":
            attributes["clusterHeader"] = action.cluster_header.lower().encode("utf-8")
        elif which == "weighted_clusters":
            self.compileWeighted(action.weighted_clusters, attributes, requestChain,
                                 responseChain, path + ".weighted_clusters")
        elif which == "inline_cluster_specifier_plugin":
            attributes["clusterSpecifier"] = self.compileClusterSpecifier(
                action.inline_cluster_specifier_plugin, path + ".inline_cluster_specifier_plugin")
        elif which == "cluster_specifier_plugin":
            plugin = self.clusterSpecifiers.get(action.cluster_specifier_plugin)
            if plugin is None:
                raise ConfigError("Unknown cluster specifier plugin name: %s is used in the "
                                  "route @ %s" % (action.cluster_specifier_plugin, path))
            attributes["clusterSpecifier"] = plugin
        elif which is None:
            raise ConfigError("Invalid route config: one of cluster, cluster_header or "
                              "weighted_clusters is required @ %s" % (path,))
        else:
            raise UnsupportedField("%s.%s" % (path, which))
        attributes["clusterNotFoundResponseCode"] = _CLUSTER_NOT_FOUND_CODES[
            action.cluster_not_found_response_code]
        rewrites = 0
        if action.prefix_rewrite:
            attributes["prefixRewrite"] = action.prefix_rewrite.encode("utf-8")
            rewrites += 1
        if action.HasField("regex_rewrite"):
            attributes["regexRewrite"] = compileRegexRewrite(action.regex_rewrite,
                                                             path + ".regex_rewrite")
            rewrites += 1
        if rewrites > 1:
            raise ConfigError("Specify only one of prefix_rewrite, regex_rewrite or "
                              "path_rewrite_policy @ %s" % (path,))
        host = action.WhichOneof("host_rewrite_specifier")
        if host == "host_rewrite_literal":
            attributes["hostRewriteLiteral"] = action.host_rewrite_literal.encode("utf-8")
        elif host == "auto_host_rewrite":
            attributes["autoHostRewrite"] = action.auto_host_rewrite.value
        elif host == "host_rewrite_header":
            attributes["hostRewriteHeader"] = action.host_rewrite_header.lower().encode("utf-8")
        elif host == "host_rewrite_path_regex":
            attributes["hostRewritePathRegex"] = compileRegexRewrite(
                action.host_rewrite_path_regex, path + ".host_rewrite_path_regex")
        attributes["appendXForwardedHost"] = action.append_x_forwarded_host
        attributes["timeout"] = (wholeMilliseconds(action.timeout) if action.HasField("timeout")
                                 else DEFAULT_TIMEOUT)
        attributes["idleTimeout"] = _optionalSeconds(action, "idle_timeout")
        attributes["flushTimeout"] = _optionalSeconds(action, "flush_timeout")
        attributes["maxGrpcTimeout"] = _optionalSeconds(action, "max_grpc_timeout")
        attributes["grpcTimeoutOffset"] = _optionalSeconds(action, "grpc_timeout_offset")
        if action.HasField("max_stream_duration"):
            duration = action.max_stream_duration
            attributes["maxStreamDuration"] = _optionalSeconds(duration, "max_stream_duration")
            attributes["grpcTimeoutHeaderMax"] = _optionalSeconds(
                duration, "grpc_timeout_header_max")
            attributes["grpcTimeoutHeaderOffset"] = _optionalSeconds(
                duration, "grpc_timeout_header_offset")
        if action.HasField("retry_policy"):
            attributes["retryPolicy"] = self.compileRetryPolicy(action.retry_policy,
                                                                path + ".retry_policy")
        elif vhost.retryPolicy is not None:
            attributes["retryPolicy"] = vhost.retryPolicy
        attributes["priority"] = _PRIORITIES.get(action.priority, "DEFAULT")
        attributes["hashPolicies"] = tuple(
            self.compileHashPolicy(h, "%s.hash_policy[%d]" % (path, i))
            for i, h in enumerate(action.hash_policy))
        upgrades = {}
        for i, upgrade in enumerate(action.upgrade_configs):
            upgradePath = "%s.upgrade_configs[%d]" % (path, i)
            checkFields(upgrade, _UPGRADE_FIELDS, upgradePath)
            key = upgrade.upgrade_type.lower().encode("utf-8")
            if key in upgrades:
                raise ConfigError("Duplicate upgrade %s @ %s.upgrade_type"
                                  % (upgrade.upgrade_type, upgradePath))
            upgrades[key] = upgrade.enabled.value if upgrade.HasField("enabled") else True
            if upgrade.HasField("connect_config"):
                connect = upgrade.connect_config
                checkFields(connect, ("allow_post",), upgradePath + ".connect_config")
                if key != b"connect":
                    raise ConfigError("connect_config is only for upgrade_type CONNECT @ %s"
                                      % (upgradePath + ".connect_config",))
                # Envoy terminates CONNECT here: a TCP connection to the host
                # (and, with allow_post, a POST's body relayed the same way).
                attributes["connectConfig"] = upgrades[key]
                attributes["connectAllowPost"] = upgrades[key] and connect.allow_post
        attributes["upgradeMap"] = upgrades
        if action.HasField("cors"):
            attributes["cors"] = action.cors
        if action.HasField("include_vh_rate_limits"):
            attributes["includeVhRateLimits"] = action.include_vh_rate_limits.value
        if action.rate_limits:
            attributes["rateLimits"] = compileRateLimits(action.rate_limits,
                                                         path + ".rate_limits")
        attributes["internalRedirectPolicy"] = compileInternalRedirectPolicy(
            action, attributes["name"], path)
        if action.request_mirror_policies:
            from txenvoy.router.shadow import compileMirrorPolicies
            attributes["mirrorPolicies"] = compileMirrorPolicies(
                action.request_mirror_policies, path + ".request_mirror_policies")

    def compileWeighted(self, weighted, attributes, requestChain, responseChain, path):
        checkFields(weighted, _WEIGHTED_FIELDS, path)
        clusters = []
        ends = []
        total = 0
        for i, clusterConfig in enumerate(weighted.clusters):
            clusterPath = "%s.clusters[%d]" % (path, i)
            checkFields(clusterConfig, _CLUSTER_WEIGHT_FIELDS, clusterPath)
            if clusterConfig.name:
                self.checkCluster(clusterConfig.name, clusterPath + ".name", "weighted cluster")
            elif not clusterConfig.cluster_header:
                raise ConfigError("At least one of name or cluster_header need to be specified "
                                  "@ %s" % (clusterPath,))
            weight = clusterConfig.weight.value if clusterConfig.HasField("weight") else 0
            total += weight
            ends.append(total)
            requestLevel = compileHeaderMutation(
                clusterConfig.request_headers_to_add, clusterConfig.request_headers_to_remove,
                clusterPath + ".request_headers_to_add",
                clusterPath + ".request_headers_to_remove")
            responseLevel = compileHeaderMutation(
                clusterConfig.response_headers_to_add, clusterConfig.response_headers_to_remove,
                clusterPath + ".response_headers_to_add",
                clusterPath + ".response_headers_to_remove")
            cluster = WeightedCluster.__new__(WeightedCluster)
            cluster._init(
                name=clusterConfig.name or None,
                clusterHeader=(clusterConfig.cluster_header.lower().encode("utf-8")
                               if not clusterConfig.name and clusterConfig.cluster_header
                               else None),
                weight=weight,
                hostRewriteLiteral=(clusterConfig.host_rewrite_literal.encode("utf-8")
                                    if clusterConfig.host_rewrite_literal else None),
                requestHeadersMutations=HeaderMutations((requestLevel,) + requestChain),
                responseHeadersMutations=HeaderMutations((responseLevel,) + responseChain),
                perFilterConfig=dict(clusterConfig.typed_per_filter_config),
                _requestLevel=requestLevel,
                _responseLevel=responseLevel,
                metadataMatch=mergeCriteria(
                    attributes.get("metadataMatch"),
                    metadataCriteria(clusterConfig.metadata_match)
                    if clusterConfig.HasField("metadata_match") else None),
            )
            clusters.append(cluster)
        if total == 0:
            raise ConfigError("Sum of weights in the weighted_cluster must be greater than 0. "
                              "@ %s" % (path,))
        if total > 0xFFFFFFFF:
            raise ConfigError("The sum of weights of all weighted clusters of route exceeds "
                              "4294967295 @ %s" % (path,))
        attributes["weightedClusters"] = tuple(clusters)
        attributes["totalWeight"] = total
        attributes["_weightEnds"] = tuple(ends)
        if weighted.header_name:
            attributes["_randomHeader"] = weighted.header_name.lower().encode("utf-8")

    def compileRetryPolicy(self, policy, path):
        checkFields(policy, _RETRY_FIELDS, path)
        retryOn = frozenset(
            token.strip() for token in policy.retry_on.split(",")
            if token.strip() in _RETRY_ON)
        baseInterval = DEFAULT_BASE_INTERVAL
        maxInterval = None
        if policy.HasField("retry_back_off"):
            backOff = policy.retry_back_off
            baseInterval = max(wholeMilliseconds(backOff.base_interval), 0.001)
            if backOff.HasField("max_interval"):
                maxInterval = max(wholeMilliseconds(backOff.max_interval), 0.001)
                if maxInterval < baseInterval:
                    raise ConfigError(
                        "retry_policy.max_interval must greater than or equal to the "
                        "base_interval @ %s.retry_back_off.max_interval" % (path,))
        return RetryPolicy(
            retryOn=retryOn,
            numRetries=policy.num_retries.value if policy.HasField("num_retries") else 1,
            perTryTimeout=_optionalSeconds(policy, "per_try_timeout") or 0.0,
            perTryIdleTimeout=_optionalSeconds(policy, "per_try_idle_timeout") or 0.0,
            baseInterval=baseInterval,
            maxInterval=maxInterval,
            retriableStatusCodes=policy.retriable_status_codes,
            retriableHeaders=compileHeaderMatchers(policy.retriable_headers,
                                                   path + ".retriable_headers"),
            retriableRequestHeaders=compileHeaderMatchers(policy.retriable_request_headers,
                                                          path + ".retriable_request_headers"),
            hostSelectionRetryMaxAttempts=policy.host_selection_retry_max_attempts or 1,
            retryHostPredicates=compilePredicates(policy.retry_host_predicate,
                                                  path + ".retry_host_predicate"),
            retryPriorityUpdateFrequency=compileRetryPriority(
                policy.retry_priority, path + ".retry_priority")
            if policy.HasField("retry_priority") else 0,
            **self._compileRateLimitedBackOff(policy, path)
        )

    def _compileRateLimitedBackOff(self, policy, path):
        if not policy.HasField("rate_limited_retry_back_off"):
            return {}
        rpath = path + ".rate_limited_retry_back_off"
        backOff = policy.rate_limited_retry_back_off
        checkFields(backOff, ("reset_headers", "max_interval"), rpath)
        headers = []
        for i, header in enumerate(backOff.reset_headers):
            checkFields(header, ("name", "format"), "%s.reset_headers[%d]" % (rpath, i))
            headers.append((header.name.lower().encode("latin-1"),
                            "UNIX_TIMESTAMP" if header.format == 1 else "SECONDS"))
        kw = {"resetHeaders": headers}
        if backOff.HasField("max_interval"):
            kw["rateLimitedMaxInterval"] = wholeMilliseconds(backOff.max_interval)
        return kw

    def compileHashPolicy(self, policy, path):
        return compileHashPolicy(policy, path)

    def compileRedirect(self, redirect, attributes, path):
        compiled = compileRedirectAction(redirect, path)
        attributes["redirect"] = compiled
        attributes.update(isRedirect=True, isDirectResponse=True,
                          responseCode=compiled.responseCode, addsLocation=True, timeout=0.0)

    def compileDirectResponse(self, direct, attributes, path):
        checkFields(direct, _DIRECT_FIELDS, path)
        body = b""
        if direct.HasField("body"):
            body = self.readBody(direct.body, path + ".body")
        status = direct.status
        attributes.update(
            directResponse=DirectResponse(status, body), isDirectResponse=True,
            responseCode=status, addsLocation=status == 201 or 300 <= status < 400,
            timeout=0.0)

    def readBody(self, source, path):
        maxSize = self.maxBodySize
        if source.WhichOneof("specifier") == "filename":
            filename = source.filename
            if not os.path.exists(filename):
                raise ConfigError("file %s does not exist @ %s.filename" % (filename, path))
            size = os.path.getsize(filename)
            if size > maxSize:
                raise ConfigError("file %s size is %d bytes; maximum is %d @ %s.filename"
                                  % (filename, size, maxSize, path))
        body = readDataSource(source, path)
        if len(body) > maxSize:
            raise ConfigError("response body size is %d bytes; maximum is %d @ %s"
                              % (len(body), maxSize, path))
        return body
