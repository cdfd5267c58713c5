# -*- test-case-name: tests.upstream.test_bounded_load -*-
"""
Consistent hashing with bounded loads (Envoy's
C{BoundedLoadHashingLoadBalancer}, C{hash_balance_factor}): a host already
serving more than its share of C{hash_balance_factor}% of the average load
hands the request on to another host, picked in an order seeded by the
request's hash (a shuffle by C{std::mt19937(hash)}, reproduced here), so
that one key keeps trying the same hosts in the same order.

Active requests are the hosts' own, summed over every worker as Envoy's
are; the cluster's total is the sum over the hosts of the table (Envoy
reads the cluster's C{upstream_rq_active}, which also counts requests on
hosts outside this level's table).
"""

import math
import random

_UINT32 = 1 << 32


def mt19937(seed):
    """
    A C{random.Random} in the state of C{std::mt19937(seed)} (libstdc++
    keeps the seed's low 32 bits): its C{getrandbits(32)} returns what the
    C++ engine's calls return.
    """
    state = [seed & 0xFFFFFFFF]
    for i in range(1, 624):
        prev = state[-1]
        state.append((1812433253 * (prev ^ (prev >> 30)) + i) & 0xFFFFFFFF)
    rng = random.Random()
    rng.setstate((3, tuple(state) + (624,), None))
    return rng


def _uniformInt(rng, k):
    # Envoy's uniform_int: [0, k) from the engine's 32-bit outputs.
    x = k
    while x >= k:
        x = rng.getrandbits(32) // (_UINT32 // k)
    return x


class BoundedLoadTable:
    """
    A ring or Maglev table whose picks are capped at C{factor}% of the
    average load.
    """

    def __init__(self, table, normalized, factor):
        """
        @param table: the ring or Maglev table.
        @param normalized: the C{(host, weight)} list it was built from.
        @param factor: C{hash_balance_factor}, at least 100.
        """
        self.table = table
        self.normalized = list(normalized)
        self.weights = dict((id(h), w) for h, w in normalized)
        self.factor = factor

    def stats(self):
        """The wrapped table's gauges."""
        return self.table.stats()

    def _overload(self, host, weight, overall):
        totalSlots = ((overall + 1) * self.factor + 99) // 100
        slots = max(int(math.ceil(totalSlots * weight)), 1)
        return host.stats("rq_active") / slots

    def chooseHost(self, h, attempt=0):
        """The table's host unless overloaded; else the first one that is not."""
        if not self.normalized:
            return None
        host = self.table.chooseHost(h, attempt)
        if host is None:
            return None
        overall = sum(x.stats("rq_active") for x, _ in self.normalized)
        overload = self._overload(host, self.weights[id(host)], overall)
        if overload <= 1.0:
            return host
        n = len(self.normalized)
        index = list(range(n))
        rng = mt19937(h)
        least, leastOverload = host, overload
        for i in range(n):
            j = _uniformInt(rng, n - i)
            index[i], index[i + j] = index[i + j], index[i]
            alt, weight = self.normalized[index[i]]
            if alt is host:
                continue
            overload = self._overload(alt, weight, overall)
            if overload <= 1.0:
                return alt
            if leastOverload > overload:
                least, leastOverload = alt, overload
        return least
