"""Tests for L{txenvoy.config.context}."""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from envoy.config.listener.v3 import listener_components_pb2
from txenvoy.config.context import FactoryContext
from txenvoy.config.errors import ConfigError
from txenvoy.config.loader import parseDict
from txenvoy.config.registry import Category, loadPlugins
from txenvoy.stats.store import StatsStore


class FactoryContextTests(SynchronousTestCase):

    def test_childKeepsEverythingButThePath(self):
        store = StatsStore()
        context = FactoryContext(Clock(), store, path="a", validateOnly=True, runtime="rt")
        child = context.child("a.b")
        self.assertEqual((child.path, context.path), ("a.b", "a"))
        self.assertIs(child.stats, store)
        self.assertTrue(child.validateOnly)
        self.assertEqual(child.runtime, "rt")

    def test_nestedExtensionErrorsNameTheirField(self):
        """A nested extension's config error names the nested field path."""
        loadPlugins()
        bad = parseDict({"name": "d", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.direct_response.v3"
                     ".Config", "response": {"filename": "/nonexistent/file"}}},
            listener_components_pb2.Filter())
        context = FactoryContext(Clock(), StatsStore())
        e = self.assertRaises(ConfigError, context.createExtension, Category.NETWORK_FILTER,
                              bad, "x.filters[2]")
        self.assertIn("x.filters[2].typed_config.response.filename", str(e))
