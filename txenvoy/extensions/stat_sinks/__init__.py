"""
Stats sinks (Envoy's C{envoy.stat_sinks.*}): statsd and DogStatsD.
"""
