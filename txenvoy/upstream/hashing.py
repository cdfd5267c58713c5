# -*- test-case-name: tests.upstream.test_hashing -*-
"""
The hash functions Envoy's consistent-hash load balancers and hash
policies use, bit for bit, so that txenvoy and Envoy put the same key on
the same host.

 - L{xxHash64}: Envoy's C{HashUtil::xxHash64} (XXH64, seed 0 by default).
 - L{xxHash64Values}: C{HashUtil::xxHash64(absl::Span<string_view>)}: each
   value's hash seeds the next (a header with several values).
 - L{murmurHash2}: Envoy's C{MurmurHash::murmurHash2} with
   C{STD_HASH_SEED}, the 64-bit variant libstdc++ uses for
   C{std::hash<std::string>} (ring hash's C{MURMUR_HASH_2}).
"""

from xxhash import xxh64_intdigest

#: Envoy's C{MurmurHash::STD_HASH_SEED} (libstdc++'s seed).
STD_HASH_SEED = 0xC70F6907

_MASK = 0xFFFFFFFFFFFFFFFF
_MUL = 0xC6A4A7935BD1E995


def xxHash64(data, seed=0):
    """XXH64 of C{data} (C{bytes}, or C{str} taken as UTF-8)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return xxh64_intdigest(data, seed)


def xxHash64Values(values, seed=0):
    """
    Envoy's C{xxHash64} over a list of strings: the hash of each value is
    the seed of the next; an empty list hashes the empty string.
    """
    if not values:
        return xxh64_intdigest(b"", seed)
    for value in values:
        seed = xxh64_intdigest(value, seed)
    return seed


def _shiftMix(v):
    return v ^ (v >> 47)


def murmurHash2(data, seed=STD_HASH_SEED):
    """Envoy's C{MurmurHash::murmurHash2} (64-bit, little-endian loads)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    n = len(data)
    aligned = n & ~7
    h = (seed ^ (n * _MUL)) & _MASK
    for p in range(0, aligned, 8):
        k = int.from_bytes(data[p:p + 8], "little")
        k = (_shiftMix((k * _MUL) & _MASK) * _MUL) & _MASK
        h = ((h ^ k) * _MUL) & _MASK
    if n & 7:
        h = ((h ^ int.from_bytes(data[aligned:], "little")) * _MUL) & _MASK
    h = (_shiftMix(h) * _MUL) & _MASK
    return _shiftMix(h)


def uint64ToHex(value):
    """Envoy's C{Hex::uint64ToHex}: 16 lower-case hex digits."""
    return "%016x" % (value,)


def rotateCombine(previous, new):
    """
    How Envoy's C{HashPolicyImpl::generateHash} folds one more policy's
    hash into the result: the previous value rotated left by one bit, xor
    the new one (C{previous} is C{None} for the first hash).
    """
    if previous is None:
        return new
    return (((previous << 1) | (previous >> 63)) & _MASK) ^ new
