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


BUFFER = {"name": "buffer", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
    "max_request_bytes": 10}}
COMPOSITE = {"name": "composite", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.composite.v3.Composite"}}
EXECUTE = "type.googleapis.com/envoy.extensions.filters.http.composite.v3.ExecuteFilterAction"
ACTION = FILTER + ".xds_matcher.matcher_tree.exact_match_map.map[a].action.typed_config"


def _build(inputConfig, actionConfig, wrapped=BUFFER):
    wrapper = {
        "@type": "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher",
        "xds_matcher": {"matcher_tree": {
            "input": {"name": "i", "typed_config": inputConfig},
            "exact_match_map": {"map": {"a": {"action": {"name": "act",
                                                          "typed_config": actionConfig}}}}}},
        "extension_config": wrapped}
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

    def test_executeFilterActionOutsideComposite(self):
        """C{ExecuteFilterAction} around a filter other than C{composite} is refused."""
        e = self.assertRaises(ConfigError, _build, HEADER, {
            "@type": EXECUTE, "typed_config": BUFFER})
        self.assertIn(ACTION + ": unsupported field (ExecuteFilterAction outside "
                      "envoy.filters.http.composite)", str(e))

    def test_compositeDelegates(self):
        """Around C{composite}, the action's filter is compiled when the config loads."""
        _build(HEADER, {"@type": EXECUTE, "typed_config": BUFFER,
                        "sample_percent": {"default_value": {"numerator": 50}}}, COMPOSITE)

    def test_compositeDelegateErrorsNamed(self):
        """An error in the delegated filter's config names its path."""
        e = self.assertRaises(ConfigError, _build, HEADER, {
            "@type": EXECUTE, "typed_config": {"name": "b", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                "max_request_bytes": 10, "nope": 1}}}, COMPOSITE)
        self.assertIn("nope", str(e))

    def test_compositeDynamicConfigRefused(self):
        """C{dynamic_config} (ECDS) and C{filter_chain} are refused with their path."""
        e = self.assertRaises(ConfigError, _build, HEADER, {
            "@type": EXECUTE, "dynamic_config": {"name": "d", "config_discovery": {
                "config_source": {"ads": {}}, "type_urls": ["type.googleapis.com/x"]}}},
            COMPOSITE)
        self.assertIn(ACTION + ".dynamic_config: unsupported field", str(e))
        e = self.assertRaises(ConfigError, _build, HEADER, {
            "@type": EXECUTE, "filter_chain": {"typed_config": [BUFFER]}}, COMPOSITE)
        self.assertIn(ACTION + ".filter_chain: unsupported field", str(e))

    def test_unsupportedInputRefused(self):
        """A response header input is refused with its path."""
        e = self.assertRaises(ConfigError, _build, {
            "@type": "type.googleapis.com/envoy.type.matcher.v3.HttpResponseHeaderMatchInput",
            "header_name": "x"}, SKIP)
        self.assertIn(FILTER + ".xds_matcher.matcher_tree.input.typed_config: unsupported "
                      "extension", str(e))
