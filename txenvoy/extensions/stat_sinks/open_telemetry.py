# -*- test-case-name: tests.extensions.stat_sinks.test_open_telemetry -*-
"""
C{envoy.stat_sinks.open_telemetry}: every stats flush exported as an OTLP
C{ExportMetricsServiceRequest} over gRPC (through grpcio: see
L{txenvoy.grpc.async_client}), as Envoy's sink builds it.

Each stat that was ever written is one metric, named after its
tag-extracted name (C{use_tag_extracted_name}, default true) with its tags
as attributes (C{emit_tags_as_attributes}, default true) in key order:
gauges as integer gauges; counters as monotonic sums, cumulative unless
C{report_counters_as_deltas}; histograms with Envoy's default bucket bounds,
cumulative unless C{report_histograms_as_deltas}. The resource carries the
C{telemetry.sdk.*} attributes. A flush made while the previous export is
still in flight is dropped, so a slow collector never piles requests up.
One difference: Envoy 1.40 writes a sum's C{start_time_unix_nano} in
microseconds; txenvoy writes the server's start in nanoseconds, as OTLP
defines it.
"""

import time

from zope.interface import implementer

from txenvoy.config.registry import Category, extension
from txenvoy.interfaces import IStatsSink
from txenvoy.stats.format import cumulativeCounts
from txenvoy.stats.tags import defaultTagProducer
from txenvoy.grpc.async_client import (
    GrpcCollector,
    MainThreadDispatcher,
    compileEnvoyGrpc,
    mainThreadHosts,
)
from txenvoy.tracing.otlp_protos import requireCurrentOtlpProtos

EXPORT_METHOD = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
_FIELDS = ("grpc_service", "report_counters_as_deltas", "report_histograms_as_deltas",
           "emit_tags_as_attributes", "use_tag_extracted_name", "prefix")
_CUMULATIVE, _DELTA = 2, 1


def _nanos(seconds):
    return int(round(seconds * 1e6)) * 1000


@implementer(IStatsSink)
class OpenTelemetryStatsSink:
    """Builds and exports one OTLP metrics request per flush (main thread)."""

    def __init__(self, collector, tagProducer=None, countersAsDeltas=False,
                 histogramsAsDeltas=False, tagsAsAttributes=True, tagExtractedName=True,
                 prefix="", wallTime=time.time):
        self.collector = collector
        self.tagProducer = tagProducer or defaultTagProducer()
        self.countersAsDeltas = countersAsDeltas
        self.histogramsAsDeltas = histogramsAsDeltas
        self.tagsAsAttributes = tagsAsAttributes
        self.tagExtractedName = tagExtractedName
        self.prefix = prefix + "." if prefix else ""
        self._wallTime = wallTime
        self.startTime = wallTime()
        self._lastCounters = {}
        self.inFlight = False

    def _name(self, name, metric):
        extracted, tags = self.tagProducer.produceTags(name)
        metric.name = self.prefix + (extracted if self.tagExtractedName else name)
        return sorted(tags) if self.tagsAsAttributes else ()

    @staticmethod
    def _attributes(point, tags):
        for key, value in tags:
            attribute = point.attributes.add()
            attribute.key = key
            attribute.value.string_value = value

    def request(self, snapshot):
        """The C{ExportMetricsServiceRequest} of one flush."""
        from txenvoy import __version__
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2

        now = _nanos(self._wallTime())
        start = _nanos(self.startTime)
        request = metrics_service_pb2.ExportMetricsServiceRequest()
        rm = request.resource_metrics.add()
        for key, value in (("telemetry.sdk.version", __version__),
                           ("telemetry.sdk.language", "python"),
                           ("telemetry.sdk.name", "envoy")):
            attribute = rm.resource.attributes.add()
            attribute.key = key
            attribute.value.string_value = value
        metrics = rm.scope_metrics.add().metrics
        used = snapshot.used
        for name in sorted(snapshot.gauges):
            if name in used:
                metric = metrics.add()
                tags = self._name(name, metric)
                point = metric.gauge.data_points.add()
                point.time_unix_nano = now
                point.as_int = snapshot.gauges[name]
                self._attributes(point, tags)
        last = self._lastCounters
        current = {}
        for name in sorted(snapshot.counters):
            value = current[name] = snapshot.counters[name]
            if name not in used:
                continue
            metric = metrics.add()
            tags = self._name(name, metric)
            metric.sum.is_monotonic = True
            point = metric.sum.data_points.add()
            point.start_time_unix_nano = start
            point.time_unix_nano = now
            if self.countersAsDeltas:
                metric.sum.aggregation_temporality = _DELTA
                delta = value - last.get(name, 0)
                point.as_int = delta if delta >= 0 else value
            else:
                metric.sum.aggregation_temporality = _CUMULATIVE
                point.as_int = value
            self._attributes(point, tags)
        self._lastCounters = current
        for name in sorted(snapshot.histograms):
            h = snapshot.histograms[name]
            if not h.used:
                continue
            metric = metrics.add()
            tags = self._name(name, metric)
            point = metric.histogram.data_points.add()
            point.start_time_unix_nano = start
            point.time_unix_nano = now
            buckets = h.intervalBuckets if self.histogramsAsDeltas else h.buckets
            metric.histogram.aggregation_temporality = (
                _DELTA if self.histogramsAsDeltas else _CUMULATIVE)
            count = sum(buckets.values())
            point.count = count
            point.sum = sum(v * c for v, c in buckets.items())
            bounds = snapshot.bucketsFor(name)
            point.explicit_bounds.extend(float(b) for b in bounds)
            below = 0
            for cumulative in cumulativeCounts(buckets, bounds):
                point.bucket_counts.append(cumulative - below)
                below = cumulative
            point.bucket_counts.append(count - below)
            self._attributes(point, tags)
        return request

    def flush(self, snapshot):
        """Export this flush, unless the last one is still on its way."""
        request = self.request(snapshot)
        if self.inFlight:
            return
        address = self.collector.host()
        if address is None:
            return
        self.inFlight = True
        self.collector.post(address, request.SerializeToString()).addBoth(self._done)

    def _done(self, result):
        self.inFlight = False

    def stop(self):
        """Close the collector channel."""
        self.collector.close()


def _bool(message, field, default):
    return getattr(message, field).value if message.HasField(field) else default


@extension(Category.STATS_SINK, "envoy.extensions.stat_sinks.open_telemetry.v3.SinkConfig",
           "envoy.stat_sinks.open_telemetry", fields=_FIELDS)
def createOpenTelemetryStatsSink(message, context):
    """Build an L{OpenTelemetryStatsSink} from a C{SinkConfig}."""
    path = context.configPath
    requireCurrentOtlpProtos(path)
    target = compileEnvoyGrpc(message.grpc_service, path + ".grpc_service", context.bootstrap)
    collector = GrpcCollector(MainThreadDispatcher(context.reactor), target.clusterName,
                              EXPORT_METHOD, target.timeout, target.metadata,
                              userAgent="txenvoy-stats-sink", authority=target.authority)
    collector.host = mainThreadHosts(context.clusterManager, target.clusterName)
    server = getattr(context, "server", None)
    return OpenTelemetryStatsSink(
        collector, getattr(server, "tagProducer", None),
        countersAsDeltas=message.report_counters_as_deltas,
        histogramsAsDeltas=message.report_histograms_as_deltas,
        tagsAsAttributes=_bool(message, "emit_tags_as_attributes", True),
        tagExtractedName=_bool(message, "use_tag_extracted_name", True),
        prefix=message.prefix)
