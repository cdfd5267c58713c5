# -*- test-case-name: tests.extensions.tracers.test_opentelemetry -*-
"""
C{envoy.tracers.opentelemetry}: spans as Envoy's OpenTelemetry tracer
makes them, exported as OTLP (C{ExportTraceServiceRequest} from the
C{opentelemetry-proto} package) over gRPC (C{grpc_service.envoy_grpc},
with grpcio: see L{txenvoy.grpc.async_client}) or over HTTP
(C{http_service}, C{application/x-protobuf}).

W3C C{traceparent}/C{tracestate} are continued and injected; the span is
named C{ingress} (C{egress <host>} on an C{OUTBOUND} listener) until a
decorator renames it. A caller's sampled flag decides for a continued
trace, Envoy's decision for a new one; a C{sampler} (C{always_on}, or
C{parent_based} around it) overrides both. The resource carries
C{service.name} and the C{environment} and C{static_config} resource
detectors' attributes. Finished spans are batched per worker (runtime
C{tracing.opentelemetry.min_flush_spans}, default 5, and
C{tracing.opentelemetry.flush_interval_ms}, default 5000); stats
C{tracing.opentelemetry.spans_sent}, C{spans_dropped} and
C{timer_flushed} as Envoy names them.
"""

import functools
import os
import random
from urllib.parse import urlsplit

from zope.interface import implementer

from txenvoy.config import registry
from txenvoy.config.errors import ConfigError, UnsupportedExtension
from txenvoy.config.fields import checkFields, durationSeconds
from txenvoy.config.registry import Category, extension
from txenvoy.grpc.async_client import GrpcCollector, compileEnvoyGrpc
from txenvoy.http.filter_config import snapshotSource
from txenvoy.interfaces import ISpan, ITracerDriver
from txenvoy.stats.per_worker import StatsStruct, perWorkerMethod
from txenvoy.tracing import w3c
from txenvoy.tracing.otlp_protos import requireCurrentOtlpProtos
from txenvoy.tracing.reporter import BatchReporter, HttpCollector, checkCollectorCluster
from txenvoy.tracing.span import ReportedSpan

OTEL_STATS = ("spans_sent", "spans_dropped", "timer_flushed")
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
DEFAULT_SERVICE_NAME = "unknown_service:envoy"

_FIELDS = ("grpc_service", "http_service", "service_name", "resource_detectors", "sampler",
           "max_cache_size")
_ALWAYS_ON = "envoy.extensions.tracers.opentelemetry.samplers.v3.AlwaysOnSamplerConfig"
_PARENT_BASED = "envoy.extensions.tracers.opentelemetry.samplers.v3.ParentBasedSamplerConfig"
_ENV_DETECTOR = ("envoy.extensions.tracers.opentelemetry.resource_detectors.v3."
                 "EnvironmentResourceDetectorConfig")
_STATIC_DETECTOR = ("envoy.extensions.tracers.opentelemetry.resource_detectors.v3."
                    "StaticConfigResourceDetectorConfig")
# OTLP span flags: the is-remote bit is known, and set.
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
_SERVER, _CLIENT = 2, 3

_rng = random.SystemRandom()


def _version():
    from txenvoy import __version__
    return __version__


def _nanos(seconds):
    # Envoy's clock: whole microseconds.
    return int(round(seconds * 1e6)) * 1000


@implementer(ISpan)
class OtelSpan(ReportedSpan):
    """One OpenTelemetry span; reported to its worker's reporter when finished."""

    def __init__(self, reporter, name, traceId, spanId, parentId, kind, sampled, timestamp,
                 traceState="", remoteParent=False):
        ReportedSpan.__init__(self, reporter, name, kind, sampled, timestamp)
        self.traceId = traceId
        self.spanId = spanId
        self.parentId = parentId
        self.traceState = traceState
        self.remoteParent = remoteParent

    def injectContext(self, requestHeaders, upstreamHost):
        w3c.inject(requestHeaders.headers, self.traceId, self.spanId, self.sampled,
                   self.traceState)

    def spawnChild(self, operationName, timestamp):
        return OtelSpan(self._reporter, operationName, self.traceId, _rng.randbytes(8),
                        self.spanId, _CLIENT, self.sampled, timestamp, self.traceState)

    def fill(self, message):
        """Write this span into an C{opentelemetry.proto.trace.v1.Span}."""
        message.trace_id = self.traceId
        message.span_id = self.spanId
        if self.parentId is not None:
            message.parent_span_id = self.parentId
        if self.traceState:
            message.trace_state = self.traceState
        message.name = self.name
        message.kind = self.kind
        message.start_time_unix_nano = _nanos(self.timestamp)
        message.end_time_unix_nano = _nanos(self.end)
        message.flags = (1 if self.sampled else 0) | _HAS_IS_REMOTE | (
            _IS_REMOTE if self.remoteParent else 0)
        for key, value in self.tags.items():
            attribute = message.attributes.add()
            attribute.key = key
            attribute.value.string_value = value
        for timestamp, name in self.events:
            event = message.events.add()
            event.time_unix_nano = _nanos(timestamp)
            event.name = name


def _ok2xx(code):
    return 200 <= code < 300


def _encode(resource, spans):
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

    request = trace_service_pb2.ExportTraceServiceRequest()
    resourceSpans = request.resource_spans.add()
    for key, value in resource:
        attribute = resourceSpans.resource.attributes.add()
        attribute.key = key
        attribute.value.string_value = value
    scope = resourceSpans.scope_spans.add()
    scope.scope.name = "envoy"
    scope.scope.version = _version()
    for span in spans:
        span.fill(scope.spans.add())
    return request.SerializeToString()


@implementer(ITracerDriver)
class OpenTelemetryDriver:
    """The compiled C{OpenTelemetryConfig}: spans, and a reporter per worker."""

    def __init__(self, makeCollector, snapshot, resource, sampler=None, maxCacheSize=1024,
                 http=False):
        self._makeCollector = makeCollector
        self._snapshot = snapshot
        self.resource = resource
        self.sampler = sampler
        self.maxCacheSize = maxCacheSize
        self._http = http

    def _makeReporter(self, dispatcher):
        snapshot = self._snapshot()
        stats = StatsStruct(dispatcher.stats, "tracing.opentelemetry.", OTEL_STATS)
        interval = snapshot.getInteger("tracing.opentelemetry.flush_interval_ms", 5000)
        # The reporter encodes with the resource, not through this driver,
        # which holds it: no reference cycle outlives a replaced config.
        return BatchReporter(
            dispatcher.reactor, self._makeCollector(dispatcher),
            functools.partial(_encode, self.resource), stats,
            flushInterval=interval / 1000.0,
            minFlushSpans=max(1, snapshot.getInteger("tracing.opentelemetry.min_flush_spans",
                                                     5)),
            maxBufferedSpans=self.maxCacheSize,
            okStatus=_ok2xx)

    #: C{reporterFor(dispatcher)}: that worker's L{BatchReporter}.
    reporterFor = perWorkerMethod(_makeReporter)

    def encode(self, spans):
        """One C{ExportTraceServiceRequest}, serialized."""
        return _encode(self.resource, spans)

    def startSpan(self, dispatcher, requestHeaders, streamInfo, operationName, traced, egress,
                  timestamp):
        try:
            parent = w3c.extract(requestHeaders.headers)
        except w3c.TraceParentError:
            # As Envoy: no span, the request goes on untraced.
            return None
        reporter = self.reporterFor(dispatcher)
        kind = _CLIENT if egress else _SERVER
        if parent is None:
            sampled = traced if self.sampler is None else self.sampler(None)
            return OtelSpan(reporter, operationName, _rng.randbytes(16), _rng.randbytes(8),
                            None, kind, sampled, timestamp)
        sampled = parent.sampled if self.sampler is None else self.sampler(parent)
        return OtelSpan(reporter, operationName, parent.traceId, _rng.randbytes(8),
                        parent.spanId, kind, sampled, timestamp, parent.traceState,
                        remoteParent=True)


def _alwaysOn(parent):
    return True


def _parentBased(root):
    def sample(parent):
        return root(None) if parent is None else parent.sampled
    return sample


def _compileSampler(sampler, path, depth=0):
    typeName = registry.typeNameOf(sampler.typed_config)
    if typeName == _ALWAYS_ON:
        return _alwaysOn
    if typeName == _PARENT_BASED and depth == 0:
        message = registry.unpackAny(sampler.typed_config, path + ".typed_config")
        return _parentBased(_compileSampler(message.wrapped_sampler,
                                            path + ".typed_config.wrapped_sampler", 1))
    raise UnsupportedExtension(path + ".typed_config", typeName)


def _parseEnvironment(text):
    # OTEL_RESOURCE_ATTRIBUTES: key1=value1,key2=value2 (percent-encoded).
    from urllib.parse import unquote

    out = []
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            out.append((unquote(key.strip()), unquote(value.strip())))
    return out


def _resource(message, path):
    serviceName = message.service_name or DEFAULT_SERVICE_NAME
    attributes = {}
    for i, detector in enumerate(message.resource_detectors):
        dpath = "%s.resource_detectors[%d]" % (path, i)
        typeName = registry.typeNameOf(detector.typed_config)
        if typeName == _ENV_DETECTOR:
            attributes.update(_parseEnvironment(os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")))
        elif typeName == _STATIC_DETECTOR:
            config = registry.unpackAny(detector.typed_config, dpath + ".typed_config")
            attributes.update(config.attributes)
        else:
            raise UnsupportedExtension(dpath + ".typed_config", typeName)
    resource = [("telemetry.sdk.language", "python"), ("telemetry.sdk.version", _version()),
                ("telemetry.sdk.name", "envoy")]
    attributes["service.name"] = serviceName
    resource.extend(sorted(attributes.items()))
    return tuple(resource)


@extension(Category.TRACER, "envoy.config.trace.v3.OpenTelemetryConfig",
           "envoy.tracers.opentelemetry", fields=_FIELDS)
def createOpenTelemetryDriver(message, context):
    """Build an L{OpenTelemetryDriver} from an C{envoy.config.trace.v3.OpenTelemetryConfig}."""
    path = context.path + ".typed_config"
    requireCurrentOtlpProtos(path)
    userAgent = "OTel-OTLP-Exporter-Envoy/txenvoy-%s" % (_version(),)
    if message.HasField("grpc_service") and message.HasField("http_service"):
        raise ConfigError("%s: only one of grpc_service and http_service can be set" % (path,))
    if message.HasField("grpc_service"):
        target = compileEnvoyGrpc(message.grpc_service, path + ".grpc_service",
                                  context.bootstrap)

        def makeCollector(dispatcher):
            return GrpcCollector(dispatcher, target.clusterName, EXPORT_METHOD, target.timeout,
                                 target.metadata, userAgent=userAgent,
                                 authority=target.authority)
    elif message.HasField("http_service"):
        service = message.http_service
        hpath = path + ".http_service"
        checkFields(service, frozenset(("http_uri", "request_headers_to_add")), hpath)
        uri = service.http_uri
        checkFields(uri, frozenset(("uri", "cluster", "timeout")), hpath + ".http_uri")
        checkCollectorCluster(context, uri.cluster, hpath + ".http_uri.cluster")
        parts = urlsplit(uri.uri)
        if not parts.netloc:
            raise ConfigError("%s.http_uri.uri: not an absolute URI: '%s'" % (hpath, uri.uri))
        urlPath = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        timeout = durationSeconds(uri.timeout) if uri.HasField("timeout") else 5.0
        headers = [(b"user-agent", userAgent.encode())] + [
            (h.header.key.lower().encode("latin-1"), h.header.value.encode("latin-1"))
            for h in service.request_headers_to_add]
        clusterName = uri.cluster

        def makeCollector(dispatcher):
            return HttpCollector(dispatcher, clusterName, urlPath, b"application/x-protobuf",
                                 parts.netloc, extraHeaders=headers, timeout=timeout)
    else:
        raise ConfigError("%s: one of grpc_service or http_service is required" % (path,))
    sampler = None
    if message.HasField("sampler"):
        sampler = _compileSampler(message.sampler, path + ".sampler")
    maxCache = message.max_cache_size.value if message.HasField("max_cache_size") else 1024
    return OpenTelemetryDriver(makeCollector, snapshotSource(context),
                               _resource(message, path), sampler, maxCache)
