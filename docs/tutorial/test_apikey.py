"""
Tests of the tutorial's API key filter, with L{txenvoy.testing}: the filter
runs inside a real connection manager, router and pool, in memory.
"""

from twisted.trial.unittest import SynchronousTestCase

import apikey  # noqa: F401 (registers example.ApiKey)
from txenvoy.testing import HttpProxyHarness

API_KEY = {
    "name": "example.api_key",
    "typed_config": {
        "@type": "type.googleapis.com/xds.type.v3.TypedStruct",
        "type_url": "type.googleapis.com/example.ApiKey",
        "value": {"header": "x-api-key", "keys": ["s3cret"]},
    },
}


class ApiKeyTests(SynchronousTestCase):

    def setUp(self):
        self.proxy = HttpProxyHarness(httpFilters=[API_KEY], testCase=self)

    def test_missingKey(self):
        exchange = self.proxy.request("GET", "/orders")
        self.assertEqual(exchange.response.status, 401)
        self.assertEqual(exchange.response.body, b"missing or unknown API key\n")
        self.assertIsNone(exchange.upstreamRequest)
        self.assertEqual(self.proxy.stat("http.ingress.api_key.denied"), 1)

    def test_rightKey(self):
        exchange = self.proxy.request("GET", "/orders", headers=[("x-api-key", "s3cret")])
        self.assertEqual(exchange.response.status, 200)
        self.assertEqual(exchange.upstreamRequest.path, "/orders")
        self.assertIsNone(exchange.upstreamRequest.header("x-api-key"))
        self.assertEqual(self.proxy.stat("http.ingress.api_key.allowed"), 1)
