"""Tests for L{txenvoy.upstream.load_balancer_context}."""

from twisted.trial.unittest import SynchronousTestCase

from txenvoy.http.headers import HeaderMap, RequestHeaders
from txenvoy.upstream.load_balancer_context import LoadBalancerContext


class RequestHeaderTests(SynchronousTestCase):

    def test_firstValue(self):
        """Only the first value of a repeated header is read, as Envoy does."""
        ctx = LoadBalancerContext(None, RequestHeaders(b"GET", b"/", b"h", headers=HeaderMap(
            [(b"x-a", b"1"), (b"x-a", b"2")])))
        self.assertEqual(ctx.requestHeader("x-a"), b"1")
        self.assertEqual(ctx.requestHeader(b"x-a"), b"1")
        self.assertEqual(ctx.requestHeader(":authority"), b"h")
        self.assertIsNone(ctx.requestHeader("x-b"))

    def test_tcp(self):
        """A TCP connection has no headers."""
        self.assertIsNone(LoadBalancerContext(object()).requestHeader("x-a"))
