# -*- test-case-name: tests.stats.test_matcher -*-
"""
C{stats_config.stats_matcher} (Envoy's C{StatsMatcherImpl}): which stats
exist for the outside. C{reject_all: true} hides every stat; an
C{inclusion_list} hides those no pattern matches; an C{exclusion_list}
hides those one matches. Patterns are C{StringMatcher}s against the full
stat name (C{cluster.c1.upstream_rq_total}, before tag extraction).

Envoy never creates a rejected stat; txenvoy keeps counting it (the data
path does not look names up) and leaves it out of every snapshot, so
C{/stats}, C{/stats/prometheus} and every sink see what Envoy shows.
"""

from txenvoy.config.errors import ConfigError
from txenvoy.config.fields import checkFields
from txenvoy.router.matcher import compileStringMatcher

_FIELDS = frozenset(("reject_all", "exclusion_list", "inclusion_list"))


class StatsMatcher:
    """C{rejects(name)}, remembered per name (stat names are few and fixed)."""

    def __init__(self, rejects):
        self._rejects = rejects
        self._cache = {}

    def rejects(self, name):
        """@return: whether the stat C{name} is hidden."""
        answer = self._cache.get(name)
        if answer is None:
            answer = self._cache[name] = self._rejects(name.encode("utf-8"))
        return answer


def compileStatsMatcher(message, path):
    """
    @param message: an C{envoy.config.metrics.v3.StatsMatcher}.
    @return: a L{StatsMatcher}, or C{None} when it hides nothing.
    """
    checkFields(message, _FIELDS, path)
    which = message.WhichOneof("stats_matcher")
    if which is None:
        return None
    if which == "reject_all":
        return StatsMatcher(lambda name: True) if message.reject_all else None
    patterns = getattr(message, which).patterns
    matchers = [compileStringMatcher(p, "%s.%s.patterns[%d]" % (path, which, i))
                for i, p in enumerate(patterns)]
    if not matchers:
        raise ConfigError("%s.%s.patterns: value must contain at least 1 item(s)"
                          % (path, which))
    if which == "inclusion_list":
        return StatsMatcher(lambda name: not any(m(name) for m in matchers))
    return StatsMatcher(lambda name: any(m(name) for m in matchers))
