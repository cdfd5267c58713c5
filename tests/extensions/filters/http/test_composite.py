"""
Tests for L{txenvoy.extensions.filters.http.composite}: the composite
filter inside an C{ExtensionWithMatcher}, with the public filter fakes.
(Compared with Envoy in C{tests/e2e/test_matchers.py}.)
"""

from twisted.trial.unittest import SynchronousTestCase

from txenvoy.extensions.filters.http.composite import CompositeFilter
from txenvoy.http.filter import FilterHeadersStatus
from txenvoy.stats.store import StatsStore
from txenvoy.testing import (
    compileHttpFilter,
    makeFactoryContext,
    makeHttpFilter,
    requestHeaders,
    responseHeaders,
    runtimeWith,
)

EXECUTE = "type.googleapis.com/envoy.extensions.filters.http.composite.v3.ExecuteFilterAction"
FAULT = {"name": "fault", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
    "abort": {"http_status": 418, "percentage": {"numerator": 100}}}}


def _composite(actions, runtime=None, store=None):
    """A composite filter config, its matcher on C{x-delegate}."""
    context = makeFactoryContext(store=store, runtime=runtime)
    return compileHttpFilter({
        "@type": "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher",
        "extension_config": {"name": "composite", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.composite.v3."
                     "Composite"}},
        "xds_matcher": {"matcher_tree": {
            "input": {"name": "h", "typed_config": {
                "@type": "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput",
                "header_name": "x-delegate"}},
            "exact_match_map": {"map": {
                key: {"action": {"name": key, "typed_config": action}}
                for key, action in actions.items()}}}}}, context=context)


class CompositeFilterTests(SynchronousTestCase):

    def setUp(self):
        self.store = StatsStore()

    def request(self, config, delegate):
        f, callbacks = makeHttpFilter(config, store=self.store)
        self.assertIsInstance(f, CompositeFilter)
        status = f.decodeHeaders(requestHeaders(headers=[("x-delegate", delegate)]), True)
        return f, callbacks, status

    def test_delegates(self):
        """The action's filter runs in the composite's place and is counted."""
        config = _composite({"fault": {"@type": EXECUTE, "typed_config": FAULT}},
                            store=self.store)
        f, callbacks, status = self.request(config, "fault")
        self.assertEqual(status, FilterHeadersStatus.StopIteration)
        self.assertEqual([r.code for r in callbacks.localReplies], [418])
        self.assertEqual(callbacks.counter("http.ingress_http.composite.filter_delegation_success"), 1)
        f.onDestroy()

    def test_unmatchedPasses(self):
        """No action: the request and its response pass untouched."""
        config = _composite({"fault": {"@type": EXECUTE, "typed_config": FAULT}},
                            store=self.store)
        f, callbacks, status = self.request(config, "other")
        self.assertEqual(status, FilterHeadersStatus.Continue)
        self.assertEqual(f.encodeHeaders(responseHeaders(200), True),
                         FilterHeadersStatus.Continue)
        self.assertEqual(callbacks.localReplies, [])
        self.assertEqual(callbacks.counter("http.ingress_http.composite.filter_delegation_success"), 0)

    def test_sampledOut(self):
        """
        C{sample_percent} at 0% (or a runtime key saying so) leaves the
        request out of the delegation.
        """
        action = {"@type": EXECUTE, "typed_config": FAULT, "sample_percent": {
            "default_value": {"numerator": 100}, "runtime_key": "composite.sample"}}
        config = _composite({"fault": action},
                            runtime=runtimeWith({"composite.sample": 0}), store=self.store)
        f, callbacks, status = self.request(config, "fault")
        self.assertEqual(status, FilterHeadersStatus.Continue)
        self.assertEqual(callbacks.counter("http.ingress_http.composite.filter_delegation_success"), 0)
