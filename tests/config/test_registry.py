"""Tests for L{txenvoy.config.registry}."""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from envoy.config.listener.v3 import listener_components_pb2
from txenvoy.config import registry
from txenvoy.config.context import FactoryContext
from txenvoy.config.errors import ConfigError, UnsupportedExtension
from txenvoy.config.loader import parseDict
from txenvoy.config.registry import Category
from txenvoy.interfaces import INetworkFilterFactory
from txenvoy.stats.store import StatsStore

PATH = "static_resources.listeners[0].filter_chains[0].filters[0]"
TYPED_STRUCT = "type.googleapis.com/xds.type.v3.TypedStruct"


@implementer(INetworkFilterFactory)
class _Made:
    terminal = True

    def __init__(self, config):
        self.config = config

    def buildFilter(self, connection, nextProtocol):
        return None


def _filter(typedConfig, name="f"):
    entry = {"name": name}
    if typedConfig is not None:
        entry["typed_config"] = typedConfig
    return parseDict(entry, listener_components_pb2.Filter())


class RegistryTests(SynchronousTestCase):

    def setUp(self):
        registry.loadPlugins()
        self.context = FactoryContext(Clock(), StatsStore())

    def _register(self, typeName, create, *names):
        previous = registry.lookup(Category.NETWORK_FILTER, typeName)
        registry.extension(Category.NETWORK_FILTER, typeName, *names)(create)
        if previous is not None:
            self.addCleanup(registry.register, previous)

    def test_byType(self):
        """Envoy picks an extension by its C{@type} alone; the name is informational."""
        echo = registry.createExtension(
            Category.NETWORK_FILTER,
            _filter({"@type": "type.googleapis.com/envoy.extensions.filters.network.echo.v3.Echo"},
                    name="anything"), self.context, PATH)
        self.assertTrue(INetworkFilterFactory.providedBy(echo))
        self.assertIn((Category.NETWORK_FILTER, "envoy.extensions.filters.network.echo.v3.Echo"),
                      registry.registered(Category.NETWORK_FILTER))

    def test_byName(self):
        """Cluster types are found by Envoy's name."""
        self.assertIsNotNone(registry.lookupName(Category.CLUSTER, "envoy.cluster.static"))
        self.assertIsNone(registry.lookupName(Category.CLUSTER, "envoy.cluster.redis"))

    def test_noTypedConfig(self):
        """Envoy 1.40's message for an entry without C{typed_config}."""
        e = self.assertRaises(ConfigError, registry.createExtension, Category.NETWORK_FILTER,
                              _filter(None, name="envoy.filters.network.echo"), self.context,
                              PATH)
        self.assertEqual(str(e), "Didn't find a registered implementation for "
                                 "'envoy.filters.network.echo' with type URL: '' @ %s" % (PATH,))

    def test_unsupported(self):
        """A valid Envoy extension txenvoy lacks is refused as unsupported, by field."""
        e = self.assertRaises(
            UnsupportedExtension, registry.createExtension, Category.NETWORK_FILTER,
            _filter({"@type": "type.googleapis.com/envoy.extensions.filters.network."
                     "redis_proxy.v3.RedisProxy", "stat_prefix": "r"}), self.context, PATH)
        self.assertIn(PATH + ".typed_config: unsupported extension", str(e))

    def test_typedStruct(self):
        """
        A C{TypedStruct} is dispatched on its inner C{type_url}; the factory
        gets the C{value} as a dict and a context for the entry's path.
        """
        seen = []

        def create(value, context):
            seen.append((value, context.path))
            return _Made(value)

        self._register("my.pkg.v1.Thing", create)
        made = registry.createExtension(
            Category.NETWORK_FILTER,
            _filter({"@type": TYPED_STRUCT, "type_url": "type.googleapis.com/my.pkg.v1.Thing",
                     "value": {"limit": 3}}), self.context, PATH)
        self.assertEqual(made.config, {"limit": 3})
        self.assertEqual(seen, [({"limit": 3}, PATH)])

    def test_laterRegistrationWins(self):
        """A plugin registering a built-in's C{@type} replaces it."""
        typeName = "envoy.extensions.filters.network.echo.v3.Echo"
        self._register(typeName, lambda message, context: _Made("mine"))
        made = registry.createExtension(
            Category.NETWORK_FILTER, _filter({"@type": "type.googleapis.com/" + typeName}),
            self.context, PATH)
        self.assertEqual(made.config, "mine")
