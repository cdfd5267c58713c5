"""
Tests for L{txenvoy.extensions.filters.http.cors}.

Replies and stats were observed on Envoy 1.40 with C{11-http-filters.yaml}
(a virtual host policy allowing C{https://.*\\.example\\.com}) and a
policy with C{*} methods and headers, C{expose_headers},
C{allow_credentials} and C{allow_private_network_access}, in front of an
RBAC filter.
"""

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from txenvoy.extensions.filters.http.cors import CorsConfig
from txenvoy.http.filter import FilterHeadersStatus
from txenvoy.interfaces import IHttpFilterFactory
from txenvoy.stats.store import StatsStore

from tests.extensions.filters.http.fakes import (
    CORS,
    FakeCallbacks,
    FakeServer,
    compileFilter,
    makeContext,
    request,
    response,
    roles,
    routeFor,
    routeTable,
    runtimeWith,
)
from tests.http.hcm_harness import ROUTER, Harness

POLICY_TYPE = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy"

EXAMPLE_11 = """
virtual_hosts:
- name: all
  domains: ["*"]
  typed_per_filter_config:
    envoy.filters.http.cors:
      "@type": %s
      allow_origin_string_match:
      - safe_regex: { regex: "https://.*\\\\.example\\\\.com" }
      allow_methods: "GET, POST, OPTIONS"
      allow_headers: "content-type, x-requested-with"
      max_age: "600"
  routes:
  - match: {prefix: "/strict"}
    route: {cluster: backend}
    typed_per_filter_config:
      envoy.filters.http.cors:
        "@type": %s
        allow_origin_string_match: [{exact: "https://a.com"}]
        forward_not_matching_preflights: false
  - match: {prefix: "/off"}
    route: {cluster: backend}
    typed_per_filter_config:
      envoy.filters.http.cors:
        "@type": %s
        filter_enabled: {default_value: {numerator: 0}}
  - match: {prefix: "/shadow"}
    route: {cluster: backend}
    typed_per_filter_config:
      envoy.filters.http.cors:
        "@type": %s
        filter_enabled: {default_value: {numerator: 0}}
        shadow_enabled: {default_value: {numerator: 100}}
  - match: {prefix: "/direct"}
    direct_response: {status: 200}
  - match: {prefix: "/"}
    route: {cluster: backend}
""" % ((POLICY_TYPE,) * 4)

WIDE = """
virtual_hosts:
- name: all
  domains: ["*"]
  typed_per_filter_config:
    envoy.filters.http.cors:
      "@type": %s
      allow_origin_string_match: [{exact: "https://a.com"}]
      allow_methods: "*"
      allow_headers: "*"
      expose_headers: "x-exp"
      allow_credentials: true
      allow_private_network_access: true
  routes:
  - match: {prefix: "/"}
    route: {cluster: backend}
""" % (POLICY_TYPE,)

LEGACY = """
virtual_hosts:
- name: all
  domains: ["*"]
  cors:
    allow_origin_string_match: [{prefix: "https://"}]
    max_age: "60"
  routes:
  - match: {prefix: "/"}
    route:
      cluster: backend
      cors: {allow_methods: "PUT"}
"""

PREFLIGHT = [("origin", "https://a.example.com"), ("access-control-request-method", "POST")]


class Setup:
    def setUp(self):
        self.store = StatsStore()
        self.runtime = runtimeWith()
        self.config = compileFilter(CORS, "{}", makeContext(
            store=self.store, server=FakeServer(self.store), runtime=self.runtime))

    def go(self, routes, method="GET", path="/", headers=()):
        table = routes if not isinstance(routes, str) else routeTable(routes)
        callbacks = FakeCallbacks(store=self.store, filterConfigName="envoy.filters.http.cors",
                                  route=routeFor(table, path.encode("ascii")))
        f = self.config.createFilter(callbacks)
        status = f.decodeHeaders(request(method, path, headers), True)
        return f, callbacks, status

    def counters(self):
        c = self.store.snapshot().counters
        return (c["http.ingress_http.cors.origin_valid"],
                c["http.ingress_http.cors.origin_invalid"])


class PreflightTests(Setup, SynchronousTestCase):

    def test_factory(self):
        self.assertIsInstance(self.config, CorsConfig)
        self.assertTrue(verifyObject(IHttpFilterFactory, self.config))
        f, _, _ = self.go(EXAMPLE_11)
        self.assertEqual(roles(f), (True, True))
        self.assertEqual(self.counters(), (0, 0))

    def test_preflight(self):
        """
        11-http-filters.yaml: Envoy answered 200 with allow-origin,
        -methods, -headers and -max-age, in that order, details
        C{cors_response}.
        """
        f, callbacks, status = self.go(EXAMPLE_11, "OPTIONS", headers=PREFLIGHT)
        self.assertEqual(status, FilterHeadersStatus.StopIteration)
        [(head, end)] = callbacks.encoded
        self.assertTrue(end)
        self.assertEqual(head.status, 200)
        self.assertEqual(head.headers.items(), [
            (b"access-control-allow-origin", b"https://a.example.com"),
            (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
            (b"access-control-allow-headers", b"content-type, x-requested-with"),
            (b"access-control-max-age", b"600")])
        self.assertEqual(callbacks.streamInfo.responseCodeDetails, "cors_response")
        self.assertEqual(self.counters(), (1, 0))

    def test_wildcardsAndExtras(self):
        """
        C{*} methods and headers echo the request's; credentials and
        private network; the answer passes the filter's own encoder, which
        adds C{expose-headers} (as Envoy's answer had it, last).
        """
        f, callbacks, _ = self.go(WIDE, "OPTIONS", headers=[
            ("origin", "https://a.com"), ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "x-a, x-b"),
            ("access-control-request-private-network", "true")])
        [(head, _)] = callbacks.encoded
        f.encodeHeaders(head, True)
        self.assertEqual(head.headers.items(), [
            (b"access-control-allow-origin", b"https://a.com"),
            (b"access-control-allow-credentials", b"true"),
            (b"access-control-allow-methods", b"PUT"),
            (b"access-control-allow-headers", b"x-a, x-b"),
            (b"access-control-allow-private-network", b"true"),
            (b"access-control-expose-headers", b"x-exp")])

    def test_notAllowedForwarded(self):
        """A preflight from an origin not allowed goes upstream (Envoy's default)."""
        f, callbacks, status = self.go(EXAMPLE_11, "OPTIONS", headers=[
            ("origin", "https://evil.com"), ("access-control-request-method", "POST")])
        self.assertEqual(status, FilterHeadersStatus.Continue)
        self.assertEqual(callbacks.encoded, [])
        head = response(200)
        f.encodeHeaders(head, False)
        self.assertEqual(head.headers.items(), [])
        self.assertEqual(self.counters(), (0, 1))

    def test_notAllowedAnswered(self):
        """C{forward_not_matching_preflights: false}: answered, without allow-origin."""
        f, callbacks, status = self.go(EXAMPLE_11, "OPTIONS", "/strict", headers=[
            ("origin", "https://evil.com"), ("access-control-request-method", "POST")])
        self.assertEqual(status, FilterHeadersStatus.StopIteration)
        [(head, _)] = callbacks.encoded
        self.assertIsNone(head.headers.get(b"access-control-allow-origin"))
        # The route's policy has no methods: the virtual host's apply.
        self.assertEqual(head.headers.get(b"access-control-allow-methods"), b"GET, POST, OPTIONS")

    def test_optionsWithoutRequestMethod(self):
        _, callbacks, status = self.go(EXAMPLE_11, "OPTIONS",
                                       headers=[("origin", "https://a.example.com")])
        self.assertEqual(status, FilterHeadersStatus.Continue)
        self.assertEqual(callbacks.encoded, [])


class SimpleRequestTests(Setup, SynchronousTestCase):

    def test_allowOrigin(self):
        """Envoy appended C{access-control-allow-origin} to the upstream's response."""
        f, _, status = self.go(EXAMPLE_11, headers=[("origin", "https://a.example.com")])
        self.assertEqual(status, FilterHeadersStatus.Continue)
        head = response(200, [("content-type", "application/json")])
        f.encodeHeaders(head, False)
        self.assertEqual(head.headers.items(), [
            (b"content-type", b"application/json"),
            (b"access-control-allow-origin", b"https://a.example.com")])

    def test_credentialsAndExpose(self):
        f, _, _ = self.go(WIDE, headers=[("origin", "https://a.com")])
        head = response(403)
        f.encodeHeaders(head, False)
        self.assertEqual(head.headers.items(), [
            (b"access-control-allow-origin", b"https://a.com"),
            (b"access-control-allow-credentials", b"true"),
            (b"access-control-expose-headers", b"x-exp")])

    def test_noOrigin(self):
        f, _, _ = self.go(EXAMPLE_11)
        head = response(200)
        f.encodeHeaders(head, False)
        self.assertEqual(head.headers.items(), [])
        self.assertEqual(self.counters(), (0, 0))

    def test_disabled(self):
        """C{filter_enabled} at 0: nothing happens and nothing is counted."""
        f, _, _ = self.go(EXAMPLE_11, "OPTIONS", "/off", headers=PREFLIGHT)
        head = response(200)
        f.encodeHeaders(head, False)
        self.assertEqual(head.headers.items(), [])
        self.assertEqual(self.counters(), (0, 0))

    def test_shadow(self):
        """C{shadow_enabled}: counted only."""
        f, callbacks, status = self.go(EXAMPLE_11, "OPTIONS", "/shadow", headers=PREFLIGHT)
        self.assertEqual(status, FilterHeadersStatus.Continue)
        self.assertEqual(callbacks.encoded, [])
        self.assertEqual(self.counters(), (1, 0))

    def test_starOrigin(self):
        """Envoy allows any origin when a matcher matches the text C{*}."""
        table = routeTable(WIDE.replace('[{exact: "https://a.com"}]', '[{exact: "*"}]'))
        f, _, _ = self.go(table, headers=[("origin", "https://b.org")])
        head = response(200)
        f.encodeHeaders(head, False)
        self.assertEqual(head.headers.get(b"access-control-allow-origin"), b"https://b.org")

    def test_directResponseRoute(self):
        """A direct response has no route entry in Envoy: no CORS there."""
        _, callbacks, status = self.go(EXAMPLE_11, "OPTIONS", "/direct", headers=PREFLIGHT)
        self.assertEqual(status, FilterHeadersStatus.Continue)
        self.assertEqual(self.counters(), (0, 0))

    def test_noRoute(self):
        callbacks = FakeCallbacks(store=self.store, route=None)
        f = self.config.createFilter(callbacks)
        self.assertEqual(f.decodeHeaders(request("OPTIONS", "/", PREFLIGHT), True),
                         FilterHeadersStatus.Continue)

    def test_legacyRoutePolicies(self):
        """Without typed policies, the route's and virtual host's C{cors} fields apply."""
        f, callbacks, _ = self.go(LEGACY, "OPTIONS", headers=[
            ("origin", "https://x.org"), ("access-control-request-method", "PUT")])
        [(head, _)] = callbacks.encoded
        self.assertEqual(head.headers.items(), [
            (b"access-control-allow-origin", b"https://x.org"),
            (b"access-control-allow-methods", b"PUT"),
            (b"access-control-max-age", b"60")])

    def test_runtimeKey(self):
        """C{filter_enabled.runtime_key} is read from the runtime per request."""
        table = routeTable(WIDE.replace(
            "allow_private_network_access: true",
            "filter_enabled: {runtime_key: cors.on, default_value: {numerator: 100}}"))
        self.runtime.mergeValues({"cors.on": "0"})
        _, _, _ = self.go(table, headers=[("origin", "https://a.com")])
        self.assertEqual(self.counters(), (0, 0))
        self.runtime.mergeValues({"cors.on": "100"})
        self.go(table, headers=[("origin", "https://a.com")])
        self.assertEqual(self.counters(), (1, 0))


class ThroughConnectionManagerTests(SynchronousTestCase):

    def test_preflightWire(self):
        """Envoy 1.40's preflight answer, header for header."""
        h = Harness(self, routes='[{match: {prefix: "/"}, route: {cluster: origin}, '
                    'typed_per_filter_config: {envoy.filters.http.cors: {"@type": "%s", '
                    'allow_origin_string_match: [{exact: "https://a.com"}], '
                    'allow_methods: "GET", max_age: "600"}}}]' % (POLICY_TYPE,),
                    filters=[{"name": "envoy.filters.http.cors", "typed_config": {
                        "@type": "type.googleapis.com/" + CORS}}, ROUTER])
        down = h.connect()
        down.send(b"OPTIONS / HTTP/1.1\r\nhost: x\r\norigin: https://a.com\r\n"
                  b"access-control-request-method: GET\r\n\r\n")
        r = down.response()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.names(), ["access-control-allow-origin",
                                     "access-control-allow-methods", "access-control-max-age",
                                     "date", "server", "content-length"])
        self.assertEqual(h.upstreams(), [])
