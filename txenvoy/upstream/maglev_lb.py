# -*- test-case-name: tests.upstream.test_maglev_lb -*-
"""
Envoy's MAGLEV load balancer (C{MaglevLoadBalancer}): the lookup table of
Google's Maglev paper (section 3.4, pseudocode listing 1), with Envoy's
weighting.

Each host (in the order of its hash key) has a permutation of the table's
slots from C{offset = xxHash64(key) % M} and
C{skip = xxHash64(key, seed=1) % (M - 1) + 1}; hosts take turns claiming
their next free slot, a host of normalized weight C{w} taking a turn every
C{max_weight / w} rounds, until the table is full. A request's hash picks
slot C{hash % M}. Built exactly as Envoy builds it, so the same config and
the same key pick the same host.
"""

from txenvoy.config.errors import ConfigError
from txenvoy.config.fields import checkFields
from txenvoy.upstream.bounded_load import BoundedLoadTable
from txenvoy.upstream.hashing import xxHash64
from txenvoy.upstream.thread_aware_lb import hostHashKey

#: Envoy's C{MaglevTable::DefaultTableSize}, the paper's recommendation.
DEFAULT_TABLE_SIZE = 65537
#: The proto's bound on C{table_size}.
MAX_TABLE_SIZE = 5000011

_MASK = 0xFFFFFFFFFFFFFFFF


def isPrime(n):
    """Envoy's C{Primes::isPrime}."""
    if n < 2:
        return False
    if n < 4:
        return True
    if n % 2 == 0 or n % 3 == 0:
        return False
    i = 5
    while i * i <= n:
        if n % i == 0 or n % (i + 2) == 0:
            return False
        i += 6
    return True


class MaglevConfig:
    """
    The compiled Maglev settings of one cluster.

    @ivar tableSize: C{table_size}, a prime (default 65537).
    @ivar useHostnameForHashing: hash hostnames rather than addresses.
    """

    def __init__(self, tableSize=DEFAULT_TABLE_SIZE, useHostnameForHashing=False):
        self.tableSize = tableSize
        self.useHostnameForHashing = useHostnameForHashing

    #: Envoy's C{maglev_lb.*} gauges.
    statPrefix = "maglev_lb."
    statNames = ("min_entries_per_host", "max_entries_per_host")

    #: C{hash_balance_factor}: 0, or the bound on a host's load in
    #: percent of the average (see L{txenvoy.upstream.bounded_load}).
    hashBalanceFactor = 0
    #: The policy's own hash policies (the RingHash and Maglev extensions'
    #: C{consistent_hashing_lb_config.hash_policy}), used instead of the
    #: route's when set.
    hashPolicies = ()

    def buildTable(self, normalized, minWeight, maxWeight):
        """Build the L{MaglevTable} for one level's hosts."""
        table = MaglevTable(normalized, maxWeight, self.tableSize, self.useHostnameForHashing)
        if self.hashBalanceFactor:
            return BoundedLoadTable(table, normalized, self.hashBalanceFactor)
        return table


class MaglevTable:
    """
    One level's table: C{slots[i]} is the index in C{hosts} of slot C{i}'s
    host (Envoy's C{CompactMaglevTable} layout).

    @ivar minEntriesPerHost: the fewest slots a host got.
    @ivar maxEntriesPerHost: the most slots a host got.
    """

    def __init__(self, normalized, maxWeight, tableSize, useHostname):
        self.tableSize = tableSize
        self.hosts = ()
        self.slots = ()
        self.minEntriesPerHost = 0
        self.maxEntriesPerHost = 0
        if not normalized:
            return
        m = tableSize
        # Envoy sorts by key so that the table does not depend on the
        # order hosts were listed in.
        keyed = sorted(((hostHashKey(h, useHostname), i) for i, (h, _) in enumerate(normalized)))
        hosts = []
        offsets = []
        skips = []
        weights = []
        for key, i in keyed:
            host, weight = normalized[i]
            data = key.encode("utf-8")
            hosts.append(host)
            offsets.append(xxHash64(data) % m)
            skips.append(xxHash64(data, 1) % (m - 1) + 1)
            weights.append(weight)
        n = len(hosts)
        targets = [0.0] * n
        nexts = [0] * n
        counts = [0] * n
        slots = [-1] * m
        filled = 0
        iteration = 1
        while filled < m:
            for i in range(n):
                if filled >= m:
                    break
                if iteration * weights[i] < targets[i]:
                    continue
                targets[i] += maxWeight
                offset = offsets[i]
                skip = skips[i]
                nxt = nexts[i]
                c = (offset + skip * nxt) % m
                while slots[c] >= 0:
                    nxt += 1
                    c = (offset + skip * nxt) % m
                slots[c] = i
                nexts[i] = nxt + 1
                counts[i] += 1
                filled += 1
            iteration += 1
        self.hosts = tuple(hosts)
        self.slots = slots
        self.minEntriesPerHost = min(counts)
        self.maxEntriesPerHost = max(counts)

    def stats(self):
        """The gauges Envoy sets for this table, or C{None} when empty."""
        if not self.hosts:
            return None
        return {"min_entries_per_host": self.minEntriesPerHost,
                "max_entries_per_host": self.maxEntriesPerHost}

    def chooseHost(self, h, attempt=0):
        """
        The host of slot C{h % M}; with C{attempt} > 0 the hash is first
        xored with C{2**64 - attempt}, as Envoy does for retries.
        """
        if not self.hosts:
            return None
        if attempt:
            h ^= (_MASK - attempt + 1) & _MASK
        return self.hosts[self.slots[h % self.tableSize]]


def compileMaglev(msg, path, useHostnameForHashing=False, extension=False, hashBalanceFactor=0):
    """
    A L{MaglevConfig} from a cluster's C{maglev_lb_config}
    (C{extension=False}) or an C{envoy.extensions.load_balancing_policies.
    maglev.v3.Maglev}; C{msg} may be C{None} for the defaults.
    """
    cfg = MaglevConfig(useHostnameForHashing=useHostnameForHashing)
    cfg.hashBalanceFactor = hashBalanceFactor
    if msg is not None:
        fields = ("table_size",)
        if extension:
            fields += ("consistent_hashing_lb_config",)
        checkFields(msg, fields, path)
        if msg.HasField("table_size"):
            size = msg.table_size.value
            if size > MAX_TABLE_SIZE:
                raise ConfigError("%s.table_size: value must be less than or equal to %d"
                                  % (path, MAX_TABLE_SIZE))
            cfg.tableSize = size
    if not isPrime(cfg.tableSize):
        raise ConfigError("%s.table_size: The table size of maglev must be prime number"
                          % (path,))
    return cfg
