"""
Tests for L{txenvoy.http.filter}'s base classes.
"""

from twisted.trial.unittest import SynchronousTestCase

from txenvoy.http.filter import (
    ConfiguredFilter,
    FilterHeadersStatus,
    PassThroughFilter,
    filterRoles,
)


class _RequestOnly(ConfiguredFilter):
    def decodeHeaders(self, headers, endStream):
        return FilterHeadersStatus.StopIteration


class ConfiguredFilterTests(SynchronousTestCase):

    def test_configAndCallbacks(self):
        """A filter made as C{cls(config, callbacks)} keeps both."""
        config, callbacks = object(), object()
        filter_ = ConfiguredFilter(config, callbacks)
        self.assertIs(filter_.config, config)
        self.assertIs(filter_.callbacks, callbacks)
        self.assertIsInstance(filter_, PassThroughFilter)

    def test_roles(self):
        """Only the directions a subclass overrides are run, as for L{PassThroughFilter}."""
        self.assertEqual(filterRoles(_RequestOnly(None, None)), (True, False))
