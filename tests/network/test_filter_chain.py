"""Tests for L{txenvoy.network.filter_chain}: Envoy's filter chain match."""

from envoy.config.listener.v3 import listener_components_pb2 as lc
from google.protobuf import json_format
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.config.errors import ConfigError
from txenvoy.network.filter_chain import (
    ConnectionMatchInfo, FilterChain, FilterChainManager, FilterChainMatch)


def chain(name, match=None):
    m = json_format.ParseDict(match or {}, lc.FilterChainMatch())
    return FilterChain(name, [], None, FilterChainMatch(m, name))


def info(dst=("127.0.0.1", 10000), src=("10.0.0.5", 40000), sni="", transport="raw_buffer",
         alpn=()):
    return ConnectionMatchInfo(dst, src, src, sni, transport, alpn)


class FilterChainMatchTests(SynchronousTestCase):

    def find(self, chains, connInfo, default=None):
        found = FilterChainManager(chains, default, "l").findFilterChain(connInfo)
        return found.name if found is not None else None

    def test_singleWildcardChain(self):
        self.assertEqual(self.find([chain("a")], info()), "a")

    def test_serverNameExactBeatsWildcard(self):
        """Envoy: an exact server name is more specific than *.suffix."""
        chains = [chain("wild", {"server_names": ["*.example.com"]}),
                  chain("exact", {"server_names": ["a.example.com"]}),
                  chain("any")]
        self.assertEqual(self.find(chains, info(sni="a.example.com")), "exact")
        self.assertEqual(self.find(chains, info(sni="b.example.com")), "wild")
        self.assertEqual(self.find(chains, info(sni="other.org")), "any")
        self.assertEqual(self.find(chains, info()), "any")

    def test_noMatchNoDefault(self):
        """Nothing matches and no default_filter_chain: no chain."""
        chains = [chain("tls", {"transport_protocol": "tls"})]
        self.assertIsNone(self.find(chains, info()))

    def test_defaultChain(self):
        chains = [chain("tls", {"transport_protocol": "tls"})]
        self.assertEqual(self.find(chains, info(), default=chain("default")), "default")

    def test_destinationPortFirst(self):
        """
        The destination port is matched before anything else and there is no
        backtracking: a chain for the port wins even if a later level fails.
        """
        chains = [chain("port", {"destination_port": 10000, "server_names": ["x.test"]}),
                  chain("any")]
        self.assertIsNone(self.find(chains, info(sni="y.test")))
        self.assertEqual(self.find(chains, info(dst=("127.0.0.1", 9999), sni="y.test")), "any")

    def test_sourcePrefixLongestWins(self):
        chains = [chain("ten", {"source_prefix_ranges": [{"address_prefix": "10.0.0.0",
                                                          "prefix_len": 8}]}),
                  chain("ten0", {"source_prefix_ranges": [{"address_prefix": "10.0.0.0",
                                                           "prefix_len": 24}]}),
                  chain("any")]
        self.assertEqual(self.find(chains, info(src=("10.0.0.9", 1))), "ten0")
        self.assertEqual(self.find(chains, info(src=("10.1.0.9", 1))), "ten")
        self.assertEqual(self.find(chains, info(src=("127.0.0.1", 1))), "any")

    def test_applicationProtocols(self):
        chains = [chain("h2", {"application_protocols": ["h2"]}), chain("any")]
        self.assertEqual(self.find(chains, info(alpn=("h2", "http/1.1"))), "h2")
        self.assertEqual(self.find(chains, info(alpn=("http/1.1",))), "any")

    def test_duplicateMatchRejected(self):
        """Envoy rejects two chains with identical matching rules."""
        self.assertRaises(ConfigError, FilterChainManager,
                          [chain("a", {"server_names": ["x"]}), chain("b", {"server_names": ["x"]})],
                          None, "l")
