"""
Tests for L{txenvoy.extensions.filters.http.router}.
"""

from google.protobuf import json_format
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from txenvoy.config import registry
from txenvoy.config.context import FactoryContext
from txenvoy.config.errors import UnsupportedField
from txenvoy.config.registry import Category, loadPlugins
from txenvoy.router.router import RouterConfig
from txenvoy.interfaces import IHttpFilterFactory
from txenvoy.stats.store import StatsStore

ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


def build(**fields):
    loadPlugins()
    entry = json_format.ParseDict(
        {"name": "envoy.filters.http.router", "typed_config": dict({"@type": ROUTER}, **fields)},
        hcm_pb2.HttpFilter())
    context = FactoryContext(Clock(), StatsStore(), path="hcm")
    context.httpStatPrefix = "http.front."
    return registry.createExtension(Category.HTTP_FILTER, entry, context, "hcm.http_filters[0]")


class RouterExtensionTests(SynchronousTestCase):

    def test_defaults(self):
        config = build()
        self.assertIsInstance(config, RouterConfig)
        self.assertTrue(verifyObject(IHttpFilterFactory, config))
        self.assertTrue(config.terminal)
        self.assertEqual(config.statPrefix, "http.front.")
        self.assertFalse(config.suppressEnvoyHeaders)
        self.assertFalse(config.respectExpectedRqTimeout)

    def test_fields(self):
        config = build(suppress_envoy_headers=True, respect_expected_rq_timeout=True,
                       dynamic_stats=False, start_child_span=True)
        self.assertTrue(config.suppressEnvoyHeaders)
        self.assertTrue(config.respectExpectedRqTimeout)

    def test_unsupported(self):
        e = self.assertRaises(UnsupportedField, build, upstream_log=[{"name": "x"}])
        self.assertIn("hcm.http_filters[0].typed_config.upstream_log", str(e))
        self.assertRaises(UnsupportedField, build, strict_check_headers=["x-envoy-max-retries"])
