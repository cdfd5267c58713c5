"""
Tests for L{txenvoy.rbac}: policies, principals and permissions, header and
string matching, and RBAC with the unified matcher API.

Behaviours copied from Envoy name the Envoy code or run they come from
(C{source/extensions/filters/common/rbac/matchers.cc}, C{engine_impl.cc},
C{HeaderUtility}, and C{envoy --mode validate} 1.40 for messages).
"""

import datetime

from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.config.errors import ConfigError, UnsupportedExtension, UnsupportedField
from txenvoy.config.loader import parseDict, parseYaml
from txenvoy.http.headers import HeaderMap, RequestHeaders
from txenvoy.network.stream_info import StreamInfo
from txenvoy.rbac import (
    PeerIdentity, RbacInput, createEngine, createMatcherEngine, createPolicyEngine,
    peerIdentityOf, statPrefixJoin)


def rules(text, network=False):
    """A L{PolicyEngine} from the YAML of an C{envoy.config.rbac.v3.RBAC}."""
    return createPolicyEngine(parseDict(parseYaml(text), rbac_pb2.RBAC()), "rules", network)


def policy(permission, principal="{any: true}", action="ALLOW"):
    return rules("action: %s\npolicies:\n  p:\n    permissions: [%s]\n    principals: [%s]\n"
                 % (action, permission, principal))


def networkFilter(text):
    return parseDict(parseYaml(text), network_rbac_pb2.RBAC())


def request(path=b"/", headers=(), method=b"GET", authority=b"example.com"):
    req = RequestHeaders(method, path, authority, headers=HeaderMap(headers))
    return RbacInput.fromConnection(FakeConnection(), request=req)


CONN = RbacInput(remoteIp="10.1.2.3", directRemoteIp="127.0.0.1", localIp="127.0.0.1",
                 localPort=10021, requestedServerName="www.example.com")


class PolicyEngineTests(SynchronousTestCase):

    def test_allowMatchesFirstPolicyByName(self):
        """
        Envoy keeps policies in a C{std::map}: they are tried by name, and
        the first match is the effective policy.
        """
        engine = rules("""
action: ALLOW
policies:
  zeta: {permissions: [{any: true}], principals: [{any: true}]}
  alpha: {permissions: [{any: true}], principals: [{any: true}]}
""")
        self.assertEqual(engine.evaluate(CONN), (True, "alpha"))

    def test_allowWithoutMatchDenies(self):
        engine = policy("{destination_port: 1}")
        self.assertEqual(engine.evaluate(CONN), (False, None))

    def test_emptyAllowDeniesEverything(self):
        """C{rules} present with no policy and action ALLOW: all denied."""
        self.assertEqual(rules("action: ALLOW").evaluate(CONN), (False, None))
        self.assertEqual(rules("action: DENY").evaluate(CONN), (True, None))

    def test_deny(self):
        engine = policy("{any: true}", "{direct_remote_ip: {address_prefix: 127.0.0.0, "
                        "prefix_len: 8}}", action="DENY")
        self.assertEqual(engine.evaluate(CONN), (False, "p"))
        self.assertEqual(engine.evaluate(RbacInput(remoteIp="10.0.0.1")), (True, None))

    def test_logAlwaysAllows(self):
        self.assertEqual(policy("{any: true}", action="LOG").evaluate(CONN), (True, "p"))
        self.assertEqual(policy("{destination_port: 1}", action="LOG").evaluate(CONN),
                         (True, None))

    def test_policyNeedsPermissionAndPrincipal(self):
        engine = policy("{destination_port: 10021}", "{remote_ip: {address_prefix: 192.0.2.0, "
                        "prefix_len: 24}}")
        self.assertEqual(engine.evaluate(CONN), (False, None))

    def test_statPrefixJoin(self):
        """Envoy's C{statPrefixJoin}: no doubled dot, nothing for empty."""
        self.assertEqual(statPrefixJoin("a", "rbac."), "a.rbac.")
        self.assertEqual(statPrefixJoin("a.", "rbac."), "a.rbac.")
        self.assertEqual(statPrefixJoin("", "rbac."), "rbac.")


class PermissionTests(SynchronousTestCase):

    def allowed(self, permission, input=CONN):
        return policy(permission).evaluate(input)[0]

    def test_destinationPort(self):
        self.assertTrue(self.allowed("{destination_port: 10021}"))
        self.assertFalse(self.allowed("{destination_port: 10022}"))

    def test_destinationPortRangeIsHalfOpen(self):
        self.assertTrue(self.allowed("{destination_port_range: {start: 10021, end: 10022}}"))
        self.assertFalse(self.allowed("{destination_port_range: {start: 10000, end: 10021}}"))

    def test_destinationPortRangeErrors(self):
        """Envoy's C{PortRangeMatcher} messages."""
        e = self.assertRaises(ConfigError, policy,
                              "{destination_port_range: {start: 10, end: 5}}")
        self.assertEqual(str(e), "range start 10 cannot be greater or equal than range end 5")
        e = self.assertRaises(ConfigError, policy,
                              "{destination_port_range: {start: 1, end: 70000}}")
        self.assertEqual(str(e), "range end 70000 is out of bounds")

    def test_destinationIp(self):
        self.assertTrue(self.allowed("{destination_ip: {address_prefix: 127.0.0.1, "
                                     "prefix_len: 32}}"))
        self.assertFalse(self.allowed("{destination_ip: {address_prefix: 10.0.0.0, "
                                      "prefix_len: 8}}"))

    def test_ipv6RangeDoesNotMatchIpv4(self):
        self.assertFalse(self.allowed("{destination_ip: {address_prefix: '::', prefix_len: 0}}"))
        self.assertTrue(self.allowed("{destination_ip: {address_prefix: '::', prefix_len: 0}}",
                                     RbacInput(localIp="::1")))

    def test_missingPrefixLenIsHostRoute(self):
        self.assertTrue(self.allowed("{destination_ip: {address_prefix: 127.0.0.1}}"))
        self.assertFalse(self.allowed("{destination_ip: {address_prefix: 127.0.0.2}}"))

    def test_requestedServerName(self):
        self.assertTrue(self.allowed("{requested_server_name: {suffix: .example.com}}"))
        self.assertFalse(self.allowed("{requested_server_name: {exact: other}}"))

    def test_andOrNot(self):
        self.assertTrue(self.allowed(
            "{and_rules: {rules: [{destination_port: 10021}, "
            "{not_rule: {destination_port: 1}}]}}"))
        self.assertFalse(self.allowed(
            "{and_rules: {rules: [{destination_port: 10021}, {destination_port: 1}]}}"))
        self.assertTrue(self.allowed(
            "{or_rules: {rules: [{destination_port: 1}, {destination_port: 10021}]}}"))
        self.assertFalse(self.allowed("{not_rule: {any: true}}"))

    def test_urlPathIgnoresQuery(self):
        """
        Envoy's C{PathMatcher} drops the query and fragment first (1.40:
        C{url_path exact /p} allowed C{/p?q=1}).
        """
        self.assertTrue(self.allowed("{url_path: {path: {exact: /admin}}}",
                                     request(b"/admin?x=1")))
        self.assertFalse(self.allowed("{url_path: {path: {exact: /admin}}}",
                                      request(b"/admin/x")))

    def test_urlPathAtL4NeverMatches(self):
        self.assertFalse(self.allowed("{url_path: {path: {prefix: /}}}"))

    def test_header(self):
        self.assertTrue(self.allowed("{header: {name: x-user, exact_match: alice}}",
                                     request(headers=[(b"x-user", b"alice")])))
        self.assertFalse(self.allowed("{header: {name: x-user, exact_match: alice}}",
                                      request(headers=[(b"x-user", b"bob")])))

    def test_pseudoHeaders(self):
        """C{:path}, C{:method} and C{:authority} (alias C{host}) match."""
        self.assertTrue(self.allowed("{header: {name: ':path', prefix_match: /api}}",
                                     request(b"/api/v1?q")))
        self.assertTrue(self.allowed("{header: {name: ':method', exact_match: POST}}",
                                     request(method=b"POST")))
        self.assertTrue(self.allowed("{header: {name: host, exact_match: example.com}}",
                                     request()))

    def test_networkRejectsHeaderRules(self):
        """Envoy 1.40: "Found header(...) rule,not supported by RBAC network filter"."""
        text = ("action: ALLOW\npolicies:\n  p:\n    permissions: [{and_rules: {rules: "
                "[{header: {name: foo, present_match: true}}]}}]\n    principals: [{any: true}]")
        e = self.assertRaises(ConfigError, rules, text, True)
        self.assertIn("rule,not supported by RBAC network filter", str(e))
        self.assertIn('name: "foo"', str(e))

    def test_unsupportedRules(self):
        e = self.assertRaises(UnsupportedField, policy,
                              "{metadata: {filter: f, path: [{key: k}], "
                              "value: {present_match: true}}}")
        self.assertIn("rules.policies[p].permissions[0].metadata", str(e))

    def test_conditionUnsupported(self):
        self.assertRaises(UnsupportedField, rules, """
policies:
  p:
    permissions: [{any: true}]
    principals: [{any: true}]
    condition: {const_expr: {bool_value: true}}
""")

    def test_policyNeedsPrincipals(self):
        e = self.assertRaises(ConfigError, rules,
                              "policies: {p: {permissions: [{any: true}]}}")
        self.assertIn("PolicyValidationError.Principals", str(e))


class PrincipalTests(SynchronousTestCase):

    def allowed(self, principal, input=CONN):
        return policy("{any: true}", principal).evaluate(input)[0]

    def test_remoteDirectAndSource(self):
        """
        C{direct_remote_ip} is the socket's peer; C{remote_ip} and
        C{source_ip} the client (after PROXY protocol).
        """
        loopback = "{address_prefix: 127.0.0.0, prefix_len: 8}"
        self.assertTrue(self.allowed("{direct_remote_ip: %s}" % loopback))
        self.assertFalse(self.allowed("{remote_ip: %s}" % loopback))
        self.assertFalse(self.allowed("{source_ip: %s}" % loopback))
        self.assertTrue(self.allowed("{source_ip: {address_prefix: 10.0.0.0, prefix_len: 8}}"))

    def test_notAndOrIds(self):
        self.assertFalse(self.allowed("{not_id: {any: true}}"))
        self.assertTrue(self.allowed(
            "{or_ids: {ids: [{not_id: {any: true}}, {any: true}]}}"))
        self.assertFalse(self.allowed(
            "{and_ids: {ids: [{not_id: {any: true}}, {any: true}]}}"))

    def test_authenticatedNeedsTls(self):
        self.assertFalse(self.allowed("{authenticated: {}}"))
        tls = RbacInput(remoteIp="10.0.0.1", ssl=PeerIdentity())
        self.assertTrue(self.allowed("{authenticated: {}}", tls))

    def test_authenticatedOrder(self):
        """Envoy tries URI SANs, then DNS SANs, then the subject."""
        peer = PeerIdentity(["spiffe://cluster.local/ns/a/sa/b"], ["client.example.com"],
                            "CN=client,O=Test")
        tls = RbacInput(remoteIp="10.0.0.1", ssl=peer)
        for name in ("{exact: 'spiffe://cluster.local/ns/a/sa/b'}",
                     "{exact: client.example.com}", "{exact: 'CN=client,O=Test'}"):
            self.assertTrue(self.allowed("{authenticated: {principal_name: %s}}" % name, tls))
        self.assertFalse(self.allowed("{authenticated: {principal_name: {exact: other}}}", tls))

    def test_headerAndPath(self):
        self.assertTrue(self.allowed("{header: {name: x-id, present_match: true}}",
                                     request(headers=[(b"x-id", b"")])))
        self.assertTrue(self.allowed("{url_path: {path: {prefix: /p}}}", request(b"/p")))

    def test_filterStateUnsupported(self):
        self.assertRaises(UnsupportedField, policy, "{any: true}",
                          "{filter_state: {key: k, string_match: {exact: v}}}")


class HeaderMatcherTests(SynchronousTestCase):
    """Envoy's C{HeaderUtility} semantics, through a permission."""

    def matches(self, matcher, headers=()):
        return policy("{header: %s}" % (matcher,)).evaluate(request(headers=headers))[0]

    def test_missingHeaderNeverMatchesEvenInverted(self):
        self.assertFalse(self.matches("{name: a, exact_match: x}"))
        self.assertFalse(self.matches("{name: a, exact_match: x, invert_match: true}"))
        self.assertTrue(self.matches("{name: a, exact_match: x, invert_match: true}",
                                     [(b"a", b"y")]))

    def test_treatMissingAsEmpty(self):
        self.assertTrue(self.matches("{name: a, string_match: {exact: ''}, "
                                     "treat_missing_header_as_empty: true}"))
        self.assertTrue(self.matches("{name: a, range_match: {start: 0, end: 10}, "
                                     "invert_match: true, treat_missing_header_as_empty: true}"))

    def test_present(self):
        self.assertTrue(self.matches("{name: a, present_match: false}"))
        self.assertFalse(self.matches("{name: a, present_match: false}", [(b"a", b"1")]))
        self.assertTrue(self.matches("{name: a, present_match: true, invert_match: true}"))
        self.assertTrue(self.matches("{name: a}", [(b"a", b"1")]))

    def test_emptyExactMatchesAnyValue(self):
        self.assertTrue(self.matches("{name: a, exact_match: ''}", [(b"a", b"zzz")]))

    def test_range(self):
        self.assertTrue(self.matches("{name: a, range_match: {start: -10, end: 0}}",
                                     [(b"a", b"-1")]))
        self.assertFalse(self.matches("{name: a, range_match: {start: -10, end: 0}}",
                                      [(b"a", b"0")]))
        self.assertFalse(self.matches("{name: a, range_match: {start: 0, end: 100}}",
                                      [(b"a", b"1_0")]))

    def test_repeatedHeaderMatchesAnyValue(self):
        """
        Envoy 1.40 HTTP RBAC: C{x: a} + C{x: b} was denied by a policy
        C{exact: "a,b"}, and C{yy: a} + C{yy: b} allowed by C{exact: b}.
        """
        self.assertFalse(self.matches("{name: a, string_match: {exact: 'x,y'}}",
                                      [(b"a", b"x"), (b"a", b"y")]))
        self.assertTrue(self.matches("{name: a, string_match: {exact: 'y'}}",
                                     [(b"a", b"x"), (b"a", b"y")]))

    def test_stringMatchIgnoreCase(self):
        self.assertTrue(self.matches("{name: a, string_match: {prefix: AB, ignore_case: true}}",
                                     [(b"a", b"abc")]))
        self.assertFalse(self.matches("{name: a, string_match: {prefix: AB}}", [(b"a", b"abc")]))

    def test_prefixSuffixContainsRegex(self):
        h = [(b"a", b"hello-world")]
        self.assertTrue(self.matches("{name: a, prefix_match: hello}", h))
        self.assertTrue(self.matches("{name: a, suffix_match: world}", h))
        self.assertTrue(self.matches("{name: a, contains_match: o-w}", h))
        self.assertTrue(self.matches("{name: a, safe_regex_match: {regex: 'h.*d'}}", h))
        # RE2 FullMatch: a partial match is not a match.
        self.assertFalse(self.matches("{name: a, safe_regex_match: {regex: 'hello'}}", h))

    def test_badRegex(self):
        e = self.assertRaises(ConfigError, policy, "{header: {name: a, safe_regex_match: "
                              "{regex: '(('}}}")
        self.assertEqual(str(e), "missing ): (( @ rules.policies[p].permissions[0].header."
                                 "safe_regex_match.regex")

    def test_ignoreCaseWithRegex(self):
        """Envoy: "ignore_case has no effect for safe_regex."."""
        e = self.assertRaises(ConfigError, policy, "{requested_server_name: {safe_regex: "
                              "{regex: a}, ignore_case: true}}")
        self.assertIn("ignore_case has no effect for safe_regex.", str(e))


REFERER_MATCHER = """
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


def action(name, verdict):
    return ('{action: {name: a, typed_config: {"@type": '
            'type.googleapis.com/envoy.config.rbac.v3.Action, name: %s, action: %s}}}'
            % (name, verdict))


def networkInput(kind):
    return ('{name: i, typed_config: {"@type": '
            'type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.%s}}'
            % (kind,))


def matcherEngine(text, network=True):
    return createEngine(networkFilter(text), "rules", "matcher", "f", network)


class MatcherEngineTests(SynchronousTestCase):

    def test_refererExample(self):
        """Corpus example 15: a foreign or missing referer is denied."""
        engine = matcherEngine(REFERER_MATCHER, network=False)
        ok = request(headers=[(b"referer", b"https://www.envoyproxy.io/docs/envoy/latest")])
        self.assertEqual(engine.evaluate(ok), (True, "all-pass"))
        bad = request(headers=[(b"referer", b"https://evil.example/")])
        self.assertEqual(engine.evaluate(bad), (False, "illegal-referer"))
        self.assertEqual(engine.evaluate(request()), (False, "illegal-referer"))

    def test_noMatchWithoutOnNoMatchDenies(self):
        engine = matcherEngine("""
matcher:
  matcher_list:
    matchers:
    - predicate: {single_predicate: {input: %s, value_match: {exact: "1"}}}
      on_match: %s
""" % (networkInput("DestinationPortInput"), action("one", "ALLOW")))
        self.assertEqual(engine.evaluate(CONN), (False, None))
        self.assertEqual(engine.evaluate(RbacInput(localPort=1)), (True, "one"))

    def test_networkInputs(self):
        cases = [
            ("DestinationIPInput", "127.0.0.1"),
            ("DestinationPortInput", "10021"),
            ("SourceIPInput", "10.1.2.3"),
            ("DirectSourceIPInput", "127.0.0.1"),
            ("ServerNameInput", "www.example.com"),
            ("TransportProtocolInput", "raw_buffer"),
        ]
        for kind, value in cases:
            engine = matcherEngine("""
matcher:
  matcher_list:
    matchers:
    - predicate: {single_predicate: {input: %s, value_match: {exact: "%s"}}}
      on_match: %s
""" % (networkInput(kind), value, action(kind, "LOG")))
            self.assertEqual(engine.evaluate(CONN), (True, kind))

    def test_sourceTypeAndAlpn(self):
        local = RbacInput(remoteIp="127.0.0.1", localIp="127.0.0.1",
                          applicationProtocols=["h2", "http/1.1"])
        for kind, value in (("SourceTypeInput", "local"),
                            ("ApplicationProtocolInput", "'h2','http/1.1'")):
            engine = matcherEngine("""
matcher:
  matcher_list:
    matchers:
    - predicate: {single_predicate: {input: %s, value_match: {exact: "%s"}}}
      on_match: %s
""" % (networkInput(kind), value, action(kind, "ALLOW")))
            self.assertEqual(engine.evaluate(local), (True, kind))
            self.assertEqual(engine.evaluate(RbacInput(remoteIp="192.0.2.1", localIp="10.0.0.1")),
                             (False, None))

    def test_andOrPredicates(self):
        engine = matcherEngine("""
matcher:
  matcher_list:
    matchers:
    - predicate:
        and_matcher:
          predicate:
          - {single_predicate: {input: %s, value_match: {prefix: "10."}}}
          - or_matcher:
              predicate:
              - {single_predicate: {input: %s, value_match: {exact: "1"}}}
              - {single_predicate: {input: %s, value_match: {exact: "10021"}}}
      on_match: %s
""" % (networkInput("SourceIPInput"), networkInput("DestinationPortInput"),
            networkInput("DestinationPortInput"), action("both", "ALLOW")))
        self.assertEqual(engine.evaluate(CONN), (True, "both"))
        self.assertEqual(engine.evaluate(RbacInput(remoteIp="11.0.0.1", localPort=1)),
                         (False, None))

    def test_nestedNoMatchGoesOn(self):
        """A nested matcher that matches nothing lets the list try the next entry."""
        engine = matcherEngine("""
matcher:
  matcher_list:
    matchers:
    - predicate: {single_predicate: {input: %s, value_match: {prefix: ""}}}
      on_match:
        matcher:
          matcher_list:
            matchers:
            - predicate: {single_predicate: {input: %s, value_match: {exact: "1"}}}
              on_match: %s
    - predicate: {single_predicate: {input: %s, value_match: {prefix: ""}}}
      on_match: %s
""" % (networkInput("SourceIPInput"), networkInput("DestinationPortInput"),
            action("inner", "ALLOW"), networkInput("SourceIPInput"), action("second", "DENY")))
        self.assertEqual(engine.evaluate(CONN), (False, "second"))
        self.assertEqual(engine.evaluate(RbacInput(remoteIp="1.1.1.1", localPort=1)),
                         (True, "inner"))

    def test_treeExactAndPrefix(self):
        engine = matcherEngine("""
matcher:
  matcher_tree:
    input: %s
    prefix_match_map:
      map:
        "www.": %s
        "www.example.": %s
  on_no_match: %s
""" % (networkInput("ServerNameInput"), action("short", "ALLOW"), action("long", "DENY"),
            action("none", "ALLOW")))
        self.assertEqual(engine.evaluate(CONN), (False, "long"))
        self.assertEqual(engine.evaluate(RbacInput(requestedServerName="www.other")),
                         (True, "short"))
        self.assertEqual(engine.evaluate(RbacInput()), (True, "none"))
        engine = matcherEngine("""
matcher:
  matcher_tree:
    input: %s
    exact_match_map: {map: {"10021": %s}}
""" % (networkInput("DestinationPortInput"), action("exact", "DENY")))
        self.assertEqual(engine.evaluate(CONN), (False, "exact"))
        self.assertEqual(engine.evaluate(RbacInput(localPort=1)), (False, None))

    def test_ipMatcherTree(self):
        """The most specific range is tried first."""
        engine = matcherEngine("""
matcher:
  matcher_tree:
    input: %s
    custom_match:
      name: ip
      typed_config:
        "@type": type.googleapis.com/xds.type.matcher.v3.IPMatcher
        range_matchers:
        - ranges: [{address_prefix: 10.0.0.0, prefix_len: 8}]
          on_match: %s
        - ranges: [{address_prefix: 10.1.0.0, prefix_len: 16}]
          on_match: %s
""" % (networkInput("SourceIPInput"), action("wide", "ALLOW"), action("narrow", "DENY")))
        self.assertEqual(engine.evaluate(CONN), (False, "narrow"))
        self.assertEqual(engine.evaluate(RbacInput(remoteIp="10.9.0.1")), (True, "wide"))
        self.assertEqual(engine.evaluate(RbacInput(remoteIp="192.0.2.1")), (False, None))

    def test_ipInputMatcher(self):
        engine = matcherEngine("""
matcher:
  matcher_list:
    matchers:
    - predicate:
        single_predicate:
          input: %s
          custom_match:
            name: ip
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.matching.input_matchers.ip.v3.Ip
              stat_prefix: ip
              cidr_ranges: [{address_prefix: 127.0.0.0, prefix_len: 8}]
      on_match: %s
""" % (networkInput("DirectSourceIPInput"), action("loopback", "ALLOW")))
        self.assertEqual(engine.evaluate(CONN), (True, "loopback"))
        self.assertEqual(engine.evaluate(RbacInput(remoteIp="10.0.0.1")), (False, None))

    def test_networkRejectsHttpInputs(self):
        """Envoy 1.40: "RBAC network filter cannot match '<type url>'"."""
        e = self.assertRaises(ConfigError, matcherEngine, REFERER_MATCHER)
        self.assertIn("requirement violation while creating RBAC match tree: INVALID_ARGUMENT: "
                      "RBAC network filter cannot match 'type.googleapis.com/envoy.type."
                      "matcher.v3.HttpRequestHeaderMatchInput'", str(e))

    def test_unsupportedInputAndKeepMatching(self):
        text = """
matcher:
  matcher_list:
    matchers:
    - predicate: {single_predicate: {input: %s, value_match: {exact: "x"}}}
      on_match: %s
"""
        self.assertRaises(UnsupportedExtension, matcherEngine,
                          text % (networkInput("NetworkNamespaceInput"), action("a", "ALLOW")))
        keep = action("a", "ALLOW")[:-1] + ", keep_matching: true}"
        self.assertRaises(UnsupportedField, matcherEngine,
                          text % (networkInput("SourceIPInput"), keep))

    def test_headerInputJoinsValues(self):
        """
        Envoy 1.40: C{HttpRequestHeaderMatchInput} gives C{x: a} + C{x: b}
        as C{"a,b"}.
        """
        engine = matcherEngine("""
matcher:
  matcher_list:
    matchers:
    - predicate:
        single_predicate:
          input:
            name: h
            typed_config:
              "@type": type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput
              header_name: X
          value_match: {exact: "a,b"}
      on_match: %s
""" % (action("joined", "ALLOW"),), network=False)
        self.assertEqual(engine.evaluate(request(headers=[(b"x", b"a"), (b"x", b"b")])),
                         (True, "joined"))
        self.assertEqual(engine.evaluate(request(headers=[(b"x", b"a,b")])), (True, "joined"))
        self.assertEqual(engine.evaluate(request()), (False, None))

    def test_httpRejectsQueryParamInput(self):
        """Envoy 1.40: "RBAC HTTP filter cannot match on '<type url>'"."""
        e = self.assertRaises(ConfigError, matcherEngine, """
matcher:
  matcher_list:
    matchers:
    - predicate:
        single_predicate:
          input:
            name: q
            typed_config:
              "@type": type.googleapis.com/envoy.type.matcher.v3.HttpRequestQueryParamMatchInput
              query_param: user
          value_match: {exact: alice}
      on_match: %s
""" % (action("alice", "ALLOW"),), network=False)
        self.assertIn("RBAC HTTP filter cannot match on 'type.googleapis.com/envoy.type.matcher."
                      "v3.HttpRequestQueryParamMatchInput'", str(e))

    def test_matcherWinsOverRules(self):
        """Envoy: "RBAC rules are ignored when matcher is configured"."""
        engine = matcherEngine("""
rules: {action: DENY}
matcher: {on_no_match: %s}
""" % (action("m", "ALLOW"),))
        self.assertEqual(engine.evaluate(CONN), (True, "m"))

    def test_noEngine(self):
        self.assertIsNone(createEngine(networkFilter("stat_prefix: a"), "rules", "matcher",
                                       "f", True))

    def test_createMatcherEngineDirectly(self):
        m = networkFilter("matcher: {on_no_match: %s}" % (action("x", "DENY"),)).matcher
        self.assertEqual(createMatcherEngine(m, "m", True).evaluate(CONN), (False, "x"))


class FakeTransport:
    def __init__(self, cert):
        self.cert = cert

    def getPeerCertificate(self):
        return self.cert


def makeCertificate():
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "client"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test")])
    now = datetime.datetime(2020, 1, 1)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("client.example.com"),
                x509.UniformResourceIdentifier("spiffe://td/client")]), critical=False)
            .sign(key, hashes.SHA256()))


class FakeConnection:
    def __init__(self):
        self.streamInfo = info = StreamInfo(_Clock())
        self.remoteAddress = ("203.0.113.7", 4000)
        info.downstreamDirectRemoteAddress = ("127.0.0.1", 5555)
        info.requestedServerName = "sni.example"
        self.localAddress = ("127.0.0.1", 10021)
        self.transportProtocol = "tls"
        self.applicationProtocols = ("h2",)


class _Clock:
    def seconds(self):
        return 0.0


class InputTests(SynchronousTestCase):

    def test_peerIdentity(self):
        identity = peerIdentityOf(FakeTransport(makeCertificate()))
        self.assertEqual(identity.dnsSans, ("client.example.com",))
        self.assertEqual(identity.uriSans, ("spiffe://td/client",))
        self.assertEqual(identity.subject, "O=Test,CN=client")

    def test_peerIdentityPlainTcp(self):
        self.assertIsNone(peerIdentityOf(object()))

    def test_tlsWithoutClientCertificate(self):
        identity = peerIdentityOf(FakeTransport(None))
        self.assertEqual((identity.uriSans, identity.dnsSans, identity.subject), ((), (), ""))

    def test_fromConnection(self):
        input = RbacInput.fromConnection(FakeConnection())
        self.assertEqual(input.remoteIp, "203.0.113.7")
        self.assertEqual(input.sourceIp, "203.0.113.7")
        self.assertEqual(input.directRemoteIp, "127.0.0.1")
        self.assertEqual((input.localIp, input.localPort), ("127.0.0.1", 10021))
        self.assertEqual(input.requestedServerName, "sni.example")
        self.assertEqual(input.applicationProtocols, ("h2",))
        self.assertIsNone(input.ssl)
        self.assertIsNone(input.headers)

    def test_fromConnectionWithForwardedRemote(self):
        input = RbacInput.fromConnection(FakeConnection(), remoteIp="198.51.100.1")
        self.assertEqual(input.remoteIp, "198.51.100.1")
        self.assertEqual(input.sourceIp, "203.0.113.7")

    def test_notAnIp(self):
        """A Unix socket peer is in no range, and matches no IP input."""
        input = RbacInput(remoteIp="/tmp/sock")
        self.assertIsNone(input.ip("remoteIp"))
        self.assertEqual(policy("{any: true}", "{remote_ip: {address_prefix: '::', "
                                "prefix_len: 0}}").evaluate(input), (False, None))
        self.assertEqual(policy("{any: true}", "{not_id: {source_ip: {address_prefix: "
                                "0.0.0.0, prefix_len: 0}}}").evaluate(input), (True, "p"))
