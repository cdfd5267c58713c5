"""
Tests for L{txenvoy.extensions.filters.http.extension_with_matcher}: what
an C{ExtensionWithMatcher} refuses, with its path. (What it does is
compared with Envoy in C{tests/e2e/test_matchers.py}.)
"""

import json

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.config.errors import ConfigError
from txenvoy.config.loader import loadBootstrap
from txenvoy.server.server import Server

FILTER = ("static_resources.listeners[0].filter_chains[0].filters[0].typed_config"
          ".http_filters[0].typed_config")


def _build(inputConfig, actionConfig):
    wrapper = {
        "@type": "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher",
        "xds_matcher": {"matcher_tree": {
            "input": {"name": "i", "typed_config": inputConfig},
            "exact_match_map": {"map": {"a": {"action": {"name": "act",
                                                          "typed_config": actionConfig}}}}}},
        "extension_config": {"name": "buffer", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
            "max_request_bytes": 10}}}
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
                 "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "h",
        "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "direct_response": {"status": 200}}]}]},
        "http_filters": [
            {"name": "wrapped", "typed_config": wrapper},
            {"name": "router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
    config = {"static_resources": {"listeners": [{
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}},
        "filter_chains": [{"filters": [{"name": "hcm", "typed_config": hcm}]}]}]}}
    return Server(Clock(), loadBootstrap(None, json.dumps(config)), validateOnly=True)


HEADER = {"@type": "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput",
          "header_name": "x"}
SKIP = {"@type": "type.googleapis.com/envoy.extensions.filters.common.matcher.action.v3."
                 "SkipFilter"}


class ExtensionWithMatcherConfigTests(SynchronousTestCase):

    def test_builds(self):
        _build(HEADER, SKIP)

    def test_compositeActionRefused(self):
        """The composite filter's C{ExecuteFilterAction} is refused with its path."""
        e = self.assertRaises(ConfigError, _build, HEADER, {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.composite.v3."
                     "ExecuteFilterAction",
            "typed_config": {"name": "b", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                "max_request_bytes": 10}}})
        self.assertIn(FILTER + ".xds_matcher.matcher_tree.exact_match_map.map[a].action"
                      ".typed_config: unsupported extension", str(e))

    def test_unsupportedInputRefused(self):
        """A response header input is refused with its path."""
        e = self.assertRaises(ConfigError, _build, {
            "@type": "type.googleapis.com/envoy.type.matcher.v3.HttpResponseHeaderMatchInput",
            "header_name": "x"}, SKIP)
        self.assertIn(FILTER + ".xds_matcher.matcher_tree.input.typed_config: unsupported "
                      "extension", str(e))
