"""
Stats sinks (Envoy's C{envoy.stat_sinks.*}): statsd, DogStatsD and OpenTelemetry.
"""
