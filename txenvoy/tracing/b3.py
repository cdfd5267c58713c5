# -*- test-case-name: tests.tracing.test_b3 -*-
"""
B3 propagation (Zipkin's headers), read and written as Envoy's Zipkin
tracer does: the single C{b3} header
(C{traceid-spanid[-sampled[-parentspanid]]}, or a lone sampling state) or
the multi headers C{x-b3-traceid}, C{x-b3-spanid}, C{x-b3-parentspanid},
C{x-b3-sampled} and C{x-b3-flags}. A context that arrived in the single
header leaves in it; every other context leaves in the multi headers.
"""

_HEX = frozenset(b"0123456789abcdefABCDEF")


class B3Error(ValueError):
    """The request carries a B3 context that cannot be read."""


class B3Context:
    """
    What the request carried.

    @ivar traceIdHigh: the upper 64 bits of a 128-bit trace id, or 0.
    @ivar traceId: the lower 64 bits, or C{None} for no context.
    @ivar spanId: the caller's span id, or C{None}.
    @ivar parentId: its parent, or C{None}.
    @ivar sampled: C{True}, C{False} or C{None} (not stated).
    @ivar single: the context came in the single C{b3} header.
    """

    def __init__(self, traceIdHigh=0, traceId=None, spanId=None, parentId=None, sampled=None,
                 single=False):
        self.traceIdHigh = traceIdHigh
        self.traceId = traceId
        self.spanId = spanId
        self.parentId = parentId
        self.sampled = sampled
        self.single = single


def _id(value, what):
    if not value or len(value) > 16 or not _HEX.issuperset(value):
        raise B3Error("invalid %s %r" % (what, value))
    return int(value, 16)


def _traceId(value):
    if len(value) == 32:
        if not _HEX.issuperset(value):
            raise B3Error("invalid trace id %r" % (value,))
        return int(value[:16], 16), int(value[16:], 16)
    if len(value) != 16:
        raise B3Error("invalid trace id %r" % (value,))
    return 0, _id(value, "trace id")


def _sampledState(value):
    if value in (b"1", b"d", b"true"):
        return True
    if value in (b"0", b"false"):
        return False
    raise B3Error("invalid sampling state %r" % (value,))


def extract(headers):
    """
    @param headers: the request's L{txenvoy.http.headers.HeaderMap}.
    @return: a L{B3Context} (C{traceId} C{None} when there is none).
    @raise B3Error: for a malformed context.
    """
    get = headers.get
    single = get(b"b3")
    if single is not None:
        parts = single.split(b"-")
        if len(parts) == 1:
            if single == b"d":
                return B3Context(sampled=True, single=True)
            return B3Context(sampled=_sampledState(single), single=True)
        if len(parts) > 4:
            raise B3Error("invalid b3 header %r" % (single,))
        high, low = _traceId(parts[0])
        span = _id(parts[1], "span id")
        sampled = _sampledState(parts[2]) if len(parts) > 2 else None
        parent = _id(parts[3], "parent span id") if len(parts) > 3 else None
        return B3Context(high, low, span, parent, sampled, single=True)
    sampled = None
    flags = get(b"x-b3-flags")
    if flags == b"1":
        sampled = True
    else:
        state = get(b"x-b3-sampled")
        if state is not None:
            sampled = _sampledState(state.lower())
    trace = get(b"x-b3-traceid")
    span = get(b"x-b3-spanid")
    if trace is None or span is None:
        return B3Context(sampled=sampled)
    high, low = _traceId(trace)
    parent = get(b"x-b3-parentspanid")
    return B3Context(high, low, _id(span, "span id"),
                     _id(parent, "parent span id") if parent is not None else None, sampled)


def traceIdHex(high, low):
    """The trace id as Zipkin writes it: 16 or 32 hex digits."""
    if high:
        return "%016x%016x" % (high, low)
    return "%016x" % (low,)


def _put(headers, name, value):
    # Envoy's injected headers come last, after any the request carried.
    headers.remove(name)
    headers.add(name, value)


def inject(headers, high, traceId, spanId, parentId, sampled, single):
    """Write a context into an upstream request's L{HeaderMap}."""
    trace = traceIdHex(high, traceId).encode("ascii")
    if single:
        value = b"%s-%016x-%s" % (trace, spanId, b"1" if sampled else b"0")
        if parentId is not None:
            value += b"-%016x" % (parentId,)
        _put(headers, b"b3", value)
        return
    _put(headers, b"x-b3-traceid", trace)
    _put(headers, b"x-b3-spanid", b"%016x" % (spanId,))
    if parentId is not None:
        _put(headers, b"x-b3-parentspanid", b"%016x" % (parentId,))
    _put(headers, b"x-b3-sampled", b"1" if sampled else b"0")
