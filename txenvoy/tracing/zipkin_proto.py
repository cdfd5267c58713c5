# -*- test-case-name: tests.tracing.test_zipkin_proto -*-
"""
Zipkin's protobuf span format (C{zipkin.proto3}, the body of
C{collector_endpoint_version: HTTP_PROTO}), built from its descriptor with
the protobuf runtime: no package ships the generated module, and the
messages are small and fixed (Zipkin's C{zipkin2/zipkin.proto}).
"""

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto

#: C{Span.Kind}.
KINDS = {"CLIENT": 1, "SERVER": 2, "PRODUCER": 3, "CONSUMER": 4}


def _field(message, name, number, kind, label=_F.LABEL_OPTIONAL, typeName=None):
    field = message.field.add()
    field.name = name
    field.number = number
    field.type = kind
    field.label = label
    if typeName:
        field.type_name = typeName


def _file():
    proto = descriptor_pb2.FileDescriptorProto()
    proto.name = "zipkin.proto"
    proto.package = "zipkin.proto3"
    proto.syntax = "proto3"

    endpoint = proto.message_type.add()
    endpoint.name = "Endpoint"
    _field(endpoint, "service_name", 1, _F.TYPE_STRING)
    _field(endpoint, "ipv4", 2, _F.TYPE_BYTES)
    _field(endpoint, "ipv6", 3, _F.TYPE_BYTES)
    _field(endpoint, "port", 4, _F.TYPE_INT32)

    annotation = proto.message_type.add()
    annotation.name = "Annotation"
    _field(annotation, "timestamp", 1, _F.TYPE_FIXED64)
    _field(annotation, "value", 2, _F.TYPE_STRING)

    span = proto.message_type.add()
    span.name = "Span"
    kind = span.enum_type.add()
    kind.name = "Kind"
    for name, number in [("SPAN_KIND_UNSPECIFIED", 0)] + sorted(KINDS.items(),
                                                                 key=lambda k: k[1]):
        value = kind.value.add()
        value.name = name
        value.number = number
    tags = span.nested_type.add()
    tags.name = "TagsEntry"
    tags.options.map_entry = True
    _field(tags, "key", 1, _F.TYPE_STRING)
    _field(tags, "value", 2, _F.TYPE_STRING)
    _field(span, "trace_id", 1, _F.TYPE_BYTES)
    _field(span, "parent_id", 2, _F.TYPE_BYTES)
    _field(span, "id", 3, _F.TYPE_BYTES)
    _field(span, "kind", 4, _F.TYPE_ENUM, typeName=".zipkin.proto3.Span.Kind")
    _field(span, "name", 5, _F.TYPE_STRING)
    _field(span, "timestamp", 6, _F.TYPE_FIXED64)
    _field(span, "duration", 7, _F.TYPE_UINT64)
    _field(span, "local_endpoint", 8, _F.TYPE_MESSAGE, typeName=".zipkin.proto3.Endpoint")
    _field(span, "remote_endpoint", 9, _F.TYPE_MESSAGE, typeName=".zipkin.proto3.Endpoint")
    _field(span, "annotations", 10, _F.TYPE_MESSAGE, _F.LABEL_REPEATED,
           ".zipkin.proto3.Annotation")
    _field(span, "tags", 11, _F.TYPE_MESSAGE, _F.LABEL_REPEATED,
           ".zipkin.proto3.Span.TagsEntry")
    _field(span, "debug", 12, _F.TYPE_BOOL)
    _field(span, "shared", 13, _F.TYPE_BOOL)

    spans = proto.message_type.add()
    spans.name = "ListOfSpans"
    _field(spans, "spans", 1, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, ".zipkin.proto3.Span")
    return proto


def _classes():
    # A pool of its own: nothing else registers zipkin.proto3 in the
    # default one, and a second copy there would clash.
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_file())
    return {name: message_factory.GetMessageClass(
        pool.FindMessageTypeByName("zipkin.proto3." + name))
        for name in ("Endpoint", "Annotation", "Span", "ListOfSpans")}


_CLASSES = _classes()
Endpoint = _CLASSES["Endpoint"]
Annotation = _CLASSES["Annotation"]
Span = _CLASSES["Span"]
ListOfSpans = _CLASSES["ListOfSpans"]
