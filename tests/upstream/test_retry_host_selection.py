"""Tests for L{txenvoy.upstream.retry_host_selection}."""

from google.protobuf import json_format
from twisted.trial.unittest import SynchronousTestCase

from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.retry.host.omit_canary_hosts.v3 import (  # noqa: F401
    omit_canary_hosts_pb2,
)
from txenvoy.config.errors import ConfigError, UnsupportedExtension
from txenvoy.upstream.host import Host
from txenvoy.upstream.retry_host_selection import (
    OMIT_CANARY_HOSTS,
    PREVIOUS_HOSTS,
    PreviousPriorities,
    RetryHostSelection,
    chooseHostWithRetryPredicates,
    compilePredicates,
    compileRetryPriority,
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


class PreviousPrioritiesTests(SynchronousTestCase):
    """Envoy's C{PreviousPrioritiesRetryPriority}."""

    def test_excludesAttempted(self):
        p = PreviousPriorities(1)
        availability = [(100, 0), (70, 0), (100, 0)]
        self.assertIsNone(p.priorityLoad(availability))
        p.onHostAttempted(Host(("10.0.0.1", 80), priority=0))
        # P1 (70% available) first, P2 the rest, as Envoy's spill-over.
        self.assertEqual(p.priorityLoad(availability), ([0, 70, 30], [0, 0, 0]))
        p.onHostAttempted(Host(("10.0.0.2", 80), priority=1))
        self.assertEqual(p.priorityLoad(availability), ([0, 0, 100], [0, 0, 0]))

    def test_updateFrequency(self):
        """The load changes only after every update_frequency attempts."""
        p = PreviousPriorities(2)
        availability = [(100, 0), (100, 0)]
        p.onHostAttempted(Host(("10.0.0.1", 80), priority=0))
        self.assertIsNone(p.priorityLoad(availability))
        p.onHostAttempted(Host(("10.0.0.1", 80), priority=0))
        self.assertEqual(p.priorityLoad(availability), ([0, 100], [0, 0]))

    def test_allAttemptedStartsOver(self):
        """With every level attempted, the original load applies again."""
        p = PreviousPriorities(1)
        p.onHostAttempted(Host(("10.0.0.1", 80), priority=0))
        self.assertIsNone(p.priorityLoad([(100, 0)]))

    def test_compile(self):
        from envoy.extensions.retry.priority.previous_priorities.v3 import (
            previous_priorities_config_pb2 as pp,
        )
        policy = json_format.ParseDict({"retry_priority": {
            "name": "envoy.retry_priorities.previous_priorities",
            "typed_config": {"@type": "type.googleapis.com/" +
                             pp.PreviousPrioritiesConfig.DESCRIPTOR.full_name,
                             "update_frequency": 0}}}, route_components_pb2.RetryPolicy())
        e = self.assertRaises(ConfigError, compileRetryPriority, policy.retry_priority, "p")
        self.assertEqual(str(e), "p.typed_config.update_frequency: value must be greater than 0")
