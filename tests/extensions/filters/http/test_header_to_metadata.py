"""
Tests for L{txenvoy.extensions.filters.http.header_to_metadata}.

Metadata (read back through C{%DYNAMIC_METADATA(...)%} in the access log),
header removal and the C{http_filter_name.<stat_prefix>.*} stats were
observed on Envoy 1.40 with rules for C{x-tenant} (into C{envoy.lb},
removed) and C{x-num} (a C{NUMBER}, with C{on_header_missing}).
"""

import base64

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from txenvoy.config.errors import ConfigError
from txenvoy.extensions.filters.http.header_to_metadata import HeaderToMetadataConfig
from txenvoy.interfaces import IHttpFilterFactory
from txenvoy.stats.store import StatsStore

from tests.extensions.filters.http.fakes import (
    HEADER_TO_METADATA,
    FakeCallbacks,
    FakeServer,
    compileFilter,
    makeContext,
    request,
    response,
    roles,
    routeFor,
    routeTable,
    structValue,
)

OBSERVED = """
stat_prefix: h2m
request_rules:
- header: x-tenant
  on_header_present: {metadata_namespace: envoy.lb, key: tenant, type: STRING}
  remove: true
- header: x-num
  on_header_present: {key: num, type: NUMBER}
  on_header_missing: {key: num, value: "7", type: NUMBER}
"""
EXAMPLE_11 = """
request_rules:
- header: x-tenant
  on_header_present: {metadata_namespace: envoy.lb, key: tenant, type: STRING}
  remove: false
"""
DEFAULT_NS = "envoy.filters.http.header_to_metadata"


class Setup:
    def build(self, text):
        self.store = StatsStore()
        return compileFilter(HEADER_TO_METADATA, text, makeContext(
            store=self.store, server=FakeServer(self.store)))

    def go(self, config, headers=(), route=None):
        callbacks = FakeCallbacks(store=self.store, route=route,
                                  filterConfigName="envoy.filters.http.header_to_metadata")
        f = config.createFilter(callbacks)
        head = request("GET", "/", headers)
        if hasattr(f, "decodeHeaders") and roles(f)[0]:
            f.decodeHeaders(head, True)
        return f, callbacks, head

    def stats(self):
        p = "http_filter_name.h2m."
        return {n[len(p):]: v for n, v in self.store.snapshot().counters.items()
                if n.startswith(p) and v}


class RequestRuleTests(Setup, SynchronousTestCase):

    def test_factory(self):
        config = self.build(EXAMPLE_11)
        self.assertIsInstance(config, HeaderToMetadataConfig)
        self.assertTrue(verifyObject(IHttpFilterFactory, config))
        f, _, _ = self.go(config)
        # Request rules only: the filter is left out of the response chain.
        self.assertEqual(roles(f), (True, False))

    def test_example11(self):
        """C{x-tenant} lands in C{envoy.lb}; the header stays (C{remove: false})."""
        config = self.build(EXAMPLE_11)
        _, callbacks, head = self.go(config, [("x-tenant", "acme")])
        self.assertEqual(callbacks.streamInfo.dynamicMetadata, {"envoy.lb": {"tenant": "acme"}})
        self.assertEqual(head.headers.get(b"x-tenant"), b"acme")

    def test_observed(self):
        """
        Envoy 1.40: C{{"tenant":"acme"}} in C{envoy.lb}, C{{"num":42}} in the
        filter's namespace, C{x-tenant} removed before the upstream.
        """
        config = self.build(OBSERVED)
        _, callbacks, head = self.go(config, [("x-tenant", "acme"), ("x-num", "42")])
        self.assertEqual(callbacks.streamInfo.dynamicMetadata,
                         {"envoy.lb": {"tenant": "acme"}, DEFAULT_NS: {"num": 42.0}})
        self.assertIsNone(head.headers.get(b"x-tenant"))
        self.assertEqual(head.headers.get(b"x-num"), b"42")

    def test_missing(self):
        """C{on_header_missing} writes its value; C{request_header_not_found} counts."""
        config = self.build(OBSERVED)
        _, callbacks, _ = self.go(config)
        self.assertEqual(callbacks.streamInfo.dynamicMetadata, {DEFAULT_NS: {"num": 7.0}})
        self.assertEqual(self.stats(), {"request_rules_processed": 2,
                                        "request_header_not_found": 1,
                                        "request_metadata_added": 1})

    def test_statsAtZero(self):
        """With C{stat_prefix}, Envoy shows the nine counters from the start."""
        self.build(OBSERVED)
        names = [n for n in self.store.snapshot().counters if n.startswith("http_filter_name.")]
        self.assertEqual(len(names), 9)
        self.assertIn("http_filter_name.h2m.base64_decode_failed", names)

    def test_noStatPrefixNoStats(self):
        config = self.build(EXAMPLE_11)
        self.go(config, [("x-tenant", "a")])
        self.assertEqual(self.store.snapshot().counters, {})

    def test_valueFromConfig(self):
        config = self.build("""
request_rules:
- header: x-a
  on_header_present: {key: k, value: fixed}
""")
        _, callbacks, _ = self.go(config, [("x-a", "whatever")])
        self.assertEqual(callbacks.streamInfo.dynamicMetadata, {DEFAULT_NS: {"k": "fixed"}})

    def test_severalValues(self):
        """Every value of the header, joined with C{,}."""
        config = self.build("request_rules: [{header: x-a, on_header_present: {key: k}}]")
        _, callbacks, _ = self.go(config, [("x-a", "1"), ("x-a", "2")])
        self.assertEqual(callbacks.streamInfo.dynamicMetadata, {DEFAULT_NS: {"k": "1,2"}})

    def test_emptyValueSkipped(self):
        config = self.build("request_rules: [{header: x-a, on_header_present: {key: k}}]")
        _, callbacks, _ = self.go(config, [("x-a", "")])
        self.assertEqual(callbacks.streamInfo.dynamicMetadata, {})

    def test_tooLong(self):
        config = self.build("stat_prefix: h2m\n"
                            "request_rules: [{header: x-a, on_header_present: {key: k}}]")
        _, callbacks, _ = self.go(config, [("x-a", "v" * 8192)])
        self.assertEqual(callbacks.streamInfo.dynamicMetadata, {})
        self.assertEqual(self.stats()["header_value_too_long"], 1)
        _, callbacks, _ = self.go(config, [("x-a", "v" * 8191)])
        self.assertEqual(len(callbacks.streamInfo.dynamicMetadata[DEFAULT_NS]["k"]), 8191)

    def test_base64(self):
        config = self.build("stat_prefix: h2m\n"
                            "request_rules: [{header: x-a, on_header_present: "
                            "{key: k, encode: BASE64}}]")
        _, callbacks, _ = self.go(config, [("x-a", "aGVsbG8")])
        self.assertEqual(callbacks.streamInfo.dynamicMetadata, {DEFAULT_NS: {"k": "hello"}})
        _, callbacks, _ = self.go(config, [("x-a", "!!!")])
        self.assertEqual(callbacks.streamInfo.dynamicMetadata, {})
        self.assertEqual(self.stats()["base64_decode_failed"], 1)

    def test_protobufValue(self):
        value = base64.b64encode(structValue({"a": [1, "b"]}).SerializeToString()).decode()
        config = self.build("request_rules: [{header: x-a, on_header_present: "
                            "{key: k, type: PROTOBUF_VALUE, encode: BASE64}}]")
        _, callbacks, _ = self.go(config, [("x-a", value)])
        self.assertEqual(callbacks.streamInfo.dynamicMetadata, {DEFAULT_NS: {"k": {"a": [1, "b"]}}})

    def test_badNumber(self):
        config = self.build("request_rules: [{header: x-a, on_header_present: "
                            "{key: k, type: NUMBER}}]")
        _, callbacks, _ = self.go(config, [("x-a", "12abc")])
        self.assertEqual(callbacks.streamInfo.dynamicMetadata, {})
        _, callbacks, _ = self.go(config, [("x-a", " 1.5e3 ")])
        self.assertEqual(callbacks.streamInfo.dynamicMetadata, {DEFAULT_NS: {"k": 1500.0}})

    def test_regexRewrite(self):
        config = self.build("""
request_rules:
- header: ":path"
  on_header_present:
    key: cluster
    regex_value_rewrite:
      pattern: {regex: "^/(\\\\w+)/.*$"}
      substitution: "\\\\1"
""")
        callbacks = FakeCallbacks(filterConfigName="")
        f = config.createFilter(callbacks)
        f.decodeHeaders(request("GET", "/api/v1"), True)
        self.assertEqual(callbacks.streamInfo.dynamicMetadata, {DEFAULT_NS: {"cluster": "api"}})

    def test_cookie(self):
        config = self.build("request_rules: [{cookie: sid, on_header_present: {key: s}}]")
        _, callbacks, _ = self.go(config, [("cookie", "a=1; sid=\"xyz\"; b=2")])
        self.assertEqual(callbacks.streamInfo.dynamicMetadata, {DEFAULT_NS: {"s": "xyz"}})

    def test_mergesIntoNamespace(self):
        """Envoy merges keys into what the namespace holds already."""
        config = self.build(EXAMPLE_11)
        callbacks = FakeCallbacks()
        callbacks.streamInfo.dynamicMetadata["envoy.lb"] = {"zone": "a"}
        f = config.createFilter(callbacks)
        f.decodeHeaders(request("GET", "/", [("x-tenant", "t")]), True)
        self.assertEqual(callbacks.streamInfo.dynamicMetadata,
                         {"envoy.lb": {"zone": "a", "tenant": "t"}})

    def test_validation(self):
        for text, message in [
            ("request_rules: [{header: x, cookie: y, on_header_present: {key: k}}]",
             "Cannot specify both header and cookie"),
            ("request_rules: [{on_header_present: {key: k}}]",
             "One of Cookie or Header option needs to be specified"),
            ("request_rules: [{header: x}]", "has neither `on_header_present` nor"),
            ("request_rules: [{header: x, on_header_missing: {key: k}}]",
             "Cannot specify on_header_missing rule with an empty value"),
            ("request_rules: [{cookie: x, remove: true, on_header_present: {key: k}}]",
             "Cannot specify remove for cookie"),
        ]:
            e = self.assertRaises(ConfigError, self.build, text)
            self.assertIn(message, str(e))


class ResponseRuleTests(Setup, SynchronousTestCase):

    def test_responseOnly(self):
        config = self.build("response_rules: [{header: x-up, on_header_present: {key: up}, "
                            "remove: true}]")
        callbacks = FakeCallbacks()
        f = config.createFilter(callbacks)
        self.assertEqual(roles(f), (False, True))
        head = response(200, [("x-up", "v")])
        f.encodeHeaders(head, False)
        self.assertEqual(callbacks.streamInfo.dynamicMetadata, {DEFAULT_NS: {"up": "v"}})
        self.assertEqual(head.headers.items(), [])

    def test_both(self):
        config = self.build(EXAMPLE_11 + "response_rules: [{header: x-up, "
                            "on_header_present: {key: up}}]")
        self.assertEqual(roles(config.createFilter(FakeCallbacks())), (True, True))


class PerRouteTests(Setup, SynchronousTestCase):

    ROUTES = """
virtual_hosts:
- name: all
  domains: ["*"]
  routes:
  - match: {prefix: "/special"}
    route: {cluster: backend}
    typed_per_filter_config:
      envoy.filters.http.header_to_metadata:
        "@type": type.googleapis.com/envoy.extensions.filters.http.header_to_metadata.v3.Config
        request_rules: [{header: x-special, on_header_present: {key: special}}]
  - match: {prefix: "/"}
    route: {cluster: backend}
"""

    def test_routeRulesReplace(self):
        table = routeTable(self.ROUTES)
        config = self.build(EXAMPLE_11)
        headers = [("x-tenant", "t"), ("x-special", "s")]
        _, callbacks, _ = self.go(config, headers, routeFor(table, b"/special"))
        self.assertEqual(callbacks.streamInfo.dynamicMetadata, {DEFAULT_NS: {"special": "s"}})
        _, callbacks, _ = self.go(config, headers, routeFor(table, b"/"))
        self.assertEqual(callbacks.streamInfo.dynamicMetadata, {"envoy.lb": {"tenant": "t"}})

    def test_emptyFilterTakesBothDirections(self):
        """A filter without rules of its own gets them from routes: both directions."""
        config = self.build("{}")
        self.assertEqual(roles(config.createFilter(FakeCallbacks())), (True, True))
