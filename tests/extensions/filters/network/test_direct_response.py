"""Tests for L{txenvoy.extensions.filters.network.direct_response}."""

import os

from twisted.trial.unittest import SynchronousTestCase

from txenvoy.config.errors import ConfigError
from txenvoy.testing import NetworkFilterHarness

TYPE = "type.googleapis.com/envoy.extensions.filters.network.direct_response.v3.Config"


class DirectResponseTests(SynchronousTestCase):

    def test_answersAndCloses(self):
        """
        Envoy's direct_response writes its bytes to a new connection and
        closes it once they are flushed; what the client sends is ignored.
        """
        harness = NetworkFilterHarness({"@type": TYPE, "response": {"inline_string": "hi\n"}})
        conn = harness.connect()
        self.assertEqual(conn.written(), b"hi\n")
        self.assertTrue(conn.closed)
        conn.send(b"ignored")
        self.assertEqual(conn.written(), b"hi\n")

    def test_emptyResponseCloses(self):
        conn = NetworkFilterHarness({"@type": TYPE}).connect()
        self.assertEqual(conn.written(), b"")
        self.assertTrue(conn.closed)

    def test_fromFile(self):
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"\x01\x02")
        conn = NetworkFilterHarness({"@type": TYPE, "response": {"filename": path}}).connect()
        self.assertEqual(conn.written(), b"\x01\x02")

    def test_missingFile(self):
        """A file that cannot be read is a config error naming the field."""
        path = os.path.join(self.mktemp(), "nothing")
        e = self.assertRaises(ConfigError, NetworkFilterHarness,
                              {"@type": TYPE, "response": {"filename": path}})
        self.assertIn("filters[0].typed_config.response.filename: cannot read", str(e))
