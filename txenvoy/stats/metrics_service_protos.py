# -*- test-case-name: tests.extensions.stat_sinks.test_metrics_service -*-
"""
The messages of Envoy's gRPC metrics service
(C{envoy.service.metrics.v3.MetricsService/StreamMetrics}) and of the
Prometheus client model they carry (C{io.prometheus.client.MetricFamily}),
built from their descriptors with the protobuf runtime: the xDS protos
package ships neither. The identifier's C{node} is declared as bytes
holding a serialized C{envoy.config.core.v3.Node}, which is the same wire
encoding as the message field.
"""

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto

#: C{io.prometheus.client.MetricType}.
COUNTER, GAUGE, SUMMARY, UNTYPED, HISTOGRAM = 0, 1, 2, 3, 4

METHOD = "/envoy.service.metrics.v3.MetricsService/StreamMetrics"


def _message(proto, name, fields):
    message = proto.message_type.add()
    message.name = name
    for fieldName, number, kind, label, typeName in fields:
        field = message.field.add()
        field.name = fieldName
        field.number = number
        field.type = kind
        field.label = label
        if typeName:
            field.type_name = typeName
    return message


def _fields(*specs):
    out = []
    for spec in specs:
        name, number, kind = spec[:3]
        repeated = len(spec) > 3 and spec[3]
        typeName = spec[4] if len(spec) > 4 else None
        out.append((name, number, kind, _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL,
                    typeName))
    return out


def _prometheus():
    proto = descriptor_pb2.FileDescriptorProto(name="io/prometheus/client/metrics.proto",
                                               package="io.prometheus.client",
                                               syntax="proto2")
    kind = proto.enum_type.add()
    kind.name = "MetricType"
    for name, number in (("COUNTER", 0), ("GAUGE", 1), ("SUMMARY", 2), ("UNTYPED", 3),
                         ("HISTOGRAM", 4)):
        value = kind.value.add()
        value.name, value.number = name, number
    p = ".io.prometheus.client."
    _message(proto, "LabelPair", _fields(("name", 1, _F.TYPE_STRING),
                                         ("value", 2, _F.TYPE_STRING)))
    _message(proto, "Gauge", _fields(("value", 1, _F.TYPE_DOUBLE)))
    _message(proto, "Counter", _fields(("value", 1, _F.TYPE_DOUBLE)))
    _message(proto, "Quantile", _fields(("quantile", 1, _F.TYPE_DOUBLE),
                                        ("value", 2, _F.TYPE_DOUBLE)))
    _message(proto, "Summary", _fields(("sample_count", 1, _F.TYPE_UINT64),
                                       ("sample_sum", 2, _F.TYPE_DOUBLE),
                                       ("quantile", 3, _F.TYPE_MESSAGE, True, p + "Quantile")))
    _message(proto, "Untyped", _fields(("value", 1, _F.TYPE_DOUBLE)))
    _message(proto, "Bucket", _fields(("cumulative_count", 1, _F.TYPE_UINT64),
                                      ("upper_bound", 2, _F.TYPE_DOUBLE)))
    _message(proto, "Histogram", _fields(("sample_count", 1, _F.TYPE_UINT64),
                                         ("sample_sum", 2, _F.TYPE_DOUBLE),
                                         ("bucket", 3, _F.TYPE_MESSAGE, True, p + "Bucket")))
    _message(proto, "Metric", _fields(("label", 1, _F.TYPE_MESSAGE, True, p + "LabelPair"),
                                      ("gauge", 2, _F.TYPE_MESSAGE, False, p + "Gauge"),
                                      ("counter", 3, _F.TYPE_MESSAGE, False, p + "Counter"),
                                      ("summary", 4, _F.TYPE_MESSAGE, False, p + "Summary"),
                                      ("untyped", 5, _F.TYPE_MESSAGE, False, p + "Untyped"),
                                      ("timestamp_ms", 6, _F.TYPE_INT64),
                                      ("histogram", 7, _F.TYPE_MESSAGE, False,
                                       p + "Histogram")))
    _message(proto, "MetricFamily", _fields(
        ("name", 1, _F.TYPE_STRING), ("help", 2, _F.TYPE_STRING),
        ("type", 3, _F.TYPE_ENUM, False, p + "MetricType"),
        ("metric", 4, _F.TYPE_MESSAGE, True, p + "Metric")))
    return proto


def _service():
    proto = descriptor_pb2.FileDescriptorProto(name="envoy/service/metrics/v3/metrics.proto",
                                               package="envoy.service.metrics.v3",
                                               syntax="proto3")
    proto.dependency.append("io/prometheus/client/metrics.proto")
    message = _message(proto, "StreamMetricsMessage", _fields(
        ("identifier", 1, _F.TYPE_MESSAGE, False,
         ".envoy.service.metrics.v3.StreamMetricsMessage.Identifier"),
        ("envoy_metrics", 2, _F.TYPE_MESSAGE, True, ".io.prometheus.client.MetricFamily")))
    identifier = message.nested_type.add()
    identifier.name = "Identifier"
    field = identifier.field.add()
    field.name, field.number, field.type, field.label = (
        "node", 1, _F.TYPE_BYTES, _F.LABEL_OPTIONAL)
    _message(proto, "StreamMetricsResponse", [])
    return proto


def _classes():
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_prometheus())
    pool.Add(_service())
    names = {"MetricFamily": "io.prometheus.client.MetricFamily",
             "StreamMetricsMessage": "envoy.service.metrics.v3.StreamMetricsMessage",
             "StreamMetricsResponse": "envoy.service.metrics.v3.StreamMetricsResponse"}
    return {k: message_factory.GetMessageClass(pool.FindMessageTypeByName(v))
            for k, v in names.items()}


_CLASSES = _classes()
MetricFamily = _CLASSES["MetricFamily"]
StreamMetricsMessage = _CLASSES["StreamMetricsMessage"]
StreamMetricsResponse = _CLASSES["StreamMetricsResponse"]
