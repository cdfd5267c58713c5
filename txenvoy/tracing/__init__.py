"""
Distributed tracing as Envoy does it (Envoy's C{source/common/tracing/}).

The connection manager asks L{txenvoy.tracing.http_tracer} for a span when a
request arrives (the sampling decision, kept in C{x-request-id} as Envoy
encodes it), the router injects the span's context into the upstream
request, and the span is finished with Envoy's standard tags when the
stream ends. Providers (C{envoy.tracers.*}) are extensions under
L{txenvoy.extensions.tracers}; each reports finished spans from a
per-worker L{txenvoy.tracing.reporter.BatchReporter}, off the data path.
"""
