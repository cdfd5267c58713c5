"""
Tests for L{txenvoy.testing.http_filter}.
"""

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from txenvoy.config.errors import ConfigError
from txenvoy.http.filter import FilterHeadersStatus
from txenvoy.interfaces import IStreamFilterCallbacks
from txenvoy.testing import (
    FakeStreamFilterCallbacks,
    compileHttpFilter,
    makeHttpFilter,
    requestHeaders,
)

FAULT = {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
    "abort": {"http_status": 503, "percentage": {"numerator": 100}},
    "delay": {"fixed_delay": "2s", "percentage": {"numerator": 100}},
}


class HttpFilterTests(SynchronousTestCase):
    """One filter driven call by call."""

    def test_callbacksProvideTheInterface(self):
        """
        The fake callbacks provide what the connection manager gives a
        filter.
        """
        self.assertTrue(verifyObject(IStreamFilterCallbacks, FakeStreamFilterCallbacks()))

    def test_filterWithTimer(self):
        """
        A filter compiled from its C{typed_config} runs on the callbacks'
        clock: the fault filter's delay, then its abort.
        """
        f, callbacks = makeHttpFilter(compileHttpFilter(FAULT))
        status = f.decodeHeaders(requestHeaders("GET", "/"), True)
        self.assertEqual(status, FilterHeadersStatus.StopIteration)
        self.assertEqual(callbacks.localReplies, [])
        callbacks.clock.advance(2)
        self.assertEqual([r.code for r in callbacks.localReplies], [503])
        self.assertEqual(callbacks.counter("http.ingress_http.fault.delays_injected"), 1)
        self.assertEqual(callbacks.counter("http.ingress_http.fault.aborts_injected"), 1)

    def test_configErrors(self):
        """
        A bad config is refused as C{--mode validate} refuses it.
        """
        bad = dict(FAULT, abort={"http_status": 99, "percentage": {"numerator": 100}})
        error = self.assertRaises(ConfigError, compileHttpFilter, bad)
        self.assertIn("http_status", str(error))

    def test_yamlText(self):
        """
        The C{typed_config} may be given as YAML text.
        """
        factory = compileHttpFilter(
            '"@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer\n'
            "max_request_bytes: 5\n")
        f, callbacks = makeHttpFilter(factory)
        self.assertIsNotNone(f)
