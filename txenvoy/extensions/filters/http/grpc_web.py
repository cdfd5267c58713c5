# -*- test-case-name: tests.e2e.test_grpc_web,tests.extensions.filters.http.test_grpc_web -*-
"""
C{envoy.filters.http.grpc_web}: browsers' gRPC-Web in front of a gRPC
service (Envoy's C{GrpcWebFilter}).

A request whose C{content-type} is one of C{application/grpc-web},
C{application/grpc-web+proto}, C{application/grpc-web-text} or
C{application/grpc-web-text+proto} goes upstream as gRPC:
C{content-type: application/grpc}, C{te: trailers},
C{grpc-accept-encoding: identity} unless the client named one, no
C{content-length}; a text body is decoded from base64 four characters at
a time (a body that ends off a multiple of four, or is not base64, gets
Envoy's 400 C{Bad gRPC-web request, invalid base64 data.}).

The response comes back as gRPC-Web: C{application/grpc-web+proto}, or
C{application/grpc-web-text+proto} when the request's C{accept} asked for
text; its trailers become a final frame (flag C{0x80},
C{name:value\\r\\n} lines) at the end of the body. For text each gRPC
frame, and the trailers frame, is base64-encoded on its own, with its
padding, as Envoy writes them. A response that is not gRPC (an upstream's
503, a local reply) is turned into one: its body becomes the
C{grpc-message}, its status the mapped C{grpc-status}, and the body goes.
Other requests pass untouched.

Each call on a C{/<service>/<method>} path is counted in its cluster as
Envoy's gRPC context counts it: C{grpc-web.<service>.<method>.<status>},
C{.success} or C{.failure}, and C{.total}.
"""

import base64
import binascii

from zope.interface import implementer

# Imported so that the message type is known to the registry.
from envoy.extensions.filters.http.grpc_web.v3 import grpc_web_pb2  # noqa: F401

from txenvoy.config.registry import Category, extension
from txenvoy.http.filter import (
    FilterDataStatus,
    FilterHeadersStatus,
    FilterTrailersStatus,
    PassThroughFilter,
)
from txenvoy.http.grpc.common import encodeGrpcMessage, httpToGrpcStatus, isGrpcContentType
from txenvoy.interfaces import IHttpFilterFactory

__all__ = ["GrpcWebFilter", "GrpcWebConfig", "createGrpcWeb", "decodeBase64Quads"]

_TEXT_TYPES = frozenset([b"application/grpc-web-text", b"application/grpc-web-text+proto"])
_WEB_TYPES = frozenset([b"application/grpc-web", b"application/grpc-web+proto"]) | _TEXT_TYPES
_PROTO_RESPONSE = b"application/grpc-web+proto"
_TEXT_RESPONSE = b"application/grpc-web-text+proto"
_TRAILER_FLAG = b"\x80"
_BAD_BASE64 = b"Bad gRPC-web request, invalid base64 data."
# Envoy's MAX_BUFFERED_PLAINTEXT_LENGTH: how much of a non-gRPC response's
# body becomes its grpc-message.
_MAX_MESSAGE = 16384


def decodeBase64Quads(data):
    """
    Envoy's C{Base64::decode} of a run of whole four-character groups:
    padding only at the very end, C{None} when the text is not base64 or
    decodes to nothing.
    """
    if b"=" in data[:-2] or (data[-2:-1] == b"=" and data[-1:] != b"="):
        return None
    try:
        decoded = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None
    return decoded or None


def _isGrpcResponse(headers, endStream):
    """Envoy's C{Grpc::Common::isGrpcResponseHeaders}."""
    entries = headers.headers
    if endStream:
        return entries.get(b"grpc-status") is not None
    if headers.status != 200:
        return False
    return isGrpcContentType(entries.get(b"content-type"))


def _isProtoGrpcWebResponse(headers):
    """A 200 whose content-type (parameters aside) is already gRPC-Web binary."""
    if headers.status != 200:
        return False
    value = headers.headers.get(b"content-type")
    if value is None:
        return False
    return value.split(b";", 1)[0].rstrip().lower() in (b"application/grpc-web",
                                                          _PROTO_RESPONSE)


class GrpcWebFilter(PassThroughFilter):
    """One request's gRPC-Web translation."""

    _active = False
    _textRequest = False
    _textResponse = False
    _transform = False
    _responseHeaders = None
    _statScope = None

    def __init__(self, callbacks):
        PassThroughFilter.__init__(self, callbacks)
        self._pendingText = b""
        self._pendingFrames = b""
        self._heldBody = []
        self._heldSize = 0

    # Requests.

    def decodeHeaders(self, headers, endStream):
        entries = headers.headers
        contentType = entries.get(b"content-type")
        if contentType is None or contentType not in _WEB_TYPES:
            return FilterHeadersStatus.Continue
        self._active = True
        self._statScope = self._callStats(headers.path)
        entries.remove(b"content-length")
        self._textRequest = contentType in _TEXT_TYPES
        entries.set(b"content-type", b"application/grpc")
        self._textResponse = entries.get(b"accept") in _TEXT_TYPES
        entries.set(b"te", b"trailers")
        if entries.get(b"grpc-accept-encoding") is None:
            entries.set(b"grpc-accept-encoding", b"identity")
        return FilterHeadersStatus.Continue

    def _callStats(self, path):
        """
        The cluster scope C{grpc-web.<service>.<method>.} of this call
        (Envoy's resolveDynamicServiceAndMethod), or C{None}.
        """
        if path is None:
            return None
        parts = [p for p in path.split(b"?", 1)[0].split(b"/") if p]
        if len(parts) != 2:
            return None
        route = self.callbacks.route()
        name = getattr(route, "clusterName", None)
        if not name:
            return None
        dispatcher = self.callbacks.dispatcher
        cluster = dispatcher.clusterManager.getThreadLocalCluster(name)
        if cluster is None:
            return None
        return dispatcher.stats.scope("%sgrpc-web.%s.%s." % (
            cluster.info.statPrefix, parts[0].decode("latin-1"), parts[1].decode("latin-1")))

    def _chargeStat(self, status):
        """Envoy's Grpc::Context::chargeStat for a C{grpc-status}."""
        scope = self._statScope
        if scope is None or status is None:
            return
        scope.counter(status.decode("latin-1")).inc()
        scope.counter("success" if status == b"0" else "failure").inc()
        scope.counter("total").inc()

    def decodeData(self, data, endStream):
        if not self._textRequest:
            return FilterDataStatus.Continue
        pending = self._pendingText + data if self._pendingText else data
        if endStream:
            if not pending:
                return FilterDataStatus.Continue
            if len(pending) % 4:
                return self._badBase64("grpc_base_64_decode_failed_bad_size")
        elif len(pending) < 4:
            self._pendingText = pending
            return FilterDataStatus.StopIterationNoBuffer
        whole = len(pending) // 4 * 4
        decoded = decodeBase64Quads(pending[:whole])
        if decoded is None:
            return self._badBase64("grpc_base_64_decode_failed")
        self._pendingText = pending[whole:]
        return FilterDataStatus.Continue, decoded

    def _badBase64(self, details):
        self.callbacks.sendLocalReply(400, _BAD_BASE64, None, details)
        return FilterDataStatus.StopIterationNoBuffer

    # Responses.

    def encodeHeaders(self, headers, endStream):
        if not self._active:
            return FilterHeadersStatus.Continue
        entries = headers.headers
        self._chargeStat(entries.get(b"grpc-status"))
        self._transform = not (_isGrpcResponse(headers, endStream)
                               or _isProtoGrpcWebResponse(headers))
        entries.remove(b"content-length")
        entries.set(b"content-type", _TEXT_RESPONSE if self._textResponse else _PROTO_RESPONSE)
        if endStream or not self._transform:
            return FilterHeadersStatus.Continue
        self._responseHeaders = headers
        return FilterHeadersStatus.StopIteration

    def encodeData(self, data, endStream):
        if not self._active:
            return FilterDataStatus.Continue
        if self._transform:
            if self._heldSize < _MAX_MESSAGE:
                self._heldBody.append(data)
                self._heldSize += len(data)
            if not endStream:
                return FilterDataStatus.StopIterationNoBuffer
            self._transform = False
            self._setStatusFromBody()
            return FilterDataStatus.Continue, b""
        if not self._textResponse:
            return FilterDataStatus.Continue
        pending = self._pendingFrames + data if self._pendingFrames else data
        out = []
        at = 0
        while len(pending) - at >= 5:
            end = at + 5 + int.from_bytes(pending[at + 1:at + 5], "big")
            if end > len(pending):
                break
            out.append(base64.b64encode(pending[at:end]))
            at = end
        self._pendingFrames = pending[at:]
        if not out and not endStream:
            return FilterDataStatus.StopIterationNoBuffer
        return FilterDataStatus.Continue, b"".join(out)

    def _setStatusFromBody(self):
        """Envoy's C{setTransformedNonProtoEncodedResponseHeaders}."""
        headers = self._responseHeaders
        body = b"".join(self._heldBody)[:_MAX_MESSAGE]
        self._heldBody = []
        entries = headers.headers
        entries.set(b"grpc-message", encodeGrpcMessage(body))
        entries.set(b"grpc-status", b"%d" % (httpToGrpcStatus(headers.status),))
        entries.set(b"content-length", b"0")

    def encodeTrailers(self, trailers):
        if not self._active:
            return FilterTrailersStatus.Continue
        self._chargeStat(trailers.get(b"grpc-status"))
        if self._transform:
            self._transform = False
            self._setStatusFromBody()
            return FilterTrailersStatus.Continue
        block = b"".join(name + b":" + value + b"\r\n" for name, value in trailers.items())
        frame = _TRAILER_FLAG + len(block).to_bytes(4, "big") + block
        if self._textResponse:
            frame = base64.b64encode(frame)
        self.callbacks.addEncodedData(frame)
        for name, _ in list(trailers.items()):
            trailers.remove(name)
        return FilterTrailersStatus.Continue


@implementer(IHttpFilterFactory)
class GrpcWebConfig:
    """The compiled C{GrpcWeb} (it has no fields)."""

    def createFilter(self, callbacks):
        return GrpcWebFilter(callbacks)


@extension(Category.HTTP_FILTER, "envoy.extensions.filters.http.grpc_web.v3.GrpcWeb",
           "envoy.filters.http.grpc_web", fields=())
def createGrpcWeb(message, context):
    """Compile a C{GrpcWeb} message."""
    return GrpcWebConfig()
