"""
Tests for L{txenvoy.tracing.otlp_protos}: the installed OTLP messages are
the current ones (the suite's install makes sure), and the refusal names
the fix.
"""

from twisted.trial.unittest import SynchronousTestCase

from txenvoy.config.errors import ConfigError
from txenvoy.tracing import otlp_protos


class OtlpProtosTests(SynchronousTestCase):

    def test_current(self):
        """The install the suite runs on has opentelemetry-proto's messages."""
        self.assertTrue(otlp_protos.currentOtlpProtos())
        otlp_protos.requireCurrentOtlpProtos("x")

    def test_oldCopyRefused(self):
        """With xds-protos' older copy, the config is refused with the fix."""
        self.patch(otlp_protos, "currentOtlpProtos", lambda: False)
        e = self.assertRaises(ConfigError, otlp_protos.requireCurrentOtlpProtos,
                              "tracing.provider.typed_config")
        self.assertIn("tracing.provider.typed_config: ", str(e))
        self.assertIn(otlp_protos.FIX, str(e))
