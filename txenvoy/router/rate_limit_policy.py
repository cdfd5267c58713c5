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

Other actions, C{limit} overrides and C{apply_on_stream_done} are refused
with their path. Everything is compiled once, with the route.
"""

from txenvoy.config.errors import ConfigError, UnsupportedField
from txenvoy.config.fields import checkFields
from txenvoy.router.matcher import compileHeaderMatchers, matchHeaders

__all__ = ["RateLimitPolicyEntry", "compileRateLimits"]

_ACTIONS = ("source_cluster", "destination_cluster", "request_headers", "remote_address",
            "generic_key", "header_value_match")


class RateLimitPolicyEntry:
    """
    One compiled C{RateLimit}.

    @ivar stage: C{stage}.
    @ivar disableKey: C{disable_key} (runtime is not read).
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

    def __init__(self, headers, remoteAddress, clusterName, localServiceCluster):
        self.headers = headers
        self.remoteAddress = remoteAddress
        self.clusterName = clusterName
        self.localServiceCluster = localServiceCluster


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
