# -*- test-case-name: tests.http.grpc.test_common -*-
"""
What the connection manager and the router know of gRPC (Envoy's
C{Grpc::Common} and C{Grpc::Utility}): which requests are gRPC, the status
an HTTP code maps to, Envoy's trailers-only local replies, and the
C{grpc-timeout} header.
"""

import re

from txenvoy.http.headers import HeaderMap, ResponseHeaders

__all__ = ["isGrpcRequest", "isGrpcContentType", "httpToGrpcStatus", "grpcLocalReply", "encodeGrpcMessage",
           "parseGrpcTimeout", "GrpcStatus"]


class GrpcStatus:
    """gRPC status codes."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


# Envoy's Grpc::Utility::httpToGrpcStatus.
_HTTP_TO_GRPC = {
    400: GrpcStatus.INTERNAL, 401: GrpcStatus.UNAUTHENTICATED,
    403: GrpcStatus.PERMISSION_DENIED, 404: GrpcStatus.UNIMPLEMENTED,
    429: GrpcStatus.UNAVAILABLE, 502: GrpcStatus.UNAVAILABLE,
    503: GrpcStatus.UNAVAILABLE, 504: GrpcStatus.UNAVAILABLE,
}

_CONTENT_TYPE = b"application/grpc"


def isGrpcRequest(request):
    """
    Envoy's C{isGrpcRequestHeaders}: C{content-type} is
    C{application/grpc} or C{application/grpc+<codec>}.

    @param request: a L{txenvoy.http.headers.RequestHeaders}, or C{None}.
    """
    if request is None:
        return False
    return isGrpcContentType(request.headers.get(b"content-type"))


def isGrpcContentType(value):
    """Envoy's C{hasGrpcContentType}: C{application/grpc}, C{+<codec>} or C{;...}."""
    if value is None or not value.startswith(_CONTENT_TYPE):
        return False
    return len(value) == len(_CONTENT_TYPE) or value[len(_CONTENT_TYPE):][:1] in (b"+", b";")


def httpToGrpcStatus(code):
    """The gRPC status Envoy gives an HTTP status (UNKNOWN by default)."""
    return _HTTP_TO_GRPC.get(code, GrpcStatus.UNKNOWN)


_UNSAFE = re.compile(rb"[^\x20-\x24\x26-\x7e]")


def encodeGrpcMessage(message):
    """C{grpc-message} percent-encoding (bytes outside printable ASCII, and C{%})."""
    return _UNSAFE.sub(lambda m: b"%%%02X" % (m.group()[0],), message)


def grpcLocalReply(headers, body):
    """
    Envoy's local reply to a gRPC request: a trailers-only 200 whose
    C{grpc-status} is mapped from the HTTP status (unless the reply set one)
    and whose C{grpc-message} is the body.

    @param headers: the L{ResponseHeaders} of the HTTP local reply.
    @param body: its body.
    @return: the L{ResponseHeaders} to send, with end of stream.
    """
    status = None
    message = None
    rest = []
    for name, value in headers.headers.items():
        if name == b"grpc-status":
            status = value
        elif name == b"grpc-message":
            message = value
        elif name not in (b"content-type", b"content-length"):
            rest.append((name, value))
    if status is None:
        status = b"%d" % (httpToGrpcStatus(headers.status),)
    entries = [(b"content-type", _CONTENT_TYPE), (b"grpc-status", status)]
    if message is None and body:
        message = encodeGrpcMessage(body)
    if message is not None:
        entries.append((b"grpc-message", message))
    return ResponseHeaders(200, HeaderMap.fromList(entries + rest))


_TIMEOUT = re.compile(rb"([0-9]{1,8})([HMSmun])")
_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}


def parseGrpcTimeout(value):
    """
    The C{grpc-timeout} header (at most 8 digits and a unit), in seconds,
    or C{None} when it is malformed (Envoy then ignores it).
    """
    if value is None:
        return None
    m = _TIMEOUT.fullmatch(value)
    if m is None:
        return None
    return int(m.group(1)) * _UNITS[m.group(2)]
