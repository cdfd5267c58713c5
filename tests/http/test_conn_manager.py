"""
Tests for L{txenvoy.http.conn_manager}: the connection manager driven in
memory (see L{tests.http.hcm_harness}). Behaviours marked "Envoy 1.40"
were checked against the binary (the e2e comparison tests run both).
"""

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from txenvoy.http.conn_manager import Timer, TimerSet
from txenvoy.http.conn_manager_utility import (
    machineAddress,
    mergeSlashes,
    normalizePath,
    requestId,
)
from txenvoy.http.filter import (
    DECODE_NAMES,
    FilterDataStatus,
    FilterHeadersStatus,
    FilterIteration,
    FilterSlot,
    FilterTrailersStatus,
    IStreamFilterCallbacks,
    PassThroughFilter,
    SingleFilterSlot,
)
from txenvoy.http.headers import RequestHeaders

from tests.http.hcm_harness import Harness

GET = b"GET /o/x HTTP/1.1\r\nhost: example.com\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


def headerDict(pairs):
    return dict(pairs)



def assertDelayedClose(case, h, down, timeout=1.0):
    """
    Envoy's FlushWriteAndDelay: the connection stays open for
    delayed_close_timeout (1 s) after a reply that closes it, then closes,
    counting downstream_cx_delayed_close_timeout.
    """
    before = h.stat("http.ingress.downstream_cx_delayed_close_timeout")
    case.assertFalse(down.closed)
    h.advance(timeout - 0.01)
    case.assertFalse(down.closed)
    h.advance(0.02)
    case.assertTrue(down.closed)
    case.assertEqual(h.stat("http.ingress.downstream_cx_delayed_close_timeout"), before + 1)

class ProxiedRequestTests(SynchronousTestCase):
    """What the connection manager adds and strips on a proxied request."""

    def setUp(self):
        self.h = Harness(self)
        self.down = self.h.connect()

    def forward(self, request=GET, response=OK):
        self.down.send(request)
        up = self.h.upstream()
        line, headers = up.request()
        up.respond(response)
        return line, headers, up

    def test_addedUpstream(self):
        """
        Envoy 1.40 adds x-forwarded-proto, x-request-id and
        x-envoy-expected-rq-timeout-ms, in that order, after the client's
        headers; no x-forwarded-for without use_remote_address.
        """
        line, headers, _ = self.forward(
            b"GET /o/x?y=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\n\r\n")
        self.assertEqual(line, "GET /o/x?y=1 HTTP/1.1")
        self.assertEqual([n for n, _ in headers],
                         ["host", "user-agent", "x-forwarded-proto", "x-request-id",
                          "x-envoy-expected-rq-timeout-ms"])
        d = headerDict(headers)
        self.assertEqual(d["x-forwarded-proto"], "http")
        self.assertEqual(d["x-envoy-expected-rq-timeout-ms"], "15000")
        self.assertEqual(len(d["x-request-id"]), 36)

    def test_httpsOverTls(self):
        h = Harness(self)
        down = h.connect(ssl=object())
        down.send(GET)
        self.assertEqual(headerDict(h.upstream().request()[1])["x-forwarded-proto"], "https")

    def test_hopByHopStripped(self):
        """Envoy 1.40 strips keep-alive, proxy-connection, connection; keeps te: trailers."""
        _, headers, _ = self.forward(
            b"GET /o/x HTTP/1.1\r\nhost: a\r\nconnection: keep-alive\r\nkeep-alive: 5\r\n"
            b"proxy-connection: x\r\nte: gzip, trailers\r\n\r\n")
        d = headerDict(headers)
        for name in ("connection", "keep-alive", "proxy-connection"):
            self.assertNotIn(name, d)
        self.assertEqual(d["te"], "trailers")

    def test_teWithoutTrailersStripped(self):
        _, headers, _ = self.forward(b"GET /o/x HTTP/1.1\r\nhost: a\r\nte: gzip\r\n\r\n")
        self.assertNotIn("te", headerDict(headers))

    def test_externalEnvoyHeadersStripped(self):
        """
        Envoy 1.40 (default internal_address_config: no address is
        internal) strips the x-envoy-* control headers of an external
        request, and x-envoy-internal, but keeps other x-envoy-* headers.
        """
        _, headers, _ = self.forward(
            b"GET /o/x HTTP/1.1\r\nhost: a\r\nx-envoy-retry-on: 5xx\r\nx-envoy-max-retries: 3\r\n"
            b"x-envoy-upstream-rq-timeout-ms: 1\r\nx-envoy-internal: true\r\n"
            b"x-envoy-original-path: /zz\r\nx-envoy-foo: 1\r\n"
            b"x-envoy-expected-rq-timeout-ms: 5\r\n\r\n")
        d = headerDict(headers)
        for name in ("x-envoy-retry-on", "x-envoy-max-retries", "x-envoy-upstream-rq-timeout-ms",
                     "x-envoy-internal"):
            self.assertNotIn(name, d)
        self.assertEqual(d["x-envoy-foo"], "1")
        self.assertEqual(d["x-envoy-original-path"], "/zz")
        self.assertEqual(d["x-envoy-expected-rq-timeout-ms"], "15000")

    def test_clientRequestIdKept(self):
        """Envoy 1.40 keeps a client's x-request-id when use_remote_address is off."""
        _, headers, _ = self.forward(b"GET /o/x HTTP/1.1\r\nhost: a\r\nx-request-id: abc\r\n\r\n")
        self.assertEqual(headerDict(headers)["x-request-id"], "abc")

    def test_emptyRequestIdReplacedInPlace(self):
        """Envoy 1.40 replaces an empty x-request-id where it stood."""
        _, headers, _ = self.forward(b"GET /o/x HTTP/1.1\r\nhost: a\r\nx-request-id: \r\n"
                                     b"accept: */*\r\n\r\n")
        self.assertEqual(headers[1][0], "x-request-id")
        self.assertEqual(len(headers[1][1]), 36)

    def test_forwardedProtoKept(self):
        """Envoy 1.40 keeps a client's x-forwarded-proto without use_remote_address."""
        _, headers, _ = self.forward(
            b"GET /o/x HTTP/1.1\r\nhost: a\r\nx-forwarded-proto: https\r\n\r\n")
        self.assertEqual(headerDict(headers)["x-forwarded-proto"], "https")

    def test_clientCertSanitized(self):
        """forward_client_cert_details SANITIZE (the default) drops x-forwarded-client-cert."""
        _, headers, _ = self.forward(
            b"GET /o/x HTTP/1.1\r\nhost: a\r\nx-forwarded-client-cert: x\r\n\r\n")
        self.assertNotIn("x-forwarded-client-cert", headerDict(headers))

    def test_responseHeaders(self):
        """
        Envoy 1.40: the upstream's date is kept, server is overwritten in
        place, hop-by-hop headers are dropped, and
        x-envoy-upstream-service-time is added.
        """
        self.forward(response=b"HTTP/1.1 200 OK\r\ndate: Mon, 01 Jan 2001 00:00:00 GMT\r\n"
                              b"server: origin\r\nconnection: keep-alive\r\nkeep-alive: 5\r\n"
                              b"content-length: 2\r\n\r\nok")
        r = self.down.response()
        self.assertEqual(r.names(), ["date", "server", "content-length",
                                     "x-envoy-upstream-service-time"])
        self.assertEqual(r.header("server"), "envoy")
        self.assertEqual(r.header("date"), "Mon, 01 Jan 2001 00:00:00 GMT")

    def test_responseHopByHopFirst(self):
        """
        Hop-by-hop headers before server: server is still overwritten in
        its own place (after them, once they are gone) and a second one
        dropped.
        """
        self.forward(response=b"HTTP/1.1 200 OK\r\nconnection: keep-alive\r\nkeep-alive: 5\r\n"
                              b"server: origin\r\ndate: Mon, 01 Jan 2001 00:00:00 GMT\r\n"
                              b"server: again\r\ncontent-length: 2\r\n\r\nok")
        r = self.down.response()
        self.assertEqual(r.names(), ["server", "date", "content-length",
                                     "x-envoy-upstream-service-time"])
        self.assertEqual(r.header("server"), "envoy")

    def test_dateAndServerAdded(self):
        """Envoy 1.40: without them, date and server come after the router's header."""
        self.forward()
        r = self.down.response()
        self.assertEqual(r.names(), ["content-length", "x-envoy-upstream-service-time", "date",
                                     "server"])

    def test_chunkedWhenCloseDelimited(self):
        """A response ended by the upstream's close goes downstream chunked."""
        self.down.send(GET)
        up = self.h.upstream()
        up.respond(b"HTTP/1.1 200 OK\r\n\r\nsome")
        up.respond(b" more")
        up.close()
        r = self.down.response()
        self.assertEqual(r.header("transfer-encoding"), "chunked")
        self.assertEqual(r.body, b"some more")
        self.assertFalse(self.down.closed)

    def test_expectContinue(self):
        """Envoy answers 100 Continue itself and drops Expect."""
        self.down.send(b"POST /o/x HTTP/1.1\r\nhost: a\r\ncontent-length: 2\r\n"
                       b"expect: 100-continue\r\n\r\n")
        self.assertEqual(self.down.written(), b"HTTP/1.1 100 Continue\r\n\r\n")
        up = self.h.upstream()
        self.assertNotIn("expect", headerDict(up.request()[1]))
        self.down.send(b"hi")
        self.assertTrue(up.received().endswith(b"\r\n\r\nhi"))
        self.assertEqual(self.h.stat("http.ingress.downstream_rq_1xx"), 1)

    def test_keepAliveThenPipelined(self):
        """Pipelined requests are answered in order on one upstream connection."""
        self.down.send(GET + GET)
        up = self.h.upstream()
        up.respond(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\na")
        up.respond(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nb")
        self.assertEqual([r.body for r in self.down.responses()], [b"a", b"b"])
        self.assertEqual(len(self.h.upstreams()), 1)
        self.assertEqual(up.received().count(b"GET /o/x"), 2)

    def test_stats(self):
        self.forward()
        for name, value in [("http.ingress.downstream_cx_total", 1),
                            ("http.ingress.downstream_cx_active", 1),
                            ("http.ingress.downstream_cx_http1_total", 1),
                            ("http.ingress.downstream_cx_http1_active", 1),
                            ("http.ingress.downstream_rq_total", 1),
                            ("http.ingress.downstream_rq_http1_total", 1),
                            ("http.ingress.downstream_rq_active", 0),
                            ("http.ingress.downstream_rq_completed", 1),
                            ("http.ingress.downstream_rq_2xx", 1),
                            ("http.ingress.rq_total", 1),
                            ("listener.127.0.0.1_10000.http.ingress.downstream_rq_2xx", 1),
                            ("listener.127.0.0.1_10000.http.ingress.downstream_rq_completed", 1),
                            ("cluster.origin.upstream_rq_total", 1),
                            ("cluster.origin.upstream_rq_200", 1),
                            ("cluster.origin.upstream_rq_2xx", 1),
                            ("cluster.origin.upstream_rq_completed", 1),
                            ("cluster.origin.upstream_rq_active", 0),
                            ("cluster.origin.upstream_cx_http1_total", 1)]:
            self.assertEqual(self.h.stat(name), value, name)
        self.assertGreater(self.h.stat("http.ingress.downstream_cx_rx_bytes_total"), 0)
        self.assertGreater(self.h.stat("http.ingress.downstream_cx_tx_bytes_total"), 0)
        histograms = self.h.store.snapshot().histograms
        for name in ("http.ingress.downstream_rq_time", "cluster.origin.upstream_rq_time"):
            self.assertEqual(histograms[name].count, 1, name)
        self.down.lose()
        self.assertEqual(self.h.stat("http.ingress.downstream_cx_active"), 0)
        self.assertEqual(self.h.stat("http.ingress.downstream_cx_destroy"), 1)
        self.assertEqual(self.h.stat("http.ingress.downstream_cx_destroy_remote"), 1)
        self.assertEqual(self.store_histogram("http.ingress.downstream_cx_length_ms"), 1)

    def test_largeChunkCounted(self):
        """
        A chunked response with a chunk of 64 KiB or more, written between
        its framing without a copy: the client gets the same bytes, and
        downstream_cx_tx_bytes_total counts every one of them.
        """
        body = b"z" * (80 * 1024)
        self.forward(response=b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                     b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        sent = self.down.transport.value()
        self.assertIn(b"\r\ntransfer-encoding: chunked\r\n", sent)
        self.assertTrue(sent.endswith(b"\r\n\r\n14000\r\n" + body + b"\r\n0\r\n\r\n"))
        self.assertEqual(self.h.stat("http.ingress.downstream_cx_tx_bytes_total"), len(sent))

    def store_histogram(self, name):
        return self.h.store.snapshot().histograms[name].count

    def test_accessLog(self):
        self.forward(b"POST /o/x HTTP/1.1\r\nhost: example.com\r\ncontent-length: 3\r\n"
                     b"user-agent: t\r\n\r\nabc")
        (info, request, response), = self.h.logger.entries
        self.assertEqual(info.responseCode, 200)
        self.assertEqual(info.bytesReceived, 3)
        self.assertEqual(info.bytesSent, 2)
        self.assertEqual(info.protocol, "HTTP/1.1")
        self.assertEqual(info.upstreamHost, "127.0.0.1:8080")
        self.assertEqual(info.upstreamCluster, "origin")
        self.assertEqual(info.responseFlags(), "-")
        self.assertEqual(request.method, b"POST")
        self.assertEqual(request.get("user-agent"), b"t")
        self.assertEqual(response.status, 200)

    def test_defaultAccessLogLine(self):
        """Envoy's default format, through the real formatter."""
        from txenvoy.formatter.substitution import defaultFormatter
        self.forward(b"GET /o/x HTTP/1.1\r\nhost: example.com\r\nuser-agent: t\r\n"
                     b"x-request-id: rid\r\n\r\n")
        info, request, response = self.h.logger.entries[0]
        line = defaultFormatter().format(info, request, response)
        self.assertRegex(line, r'^\[.*\] "GET /o/x HTTP/1.1" 200 - 0 2 \d+ \d+ "-" "t" "rid" '
                               r'"example.com" "127.0.0.1:8080"\n$')


class LocalReplyTests(SynchronousTestCase):
    """Replies the connection manager and router make up, as Envoy 1.40 lays them out."""

    def setUp(self):
        self.h = Harness(self)
        self.down = self.h.connect()

    def test_noRoute(self):
        h = Harness(self, routes='[{match: {prefix: "/only"}, direct_response: {status: 200}}]')
        down = h.connect()
        down.send(GET)
        r = down.response()
        self.assertEqual((r.status, r.body), (404, b""))
        self.assertEqual(r.names(), ["date", "server", "content-length"])
        info = h.logger.entries[0][0]
        self.assertEqual(info.responseFlags(), "NR")
        self.assertEqual(info.responseCodeDetails, "route_not_found")
        self.assertEqual(h.stat("http.ingress.no_route"), 1)

    def test_directResponse(self):
        self.down.send(b"GET /direct HTTP/1.1\r\nhost: a\r\n\r\n")
        r = self.down.response()
        self.assertEqual((r.status, r.body), (200, b"hello"))
        self.assertEqual(r.names(), ["content-length", "content-type", "date", "server"])
        self.assertEqual(self.h.stat("http.ingress.rq_direct_response"), 1)

    def test_directResponseHead(self):
        """Envoy 1.40: HEAD keeps content-length but sends no body."""
        self.down.send(b"HEAD /direct HTTP/1.1\r\nhost: a\r\n\r\n")
        raw = self.down.written()
        self.assertIn(b"content-length: 5\r\n", raw)
        self.assertTrue(raw.endswith(b"\r\n\r\n"))
        self.assertEqual(self.h.logger.entries[0][0].bytesSent, 0)

    def test_redirect(self):
        self.down.send(b"GET /old?a=b HTTP/1.1\r\nhost: www.example.org\r\n\r\n")
        r = self.down.response()
        self.assertEqual((r.status, r.body), (301, b""))
        self.assertEqual(r.names(), ["location", "date", "server", "content-length"])
        self.assertEqual(r.header("location"), "http://www.example.org/new?a=b")
        # Envoy 1.40 counts a redirect as a direct response; rq_redirect stays 0.
        self.assertEqual((self.h.stat("http.ingress.rq_direct_response"),
                          self.h.stat("http.ingress.rq_redirect")), (1, 0))

    def test_serverName(self):
        h = Harness(self, hcm={"server_name": "txenvoy-front"})
        down = h.connect()
        down.send(b"GET /direct HTTP/1.1\r\nhost: a\r\n\r\n")
        self.assertEqual(down.response().header("server"), "txenvoy-front")

    def test_localReplyMapper(self):
        """
        Envoy 1.40: a mapper rewrites status and body, and body_format
        formats every local reply with %LOCAL_REPLY_BODY%.
        """
        h = Harness(self, hcm={"local_reply_config": {
            "mappers": [{"filter": {"status_code_filter": {"comparison": {
                "op": "EQ", "value": {"default_value": 200, "runtime_key": "k"}}}},
                "status_code": 418, "body": {"inline_string": "teapot"},
                "headers_to_add": [{"header": {"key": "x-mapped", "value": "1"}}]}],
            "body_format": {"text_format": "%LOCAL_REPLY_BODY% [%RESPONSE_CODE%]\n"}}})
        down = h.connect()
        down.send(b"GET /direct HTTP/1.1\r\nhost: a\r\n\r\n")
        r = down.response()
        self.assertEqual((r.status, r.body), (418, b"teapot [418]\n"))
        self.assertEqual(r.header("x-mapped"), "1")
        down.send(b"GET /old HTTP/1.1\r\nhost: a\r\n\r\n")
        r = down.response()
        self.assertEqual((r.status, r.body), (301, b" [301]\n"))
        self.assertEqual(r.header("content-type"), "text/plain")

    def test_jsonBodyFormat(self):
        h = Harness(self, hcm={"local_reply_config": {"body_format": {"json_format": {
            "code": "%RESPONSE_CODE%", "message": "%LOCAL_REPLY_BODY%"}}}})
        down = h.connect()
        down.send(b"GET /empty/x HTTP/1.1\r\nhost: a\r\n\r\n")
        r = down.response()
        self.assertEqual(r.status, 503)
        self.assertEqual(r.header("content-type"), "application/json")
        self.assertEqual(r.body, b'{"code":503,"message":"no healthy upstream"}\n')

    def test_codecRepliesFormatted(self):
        """Envoy 1.40 sends the codec's own replies (426 here) through the same path."""
        h = Harness(self, hcm={"via": "edge", "local_reply_config": {
            "body_format": {"text_format": "%LOCAL_REPLY_BODY% (%RESPONSE_CODE%)\n"}}})
        down = h.connect()
        down.send(b"GET / HTTP/1.0\r\n\r\n")
        r = down.responses()[0]
        self.assertEqual((r.status, r.body), (426, b"Upgrade Required (426)\n"))
        self.assertEqual(r.names(), ["content-length", "content-type", "date", "server", "via",
                                     "connection"])
        assertDelayedClose(self, h, down)
        self.assertEqual(h.logger.entries[0][0].responseCode, 426)

    def test_codecErrorLogged(self):
        """Envoy 1.40 logs a request that failed to parse as "- -" with flag DPE."""
        self.down.send(b"GARBAGE\r\n\r\n")
        r = self.down.responses()[0]
        self.assertEqual(r.status, 400)
        (info, request, response), = self.h.logger.entries
        self.assertEqual((info.responseCode, info.responseFlags(), info.bytesSent),
                         (400, "DPE", 11))
        self.assertIsNone(request)
        self.assertEqual(self.h.stat("http.ingress.downstream_cx_protocol_error"), 1)
        self.assertEqual(self.h.stat("http.ingress.downstream_rq_4xx"), 1)

    def test_codecErrorInBody(self):
        """A bad chunk in an active request ends that stream (its log has DPE)."""
        self.down.send(b"POST /o/x HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n")
        up = self.h.upstream()
        self.down.send(b"zz\r\n")
        r = self.down.responses()[0]
        self.assertEqual(r.status, 400)
        (info, request, _), = self.h.logger.entries
        self.assertEqual(info.responseFlags(), "DPE")
        self.assertEqual(request.method, b"POST")
        self.assertTrue(up.transport.disconnecting)

    def test_missingHostNotProtocolError(self):
        """Envoy 1.40: no Host gets 400 with an empty body and no DPE."""
        self.down.send(b"GET / HTTP/1.1\r\n\r\n")
        self.assertEqual(self.down.responses()[0].body, b"")
        info = self.h.logger.entries[0][0]
        self.assertEqual(info.responseFlags(), "-")
        self.assertEqual(self.h.stat("http.ingress.downstream_cx_protocol_error"), 0)


class UnderscoreTests(SynchronousTestCase):
    """headers_with_underscores_action, passed to the codec, with Envoy's counters."""

    def test_drop(self):
        h = Harness(self, hcm={"common_http_protocol_options": {
            "headers_with_underscores_action": "DROP_HEADER"}})
        down = h.connect()
        down.send(b"GET /o/x HTTP/1.1\r\nhost: a\r\nx_foo: 1\r\n\r\n")
        self.assertNotIn("x_foo", headerDict(h.upstream().request()[1]))
        self.assertEqual(h.stat("http.ingress.http1.dropped_headers_with_underscores"), 1)

    def test_reject(self):
        """Envoy 1.40: REJECT_REQUEST answers 400 (DPE)."""
        h = Harness(self, hcm={"common_http_protocol_options": {
            "headers_with_underscores_action": "REJECT_REQUEST"}})
        down = h.connect()
        down.send(b"GET /o/x HTTP/1.1\r\nhost: a\r\nx_foo: 1\r\n\r\n")
        self.assertEqual(down.responses()[0].status, 400)
        self.assertEqual(
            h.stat("http.ingress.http1.requests_rejected_with_underscores_in_headers"), 1)


class ServerHeaderTests(SynchronousTestCase):
    """server_header_transformation and via."""

    def respond(self, hcm, response):
        h = Harness(self, hcm=hcm)
        down = h.connect()
        down.send(GET)
        up = h.upstream()
        up.respond(response)
        return down.response(), up

    def test_appendIfAbsent(self):
        r, _ = self.respond({"server_header_transformation": "APPEND_IF_ABSENT"},
                            b"HTTP/1.1 200 OK\r\nserver: origin\r\ncontent-length: 0\r\n\r\n")
        self.assertEqual(r.header("server"), "origin")
        r, _ = self.respond({"server_header_transformation": "APPEND_IF_ABSENT"},
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        self.assertEqual(r.header("server"), "envoy")

    def test_passThrough(self):
        r, _ = self.respond({"server_header_transformation": "PASS_THROUGH"},
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        self.assertIsNone(r.header("server"))

    def test_via(self):
        """Envoy 1.40 appends via to the request and the response."""
        r, up = self.respond({"via": "edge"},
                             b"HTTP/1.1 200 OK\r\nvia: 1.1 other\r\ncontent-length: 0\r\n\r\n")
        self.assertEqual(r.header("via"), "1.1 other, edge")
        self.assertEqual(headerDict(up.request()[1])["via"], "edge")

    def test_alwaysSetRequestIdInResponse(self):
        r, up = self.respond({"always_set_request_id_in_response": True},
                             b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        self.assertEqual(r.header("x-request-id"), headerDict(up.request()[1])["x-request-id"])


class RemoteAddressTests(SynchronousTestCase):
    """use_remote_address: x-forwarded-for and x-envoy-external-address."""

    def forward(self, request, hcm=None, peer=("10.1.2.3", 5555)):
        h = Harness(self, hcm=dict({"use_remote_address": True}, **(hcm or {})))
        down = h.connect(peer=peer)
        down.send(request)
        return h.upstream().request()[1]

    def test_appended(self):
        """Envoy 1.40 appends the peer (no space) and adds x-envoy-external-address."""
        headers = self.forward(b"GET /o/x HTTP/1.1\r\nhost: a\r\nx-forwarded-for: 1.2.3.4\r\n"
                               b"x-envoy-internal: true\r\nx-envoy-original-path: /z\r\n"
                               b"x-envoy-decorator-operation: o\r\n\r\n")
        d = headerDict(headers)
        self.assertEqual(d["x-forwarded-for"], "1.2.3.4,10.1.2.3")
        self.assertEqual(d["x-envoy-external-address"], "10.1.2.3")
        for name in ("x-envoy-internal", "x-envoy-original-path", "x-envoy-decorator-operation"):
            self.assertNotIn(name, d)
        self.assertEqual([n for n, _ in headers][-4:],
                         ["x-forwarded-proto", "x-envoy-external-address", "x-request-id",
                          "x-envoy-expected-rq-timeout-ms"])

    def test_loopbackPeer(self):
        """Envoy 1.40 records a loopback peer as the machine's own address."""
        d = headerDict(self.forward(GET, peer=("127.0.0.1", 4444)))
        self.assertEqual(d["x-forwarded-for"], machineAddress())
        self.assertEqual(d["x-envoy-external-address"], "127.0.0.1")

    def test_internalListenerPeer(self):
        """
        A peer with no IP (an internal listener's, a pipe's): Envoy 1.40
        appends nothing to x-forwarded-for and leaves the
        x-envoy-external-address the hop before set (compared with Envoy
        through listener A -> internal listener B).
        """
        from txenvoy.network.user_space import CLIENT_ADDRESS

        d = headerDict(self.forward(
            b"GET /o/x HTTP/1.1\r\nhost: a\r\nx-forwarded-for: 192.0.2.2\r\n"
            b"x-envoy-external-address: 127.0.0.1\r\n\r\n", peer=(CLIENT_ADDRESS, 0)))
        self.assertEqual(d["x-forwarded-for"], "192.0.2.2")
        self.assertEqual(d["x-envoy-external-address"], "127.0.0.1")

    def test_skipXffAppend(self):
        d = headerDict(self.forward(GET, hcm={"skip_xff_append": True}))
        self.assertNotIn("x-forwarded-for", d)

    def test_forwardedProtoOverwritten(self):
        d = headerDict(self.forward(b"GET /o/x HTTP/1.1\r\nhost: a\r\nx-forwarded-proto: https"
                                    b"\r\n\r\n"))
        self.assertEqual(d["x-forwarded-proto"], "http")

    def test_externalRequestIdReplaced(self):
        """An edge request's x-request-id is replaced unless preserve_external_request_id."""
        d = headerDict(self.forward(b"GET /o/x HTTP/1.1\r\nhost: a\r\nx-request-id: abc\r\n\r\n"))
        self.assertNotEqual(d["x-request-id"], "abc")
        d = headerDict(self.forward(b"GET /o/x HTTP/1.1\r\nhost: a\r\nx-request-id: abc\r\n\r\n",
                                    hcm={"preserve_external_request_id": True}))
        self.assertEqual(d["x-request-id"], "abc")

    def test_internalAddress(self):
        """From an internal_address_config range: x-envoy-internal, control headers kept."""
        d = headerDict(self.forward(
            b"GET /o/x HTTP/1.1\r\nhost: a\r\nx-envoy-max-retries: 1\r\n\r\n",
            hcm={"internal_address_config": {"cidr_ranges": [
                {"address_prefix": "10.0.0.0", "prefix_len": 8}]}}))
        self.assertEqual(d["x-envoy-internal"], "true")
        self.assertEqual(d["x-envoy-max-retries"], "1")
        self.assertNotIn("x-envoy-external-address", d)


class TimeoutTests(SynchronousTestCase):
    """stream_idle_timeout, request_timeout, request_headers_timeout, idle_timeout."""

    def test_streamIdleTimeoutAfterRequest(self):
        """Envoy 1.40: 504 "stream timeout" once the request is complete (flag SI)."""
        h = Harness(self, hcm={"stream_idle_timeout": "5s"}, routes=(
            '[{match: {prefix: "/"}, route: {cluster: origin, timeout: 0s}}]'))
        down = h.connect()
        down.send(GET)
        up = h.upstream()
        h.advance(4.9)
        self.assertEqual(down.written(), b"")
        h.advance(0.2)
        r = down.response()
        self.assertEqual((r.status, r.body), (504, b"stream timeout"))
        self.assertEqual(h.logger.entries[0][0].responseFlags(), "SI")
        self.assertEqual(h.stat("http.ingress.downstream_rq_idle_timeout"), 1)
        self.assertTrue(up.transport.disconnecting)

    def test_streamIdleTimeoutSharedByKeepAliveStreams(self):
        """
        HTTP/1.1 streams share one stream idle timer: a finished stream's
        timer, left running, neither times out the idle connection nor the
        next stream early; the next stream still times out after its own
        stream_idle_timeout, and a shorter route idle_timeout on the next
        stream is honoured.
        """
        routes = ('[{match: {prefix: "/short"}, route: {cluster: origin, timeout: 0s,'
                  ' idle_timeout: 1s}},'
                  ' {match: {prefix: "/"}, route: {cluster: origin, timeout: 0s}}]')
        h = Harness(self, hcm={"stream_idle_timeout": "5s"}, routes=routes)
        down = h.connect()
        down.send(GET)
        up = h.upstream()
        h.advance(3)
        up.respond(OK)
        self.assertEqual(down.response().status, 200)
        # The first stream's timer would have fired at 5 s.
        h.advance(3)
        self.assertEqual(h.stat("http.ingress.downstream_rq_idle_timeout"), 0)
        self.assertFalse(down.closed)
        down.send(GET)
        h.advance(4.9)
        self.assertEqual(len(down.responses()), 1)
        h.advance(0.2)
        r = down.response()
        self.assertEqual((r.status, r.body), (504, b"stream timeout"))
        self.assertEqual(h.stat("http.ingress.downstream_rq_idle_timeout"), 1)

        h = Harness(self, hcm={"stream_idle_timeout": "5s"}, routes=routes)
        down = h.connect()
        down.send(GET)
        h.upstream().respond(OK)
        self.assertEqual(down.response().status, 200)
        down.send(b"GET /short HTTP/1.1\r\nhost: a\r\n\r\n")
        h.advance(1.1)
        r = down.response()
        self.assertEqual((r.status, r.body), (504, b"stream timeout"))

    def test_streamIdleTimeoutDuringBody(self):
        """Envoy 1.40: 408 while the request is incomplete, and the connection closes."""
        h = Harness(self, hcm={"stream_idle_timeout": "2s"})
        down = h.connect()
        down.send(b"POST /o/x HTTP/1.1\r\nhost: a\r\ncontent-length: 10\r\n\r\nhello")
        h.upstream()
        h.advance(1.5)
        down.send(b"ab")
        h.advance(1.5)
        self.assertEqual(down.written(), b"")
        h.advance(0.6)
        r = down.response()
        self.assertEqual((r.status, r.body), (408, b"stream timeout"))
        self.assertEqual(r.header("connection"), "close")
        assertDelayedClose(self, h, down)

    def test_delayedCloseClientFirst(self):
        """
        Envoy 1.40: a client that closes during the delay closes the
        connection itself (downstream_cx_destroy_remote), and nothing counts
        as a delayed close timeout.
        """
        h = Harness(self)
        down = h.connect()
        down.send(b"GET / HTTP/1.1\r\n\r\n")
        self.assertEqual(down.response().status, 400)
        self.assertFalse(down.closed)
        down.lose()
        h.advance(2)
        self.assertEqual((h.stat("http.ingress.downstream_cx_destroy_remote"),
                          h.stat("http.ingress.downstream_cx_destroy_local"),
                          h.stat("http.ingress.downstream_cx_delayed_close_timeout")), (1, 0, 0))

    def test_localReplyOneWrite(self):
        """
        A local reply's head and body go out in one write: two small writes
        would wait on the client's delayed ACK (Nagle), some 40 ms.
        """
        h = Harness(self)
        down = h.connect()
        writes = []
        write, writeSequence = down.cm._write, down.cm._writeSequence
        down.cm._write = lambda data: (writes.append(data), write(data))
        down.cm._writeSequence = lambda buffers: (writes.append(buffers),
                                                  writeSequence(buffers))
        down.send(GET)
        # Sent from a reactor event, not while the request is read.
        h.upstream(connect=False).fail()
        self.assertEqual(down.response().status, 503)
        self.assertEqual(len(writes), 1)

    def test_missingHostLogged(self):
        """
        Envoy 1.40 logs the method, path and headers of a request refused
        for its missing Host.
        """
        h = Harness(self)
        down = h.connect()
        down.send(b"GET /a?b HTTP/1.1\r\nuser-agent: ua\r\n\r\n")
        self.assertEqual(down.response().status, 400)
        info, request, _ = h.logger.entries[0]
        self.assertEqual((request.method, request.path, request.get("user-agent")),
                         (b"GET", b"/a?b", b"ua"))
        self.assertEqual(info.responseCode, 400)

    def test_noDelayWhenAsked(self):
        """Envoy 1.40 closes at once after a complete request that asked to close."""
        h = Harness(self)
        down = h.connect()
        down.send(b"GET /direct HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
        down.response()
        self.assertTrue(down.closed)

    def test_delayedCloseTimeoutConfigured(self):
        """delayed_close_timeout sets the delay; 0s closes at once."""
        h = Harness(self, hcm={"delayed_close_timeout": "0.2s"})
        down = h.connect()
        down.send(b"GET / HTTP/1.1\r\n\r\n")
        down.response()
        assertDelayedClose(self, h, down, 0.2)
        h = Harness(self, hcm={"delayed_close_timeout": "0s"})
        down = h.connect()
        down.send(b"GET / HTTP/1.1\r\n\r\n")
        down.response()
        self.assertTrue(down.closed)

    def test_partialHead(self):
        """
        Envoy 1.40: a partial head counts from its first byte; trickling
        does not extend it; the reply is logged as "- -" with SI.
        """
        h = Harness(self, hcm={"stream_idle_timeout": "10s"})
        down = h.connect()
        down.send(b"GET / HT")
        h.advance(6)
        down.send(b"TP/1.1\r\n")
        h.advance(3.9)
        self.assertEqual(down.written(), b"")
        h.advance(0.2)
        r = down.response()
        self.assertEqual((r.status, r.body), (408, b"stream timeout"))
        self.assertEqual(r.names(), ["content-length", "content-type", "date", "server",
                                     "connection"])
        info, request, _ = h.logger.entries[0]
        self.assertIsNone(request)
        self.assertEqual(info.responseFlags(), "SI")
        # Answered before the request was complete; Envoy resets its stream
        # at the close, after delayed_close_timeout.
        assertDelayedClose(self, h, down)
        self.assertEqual((h.stat("http.ingress.downstream_rq_response_before_rq_complete"),
                          h.stat("http.ingress.downstream_rq_rx_reset")), (1, 1))

    def test_requestHeadersTimeout(self):
        """Envoy 1.40: 408 "request header timeout", no flag."""
        h = Harness(self, hcm={"request_headers_timeout": "1s"})
        down = h.connect()
        down.send(b"GET / HTTP/1.1\r\n")
        h.advance(1.1)
        r = down.response()
        self.assertEqual((r.status, r.body), (408, b"request header timeout"))
        self.assertEqual(h.stat("http.ingress.downstream_rq_header_timeout"), 1)
        self.assertEqual(h.logger.entries[0][0].responseFlags(), "-")

    def test_requestTimeout(self):
        """Envoy 1.40: 408 "request timeout" for a request body that never ends."""
        h = Harness(self, hcm={"request_timeout": "3s"})
        down = h.connect()
        down.send(b"POST /o/x HTTP/1.1\r\nhost: a\r\ncontent-length: 10\r\n\r\nhello")
        h.upstream()
        h.advance(3.1)
        r = down.response()
        self.assertEqual((r.status, r.body), (408, b"request timeout"))
        self.assertEqual(h.stat("http.ingress.downstream_rq_timeout"), 1)

    def test_requestTimeoutStopsWithRequest(self):
        h = Harness(self, hcm={"request_timeout": "3s"})
        down = h.connect()
        down.send(GET)
        up = h.upstream()
        h.advance(3.5)
        self.assertEqual(down.written(), b"")
        up.respond(OK)
        self.assertEqual(down.response().status, 200)

    def test_streamIdleDisabled(self):
        h = Harness(self, hcm={"stream_idle_timeout": "0s"}, routes=(
            '[{match: {prefix: "/"}, route: {cluster: origin, timeout: 0s}}]'))
        down = h.connect()
        down.send(GET)
        h.upstream()
        h.advance(10000)
        self.assertEqual(down.written(), b"")

    def test_idleTimeout(self):
        """
        common_http_protocol_options.idle_timeout closes an idle connection
        that has spoken as Envoy does: it drains for C{drain_timeout}, then
        waits C{delayed_close_timeout} for the client to close first.
        """
        h = Harness(self, hcm={"common_http_protocol_options": {"idle_timeout": "5s"},
                               "drain_timeout": "0.5s", "delayed_close_timeout": "0.3s"})
        down = h.connect()
        down.send(GET)
        up = h.upstream()
        h.advance(4)
        up.respond(OK)
        h.advance(4)
        self.assertFalse(down.closed)
        h.advance(1.1)
        self.assertEqual(h.stat("http.ingress.downstream_cx_idle_timeout"), 1)
        self.assertFalse(down.closed)
        h.advance(0.5)
        self.assertFalse(down.closed)
        h.advance(0.3)
        self.assertTrue(down.closed)
        self.assertEqual(h.stat("http.ingress.downstream_cx_delayed_close_timeout"), 1)
        self.assertEqual(h.stat("http.ingress.downstream_cx_idle_timeout"), 1)

    def test_idleTimeoutDefaultHour(self):
        h = Harness(self)
        down = h.connect()
        h.advance(3599)
        self.assertFalse(down.closed)
        h.advance(2)
        self.assertTrue(down.closed)

    def test_maxRequestsPerConnection(self):
        h = Harness(self, hcm={"common_http_protocol_options": {"max_requests_per_connection": 2}})
        down = h.connect()
        down.send(b"GET /direct HTTP/1.1\r\nhost: a\r\n\r\n")
        self.assertIsNone(down.response().header("connection"))
        down.send(b"GET /direct HTTP/1.1\r\nhost: a\r\n\r\n")
        self.assertEqual(down.response().header("connection"), "close")
        self.assertTrue(down.closed)
        self.assertEqual(h.stat("http.ingress.downstream_cx_max_requests_reached"), 1)


class PausingTests(SynchronousTestCase):
    """Reading stops while a request waits for its response (Envoy's readDisable)."""

    def test_pausedOnlyWhenBytesCome(self):
        h = Harness(self)
        down = h.connect()
        down.send(GET)
        up = h.upstream()
        self.assertEqual(down.transport.producerState, "producing")
        down.send(GET)
        self.assertEqual(down.transport.producerState, "paused")
        up.respond(OK)
        up.respond(OK)
        self.assertEqual(down.transport.producerState, "producing")
        self.assertEqual(len(down.responses()), 2)

    def test_notPausedAfterResponse(self):
        h = Harness(self)
        down = h.connect()
        down.send(GET)
        h.upstream().respond(OK)
        down.send(GET)
        self.assertEqual(down.transport.producerState, "producing")


class DrainTests(SynchronousTestCase):

    def test_drainCloseAddsConnectionClose(self):
        """While the server drains, each response says connection: close."""
        h = Harness(self)
        down = h.connect()
        h.server.draining = True
        down.send(GET)
        up = h.upstream()
        up.respond(OK)
        r = down.response()
        self.assertEqual(r.header("connection"), "close")
        self.assertEqual(r.names()[-1], "connection")
        self.assertEqual(h.stat("http.ingress.downstream_cx_drain_close"), 1)
        # Envoy 1.40: open for drain_timeout (5 s), then the delayed close.
        h.advance(4.9)
        self.assertFalse(down.closed)
        h.advance(0.1)
        self.assertFalse(down.closed)
        h.advance(1)
        self.assertTrue(down.closed)
        self.assertEqual(h.stat("http.ingress.downstream_cx_delayed_close_timeout"), 1)

    def test_startDrainIdle(self):
        h = Harness(self)
        down = h.connect()
        down.cm.startDrain()
        self.assertTrue(down.closed)

    def test_startDrainBusy(self):
        """Envoy's drain closes an HTTP/1.1 connection after its current response."""
        h = Harness(self)
        down = h.connect()
        down.send(GET)
        up = h.upstream()
        down.cm.startDrain()
        self.assertFalse(down.closed)
        up.respond(OK)
        self.assertEqual(down.response().header("connection"), "close")
        self.assertTrue(down.closed)


class UpgradeTests(SynchronousTestCase):

    WS = b"GET /o/ws HTTP/1.1\r\nhost: a\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n"

    def test_notConfigured(self):
        """Envoy 1.40: 403, empty body, connection closed."""
        h = Harness(self)
        down = h.connect()
        down.send(self.WS)
        r = down.responses()[0]
        self.assertEqual((r.status, r.body), (403, b""))
        self.assertEqual(r.names(), ["date", "server", "connection", "content-length"])
        assertDelayedClose(self, h, down)
        self.assertEqual(h.upstreams(), [])

    def test_rawBothWays(self):
        h = Harness(self, hcm={"upgrade_configs": [{"upgrade_type": "websocket"}]})
        down = h.connect()
        down.send(self.WS + b"early")
        up = h.upstream()
        line, headers = up.request()
        d = headerDict(headers)
        self.assertEqual((d["upgrade"], d["connection"]), ("websocket", "upgrade"))
        self.assertTrue(up.received().endswith(b"\r\n\r\nearly"))
        up.respond(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n"
                   b"connection: Upgrade\r\n\r\nfrom-up")
        raw = down.written()
        head, _, rest = raw.partition(b"\r\n\r\n")
        self.assertIn(b"upgrade: websocket", head)
        self.assertIn(b"connection: Upgrade", head)
        self.assertNotIn(b"x-envoy-upstream-service-time", head)
        self.assertEqual(rest, b"from-up")
        down.send(b"\x81\x02hi")
        self.assertTrue(up.received().endswith(b"\x81\x02hi"))
        self.assertEqual(h.stat("http.ingress.downstream_cx_upgrades_total"), 1)
        self.assertEqual(h.stat("http.ingress.downstream_cx_upgrades_active"), 1)
        up.close()
        self.assertTrue(down.closed)
        self.assertEqual(h.stat("http.ingress.downstream_cx_upgrades_active"), 0)

    def test_routeDisables(self):
        h = Harness(self, hcm={"upgrade_configs": [{"upgrade_type": "websocket"}]}, routes=(
            '[{match: {prefix: "/"}, route: {cluster: origin, upgrade_configs: '
            '[{upgrade_type: websocket, enabled: false}]}}]'))
        down = h.connect()
        down.send(self.WS)
        self.assertEqual(down.responses()[0].status, 403)


class PathTests(SynchronousTestCase):

    def forward(self, path, hcm):
        h = Harness(self, hcm=hcm)
        down = h.connect()
        down.send(b"GET %s HTTP/1.1\r\nhost: a\r\n\r\n" % (path,))
        return h, down

    def test_normalizeAndMerge(self):
        """Envoy 1.40 (normalize_path, merge_slashes): /o//a/../b is forwarded as /o/b."""
        h, _ = self.forward(b"/o//a/../b?x=/../", {"normalize_path": True, "merge_slashes": True})
        self.assertEqual(h.upstream().request()[0], "GET /o/b?x=/../ HTTP/1.1")

    def test_keptByDefault(self):
        """Envoy 1.40 forwards /a/../b verbatim by default."""
        h, _ = self.forward(b"/o/a/../b", {})
        self.assertEqual(h.upstream().request()[0], "GET /o/a/../b HTTP/1.1")

    def test_escapedSlashRedirect(self):
        """Envoy 1.40: UNESCAPE_AND_REDIRECT answers 307 with a relative location."""
        h, down = self.forward(b"/o/a%2Fb", {"path_with_escaped_slashes_action":
                                             "UNESCAPE_AND_REDIRECT"})
        r = down.response()
        self.assertEqual((r.status, r.header("location")), (307, "/o/a/b"))
        self.assertEqual(h.upstreams(), [])
        self.assertIsNone(h.logger.entries[0][1].get("x-request-id"))

    def test_escapedSlashReject(self):
        """
        Envoy 1.40: 400, empty body, connection: close, no x-request-id;
        the log shows the unescaped path.
        """
        h, down = self.forward(b"/o/a%2fb", {"path_with_escaped_slashes_action":
                                             "REJECT_REQUEST"})
        r = down.response()
        self.assertEqual((r.status, r.body), (400, b""))
        self.assertEqual(r.names(), ["date", "server", "connection", "content-length"])
        assertDelayedClose(self, h, down)
        _, request, _ = h.logger.entries[0]
        self.assertEqual(request.path, b"/o/a/b")
        self.assertIsNone(request.get("x-request-id"))

    def test_escapedSlashForward(self):
        h, _ = self.forward(b"/o/a%2Fb", {"path_with_escaped_slashes_action":
                                          "UNESCAPE_AND_FORWARD"})
        self.assertEqual(h.upstream().request()[0], "GET /o/a/b HTTP/1.1")

    def test_normalizePathFunction(self):
        self.assertEqual(normalizePath(b"/a/./b/../c"), b"/a/c")
        self.assertEqual(normalizePath(b"/a/%7Eb%2a"), b"/a/~b%2A")
        self.assertEqual(normalizePath(b"/a\\b"), b"/a/b")
        self.assertEqual(normalizePath(b"/.."), b"/")
        self.assertEqual(normalizePath(b"/a/.."), b"/")
        self.assertEqual(mergeSlashes(b"//a///b?c//d"), b"/a/b?c//d")

    def test_stripAnyHostPort(self):
        h = Harness(self, hcm={"strip_any_host_port": True})
        down = h.connect()
        down.send(b"GET /o/x HTTP/1.1\r\nhost: a.example:8080\r\n\r\n")
        self.assertEqual(headerDict(h.upstream().request()[1])["host"], "a.example")


# -- the HTTP filter chain ---------------------------------------------------------


class Recording(PassThroughFilter):
    """A filter recording what it sees, with statuses chosen by the test."""

    def __init__(self, callbacks, name, log, statuses):
        PassThroughFilter.__init__(self, callbacks)
        self.name = name
        self.log = log
        self.statuses = statuses

    def decodeHeaders(self, headers, endStream):
        self.log.append((self.name, "decodeHeaders", endStream))
        return self.statuses.get("decodeHeaders", FilterHeadersStatus.Continue)

    def decodeData(self, data, endStream):
        self.log.append((self.name, "decodeData", data, endStream))
        return self.statuses.get("decodeData", FilterDataStatus.Continue)

    def encodeHeaders(self, headers, endStream):
        self.log.append((self.name, "encodeHeaders", headers.status, endStream))
        headers.headers.add(b"x-seen-by", self.name.encode())
        return self.statuses.get("encodeHeaders", FilterHeadersStatus.Continue)

    def encodeData(self, data, endStream):
        self.log.append((self.name, "encodeData", data, endStream))
        return self.statuses.get("encodeData", FilterDataStatus.Continue)

    def onDestroy(self):
        self.log.append((self.name, "onDestroy"))


class RecordingFactory:
    terminal = False

    def __init__(self, name, log, statuses=None):
        self.name = name
        self.log = log
        self.statuses = statuses or {}
        self.filters = []

    def createFilter(self, callbacks):
        f = Recording(callbacks, self.name, self.log, self.statuses)
        self.filters.append(f)
        return f


class FilterChainTests(SynchronousTestCase):
    """Decoder filters run in order, encoder filters in reverse (Envoy's filter manager)."""

    def harness(self, *factories):
        h = Harness(self)
        h.config.filterFactories = tuple(("f%d" % i, f) for i, f in enumerate(factories)) + \
            tuple(h.config.filterFactories)
        return h

    def test_order(self):
        log = []
        a, b = RecordingFactory("a", log), RecordingFactory("b", log)
        h = self.harness(a, b)
        down = h.connect()
        down.send(b"POST /o/x HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi")
        up = h.upstream()
        up.respond(OK)
        self.assertEqual(log, [
            ("a", "decodeHeaders", False), ("b", "decodeHeaders", False),
            ("a", "decodeData", b"hi", True), ("b", "decodeData", b"hi", True),
            ("b", "encodeHeaders", 200, False), ("a", "encodeHeaders", 200, False),
            ("b", "encodeData", b"ok", True), ("a", "encodeData", b"ok", True),
            ("a", "onDestroy"), ("b", "onDestroy")])
        r = down.response()
        self.assertEqual([v for n, v in r.headers if n == "x-seen-by"], ["b", "a"])
        self.assertTrue(up.received().endswith(b"hi"))

    def test_callbacksProvideInterface(self):
        log = []
        a = RecordingFactory("a", log)
        h = self.harness(a)
        h.connect().send(GET)
        callbacks = a.filters[0].callbacks
        self.assertTrue(verifyObject(IStreamFilterCallbacks, callbacks))
        self.assertEqual(callbacks.filterConfigName, "f0")
        self.assertEqual(callbacks.route().clusterName, "origin")
        self.assertEqual(callbacks.requestHeaders.path, b"/o/x")

    def test_stopAndContinueHeaders(self):
        """StopIteration holds later filters; data still reaches the stopped filter."""
        log = []
        a = RecordingFactory("a", log, {"decodeHeaders": FilterHeadersStatus.StopIteration,
                                        "decodeData": FilterDataStatus.StopIterationAndBuffer})
        b = RecordingFactory("b", log)
        h = self.harness(a, b)
        down = h.connect()
        down.send(b"POST /o/x HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n\r\nab")
        down.send(b"cd")
        self.assertEqual(log, [("a", "decodeHeaders", False), ("a", "decodeData", b"ab", False),
                               ("a", "decodeData", b"cd", True)])
        self.assertEqual(h.upstreams(), [])
        self.assertEqual(a.filters[0].callbacks.decodingBuffer(), b"abcd")
        a.filters[0].callbacks.continueDecoding()
        self.assertEqual(log[3:], [("b", "decodeHeaders", False),
                                   ("b", "decodeData", b"abcd", True)])
        up = h.upstream()
        self.assertTrue(up.received().endswith(b"\r\n\r\nabcd"))

    def test_dataContinueReleasesHeaders(self):
        """A Continue from decodeData lets the held headers go on first."""
        log = []
        a = RecordingFactory("a", log, {"decodeHeaders": FilterHeadersStatus.StopIteration})
        b = RecordingFactory("b", log)
        h = self.harness(a, b)
        down = h.connect()
        down.send(b"POST /o/x HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi")
        self.assertEqual(log[1:], [("a", "decodeData", b"hi", True),
                                   ("b", "decodeHeaders", False),
                                   ("b", "decodeData", b"hi", True)])

    def test_stopAllBuffersUntilContinue(self):
        log = []
        a = RecordingFactory("a", log, {
            "decodeHeaders": FilterHeadersStatus.StopAllIterationAndBuffer})
        b = RecordingFactory("b", log)
        h = self.harness(a, b)
        down = h.connect()
        down.send(b"POST /o/x HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi")
        self.assertEqual(log, [("a", "decodeHeaders", False)])
        a.filters[0].callbacks.continueDecoding()
        self.assertEqual(log[1:], [("b", "decodeHeaders", False), ("b", "decodeData", b"hi",
                                                                    True)])

    def test_headersOnlyContinue(self):
        log = []
        a = RecordingFactory("a", log, {"decodeHeaders": FilterHeadersStatus.StopIteration})
        h = self.harness(a)
        down = h.connect()
        down.send(GET)
        self.assertEqual(h.upstreams(), [])
        a.filters[0].callbacks.continueDecoding()
        self.assertEqual(len(h.upstreams()), 1)

    def test_routerAloneGetsASingleFilterSlot(self):
        """
        The router alone in the chain gets a L{SingleFilterSlot}: the
        stream's info, dispatcher and span as they are for the request's
        life, the same objects the stream has (from the second request on:
        the first finds the chain is the router alone).
        """
        h = Harness(self)
        down = h.connect()
        down.send(GET)
        up = h.upstream()
        up.respond(OK)
        self.assertEqual(down.response().status, 200)
        down.send(GET)
        stream = down.cm._stream
        slot = stream._slots[0]
        self.assertIsInstance(slot, SingleFilterSlot)
        self.assertIs(slot.streamInfo, stream.streamInfo)
        self.assertIs(slot.dispatcher, stream.dispatcher)
        self.assertIs(slot.activeSpan, stream.activeSpan)
        self.assertIs(slot.stream, stream)
        up.respond(OK)
        self.assertEqual(down.response().status, 200)

    def test_watermarkCallbacksAddedAboveHighWatermark(self):
        """
        Envoy: watermark callbacks a filter adds while the downstream
        connection is above its high watermark hear of it at once, and of
        the low watermark later.
        """
        heard = []

        class Listen(PassThroughFilter):
            def decodeHeaders(self, headers, endStream):
                self.callbacks.addDownstreamWatermarkCallbacks(self)
                return FilterHeadersStatus.Continue

            def onAboveWriteBufferHighWatermark(self):
                heard.append("above")

            def onBelowWriteBufferLowWatermark(self):
                heard.append("below")

        class ListenFactory:
            terminal = False

            def createFilter(self, callbacks):
                return Listen(callbacks)

        h = self.harness(ListenFactory())
        down = h.connect()
        down.transport.producer.pauseProducing()
        down.send(GET)
        self.assertEqual(heard, ["above"])
        down.transport.producer.resumeProducing()
        self.assertEqual(heard, ["above", "below"])

    def test_localReplyGrpcAsSent(self):
        """
        Envoy's is_grpc_request_ is decided on the request as the client sent
        it: a filter that changes the content-type before a local reply
        changes nothing. A gRPC request is answered trailers-only (200 and
        grpc-status), a plain one with its status, whatever the filter set.
        """

        class Swap(PassThroughFilter):
            def decodeHeaders(self, headers, endStream):
                sent = headers.headers.get(b"content-type")
                headers.headers.set(b"content-type", b"text/plain" if sent == b"application/grpc"
                                    else b"application/grpc")
                self.callbacks.sendLocalReply(403, b"denied", None, "denied")
                return FilterHeadersStatus.StopIteration

        class SwapFactory:
            terminal = False

            def createFilter(self, callbacks):
                return Swap(callbacks)

        for contentType, grpc in ((b"application/grpc", True), (b"text/plain", False)):
            h = self.harness(SwapFactory())
            down = h.connect()
            down.send(b"POST /o/x HTTP/1.1\r\nhost: x\r\ncontent-type: " + contentType
                      + b"\r\ncontent-length: 0\r\n\r\n")
            r = down.response()
            if grpc:
                self.assertEqual(r.status, 200)
                self.assertEqual(r.header("grpc-status"), "7")  # 403: PERMISSION_DENIED
            else:
                self.assertEqual((r.status, r.body), (403, b"denied"))
                self.assertIsNone(r.header("grpc-status"))

    def test_localReplyFromFilter(self):
        """A filter's sendLocalReply stops decoding and goes through every encoder filter."""

        class Deny(PassThroughFilter):
            def decodeHeaders(self, headers, endStream):
                self.callbacks.sendLocalReply(
                    403, b"denied", lambda h: h.headers.add(b"x-why", b"policy"), "denied")
                return FilterHeadersStatus.StopIteration

        class DenyFactory:
            terminal = False

            def createFilter(self, callbacks):
                return Deny(callbacks)

        log = []
        after = RecordingFactory("after", log)
        h = self.harness(DenyFactory(), after)
        down = h.connect()
        down.send(GET)
        r = down.response()
        self.assertEqual((r.status, r.body), (403, b"denied"))
        self.assertEqual(r.names()[:3], ["x-why", "content-length", "content-type"])
        self.assertEqual(log[0], ("after", "encodeHeaders", 403, False))
        self.assertEqual(h.upstreams(), [])
        self.assertEqual(h.logger.entries[0][0].responseCodeDetails, "denied")

    def test_encoderStopAndContinue(self):
        log = []
        a = RecordingFactory("a", log, {"encodeHeaders": FilterHeadersStatus.StopIteration,
                                        "encodeData": FilterDataStatus.StopIterationAndBuffer})
        h = self.harness(a)
        down = h.connect()
        down.send(GET)
        up = h.upstream()
        up.respond(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nab")
        up.respond(b"cd")
        self.assertEqual(down.written(), b"")
        a.filters[0].callbacks.continueEncoding()
        r = down.response()
        self.assertEqual((r.status, r.body), (200, b"abcd"))

    def test_bufferOverflow(self):
        """Buffering more than the buffer limit answers 413 (Envoy's decoder limit)."""
        log = []
        a = RecordingFactory("a", log, {"decodeData": FilterDataStatus.StopIterationAndBuffer})
        h = self.harness(a)
        down = h.connect()
        limit = 1024 * 1024
        down.send(b"POST /o/x HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % (limit + 10,))
        down.send(b"x" * (limit + 10))
        r = down.responses()[0]
        self.assertEqual((r.status, r.body), (413, b"Payload Too Large"))
        self.assertEqual(h.stat("http.ingress.downstream_rq_too_large"), 1)
        # Envoy's HTTP/1 codec hands the body over before the request's end,
        # so the reply comes before the request is complete: the
        # connection closes (after delayed_close_timeout).
        self.assertEqual(r.header("connection"), "close")
        self.assertEqual(h.stat("http.ingress.downstream_rq_response_before_rq_complete"), 1)
        assertDelayedClose(self, h, down)

    def test_emptyChain(self):
        """Envoy 1.40 accepts http_filters: [] and lets the request wait (then 504)."""
        h = Harness(self, filters=[], hcm={"stream_idle_timeout": "3s"})
        down = h.connect()
        down.send(GET)
        h.advance(3.1)
        r = down.response()
        self.assertEqual((r.status, r.body), (504, b"stream timeout"))


class HelperTests(SynchronousTestCase):

    def test_requestId(self):
        import uuid
        value = requestId()
        parsed = uuid.UUID(value.decode())
        self.assertEqual(parsed.version, 4)
        self.assertNotEqual(value, requestId())

    def test_timerSet(self):
        from twisted.internet.task import Clock
        clock = Clock()
        timers = TimerSet(clock)
        fired = []
        a = timers.callLater(5, lambda: fired.append("a"))
        timers.callLater(2, lambda: fired.append("b"))
        c = timers.callLater(3, lambda: fired.append("c"))
        self.assertEqual((type(c), c.when, c.active), (Timer, 3, True))
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        c.cancel()
        clock.advance(2)
        self.assertEqual(fired, ["b"])
        a.schedule(1)
        clock.advance(1)
        self.assertEqual(fired, ["b", "a"])
        timers.callLater(1, lambda: fired.append("d"))
        timers.stop()
        clock.advance(5)
        self.assertEqual(fired, ["b", "a"])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_timerSetsShareAHeap(self):
        """
        The timer sets of a worker's connections share one L{TimerHeap}:
        one reactor call for all of them, each set firing its own timers
        in time, and none left once every set stopped.
        """
        from twisted.internet.task import Clock

        from txenvoy.network.timer_heap import sharedTimerHeap
        clock = Clock()
        heap = sharedTimerHeap(clock)
        self.assertIs(sharedTimerHeap(clock), heap)
        fired = []
        one, two = TimerSet(clock, heap), TimerSet(clock, heap)
        a = one.callLater(3600, lambda: fired.append("idle"))
        one.callLater(15, lambda: fired.append("route"))
        two.callLater(5, lambda: fired.append("two"))
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        clock.advance(5)
        self.assertEqual(fired, ["two"])
        a.schedule(1)
        clock.advance(1)
        self.assertEqual(fired, ["two", "idle"])
        clock.advance(9)
        self.assertEqual(fired, ["two", "idle", "route"])
        one.callLater(1, lambda: fired.append("late"))
        two.callLater(2, lambda: fired.append("never"))
        one.stop()
        two.stop()
        self.assertEqual(len(heap), 0)
        self.assertEqual(clock.getDelayedCalls(), [])
        two.callLater(1, lambda: fired.append("after stop"))
        clock.advance(5)
        self.assertEqual(fired, ["two", "idle", "route"])



class _IterationStream:
    """Just the stream L{FilterIteration} asks whether it was stopped."""

    def iterationStopped(self, iteration):
        return False


class FilterIterationTests(SynchronousTestCase):
    """L{FilterIteration} alone, with recording sinks."""

    def test_trailersReachStoppedFilter(self):
        """
        A filter that stopped its headers (StopIteration) still sees the
        trailers, and a Continue from them sends on the headers, the held
        body and the trailers (Envoy's commonHandleAfterTrailersCallback).
        """
        log = []

        class Trailers(Recording):
            def decodeTrailers(self, trailers):
                self.log.append((self.name, "decodeTrailers", trailers))
                return FilterTrailersStatus.Continue

        stream = _IterationStream()
        slots = []
        for name, statuses in (("a", {"decodeHeaders": FilterHeadersStatus.StopIteration,
                                      "decodeData": FilterDataStatus.StopIterationAndBuffer}),
                               ("b", {})):
            slot = FilterSlot(stream, name)
            slot.filter = Trailers(slot, name, log, statuses)
            slots.append(slot)
        sunk = []
        it = FilterIteration(stream, slots, DECODE_NAMES,
                             (lambda h, e: sunk.append(("headers", e)),
                              lambda d, e: sunk.append(("data", d, e)),
                              lambda t: sunk.append(("trailers", t))), 1 << 20, None)
        it.runHeaders(RequestHeaders(b"POST", b"/"), False)
        it.runData(b"hi", False)
        it.runTrailers("T")
        self.assertEqual(log, [("a", "decodeHeaders", False), ("a", "decodeData", b"hi", False),
                               ("a", "decodeTrailers", "T"),
                               ("b", "decodeHeaders", False), ("b", "decodeData", b"hi", False),
                               ("b", "decodeTrailers", "T")])
        self.assertEqual(sunk, [("headers", False), ("data", b"hi", False), ("trailers", "T")])
