"""
Tests for L{txenvoy.extensions.filters.http.custom_response}, with fake
callbacks; C{tests/e2e/test_custom_response.py} compares it with Envoy 1.40.
"""

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from txenvoy.config.errors import ConfigError
from txenvoy.http.filter import FilterHeadersStatus
from txenvoy.interfaces import IHttpFilterFactory

from tests.extensions.filters.http.fakes import compileFilter, makeFilter, request, response

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

    def test_redirectPolicyRefused(self):
        """The redirect policy (an internal redirect) is refused with its path."""
        e = self.assertRaises(ConfigError, compileFilter, CUSTOM, MATCHER % (REDIRECT,))
        self.assertIn("on_match.action.typed_config", str(e))
        self.assertIn("RedirectPolicy", str(e))
