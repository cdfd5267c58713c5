# -*- test-case-name: tests.tracing.test_w3c -*-
"""
W3C trace context (C{traceparent}, C{tracestate}), read and written as
Envoy's OpenTelemetry tracer does: C{00-<32 hex trace id>-<16 hex parent
id>-<2 hex flags>}; a malformed or all-zero context gets no span at all
(the request goes on untraced, its header untouched), and the upstream
request of a traced one always carries both headers, C{tracestate} empty
when there is none.
"""


class TraceParentError(ValueError):
    """The request's C{traceparent} cannot be read."""

_HEX = frozenset(b"0123456789abcdef")


class TraceParent:
    """
    A caller's context.

    @ivar traceId: 16 bytes.
    @ivar spanId: 8 bytes, the caller's span.
    @ivar sampled: the sampled flag.
    @ivar traceState: the C{tracestate} text, or C{""}.
    """

    def __init__(self, traceId, spanId, sampled, traceState=""):
        self.traceId = traceId
        self.spanId = spanId
        self.sampled = sampled
        self.traceState = traceState


def extract(headers):
    """
    @param headers: the request's L{txenvoy.http.headers.HeaderMap}.
    @return: a L{TraceParent}, or C{None} when there is none.
    @raise TraceParentError: when it cannot be read.
    """
    value = headers.get(b"traceparent")
    if value is None:
        return None
    parts = value.split(b"-")
    if len(parts) < 4:
        raise TraceParentError(value)
    version, trace, span, flags = parts[:4]
    if (len(version) != 2 or version == b"ff" or len(trace) != 32 or len(span) != 16
            or len(flags) != 2 or (version == b"00" and len(parts) != 4)
            or not _HEX.issuperset(version + trace + span + flags)
            or trace == b"0" * 32 or span == b"0" * 16):
        raise TraceParentError(value)
    state = headers.get(b"tracestate") or b""
    return TraceParent(bytes.fromhex(trace.decode()), bytes.fromhex(span.decode()),
                       bool(int(flags, 16) & 1), state.decode("latin-1"))


def inject(headers, traceId, spanId, sampled, traceState):
    """
    Write C{traceparent} and C{tracestate} into an upstream request, after
    its other headers as Envoy does.
    """
    headers.remove(b"traceparent")
    headers.add(b"traceparent", b"00-%s-%s-%s" % (
        traceId.hex().encode(), spanId.hex().encode(), b"01" if sampled else b"00"))
    headers.remove(b"tracestate")
    headers.add(b"tracestate", traceState.encode("latin-1"))
