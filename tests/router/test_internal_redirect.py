"""
Tests for L{txenvoy.router.internal_redirect}: the compiled
C{internal_redirect_policy}, the C{location} parser, and the router
following a redirect through the connection manager in memory
(L{tests.http.hcm_harness}). The behaviours named "Envoy 1.40" are
compared with the binary in C{tests/e2e/test_internal_redirect.py}.
"""

from twisted.trial.unittest import SynchronousTestCase

from txenvoy.config.errors import ConfigError, UnsupportedExtension
from txenvoy.extensions.internal_redirect.predicates import PreviousRoutesPredicate
from txenvoy.router.internal_redirect import parseAbsoluteUrl

from tests.http.hcm_harness import Harness
from tests.router.test_config import _oneHost, _route

ROUTES = """
- name: follow
  match: {prefix: "/f/"}
  route:
    cluster: origin
    internal_redirect_policy:
      max_internal_redirects: 1
      redirect_response_codes: [302, 307]
      response_headers_to_copy: [x-copy]
- name: target
  match: {prefix: "/o/"}
  route: {cluster: origin}
"""

FOUND = (b"HTTP/1.1 %d Found\r\nlocation: %s\r\nx-copy: yes\r\n"
         b"content-length: 5\r\n\r\nmoved")
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


def _policy(action):
    table = _oneHost("- {name: r, match: {prefix: /}, route: {cluster: c, %s}}" % (action,))
    return _route(table, b"/").entry.internalRedirectPolicy


class PolicyTests(SynchronousTestCase):

    def test_noPolicy(self):
        """Without a policy (or with PASS_THROUGH) nothing is followed."""
        self.assertIsNone(_policy("timeout: 1s"))
        self.assertIsNone(_policy("internal_redirect_action: PASS_THROUGH_INTERNAL_REDIRECT"))

    def test_defaults(self):
        """Envoy's defaults: one redirect, 302 only, same scheme."""
        policy = _policy("internal_redirect_policy: {}")
        self.assertEqual((policy.maxInternalRedirects, policy.redirectResponseCodes,
                          policy.allowCrossSchemeRedirect, policy.routeName),
                         (1, frozenset([302]), False, "r"))

    def test_codesOutsideTheRedirectsIgnored(self):
        """Envoy ignores a listed code that is not 301, 302, 303, 307 or 308."""
        policy = _policy("internal_redirect_policy: {redirect_response_codes: [200, 303, 308]}")
        self.assertEqual(policy.redirectResponseCodes, frozenset([303, 308]))

    def test_deprecatedAction(self):
        """internal_redirect_action HANDLE_INTERNAL_REDIRECT with max_internal_redirects."""
        policy = _policy("internal_redirect_action: HANDLE_INTERNAL_REDIRECT, "
                         "max_internal_redirects: 3")
        self.assertEqual((policy.maxInternalRedirects, policy.redirectResponseCodes),
                         (3, frozenset([302])))

    def test_pseudoHeaderToCopyRefused(self):
        """Envoy 1.40: ':-prefixed headers or Hosts may not be specified here.'"""
        for name in (":path", "Host"):
            e = self.assertRaises(ConfigError, _policy,
                                  "internal_redirect_policy: {response_headers_to_copy: [\"%s\"]}"
                                  % (name,))
            self.assertIn(":-prefixed headers or Hosts may not be specified here.", str(e))
            self.assertIn("internal_redirect_policy.response_headers_to_copy[0]", str(e))

    def test_predicates(self):
        policy = _policy("""internal_redirect_policy: {predicates: [
            {name: a, typed_config: {"@type": type.googleapis.com/envoy.extensions.internal_redirect.previous_routes.v3.PreviousRoutesConfig}},
            {name: b, typed_config: {"@type": type.googleapis.com/envoy.extensions.internal_redirect.allow_listed_routes.v3.AllowListedRoutesConfig, allowed_route_names: [x]}}]}""")
        self.assertIsInstance(policy.predicates[0], PreviousRoutesPredicate)
        self.assertEqual(policy.predicates[1].allowed, frozenset(["x"]))

    def test_unknownPredicateRefused(self):
        e = self.assertRaises(UnsupportedExtension, _policy, """internal_redirect_policy: {
            predicates: [{name: a, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer}}]}""")
        self.assertIn("internal_redirect_policy.predicates[0].typed_config", str(e))


class ParseAbsoluteUrlTests(SynchronousTestCase):
    """Envoy 1.40's Url::initialize on a location."""

    def test_absolute(self):
        self.assertEqual(parseAbsoluteUrl(b"http://Host.Example:80/a/./b?q=1#f"),
                         (b"http", b"Host.Example:80", b"/a/./b?q=1#f"))
        self.assertEqual(parseAbsoluteUrl(b"HTTPS://h"), (b"https", b"h", b"/"))
        self.assertEqual(parseAbsoluteUrl(b"http://u:p@h:8/"), (b"http", b"h:8", b"/"))

    def test_refused(self):
        for location in (b"/relative", b"h/x", b"ftp://h/", b"http://", b"http://h:99999/",
                         b"http://h\xff/"):
            self.assertIsNone(parseAbsoluteUrl(location), location)


class RouterRedirectTests(SynchronousTestCase):
    """The router following a redirect with a new stream."""

    def setUp(self):
        self.h = Harness(self, routes=ROUTES)

    def test_followed(self):
        """
        Envoy 1.40: the redirected request goes to the new host and path
        with x-envoy-original-url and the copied header; the client sees
        the final answer; the first pass is logged as internal_redirect.
        """
        down = self.h.connect()
        down.send(b"GET /f/a?x=1 HTTP/1.1\r\nhost: front\r\n\r\n")
        self.h.upstream().respond(FOUND % (302, b"http://back:81/o/b?y=2#frag"))
        up = self.h.upstream()
        line, headers = up.request()
        self.assertEqual(line, "GET /o/b?y=2 HTTP/1.1")
        d = dict(headers)
        self.assertEqual((d["host"], d["x-envoy-original-url"], d["x-copy"]),
                         ("back:81", "http://front/f/a?x=1", "yes"))
        self.assertEqual([n for n, _ in headers].count("x-envoy-expected-rq-timeout-ms"), 1)
        up.respond(OK)
        r = down.response()
        self.assertEqual((r.status, r.body), (200, b"ok"))
        first, second = [entry[0] for entry in self.h.logger.entries]
        self.assertEqual((first.responseCode, first.responseCodeDetails, second.responseCode),
                         (302, "internal_redirect", 200))
        self.assertEqual(self.h.stat("cluster.origin.upstream_internal_redirect_succeeded_total"),
                         1)
        self.assertEqual(self.h.stat("http.ingress.downstream_rq_total"), 2)
        self.assertEqual(self.h.stat("http.ingress.downstream_rq_completed"), 1)
        self.assertEqual(self.h.stat("cluster.origin.upstream_rq_302"), 0)

    def test_bodyFollows(self):
        """A 307 to a POST: the redirected request carries the body again."""
        down = self.h.connect()
        down.send(b"POST /f/a HTTP/1.1\r\nhost: front\r\ncontent-length: 4\r\n\r\nbody")
        self.h.upstream().respond(FOUND % (307, b"http://back/o/b"))
        up = self.h.upstream()
        self.assertTrue(up.received().startswith(b"POST /o/b HTTP/1.1\r\n"))
        self.assertTrue(up.received().endswith(b"\r\n\r\nbody"))
        up.respond(OK)
        self.assertEqual(down.response().status, 200)

    def test_secondRedirectPassesThrough(self):
        """max_internal_redirects reached: the 3xx goes to the client."""
        down = self.h.connect()
        down.send(b"GET /f/a HTTP/1.1\r\nhost: front\r\n\r\n")
        self.h.upstream().respond(FOUND % (302, b"http://back/f/again"))
        self.h.upstream().respond(FOUND % (302, b"http://back/o/b"))
        r = down.response()
        self.assertEqual((r.status, r.body), (302, b"moved"))
        self.assertEqual(self.h.stat("http.ingress.passthrough_internal_redirect_too_many_redirects"),
                         1)
        self.assertEqual(self.h.stat("cluster.origin.upstream_internal_redirect_failed_total"), 1)

    def test_requestIncomplete(self):
        """Envoy's rule: a request not read in full is never redirected."""
        down = self.h.connect()
        down.send(b"POST /f/a HTTP/1.1\r\nhost: front\r\ncontent-length: 8\r\n\r\nhalf")
        self.h.upstream().respond(FOUND % (302, b"http://back/o/b"))
        r = down.response()
        self.assertEqual(r.status, 302)
        self.assertEqual(len(self.h.upstreams()), 1)
        self.assertEqual(self.h.stat("cluster.origin.upstream_internal_redirect_failed_total"), 1)

    def test_bodyAboveBufferLimit(self):
        """A body the buffer could not keep (retry_or_shadow_abandoned): not redirected."""
        body = b"x" * (1024 * 1024 + 1)
        down = self.h.connect()
        down.send(b"POST /f/a HTTP/1.1\r\nhost: front\r\ncontent-length: %d\r\n\r\n%s"
                  % (len(body), body))
        self.h.upstream().respond(FOUND % (307, b"http://back/o/b"))
        self.assertEqual(down.response().status, 307)
        self.assertEqual(self.h.stat("cluster.origin.retry_or_shadow_abandoned"), 1)
        self.assertEqual(self.h.stat("cluster.origin.upstream_internal_redirect_failed_total"), 1)


class Http2RedirectTests(SynchronousTestCase):
    """An internal redirect on an HTTP/2 stream: the same stream answers."""

    def test_followedOnTheSameStream(self):
        from h2.config import H2Configuration
        from h2.connection import H2Connection
        from h2.events import DataReceived, ResponseReceived, StreamEnded

        h = Harness(self, routes=ROUTES)
        down = h.connect()
        client = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        client.initiate_connection()
        client.send_headers(1, [(b":method", b"GET"), (b":scheme", b"http"),
                                (b":path", b"/f/a"), (b":authority", b"front")],
                            end_stream=True)
        down.send(client.data_to_send())
        h.upstream().respond(FOUND % (302, b"http://back/o/b"))
        up = h.upstream()
        self.assertEqual(up.request()[0], "GET /o/b HTTP/1.1")
        up.respond(OK)
        events = client.receive_data(down.written())
        [head] = [e for e in events if isinstance(e, ResponseReceived)]
        self.assertEqual((head.stream_id, dict(head.headers)[b":status"]), (1, b"200"))
        self.assertEqual(b"".join(e.data for e in events if isinstance(e, DataReceived)), b"ok")
        self.assertTrue([e for e in events if isinstance(e, StreamEnded)])
        self.assertEqual(h.stat("http.ingress.downstream_rq_http2_total"), 2)
