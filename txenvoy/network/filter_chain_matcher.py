# -*- test-case-name: tests.network.test_filter_chain_matcher -*-
"""
A listener's C{filter_chain_matcher}: Envoy's unified matcher
(C{xds.type.matcher.v3.Matcher}) choosing a filter chain by name.

The tree is compiled once, by the matcher compiler the RBAC filters use
(L{txenvoy.rbac.matcher.compileMatcher}), with the network inputs
(destination port and IP, source IP, port and type, direct source IP,
server name, transport and application protocols) read from the
connection's L{txenvoy.network.filter_chain.ConnectionMatchInfo}. Each
action is a C{google.protobuf.StringValue} naming a chain of the listener;
no match at all falls to the C{default_filter_chain}, while a name no chain
has is no chain (Envoy's C{FilterChainNameAction}: the connection is
closed and counted in C{no_filter_chain_match}). Any
other input or action is refused with its path in Envoy's words
(C{cannot create a filter chain matcher: Didn't find a registered
implementation for 'NAME' with type URL: 'TYPE'}).
"""

from txenvoy.config.errors import ConfigError
from txenvoy.config.registry import typeNameOf, unpackAny
from txenvoy.rbac.matcher import compileMatcher, networkInputGetter

_CHAIN_NAME = "google.protobuf.StringValue"


def _noImplementation(typed, path):
    return ConfigError(
        "cannot create a filter chain matcher: Didn't find a registered implementation for "
        "'%s' with type URL: '%s' @ %s.typed_config"
        % (typed.name, typeNameOf(typed.typed_config), path))


def _input(typed, path):
    getter = networkInputGetter(typeNameOf(typed.typed_config))
    if getter is None:
        raise _noImplementation(typed, path)
    return getter


def _chainName(typed, path):
    if typeNameOf(typed.typed_config) != _CHAIN_NAME:
        raise _noImplementation(typed, path)
    return unpackAny(typed.typed_config, path + ".typed_config").value


class MatcherInput:
    """
    The values a filter chain matcher's inputs read, from a
    L{txenvoy.network.filter_chain.ConnectionMatchInfo}, under the names
    the matcher compiler's network inputs use.
    """

    __slots__ = ("_info",)

    def __init__(self, info):
        self._info = info

    @property
    def localIp(self):
        ip = self._info.destinationIp
        return None if ip is None else str(ip)

    @property
    def localPort(self):
        return self._info.destinationPort

    @property
    def remoteIp(self):
        ip = self._info.sourceIp
        return None if ip is None else str(ip)

    @property
    def remotePort(self):
        return self._info.sourcePort

    @property
    def directRemoteIp(self):
        ip = self._info.directSourceIp
        return None if ip is None else str(ip)

    @property
    def requestedServerName(self):
        return self._info.serverName

    @property
    def transportProtocol(self):
        return self._info.transportProtocol

    @property
    def applicationProtocols(self):
        return self._info.applicationProtocols

    def ip(self, attribute):
        """The parsed address behind C{localIp} or C{remoteIp}."""
        info = self._info
        return {"localIp": info.destinationIp, "remoteIp": info.sourceIp,
                "directRemoteIp": info.directSourceIp}.get(attribute)


class FilterChainMatcher:
    """
    A compiled C{filter_chain_matcher}: L{find} names the chain for a
    connection.
    """

    def __init__(self, matcher, path):
        self._tree = compileMatcher(matcher, path, _input, _chainName)

    def find(self, info):
        """
        @param info: the connection's L{ConnectionMatchInfo}.
        @return: the chosen chain's name, or C{None} when nothing matched.
        """
        return self._tree(MatcherInput(info))


class MatcherFilterChainManager:
    """
    A listener's filter chains picked by its L{FilterChainMatcher} (the
    chains' own C{filter_chain_match} is not looked at, as in Envoy).
    """

    def __init__(self, chains, defaultChain, matcher):
        self.chains = chains
        self.defaultChain = defaultChain
        self.matcher = matcher
        self._byName = {}
        for chain in chains:
            self._byName.setdefault(chain.name, chain)

    def findFilterChain(self, info):
        """
        @param info: a L{ConnectionMatchInfo}, or a callable producing one.
        @return: the named L{FilterChain} (C{None} for a name no chain has),
            or the default chain (or C{None}) when nothing matched.
        """
        if callable(info):
            info = info()
        name = self.matcher.find(info)
        if name is None:
            return self.defaultChain
        return self._byName.get(name)
