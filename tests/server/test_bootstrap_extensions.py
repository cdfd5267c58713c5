"""
Tests for C{bootstrap_extensions} in L{txenvoy.server.server}: found by
C{@type} in the registry (category C{envoy.bootstrap}), refused by name
with their path when txenvoy has none.
"""

import json

from twisted.application.service import Service
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.config import registry
from txenvoy.config.errors import ConfigError
from txenvoy.config.loader import loadBootstrap
from txenvoy.config.registry import Category
from txenvoy.server.server import Server

WASM = "envoy.extensions.wasm.v3.WasmService"


def _server(*extensions):
    config = {"bootstrap_extensions": list(extensions), "static_resources": {}}
    return Server(Clock(), loadBootstrap(None, json.dumps(config)), validateOnly=True)


class BootstrapExtensionTests(SynchronousTestCase):

    def test_unknownRefusedByName(self):
        """An extension txenvoy does not have is refused by name and path."""
        e = self.assertRaises(ConfigError, _server, {
            "name": "envoy.bootstrap.wasm",
            "typed_config": {"@type": "type.googleapis.com/" + WASM}})
        self.assertIn("bootstrap_extensions[0].typed_config: unsupported extension "
                      "'envoy.bootstrap.wasm' (@type type.googleapis.com/%s)"
                      % (WASM,), str(e))

    def test_registeredServiceRuns(self):
        """A registered extension that is a service becomes part of the server."""
        made = []

        def create(value, context):
            service = Service()
            service.config = value
            made.append(service)
            return service

        registry.extension(Category.BOOTSTRAP, "test.BootstrapThing")(create)
        self.addCleanup(registry.unregister,
                        registry.lookup(Category.BOOTSTRAP, "test.BootstrapThing"))
        server = _server({"name": "thing", "typed_config": {
            "@type": "type.googleapis.com/xds.type.v3.TypedStruct",
            "type_url": "type.googleapis.com/test.BootstrapThing", "value": {"a": 1}}})
        self.assertEqual(server.bootstrapExtensions, made)
        self.assertEqual(made[0].config, {"a": 1})
        self.assertIs(server.getServiceNamed("bootstrap_extension_0"), made[0])
