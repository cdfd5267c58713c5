"""
Tests for L{txenvoy.testing.proxy}: a user's Python filter, configured
through C{TypedStruct}, run in the in-memory connection manager.
"""

from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from txenvoy.config.registry import Category, FunctionFactory, register, unregister
from txenvoy.http.filter import FilterHeadersStatus, PassThroughFilter
from txenvoy.interfaces import IHttpFilterFactory
from txenvoy.testing import HttpProxyHarness

API_KEY = {
    "name": "example.api_key",
    "typed_config": {
        "@type": "type.googleapis.com/xds.type.v3.TypedStruct",
        "type_url": "type.googleapis.com/txenvoy.testing.example.ApiKey",
        "value": {"key": "s3cret"},
    },
}


class ApiKey(PassThroughFilter):
    """Answers 401 unless the request carries the configured key."""

    def __init__(self, callbacks, key):
        PassThroughFilter.__init__(self, callbacks)
        self.key = key

    def decodeHeaders(self, headers, endStream):
        if headers.headers.get(b"x-api-key") != self.key:
            self.callbacks.sendLocalReply(401, b"no key\n", details="api_key_missing")
            return FilterHeadersStatus.StopIteration
        headers.headers.remove(b"x-api-key")
        headers.headers.add(b"x-authenticated", b"yes")
        return FilterHeadersStatus.Continue


@implementer(IHttpFilterFactory)
class ApiKeyFactory:
    terminal = False

    def __init__(self, key):
        self.key = key.encode()

    def createFilter(self, callbacks):
        return ApiKey(callbacks, self.key)


API_KEY_FACTORY = FunctionFactory(Category.HTTP_FILTER, ["txenvoy.testing.example.ApiKey"],
                                  (), lambda message, context: ApiKeyFactory(message["key"]))


class HttpProxyHarnessTests(SynchronousTestCase):
    """
    One request at a time through a real connection manager, router and
    pool, in memory.
    """

    def setUp(self):
        # A filter package would register at import time with @extension;
        # this test's filter is registered for the test only.
        register(API_KEY_FACTORY)
        self.addCleanup(unregister, API_KEY_FACTORY)
        self.proxy = HttpProxyHarness(httpFilters=[API_KEY], testCase=self)

    def test_localReply(self):
        """
        A request the filter refuses gets its local reply and never reaches
        the upstream.
        """
        exchange = self.proxy.request("GET", "/")
        self.assertEqual(exchange.response.status, 401)
        self.assertEqual(exchange.response.body, b"no key\n")
        self.assertIsNone(exchange.upstreamRequest)
        self.assertEqual(self.proxy.stat("http.ingress.downstream_rq_4xx"), 1)

    def test_upstreamSeesTheFilteredRequest(self):
        """
        A request the filter lets through reaches the upstream with the
        filter's changes; the client gets the upstream's response.
        """
        exchange = self.proxy.request("GET", "/items?x=1", headers=[("x-api-key", "s3cret")])
        self.assertEqual(exchange.upstreamRequest.requestLine, "GET /items?x=1 HTTP/1.1")
        self.assertEqual(exchange.upstreamRequest.header("x-authenticated"), "yes")
        self.assertIsNone(exchange.upstreamRequest.header("x-api-key"))
        self.assertEqual((exchange.response.status, exchange.response.body), (200, b"ok"))
        self.assertEqual(len(self.proxy.accessLog.entries), 1)

    def test_requestBody(self):
        """
        A body is framed with a content-length and reaches the upstream.
        """
        exchange = self.proxy.request("POST", "/", headers=[("x-api-key", "s3cret")],
                                      body=b"hello")
        self.assertEqual(exchange.upstreamRequest.body, b"hello")
        self.assertEqual(exchange.upstreamRequest.header("content-length"), "5")

    def test_timersFollowTheClock(self):
        """
        Time moves only when the test moves it: an upstream that never
        answers gets Envoy's 504 once the route's timeout has passed.
        """
        proxy = HttpProxyHarness(
            routes=[{"match": {"prefix": "/"}, "route": {"cluster": "origin", "timeout": "2s"}}],
            testCase=self)
        down = proxy.connect()
        down.send(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
        proxy.upstream()
        proxy.advance(1.9)
        self.assertEqual(down.responses(), [])
        proxy.advance(0.2)
        response = down.response()
        self.assertEqual((response.status, response.body), (504, b"upstream request timeout"))
        self.assertEqual(proxy.stat("cluster.origin.upstream_rq_timeout"), 1)

    def test_upstreamRefused(self):
        """
        A refused upstream connection gives Envoy's 503.
        """
        down = self.proxy.connect()
        down.send(b"GET / HTTP/1.1\r\nhost: a\r\nx-api-key: s3cret\r\n\r\n")
        self.proxy.upstream(connect=False).fail()
        self.assertEqual(down.response().status, 503)
