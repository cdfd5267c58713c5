# -*- test-case-name: tests.stats.test_store -*-
"""
The stats store shared by the main thread and every worker.

Envoy keeps thread-local caches in front of atomic counters. Python has no
cheap atomics, so each thread gets its own L{StatsShard}: a stat object is
only ever written by the thread that owns its shard (a plain attribute
increment, no lock), and readers sum the shards. Stat objects are resolved
once, when a listener, cluster or filter is set up on a thread, so the data
path never looks a name up.
"""

import threading

from txenvoy.stats.histogram_settings import defaultBuckets

COUNTER = "counter"
GAUGE = "gauge"
HISTOGRAM = "histogram"


class Counter:
    """
    A monotonically increasing count owned by one shard.

    The data path may add to C{value} directly (C{counter.value += 1}, no
    call): a count above zero is C{used} by itself, and a reset keeps what
    was used.

    @ivar value: the count in this shard since the last reset.
    """

    __slots__ = ("value", "_used")

    def __init__(self):
        self.value = 0
        self._used = False

    @property
    def used(self):
        """Whether it was ever incremented (for C{?usedonly})."""
        return self._used or self.value != 0

    @used.setter
    def used(self, used):
        self._used = used

    def inc(self, amount=1):
        self.value += amount
        self._used = True


class Gauge:
    """
    A value that goes up and down, owned by one shard; the store reports the
    sum over shards.
    """

    __slots__ = ("value", "used")

    def __init__(self):
        self.value = 0
        self.used = False

    def inc(self, amount=1):
        self.value += amount
        self.used = True

    def dec(self, amount=1):
        self.value -= amount
        self.used = True

    def set(self, value):
        self.value = value
        self.used = True


#: Values a histogram holds unsorted before it sorts them into buckets
#: itself: readers sort what is pending when they read, so this bounds only
#: the memory of a histogram nobody reads.
FOLD_AT = 512

# Sorting pending values into buckets is done by the owning thread (when
# FOLD_AT are pending) or by a reader (the admin, the stats flush): one at a
# time, so that no value is counted twice.
_foldLock = threading.Lock()


class Histogram:
    """
    Recorded values owned by one shard, kept as counts per bucket of two
    significant digits (as Envoy's circllhist does), so memory stays bounded
    and quantiles stay within about 1%.

    Recording a value only appends it to a list: several values are recorded
    per proxied request, and sorting them into buckets in a batch, when
    C{FOLD_AT} are pending or when any of the attributes below is read,
    costs the data path a fraction of a per-value update. A reader therefore
    sees every value recorded before it reads, as before.

    @ivar buckets: C{{bucketValue: count}} since start.
    @ivar intervalBuckets: the same since the last stats flush.
    @ivar count: how many values were recorded.
    @ivar sum: their sum.
    @ivar used: whether any value was recorded (or it was set used).
    """

    __slots__ = ("_pending", "_buckets", "_intervalBuckets", "_count", "_sum", "unit", "_used")

    def __init__(self, unit="ms"):
        self._pending = []
        self._buckets = {}
        self._intervalBuckets = {}
        self._count = 0
        self._sum = 0.0
        self.unit = unit
        self._used = False

    def recordValue(self, value):
        # The owning thread appends; a reader removes only the values it
        # has sorted (a prefix), so neither loses the other's.
        pending = self._pending
        pending.append(value)
        if len(pending) >= FOLD_AT:
            self._fold()

    def _fold(self):
        with _foldLock:
            pending = self._pending
            n = len(pending)
            if not n:
                return
            values = pending[:n]
            del pending[:n]
            counts = {}
            total = self._sum
            for value in values:
                # roundToTwoDigits, its operations unrolled for the
                # magnitudes of request times. Float constants keep the
                # comparisons float-to-float, and floor division is int()
                # without a call (the same bucket for positive values).
                if value.__class__ is float:
                    if value < 1.0:
                        if value >= 0.1:
                            bucket = value * 100.0 // 1.0 / 100.0
                        elif value >= 0.01:
                            bucket = value * 1000.0 // 1.0 / 1000.0
                        else:
                            bucket = roundToTwoDigits(value)
                    elif value < 10.0:
                        bucket = value * 10.0 // 1.0 / 10.0
                    elif value < 100.0:
                        bucket = int(value)
                    elif value < 1000.0:
                        bucket = int(value / 10.0) * 10
                    else:
                        bucket = roundToTwoDigits(value)
                else:
                    bucket = roundToTwoDigits(value)
                counts[bucket] = counts.get(bucket, 0) + 1
                total += value
            buckets = self._buckets
            interval = self._intervalBuckets
            for bucket, k in counts.items():
                buckets[bucket] = buckets.get(bucket, 0) + k
                interval[bucket] = interval.get(bucket, 0) + k
            self._sum = total
            self._count += n
            self._used = True

    @property
    def buckets(self):
        self._fold()
        return self._buckets

    @property
    def intervalBuckets(self):
        self._fold()
        return self._intervalBuckets

    @intervalBuckets.setter
    def intervalBuckets(self, buckets):
        # What is pending belongs to the interval that ends here.
        self._fold()
        self._intervalBuckets = buckets

    @property
    def count(self):
        self._fold()
        return self._count

    @count.setter
    def count(self, count):
        self._fold()
        self._count = count

    @property
    def sum(self):
        self._fold()
        return self._sum

    @sum.setter
    def sum(self, total):
        self._fold()
        self._sum = total

    @property
    def used(self):
        return self._used or len(self._pending) > 0

    @used.setter
    def used(self, used):
        self._used = used


def roundToTwoDigits(value):
    """
    Round down to two significant digits: 1234 -> 1200, 0.567 -> 0.56.
    """
    if value <= 0:
        return 0
    if value < 10:
        if value >= 1:
            return int(value * 10) / 10.0
        scale = 10.0
        while value * scale < 10:
            scale *= 10
        return int(value * scale) / scale
    scale = 1
    while value >= 100:
        value /= 10.0
        scale *= 10
    return int(value) * scale


class StatsScope:
    """
    A view of a shard under a name prefix (Envoy's C{Stats::Scope}):
    C{scope("cluster.c1.").counter("upstream_cx_total")}.
    """

    def __init__(self, shard, prefix):
        self._shard = shard
        self.prefix = prefix

    def counter(self, name):
        return self._shard.counter(self.prefix + name)

    def gauge(self, name):
        return self._shard.gauge(self.prefix + name)

    def histogram(self, name, unit="ms"):
        return self._shard.histogram(self.prefix + name, unit)

    def addGauge(self, name, gauge):
        return self._shard.addGauge(self.prefix + name, gauge)

    def scope(self, prefix):
        return StatsScope(self._shard, self.prefix + prefix)


class StatsShard:
    """
    The stats of one thread. Only that thread creates or writes stats here;
    any thread may read them (through the store).
    """

    def __init__(self, store, name):
        self._store = store
        self.name = name
        self.counters = {}
        self.gauges = {}
        self.histograms = {}

    def counter(self, name):
        c = self.counters.get(name)
        if c is None:
            self._store._register(name, COUNTER)
            c = self.counters[name] = Counter()
        return c

    def gauge(self, name):
        g = self.gauges.get(name)
        if g is None:
            self._store._register(name, GAUGE)
            g = self.gauges[name] = Gauge()
        return g

    def addGauge(self, name, gauge):
        """
        Put C{gauge}, any object with C{value} and C{used}, in this shard as
        C{name}: a gauge computed when read (a circuit breaker's state).
        """
        self._store._register(name, GAUGE)
        self.gauges[name] = gauge
        return gauge

    def histogram(self, name, unit="ms"):
        h = self.histograms.get(name)
        if h is None:
            self._store._register(name, HISTOGRAM)
            h = self.histograms[name] = Histogram(unit)
        return h

    def scope(self, prefix):
        return StatsScope(self, prefix)


class MergedHistogram:
    """
    A histogram summed over every shard, as read by the admin and sinks.
    """

    def __init__(self, name, unit):
        self.name = name
        self.unit = unit
        self.buckets = {}
        self.intervalBuckets = {}
        self.count = 0
        self.sum = 0.0
        self.used = False

    def merge(self, h):
        for k, v in h.buckets.copy().items():
            self.buckets[k] = self.buckets.get(k, 0) + v
        for k, v in h.intervalBuckets.copy().items():
            self.intervalBuckets[k] = self.intervalBuckets.get(k, 0) + v
        self.count += h.count
        self.sum += h.sum
        self.used = self.used or h.used

    def quantile(self, q, interval=False):
        """
        @param q: 0..1.
        @return: the value at that quantile, or C{None} with no values.
        """
        buckets = self.intervalBuckets if interval else self.buckets
        total = sum(buckets.values())
        if not total:
            return None
        items = sorted(buckets.items())
        rank = q * (total - 1)
        seen = 0
        for value, count in items:
            if seen + count > rank:
                return value
            seen += count
        return items[-1][0]

    def cumulativeCountsAt(self, bounds):
        """
        @return: for each upper bound, how many values were C{<=} it.
        """
        return cumulativeCounts(self.buckets, bounds)


def cumulativeCounts(buckets, bounds):
    """
    For each bound, how many values lie in buckets starting at or below it
    (Envoy's C{computedBuckets}).
    """
    items = sorted(buckets.items())
    out = []
    i = 0
    running = 0
    for bound in bounds:
        while i < len(items) and items[i][0] <= bound:
            running += items[i][1]
            i += 1
        out.append(running)
    return out


class Snapshot:
    """
    Every stat's value at one moment, summed over shards.

    @ivar counters: C{{name: value}}.
    @ivar gauges: C{{name: value}}.
    @ivar histograms: C{{name: MergedHistogram}}.
    @ivar used: the set of names ever written.
    @ivar bucketsFor: C{bucketsFor(name)}, a histogram's bucket bounds
        (C{stats_config.histogram_bucket_settings}).
    """

    def __init__(self, counters, gauges, histograms, used, bucketsFor=defaultBuckets):
        self.counters = counters
        self.gauges = gauges
        self.histograms = histograms
        self.used = used
        self.bucketsFor = bucketsFor


class StatsStore:
    """
    All stats of one server: the registry of names and kinds, and the shards
    (one per thread) that hold the values.
    """

    #: A L{txenvoy.stats.matcher.StatsMatcher} (C{stats_config.stats_matcher}):
    #: the stats it rejects are left out of every snapshot.
    matcher = None
    #: A L{txenvoy.stats.histogram_settings.HistogramSettings}
    #: (C{stats_config.histogram_bucket_settings}), or C{None}: Envoy's
    #: default bounds.
    histogramSettings = None

    def __init__(self):
        self._lock = threading.Lock()
        self._kinds = {}
        self._shards = []

    def shard(self, name):
        """
        Create the shard for one thread (C{'main_thread'}, C{'worker_0'}).
        """
        shard = StatsShard(self, name)
        with self._lock:
            self._shards.append(shard)
        return shard

    def _register(self, name, kind):
        known = self._kinds.get(name)
        if known is None:
            with self._lock:
                self._kinds.setdefault(name, kind)

    def kindOf(self, name):
        return self._kinds.get(name)

    def counterValue(self, name):
        return sum(s.counters[name].value for s in self._shardsCopy() if name in s.counters)

    def gaugeValue(self, name):
        return sum(s.gauges[name].value for s in self._shardsCopy() if name in s.gauges)

    def _shardsCopy(self):
        with self._lock:
            return list(self._shards)

    def snapshot(self, resetInterval=False):
        """
        Sum every shard. With C{resetInterval}, start a new histogram
        interval (done by the stats flush).
        """
        counters = {}
        gauges = {}
        histograms = {}
        used = set()
        for shard in self._shardsCopy():
            for name, c in shard.counters.copy().items():
                counters[name] = counters.get(name, 0) + c.value
                if c.used:
                    used.add(name)
            for name, g in shard.gauges.copy().items():
                gauges[name] = gauges.get(name, 0) + g.value
                if g.used:
                    used.add(name)
            for name, h in shard.histograms.copy().items():
                m = histograms.get(name)
                if m is None:
                    m = histograms[name] = MergedHistogram(name, h.unit)
                m.merge(h)
                if h.used:
                    used.add(name)
                if resetInterval:
                    h.intervalBuckets = {}
        matcher = self.matcher
        if matcher is not None:
            rejects = matcher.rejects
            for table in (counters, gauges, histograms):
                for name in [n for n in table if rejects(n)]:
                    del table[name]
        settings = self.histogramSettings
        return Snapshot(counters, gauges, histograms, used,
                        settings.bucketsFor if settings is not None else defaultBuckets)

    def resetCounters(self):
        """C{POST /reset_counters}: every counter back to zero."""
        for shard in self._shardsCopy():
            for c in shard.counters.copy().values():
                c.used = c.used
                c.value = 0
