"""
Tests for L{txenvoy.extensions.filters.http.custom_response}, with fake
callbacks; C{tests/e2e/test_custom_response.py} compares it with Envoy 1.40.
"""

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from txenvoy.config.errors import ConfigError
from txenvoy.http.filter import FilterHeadersStatus
from txenvoy.interfaces import IHttpFilterFactory

from tests.extensions.filters.http.fakes import (
    compileFilter,
    makeFilter,
    request,
    response,
    routeFor,
)

CUSTOM = "envoy.extensions.filters.http.custom_response.v3.CustomResponse"

MATCHER = """
custom_response_matcher:
  matcher_list:
    matchers:
    - predicate:
        single_predicate:
          input:
            name: status
            typed_config:
              "@type": type.googleapis.com/envoy.type.matcher.v3.HttpResponseStatusCodeMatchInput
          value_match: {exact: "404"}
      on_match:
        action:
          name: act
          typed_config:
            "@type": %s
"""

LOCAL = ("type.googleapis.com/envoy.extensions.http.custom_response.local_response_policy.v3."
         "LocalResponsePolicy\n            body: {inline_string: gone}\n            status_code: 410")
REDIRECT = ("type.googleapis.com/envoy.extensions.http.custom_response.redirect_policy.v3."
            "RedirectPolicy\n            uri: https://example.com/error")


class CustomResponseTests(SynchronousTestCase):

    def test_localReply(self):
        """A matching response is replaced by the policy's local reply."""
        config = compileFilter(CUSTOM, MATCHER % (LOCAL,))
        verifyObject(IHttpFilterFactory, config)
        f, callbacks = makeFilter(config, CUSTOM)
        f.decodeHeaders(request(), True)
        self.assertEqual(f.encodeHeaders(response(404), False), FilterHeadersStatus.StopIteration)
        [reply] = callbacks.localReplies
        self.assertEqual((reply.code, reply.body), (410, b"gone"))

    def test_ownReplyPasses(self):
        """The filter's own reply is not matched again on its way out."""
        config = compileFilter(CUSTOM, MATCHER % (LOCAL,))
        f, callbacks = makeFilter(config, CUSTOM)
        f.decodeHeaders(request(), True)
        f.encodeHeaders(response(404), False)
        self.assertEqual(f.encodeHeaders(response(404), False), FilterHeadersStatus.Continue)
        self.assertEqual(len(callbacks.localReplies), 1)

    def test_noMatch(self):
        """Other responses go on untouched."""
        config = compileFilter(CUSTOM, MATCHER % (LOCAL,))
        f, callbacks = makeFilter(config, CUSTOM)
        f.decodeHeaders(request(), True)
        self.assertEqual(f.encodeHeaders(response(200), False), FilterHeadersStatus.Continue)
        self.assertEqual(callbacks.localReplies, [])

    def test_redirect(self):
        """
        A redirect policy sends the request again, a GET to its uri with
        its request headers, on a new stream (Envoy's recreateStream).
        """
        config = compileFilter(CUSTOM, MATCHER % (
            REDIRECT + "\n            request_headers_to_add: [{header: {key: x-a, value: b}}]",))
        f, callbacks = makeFilter(config, CUSTOM, route=routeFor(
            "virtual_hosts: [{name: v, domains: ['*'], routes: [{match: {prefix: /}, "
            "route: {cluster: c}}]}]", b"/error"))
        callbacks.requestHeaders = request("POST", "/x", [("content-length", "3")])
        f.decodeHeaders(callbacks.requestHeaders, False)
        self.assertEqual(f.encodeHeaders(response(404), False), FilterHeadersStatus.StopIteration)
        [(sent, responseHeaders, body)] = callbacks.recreated
        self.assertEqual((sent.method, sent.scheme, sent.authority, sent.path, body),
                         (b"GET", b"https", b"example.com", b"/error", b""))
        self.assertEqual(sent.headers.get(b"x-a"), b"b")
        self.assertIsNone(sent.headers.get(b"content-length"))

    def test_redirectWithoutRoute(self):
        """No route for the new URL: the response goes on, counted."""
        config = compileFilter(CUSTOM, MATCHER % (REDIRECT,))
        f, callbacks = makeFilter(config, CUSTOM)
        original = request("GET", "/x")
        f.decodeHeaders(original, True)
        self.assertEqual(f.encodeHeaders(response(404), False), FilterHeadersStatus.Continue)
        self.assertEqual(callbacks.recreated, [])
        self.assertEqual(original.path, b"/x")
        self.assertEqual(callbacks.counter("http.ingress_http.custom_response_redirect_no_route"), 1)

    def test_redirectConfigErrors(self):
        """Envoy 1.40's refusals of a RedirectPolicy, with the field path."""
        base = ("type.googleapis.com/envoy.extensions.http.custom_response.redirect_policy.v3."
                "RedirectPolicy\n            ")
        for fields, message in [
                ("uri: /relative", "Invalid uri specified for redirection for custom response"),
                ("redirect_action: {prefix_rewrite: /a}",
                 "prefix_rewrite is not supported for Custom Response"),
                ("redirect_action: {regex_rewrite: {pattern: {regex: a}, substitution: b}}",
                 "regex_rewrite is not supported for Custom Response"),
                ("redirect_action: {path_redirect: '/a#b'}", "#fragment is not supported"),
                ("redirect_action: {strip_query: true}",
                 "At least one of host_redirect and path_redirect needs to be specified"),
                ("uri: http://a/\n            modify_request_headers_action: {name: m, "
                 "typed_config: {'@type': type.googleapis.com/google.protobuf.Empty}}",
                 "modify_request_headers_action")]:
            e = self.assertRaises(ConfigError, compileFilter, CUSTOM, MATCHER % (base + fields,))
            self.assertIn(message, str(e))
            self.assertIn("on_match.action.typed_config", str(e))
