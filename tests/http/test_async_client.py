"""
Tests for L{txenvoy.http.async_client}: requests txenvoy sends itself,
through a cluster's pools, on a fake reactor.
"""

from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from txenvoy.http.async_client import (
    NO_CLUSTER,
    TIMEOUT,
    AsyncHttpClient,
    IAsyncRequestCallbacks,
)
from txenvoy.http.headers import HeaderMap, RequestHeaders

from tests.http.hcm_harness import Harness


@implementer(IAsyncRequestCallbacks)
class _Outcome:
    def __init__(self):
        self.results = []

    def onSuccess(self, response, body):
        self.results.append(("success", response.status, body, response))

    def onFailure(self, reason):
        self.results.append(("failure", reason))


class AsyncHttpClientTests(SynchronousTestCase):

    def setUp(self):
        self.harness = Harness(self)
        self.client = AsyncHttpClient(self.harness.dispatcher)
        self.outcome = _Outcome()

    def send(self, cluster="origin", body=b"", timeout=1.0):
        request = RequestHeaders(b"POST", b"/x", b"svc", headers=HeaderMap([(b"a", b"1")]))
        return self.client.send(cluster, request, body, timeout, self.outcome)

    def test_request(self):
        """Envoy's async client headers: x-envoy-internal and the timeout."""
        self.send(body=b"hello")
        up = self.harness.upstream()
        line, headers = up.request()
        self.assertEqual(line, "POST /x HTTP/1.1")
        self.assertEqual(headers, [("host", "svc"), ("a", "1"), ("x-envoy-internal", "true"),
                                   ("x-envoy-expected-rq-timeout-ms", "1000"),
                                   ("content-length", "5")])
        self.assertTrue(up.received().endswith(b"\r\n\r\nhello"))
        up.respond(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok")
        [(kind, status, body, response)] = self.outcome.results
        self.assertEqual((kind, status, body), ("success", 201, b"ok"))
        self.assertEqual(response.headers.get(b"x-envoy-upstream-service-time"), b"0")
        self.assertEqual(self.harness.stat("cluster.origin.upstream_rq_201"), 1)
        self.assertEqual(self.harness.stat("cluster.origin.upstream_rq_active"), 0)

    def test_noCluster(self):
        self.send("nope")
        self.assertEqual(self.outcome.results, [("failure", NO_CLUSTER)])

    def test_timeout(self):
        self.send()
        up = self.harness.upstream()
        self.harness.advance(1.0)
        self.assertEqual(self.outcome.results, [("failure", TIMEOUT)])
        self.assertTrue(up.transport.disconnecting)
        self.assertEqual(self.harness.stat("cluster.origin.upstream_rq_timeout"), 1)

    def test_connectFailure(self):
        self.send()
        self.harness.upstream(connect=False).fail()
        self.assertEqual(len(self.outcome.results), 1)
        self.assertEqual(self.outcome.results[0][0], "failure")

    def test_cancel(self):
        """Cancelled while connecting: nothing is called, nothing is sent."""
        handle = self.send()
        handle.cancel()
        up = self.harness.upstream()
        self.assertEqual(up.received(), b"")
        self.harness.advance(2)
        self.assertEqual(self.outcome.results, [])
