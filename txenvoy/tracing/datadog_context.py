# -*- test-case-name: tests.tracing.test_datadog_context -*-
"""
Datadog trace context, read and written as Envoy's Datadog tracer
(dd-trace-cpp) does with its default propagation styles: the Datadog
headers (C{x-datadog-trace-id}, C{x-datadog-parent-id},
C{x-datadog-sampling-priority}, C{x-datadog-origin}, C{x-datadog-tags})
first, then W3C C{traceparent}/C{tracestate}; the upstream request carries
both.

Datadog trace ids are 64-bit; the upper half of a 128-bit trace id travels
as the C{_dd.p.tid} trace tag. A context that cannot be read is no context
(Envoy then starts a new trace).
"""

#: Sampling priorities (dd-trace-cpp's C{SamplingPriority}).
USER_DROP, AUTO_DROP, AUTO_KEEP, USER_KEEP = -1, 0, 1, 2

_HEX = frozenset(b"0123456789abcdef")
_MAX_TAGS_LENGTH = 512


class DatadogContext:
    """
    What the request carried.

    @ivar traceId: the lower 64 bits of the trace id.
    @ivar traceIdHigh: the upper 64 bits, or 0.
    @ivar parentId: the caller's span id.
    @ivar priority: the sampling priority, or C{None} (not stated).
    @ivar origin: C{x-datadog-origin}, or C{None}.
    @ivar traceTags: C{[(name, value)]}, the C{_dd.p.*} trace tags in order.
    @ivar w3cParentId: for a W3C context, the C{p:} member of its C{dd}
        C{tracestate} entry (the last Datadog span), C{"0000000000000000"}
        when absent; C{None} for a Datadog-header context.
    @ivar otherTraceState: other vendors' C{tracestate} entries, kept.
    """

    def __init__(self, traceId, parentId, priority=None, origin=None, traceTags=(),
                 traceIdHigh=0, w3cParentId=None, otherTraceState=""):
        self.traceId = traceId
        self.traceIdHigh = traceIdHigh
        self.parentId = parentId
        self.priority = priority
        self.origin = origin
        self.traceTags = list(traceTags)
        self.w3cParentId = w3cParentId
        self.otherTraceState = otherTraceState


def _decimal(value):
    if value is None or not value.isdigit():
        return None
    number = int(value)
    return number if number < 1 << 64 else None


def _parseTraceTags(value):
    """C{x-datadog-tags}: C{k=v,k=v}; only C{_dd.p.*} tags are propagated."""
    if value is None or len(value) > _MAX_TAGS_LENGTH:
        return []
    tags = []
    for item in value.decode("latin-1").split(","):
        name, sep, tagValue = item.partition("=")
        name = name.strip()
        if sep and name.startswith("_dd.p."):
            tags.append((name, tagValue.strip()))
    return tags


def _extractDatadog(headers):
    get = headers.get
    traceId = _decimal(get(b"x-datadog-trace-id"))
    if not traceId:
        return None
    parentId = _decimal(get(b"x-datadog-parent-id")) or 0
    priority = get(b"x-datadog-sampling-priority")
    try:
        priority = int(priority) if priority is not None else None
    except ValueError:
        priority = None
    origin = get(b"x-datadog-origin")
    tags = _parseTraceTags(get(b"x-datadog-tags"))
    high = 0
    for name, value in tags:
        if name == "_dd.p.tid":
            try:
                high = int(value, 16)
            except ValueError:
                high = 0
    return DatadogContext(traceId, parentId, priority,
                          origin.decode("latin-1") if origin is not None else None, tags,
                          traceIdHigh=high)


def _extractW3C(headers):
    value = headers.get(b"traceparent")
    if value is None:
        return None
    parts = value.strip().split(b"-")
    if len(parts) < 4:
        return None
    version, trace, span, flags = parts[:4]
    if (len(version) != 2 or version == b"ff" or len(trace) != 32 or len(span) != 16
            or len(flags) != 2 or (version == b"00" and len(parts) != 4)
            or not _HEX.issuperset(version + trace + span + flags)):
        return None
    high, low, parent = int(trace[:16], 16), int(trace[16:], 16), int(span, 16)
    if not (high or low) or not parent:
        return None
    sampled = bool(int(flags, 16) & 1)
    priority, origin, tags, ddParent, others = None, None, [], "0000000000000000", []
    state = (headers.get(b"tracestate") or b"").decode("latin-1")
    for entry in state.split(","):
        entry = entry.strip()
        if not entry:
            continue
        if not entry.startswith("dd="):
            others.append(entry)
            continue
        for member in entry[3:].split(";"):
            key, _, memberValue = member.partition(":")
            if key == "s":
                try:
                    priority = int(memberValue)
                except ValueError:
                    priority = None
            elif key == "o":
                origin = memberValue.replace("~", "=")
            elif key == "p":
                ddParent = memberValue
            elif key.startswith("t."):
                tags.append(("_dd.p." + key[2:], memberValue.replace("~", "=")))
    # The sampled flag wins over a priority that disagrees with it.
    if sampled and (priority is None or priority <= 0):
        priority = AUTO_KEEP
    elif not sampled and (priority is None or priority > 0):
        priority = AUTO_DROP
    if high:
        tags.append(("_dd.p.tid", "%016x" % (high,)))
    return DatadogContext(low, parent, priority, origin, tags, traceIdHigh=high,
                          w3cParentId=ddParent, otherTraceState=",".join(others))


def extract(headers):
    """
    @param headers: the request's L{txenvoy.http.headers.HeaderMap}.
    @return: a L{DatadogContext} from the first style that has one
        (Datadog, then W3C), or C{None}.
    """
    return _extractDatadog(headers) or _extractW3C(headers)


def _put(headers, name, value):
    headers.remove(name)
    headers.add(name, value)


def inject(headers, traceIdHigh, traceId, spanId, priority, origin, traceTags,
           otherTraceState=""):
    """
    Write the Datadog headers, then C{traceparent} and C{tracestate}, into
    an upstream request's L{HeaderMap}, after its other headers.

    @param traceTags: C{[(name, value)]} C{_dd.p.*} trace tags.
    """
    _put(headers, b"x-datadog-trace-id", b"%d" % (traceId,))
    _put(headers, b"x-datadog-parent-id", b"%d" % (spanId,))
    _put(headers, b"x-datadog-sampling-priority", b"%d" % (priority,))
    if origin:
        _put(headers, b"x-datadog-origin", origin.encode("latin-1"))
    if traceTags:
        _put(headers, b"x-datadog-tags",
             ",".join("%s=%s" % tag for tag in traceTags).encode("latin-1"))
    _put(headers, b"traceparent", b"00-%016x%016x-%016x-%s" % (
        traceIdHigh, traceId, spanId, b"01" if priority > 0 else b"00"))
    state = "dd=s:%d;p:%016x" % (priority, spanId)
    if origin:
        state += ";o:" + origin.replace("=", "~")
    for name, value in traceTags:
        if name != "_dd.p.tid":
            state += ";t.%s:%s" % (name[6:], value.replace("=", "~"))
    if otherTraceState:
        state += "," + otherTraceState
    _put(headers, b"tracestate", state.encode("latin-1"))
