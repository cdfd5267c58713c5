"""Tests for L{txenvoy.upstream.retry_host_selection}."""

from google.protobuf import json_format
from twisted.trial.unittest import SynchronousTestCase

from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.retry.host.omit_canary_hosts.v3 import (  # noqa: F401
    omit_canary_hosts_pb2,
)
from txenvoy.config.errors import UnsupportedExtension
from txenvoy.upstream.host import Host
from txenvoy.upstream.retry_host_selection import (
    OMIT_CANARY_HOSTS,
    PREVIOUS_HOSTS,
    RetryHostSelection,
    chooseHostWithRetryPredicates,
    compilePredicates,
)


class Sequence:
    """A load balancer that returns the given hosts in turn."""

    def __init__(self, hosts):
        self.hosts = list(hosts)
        self.picks = 0

    def chooseHost(self, context=None):
        self.picks += 1
        return self.hosts.pop(0) if self.hosts else None


class PredicateTests(SynchronousTestCase):

    def setUp(self):
        self.a = Host(("10.0.0.1", 80))
        self.b = Host(("10.0.0.2", 80))
        self.canary = Host(("10.0.0.3", 80), canary=True)

    def test_previousHosts(self):
        selection = RetryHostSelection((PREVIOUS_HOSTS,), maxAttempts=3)
        selection.onHostAttempted(self.a)
        lb = Sequence([self.a, self.a, self.b])
        self.assertIs(chooseHostWithRetryPredicates(lb, None, selection), self.b)
        self.assertEqual(lb.picks, 3)

    def test_lastPickStands(self):
        """Past host_selection_retry_max_attempts the last host is used."""
        selection = RetryHostSelection((PREVIOUS_HOSTS,), maxAttempts=1)
        selection.onHostAttempted(self.a)
        lb = Sequence([self.a, self.a, self.b])
        self.assertIs(chooseHostWithRetryPredicates(lb, None, selection), self.a)
        self.assertEqual(lb.picks, 2)

    def test_omitCanary(self):
        selection = RetryHostSelection((OMIT_CANARY_HOSTS,), maxAttempts=5)
        lb = Sequence([self.canary, self.a])
        self.assertIs(chooseHostWithRetryPredicates(lb, None, selection), self.a)
        self.assertFalse(selection.shouldSelectAnotherHost(self.a))


class CompileTests(SynchronousTestCase):

    def policy(self, predicates):
        return json_format.ParseDict({"retry_host_predicate": predicates},
                                     route_components_pb2.RetryPolicy())

    def test_known(self):
        self.assertEqual(compilePredicates(self.policy([
            {"name": "envoy.retry_host_predicates.previous_hosts"},
            {"name": "x", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.retry.host.omit_canary_hosts."
                         "v3.OmitCanaryHostsPredicate"}}]).retry_host_predicate, "p"),
            (PREVIOUS_HOSTS, OMIT_CANARY_HOSTS))

    def test_unknown(self):
        e = self.assertRaises(UnsupportedExtension, compilePredicates, self.policy(
            [{"name": "envoy.retry_host_predicates.mine"}]).retry_host_predicate, "p")
        self.assertIn("p[0]", str(e))
