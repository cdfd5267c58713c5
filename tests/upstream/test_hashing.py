"""
Tests for L{txenvoy.upstream.hashing}: Envoy's hash functions bit for bit.
"""

from twisted.trial.unittest import SynchronousTestCase

from txenvoy.upstream.hashing import (
    murmurHash2,
    rotateCombine,
    uint64ToHex,
    xxHash64,
    xxHash64Values,
)


class XxHashTests(SynchronousTestCase):
    """Envoy's C{HashUtil::xxHash64}."""

    def test_knownValues(self):
        """XXH64 with seed 0 (the reference vector for the empty input)."""
        self.assertEqual(xxHash64(b""), 0xEF46DB3751D8E999)
        self.assertEqual(xxHash64("abc"), xxHash64(b"abc"))

    def test_seed(self):
        """Maglev's skip uses seed 1: a different hash."""
        self.assertNotEqual(xxHash64(b"127.0.0.1:80", 1), xxHash64(b"127.0.0.1:80"))

    def test_valuesChain(self):
        """
        Envoy's span form: each value's hash seeds the next; one value hashes
        as itself; none hashes the empty string.
        """
        self.assertEqual(xxHash64Values([b"a"]), xxHash64(b"a"))
        self.assertEqual(xxHash64Values([b"a", b"b"]), xxHash64(b"b", xxHash64(b"a")))
        self.assertEqual(xxHash64Values([]), xxHash64(b""))


class MurmurHashTests(SynchronousTestCase):
    """Envoy's C{MurmurHash::murmurHash2} with C{STD_HASH_SEED}."""

    def test_matchesLibstdcxx(self):
        """
        The values libstdc++'s C{std::_Hash_bytes(p, n, 0xc70f6907)} gives
        (what Envoy's ring hash MURMUR_HASH_2 uses), for every tail length.
        """
        self.assertEqual(murmurHash2(b""), 6142509188972423790)
        self.assertEqual(murmurHash2(b"a"), 4993892634952068459)
        self.assertEqual(murmurHash2(b"abc"), 3663726644998027833)
        self.assertEqual(murmurHash2(b"127.0.0.1:10080_0"), 15221495808793280728)
        self.assertEqual(murmurHash2(b"0123456789abcdefghij"), 4716142259119720602)
        self.assertEqual(murmurHash2("hello world!!"), 9889543715294181604)


class HelpersTests(SynchronousTestCase):
    """Hex and the hash policies' fold."""

    def test_hex(self):
        """Envoy's C{Hex::uint64ToHex}: 16 zero-padded digits."""
        self.assertEqual(uint64ToHex(255), "00000000000000ff")

    def test_rotateCombine(self):
        """
        The first hash is kept; the next is xored with the previous one
        rotated left by a bit, so two equal hashes do not cancel out.
        """
        self.assertEqual(rotateCombine(None, 5), 5)
        self.assertEqual(rotateCombine(5, 5), 10 ^ 5)
        self.assertEqual(rotateCombine(1 << 63, 0), 1)
