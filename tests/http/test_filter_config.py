"""
Tests for L{txenvoy.http.filter_config}: route-specific filter configs
(C{typed_per_filter_config}) are compiled when the config loads, as
Envoy's route table compiles them, so a mistake in one fails the config
with its path instead of showing on the first request.
"""

import json

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.config.errors import ConfigError
from txenvoy.config.loader import loadBootstrap
from txenvoy.server.server import Server

CORS = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy"


def _config(perRoute):
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
                 "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "h",
        "route_config": {"virtual_hosts": [{
            "name": "v", "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200},
                        "typed_per_filter_config": {"envoy.filters.http.cors": perRoute}}]}]},
        "http_filters": [
            {"name": "envoy.filters.http.cors", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}},
            {"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
    return json.dumps({"static_resources": {"listeners": [{
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}},
        "filter_chains": [{"filters": [{"name": "hcm", "typed_config": hcm}]}]}]}})


class RouteSpecificConfigTests(SynchronousTestCase):

    def build(self, perRoute):
        return Server(Clock(), loadBootstrap(None, _config(perRoute)), validateOnly=True)

    def test_compiledAtLoad(self):
        """A route's config in a bad shape fails the config, naming its path."""
        e = self.assertRaises(ConfigError, self.build, {
            "@type": CORS, "allow_origin_string_match": [{"safe_regex": {"regex": "("}}]})
        self.assertIn("static_resources.listeners[0].filter_chains[0].filters[0].typed_config"
                      ".route_config.virtual_hosts[0].routes[0].typed_per_filter_config"
                      "[envoy.filters.http.cors].allow_origin_string_match[0]", str(e))

    def test_wrongType(self):
        """A config of another filter's type is refused at load with its path."""
        e = self.assertRaises(ConfigError, self.build, {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"})
        self.assertIn("routes[0].typed_per_filter_config[envoy.filters.http.cors]: "
                      "envoy.extensions.filters.http.router.v3.Router cannot configure", str(e))

    def test_goodConfigBuilds(self):
        self.build({"@type": CORS, "allow_methods": "GET"})
