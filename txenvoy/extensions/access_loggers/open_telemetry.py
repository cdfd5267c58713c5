# -*- test-case-name: tests.extensions.access_loggers.test_open_telemetry -*-
"""
C{envoy.access_loggers.open_telemetry}: one OTLP log record per finished
request or connection, exported to an OpenTelemetry collector over gRPC
(C{LogsService/Export}, through grpcio as the tracer's export is: see
L{txenvoy.grpc.async_client}).

As Envoy's: the resource carries the built-in labels C{log_name},
C{zone_name}, C{cluster_name} and C{node_name} (unless
C{disable_builtin_labels}) then C{resource_attributes}; each record has
the request's start time, its C{body} and C{attributes} formatted with the
substitution formatter (a missing value is C{-}). Records are formatted
on the worker, kept in a buffer shared by the workers (under a lock, as
the file access logs' buffers are) and sent by the main thread every
C{buffer_flush_interval} (default 1 s) or once C{buffer_size_bytes}
(default 16384) are waiting. A collector that is down or slow costs
bounded memory: past four times C{buffer_size_bytes} waiting, or four
exports in flight, records are dropped and counted in
C{access_logs.open_telemetry_access_log.logs_dropped}; every record taken
counts in C{logs_written}.
"""

from zope.interface import implementer

from txenvoy.accesslog.buffered import RecordBuffer
from txenvoy.config.errors import UnsupportedField
from txenvoy.config.registry import Category, extension
from txenvoy.extensions.access_loggers.grpc_als import compileCommonConfig
from txenvoy.formatter import substitution as _formatter
from txenvoy.interfaces import IAccessLogger
from txenvoy.grpc.async_client import (
    GrpcCollector,
    MainThreadDispatcher,
    mainThreadHosts,
)
from txenvoy.tracing.otlp_protos import requireCurrentOtlpProtos

EXPORT_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
STAT_PREFIX = "access_logs.open_telemetry_access_log."
MAX_IN_FLIGHT = 4

_FIELDS = ("common_config", "disable_builtin_labels", "resource_attributes", "body",
           "attributes", "stat_prefix")
def _nanos(seconds):
    # Envoy's clock: whole microseconds.
    return int(round(seconds * 1e6)) * 1000


@implementer(IAccessLogger)
class OpenTelemetryAccessLogger:
    """
    Formats records on the calling thread; the main thread exports them.

    @ivar resource: C{[(key, AnyValue)]} of the records' resource.
    """

    def __init__(self, reactor, collector, resource, body, attributes, stats,
                 flushInterval=1.0, bufferSizeBytes=16384):
        self.collector = collector
        self.resource = resource
        self._body = body
        self._attributes = attributes
        self.buffer = RecordBuffer(
            reactor, self.flush, stats.counter(STAT_PREFIX + "logs_written"),
            stats.counter(STAT_PREFIX + "logs_dropped"), flushInterval, bufferSizeBytes,
            4 * bufferSizeBytes)
        self.inFlight = 0

    def start(self):
        """Start the flush timer on the main reactor."""
        self.buffer.start()

    def stop(self):
        self.buffer.stop()
        self.collector.close()

    def log(self, streamInfo, requestHeaders=None, responseHeaders=None,
            responseTrailers=None):
        """Format one record and buffer it (any worker thread; never blocks)."""
        from opentelemetry.proto.logs.v1 import logs_pb2

        record = logs_pb2.LogRecord()
        record.time_unix_nano = _nanos(streamInfo.startTime)
        if self._body is not None:
            record.body.string_value = self._body.format(
                streamInfo, requestHeaders, responseHeaders, responseTrailers)
        for key, formatter in self._attributes:
            attribute = record.attributes.add()
            attribute.key = key
            attribute.value.string_value = formatter.format(
                streamInfo, requestHeaders, responseHeaders, responseTrailers)
        self.buffer.add(record, record.ByteSize())

    def flush(self):
        """Export what is buffered (main thread)."""
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

        records = self.buffer.take()
        if not records:
            return
        address = self.collector.host()
        if address is None or self.inFlight >= MAX_IN_FLIGHT:
            self.buffer.drop(len(records))
            return
        request = logs_service_pb2.ExportLogsServiceRequest()
        resourceLogs = request.resource_logs.add()
        for key, value in self.resource:
            attribute = resourceLogs.resource.attributes.add()
            attribute.key = key
            attribute.value.CopyFrom(value)
        resourceLogs.scope_logs.add().log_records.extend(records)
        self.inFlight += 1
        d = self.collector.post(address, request.SerializeToString())
        d.addBoth(self._done)

    def _done(self, result):
        self.inFlight -= 1


@extension(Category.ACCESS_LOGGER,
           "envoy.extensions.access_loggers.open_telemetry.v3.OpenTelemetryAccessLogConfig",
           "envoy.access_loggers.open_telemetry", fields=_FIELDS)
def createOpenTelemetryAccessLogger(message, context):
    """Build an L{OpenTelemetryAccessLogger}."""
    from opentelemetry.proto.common.v1 import common_pb2

    path = context.path + ".typed_config"
    requireCurrentOtlpProtos(path)
    common = message.common_config
    target, flush, size = compileCommonConfig(common, path + ".common_config", context)
    bootstrap = context.bootstrap
    node = bootstrap.node if bootstrap is not None else None
    resource = []
    if not message.disable_builtin_labels:
        for key, value in (("log_name", common.log_name),
                           ("zone_name", node.locality.zone if node else ""),
                           ("cluster_name", node.cluster if node else ""),
                           ("node_name", node.id if node else "")):
            resource.append((key, common_pb2.AnyValue(string_value=value)))
    for kv in message.resource_attributes.values:
        value = common_pb2.AnyValue()
        value.CopyFrom(kv.value)
        resource.append((kv.key, value))
    body = None
    if message.HasField("body"):
        if message.body.WhichOneof("value") != "string_value":
            raise UnsupportedField(path + ".body", "only string_value")
        body = _formatter.compileFormat(message.body.string_value, path=path + ".body")
    attributes = []
    for i, kv in enumerate(message.attributes.values):
        apath = "%s.attributes.values[%d]" % (path, i)
        if kv.value.WhichOneof("value") != "string_value":
            raise UnsupportedField(apath + ".value", "only string_value")
        attributes.append((kv.key, _formatter.compileFormat(kv.value.string_value,
                                                            path=apath + ".value")))
    reactor = context.reactor
    collector = GrpcCollector(MainThreadDispatcher(reactor), target.clusterName, EXPORT_METHOD,
                              target.timeout, target.metadata, userAgent="txenvoy-access-log",
                              authority=target.authority)
    collector.host = mainThreadHosts(context.clusterManager, target.clusterName)
    logger = OpenTelemetryAccessLogger(reactor, collector, tuple(resource), body,
                                       tuple(attributes), context.stats.shard("main_thread")
                                       if hasattr(context.stats, "shard") else context.stats,
                                       flushInterval=flush, bufferSizeBytes=size)
    if not context.validateOnly:
        logger.start()
    return logger
