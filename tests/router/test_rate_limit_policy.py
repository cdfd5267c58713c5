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
                              "[{actions: [{masked_remote_address: {}}]}]")
        self.assertIn("rl[0].actions[0].masked_remote_address", str(e))
        e = self.assertRaises(ConfigError, _compile, "[{stage: 1}]")
        self.assertIn("rl[0].actions", str(e))
