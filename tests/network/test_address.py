"""Tests for L{txenvoy.network.address}."""

from twisted.trial.unittest import SynchronousTestCase

from txenvoy.network.address import addressString, formatAddress, parseInternetAddressAndPort


class AddressStringTests(SynchronousTestCase):

    def test_ipv4(self):
        self.assertEqual(addressString("127.0.0.1", 10000), "127.0.0.1:10000")

    def test_ipv6Bracketed(self):
        """Envoy's C{asString} puts an IPv6 address in brackets."""
        self.assertEqual(addressString("::1", 80), "[::1]:80")

    def test_tuple(self):
        self.assertEqual(formatAddress(("::1", 80)), "[::1]:80")
        self.assertEqual(formatAddress(("1.2.3.4", 80, "extra")), "1.2.3.4:80")


class ParseInternetAddressAndPortTests(SynchronousTestCase):
    """Envoy's C{parseInternetAddressAndPortNoThrow}."""

    def test_valid(self):
        self.assertEqual(parseInternetAddressAndPort("10.0.0.1:80"), ("10.0.0.1", 80))
        self.assertEqual(parseInternetAddressAndPort("[::1]:0"), ("::1", 0))

    def test_invalid(self):
        for text in ("localhost:80", "10.0.0.1", "10.0.0.1:", "10.0.0.1:65536", "::1:80",
                     "[::1]", "10.0.0.1:+80", "10.0.0.1: 80", "[10.0.0.1]:80", ""):
            self.assertIsNone(parseInternetAddressAndPort(text), text)
