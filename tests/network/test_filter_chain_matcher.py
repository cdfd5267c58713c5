"""
Tests for L{txenvoy.network.filter_chain_matcher}: a listener's
C{filter_chain_matcher}, compiled once, picks a chain by name.
"""

from twisted.trial.unittest import SynchronousTestCase

from txenvoy.config.errors import ConfigError
from txenvoy.config.loader import parseDict
from txenvoy.network.filter_chain import ConnectionMatchInfo
from txenvoy.network.filter_chain_matcher import FilterChainMatcher, MatcherFilterChainManager

NET = "type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3."


def _input(name):
    return {"name": name, "typed_config": {"@type": NET + name}}


def _action(chain):
    return {"action": {"name": "c", "typed_config": {
        "@type": "type.googleapis.com/google.protobuf.StringValue", "value": chain}}}


def _matcher(data):
    from xds.type.matcher.v3 import matcher_pb2

    return FilterChainMatcher(parseDict(data, matcher_pb2.Matcher()), "m")


def _info(localPort=80, remote="10.0.0.1", sni="", transport="raw_buffer", alpn=()):
    return ConnectionMatchInfo(("127.0.0.1", localPort), (remote, 5555), (remote, 5555), sni,
                               transport, alpn)


class _Chain:
    def __init__(self, name):
        self.name = name


class FilterChainMatcherTests(SynchronousTestCase):

    def test_tree(self):
        """An exact map on the destination port, C{on_no_match} otherwise."""
        matcher = _matcher({
            "matcher_tree": {"input": _input("DestinationPortInput"),
                             "exact_match_map": {"map": {"80": _action("web")}}},
            "on_no_match": _action("other")})
        self.assertEqual(matcher.find(_info(80)), "web")
        self.assertEqual(matcher.find(_info(81)), "other")

    def test_listAndIpRange(self):
        """
        A list of predicates, and C{envoy.matching.custom_matchers.ip_range_matcher}
        on the source IP.
        """
        matcher = _matcher({"matcher_list": {"matchers": [
            {"predicate": {"single_predicate": {
                "input": _input("ServerNameInput"), "value_match": {"prefix": "api."}}},
             "on_match": _action("api")},
        ]}, "on_no_match": {"matcher": {"matcher_tree": {
            "input": _input("SourceIPInput"),
            "custom_match": {"name": "ip", "typed_config": {
                "@type": "type.googleapis.com/xds.type.matcher.v3.IPMatcher",
                "range_matchers": [{"ranges": [{"address_prefix": "10.0.0.0",
                                                "prefix_len": 8}],
                                    "on_match": _action("inside")}]}}}}}})
        self.assertEqual(matcher.find(_info(sni="api.example")), "api")
        self.assertEqual(matcher.find(_info(remote="10.1.2.3")), "inside")
        self.assertIsNone(matcher.find(_info(remote="192.168.0.1")))

    def test_unsupportedInput(self):
        """Envoy: C{cannot create a filter chain matcher: Didn't find a registered implementation}."""
        e = self.assertRaises(ConfigError, _matcher, {"matcher_tree": {
            "input": {"name": "h", "typed_config": {
                "@type": "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput",
                "header_name": "x"}},
            "exact_match_map": {"map": {"a": _action("a")}}}})
        self.assertIn("cannot create a filter chain matcher: Didn't find a registered "
                      "implementation for 'h' with type URL: "
                      "'envoy.type.matcher.v3.HttpRequestHeaderMatchInput' @ "
                      "m.matcher_tree.input.typed_config", str(e))

    def test_manager(self):
        """
        No match is the default chain; a name no chain has is no chain, as
        Envoy's C{FilterChainNameAction}.
        """
        chains = [_Chain("web")]
        default = _Chain("default")
        matcher = _matcher({
            "matcher_tree": {"input": _input("DestinationPortInput"),
                             "exact_match_map": {"map": {"80": _action("web"),
                                                         "81": _action("gone")}}}})
        manager = MatcherFilterChainManager(chains, default, matcher)
        self.assertIs(manager.findFilterChain(_info(80)), chains[0])
        self.assertIsNone(manager.findFilterChain(_info(81)))
        self.assertIs(manager.findFilterChain(lambda: _info(82)), default)
