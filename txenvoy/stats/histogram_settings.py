# -*- test-case-name: tests.stats.test_histogram_settings -*-
"""
C{stats_config.histogram_bucket_settings} (Envoy's
C{HistogramSettingsImpl}): the bucket bounds of each histogram, wherever
buckets are shown or sent (C{/stats?histogram_buckets=...},
C{/stats?format=json}, C{/stats/prometheus}, the OpenTelemetry sink). The
first setting whose C{match} accepts the full stat name gives its bounds,
sorted; any other histogram has Envoy's default bounds.
"""

from txenvoy.config.errors import ConfigError
from txenvoy.config.fields import checkFields
from txenvoy.router.matcher import compileStringMatcher

#: Envoy's default histogram bucket bounds.
DEFAULT_BUCKETS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000,
                   60000, 300000, 600000, 1800000, 3600000)

_FIELDS = frozenset(("match", "buckets"))


class HistogramSettings:
    """C{bucketsFor(name)}, remembered per name (stat names are few and fixed)."""

    def __init__(self, rules):
        self._rules = rules
        self._cache = {}

    def bucketsFor(self, name):
        """@return: the upper bounds of the histogram C{name}'s buckets."""
        bounds = self._cache.get(name)
        if bounds is None:
            encoded = name.encode("utf-8")
            bounds = DEFAULT_BUCKETS
            for matches, buckets in self._rules:
                if matches(encoded):
                    bounds = buckets
                    break
            self._cache[name] = bounds
        return bounds


def defaultBuckets(name):
    """Envoy's bounds for every histogram (no settings)."""
    return DEFAULT_BUCKETS


def compileHistogramSettings(settings, path):
    """
    @param settings: the repeated C{envoy.config.metrics.v3.HistogramBucketSettings}.
    @return: a L{HistogramSettings}, or C{None} when there are none.
    @raise ConfigError: naming the field, for what Envoy's validation refuses.
    """
    rules = []
    for i, setting in enumerate(settings):
        spath = "%s[%d]" % (path, i)
        checkFields(setting, _FIELDS, spath)
        if not setting.HasField("match"):
            raise ConfigError("%s.match: value is required" % (spath,))
        buckets = list(setting.buckets)
        if not buckets:
            raise ConfigError("%s.buckets: value must contain at least 1 item(s)" % (spath,))
        for j, bound in enumerate(buckets):
            if not bound > 0:
                raise ConfigError("%s.buckets[%d]: value must be greater than 0" % (spath, j))
        if len(set(buckets)) != len(buckets):
            raise ConfigError("%s.buckets: repeated value must contain unique items" % (spath,))
        rules.append((compileStringMatcher(setting.match, spath + ".match"),
                      tuple(sorted(buckets))))
    return HistogramSettings(rules) if rules else None
