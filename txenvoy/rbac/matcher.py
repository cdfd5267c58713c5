# -*- test-case-name: tests.rbac.test_engine -*-
"""
RBAC with the unified matcher API (C{xds.type.matcher.v3.Matcher}): the
C{matcher} and C{shadow_matcher} fields of the RBAC filters, whose actions
are C{envoy.config.rbac.v3.Action}.

The matcher tree is compiled once into nested functions of one
L{txenvoy.rbac.engine.RbacInput} that return the chosen action or C{None}.
The semantics follow Envoy's C{MatchTree}:

  - a C{matcher_list} tries its field matchers in order; the first whose
    predicate holds and whose C{on_match} yields an action wins (a nested
    matcher that does not match lets the list go on), else C{on_no_match};
  - a C{matcher_tree} looks its input up in an exact or prefix map (longest
    prefix first) or in an C{IPMatcher} (most specific range first, less
    specific ones too unless C{exclusive});
  - an input with no value (no SNI, a missing header) matches nothing;
  - input values are bytes (a header sent on several lines is one value,
    joined with C{,}, as Envoy's header inputs give it);
  - when nothing matches and there is no C{on_no_match}, RBAC denies.
"""

import ipaddress

from txenvoy.config.errors import ConfigError, UnsupportedExtension, UnsupportedField
from txenvoy.config.fields import checkFields
from txenvoy.config.registry import typeNameOf, unpackAny
from txenvoy.router.matcher import HeaderMatcher, compileStringMatcher
from txenvoy.rbac.engine import ACTION_NAMES, ALLOW, DENY, LOG, compileCidr

_NETWORK_INPUTS = "envoy.extensions.matching.common_inputs.network.v3."
_HTTP_INPUTS = "envoy.type.matcher.v3."
_RBAC_ACTION = "envoy.config.rbac.v3.Action"
_IP_MATCHER = "xds.type.matcher.v3.IPMatcher"
_IP_INPUT_MATCHER = "envoy.extensions.matching.input_matchers.ip.v3.Ip"


class RbacAction:
    """
    A compiled C{envoy.config.rbac.v3.Action}.

    @ivar name: the action's name, reported as the matched policy.
    @ivar action: L{ALLOW}, L{DENY} or L{LOG}.
    """

    __slots__ = ("name", "action")

    def __init__(self, name, action):
        self.name = name
        self.action = action

    def __repr__(self):
        return "<RbacAction %s %s>" % (self.name, ACTION_NAMES.get(self.action, self.action))


class RbacMatcherEngine:
    """
    The RBAC engine of a unified matcher (Envoy's
    C{RoleBasedAccessControlMatcherEngineImpl}): the action found decides;
    no action found denies.
    """

    def __init__(self, tree):
        self._tree = tree

    def evaluate(self, input):
        """
        @param input: an L{txenvoy.rbac.engine.RbacInput}.
        @return: C{(allowed, actionName)}; the name is C{None} when no
            action matched.
        """
        action = self._tree(input)
        if action is None:
            return False, None
        return action.action in (ALLOW, LOG), action.name


def createMatcherEngine(matcher, path, network=False):
    """
    Compile an C{xds.type.matcher.v3.Matcher} whose actions are RBAC
    actions.

    @param network: C{True} for the network filter, which cannot match on
        HTTP inputs.
    @return: an L{RbacMatcherEngine}.
    """
    compileInput = _networkInput if network else _httpInput
    return RbacMatcherEngine(compileMatcher(matcher, path, compileInput, _rbacAction))


def compileMatcher(matcher, path, compileInput, compileAction):
    """
    Compile an C{xds.type.matcher.v3.Matcher} into a function
    C{input -> action or None}.

    @param compileInput: C{(TypedExtensionConfig, path) -> (input -> bytes
        or None)}.
    @param compileAction: C{(TypedExtensionConfig, path) -> action}.
    """
    onNoMatch = None
    if matcher.HasField("on_no_match"):
        onNoMatch = _compileOnMatch(matcher.on_no_match, path + ".on_no_match",
                                    compileInput, compileAction)
    which = matcher.WhichOneof("matcher_type")
    if which == "matcher_list":
        return _compileList(matcher.matcher_list, path + ".matcher_list", onNoMatch,
                            compileInput, compileAction)
    if which == "matcher_tree":
        return _compileTree(matcher.matcher_tree, path + ".matcher_tree", onNoMatch,
                            compileInput, compileAction)
    if onNoMatch is None:
        return lambda input: None
    return onNoMatch


def _compileOnMatch(onMatch, path, compileInput, compileAction):
    if onMatch.keep_matching:
        raise UnsupportedField(path + ".keep_matching")
    which = onMatch.WhichOneof("on_match")
    if which == "action":
        action = compileAction(onMatch.action, path + ".action")
        return lambda input: action
    if which == "matcher":
        return compileMatcher(onMatch.matcher, path + ".matcher", compileInput, compileAction)
    raise ConfigError("%s: OnMatchValidationError.OnMatch: value is required" % (path,))


def _compileList(matcherList, path, onNoMatch, compileInput, compileAction):
    entries = []
    for i, field in enumerate(matcherList.matchers):
        fpath = "%s.matchers[%d]" % (path, i)
        predicate = _compilePredicate(field.predicate, fpath + ".predicate", compileInput)
        onMatch = _compileOnMatch(field.on_match, fpath + ".on_match", compileInput,
                                  compileAction)
        entries.append((predicate, onMatch))
    entries = tuple(entries)

    def matchList(input):
        for predicate, onMatch in entries:
            if predicate(input):
                result = onMatch(input)
                if result is not None:
                    return result
        return onNoMatch(input) if onNoMatch is not None else None

    return matchList


def _compilePredicate(predicate, path, compileInput):
    which = predicate.WhichOneof("match_type")
    if which == "single_predicate":
        return _compileSingle(predicate.single_predicate, path + ".single_predicate",
                              compileInput)
    if which in ("or_matcher", "and_matcher"):
        parts = tuple(
            _compilePredicate(p, "%s.%s.predicate[%d]" % (path, which, i), compileInput)
            for i, p in enumerate(getattr(predicate, which).predicate))
        if which == "or_matcher":
            return lambda input: any(p(input) for p in parts)
        return lambda input: all(p(input) for p in parts)
    if which == "not_matcher":
        inner = _compilePredicate(predicate.not_matcher, path + ".not_matcher", compileInput)
        return lambda input: not inner(input)
    raise ConfigError("%s: PredicateValidationError.MatchType: value is required" % (path,))


def _compileSingle(single, path, compileInput):
    getValue = compileInput(single.input, path + ".input")
    which = single.WhichOneof("matcher")
    if which == "value_match":
        test = compileStringMatcher(single.value_match, path + ".value_match")
    elif which == "custom_match":
        test = _compileCustomInputMatcher(single.custom_match, path + ".custom_match")
    else:
        raise ConfigError("%s: SinglePredicateValidationError.Matcher: value is required"
                          % (path,))

    def matchSingle(input):
        value = getValue(input)
        return value is not None and test(value)

    return matchSingle


def _compileCustomInputMatcher(typed, path):
    typeName = typeNameOf(typed.typed_config)
    if typeName != _IP_INPUT_MATCHER:
        raise UnsupportedExtension(path + ".typed_config", typeName, typed.name)
    config = unpackAny(typed.typed_config, path + ".typed_config")
    networks = tuple(compileCidr(c, "%s.typed_config.cidr_ranges[%d]" % (path, i))
                     for i, c in enumerate(config.cidr_ranges))

    def matchIp(value):
        address = _ipOf(value)
        return address is not None and any(address in n for n in networks)

    return matchIp


def _compileTree(tree, path, onNoMatch, compileInput, compileAction):
    getValue = compileInput(tree.input, path + ".input")
    which = tree.WhichOneof("tree_type")
    fallback = onNoMatch if onNoMatch is not None else (lambda input: None)
    if which in ("exact_match_map", "prefix_match_map"):
        entries = getattr(tree, which).map
        table = {}
        for key in sorted(entries):
            table[key.encode("utf-8")] = _compileOnMatch(
                entries[key], "%s.%s.map[%s]" % (path, which, key), compileInput, compileAction)
        if which == "exact_match_map":
            def matchExact(input):
                value = getValue(input)
                onMatch = table.get(value) if value is not None else None
                if onMatch is not None:
                    result = onMatch(input)
                    if result is not None:
                        return result
                return fallback(input)

            return matchExact
        # Longest prefix first.
        prefixes = sorted(table.items(), key=lambda kv: -len(kv[0]))

        def matchPrefix(input):
            value = getValue(input)
            if value is not None:
                for prefix, onMatch in prefixes:
                    if value.startswith(prefix):
                        result = onMatch(input)
                        if result is not None:
                            return result
            return fallback(input)

        return matchPrefix
    if which == "custom_match":
        return _compileIpTree(tree.custom_match, path + ".custom_match", getValue, fallback,
                              compileInput, compileAction)
    raise ConfigError("%s: MatcherTreeValidationError.TreeType: value is required" % (path,))


def _compileIpTree(typed, path, getValue, fallback, compileInput, compileAction):
    typeName = typeNameOf(typed.typed_config)
    if typeName != _IP_MATCHER:
        raise UnsupportedExtension(path + ".typed_config", typeName, typed.name)
    config = unpackAny(typed.typed_config, path + ".typed_config")
    ranges = []
    for i, rm in enumerate(config.range_matchers):
        rpath = "%s.typed_config.range_matchers[%d]" % (path, i)
        onMatch = _compileOnMatch(rm.on_match, rpath + ".on_match", compileInput, compileAction)
        for j, cidr in enumerate(rm.ranges):
            ranges.append((compileCidr(cidr, "%s.ranges[%d]" % (rpath, j)), rm.exclusive,
                           onMatch))
    ranges.sort(key=lambda r: -r[0].prefixlen)
    ranges = tuple(ranges)

    def matchIp(input):
        value = getValue(input)
        address = _ipOf(value) if value is not None else None
        if address is not None:
            for network, exclusive, onMatch in ranges:
                if address in network:
                    result = onMatch(input)
                    if result is not None:
                        return result
                    if exclusive:
                        break
        return fallback(input)

    return matchIp


def _rbacAction(typed, path):
    typeName = typeNameOf(typed.typed_config)
    if typeName != _RBAC_ACTION:
        raise ConfigError("%s.typed_config: RBAC matchers take actions of type "
                          "'type.googleapis.com/%s', not '%s'"
                          % (path, _RBAC_ACTION, typed.typed_config.type_url))
    action = unpackAny(typed.typed_config, path + ".typed_config")
    checkFields(action, ("name", "action"), path + ".typed_config")
    return RbacAction(action.name, action.action)


def _ipOf(value):
    try:
        return ipaddress.ip_address(value.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None


def _text(value):
    # A pipe (Unix socket) address is its path.
    return str(value).encode("utf-8") if value else None


def _port(value):
    return str(value).encode("ascii") if value is not None else None


def _sourceType(input):
    # Envoy's SourceTypeInput: "local" for a loopback peer or one that has
    # our own address, no value otherwise.
    remote = input.ip("remoteIp")
    if remote is None:
        return None
    if remote.is_loopback or remote == input.ip("localIp"):
        return b"local"
    return None


def _applicationProtocols(input):
    protocols = input.applicationProtocols
    if not protocols:
        return None
    return ("'" + "','".join(protocols) + "'").encode("utf-8")


_NETWORK_INPUT_GETTERS = {
    "DestinationIPInput": lambda input: _text(input.localIp),
    "DestinationPortInput": lambda input: _port(input.localPort),
    "SourceIPInput": lambda input: _text(input.remoteIp),
    "SourcePortInput": lambda input: _port(input.remotePort),
    "DirectSourceIPInput": lambda input: _text(input.directRemoteIp),
    "SourceTypeInput": _sourceType,
    "ServerNameInput": lambda input: _text(input.requestedServerName),
    "TransportProtocolInput": lambda input: _text(input.transportProtocol),
    "ApplicationProtocolInput": _applicationProtocols,
}


def networkInputGetter(typeName):
    """
    The getter of a network input type (C{DestinationPortInput}...):
    C{input -> bytes or None}, or C{None} for a type that is not one.
    """
    if typeName.startswith(_NETWORK_INPUTS):
        return _NETWORK_INPUT_GETTERS.get(typeName[len(_NETWORK_INPUTS):])
    return None


def _networkInput(typed, path):
    typeName = typeNameOf(typed.typed_config)
    getter = networkInputGetter(typeName)
    if getter is not None:
        return getter
    if typeName.startswith(_NETWORK_INPUTS):
        raise UnsupportedExtension(path + ".typed_config", typeName, typed.name)
    raise ConfigError(
        "%s.typed_config: requirement violation while creating RBAC match tree: "
        "INVALID_ARGUMENT: RBAC network filter cannot match '%s'"
        % (path, typed.typed_config.type_url))


def headerInput(name):
    """
    The getter of C{HttpRequestHeaderMatchInput} for header C{name}: the
    value, several lines joined with C{,}, or C{None} when absent.
    """
    reader = HeaderMatcher(name, None, present=True)

    def readHeader(input):
        if input.headers is None:
            return None
        values = reader.read(input.headers, input.authority, input.path, input.method)
        if not values:
            return None
        return values[0] if len(values) == 1 else b",".join(values)

    return readHeader


def _httpInput(typed, path):
    # Envoy 1.40's HTTP RBAC takes request headers and the network inputs
    # only; even the query parameter input is refused.
    typeName = typeNameOf(typed.typed_config)
    getter = networkInputGetter(typeName)
    if getter is not None:
        return getter
    if typeName == _HTTP_INPUTS + "HttpRequestHeaderMatchInput":
        config = unpackAny(typed.typed_config, path + ".typed_config")
        return headerInput(config.header_name.lower().encode("utf-8"))
    if typeName.startswith(_NETWORK_INPUTS):
        raise UnsupportedExtension(path + ".typed_config", typeName, typed.name)
    raise ConfigError(
        "%s.typed_config: requirement violation while creating RBAC match tree: "
        "INVALID_ARGUMENT: RBAC HTTP filter cannot match on '%s'"
        % (path, typed.typed_config.type_url))


__all__ = ["RbacAction", "RbacMatcherEngine", "createMatcherEngine", "compileMatcher",
           "ALLOW", "DENY", "LOG"]
