"""
Tests for the small HTTP filters: L{txenvoy.extensions.filters.http.csrf},
L{txenvoy.extensions.filters.http.header_mutation} and
L{txenvoy.extensions.filters.http.set_metadata}. What they check was
observed on Envoy 1.40 (C{tests/e2e/test_small_filters.py} runs both).
"""

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from txenvoy.config.errors import ConfigError
from txenvoy.http.filter import FilterHeadersStatus
from txenvoy.interfaces import IHttpFilterFactory

from tests.extensions.filters.http.fakes import (
    FakeCallbacks,
    compileFilter,
    request,
    response,
    routeFor,
)

CSRF = "envoy.extensions.filters.http.csrf.v3.CsrfPolicy"
MUTATION = "envoy.extensions.filters.http.header_mutation.v3.HeaderMutation"
SET_METADATA = "envoy.extensions.filters.http.set_metadata.v3.Config"
PREFIX = "http.ingress_http."


def names(head):
    return [n for n, _ in head.headers.items()]


class CsrfTests(SynchronousTestCase):

    def run_(self, method, *headers, policy="filter_enabled: {default_value: {numerator: 100}}",
             authority="example.com"):
        config = compileFilter(CSRF, policy + "\nadditional_origins: [{suffix: .partner.example}]")
        verifyObject(IHttpFilterFactory, config)
        callbacks = FakeCallbacks()
        status = config.createFilter(callbacks).decodeHeaders(
            request(method, "/", list(headers), authority=authority), False)
        return status, callbacks

    def test_filterEnabledRequired(self):
        e = self.assertRaises(ConfigError, compileFilter, CSRF, "{}")
        self.assertIn("CsrfPolicyValidationError.FilterEnabled: value is required", str(e))

    def test_sameOrigin(self):
        """Envoy 1.40: the scheme does not count, the port does."""
        status, callbacks = self.run_("POST", ("origin", "https://example.com"))
        self.assertEqual(status, FilterHeadersStatus.Continue)
        self.assertEqual(callbacks.counter(PREFIX + "csrf.request_valid"), 1)
        status, callbacks = self.run_("POST", ("origin", "http://example.com:81"))
        self.assertEqual(callbacks.localReplies[0].code, 403)

    def test_invalid(self):
        """Envoy 1.40's refusal."""
        status, callbacks = self.run_("PATCH", ("referer", "http://evil.example/x"))
        [reply] = callbacks.localReplies
        self.assertEqual((reply.code, reply.body, reply.details),
                         (403, b"Invalid origin", "csrf_origin_mismatch"))
        self.assertEqual(callbacks.counter(PREFIX + "csrf.request_invalid"), 1)

    def test_missing(self):
        """No origin, or C{origin: null}, is a missing source origin, refused."""
        for headers in ((), (("origin", "null"),)):
            status, callbacks = self.run_("POST", *headers)
            self.assertEqual(callbacks.localReplies[0].code, 403)
            self.assertEqual(callbacks.counter(PREFIX + "csrf.missing_source_origin"), 1)

    def test_additionalOrigins(self):
        status, callbacks = self.run_("DELETE", ("origin", "http://a.partner.example"))
        self.assertEqual(callbacks.localReplies, [])

    def test_safeMethods(self):
        status, callbacks = self.run_("OPTIONS", ("origin", "http://evil.example"))
        self.assertEqual((callbacks.localReplies, callbacks.counter(
            PREFIX + "csrf.request_invalid")), ([], 0))

    def test_shadow(self):
        status, callbacks = self.run_(
            "POST", ("origin", "http://evil.example"),
            policy="filter_enabled: {default_value: {numerator: 0}}\n"
                   "shadow_enabled: {default_value: {numerator: 100}}")
        self.assertEqual(callbacks.localReplies, [])
        self.assertEqual(callbacks.counter(PREFIX + "csrf.request_invalid"), 1)


MUTATIONS = """
mutations:
  request_mutations:
  - remove: x-drop
  - append: {header: {key: x-filter, value: f}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}
  - append: {header: {key: x-path, value: "%REQ(:PATH)%"}}
  response_mutations:
  - append: {header: {key: x-resp, value: "%RESPONSE_CODE%"}}
"""

ROUTES = """
virtual_hosts:
- name: all
  domains: ["*"]
  routes:
  - match: {prefix: "/mut"}
    route: {cluster: origin}
    typed_per_filter_config:
      envoy.extensions.filters.http.header_mutation.v3.HeaderMutation:
        "@type": type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutationPerRoute
        mutations:
          request_mutations:
          - remove: x-filter
          - append: {header: {key: x-route, value: r}}
"""


class HeaderMutationTests(SynchronousTestCase):

    def run_(self, path="/", text=MUTATIONS, headers=()):
        route = routeFor(ROUTES, path.encode())
        callbacks = FakeCallbacks(route=route, filterConfigName=MUTATION)
        f = compileFilter(MUTATION, text).createFilter(callbacks)
        head = request("GET", path, list(headers))
        f.decodeHeaders(head, True)
        return f, head

    def test_inOrder(self):
        """Envoy 1.40: an overwrite drops the old value and adds at the end."""
        f, head = self.run_(headers=[("x-filter", "old"), ("x-drop", "1"), ("x-keep", "k")])
        self.assertEqual(list(head.headers.items()), [
            (b"x-keep", b"k"), (b"x-filter", b"f"), (b"x-path", b"/")])

    def test_response(self):
        f, head = self.run_()
        out = response(403)
        f.encodeHeaders(out, True)
        self.assertEqual(out.headers.get(b"x-resp"), b"403")

    def test_routeAfterFilter(self):
        """Envoy 1.40: the route's mutations run after the filter's."""
        f, head = self.run_("/mut", headers=[("x-filter", "old")])
        self.assertEqual(names(head), [b"x-path", b"x-route"])

    def test_mostSpecificFirst(self):
        f, head = self.run_("/mut", text=MUTATIONS + "most_specific_header_mutations_wins: true",
                            headers=[("x-filter", "old")])
        self.assertEqual(names(head), [b"x-route", b"x-filter", b"x-path"])

    def test_removeOnMatchRefused(self):
        e = self.assertRaises(ConfigError, compileFilter, MUTATION,
                              "mutations: {request_mutations: [{remove_on_match: "
                              "{key_matcher: {exact: x}}}]}")
        self.assertIn("mutations.request_mutations[0].remove_on_match", str(e))


class SetMetadataTests(SynchronousTestCase):

    def run_(self, text):
        callbacks = FakeCallbacks()
        f = compileFilter(SET_METADATA, text).createFilter(callbacks)
        self.assertEqual(f.decodeHeaders(request(), True), FilterHeadersStatus.Continue)
        return callbacks

    def test_firstWins(self):
        """Envoy 1.40: a second entry for a namespace is denied and counted."""
        callbacks = self.run_("metadata: [{metadata_namespace: acme, value: {team: blue}}, "
                              "{metadata_namespace: acme, value: {team: red}}]")
        self.assertEqual(callbacks.streamInfo.dynamicMetadata, {"acme": {"team": "blue"}})
        self.assertEqual(callbacks.counter(PREFIX + "set_metadata.overwrite_denied"), 1)

    def test_allowOverwrite(self):
        callbacks = self.run_("metadata: [{metadata_namespace: acme, value: {team: blue}}, "
                              "{metadata_namespace: acme, value: {team: red}, "
                              "allow_overwrite: true}]")
        self.assertEqual(callbacks.streamInfo.dynamicMetadata, {"acme": {"team": "red"}})

    def test_legacyMerges(self):
        callbacks = self.run_("metadata_namespace: acme\nvalue: {a: {b: 1}}")
        self.assertEqual(callbacks.streamInfo.dynamicMetadata, {"acme": {"a": {"b": 1.0}}})

    def test_typedValueRefused(self):
        e = self.assertRaises(ConfigError, compileFilter, SET_METADATA,
                              "metadata: [{metadata_namespace: a, typed_value: "
                              "{'@type': type.googleapis.com/google.protobuf.StringValue, "
                              "value: x}}]")
        self.assertIn("typed_config.metadata[0].typed_value", str(e))
