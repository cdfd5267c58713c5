"""
Tests for L{txenvoy.extensions.bootstrap.internal_listener}: the bootstrap
extension that turns internal listeners on.
"""

import json

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.config.errors import ConfigError
from txenvoy.config.loader import loadBootstrap
from txenvoy.extensions.bootstrap.internal_listener import InternalListenerExtension
from txenvoy.server.server import Server

TYPE = "type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener"


def _server(**fields):
    config = {"bootstrap_extensions": [{"name": "envoy.bootstrap.internal_listener",
                                        "typed_config": dict({"@type": TYPE}, **fields)}],
              "static_resources": {}}
    return Server(Clock(), loadBootstrap(None, json.dumps(config)), validateOnly=True)


class InternalListenerExtensionTests(SynchronousTestCase):

    def test_bufferSize(self):
        self.assertEqual(_server(buffer_size_kb=8).bootstrapExtensions,
                         [InternalListenerExtension(8 * 1024)])

    def test_defaultBufferSize(self):
        """Envoy's default is 64 KiB."""
        self.assertEqual(_server().bootstrapExtensions, [InternalListenerExtension(64 * 1024)])

    def test_bufferSizeRange(self):
        """Envoy 1.40: C{buffer_size_kb} must be inside [1, 8192]."""
        e = self.assertRaises(ConfigError, _server, buffer_size_kb=0)
        self.assertIn("InternalListenerValidationError.BufferSizeKb: value must be inside "
                      "range [1, 8192]", str(e))
