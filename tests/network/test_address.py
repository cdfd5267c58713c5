"""Tests for L{txenvoy.network.address}."""

from twisted.trial.unittest import SynchronousTestCase

from txenvoy.network.address import addressString, formatAddress


class AddressStringTests(SynchronousTestCase):

    def test_ipv4(self):
        self.assertEqual(addressString("127.0.0.1", 10000), "127.0.0.1:10000")

    def test_ipv6Bracketed(self):
        """Envoy's C{asString} puts an IPv6 address in brackets."""
        self.assertEqual(addressString("::1", 80), "[::1]:80")

    def test_tuple(self):
        self.assertEqual(formatAddress(("::1", 80)), "[::1]:80")
        self.assertEqual(formatAddress(("1.2.3.4", 80, "extra")), "1.2.3.4:80")
