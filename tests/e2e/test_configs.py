"""
Tests for L{tests.e2e.configs}: the YAML it writes is the Envoy config
spelled out in full.
"""

import yaml
from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.configs import bootstrap, cluster, httpFilter, httpListener

_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3" \
    ".HttpConnectionManager"
_ROUTER = {"name": "envoy.filters.http.router", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}


class ConfigsTests(SynchronousTestCase):

    def test_standard(self):
        """
        One HTTP listener before C{origin}: the admin, the listener's
        connection manager with a virtual host for every domain, its HTTP
        filters then the router, and a cluster of one endpoint; the ports
        left as placeholders.
        """
        text = bootstrap([httpListener("front", "%(main)d", httpFilters=httpFilter(
            "envoy.filters.http.buffer", "envoy.extensions.filters.http.buffer.v3.Buffer", """
                max_request_bytes: 10
                """))], [cluster("origin")])
        config = yaml.safe_load(text % {"admin": 1, "main": 2, "origin": 3})
        self.assertEqual(config, {
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}}},
            "static_resources": {
                "listeners": [{
                    "name": "front",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": 2}},
                    "filter_chains": [{"filters": [{
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": _HCM,
                            "stat_prefix": "front",
                            "route_config": {"virtual_hosts": [{
                                "name": "all", "domains": ["*"],
                                "routes": [{"match": {"prefix": "/"},
                                            "route": {"cluster": "origin"}}]}]},
                            "http_filters": [
                                {"name": "envoy.filters.http.buffer", "typed_config": {
                                    "@type": "type.googleapis.com/envoy.extensions.filters.http"
                                             ".buffer.v3.Buffer",
                                    "max_request_bytes": 10}},
                                _ROUTER]}}]}]}],
                "clusters": [{
                    "name": "origin", "connect_timeout": "1s",
                    "load_assignment": {"cluster_name": "origin", "endpoints": [{
                        "lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                            "address": "127.0.0.1", "port_value": 3}}}}]}]}}]}})

    def test_extraFields(self):
        """
        Each extra part lands where it belongs: the listener's, the filter
        chain's, the connection manager's, the route config's, the virtual
        host's, the router's, the cluster's and the bootstrap's own fields.
        """
        text = bootstrap(
            [httpListener("l", 2, statPrefix="p", routes=['- match: { path: "/a" }\n'
                                                          '  direct_response: { status: 200 }'],
                          listener="per_connection_buffer_limit_bytes: 1024",
                          filterChain="name: chain",
                          hcm="use_remote_address: true",
                          routeConfig="name: local",
                          virtualHost="retry_policy: { num_retries: 1 }",
                          router="suppress_envoy_headers: true")],
            [cluster("c", 3, extra="type: STATIC", connectTimeout=None)],
            admin=None, extra="node: { id: n }")
        config = yaml.safe_load(text)
        listener = config["static_resources"]["listeners"][0]
        chain = listener["filter_chains"][0]
        hcm = chain["filters"][0]["typed_config"]
        self.assertEqual(
            (listener["per_connection_buffer_limit_bytes"], chain["name"], hcm["stat_prefix"],
             hcm["use_remote_address"], hcm["route_config"]["name"],
             hcm["route_config"]["virtual_hosts"][0]["retry_policy"],
             hcm["route_config"]["virtual_hosts"][0]["routes"],
             hcm["http_filters"][-1]["typed_config"]["suppress_envoy_headers"],
             config["static_resources"]["clusters"][0]["type"], config["node"]),
            (1024, "chain", "p", True, "local", {"num_retries": 1},
             [{"match": {"path": "/a"}, "direct_response": {"status": 200}}], True, "STATIC",
             {"id": "n"}))
        self.assertNotIn("admin", config)
        self.assertNotIn("connect_timeout", config["static_resources"]["clusters"][0])
