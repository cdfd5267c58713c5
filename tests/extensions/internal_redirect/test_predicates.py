"""
Tests for L{txenvoy.extensions.internal_redirect.predicates}; compared with
Envoy 1.40 in C{tests/e2e/test_internal_redirect.py}.
"""

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from txenvoy.extensions.internal_redirect.predicates import (
    AllowListedRoutesPredicate,
    PreviousRoutesPredicate,
    SafeCrossSchemePredicate,
)
from txenvoy.interfaces import IInternalRedirectPredicate


class PredicateTests(SynchronousTestCase):

    def test_previousRoutes(self):
        """
        Envoy's previous_routes: per originating route, each target is
        accepted once.
        """
        state = {}
        p = PreviousRoutesPredicate()
        self.assertTrue(p.acceptTargetRoute(state, "a", "a", False, False))
        self.assertTrue(p.acceptTargetRoute(state, "b", "a", False, False))
        self.assertFalse(p.acceptTargetRoute(state, "a", "a", False, False))

    def test_allowListed(self):
        p = AllowListedRoutesPredicate(["t"])
        self.assertTrue(p.acceptTargetRoute({}, "a", "t", False, False))
        self.assertFalse(p.acceptTargetRoute({}, "a", "u", False, False))

    def test_safeCrossScheme(self):
        """Envoy's safe_cross_scheme: never from http to https."""
        p = SafeCrossSchemePredicate()
        self.assertFalse(p.acceptTargetRoute({}, "a", "t", False, True))
        self.assertTrue(p.acceptTargetRoute({}, "a", "t", True, False))
        self.assertTrue(p.acceptTargetRoute({}, "a", "t", False, False))

    def test_interface(self):
        for p in (PreviousRoutesPredicate(), AllowListedRoutesPredicate(["a"]),
                  SafeCrossSchemePredicate()):
            self.assertTrue(verifyObject(IInternalRedirectPredicate, p))
