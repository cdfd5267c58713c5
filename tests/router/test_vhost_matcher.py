"""
Tests for L{txenvoy.router.vhost_matcher}: a virtual host's C{matcher}
picks the routes to try (Envoy's sublinear routing).
"""

from twisted.trial.unittest import SynchronousTestCase

import yaml

from envoy.config.route.v3 import route_pb2
from tests.router.test_config import FakeHeaders
from txenvoy.config.errors import ConfigError
from txenvoy.config.loader import parseDict
from txenvoy.router.config import RouteTable

ROUTE = "type.googleapis.com/envoy.config.route.v3.Route"
ROUTE_LIST = "type.googleapis.com/envoy.config.route.v3.RouteList"

TABLE = """
name: t
virtual_hosts:
- name: v
  domains: ["*"]
  matcher:
    matcher_tree:
      input:
        name: tenant
        typed_config:
          "@type": type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput
          header_name: X-Tenant
      prefix_match_map:
        map:
          a:
            action: {name: r, typed_config: {"@type": %(route)s, match: {prefix: /a},
                     direct_response: {status: 201}}}
          ab:
            action:
              name: r
              typed_config:
                "@type": %(list)s
                routes:
                - {match: {prefix: /x}, direct_response: {status: 202}}
                - {match: {prefix: /}, direct_response: {status: 203}}
    on_no_match:
      action: {name: r, typed_config: {"@type": %(route)s, match: {prefix: /},
               direct_response: {status: 204}}}
""" % {"route": ROUTE, "list": ROUTE_LIST}


def _table(text):
    config = parseDict(yaml.safe_load(text), route_pb2.RouteConfiguration())
    return RouteTable.fromProto(config, "rc", None)


class VirtualHostMatcherTests(SynchronousTestCase):

    def status(self, tenant, path):
        headers = FakeHeaders(x_tenant=tenant) if tenant else FakeHeaders()
        match = _table(TABLE).route(b"h", path, headers, b"GET")
        return None if match is None else match.entry.directResponse.status

    def test_prefixMapLongestFirst(self):
        """The longest prefix of the header value names the routes."""
        self.assertEqual(self.status(b"abc", b"/x"), 202)
        self.assertEqual(self.status(b"abc", b"/y"), 203)
        self.assertEqual(self.status(b"az", b"/a1"), 201)

    def test_routeActionKeepsItsMatch(self):
        """
        Envoy 1.40: a C{Route} action's own C{match} still applies; when it
        does not hold there is no route (404 C{NR}), not C{on_no_match}.
        """
        self.assertIsNone(self.status(b"az", b"/b"))

    def test_onNoMatch(self):
        self.assertEqual(self.status(b"zz", b"/"), 204)
        self.assertEqual(self.status(None, b"/"), 204)

    def test_unsupportedInput(self):
        """
        Only request header inputs route; another is refused with Envoy
        1.40's message (C{Route table can only match on request headers})
        and its path.
        """
        text = TABLE.replace("envoy.type.matcher.v3.HttpRequestHeaderMatchInput",
                             "envoy.extensions.matching.common_inputs.network.v3."
                             "DestinationPortInput").replace("header_name: X-Tenant", "")
        e = self.assertRaises(ConfigError, _table, text)
        self.assertIn("requirement violation while creating route match tree: "
                      "INVALID_ARGUMENT: Route table can only match on request headers, saw "
                      "type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3."
                      "DestinationPortInput @ ", str(e))
        self.assertIn("rc.virtual_hosts[0].matcher.matcher_tree.input.typed_config", str(e))
