# -*- test-case-name: tests.extensions.tracers.test_zipkin -*-
"""
C{envoy.tracers.zipkin}: spans as Envoy's Zipkin tracer makes them, sent
as Zipkin v2 JSON (C{HTTP_JSON}) or as protobuf C{zipkin.proto3.ListOfSpans}
(C{HTTP_PROTO}) to C{collector_endpoint} on C{collector_cluster}.

The connection manager's span is SERVER (CLIENT on an C{OUTBOUND}
listener). With C{shared_span_context} (the default) a SERVER span keeps
the caller's span id and is marked C{shared}; otherwise it is a child of
the caller's span. A new trace gets a span id equal to its (lower) trace
id, and a 128-bit trace id with C{trace_id_128bit}. Finished spans go to a
per-worker L{BatchReporter} (runtime C{tracing.zipkin.min_flush_spans},
default 5, and C{tracing.zipkin.flush_interval_ms}, default 5000), which
counts Envoy's C{tracing.zipkin.*} stats.
"""

import functools
import json
import random
import socket

from zope.interface import implementer

from txenvoy.config.errors import ConfigError, UnsupportedField
from txenvoy.config.registry import Category, extension
from txenvoy.http.conn_manager import machineAddress
from txenvoy.http.filter_config import snapshotSource
from txenvoy.interfaces import ISpan, ITracerDriver
from txenvoy.stats.per_worker import StatsStruct, perWorkerMethod
from txenvoy.tracing import b3, zipkin_proto
from txenvoy.tracing.reporter import BatchReporter, HttpCollector, checkCollectorCluster
from txenvoy.tracing.span import ReportedSpan

#: Envoy's C{tracing.zipkin.*} counters, and txenvoy's C{spans_dropped}
#: (spans a full buffer or a slow collector cost).
ZIPKIN_STATS = ("spans_sent", "reports_sent", "reports_dropped", "reports_failed",
                "reports_skipped_no_cluster", "timer_flushed", "spans_dropped")

_FIELDS = ("collector_cluster", "collector_endpoint", "trace_id_128bit", "shared_span_context",
           "collector_endpoint_version", "collector_hostname", "split_spans_for_request",
           "trace_context_option")
_HTTP_JSON, _HTTP_PROTO = 1, 2

_rng = random.SystemRandom()


def _randomId():
    return _rng.getrandbits(64) or 1


def _micros(seconds):
    return int(seconds * 1000000)


@implementer(ISpan)
class ZipkinSpan(ReportedSpan):
    """One Zipkin span; reported to its worker's reporter when finished."""

    def __init__(self, driver, reporter, name, traceIdHigh, traceId, spanId, parentId, kind,
                 sampled, timestamp, shared=False, single=False):
        ReportedSpan.__init__(self, reporter, name, kind, sampled, timestamp)
        self._driver = driver
        self.traceIdHigh = traceIdHigh
        self.traceId = traceId
        self.spanId = spanId
        self.parentId = parentId
        self.shared = shared
        self.single = single

    def setTag(self, name, value):
        # Envoy's Zipkin spans leave out empty tags (node_id, zone).
        if value:
            self.tags[name] = value

    def finished(self, timestamp):
        self.events.append((timestamp, "ss" if self.kind == "SERVER" else "cr"))

    def injectContext(self, requestHeaders, upstreamHost):
        b3.inject(requestHeaders.headers, self.traceIdHigh, self.traceId, self.spanId,
                  self.parentId, self.sampled, self.single)

    def spawnChild(self, operationName, timestamp):
        return ZipkinSpan(self._driver, self._reporter, operationName, self.traceIdHigh,
                          self.traceId, _randomId(), self.spanId, "CLIENT", self.sampled,
                          timestamp, single=self.single)

    def toJson(self, localEndpoint):
        """This span as a Zipkin v2 JSON object (a C{dict})."""
        out = {
            "traceId": b3.traceIdHex(self.traceIdHigh, self.traceId),
            "name": self.name,
            "id": "%016x" % (self.spanId,),
            "kind": self.kind,
            "timestamp": _micros(self.timestamp),
            "duration": _micros(max(0.0, self.end - self.timestamp)),
            "localEndpoint": localEndpoint,
            "tags": self.tags,
            "annotations": [{"timestamp": _micros(t), "value": v}
                            for t, v in sorted(self.events, key=lambda a: a[0])],
        }
        if self.parentId is not None:
            out["parentId"] = "%016x" % (self.parentId,)
        if self.shared:
            out["shared"] = True
        return out

    def fill(self, message, localEndpoint):
        """
        Write this span into a C{zipkin.proto3.Span} as Envoy 1.40 does:
        the trace id big-endian, but the span and parent ids in the host's
        byte order (little-endian), so that a collector shows them
        byte-reversed against the B3 headers; txenvoy's reports join with
        Envoy's that way.
        """
        message.trace_id = (self.traceIdHigh.to_bytes(8, "big") if self.traceIdHigh else b""
                            ) + self.traceId.to_bytes(8, "big")
        if self.parentId is not None:
            message.parent_id = self.parentId.to_bytes(8, "little")
        message.id = self.spanId.to_bytes(8, "little")
        message.kind = zipkin_proto.KINDS[self.kind]
        message.name = self.name
        message.timestamp = _micros(self.timestamp)
        message.duration = _micros(max(0.0, self.end - self.timestamp))
        message.local_endpoint.CopyFrom(localEndpoint)
        for timestamp, value in sorted(self.events, key=lambda a: a[0]):
            annotation = message.annotations.add()
            annotation.timestamp = _micros(timestamp)
            annotation.value = value
        for name, value in self.tags.items():
            message.tags[name] = value
        if self.shared:
            message.shared = True


def _encodeJson(endpoint, spans):
    return json.dumps([s.toJson(endpoint) for s in spans], separators=(",", ":")).encode("utf-8")


def _encodeProto(endpoint, spans):
    message = zipkin_proto.ListOfSpans()
    for span in spans:
        span.fill(message.spans.add(), endpoint)
    return message.SerializeToString()


@implementer(ITracerDriver)
class ZipkinDriver:
    """
    The compiled C{ZipkinConfig}: starts spans, and owns one reporter per
    worker.
    """

    def __init__(self, collectorCluster, collectorEndpoint, snapshot, traceId128=False,
                 sharedSpanContext=True, collectorHostname="", serviceName="",
                 localAddress=None, proto=False):
        self.collectorCluster = collectorCluster
        self.collectorEndpoint = collectorEndpoint
        self.traceId128 = traceId128
        self.sharedSpanContext = sharedSpanContext
        self.collectorHostname = collectorHostname
        self._snapshot = snapshot
        address = localAddress or machineAddress()
        endpoint = {"ipv4": address, "port": 0}
        if serviceName:
            endpoint["serviceName"] = serviceName
        self.localEndpoint = endpoint
        self.proto = proto
        if proto:
            self.protoEndpoint = zipkin_proto.Endpoint(service_name=serviceName)
            if ":" in address:
                self.protoEndpoint.ipv6 = socket.inet_pton(socket.AF_INET6, address)
            else:
                self.protoEndpoint.ipv4 = socket.inet_aton(address)

    def _makeReporter(self, dispatcher):
        snapshot = self._snapshot()
        stats = StatsStruct(dispatcher.stats, "tracing.zipkin.", ZIPKIN_STATS)
        collector = HttpCollector(
            dispatcher, self.collectorCluster, self.collectorEndpoint,
            b"application/x-protobuf" if self.proto else b"application/json",
            self.collectorHostname)
        # The reporter encodes with the endpoint, not through this driver,
        # which holds it: no reference cycle outlives a replaced config.
        encode = (functools.partial(_encodeProto, self.protoEndpoint) if self.proto
                  else functools.partial(_encodeJson, self.localEndpoint))
        return BatchReporter(
            dispatcher.reactor, collector, encode, stats,
            flushInterval=snapshot.getInteger("tracing.zipkin.flush_interval_ms", 5000) / 1000.0,
            minFlushSpans=max(1, snapshot.getInteger("tracing.zipkin.min_flush_spans", 5)))

    #: C{reporterFor(dispatcher)}: that worker's L{BatchReporter}.
    reporterFor = perWorkerMethod(_makeReporter)

    def encode(self, spans):
        """A report body: Zipkin v2 JSON, a list of spans."""
        return _encodeJson(self.localEndpoint, spans)

    def encodeProto(self, spans):
        """A report body: a serialized C{zipkin.proto3.ListOfSpans}."""
        return _encodeProto(self.protoEndpoint, spans)

    def startSpan(self, dispatcher, requestHeaders, streamInfo, operationName, traced, egress,
                  timestamp):
        try:
            context = b3.extract(requestHeaders.headers)
        except b3.B3Error:
            # Envoy's tracer gives up on a malformed context: no span.
            return None
        reporter = self.reporterFor(dispatcher)
        sampled = traced if context.sampled is None else context.sampled
        # With spawn_upstream_span the router's span is the CLIENT one, and
        # Envoy makes the connection manager's span SERVER in both
        # directions.
        kind = "CLIENT" if egress else "SERVER"
        # Envoy's Zipkin spans are named after the host until a decorator
        # renames them.
        operationName = (requestHeaders.authority or b"").decode("latin-1")
        if context.traceId is None:
            spanId = _randomId()
            high = _randomId() if self.traceId128 else 0
            return ZipkinSpan(self, reporter, operationName, high, spanId, spanId, None, kind,
                              sampled, timestamp, shared=self.sharedSpanContext and not egress,
                              single=context.single)
        if self.sharedSpanContext and not egress:
            return ZipkinSpan(self, reporter, operationName, context.traceIdHigh,
                              context.traceId, context.spanId, context.parentId, kind, sampled,
                              timestamp, shared=True, single=context.single)
        return ZipkinSpan(self, reporter, operationName, context.traceIdHigh, context.traceId,
                          _randomId(), context.spanId, kind, sampled, timestamp,
                          single=context.single)


@extension(Category.TRACER, "envoy.config.trace.v3.ZipkinConfig", "envoy.tracers.zipkin",
           fields=_FIELDS)
def createZipkinDriver(message, context):
    """Build a L{ZipkinDriver} from an C{envoy.config.trace.v3.ZipkinConfig}."""
    path = context.path + ".typed_config"
    if message.collector_endpoint_version not in (0, _HTTP_JSON, _HTTP_PROTO):
        raise UnsupportedField(path + ".collector_endpoint_version",
                               "only HTTP_JSON and HTTP_PROTO")
    if message.trace_context_option != 0:
        raise UnsupportedField(path + ".trace_context_option", "only USE_B3")
    if not message.collector_cluster:
        raise ConfigError("%s.collector_cluster: value length must be at least 1 characters"
                          % (path,))
    if not message.collector_endpoint:
        raise ConfigError("%s.collector_endpoint: value length must be at least 1 characters"
                          % (path,))
    checkCollectorCluster(context, message.collector_cluster, path + ".collector_cluster")
    shared = (message.shared_span_context.value if message.HasField("shared_span_context")
              else True)
    serviceName = context.bootstrap.node.cluster if context.bootstrap is not None else ""
    return ZipkinDriver(message.collector_cluster, message.collector_endpoint,
                        snapshotSource(context), traceId128=message.trace_id_128bit,
                        sharedSpanContext=shared, collectorHostname=message.collector_hostname,
                        serviceName=serviceName,
                        proto=message.collector_endpoint_version == _HTTP_PROTO)
