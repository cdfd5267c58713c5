"""
Stats sinks (Envoy's C{envoy.stat_sinks.*}): statsd.
"""

from txenvoy.extensions.stat_sinks import statsd  # noqa: F401
