"""
Tests for L{txenvoy.extensions.router.cluster_specifiers.lua} through
compiled route tables; C{tests/e2e/test_lua.py} compares it with Envoy 1.40.
"""

import json

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from txenvoy.config.errors import ConfigError
from txenvoy.interfaces import IClusterSpecifierPlugin

from tests.extensions.filters.http.fakes import routeFor, routeTable

SCRIPT = """
function envoy_on_route(h)
  local want = h:headers():get("x-cs")
  if want == "err" then error("no") end
  return want
end
"""

TABLE = """
virtual_hosts:
- name: all
  domains: ["*"]
  routes:
  - match: {prefix: "/inline"}
    route:
      inline_cluster_specifier_plugin:
        extension:
          name: envoy.router.cluster_specifier_plugin.lua
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.router.cluster_specifiers.lua.v3.LuaConfig
            source_code: {inline_string: %(script)s}
            default_cluster: fallback
  - match: {prefix: "/named"}
    route: {cluster_specifier_plugin: %(name)s}
cluster_specifier_plugins:
- extension:
    name: mine
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.router.cluster_specifiers.lua.v3.LuaConfig
      source_code: {inline_string: %(script)s}
"""


def table(script=SCRIPT, name="mine"):
    return routeTable(TABLE % dict(script=json.dumps(script), name=name))


class LuaClusterSpecifierTests(SynchronousTestCase):

    def test_interface(self):
        """The compiled plugin is an L{IClusterSpecifierPlugin}."""
        match = routeFor(table(), b"/inline")
        verifyObject(IClusterSpecifierPlugin, match.entry.clusterSpecifier)

    def test_picks(self):
        """The script's answer is the cluster; a failure or nil is C{default_cluster}."""
        routes = table()
        self.assertEqual(routeFor(routes, b"/inline", headers=[(b"x-cs", b"a")]).clusterName, "a")
        self.assertEqual(routeFor(routes, b"/inline").clusterName, "fallback")
        self.assertEqual(routeFor(routes, b"/inline", headers=[(b"x-cs", b"err")]).clusterName,
                         "fallback")
        self.assertEqual(routeFor(routes, b"/named", headers=[(b"x-cs", b"b")]).clusterName, "b")
        self.assertIsNone(routeFor(routes, b"/named").clusterName)

    def test_unknownName(self):
        """Envoy's message for a route naming no configured plugin."""
        e = self.assertRaises(ConfigError, table, name="other")
        self.assertIn("Unknown cluster specifier plugin name: other is used in the route", str(e))

    def test_syntaxError(self):
        """A script that does not load fails the route table with its path."""
        e = self.assertRaises(ConfigError, table, script="function (")
        self.assertIn('source_code: script load error: [string "function ("]:1:', str(e))
