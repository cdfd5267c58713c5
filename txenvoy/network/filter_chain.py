# -*- test-case-name: tests.network.test_filter_chain -*-
"""
Filter chains and Envoy's filter chain match.

Envoy narrows the candidate chains level by level, in a fixed order:
destination port, destination IP, server name (SNI), transport protocol,
application protocols (ALPN), direct source IP, source type, source IP,
source port. At each level the most specific match wins and chains with no
criterion at that level are the wildcard fallback; there is no
backtracking to an earlier level. Nothing left: the C{default_filter_chain},
or no chain at all.
"""

import ipaddress

from txenvoy.config.errors import ConfigError
from txenvoy.config.fields import checkFields


class FilterChain:
    """
    One compiled filter chain.

    @ivar name: the chain's name (may be empty).
    @ivar filterFactories: L{txenvoy.interfaces.INetworkFilterFactory}s in
        config order.
    @ivar transportSocket: a downstream transport socket factory, or C{None}
        for plain TCP.
    @ivar match: the compiled L{FilterChainMatch}.
    """

    def __init__(self, name, filterFactories, transportSocket, match):
        self.name = name
        self.filterFactories = filterFactories
        self.transportSocket = transportSocket
        self.match = match

    def buildFilterChain(self, connection):
        """
        Build this chain's Protocol stack for one connection.

        @return: the head Protocol, or C{None} for an empty chain.
        """
        protocol = None
        for factory in reversed(self.filterFactories):
            protocol = factory.buildFilter(connection, protocol)
        return protocol


def _cidrs(ranges, path):
    out = []
    for i, r in enumerate(ranges):
        try:
            out.append(ipaddress.ip_network(
                "%s/%d" % (r.address_prefix, r.prefix_len.value if r.HasField("prefix_len") else
                           (32 if ":" not in r.address_prefix else 128)),
                strict=False))
        except ValueError as e:
            raise ConfigError("%s[%d]: malformed IP address: %s" % (path, i, e))
    return out


def _bestPrefix(networks, addr):
    """Length+1 of the longest matching prefix; 0 when unset; -1 no match."""
    if not networks:
        return 0
    if addr is None:
        return -1
    best = -1
    for n in networks:
        if addr.version == n.version and addr in n:
            best = max(best, n.prefixlen + 1)
    return best


class FilterChainMatch:
    """
    A compiled C{filter_chain_match}; L{scores} rates one connection against
    it, level by level.
    """

    SOURCE_ANY, SOURCE_LOCAL, SOURCE_EXTERNAL = 0, 1, 2

    def __init__(self, proto, path):
        m = proto
        # address_suffix and suffix_len are not implemented in Envoy either.
        checkFields(m, ("destination_port", "prefix_ranges", "direct_source_prefix_ranges",
                        "source_type", "source_prefix_ranges", "source_ports", "server_names",
                        "transport_protocol", "application_protocols"), path)
        self.destinationPort = m.destination_port.value if m.HasField("destination_port") else None
        self.prefixRanges = _cidrs(m.prefix_ranges, path + ".prefix_ranges")
        self.serverNames = [s.lower() for s in m.server_names]
        self.transportProtocol = m.transport_protocol
        self.applicationProtocols = list(m.application_protocols)
        self.directSourcePrefixRanges = _cidrs(
            m.direct_source_prefix_ranges, path + ".direct_source_prefix_ranges")
        self.sourceType = m.source_type
        self.sourcePrefixRanges = _cidrs(m.source_prefix_ranges, path + ".source_prefix_ranges")
        self.sourcePorts = set(m.source_ports)
        self.key = (
            self.destinationPort, tuple(map(str, self.prefixRanges)), tuple(sorted(self.serverNames)),
            self.transportProtocol, tuple(sorted(self.applicationProtocols)),
            tuple(map(str, self.directSourcePrefixRanges)), self.sourceType,
            tuple(map(str, self.sourcePrefixRanges)), tuple(sorted(self.sourcePorts)),
        )

    def _serverNameScore(self, sni):
        if not self.serverNames:
            return 0
        if not sni:
            return -1
        sni = sni.lower()
        best = -1
        for name in self.serverNames:
            if name == sni:
                return 10000
            if name.startswith("*.") and sni.endswith(name[1:]):
                best = max(best, len(name))
        return best

    def scores(self, info):
        """
        @param info: a L{ConnectionMatchInfo}.
        @return: one score per level; -1 means no match, 0 the wildcard,
            higher is more specific.
        """
        if self.destinationPort is None:
            port = 0
        else:
            port = 1 if info.destinationPort == self.destinationPort else -1
        if self.transportProtocol:
            transport = 1 if info.transportProtocol == self.transportProtocol else -1
        else:
            transport = 0
        if self.applicationProtocols:
            alpn = 1 if any(p in self.applicationProtocols for p in info.applicationProtocols) else -1
        else:
            alpn = 0
        if self.sourceType == self.SOURCE_ANY:
            stype = 0
        else:
            local = info.sourceIsLocal
            stype = 1 if (local == (self.sourceType == self.SOURCE_LOCAL)) else -1
        if self.sourcePorts:
            sport = 1 if info.sourcePort in self.sourcePorts else -1
        else:
            sport = 0
        return (
            port,
            _bestPrefix(self.prefixRanges, info.destinationIp),
            self._serverNameScore(info.serverName),
            transport,
            alpn,
            _bestPrefix(self.directSourcePrefixRanges, info.directSourceIp),
            stype,
            _bestPrefix(self.sourcePrefixRanges, info.sourceIp),
            sport,
        )


class ConnectionMatchInfo:
    """What filter chain matching looks at, taken from a connection."""

    __slots__ = ("destinationPort", "destinationIp", "serverName", "transportProtocol",
                 "applicationProtocols", "directSourceIp", "sourceIp", "sourcePort",
                 "sourceIsLocal")

    def __init__(self, localAddress, remoteAddress, directRemoteAddress, serverName,
                 transportProtocol, applicationProtocols):
        self.destinationPort = localAddress[1]
        self.destinationIp = _ip(localAddress[0])
        self.sourceIp = _ip(remoteAddress[0])
        self.sourcePort = remoteAddress[1]
        self.directSourceIp = _ip(directRemoteAddress[0])
        self.serverName = serverName
        self.transportProtocol = transportProtocol
        self.applicationProtocols = applicationProtocols
        self.sourceIsLocal = (self.sourceIp is not None and (
            self.sourceIp.is_loopback or self.sourceIp == self.destinationIp))


def _ip(text):
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class FilterChainManager:
    """
    The filter chains of one listener and the match between them.
    """

    def __init__(self, chains, defaultChain, path):
        seen = {}
        for i, chain in enumerate(chains):
            other = seen.get(chain.match.key)
            if other is not None:
                raise ConfigError(
                    "%s.filter_chains[%d]: multiple filter chains with the same matching rules "
                    "are defined (the same as filter_chains[%d])" % (path, i, other))
            seen[chain.match.key] = i
        self.chains = chains
        self.defaultChain = defaultChain
        # The common case: one chain that matches everything.
        self._onlyChain = (chains[0] if len(chains) == 1 and chains[0].match.key == _EMPTY_KEY
                           else None)

    def findFilterChain(self, info):
        """
        @param info: a L{ConnectionMatchInfo}, or a callable producing one
            (only called when more than one chain could match).
        @return: the L{FilterChain}, or C{None}.
        """
        if self._onlyChain is not None:
            return self._onlyChain
        if callable(info):
            info = info()
        candidates = [(c, c.match.scores(info)) for c in self.chains]
        for level in range(9):
            best = max((s[level] for _, s in candidates), default=-1)
            if best < 0:
                return self.defaultChain
            candidates = [(c, s) for c, s in candidates if s[level] == best]
        return candidates[0][0] if candidates else self.defaultChain


_EMPTY_KEY = (None, (), (), "", (), (), 0, (), ())
