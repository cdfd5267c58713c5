"""
Tests for L{txenvoy.router.rate_limit_policy}: descriptors as Envoy 1.40's
C{RateLimitPolicyEntryImpl} makes them (compared with Envoy in
C{tests/e2e/test_ratelimit.py}).
"""

import yaml
from google.protobuf import json_format
from twisted.trial.unittest import SynchronousTestCase

from envoy.config.route.v3 import route_components_pb2

from txenvoy.config.errors import ConfigError, UnsupportedField
from txenvoy.http.headers import HeaderMap, RequestHeaders
from txenvoy.router.rate_limit_policy import DescriptorInput, compileRateLimits


def _compile(text):
    action = json_format.ParseDict({"rate_limits": yaml.safe_load(text)},
                                   route_components_pb2.RouteAction())
    return compileRateLimits(action.rate_limits, "rl")


def _input(*headers):
    head = RequestHeaders(b"GET", b"/p", b"host", headers=HeaderMap())
    for name, value in headers:
        head.headers.add(name, value)
    return DescriptorInput(head, ("10.0.0.1", 5), "origin", "front")


class DescriptorTests(SynchronousTestCase):

    def test_actionsInOrder(self):
        """Each action adds its entry, with Envoy's default keys."""
        [policy] = _compile("""
- actions:
  - source_cluster: {}
  - destination_cluster: {}
  - request_headers: {header_name: X-User, descriptor_key: user}
  - remote_address: {}
  - generic_key: {descriptor_value: g}
  - header_value_match: {descriptor_value: m, headers: [{name: x-user, present_match: true}]}
""")
        self.assertEqual(policy.descriptor(_input((b"x-user", b"bob"))), [
            ("source_cluster", "front"), ("destination_cluster", "origin"), ("user", "bob"),
            ("remote_address", "10.0.0.1"), ("generic_key", "g"), ("header_match", "m")])

    def test_missingHeaderDropsDescriptor(self):
        """
        An absent header drops the descriptor, unless C{skip_if_absent}
        skips the action; a header match that fails drops it too.
        """
        dropped, skipped, unmatched = _compile("""
- actions: [{request_headers: {header_name: x-a, descriptor_key: a}}]
- actions:
  - request_headers: {header_name: x-a, descriptor_key: a, skip_if_absent: true}
  - generic_key: {descriptor_value: g, descriptor_key: k}
- actions:
  - header_value_match: {descriptor_value: m, expect_match: false, headers: [{name: x-b, present_match: true}]}
""")
        self.assertIsNone(dropped.descriptor(_input()))
        self.assertEqual(skipped.descriptor(_input()), [("k", "g")])
        self.assertEqual(unmatched.descriptor(_input()), [("header_match", "m")])
        self.assertIsNone(unmatched.descriptor(_input((b"x-b", b"1"))))

    def test_stageAndAddend(self):
        [policy] = _compile("[{stage: 2, hits_addend: {number: 3}, "
                            "actions: [{generic_key: {descriptor_value: g}}]}]")
        self.assertEqual((policy.stage, policy.hitsAddend), (2, 3))

    def test_refused(self):
        """Unimplemented actions are refused with their path; empty actions too."""
        e = self.assertRaises(UnsupportedField, _compile,
                              "[{actions: [{dynamic_metadata: {descriptor_key: k, "
                              "metadata_key: {key: a, path: [{key: b}]}}}]}]")
        self.assertIn("rl[0].actions[0].dynamic_metadata", str(e))
        e = self.assertRaises(ConfigError, _compile, "[{stage: 1}]")
        self.assertIn("rl[0].actions", str(e))


class MoreActionsTests(SynchronousTestCase):
    """masked_remote_address, query_parameters, query_parameter_value_match, metadata."""

    def test_maskedRemoteAddress(self):
        """Envoy's masked network, /32 (IPv4) or /128 (IPv6) by default."""
        [policy] = _compile("[{actions: [{masked_remote_address: {}}, "
                            "{masked_remote_address: {v4_prefix_mask_len: 8}}]}]")
        self.assertEqual(policy.descriptor(_input()),
                         [("masked_remote_address", "10.0.0.1/32"),
                          ("masked_remote_address", "10.0.0.0/8")])
        v6 = DescriptorInput(None, ("2001:db8::1", 5), "origin", "front")
        self.assertEqual(policy.descriptor(v6),
                         [("masked_remote_address", "2001:db8::1/128"),
                          ("masked_remote_address", "2001:db8::1/128")])

    def test_queryParameters(self):
        [policy, skipping] = _compile("""
- actions: [{query_parameters: {query_parameter_name: u, descriptor_key: user}}]
- actions:
  - query_parameters: {query_parameter_name: v, descriptor_key: v, skip_if_absent: true}
  - query_parameter_value_match:
      descriptor_value: bob
      query_parameters: [{name: u, string_match: {exact: bob}}]
""")
        head = RequestHeaders(b"GET", b"/p?u=bob&z", b"host", headers=HeaderMap())
        request = DescriptorInput(head, ("10.0.0.1", 5), "origin", "front")
        self.assertEqual(policy.descriptor(request), [("user", "bob")])
        self.assertEqual(skipping.descriptor(request), [("query_match", "bob")])
        self.assertIsNone(policy.descriptor(_input()))

    def test_metadata(self):
        """Dynamic metadata's string, else default_value, else dropped or skipped."""
        [policy, dropped] = _compile("""
- actions:
  - metadata: {descriptor_key: d, metadata_key: {key: ns, path: [{key: a}, {key: b}]}}
  - metadata: {descriptor_key: e, default_value: dv, metadata_key: {key: ns, path: [{key: x}]}}
  - metadata: {descriptor_key: f, skip_if_absent: true, metadata_key: {key: ns, path: [{key: x}]}}
- actions:
  - metadata: {descriptor_key: g, metadata_key: {key: ns, path: [{key: x}]}}
""")
        request = DescriptorInput(None, None, "origin", "front",
                                  dynamicMetadata={"ns": {"a": {"b": "deep"}}})
        self.assertEqual(policy.descriptor(request), [("d", "deep"), ("e", "dv")])
        self.assertIsNone(dropped.descriptor(request))
