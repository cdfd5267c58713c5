"""
Tracing providers (Envoy's C{envoy.tracers.*}): Zipkin and OpenTelemetry.
"""
