# -*- test-case-name: tests.tracing.test_otlp_protos -*-
"""
The check that the installed OTLP messages are the current ones.

Two dependencies ship the same files: C{opentelemetry-proto} (current) and
C{xds-protos} (an older copy, from before the C{scope_*} fields). Whichever
pip installs last wins. txenvoy's OpenTelemetry tracer, access logger and
stats sink need the current messages; with the old ones they refuse their
config with how to fix it rather than fail on the first export.
"""

from txenvoy.config.errors import ConfigError

#: What to run when the old copy won.
FIX = "pip install --force-reinstall --no-deps opentelemetry-proto"


def currentOtlpProtos():
    """@return: whether the installed OTLP messages have the C{scope_*} fields."""
    from opentelemetry.proto.logs.v1 import logs_pb2
    from opentelemetry.proto.metrics.v1 import metrics_pb2
    from opentelemetry.proto.trace.v1 import trace_pb2
    return all(name in message.DESCRIPTOR.fields_by_name for message, name in (
        (trace_pb2.ResourceSpans, "scope_spans"),
        (logs_pb2.ResourceLogs, "scope_logs"),
        (metrics_pb2.ResourceMetrics, "scope_metrics")))


def requireCurrentOtlpProtos(path):
    """
    @param path: the field path of the config that needs them.
    @raise ConfigError: when the installed OTLP messages are xds-protos'
        older copy.
    """
    if not currentOtlpProtos():
        raise ConfigError(
            "%s: the installed opentelemetry.proto modules are an older copy (from "
            "xds-protos) without the scope_* fields; run '%s'" % (path, FIX))
