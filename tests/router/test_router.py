"""
Tests for L{txenvoy.router.router}: the router filter driven through the
connection manager in memory (L{tests.http.hcm_harness}). Bodies and flags
marked "Envoy 1.40" were checked against the binary.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.http.conn_pool import poolsFor
from txenvoy.http.headers import RequestHeaders
from txenvoy.router.router import RouterConfig
from txenvoy.server.dispatcher import Dispatcher
from txenvoy.stats.store import StatsStore

from tests.http.hcm_harness import Harness
from tests.upstream.test_fakes import clusterProto, endpoint

GET = b"GET /o/x HTTP/1.1\r\nhost: example.com\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
RESET = (b"upstream connect error or disconnect/reset before headers. reset reason: ")
RETRIED = (b"upstream connect error or disconnect/reset before headers. retried and the "
           b"latest reset reason: ")


def headerDict(pairs):
    return dict(pairs)


class RouterTestCase(SynchronousTestCase):

    def setUp(self):
        self.h = self.harness()
        self.down = self.h.connect()

    def harness(self, **kw):
        h = Harness(self, **kw)
        for _, factory in h.config.filterFactories:
            # Back-off jitter at the middle of its range.
            factory.rng = lambda: 0.5
        return h

    def log(self, index=0):
        return self.h.logger.entries[index][0]


class LocalAnswerTests(RouterTestCase):

    def test_noHealthyUpstream(self):
        """Envoy 1.40: 503 "no healthy upstream", flag UH."""
        self.down.send(b"GET /empty/x HTTP/1.1\r\nhost: a\r\n\r\n")
        r = self.down.response()
        self.assertEqual((r.status, r.body), (503, b"no healthy upstream"))
        self.assertEqual(r.names(), ["content-length", "content-type", "date", "server"])
        self.assertEqual(self.log().responseFlags(), "UH")
        self.assertEqual(self.h.stat("cluster.empty.upstream_cx_none_healthy"), 1)
        self.assertEqual(self.h.stat("cluster.empty.upstream_rq_503"), 1)

    def test_unknownCluster(self):
        """Envoy 1.40: 503 with an empty body, flag NC, http.<p>.no_cluster."""
        self.down.send(b"GET /byheader/x HTTP/1.1\r\nhost: a\r\nx-cluster: nosuch\r\n\r\n")
        r = self.down.response()
        self.assertEqual((r.status, r.body), (503, b""))
        self.assertEqual(self.log().responseFlags(), "NC")
        self.assertEqual(self.h.stat("http.ingress.no_cluster"), 1)

    def test_clusterHeaderMissing(self):
        self.down.send(b"GET /byheader/x HTTP/1.1\r\nhost: a\r\n\r\n")
        self.assertEqual(self.down.response().status, 503)

    def test_clusterHeaderRoutes(self):
        self.down.send(b"GET /byheader/x HTTP/1.1\r\nhost: a\r\nx-cluster: origin\r\n\r\n")
        self.assertEqual(self.h.upstream().port, 8080)


class ForwardingTests(RouterTestCase):

    def test_rewrites(self):
        """
        Envoy 1.40: prefix_rewrite and host_rewrite_literal leave
        x-envoy-original-host and x-envoy-original-path, after the timeout
        header.
        """
        self.down.send(b"GET /rewrite/a?b HTTP/1.1\r\nhost: front\r\n\r\n")
        line, headers = self.h.upstream().request()
        self.assertEqual(line, "GET /x/a?b HTTP/1.1")
        self.assertEqual(headers[0], ("host", "up.internal"))
        self.assertEqual([n for n, _ in headers][-3:], [
            "x-envoy-expected-rq-timeout-ms", "x-envoy-original-host", "x-envoy-original-path"])
        d = headerDict(headers)
        self.assertEqual(d["x-envoy-original-host"], "front")
        self.assertEqual(d["x-envoy-original-path"], "/rewrite/a?b")

    def test_headerMutationsAfterTimeoutHeader(self):
        """Envoy 1.40 adds the route's request headers after x-envoy-expected-rq-timeout-ms."""
        h = self.harness(routes="""
- match: {prefix: "/"}
  route: {cluster: origin}
  request_headers_to_add: [{header: {key: x-added, value: "1"}}]
  response_headers_to_add: [{header: {key: x-resp, value: "2"}}]
""")
        down = h.connect()
        down.send(GET)
        up = h.upstream()
        names = [n for n, _ in up.request()[1]]
        self.assertEqual(names[-2:], ["x-envoy-expected-rq-timeout-ms", "x-added"])
        up.respond(OK)
        self.assertEqual(down.response().names(), [
            "content-length", "x-envoy-upstream-service-time", "x-resp", "date", "server"])

    def test_autoHostRewrite(self):
        h = self.harness(
            routes='[{match: {prefix: "/"}, route: {cluster: named, auto_host_rewrite: true}}]',
            clusters=[clusterProto("named", [endpoint("127.0.0.1", 8080,
                                                      hostname="origin.local")])])
        down = h.connect()
        down.send(GET)
        self.assertEqual(headerDict(h.upstream().request()[1])["host"], "origin.local")

    def test_timeoutHeader(self):
        """Envoy 1.40: x-envoy-expected-rq-timeout-ms is the route timeout..."""
        self.down.send(b"GET /timeout/x HTTP/1.1\r\nhost: a\r\n\r\n")
        self.assertEqual(headerDict(self.h.upstream().request()[1])
                         ["x-envoy-expected-rq-timeout-ms"], "2000")

    def test_perTryTimeoutHeader(self):
        """... or the per-try timeout when smaller (Envoy 1.40: 500 for 0.5s)."""
        self.down.send(b"GET /pertry/x HTTP/1.1\r\nhost: a\r\n\r\n")
        self.assertEqual(headerDict(self.h.upstream().request()[1])
                         ["x-envoy-expected-rq-timeout-ms"], "1000")

    def test_noTimeoutNoHeader(self):
        """Envoy 1.40: timeout: 0s sends no x-envoy-expected-rq-timeout-ms."""
        h = self.harness(routes='[{match: {prefix: "/"}, route: {cluster: origin, timeout: 0s}}]')
        down = h.connect()
        down.send(GET)
        self.assertNotIn("x-envoy-expected-rq-timeout-ms", headerDict(h.upstream().request()[1]))

    def test_suppressEnvoyHeaders(self):
        h = self.harness(filters=[{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
            "suppress_envoy_headers": True}}])
        down = h.connect()
        down.send(GET)
        up = h.upstream()
        self.assertNotIn("x-envoy-expected-rq-timeout-ms", headerDict(up.request()[1]))
        up.respond(OK)
        self.assertIsNone(down.response().header("x-envoy-upstream-service-time"))

    def test_serviceTime(self):
        self.down.send(GET)
        up = self.h.upstream()
        self.h.advance(0.25)
        up.respond(OK)
        self.assertEqual(self.down.response().header("x-envoy-upstream-service-time"), "250")

    def test_postBodyStreams(self):
        self.down.send(b"POST /o/x HTTP/1.1\r\nhost: a\r\ncontent-length: 6\r\n\r\nab")
        up = self.h.upstream()
        self.assertTrue(up.received().endswith(b"\r\n\r\nab"))
        self.down.send(b"cdef")
        self.assertTrue(up.received().endswith(b"\r\n\r\nabcdef"))

    def test_bodyHeldUntilConnected(self):
        self.down.send(b"POST /o/x HTTP/1.1\r\nhost: a\r\ncontent-length: 4\r\n\r\nabcd")
        up = self.h.upstream(connect=False)
        up.connect()
        self.assertTrue(up.received().endswith(b"\r\n\r\nabcd"))

    def test_chunkedRequest(self):
        """Envoy 1.40 forwards a chunked request chunked, transfer-encoding last."""
        self.down.send(b"POST /o/x HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n"
                       b"5\r\nhello\r\n0\r\n\r\n")
        up = self.h.upstream()
        head, _, body = up.received().partition(b"\r\n\r\n")
        self.assertTrue(head.endswith(b"transfer-encoding: chunked"))
        self.assertEqual(body, b"5\r\nhello\r\n0\r\n\r\n")

    def test_headResponse(self):
        self.down.send(b"HEAD /o/x HTTP/1.1\r\nhost: a\r\n\r\n")
        up = self.h.upstream()
        up.respond(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n")
        raw = self.down.written()
        self.assertIn(b"content-length: 10", raw)
        self.assertTrue(raw.endswith(b"\r\n\r\n"))
        self.down.send(GET)
        self.assertEqual(len(self.h.upstreams()), 1)

    def test_downstreamGoesAway(self):
        """The client leaves mid-request: the upstream connection is closed, flag DC."""
        self.down.send(GET)
        up = self.h.upstream()
        self.down.lose()
        self.assertTrue(up.transport.disconnecting)
        self.assertEqual(self.log().responseFlags(), "DC")
        self.assertEqual(self.h.stat("cluster.origin.upstream_rq_active"), 0)

    def test_downstreamGoesAwayWhileConnecting(self):
        self.down.send(GET)
        up = self.h.upstream(connect=False)
        self.down.lose()
        self.assertEqual(self.h.stat("cluster.origin.upstream_rq_pending_active"), 0)
        self.assertEqual(self.h.stat("cluster.origin.upstream_rq_cancelled"), 1)
        up.connect()
        # The connection that came up anyway waits for the next request.
        down = self.h.connect()
        down.send(GET)
        self.assertEqual(len(self.h.upstreams()), 1)


class FailureTests(RouterTestCase):

    def test_connectFailure(self):
        """Envoy 1.40: 503, its 98-byte body, flag UF, the host in the log."""
        self.down.send(b"GET /dead/x HTTP/1.1\r\nhost: a\r\n\r\n")
        self.h.upstream(connect=False).fail()
        r = self.down.response()
        self.assertEqual((r.status, r.body), (503, RESET + b"remote connection failure"))
        self.assertEqual(len(r.body), 98)
        info = self.log()
        self.assertEqual(info.responseFlags(), "UF")
        self.assertEqual(info.upstreamHost, "127.0.0.1:8081")
        self.assertEqual(self.h.stat("cluster.dead.upstream_rq_pending_failure_eject"), 1)
        self.assertEqual(self.h.stat("cluster.dead.upstream_rq_503"), 1)
        self.assertEqual(self.h.stat("cluster.dead.upstream_rq_total"), 0)

    def test_connectTimeout(self):
        self.down.send(b"GET /dead/x HTTP/1.1\r\nhost: a\r\n\r\n")
        self.h.advance(1.1)
        r = self.down.response()
        self.assertEqual(r.body, RESET + b"connection timeout")
        self.assertEqual(self.log().responseFlags(), "UF")

    def test_connectFailureRetried(self):
        """Envoy 1.40: "... retried and the latest reset reason ...", flags URX,UF."""
        self.down.send(b"GET /retry/x HTTP/1.1\r\nhost: a\r\n\r\n")
        self.h.upstream(connect=False).fail()
        self.assertEqual(len(self.h.upstreams()), 1)
        # Back-off: uniform below 25 ms, then below 75 ms.
        self.h.advance(0.0125)
        self.h.upstream(connect=False).fail()
        self.h.advance(0.0375)
        self.h.upstream(connect=False).fail()
        r = self.down.response()
        self.assertEqual((r.status, r.body), (503, RETRIED + b"remote connection failure"))
        self.assertEqual(self.log().responseFlags(), "URX,UF")
        self.assertEqual(self.h.stat("cluster.origin.upstream_rq_retry"), 2)
        self.assertEqual(self.h.stat("cluster.origin.upstream_rq_retry_limit_exceeded"), 1)

    def test_resetBeforeHeaders(self):
        """Envoy 1.40: the host closes before answering: 503 connection termination, UC."""
        self.down.send(GET)
        self.h.upstream().close()
        r = self.down.response()
        self.assertEqual((r.status, r.body), (503, RESET + b"connection termination"))
        self.assertEqual(self.log().responseFlags(), "UC")

    def test_protocolError(self):
        """Envoy 1.40: a garbage status line gives 502 protocol error, UPE."""
        self.down.send(GET)
        up = self.h.upstream()
        up.respond(b"HTTX/9 what\r\n\r\n")
        r = self.down.response()
        self.assertEqual((r.status, r.body), (502, RESET + b"protocol error"))
        self.assertEqual(self.log().responseFlags(), "UPE")
        self.assertTrue(up.transport.disconnecting)

    def test_resetAfterHeaders(self):
        """
        Envoy 1.40: the host closes mid-body: the client is cut off too (UPE),
        after delayed_close_timeout; the host's close counts as
        upstream_cx_protocol_error, and rq_reset_after_downstream_response_started
        stays 0 (Envoy counts it for gRPC only).
        """
        self.down.send(GET)
        up = self.h.upstream()
        up.respond(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        up.close()
        self.assertTrue(self.down.written().endswith(b"partial"))
        self.assertFalse(self.down.closed)
        self.h.advance(1.0)
        self.assertTrue(self.down.closed)
        self.assertEqual(self.log().responseFlags(), "UPE")
        self.assertEqual((self.h.stat("http.ingress.rq_reset_after_downstream_response_started"),
                          self.h.stat("http.ingress.downstream_rq_tx_reset"),
                          self.h.stat("http.ingress.downstream_rq_rx_reset"),
                          self.h.stat("http.ingress.downstream_rq_completed"),
                          self.h.stat("cluster.origin.upstream_cx_protocol_error")),
                         (0, 1, 1, 1, 1))

    def test_routeTimeout(self):
        """Envoy 1.40: 504 "upstream request timeout", flag UT."""
        self.down.send(b"GET /timeout/x HTTP/1.1\r\nhost: a\r\n\r\n")
        up = self.h.upstream()
        self.h.advance(1.9)
        self.assertEqual(self.down.written(), b"")
        self.h.advance(0.2)
        r = self.down.response()
        self.assertEqual((r.status, r.body), (504, b"upstream request timeout"))
        self.assertEqual(self.log().responseFlags(), "UT")
        self.assertTrue(up.transport.disconnecting)
        self.assertEqual(self.h.stat("cluster.origin.upstream_rq_timeout"), 1)
        self.assertEqual(self.h.stat("cluster.origin.upstream_rq_504"), 1)
        host = self.h.dispatcher.clusterManager.getThreadLocalCluster("origin").hosts[0]
        self.assertEqual(host.stats("rq_timeout"), 1)

    def test_routeTimeoutStartsWhenRequestComplete(self):
        """Envoy starts the route timeout once the whole request was received."""
        self.down.send(b"POST /timeout/x HTTP/1.1\r\nhost: a\r\ncontent-length: 2\r\n\r\n")
        self.h.upstream()
        self.h.advance(5)
        self.assertEqual(self.down.written(), b"")
        self.down.send(b"hi")
        self.h.advance(2.1)
        self.assertEqual(self.down.response().status, 504)

    def test_routeTimeoutAfterHeaders(self):
        """
        The timeout covers the whole response: past it the client is cut
        off, after delayed_close_timeout (Envoy 1.40).
        """
        self.down.send(b"GET /timeout/x HTTP/1.1\r\nhost: a\r\n\r\n")
        up = self.h.upstream()
        up.respond(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nsome")
        self.h.advance(2.1)
        self.assertFalse(self.down.closed)
        self.h.advance(1.0)
        self.assertTrue(self.down.closed)
        self.assertEqual(self.log().responseFlags(), "UT")

    def test_perTryTimeout(self):
        """Envoy 1.40: per-try timeouts use up the retries, then 504 with URX,UT."""
        self.down.send(b"GET /pertry/x HTTP/1.1\r\nhost: a\r\n\r\n")
        first = self.h.upstream()
        self.h.advance(1.0)
        self.assertTrue(first.transport.disconnecting)
        self.h.advance(0.0125)
        second = self.h.upstream()
        self.h.advance(1.0)
        r = self.down.response()
        self.assertEqual((r.status, r.body), (504, b"upstream request timeout"))
        self.assertEqual(self.log().responseFlags(), "URX,UT")
        self.assertTrue(second.transport.disconnecting)
        self.assertEqual(self.h.stat("cluster.origin.upstream_rq_per_try_timeout"), 2)
        self.assertEqual(self.h.stat("cluster.origin.upstream_rq_timeout"), 0)

    def test_overflow(self):
        """Envoy 1.40: past max_pending_requests, 503 overflow with x-envoy-overloaded."""
        tlc = self.h.dispatcher.clusterManager.getThreadLocalCluster("origin")
        poolsFor(tlc).pendingRequests.max = 0
        self.down.send(GET)
        r = self.down.response()
        self.assertEqual((r.status, r.body), (503, RESET + b"overflow"))
        self.assertEqual(r.header("x-envoy-overloaded"), "true")
        self.assertEqual(self.log().responseFlags(), "UO")
        self.assertEqual(self.h.stat("cluster.origin.upstream_rq_pending_overflow"), 1)


class IdleCloseRaceTests(RouterTestCase):
    """
    A host closes a kept-alive connection as idle just as a request is
    written to it: the host never answers a byte.
    """

    def reusedThenClosed(self, request):
        self.down.send(GET)
        up = self.h.upstream()
        up.respond(OK)
        self.assertEqual(self.down.response().status, 200)
        self.down.send(request)
        self.assertEqual(len(self.h.upstreams()), 1)
        up.close()
        return up

    def test_idempotentSentAgain(self):
        """
        A GET is sent again at once on a fresh connection, without spending
        a retry (there is no retry policy here) or counting one.
        """
        self.reusedThenClosed(GET)
        self.assertEqual(len(self.h.upstreams()), 2)
        up = self.h.upstream()
        self.assertEqual(up.request()[0], "GET /o/x HTTP/1.1")
        up.respond(OK)
        self.assertEqual(self.down.responses()[-1].status, 200)
        self.assertEqual(self.h.stat("cluster.origin.upstream_rq_retry"), 0)
        self.assertEqual(
            self.h.stat("cluster.origin.upstream_cx_destroy_remote_with_active_rq"), 1)

    def test_nonIdempotentFails(self):
        """A POST may have been read: it gets Envoy's 503 (UC), never a second send."""
        self.reusedThenClosed(b"POST /o/x HTTP/1.1\r\nhost: a\r\ncontent-length: 2\r\n\r\nhi")
        self.assertEqual(len(self.h.upstreams()), 1)
        r = self.down.responses()[-1]
        self.assertEqual((r.status, r.body), (503, RESET + b"connection termination"))
        self.assertEqual(self.log(1).responseFlags(), "UC")

    def test_firstRequestOnConnectionFails(self):
        """On a fresh connection a close before any answer is no idle race: 503."""
        self.down.send(GET)
        self.h.upstream().close()
        self.assertEqual(self.down.response().status, 503)
        self.assertEqual(len(self.h.upstreams()), 1)


class MaxStreamDurationTests(RouterTestCase):
    """
    The cluster's common_http_protocol_options.max_stream_duration, as
    Envoy 1.40 answered the same config (504 "upstream max stream duration
    reached", flag UMSDR, upstream_rq_max_duration_reached, no code charged).
    """

    def durationHarness(self, **route):
        key = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        routeYaml = ", ".join("%s: %s" % item for item in route.items())
        return self.harness(
            routes='[{match: {prefix: "/"}, route: {cluster: slow%s}}]'
                   % (", " + routeYaml if routeYaml else ""),
            clusters=[clusterProto("slow", [endpoint("127.0.0.1", 8080)],
                                   typed_extension_protocol_options={key: {
                                       "@type": "type.googleapis.com/" + key,
                                       "common_http_protocol_options": {
                                           "max_stream_duration": "0.5s"}}})])

    def test_reached(self):
        h = self.durationHarness()
        down = h.connect()
        down.send(GET)
        up = h.upstream()
        h.advance(0.49)
        self.assertEqual(down.written(), b"")
        h.advance(0.01)
        r = down.response()
        self.assertEqual((r.status, r.body), (504, b"upstream max stream duration reached"))
        self.assertEqual(h.logger.entries[0][0].responseFlags(), "UMSDR")
        self.assertTrue(up.transport.disconnecting)
        self.assertEqual((h.stat("cluster.slow.upstream_rq_max_duration_reached"),
                          h.stat("cluster.slow.upstream_rq_504"),
                          h.stat("cluster.slow.upstream_rq_completed")), (1, 0, 0))

    def test_requestStillArriving(self):
        """Before the whole request arrived Envoy answers 408."""
        h = self.durationHarness()
        down = h.connect()
        down.send(b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 10\r\n\r\nabc")
        h.upstream()
        h.advance(0.5)
        self.assertEqual(down.response().status, 408)

    def test_completeInTime(self):
        """A response that ends in time stops the timer."""
        h = self.durationHarness()
        down = h.connect()
        down.send(GET)
        h.upstream().respond(OK)
        self.assertEqual(down.response().status, 200)
        h.advance(1)
        self.assertEqual(h.stat("cluster.slow.upstream_rq_max_duration_reached"), 0)


class RetryTests(RouterTestCase):

    def test_retriesExhausted(self):
        """Envoy 1.40: after num_retries the host's last 5xx is passed on, flag URX."""
        self.down.send(b"GET /retry/x HTTP/1.1\r\nhost: a\r\n\r\n")
        for delay in (0.0125, 0.0375, None):
            up = self.h.upstream()
            up.respond(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy")
            if delay is not None:
                self.assertEqual(self.down.written(), b"")
                self.h.advance(delay)
        r = self.down.response()
        self.assertEqual((r.status, r.body), (503, b"busy"))
        self.assertEqual(self.log().responseFlags(), "URX")
        self.assertEqual(self.h.stat("cluster.origin.upstream_rq_retry"), 2)
        self.assertEqual(self.h.stat("cluster.origin.upstream_rq_retry_limit_exceeded"), 1)
        self.assertEqual(self.h.stat("cluster.origin.upstream_rq_503"), 1)
        self.assertEqual(self.h.stat("cluster.origin.upstream_rq_total"), 3)
        self.assertEqual(self.h.stat("cluster.origin.upstream_rq_active"), 0)

    def test_retrySucceeds(self):
        self.down.send(b"GET /retry/x HTTP/1.1\r\nhost: a\r\n\r\n")
        self.h.upstream().respond(b"HTTP/1.1 500 Oops\r\ncontent-length: 0\r\n\r\n")
        self.h.advance(0.0125)
        self.h.upstream().respond(OK)
        r = self.down.response()
        self.assertEqual((r.status, r.body), (200, b"ok"))
        self.assertEqual(self.log().responseFlags(), "-")
        self.assertEqual(self.h.stat("cluster.origin.upstream_rq_retry_success"), 1)

    def test_retryResendsBody(self):
        self.down.send(b"POST /retry/x HTTP/1.1\r\nhost: a\r\ncontent-length: 4\r\n\r\nab")
        first = self.h.upstream()
        self.down.send(b"cd")
        self.assertTrue(first.received().endswith(b"abcd"))
        first.respond(b"HTTP/1.1 503 X\r\ncontent-length: 0\r\n\r\n")
        self.h.advance(0.0125)
        second = self.h.upstream()
        head, _, body = second.received().partition(b"\r\n\r\n")
        self.assertEqual(body, b"abcd")

    def test_retryWhileBodyStreams(self):
        """The retried attempt gets the body so far, then the rest as it comes."""
        self.down.send(b"POST /retry/x HTTP/1.1\r\nhost: a\r\ncontent-length: 4\r\n\r\nab")
        self.h.upstream().close()
        self.h.advance(0.0125)
        second = self.h.upstream()
        self.assertTrue(second.received().endswith(b"\r\n\r\nab"))
        self.down.send(b"cd")
        self.assertTrue(second.received().endswith(b"\r\n\r\nabcd"))

    def test_bigBodyAbandonsRetries(self):
        """Past the buffer limit the body is not kept, and retries are given up."""
        size = 1024 * 1024 + 10
        self.down.send(b"POST /retry/x HTTP/1.1\r\nhost: a\r\ncontent-length: %d\r\n\r\n" % size)
        up = self.h.upstream()
        self.down.send(b"x" * size)
        self.assertEqual(self.h.stat("cluster.origin.retry_or_shadow_abandoned"), 1)
        up.respond(b"HTTP/1.1 503 X\r\ncontent-length: 0\r\n\r\n")
        self.assertEqual(self.down.responses()[0].status, 503)
        self.assertEqual(len(self.h.upstreams()), 1)

    def test_notRetriedWithoutPolicy(self):
        self.down.send(GET)
        self.h.upstream().respond(b"HTTP/1.1 503 X\r\ncontent-length: 0\r\n\r\n")
        self.assertEqual(self.down.response().status, 503)
        self.assertEqual(self.log().responseFlags(), "-")

    def test_gatewayErrorAndRetriable4xx(self):
        h = self.harness(routes="""
- match: {prefix: "/"}
  route:
    cluster: origin
    retry_policy: {retry_on: "gateway-error,retriable-4xx,retriable-status-codes",
                   num_retries: 3, retriable_status_codes: [418]}
""")
        down = h.connect()
        down.send(GET)
        for status in (502, 409, 418, 500):
            h.upstream().respond(b"HTTP/1.1 %d X\r\ncontent-length: 0\r\n\r\n" % (status,))
            h.advance(1)
        self.assertEqual(down.response().status, 500)
        self.assertEqual(len(h.upstreams()), 4)

    def test_rateLimitedResetHeaders(self):
        """
        Envoy's rate_limited_retry_back_off: the first reset header within
        max_interval sets this retry's back-off to [interval, 1.5 x
        interval) (the middle here), counted as
        upstream_rq_retry_backoff_ratelimited; a response without one
        backs off exponentially. A UNIX_TIMESTAMP counts from now.
        """
        h = self.harness(routes="""
- match: {prefix: "/"}
  route:
    cluster: origin
    retry_policy:
      retry_on: "envoy-ratelimited,retriable-headers"
      num_retries: 3
      retriable_headers: [{name: x-again, present_match: true}]
      rate_limited_retry_back_off:
        reset_headers: [{name: x-too-far}, {name: x-at, format: UNIX_TIMESTAMP},
                        {name: retry-after}]
        max_interval: 30s
""")
        h.advance(1000)
        down = h.connect()
        down.send(GET)
        h.upstream().respond(b"HTTP/1.1 429 X\r\nx-envoy-ratelimited: true\r\n"
                             b"x-too-far: 60\r\nretry-after: 2\r\ncontent-length: 0\r\n\r\n")
        h.advance(2.49)
        self.assertEqual(len(h.upstreams()), 1)
        h.advance(0.01)
        self.assertEqual(len(h.upstreams()), 2)
        h.upstream().respond(b"HTTP/1.1 200 OK\r\nx-at: 1006\r\nx-again: 1\r\n"
                             b"content-length: 0\r\n\r\n")
        # Now 1002.5: 4 s to 1006, jittered to 5 s.
        h.advance(4.99)
        self.assertEqual(len(h.upstreams()), 2)
        h.advance(0.01)
        h.upstream().respond(b"HTTP/1.1 200 OK\r\nx-again: 1\r\ncontent-length: 0\r\n\r\n")
        h.advance(1)
        h.upstream().respond(OK)
        self.assertEqual(down.response().status, 200)
        self.assertEqual(len(h.upstreams()), 4)
        stat = h.stat
        self.assertEqual((stat("cluster.origin.upstream_rq_retry_backoff_ratelimited"),
                          stat("cluster.origin.upstream_rq_retry_backoff_exponential"),
                          stat("cluster.origin.retry.upstream_rq_429"),
                          stat("cluster.origin.retry.upstream_rq_200"),
                          stat("cluster.origin.upstream_rq_200"),
                          stat("cluster.origin.external.upstream_rq_200")), (2, 1, 1, 2, 1, 1))

    def test_retriableRequestHeaders(self):
        """A request none of retriable_request_headers matches is never retried (Envoy)."""
        h = self.harness(routes="""
- match: {prefix: "/"}
  route:
    cluster: origin
    retry_policy: {retry_on: 5xx, num_retries: 1,
                   retriable_request_headers: [{name: x-retry-me, present_match: true}]}
""")
        down = h.connect()
        down.send(GET)
        h.upstream().respond(b"HTTP/1.1 503 X\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
        self.assertEqual(down.response().status, 503)
        down.send(b"GET /o/x HTTP/1.1\r\nhost: example.com\r\nx-retry-me: 1\r\n\r\n")
        h.upstream().respond(b"HTTP/1.1 503 X\r\ncontent-length: 0\r\n\r\n")
        h.advance(1)
        h.upstream().respond(OK)
        self.assertEqual(down.response().status, 200)
        self.assertEqual(h.stat("cluster.origin.upstream_rq_retry"), 1)

    def test_retryOverflow(self):
        tlc = self.h.dispatcher.clusterManager.getThreadLocalCluster("origin")
        poolsFor(tlc).retries.max = 0
        self.down.send(b"GET /retry/x HTTP/1.1\r\nhost: a\r\n\r\n")
        self.h.upstream().respond(b"HTTP/1.1 503 X\r\ncontent-length: 0\r\n\r\n")
        self.assertEqual(self.down.response().status, 503)
        self.assertEqual(self.h.stat("cluster.origin.upstream_rq_retry_overflow"), 1)

    def test_internalRequestHeaders(self):
        """From an internal address, x-envoy-max-retries and x-envoy-retry-on are honoured."""
        h = self.harness(hcm={"internal_address_config": {"cidr_ranges": [
            {"address_prefix": "10.0.0.0", "prefix_len": 8}]}})
        down = h.connect()
        down.send(b"GET /o/x HTTP/1.1\r\nhost: a\r\nx-envoy-retry-on: 5xx\r\n"
                  b"x-envoy-max-retries: 1\r\nx-envoy-upstream-rq-timeout-ms: 700\r\n\r\n")
        first = h.upstream()
        d = headerDict(first.request()[1])
        self.assertEqual(d["x-envoy-expected-rq-timeout-ms"], "700")
        self.assertNotIn("x-envoy-upstream-rq-timeout-ms", d)
        first.respond(b"HTTP/1.1 503 X\r\ncontent-length: 0\r\n\r\n")
        h.advance(0.02)
        h.upstream()
        h.advance(0.7)
        self.assertEqual(down.response().status, 504)


class FlowControlTests(RouterTestCase):

    def test_uploadBackPressure(self):
        """The upstream connection's buffer is full: the downstream stops being read."""
        self.down.send(b"POST /o/x HTTP/1.1\r\nhost: a\r\ncontent-length: 100\r\n\r\nab")
        up = self.h.upstream()
        producer = up.transport.producer
        producer.pauseProducing()
        # The socket is paused once more bytes come (see PausingTests).
        self.down.send(b"cd")
        self.assertEqual(self.down.transport.producerState, "paused")
        producer.resumeProducing()
        self.assertEqual(self.down.transport.producerState, "producing")

    def test_downloadBackPressure(self):
        """The downstream connection's buffer is full: the response stops being read."""
        self.down.send(GET)
        up = self.h.upstream()
        up.respond(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nab")
        self.down.transport.producer.pauseProducing()
        self.assertEqual(up.transport.producerState, "paused")
        self.down.transport.producer.resumeProducing()
        self.assertEqual(up.transport.producerState, "producing")

    def test_pausedWhileConnecting(self):
        """Body bytes beyond the buffer limit wait, unread, for the connection."""
        size = 1024 * 1024 + 100
        self.down.send(b"POST /o/x HTTP/1.1\r\nhost: a\r\ncontent-length: %d\r\n\r\n" % size)
        up = self.h.upstream(connect=False)
        self.down.send(b"x" * (size - 50))
        self.down.send(b"x" * 25)
        self.assertEqual(self.down.transport.producerState, "paused")
        up.connect()
        self.assertEqual(self.down.transport.producerState, "producing")
        self.down.send(b"y" * 25)
        head, _, body = up.received().partition(b"\r\n\r\n")
        self.assertEqual(len(body), size)


class ServiceTimeTests(RouterTestCase):

    def test_includesRetries(self):
        """Envoy times x-envoy-upstream-service-time from the end of the request."""
        self.down.send(b"GET /retry/x HTTP/1.1\r\nhost: a\r\n\r\n")
        self.h.advance(0.1)
        self.h.upstream().respond(b"HTTP/1.1 503 X\r\ncontent-length: 0\r\n\r\n")
        self.h.advance(0.0125)
        up = self.h.upstream()
        self.h.advance(0.1)
        up.respond(OK)
        self.assertEqual(self.down.response().header("x-envoy-upstream-service-time"), "212")


class RouteIdleTimeoutTests(RouterTestCase):

    def test_routeIdleTimeout(self):
        """A route's idle_timeout replaces stream_idle_timeout (Envoy: 504 "stream timeout")."""
        h = self.harness(routes=(
            '[{match: {prefix: "/"}, route: {cluster: origin, timeout: 0s, idle_timeout: 2s}}]'))
        down = h.connect()
        down.send(GET)
        up = h.upstream()
        h.advance(1.5)
        up.respond(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
        h.advance(1.9)
        self.assertEqual(h.logger.entries, [])
        h.advance(0.2)
        self.assertEqual(h.logger.entries[0][0].responseFlags(), "SI")
        # The stream is reset; its connection closes after delayed_close_timeout.
        self.assertFalse(down.closed)
        h.advance(1.0)
        self.assertTrue(down.closed)

    def test_routeIdleTimeoutDisables(self):
        h = self.harness(routes=(
            '[{match: {prefix: "/"}, route: {cluster: origin, timeout: 0s, idle_timeout: 0s}}]'),
            hcm={"stream_idle_timeout": "1s"})
        down = h.connect()
        down.send(GET)
        h.upstream()
        h.advance(100)
        self.assertEqual(down.written(), b"")


class _NoRoute:
    """Filter callbacks of a stream with no route, on one worker."""

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher
        self.streamInfo = self
        self.replies = []

    def route(self):
        return None

    def setResponseFlag(self, flag):
        pass

    def sendLocalReply(self, code, body, modify, details):
        self.replies.append(code)


class WorkerStatsTests(SynchronousTestCase):
    """
    One router configuration serves every worker; each request counts in
    its own worker's stats, whichever worker served the request before.
    """

    def test_alternatingWorkers(self):
        store = StatsStore()
        workers = [Dispatcher(Clock(), "worker_%d" % (i,), store.shard("worker_%d" % (i,)))
                   for i in range(2)]
        config = RouterConfig("ingress.")
        request = RequestHeaders(b"GET", b"/", b"a")
        for i in (0, 1, 0, 0, 1, 0):
            callbacks = _NoRoute(workers[i])
            config.createFilter(callbacks).decodeHeaders(request, True)
            self.assertEqual(callbacks.replies, [404])
        self.assertEqual([config.statsFor(w).no_route.value for w in workers], [4, 2])
        self.assertEqual([config.statsFor(w).rq_total.value for w in workers], [4, 2])
        self.assertIsNot(config.statsFor(workers[0]), config.statsFor(workers[1]))

    def test_newConfiguration(self):
        """A replaced configuration (a listener update) counts in fresh stats of its own."""
        store = StatsStore()
        worker = Dispatcher(Clock(), "worker_0", store.shard("worker_0"))
        request = RequestHeaders(b"GET", b"/", b"a")
        old, new = RouterConfig("ingress."), RouterConfig("other.")
        for config in (old, new, new):
            config.createFilter(_NoRoute(worker)).decodeHeaders(request, True)
        self.assertEqual((old.statsFor(worker).no_route.value, new.statsFor(worker).no_route.value),
                         (1, 2))
        self.assertEqual(new.lastStats, ("worker_0", new.statsFor(worker)))
