"""
Tests for L{txenvoy.extensions.filters.http.ext_authz}, in a real
connection manager on a fake reactor: the authorization service is the
harness's C{dead} cluster (127.0.0.1:8081), the origin its C{origin}.

The expected check requests, replies and stats are what Envoy 1.40 did
with the same config (C{tests/e2e/test_ext_authz.py} runs both side by
side).
"""

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from txenvoy.config.errors import ConfigError
from txenvoy.interfaces import IHttpFilterFactory

from tests.extensions.filters.http.fakes import compileFilter
from tests.http.hcm_harness import ROUTER, Harness

EXT_AUTHZ = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
PER_ROUTE = ("type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3."
             "ExtAuthzPerRoute")

SERVICE = {
    "server_uri": {"uri": "http://authz.local", "cluster": "dead", "timeout": "0.5s"},
    "path_prefix": "/check",
    "authorization_request": {
        "allowed_headers": {"patterns": [{"exact": "x-user"}, {"prefix": "x-auth"}]},
        "headers_to_add": [{"key": "x-authz-added", "value": "yes"}]},
    "authorization_response": {
        "allowed_upstream_headers": {"patterns": [{"exact": "x-auth-user"},
                                                  {"exact": "x-user"}]},
        "allowed_client_headers": {"patterns": [{"exact": "x-reason"}]},
        "allowed_client_headers_on_success": {"patterns": [{"exact": "x-extra"}]}},
}

ROUTES = """
- match: {prefix: "/public/"}
  route: {cluster: origin}
  typed_per_filter_config:
    envoy.filters.http.ext_authz:
      "@type": %(perRoute)s
      disabled: true
- match: {prefix: "/nobuffer/"}
  route: {cluster: origin}
  typed_per_filter_config:
    envoy.filters.http.ext_authz:
      "@type": %(perRoute)s
      check_settings: {disable_request_body_buffering: true, context_extensions: {k: v}}
- match: {prefix: "/"}
  route: {cluster: origin}
""" % {"perRoute": PER_ROUTE}

ALLOW = (b"HTTP/1.1 200 OK\r\nx-auth-user: alice\r\nx-extra: 1\r\nx-reason: fine\r\n"
         b"x-user: overridden\r\ncontent-length: 7\r\n\r\nok-body")
DENY = (b"HTTP/1.1 403 Forbidden\r\nx-reason: nope\r\nx-other: o\r\nwww-authenticate: Bearer\r\n"
        b"content-type: text/plain\r\ncontent-length: 15\r\n\r\ndenied by authz")
ORIGIN = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi"


def harness(testCase, **fields):
    typed = {"@type": "type.googleapis.com/" + EXT_AUTHZ, "http_service": SERVICE}
    typed.update(fields)
    return Harness(testCase, routes=ROUTES, filters=[
        {"name": "envoy.filters.http.ext_authz", "typed_config": typed}, ROUTER])


class ConfigTests(SynchronousTestCase):
    """Compiling an C{ExtAuthz}."""

    def test_factory(self):
        verifyObject(IHttpFilterFactory, compileFilter(EXT_AUTHZ, "http_service: %s" % (
            SERVICE,)))

    def test_grpcService(self):
        """An C{envoy_grpc} service compiles, with its cluster and timeout."""
        config = compileFilter(EXT_AUTHZ, "grpc_service: {envoy_grpc: {cluster_name: authz}, "
                                          "timeout: 0.25s}")
        verifyObject(IHttpFilterFactory, config)
        self.assertEqual((config.grpcService.target.clusterName,
                          config.grpcService.target.timeout), ("authz", 0.25))

    def test_googleGrpcRefused(self):
        """A C{google_grpc} service is refused with its path."""
        e = self.assertRaises(ConfigError, compileFilter, EXT_AUTHZ,
                              "grpc_service: {google_grpc: {target_uri: 'a:1', "
                              "stat_prefix: a}}")
        self.assertIn("typed_config.grpc_service", str(e))

    def test_serviceRequired(self):
        e = self.assertRaises(ConfigError, compileFilter, EXT_AUTHZ, "failure_mode_allow: true")
        self.assertIn("one of http_service or grpc_service is required", str(e))

    def test_timeoutRequired(self):
        e = self.assertRaises(ConfigError, compileFilter, EXT_AUTHZ,
                              "http_service: {server_uri: {uri: 'http://a', cluster: a}}")
        self.assertIn("http_service.server_uri.timeout: Proto constraint validation failed",
                      str(e))

    def test_unreadFieldRefused(self):
        e = self.assertRaises(ConfigError, compileFilter, EXT_AUTHZ,
                              "http_service: %s\nfilter_enabled: {default_value: "
                              "{numerator: 50}}" % (SERVICE,))
        self.assertIn("typed_config.filter_enabled", str(e))


class CheckTests(SynchronousTestCase):
    """The check request and what each answer does."""

    def send(self, h, path="/allow/echo", extra=b"", body=b""):
        down = h.connect()
        down.send(b"GET " + path.encode() + b" HTTP/1.1\r\nhost: example.com\r\nx-user: bob\r\n"
                  b"x-auth-token: t1\r\nx-other: no\r\nauthorization: Bearer abc\r\n" + extra
                  + b"\r\n" + body)
        return down

    def test_checkRequest(self):
        """
        Envoy 1.40's check: method, prefixed path and query, host,
        content-length 0, the allowed headers, headers_to_add, then
        x-envoy-internal and the timeout.
        """
        h = harness(self)
        self.send(h, "/allow/echo?q=1")
        authz = h.upstream()
        self.assertEqual(authz.port, 8081)
        line, headers = authz.request()
        self.assertEqual(line, "GET /check/allow/echo?q=1 HTTP/1.1")
        self.assertEqual(headers, [
            ("host", "example.com"), ("content-length", "0"), ("x-user", "bob"),
            ("x-auth-token", "t1"), ("authorization", "Bearer abc"), ("x-authz-added", "yes"),
            ("x-envoy-internal", "true"), ("x-envoy-expected-rq-timeout-ms", "500")])
        self.assertEqual(len(h.upstreams()), 1)

    def test_allowed(self):
        """
        Envoy 1.40: allowed_upstream_headers replace the request's (at the
        end), allowed_client_headers_on_success reach the client.
        """
        h = harness(self)
        down = self.send(h)
        h.upstream().respond(ALLOW)
        origin = h.upstream()
        line, headers = origin.request()
        names = [n for n, _ in headers]
        self.assertEqual(names[-3:], ["x-auth-user", "x-user", "x-envoy-expected-rq-timeout-ms"])
        self.assertIn(("x-user", "overridden"), headers)
        self.assertNotIn(("x-user", "bob"), headers)
        origin.respond(ORIGIN)
        response = down.responses()[0]
        self.assertEqual((response.status, response.header("x-extra")), (200, "1"))
        self.assertEqual(h.stat("http.ingress.ext_authz.ok"), 1)
        self.assertEqual(h.stat("cluster.origin.ext_authz.ok"), 1)

    def test_denied(self):
        """Envoy 1.40: the service's status, body and allowed headers, flag UAEX."""
        h = harness(self)
        down = self.send(h, "/deny/x")
        h.upstream().respond(DENY)
        response = down.responses()[0]
        self.assertEqual((response.status, response.body), (403, b"denied by authz"))
        self.assertEqual(response.names()[:4], ["x-reason", "www-authenticate",
                                                "content-length", "content-type"])
        self.assertEqual(len(h.upstreams()), 1)
        self.assertEqual(h.stat("http.ingress.ext_authz.denied"), 1)
        self.assertEqual(h.stat("cluster.origin.upstream_rq_403"), 1)
        info = h.accessLog.entries[-1][0]
        self.assertEqual((info.responseFlags(), info.responseCodeDetails),
                         ("UAEX", "ext_authz_denied"))

    def test_redirect(self):
        h = harness(self)
        down = self.send(h, "/redirect/x")
        h.upstream().respond(b"HTTP/1.1 302 Found\r\nlocation: http://login/\r\n"
                             b"content-length: 0\r\n\r\n")
        response = down.responses()[0]
        self.assertEqual((response.status, response.header("location")), (302, "http://login/"))

    def test_serverErrorIsAnError(self):
        """Envoy 1.40: a 5xx from the service is an error: 403, no body."""
        h = harness(self)
        down = self.send(h, "/err/x")
        h.upstream().respond(b"HTTP/1.1 500 Oops\r\ncontent-length: 0\r\n\r\n")
        response = down.responses()[0]
        self.assertEqual((response.status, response.body), (403, b""))
        self.assertEqual(h.stat("http.ingress.ext_authz.error"), 1)

    def test_timeout(self):
        """Envoy 1.40: past server_uri.timeout, 403, and a 504 for the service's cluster."""
        h = harness(self)
        down = self.send(h, "/slow/x")
        h.upstream()
        h.advance(0.6)
        response = down.responses()[0]
        self.assertEqual((response.status, response.body), (403, b""))
        self.assertEqual(h.stat("cluster.dead.upstream_rq_timeout"), 1)
        self.assertEqual(h.stat("cluster.dead.upstream_rq_504"), 1)

    def test_statusOnError(self):
        h = harness(self, status_on_error={"code": "ServiceUnavailable"})
        down = self.send(h)
        h.upstream(connect=False).fail()
        self.assertEqual(down.responses()[0].status, 503)

    def test_failureModeAllow(self):
        """Envoy 1.40: the service down, the request goes on untouched."""
        h = harness(self, failure_mode_allow=True, failure_mode_allow_header_add=True)
        down = self.send(h)
        h.upstream(connect=False).fail()
        origin = h.upstream()
        self.assertIn(("x-envoy-auth-failure-mode-allowed", "true"), origin.request()[1])
        origin.respond(ORIGIN)
        self.assertEqual(down.responses()[0].status, 200)
        self.assertEqual(h.stat("http.ingress.ext_authz.error"), 1)
        self.assertEqual(h.stat("http.ingress.ext_authz.failure_mode_allowed"), 1)

    def test_routeDisabled(self):
        h = harness(self)
        self.send(h, "/public/x")
        self.assertEqual(h.upstream().port, 8080)

    def test_clientGoneWhileChecking(self):
        """The check is abandoned with the request; its connection is closed."""
        h = harness(self)
        down = self.send(h)
        authz = h.upstream()
        down.lose()
        self.assertTrue(authz.transport.disconnecting)


class BodyTests(SynchronousTestCase):
    """C{with_request_body}."""

    def post(self, h, path, body):
        down = h.connect()
        down.send(b"POST " + path + b" HTTP/1.1\r\nhost: e\r\ncontent-length: %d\r\n\r\n%s"
                  % (len(body), body))
        return down

    def test_bodySent(self):
        """Envoy 1.40: the body, its length and x-envoy-auth-partial-body: false."""
        h = harness(self, with_request_body={"max_request_bytes": 100})
        self.post(h, b"/a", b"hello body")
        authz = h.upstream()
        self.assertIn(("x-envoy-auth-partial-body", "false"), authz.request()[1])
        self.assertIn(("content-length", "10"), authz.request()[1])
        self.assertTrue(authz.received().endswith(b"\r\n\r\nhello body"))
        authz.respond(ALLOW)
        self.assertTrue(h.upstream().received().endswith(b"\r\n\r\nhello body"))

    def test_tooLarge(self):
        """Envoy 1.40: past max_request_bytes without allow_partial_message, 413."""
        h = harness(self, with_request_body={"max_request_bytes": 100})
        down = self.post(h, b"/a", b"a" * 200)
        response = down.responses()[0]
        self.assertEqual((response.status, response.body), (413, b"Payload Too Large"))
        self.assertEqual(h.upstreams(), [])
        self.assertEqual(h.stat("http.ingress.downstream_rq_too_large"), 1)

    def test_partial(self):
        h = harness(self, with_request_body={"max_request_bytes": 5,
                                             "allow_partial_message": True})
        self.post(h, b"/a", b"0123456789")
        authz = h.upstream()
        self.assertIn(("x-envoy-auth-partial-body", "true"), authz.request()[1])
        self.assertTrue(authz.received().endswith(b"\r\n\r\n01234"))
        authz.respond(ALLOW)
        self.assertTrue(h.upstream().received().endswith(b"\r\n\r\n0123456789"))

    def test_routeWithoutBuffering(self):
        h = harness(self, with_request_body={"max_request_bytes": 100})
        self.post(h, b"/nobuffer/a", b"hello")
        authz = h.upstream()
        self.assertNotIn("x-envoy-auth-partial-body", [n for n, _ in authz.request()[1]])
        self.assertTrue(authz.received().endswith(b"\r\n\r\n"))
