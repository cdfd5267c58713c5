"""Tests for L{txenvoy.extensions.filters.network.echo}."""

from twisted.trial.unittest import SynchronousTestCase

from txenvoy.testing import NetworkFilterHarness

ECHO = {"@type": "type.googleapis.com/envoy.extensions.filters.network.echo.v3.Echo"}


class EchoTests(SynchronousTestCase):

    def test_terminal(self):
        """Envoy's echo ends a filter chain: nothing is built after it."""
        self.assertTrue(NetworkFilterHarness(ECHO).factory.terminal)

    def test_writesBackEveryByte(self):
        """Every read is written back as it came, in order, and the connection stays."""
        conn = NetworkFilterHarness(ECHO).connect()
        conn.send(b"hello ")
        conn.send(b"\x00world\n")
        self.assertEqual(conn.written(), b"hello \x00world\n")
        self.assertFalse(conn.closed)

    def test_connectionsApart(self):
        """Each connection echoes only its own bytes."""
        harness = NetworkFilterHarness(ECHO)
        a, b = harness.connect(), harness.connect()
        a.send(b"a")
        b.send(b"b")
        self.assertEqual((a.written(), b.written()), (b"a", b"b"))
