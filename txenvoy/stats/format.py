# -*- test-case-name: tests.stats.test_format -*-
"""
Envoy's stats output formats, from a L{txenvoy.stats.store.Snapshot}:

  - L{textStats}: C{/stats} (C{name: value}; histograms as
    C{P0(interval,cumulative) ... P100(...)}),
  - L{jsonStats}: C{/stats?format=json},
  - L{prometheusStats}: C{/stats/prometheus} (tags from
    L{txenvoy.stats.tags}).

Histogram quantiles are computed as Envoy's circllhist does: values are
kept in buckets of two significant digits, the samples of a bucket are taken
to sit evenly inside it (the j-th of c at C{left + j/(c+1) * width}), and the
q-quantile is the sample of rank C{ceil(q * count)} (the first one for
q=0). "Interval" values are those of the last completed stats flush
interval; before the first flush they are C{nan} (text) or C{null} (JSON).
"""

import decimal
import json
import math
import re

from txenvoy.regex import RegexError, compilePattern
from txenvoy.stats.histogram_settings import DEFAULT_BUCKETS
from txenvoy.stats.store import cumulativeCounts as _cumulativeCounts
from txenvoy.stats.tags import defaultTagProducer

#: Envoy's supported quantiles, as fractions.
SUPPORTED_QUANTILES = (0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1)


STAT_TYPES = ("All", "Counters", "Histograms", "Gauges", "TextReadouts")
FORMATS = ("html", "active-html", "text", "json", "prometheus")
HISTOGRAM_BUCKET_MODES = ("cumulative", "disjoint", "detailed", "summary", "prometheusnative")


class StatsParamsError(ValueError):
    """
    A bad C{/stats} query parameter; C{str()} is the body Envoy answers
    with (status 400).
    """


class StatsParams:
    """
    The query parameters of C{/stats} and C{/stats/prometheus}.

    @ivar usedOnly: only stats written since start (C{?usedonly}).
    @ivar filter: a compiled regex searched in each name, or C{None}.
    @ivar invertFilter: keep the names that do I{not} match.
    @ivar type: one of L{STAT_TYPES}.
    @ivar format: one of L{FORMATS}.
    @ivar histogramBuckets: C{None} (quantile summary) or one of
        L{HISTOGRAM_BUCKET_MODES}.
    """

    def __init__(self, usedOnly=False, filter=None, invertFilter=False, type="All",
                 format="text", histogramBuckets=None):
        self.usedOnly = usedOnly
        self.filter = compilePattern(filter) if isinstance(filter, str) else filter
        self.invertFilter = invertFilter
        self.type = type
        self.format = format
        self.histogramBuckets = histogramBuckets

    @classmethod
    def fromQuery(cls, query):
        """
        @param query: C{{name: value}} (text), value C{""} for a bare flag.
        @raise StatsParamsError: with Envoy's message.
        """
        p = cls()
        p.usedOnly = "usedonly" in query
        p.invertFilter = "invert_filter" in query
        if "filter" in query and query["filter"] != "":
            try:
                p.filter = compilePattern(query["filter"])
            except RegexError as e:
                raise StatsParamsError("Invalid re2 regex: %s" % (e,))
        if "type" in query:
            if query["type"] not in STAT_TYPES:
                raise StatsParamsError("invalid &type= param")
            p.type = query["type"]
        if "format" in query:
            if query["format"] not in FORMATS:
                raise StatsParamsError(
                    "usage: /stats?format=(html|active-html|json|prometheus|text)\n\n")
            p.format = query["format"]
        if "histogram_buckets" in query:
            if query["histogram_buckets"] not in HISTOGRAM_BUCKET_MODES:
                raise StatsParamsError(
                    "usage: /stats?histogram_buckets=(cumulative|disjoint|detailed|summary"
                    "|prometheusnative)\n")
            mode = query["histogram_buckets"]
            p.histogramBuckets = None if mode == "summary" else mode
        return p

    def shows(self, name, used):
        """Whether a stat passes C{usedonly} and the filter."""
        if self.usedOnly and not used:
            return False
        if self.filter is not None:
            if self.filter.search(name) == self.invertFilter:
                return False
        return True

    def wants(self, kind):
        """Whether stats of C{kind} (C{"Counters"}...) are printed."""
        return self.type == "All" or self.type == kind


# Number formatting.

def formatDouble(value):
    """
    A double as Envoy's C{fmt} C{{}} prints it: shortest round-trip digits,
    no C{.0} on whole numbers, C{nan} for a missing value.
    """
    if value is None or value != value:
        return "nan"
    if value == int(value) and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


def jsonNumber(value):
    """
    A double as Envoy's JSON streamer prints it (C{std::to_chars}): the
    shortest round-trip digits, in fixed or exponent form, whichever is
    shorter (fixed on a tie); C{null} for a missing value.
    """
    if value is None or value != value:
        return "null"
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    # repr gives the shortest round-trip digits.
    t = decimal.Decimal(repr(abs(float(value)))).normalize().as_tuple()
    digits = "".join(map(str, t.digits))
    exp = t.exponent
    n = len(digits)
    if exp >= 0:
        fixed = digits + "0" * exp
    elif n + exp > 0:
        fixed = digits[:n + exp] + "." + digits[n + exp:]
    else:
        fixed = "0." + "0" * (-(n + exp)) + digits
    e = exp + n - 1
    mantissa = digits[0] + ("." + digits[1:] if n > 1 else "")
    sci = "%se%s%02d" % (mantissa, "-" if e < 0 else "+", abs(e))
    return sign + (fixed if len(fixed) <= len(sci) else sci)


def _promNumber(value):
    # Envoy prints sums and bucket bounds with fmt's {:.32g}.
    return format(float(value), ".32g")


# Histogram maths (circllhist).

def bucketWidth(left):
    """The width of the two-significant-digit bucket starting at C{left}."""
    if left <= 0:
        return 0.0
    return 10.0 ** (math.floor(math.log10(left) + 1e-12) - 1)


def quantiles(buckets, qs=SUPPORTED_QUANTILES):
    """
    Envoy's quantiles of one histogram.

    @param buckets: C{{bucketLeft: count}}.
    @param qs: fractions, ascending.
    @return: a list of floats, or of C{None} when there are no values.
    """
    items = sorted((k, c) for k, c in buckets.items() if c > 0)
    total = sum(c for _, c in items)
    if not total:
        return [None] * len(qs)
    out = []
    i = 0
    below = 0
    for q in qs:
        rank = max(1, int(math.ceil(q * total - 1e-9)))
        while i < len(items) - 1 and below + items[i][1] < rank:
            below += items[i][1]
            i += 1
        left, count = items[i]
        j = min(rank - below, count)
        out.append(left + (j / (count + 1)) * bucketWidth(left))
    return out


def cumulativeCounts(buckets, bounds=DEFAULT_BUCKETS):
    """Cumulative counts at C{bounds} (Envoy's default bucket bounds)."""
    return _cumulativeCounts(buckets, bounds)


def _intervalBuckets(intervals, name):
    if intervals is None:
        return None
    h = intervals.get(name)
    if h is None:
        return {}
    return getattr(h, "intervalBuckets", h)


# Selection.

def _selected(snapshot, params):
    used = snapshot.used
    counters = []
    gauges = []
    histograms = []
    if params.wants("Counters"):
        counters = [(n, v) for n, v in snapshot.counters.items() if params.shows(n, n in used)]
    if params.wants("Gauges"):
        gauges = [(n, v) for n, v in snapshot.gauges.items() if params.shows(n, n in used)]
    if params.wants("Histograms"):
        histograms = [(n, h) for n, h in snapshot.histograms.items()
                      if params.shows(n, n in used)]
    histograms.sort(key=lambda x: x[0])
    return counters, gauges, histograms


# /stats (text).

def _summary(h, intervalBuckets):
    if not h.count:
        return "No recorded values"
    cumulative = quantiles(h.buckets)
    interval = quantiles(intervalBuckets) if intervalBuckets else [None] * len(cumulative)
    return " ".join(
        "P%s(%s,%s)" % (format(100 * q, "g"), formatDouble(i), formatDouble(c))
        for q, i, c in zip(SUPPORTED_QUANTILES, interval, cumulative))


def _bucketLine(h, intervalBuckets, disjoint, bounds):
    if not h.count:
        # As Envoy's text output of a histogram without values, whatever the mode.
        return "No recorded values"
    cumulative = cumulativeCounts(h.buckets, bounds)
    interval = cumulativeCounts(intervalBuckets or {}, bounds)
    if disjoint:
        cumulative = _disjoint(cumulative)
        interval = _disjoint(interval)
    return " ".join("B%s(%d,%d)" % (format(b, "g"), i, c)
                    for b, i, c in zip(bounds, interval, cumulative))


def _disjoint(counts):
    out = []
    prev = 0
    for c in counts:
        out.append(c - prev)
        prev = c
    return out


def textStats(snapshot, params=None, intervals=None):
    """
    C{/stats}: counters and gauges sorted by name, then histograms.

    @param intervals: C{{name: buckets}} (or objects with
        C{intervalBuckets}) of the last completed flush interval, or
        C{None} before the first flush.
    @return: text.
    """
    params = params or StatsParams()
    counters, gauges, histograms = _selected(snapshot, params)
    scalars = sorted(counters + gauges)
    lines = ["%s: %d" % (n, v) for n, v in scalars]
    for name, h in histograms:
        ib = _intervalBuckets(intervals, name)
        if params.histogramBuckets in ("cumulative", "disjoint"):
            body = _bucketLine(h, ib, params.histogramBuckets == "disjoint",
                               snapshot.bucketsFor(name))
        elif params.histogramBuckets == "detailed":
            lines.append(_detailed(name, h, ib))
            continue
        else:
            body = _summary(h, ib)
        lines.append("%s: %s" % (name, body))
    return "".join(line + "\n" for line in lines)


def _detailed(name, h, intervalBuckets):
    # Envoy's histogram_buckets=detailed: every bucket as left,width:count.
    if not h.count:
        return "%s: No recorded values" % (name,)

    def spans(buckets):
        return ", ".join("%s,%s:%d" % (formatDouble(k), formatDouble(bucketWidth(k)), c)
                         for k, c in sorted(buckets.items()) if c)
    return "%s:\n  totals=%s\n  intervals=%s\n  summary=%s" % (
        name, spans(h.buckets), spans(intervalBuckets or {}), _summary(h, intervalBuckets))


# /stats?format=json.

def jsonStats(snapshot, params=None, intervals=None):
    """
    C{/stats?format=json}: compact JSON, as Envoy prints it::

        {"stats":[{"name":"a","value":1},...,
                  {"histograms":{"supported_quantiles":[0,25,...,100],
                                 "computed_quantiles":[{"name":"h","values":[
                                     {"cumulative":1.05,"interval":null},...]}]}}]}
    """
    params = params or StatsParams()
    counters, gauges, histograms = _selected(snapshot, params)
    items = ['{"name":%s,"value":%d}' % (json.dumps(n), v) for n, v in sorted(counters + gauges)]
    if histograms:
        if params.histogramBuckets in ("cumulative", "disjoint"):
            items.append('{"histograms":[%s]}' % ",".join(
                _jsonBuckets(n, h, _intervalBuckets(intervals, n),
                             params.histogramBuckets == "disjoint", snapshot.bucketsFor(n))
                for n, h in histograms))
        elif params.histogramBuckets == "detailed":
            items.append(
                '{"histograms":{"supported_percentiles":[%s],"details":[%s]}}'
                % (",".join(jsonNumber(100 * q) for q in SUPPORTED_QUANTILES), ",".join(
                    _jsonDetailed(n, h, _intervalBuckets(intervals, n)) for n, h in histograms)))
        else:
            computed = []
            for name, h in histograms:
                ib = _intervalBuckets(intervals, name)
                cumulative = quantiles(h.buckets)
                interval = quantiles(ib) if ib else [None] * len(cumulative)
                computed.append('{"name":%s,"values":[%s]}' % (json.dumps(name), ",".join(
                    '{"cumulative":%s,"interval":%s}' % (jsonNumber(c), jsonNumber(i))
                    for i, c in zip(interval, cumulative))))
            items.append(
                '{"histograms":{"supported_quantiles":[%s],"computed_quantiles":[%s]}}'
                % (",".join(jsonNumber(100 * q) for q in SUPPORTED_QUANTILES),
                   ",".join(computed)))
    return '{"stats":[%s]}' % ",".join(items)


def _jsonSpans(buckets):
    return ",".join('{"lower_bound":%s,"width":%s,"count":%d}' % (
        jsonNumber(k), jsonNumber(bucketWidth(k)), c) for k, c in sorted(buckets.items()) if c)


def _jsonDetailed(name, h, intervalBuckets):
    # Envoy's histogram_buckets=detailed (what /stats?format=active-html
    # draws): every bucket of the totals and of the last interval, then the
    # percentiles.
    cumulative = quantiles(h.buckets)
    interval = quantiles(intervalBuckets) if intervalBuckets else [None] * len(cumulative)
    return ('{"name":%s,"totals":[%s],"intervals":[%s],"percentiles":[%s]}' % (
        json.dumps(name), _jsonSpans(h.buckets), _jsonSpans(intervalBuckets or {}),
        ",".join('{"cumulative":%s,"interval":%s}' % (jsonNumber(c), jsonNumber(i))
                 for i, c in zip(interval, cumulative))))


def _jsonBuckets(name, h, intervalBuckets, disjoint, bounds):
    cumulative = cumulativeCounts(h.buckets, bounds)
    interval = cumulativeCounts(intervalBuckets or {}, bounds)
    if disjoint:
        cumulative = _disjoint(cumulative)
        interval = _disjoint(interval)
    return '{"name":%s,"buckets":[%s]}' % (json.dumps(name), ",".join(
        '{"upper_bound":%s,"interval":%d,"cumulative":%d}' % (jsonNumber(b), i, c)
        for b, i, c in zip(bounds, interval, cumulative)))


# /stats/prometheus.

_NOT_NAME_CHAR = re.compile(r"[^a-zA-Z0-9_]")


def sanitizePrometheusName(name):
    """Any character outside C{[a-zA-Z0-9_]} becomes C{_}, as Envoy does."""
    name = _NOT_NAME_CHAR.sub("_", name)
    if name[:1].isdigit():
        name = "_" + name
    return name


def prometheusMetricName(tagExtractedName):
    """C{cluster.upstream_rq} -> C{envoy_cluster_upstream_rq}."""
    return "envoy_" + sanitizePrometheusName(tagExtractedName)


def _labelValue(value):
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def formatLabels(tags):
    """C{((name, value), ...)} -> C{envoy_x="v",...} (without braces)."""
    return ",".join('%s="%s"' % (sanitizePrometheusName(k), _labelValue(v)) for k, v in tags)


def _tokens(name):
    # Envoy orders stat names element by element (its symbol table), not
    # as flat strings.
    return name.split(".")


def _families(items, tagProducer):
    families = {}
    for name, value in items:
        tagged, tags = tagProducer.produceTags(name)
        metric = prometheusMetricName(tagged)
        family = families.get(metric)
        if family is None:
            family = families[metric] = [_tokens(tagged), []]
        family[1].append((_tokens(name), tags, value))
    ordered = sorted(families.items(), key=lambda kv: kv[1][0])
    return [(metric, sorted(members, key=lambda m: m[0])) for metric, (_, members) in ordered]


def prometheusStats(snapshot, params=None, tagProducer=None):
    """
    C{/stats/prometheus}: one C{# TYPE} family per tag-extracted name,
    counters, then gauges, then histograms (their bucket bounds,
    C{_sum} and C{_count}); a stat without tags prints C{{}}.
    """
    params = params or StatsParams()
    tagProducer = tagProducer or defaultTagProducer()
    counters, gauges, histograms = _selected(snapshot, params)
    out = []
    for items, kind in ((counters, "counter"), (gauges, "gauge")):
        for metric, members in _families(items, tagProducer):
            out.append("# TYPE %s %s\n" % (metric, kind))
            for _, tags, value in members:
                out.append("%s{%s} %d\n" % (metric, formatLabels(tags), value))
    for metric, members in _families(histograms, tagProducer):
        out.append("# TYPE %s histogram\n" % (metric,))
        for _, tags, h in members:
            labels = formatLabels(tags)
            prefix = labels + "," if labels else ""
            bounds = snapshot.bucketsFor(h.name)
            for bound, count in zip(bounds, cumulativeCounts(h.buckets, bounds)):
                out.append('%s_bucket{%sle="%s"} %d\n'
                           % (metric, prefix, _promNumber(bound), count))
            out.append('%s_bucket{%sle="+Inf"} %d\n' % (metric, prefix, h.count))
            out.append("%s_sum{%s} %s\n" % (metric, labels, _promNumber(h.sum)))
            out.append("%s_count{%s} %d\n" % (metric, labels, h.count))
    return "".join(out)
