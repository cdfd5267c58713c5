"""
Tests for L{txenvoy.http.filter}'s base classes.
"""

from twisted.trial.unittest import SynchronousTestCase

from txenvoy.http.filter import (
    ConfiguredFilter,
    FilterHeadersStatus,
    FilterSlot,
    PassThroughFilter,
    filterRoles,
    startSlot,
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


class FilterSlotTests(SynchronousTestCase):

    def test_startSlotIsTheClassCall(self):
        """
        startSlot on a bare instance (the connection manager's way, without
        the class call) makes what C{FilterSlot(stream, name)} makes.
        """
        stream = object()
        made = startSlot(object.__new__(FilterSlot), stream, "envoy.filters.http.router")
        called = FilterSlot(stream, "envoy.filters.http.router")
        for name in FilterSlot.__slots__:
            self.assertEqual(getattr(made, name), getattr(called, name), name)
        self.assertIs(made.stream, stream)
