# -*- test-case-name: tests.router.test_rate_limit_policy -*-
"""
A route's and a virtual host's C{rate_limits}: each C{RateLimit} turns a
request into one rate limit descriptor (a list of C{(key, value)}
entries) for the rate limit service, as Envoy's C{RateLimitPolicyEntryImpl}
does.

Actions, in order, each adding one entry (Envoy 1.40's keys):

 - C{source_cluster}: C{("source_cluster", <node.cluster>)};
 - C{destination_cluster}: C{("destination_cluster", <route's cluster>)};
 - C{request_headers}: C{(descriptor_key, <first value>)}; an absent header
   drops the whole descriptor unless C{skip_if_absent}, which skips the
   action;
 - C{remote_address}: C{("remote_address", <downstream IP>)};
 - C{generic_key}: C{(descriptor_key or "generic_key", descriptor_value)};
 - C{header_value_match}: C{(descriptor_key or "header_match",
   descriptor_value)} when the C{headers} match as C{expect_match} (true
   by default) says, else the descriptor is dropped.

 - C{masked_remote_address}: C{("masked_remote_address", "<network>/<len>")},
   the downstream address masked to C{v4_prefix_mask_len} (32) or
   C{v6_prefix_mask_len} (128) bits;
 - C{query_parameters}: C{(descriptor_key, <value>)} of the first
   parameter of that name; absent drops the descriptor unless
   C{skip_if_absent};
 - C{query_parameter_value_match}: C{(descriptor_key or "query_match",
   descriptor_value)} when the C{query_parameters} matchers match as
   C{expect_match} says, else the descriptor is dropped;
 - C{metadata}: C{(descriptor_key, <string>)} read at C{metadata_key} in
   the request's dynamic metadata (C{source: DYNAMIC}) or the route's
   (C{ROUTE_ENTRY}), else C{default_value}, else the descriptor is
   dropped unless C{skip_if_absent}.

C{dynamic_metadata} (deprecated), C{extension} actions, C{limit}
overrides and C{apply_on_stream_done} are refused with their path.
Everything is compiled once, with the route.
"""

import ipaddress

from google.protobuf import json_format

from txenvoy.config.errors import ConfigError, UnsupportedField
from txenvoy.config.fields import checkFields
from txenvoy.router.matcher import (
    compileHeaderMatchers,
    compileQueryParameterMatcher,
    matchHeaders,
    parseQueryParameters,
)

__all__ = ["RateLimitPolicyEntry", "compileRateLimits"]

_ACTIONS = ("source_cluster", "destination_cluster", "request_headers", "remote_address",
            "generic_key", "header_value_match", "masked_remote_address", "query_parameters",
            "query_parameter_value_match", "metadata")


class RateLimitPolicyEntry:
    """
    One compiled C{RateLimit}.

    @ivar stage: C{stage}.
    @ivar disableKey: C{disable_key}: the filter skips the entry when the
        runtime's C{ratelimit.<disable_key>.http_filter_enabled} says so.
    @ivar hitsAddend: C{hits_addend} when set, else C{None}.
    """

    def __init__(self, stage, disableKey, actions, hitsAddend):
        self.stage = stage
        self.disableKey = disableKey
        self._actions = actions
        self.hitsAddend = hitsAddend

    def descriptor(self, request):
        """
        @param request: a L{DescriptorInput}.
        @return: C{[(key, value)]} (C{str}), or C{None} when an action
            drops the descriptor.
        """
        entries = []
        for action in self._actions:
            if not action(request, entries):
                return None
        return entries or None


class DescriptorInput:
    """
    What the actions read of one request: C{headers} (a
    L{txenvoy.http.headers.RequestHeaders} or C{None} at L4), the
    C{remoteAddress} C{(ip, port)}, the route's C{clusterName} and the
    node's C{localServiceCluster}.
    """

    def __init__(self, headers, remoteAddress, clusterName, localServiceCluster,
                 dynamicMetadata=None, routeMetadata=None):
        """
        @param dynamicMetadata: the request's dynamic metadata
            (C{{namespace: {...}}}).
        @param routeMetadata: the route's C{metadata} message, or C{None}.
        """
        self.headers = headers
        self.remoteAddress = remoteAddress
        self.clusterName = clusterName
        self.localServiceCluster = localServiceCluster
        self.dynamicMetadata = dynamicMetadata or {}
        self.routeMetadata = routeMetadata


def _sourceCluster(request, entries):
    entries.append(("source_cluster", request.localServiceCluster))
    return True


def _destinationCluster(request, entries):
    if not request.clusterName:
        return False
    entries.append(("destination_cluster", request.clusterName))
    return True


def _remoteAddress(request, entries):
    address = request.remoteAddress
    if not address:
        return False
    entries.append(("remote_address", address[0]))
    return True


def _requestHeaders(message):
    name = message.header_name.lower().encode("latin-1")
    key = message.descriptor_key
    skip = message.skip_if_absent

    def action(request, entries):
        head = request.headers
        value = None
        if head is not None:
            if name == b":authority":
                value = head.authority
            elif name == b":path":
                value = head.path
            elif name == b":method":
                value = head.method
            else:
                value = head.headers.get(name)
        if value is None:
            return skip
        entries.append((key, value.decode("latin-1")))
        return True

    return action


def _genericKey(message):
    entry = (message.descriptor_key or "generic_key", message.descriptor_value)

    def action(request, entries):
        entries.append(entry)
        return True

    return action


def _headerValueMatch(message, path):
    matchers = compileHeaderMatchers(message.headers, path + ".headers")
    entry = (message.descriptor_key or "header_match", message.descriptor_value)
    expect = message.expect_match.value if message.HasField("expect_match") else True

    def action(request, entries):
        head = request.headers
        matched = head is not None and matchHeaders(
            matchers, head.headers, head.authority, head.path, head.method)
        if matched != expect:
            return False
        entries.append(entry)
        return True

    return action


def _maskedRemoteAddress(message):
    v4 = message.v4_prefix_mask_len.value if message.HasField("v4_prefix_mask_len") else 32
    v6 = message.v6_prefix_mask_len.value if message.HasField("v6_prefix_mask_len") else 128

    def action(request, entries):
        address = request.remoteAddress
        if not address:
            return False
        try:
            ip = ipaddress.ip_address(address[0])
        except ValueError:
            return False
        length = v4 if ip.version == 4 else v6
        network = ipaddress.ip_network("%s/%d" % (ip, length), strict=False)
        entries.append(("masked_remote_address", str(network)))
        return True

    return action


def _query(request):
    head = request.headers
    if head is None or head.path is None:
        return {}
    return parseQueryParameters(head.path)


def _queryParameters(message):
    name = message.query_parameter_name.encode("utf-8")
    key = message.descriptor_key
    skip = message.skip_if_absent

    def action(request, entries):
        value = _query(request).get(name)
        if value is None:
            return skip
        entries.append((key, value.decode("latin-1")))
        return True

    return action


def _queryParameterValueMatch(message, path):
    matchers = tuple(compileQueryParameterMatcher(q, "%s.query_parameters[%d]" % (path, i))
                     for i, q in enumerate(message.query_parameters))
    entry = (message.descriptor_key or "query_match", message.descriptor_value)
    expect = message.expect_match.value if message.HasField("expect_match") else True

    def action(request, entries):
        params = _query(request)
        matched = all(m.matches(params) for m in matchers)
        if matched != expect:
            return False
        entries.append(entry)
        return True

    return action


def _metadataValue(namespaces, namespace, keys):
    value = namespaces.get(namespace)
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value if isinstance(value, str) else None


def _metadata(message):
    key = message.descriptor_key
    namespace = message.metadata_key.key
    keys = tuple(segment.key for segment in message.metadata_key.path)
    default = message.default_value
    fromRoute = message.source == 1            # ROUTE_ENTRY
    skip = message.skip_if_absent

    def action(request, entries):
        if fromRoute:
            metadata = request.routeMetadata
            namespaces = {}
            if metadata is not None and namespace in metadata.filter_metadata:
                namespaces[namespace] = json_format.MessageToDict(
                    metadata.filter_metadata[namespace])
        else:
            namespaces = request.dynamicMetadata
        value = _metadataValue(namespaces, namespace, keys)
        if value:
            entries.append((key, value))
            return True
        if default:
            entries.append((key, default))
            return True
        return skip

    return action


def _compileAction(action, path):
    which = action.WhichOneof("action_specifier")
    if which not in _ACTIONS:
        raise UnsupportedField("%s.%s" % (path, which))
    message = getattr(action, which)
    if which == "source_cluster":
        return _sourceCluster
    if which == "destination_cluster":
        return _destinationCluster
    if which == "remote_address":
        return _remoteAddress
    if which == "request_headers":
        checkFields(message, ("header_name", "descriptor_key", "skip_if_absent"),
                    path + ".request_headers")
        if not message.header_name or not message.descriptor_key:
            raise ConfigError("%s.request_headers: header_name and descriptor_key are required"
                              % (path,))
        return _requestHeaders(message)
    if which == "masked_remote_address":
        checkFields(message, ("v4_prefix_mask_len", "v6_prefix_mask_len"),
                    path + ".masked_remote_address")
        return _maskedRemoteAddress(message)
    if which == "query_parameters":
        checkFields(message, ("query_parameter_name", "descriptor_key", "skip_if_absent"),
                    path + ".query_parameters")
        return _queryParameters(message)
    if which == "query_parameter_value_match":
        checkFields(message, ("descriptor_key", "descriptor_value", "expect_match",
                              "query_parameters"), path + ".query_parameter_value_match")
        return _queryParameterValueMatch(message, path + ".query_parameter_value_match")
    if which == "metadata":
        checkFields(message, ("descriptor_key", "metadata_key", "default_value", "source",
                              "skip_if_absent"), path + ".metadata")
        return _metadata(message)
    if which == "generic_key":
        checkFields(message, ("descriptor_value", "descriptor_key"), path + ".generic_key")
        if not message.descriptor_value:
            raise ConfigError("%s.generic_key.descriptor_value: value length must be at least 1 "
                              "characters" % (path,))
        return _genericKey(message)
    checkFields(message, ("descriptor_key", "descriptor_value", "expect_match", "headers"),
                path + ".header_value_match")
    return _headerValueMatch(message, path + ".header_value_match")


def compileRateLimits(rateLimits, path):
    """
    Compile a repeated C{RateLimit} field.

    @return: a tuple of L{RateLimitPolicyEntry}.
    """
    entries = []
    for i, rateLimit in enumerate(rateLimits):
        rpath = "%s[%d]" % (path, i)
        checkFields(rateLimit, ("stage", "disable_key", "actions", "hits_addend"), rpath)
        if not rateLimit.actions:
            raise ConfigError("%s.actions: value must contain at least 1 item(s)" % (rpath,))
        actions = tuple(_compileAction(a, "%s.actions[%d]" % (rpath, j))
                        for j, a in enumerate(rateLimit.actions))
        addend = None
        if rateLimit.HasField("hits_addend"):
            checkFields(rateLimit.hits_addend, ("number",), rpath + ".hits_addend")
            addend = rateLimit.hits_addend.number.value
        entries.append(RateLimitPolicyEntry(rateLimit.stage.value, rateLimit.disable_key,
                                            actions, addend))
    return tuple(entries)
