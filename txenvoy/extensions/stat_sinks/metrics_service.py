# -*- test-case-name: tests.extensions.stat_sinks.test_metrics_service -*-
"""
C{envoy.stat_sinks.metrics_service}: every stats flush streamed to
Envoy's gRPC metrics service (C{envoy.service.metrics.v3.MetricsService
/StreamMetrics}, client streaming) as Prometheus client-model
C{MetricFamily}s, as Envoy's sink sends them: one message per flush on
one stream, the first naming the node; each stat ever written is a
family of its own, with the flush time in C{timestamp_ms}: counters
(cumulative, or the change since the last flush with
C{report_counters_as_deltas}), gauges, and each histogram's last interval
as a C{SUMMARY} (Envoy's quantiles) and a C{HISTOGRAM} (its bucket
bounds), or one of them (C{histogram_emit_mode}). With
C{emit_tags_as_labels} the names are tag-extracted and the tags labels.

The stream is a grpcio call fed from the main reactor
(L{txenvoy.grpc.streaming.ClientStreamingCall}); a flush made while grpcio
still holds four earlier ones is dropped, so a slow service never piles
flushes up, and a stream that ended is opened again at the next flush.
"""

import math
import time

from zope.interface import implementer

from txenvoy.config.node import describeNode
from txenvoy.config.registry import Category, extension
from txenvoy.grpc.async_client import compileEnvoyGrpc, mainThreadHosts
from txenvoy.grpc.streaming import ClientStreamingCall, openChannel
from txenvoy.interfaces import IStatsSink
from txenvoy.stats import metrics_service_protos as protos
from txenvoy.stats.format import SUPPORTED_QUANTILES, cumulativeCounts, quantiles
from txenvoy.stats.tags import defaultTagProducer

MAX_QUEUED = 4
_FIELDS = ("grpc_service", "transport_api_version", "report_counters_as_deltas",
           "emit_tags_as_labels", "histogram_emit_mode")
_BOTH, _SUMMARY_ONLY, _HISTOGRAM_ONLY = 0, 1, 2


@implementer(IStatsSink)
class MetricsServiceSink:
    """Builds one C{StreamMetricsMessage} per flush and queues it on the stream."""

    def __init__(self, host, openCall, node, tagProducer=None, countersAsDeltas=False,
                 tagsAsLabels=False, histogramMode=_BOTH, wallTime=time.time):
        self._host = host
        self._openCall = openCall
        self._node = node
        self.tagProducer = tagProducer or defaultTagProducer()
        self.countersAsDeltas = countersAsDeltas
        self.tagsAsLabels = tagsAsLabels
        self.histogramMode = histogramMode
        self._wallTime = wallTime
        self._lastCounters = {}
        self._call = None
        self.dropped = 0

    def _family(self, message, name, kind, now):
        family = message.envoy_metrics.add()
        family.type = kind
        metric = family.metric.add()
        metric.timestamp_ms = now
        if self.tagsAsLabels:
            extracted, tags = self.tagProducer.produceTags(name)
            family.name = extracted
            for key, value in tags:
                label = metric.label.add()
                label.name, label.value = key, value
        else:
            family.name = name
        return metric

    def message(self, snapshot):
        """The C{StreamMetricsMessage} of one flush (without identifier)."""
        message = protos.StreamMetricsMessage()
        now = int(self._wallTime() * 1000)
        used = snapshot.used
        current = {}
        for name in sorted(snapshot.counters):
            value = current[name] = snapshot.counters[name]
            if name not in used:
                continue
            if self.countersAsDeltas:
                delta = value - self._lastCounters.get(name, 0)
                value = delta if delta >= 0 else value
            self._family(message, name, protos.COUNTER, now).counter.value = value
        self._lastCounters = current
        for name in sorted(snapshot.gauges):
            if name in used:
                self._family(message, name, protos.GAUGE, now).gauge.value = \
                    snapshot.gauges[name]
        for name in sorted(snapshot.histograms):
            h = snapshot.histograms[name]
            if name not in used:
                continue
            buckets = h.intervalBuckets
            count = sum(buckets.values())
            total = sum(v * c for v, c in buckets.items())
            if self.histogramMode != _HISTOGRAM_ONLY:
                summary = self._family(message, name, protos.SUMMARY, now).summary
                summary.sample_count = count
                summary.sample_sum = total
                values = quantiles(buckets) if count else [math.nan] * len(
                    SUPPORTED_QUANTILES)
                for q, value in zip(SUPPORTED_QUANTILES, values):
                    quantile = summary.quantile.add()
                    quantile.quantile = q
                    quantile.value = value
            if self.histogramMode != _SUMMARY_ONLY:
                histogram = self._family(message, name, protos.HISTOGRAM, now).histogram
                histogram.sample_count = count
                histogram.sample_sum = total
                bounds = snapshot.bucketsFor(name)
                for bound, cumulative in zip(bounds, cumulativeCounts(buckets, bounds)):
                    bucket = histogram.bucket.add()
                    bucket.cumulative_count = cumulative
                    bucket.upper_bound = bound
        return message

    def flush(self, snapshot):
        """Queue this flush on the stream, opening one first if needed (main thread)."""
        message = self.message(snapshot)
        call = self._call
        if call is None or not call.active:
            address = self._host()
            if address is None:
                self.dropped += 1
                return
            call = self._call = self._openCall(address)
            call.start(self._onDone(call))
            message.identifier.node = self._node
        elif call.queued() >= MAX_QUEUED:
            self.dropped += 1
            return
        call.send(message)

    def _onDone(self, call):
        def done(code, details, response):
            if self._call is call:
                self._call = None
        return done

    def stop(self):
        if self._call is not None:
            self._call.cancel()
            self._call = None


@extension(Category.STATS_SINK, "envoy.config.metrics.v3.MetricsServiceConfig",
           "envoy.stat_sinks.metrics_service", fields=_FIELDS)
def createMetricsServiceSink(message, context):
    """Build a L{MetricsServiceSink} from a C{MetricsServiceConfig}."""
    path = context.configPath
    target = compileEnvoyGrpc(message.grpc_service, path + ".grpc_service", context.bootstrap)
    reactor = context.reactor

    def openCall(address):
        channel = openChannel(address, userAgent="txenvoy-metrics-service",
                              authority=target.authority)
        return ClientStreamingCall(reactor.callFromThread, channel, protos.METHOD,
                                   metadata=target.metadata)

    bootstrap = context.bootstrap
    nodeBytes = (describeNode(bootstrap.node).SerializeToString() if bootstrap is not None
                 else b"")
    server = getattr(context, "server", None)
    return MetricsServiceSink(
        mainThreadHosts(context.clusterManager, target.clusterName), openCall, nodeBytes,
        getattr(server, "tagProducer", None),
        countersAsDeltas=message.report_counters_as_deltas.value
        if message.HasField("report_counters_as_deltas") else False,
        tagsAsLabels=message.emit_tags_as_labels,
        histogramMode=message.histogram_emit_mode)
