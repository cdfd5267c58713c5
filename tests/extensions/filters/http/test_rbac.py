"""
Tests for L{txenvoy.extensions.filters.http.rbac}.

Replies, details, dynamic metadata (read back through
C{%DYNAMIC_METADATA(envoy.filters.http.rbac)%}) and stat names were
observed on Envoy 1.40 with C{15-rbac-http.yaml} (a unified matcher on
C{referer}), the same with DENY C{shadow_rules} and
C{shadow_rules_stat_prefix: sh_}, policies with C{rules_stat_prefix: en_}
and LOG shadow rules, and a route with an empty C{RBACPerRoute}.
"""

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from txenvoy.config.errors import ConfigError, UnsupportedField
from txenvoy.extensions.filters.http.rbac import RbacConfig, rbacStatNames
from txenvoy.http.filter import FilterHeadersStatus
from txenvoy.interfaces import IHttpFilterFactory
from txenvoy.stats.store import StatsStore

from tests.extensions.filters.http.fakes import (
    RBAC,
    FakeCallbacks,
    FakeConnection,
    FakeServer,
    FakeSsl,
    compileFilter,
    makeContext,
    request,
    roles,
    routeFor,
    routeTable,
)
from tests.http.hcm_harness import ROUTER, Harness

EXAMPLE_15 = r"""
matcher:
  matcher_list:
    matchers:
    - predicate:
        not_matcher:
          single_predicate:
            input:
              name: envoy.matching.inputs.request_headers
              typed_config:
                "@type": type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput
                header_name: referer
            value_match:
              safe_regex:
                google_re2: {}
                regex: https?://(www.)?envoyproxy.io/docs/envoy.*
      on_match:
        action:
          name: action
          typed_config:
            "@type": type.googleapis.com/envoy.config.rbac.v3.Action
            name: illegal-referer
            action: DENY
  on_no_match:
    action:
      name: action
      typed_config:
        "@type": type.googleapis.com/envoy.config.rbac.v3.Action
        name: all-pass
        action: ALLOW
"""
SHADOW = """
shadow_rules_stat_prefix: sh_
shadow_rules:
  action: DENY
  policies:
    shadowpol:
      permissions: [{header: {name: x-shadow, present_match: true}}]
      principals: [{any: true}]
"""
RULES = """
rules_stat_prefix: en_
rules:
  action: DENY
  policies:
    pol-b:
      permissions: [{header: {name: x-deny, present_match: true}}]
      principals: [{any: true}]
shadow_rules:
  action: LOG
  policies:
    logpol:
      permissions: [{header: {name: x-log, present_match: true}}]
      principals: [{any: true}]
"""
ROUTES = """
virtual_hosts:
- name: all
  domains: ["*"]
  routes:
  - match: {prefix: "/open"}
    route: {cluster: backend}
    typed_per_filter_config:
      envoy.filters.http.rbac:
        "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute
  - match: {prefix: "/admin"}
    route: {cluster: backend}
    typed_per_filter_config:
      envoy.filters.http.rbac:
        "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute
        rbac:
          rules:
            action: ALLOW
            policies:
              internal:
                permissions: [{any: true}]
                principals: [{remote_ip: {address_prefix: 10.0.0.0, prefix_len: 8}}]
  - match: {prefix: "/"}
    route: {cluster: backend}
"""
GOOD_REFERER = ("referer", "https://www.envoyproxy.io/docs/envoy/latest")
P = "http.ingress_http.rbac."


class Setup:
    def build(self, text):
        self.store = StatsStore()
        return compileFilter(RBAC, text, makeContext(store=self.store,
                                                     server=FakeServer(self.store)))

    def go(self, config, path="/", headers=(), route=None, connection=None):
        callbacks = FakeCallbacks(store=self.store, route=route, connection=connection,
                                  filterConfigName="envoy.filters.http.rbac")
        f = config.createFilter(callbacks)
        status = f.decodeHeaders(request("GET", path, headers), True)
        return callbacks, status

    def stats(self):
        counters = self.store.snapshot().counters
        return {n[len(P):]: v for n, v in counters.items() if n.startswith(P)}


class MatcherTests(Setup, SynchronousTestCase):

    def test_factory(self):
        config = self.build(EXAMPLE_15)
        self.assertIsInstance(config, RbacConfig)
        self.assertTrue(verifyObject(IHttpFilterFactory, config))
        self.assertEqual(roles(config.createFilter(FakeCallbacks())), (True, False))

    def test_statsAtZero(self):
        """15-rbac-http.yaml: Envoy shows the four counters at zero from the start."""
        self.build(EXAMPLE_15)
        self.assertEqual(self.stats(), {"allowed": 0, "denied": 0, "shadow_allowed": 0,
                                        "shadow_denied": 0})

    def test_denied(self):
        """
        15-rbac-http.yaml without a good referer: 403 C{RBAC: access denied},
        details C{rbac_access_denied_matched_policy[illegal-referer]}, no flag.
        """
        config = self.build(EXAMPLE_15)
        callbacks, status = self.go(config)
        self.assertEqual(status, FilterHeadersStatus.StopIteration)
        [reply] = callbacks.localReplies
        self.assertEqual((reply.code, reply.body, reply.details, reply.flags),
                         (403, b"RBAC: access denied",
                          "rbac_access_denied_matched_policy[illegal-referer]", "-"))
        self.assertEqual(self.stats()["denied"], 1)
        self.assertEqual(callbacks.streamInfo.dynamicMetadata["envoy.filters.http.rbac"],
                         {"enforced_effective_policy_id": "illegal-referer",
                          "enforced_engine_result": "denied"})

    def test_allowed(self):
        config = self.build(EXAMPLE_15)
        callbacks, status = self.go(config, headers=[GOOD_REFERER])
        self.assertEqual(status, FilterHeadersStatus.Continue)
        self.assertEqual(callbacks.localReplies, [])
        self.assertEqual(self.stats()["allowed"], 1)
        self.assertEqual(callbacks.streamInfo.dynamicMetadata["envoy.filters.http.rbac"],
                         {"enforced_effective_policy_id": "all-pass",
                          "enforced_engine_result": "allowed"})

    def test_shadow(self):
        """
        Shadow rules are only counted, under C{rbac.sh_.}, and their result
        goes into the metadata as C{sh_shadow_engine_result}.
        """
        config = self.build(EXAMPLE_15 + SHADOW)
        callbacks, _ = self.go(config, headers=[GOOD_REFERER, ("x-shadow", "1")])
        self.assertEqual(callbacks.localReplies, [])
        self.assertEqual(callbacks.streamInfo.dynamicMetadata["envoy.filters.http.rbac"],
                         {"sh_shadow_effective_policy_id": "shadowpol",
                          "sh_shadow_engine_result": "denied",
                          "enforced_effective_policy_id": "all-pass",
                          "enforced_engine_result": "allowed"})
        callbacks, _ = self.go(config, headers=[GOOD_REFERER])
        self.assertEqual(callbacks.streamInfo.dynamicMetadata["envoy.filters.http.rbac"]
                         ["sh_shadow_engine_result"], "allowed")
        self.assertEqual(self.stats(), {"allowed": 2, "denied": 0, "sh_.shadow_allowed": 1,
                                        "sh_.shadow_denied": 1})

    def test_shadowOnly(self):
        """No enforcing engine: allowed, only the shadow counters move."""
        config = self.build(SHADOW)
        callbacks, status = self.go(config, headers=[("x-shadow", "1")])
        self.assertEqual(status, FilterHeadersStatus.Continue)
        self.assertEqual(self.stats()["allowed"], 0)
        self.assertEqual(self.stats()["sh_.shadow_denied"], 1)

    def test_noEngines(self):
        config = self.build("{}")
        callbacks, status = self.go(config)
        self.assertEqual(status, FilterHeadersStatus.Continue)
        self.assertEqual(callbacks.streamInfo.dynamicMetadata, {})


class RulesTests(Setup, SynchronousTestCase):

    def test_rulesStatPrefix(self):
        """
        C{rules_stat_prefix: en_}: Envoy's C{rbac.en_.allowed} /
        C{denied}, and metadata keys C{en_enforced_*}; LOG shadow rules name
        the matched policy.
        """
        config = self.build(RULES)
        callbacks, _ = self.go(config, headers=[("x-log", "1")])
        self.assertEqual(callbacks.streamInfo.dynamicMetadata["envoy.filters.http.rbac"],
                         {"en_enforced_engine_result": "allowed",
                          "shadow_effective_policy_id": "logpol",
                          "shadow_engine_result": "allowed"})
        callbacks, status = self.go(config, headers=[("x-deny", "1")])
        self.assertEqual(callbacks.localReplies[0].details,
                         "rbac_access_denied_matched_policy[pol-b]")
        self.assertEqual(self.stats(), {"en_.allowed": 1, "en_.denied": 1,
                                        "shadow_allowed": 2, "shadow_denied": 0})

    def test_denyWithoutPolicy(self):
        """An ALLOW engine with nothing matched: details name no policy."""
        config = self.build("rules: {action: ALLOW, policies: {p: {permissions: "
                            "[{header: {name: x-ok, present_match: true}}], "
                            "principals: [{any: true}]}}}")
        callbacks, _ = self.go(config)
        self.assertEqual(callbacks.localReplies[0].details,
                         "rbac_access_denied_matched_policy[none]")

    def test_statNames(self):
        self.assertEqual(rbacStatNames("http.ingress_http.", "en_", "sh_"), {
            "allowed": "http.ingress_http.rbac.en_.allowed",
            "denied": "http.ingress_http.rbac.en_.denied",
            "shadow_allowed": "http.ingress_http.rbac.sh_.shadow_allowed",
            "shadow_denied": "http.ingress_http.rbac.sh_.shadow_denied"})

    def test_addresses(self):
        """The remote address is the stream's (after X-Forwarded-For handling)."""
        config = self.build("rules: {action: ALLOW, policies: {p: {permissions: [{any: true}], "
                            "principals: [{remote_ip: {address_prefix: 192.168.0.0, "
                            "prefix_len: 16}}]}}}")
        callbacks = FakeCallbacks(store=self.store)
        callbacks.streamInfo.downstreamRemoteAddress = ("192.168.1.1", 1)
        f = config.createFilter(callbacks)
        self.assertEqual(f.decodeHeaders(request(), True), FilterHeadersStatus.Continue)
        callbacks, status = self.go(config)
        self.assertEqual(status, FilterHeadersStatus.StopIteration)

    def test_tlsPeer(self):
        config = self.build("rules: {action: ALLOW, policies: {p: {permissions: [{any: true}], "
                            "principals: [{authenticated: {principal_name: "
                            "{exact: 'spiffe://a/b'}}}]}}}")
        callbacks = FakeCallbacks(store=self.store)
        connection = FakeConnection(callbacks.dispatcher, ssl=FakeSsl(uriSans=["spiffe://a/b"]))
        _, status = self.go(config, connection=connection)
        self.assertEqual(status, FilterHeadersStatus.Continue)
        _, status = self.go(config)
        self.assertEqual(status, FilterHeadersStatus.StopIteration)

    def test_unsupported(self):
        self.assertRaises(UnsupportedField, self.build, "track_per_rule_stats: true")

    def test_networkInputRefused(self):
        e = self.assertRaises(ConfigError, self.build, EXAMPLE_15.replace(
            "envoy.type.matcher.v3.HttpRequestHeaderMatchInput",
            "envoy.type.matcher.v3.HttpRequestQueryParamMatchInput").replace(
            "header_name: referer", "query_param: q"))
        self.assertIn("RBAC HTTP filter cannot match", str(e))


class PerRouteTests(Setup, SynchronousTestCase):

    def test_emptyTurnsOff(self):
        """An empty C{RBACPerRoute}: no engine on that route, nothing counted."""
        table = routeTable(ROUTES)
        config = self.build(EXAMPLE_15 + SHADOW)
        callbacks, status = self.go(config, "/open", [("x-shadow", "1")],
                                    route=routeFor(table, b"/open"))
        self.assertEqual(status, FilterHeadersStatus.Continue)
        self.assertEqual({k: v for k, v in self.stats().items() if v}, {})

    def test_routeRules(self):
        """A route's rules replace the filter's; the stats stay the filter's."""
        table = routeTable(ROUTES)
        config = self.build(EXAMPLE_15)
        callbacks, status = self.go(config, "/admin", route=routeFor(table, b"/admin"))
        self.assertEqual(status, FilterHeadersStatus.Continue)
        callbacks, status = self.go(config, "/", route=routeFor(table, b"/"))
        self.assertEqual(status, FilterHeadersStatus.StopIteration)
        self.assertEqual(self.stats()["allowed"], 1)
        self.assertEqual(self.stats()["denied"], 1)


class ThroughConnectionManagerTests(SynchronousTestCase):

    def test_403Wire(self):
        """Envoy 1.40's 403 with 15-rbac-http.yaml, header for header."""
        import yaml
        typed = yaml.safe_load(EXAMPLE_15)
        typed["@type"] = "type.googleapis.com/" + RBAC
        h = Harness(self, routes='[{match: {prefix: "/"}, route: {cluster: origin}}]',
                    filters=[{"name": "envoy.filters.http.rbac", "typed_config": typed}, ROUTER])
        down = h.connect()
        down.send(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        r = down.response()
        self.assertEqual((r.status, r.body), (403, b"RBAC: access denied"))
        self.assertEqual(r.names(), ["content-length", "content-type", "date", "server"])
        self.assertEqual(h.stat("http.ingress.rbac.denied"), 1)
