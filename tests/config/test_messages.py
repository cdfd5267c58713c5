"""
Tests for L{txenvoy.config.messages}: Envoy's words, written once for the
checks and the builders.
"""

from twisted.trial.unittest import SynchronousTestCase

from txenvoy.config import messages
from txenvoy.config.errors import ConfigError, pathOf


class MessagesTests(SynchronousTestCase):

    def test_envoyPhraseThenPath(self):
        """Each message is Envoy's phrase, then C{@} and the field path."""
        cases = [
            (messages.duplicateCluster("c1", "static_resources.clusters[1]"),
             "cluster manager: duplicate cluster 'c1' @ static_resources.clusters[1]"),
            (messages.listenerAddressMissing("l1", "static_resources.listeners[0]"),
             "error adding listener named 'l1': address is necessary "
             "@ static_resources.listeners[0]"),
            (messages.noFilterChains("127.0.0.1:10040", "static_resources.listeners[0]"),
             "error adding listener '127.0.0.1:10040': no filter chains specified "
             "@ static_resources.listeners[0]"),
            (messages.noImplementation("envoy.filters.http.router", "a.http_filters[0]"),
             "Didn't find a registered implementation for 'envoy.filters.http.router' with "
             "type URL: '' @ a.http_filters[0]"),
            (messages.noImplementation("m", "o.resource_monitors[0]", "x.v3.Y"),
             "Didn't find a registered implementation for 'm' with type URL: 'x.v3.Y' "
             "@ o.resource_monitors[0]"),
            (messages.malformedIpAddress("localhost", "c.address",
                                         messages.STATIC_ENDPOINT_HINT),
             "malformed IP address: localhost. Consider setting resolver_name or setting "
             "cluster type to 'STRICT_DNS' or 'LOGICAL_DNS' @ c.address"),
        ]
        for error, text in cases:
            self.assertIsInstance(error, ConfigError)
            self.assertEqual(error.message, text)
            self.assertEqual(pathOf(error), text.rsplit(" @ ", 1)[1])
