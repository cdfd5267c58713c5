# -*- test-case-name: tests.upstream.test_ring_hash_lb -*-
"""
Envoy's RING_HASH load balancer (C{RingHashLoadBalancer}): Ketama
consistent hashing.

Each host puts C{scale * normalized_weight} points on a ring, the point
for its i-th entry being the hash of C{"<key>_<i>"} (the key is the
host's C{ip:port}, its hostname, or its C{hash_key} metadata), with
xxHash64 or Envoy's MurmurHash2. A request goes to the first point at or
after its hash, wrapping around. The ring is built exactly as Envoy builds
it, so that the same config and the same key pick the same host.
"""

import math
from bisect import bisect_left

from txenvoy.config.errors import ConfigError
from txenvoy.config.fields import checkFields
from txenvoy.upstream.bounded_load import BoundedLoadTable
from txenvoy.upstream.hashing import murmurHash2, xxHash64
from txenvoy.upstream.thread_aware_lb import hostHashKey

XX_HASH = "XX_HASH"
MURMUR_HASH_2 = "MURMUR_HASH_2"
_HASH_FUNCTIONS = {0: XX_HASH, 1: MURMUR_HASH_2}
# The RingHash extension's enum puts DEFAULT_HASH (xxHash) first.
_EXTENSION_HASH_FUNCTIONS = {0: XX_HASH, 1: XX_HASH, 2: MURMUR_HASH_2}

#: Envoy's C{DefaultMinRingSize} and C{DefaultMaxRingSize}.
DEFAULT_MIN_RING_SIZE = 1024
DEFAULT_MAX_RING_SIZE = 1024 * 1024 * 8
#: The proto's bound on both sizes.
MAX_RING_SIZE_LIMIT = 8388608


class RingHashConfig:
    """
    The compiled ring settings of one cluster.

    @ivar minimumRingSize: C{minimum_ring_size} (default 1024).
    @ivar maximumRingSize: C{maximum_ring_size} (default 8M).
    @ivar hashFunction: L{XX_HASH} or L{MURMUR_HASH_2}.
    @ivar useHostnameForHashing: hash hostnames rather than addresses.
    """

    def __init__(self, minimumRingSize=DEFAULT_MIN_RING_SIZE,
                 maximumRingSize=DEFAULT_MAX_RING_SIZE, hashFunction=XX_HASH,
                 useHostnameForHashing=False):
        self.minimumRingSize = minimumRingSize
        self.maximumRingSize = maximumRingSize
        self.hashFunction = hashFunction
        self.useHostnameForHashing = useHostnameForHashing

    #: Envoy's C{ring_hash_lb.*} gauges.
    statPrefix = "ring_hash_lb."
    statNames = ("size", "min_hashes_per_host", "max_hashes_per_host")

    #: C{hash_balance_factor}: 0, or the bound on a host's load in
    #: percent of the average (see L{txenvoy.upstream.bounded_load}).
    hashBalanceFactor = 0
    #: The policy's own hash policies (the RingHash and Maglev extensions'
    #: C{consistent_hashing_lb_config.hash_policy}), used instead of the
    #: route's when set.
    hashPolicies = ()

    def buildTable(self, normalized, minWeight, maxWeight):
        """Build the L{Ring} for one level's hosts."""
        ring = Ring(normalized, minWeight, self.minimumRingSize, self.maximumRingSize,
                    self.hashFunction, self.useHostnameForHashing)
        if self.hashBalanceFactor:
            return BoundedLoadTable(ring, normalized, self.hashBalanceFactor)
        return ring


class Ring:
    """
    One level's ring: sorted point hashes and the host of each point.

    @ivar size: the number of points Envoy reserves (its C{size} gauge).
    @ivar minHashesPerHost: the fewest points a host got.
    @ivar maxHashesPerHost: the most points a host got.
    """

    def __init__(self, normalized, minWeight, minRingSize, maxRingSize, hashFunction,
                 useHostname):
        self.hashes = []
        self.hosts = []
        self.size = 0
        self.minHashesPerHost = 0
        self.maxHashesPerHost = 0
        self.built = bool(normalized)
        if not normalized:
            return
        # Scale so that the lightest host gets a whole number of points,
        # capped at the maximum ring size (Envoy's arithmetic, in doubles).
        scale = min(math.ceil(minWeight * minRingSize) / minWeight, float(maxRingSize))
        ringSize = int(math.ceil(scale))
        hashOf = murmurHash2 if hashFunction == MURMUR_HASH_2 else xxHash64
        points = []
        current = 0.0
        target = 0.0
        fewest = ringSize
        most = 0
        for host, weight in normalized:
            prefix = (hostHashKey(host, useHostname) + "_").encode("utf-8")
            target += scale * weight
            i = 0
            while current < target:
                points.append((hashOf(prefix + str(i).encode("ascii")), host))
                i += 1
                current += 1
            fewest = min(fewest, i)
            most = max(most, i)
        points.sort(key=_pointHash)
        self.hashes = [p[0] for p in points]
        self.hosts = [p[1] for p in points]
        self.size = ringSize
        self.minHashesPerHost = fewest
        self.maxHashesPerHost = most

    def stats(self):
        """The gauges Envoy sets for this ring, or C{None} when empty."""
        if not self.built:
            return None
        return {"size": self.size, "min_hashes_per_host": self.minHashesPerHost,
                "max_hashes_per_host": self.maxHashesPerHost}

    def chooseHost(self, h, attempt=0):
        """
        The host of the first point at or after C{h}, wrapping around (the
        Ketama search Envoy ports); with C{attempt} > 0, the point that
        many places further on.
        """
        hashes = self.hashes
        n = len(hashes)
        if not n:
            return None
        i = bisect_left(hashes, h)
        if i == n:
            i = 0
        if attempt:
            i = (i + attempt) % n
        return self.hosts[i]


def _pointHash(point):
    return point[0]


def compileRingHash(msg, path, useHostnameForHashing=False, extension=False,
                    hashBalanceFactor=0):
    """
    A L{RingHashConfig} from a cluster's C{ring_hash_lb_config}
    (C{extension=False}) or an C{envoy.extensions.load_balancing_policies.
    ring_hash.v3.RingHash}; C{msg} may be C{None} for the defaults.
    """
    cfg = RingHashConfig(useHostnameForHashing=useHostnameForHashing)
    cfg.hashBalanceFactor = hashBalanceFactor
    if msg is None:
        return cfg
    fields = ("minimum_ring_size", "maximum_ring_size", "hash_function")
    if extension:
        fields += ("use_hostname_for_hashing", "hash_balance_factor",
                   "consistent_hashing_lb_config")
    checkFields(msg, fields, path)
    for name in ("minimum_ring_size", "maximum_ring_size"):
        if msg.HasField(name):
            value = getattr(msg, name).value
            if value > MAX_RING_SIZE_LIMIT:
                raise ConfigError("%s.%s: value must be less than or equal to %d"
                                  % (path, name, MAX_RING_SIZE_LIMIT))
    if msg.HasField("minimum_ring_size"):
        cfg.minimumRingSize = msg.minimum_ring_size.value
    if msg.HasField("maximum_ring_size"):
        cfg.maximumRingSize = msg.maximum_ring_size.value
    functions = _EXTENSION_HASH_FUNCTIONS if extension else _HASH_FUNCTIONS
    cfg.hashFunction = functions.get(msg.hash_function, XX_HASH)
    if cfg.minimumRingSize > cfg.maximumRingSize:
        raise ConfigError("%s: ring hash: minimum_ring_size (%d) > maximum_ring_size (%d)"
                          % (path, cfg.minimumRingSize, cfg.maximumRingSize))
    return cfg
