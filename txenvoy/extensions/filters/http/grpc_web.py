# -*- test-case-name: tests.e2e.test_grpc -*-
"""
C{envoy.filters.http.grpc_web}: browsers' gRPC-Web in front of a gRPC
service (Envoy's C{GrpcWebFilter}).

A request whose C{content-type} is C{application/grpc-web} (or
C{+proto}, or the base64 C{application/grpc-web-text} forms) goes upstream
as gRPC: C{content-type: application/grpc}, C{te: trailers}, no
C{content-length}, a text body decoded from base64. The response comes back
as gRPC-Web: its C{content-type} is the request's, its trailers become a
final frame (flag C{0x80}, C{name:value\\r\\n} lines) at the end of the
body, base64-encoded for the text forms. Other requests pass untouched.
"""

from zope.interface import implementer

# Imported so that the message type is known to the registry.
from envoy.extensions.filters.http.grpc_web.v3 import grpc_web_pb2  # noqa: F401

from txenvoy.config.registry import Category, extension
from txenvoy.http.filter import FilterHeadersStatus, FilterTrailersStatus, PassThroughFilter
from txenvoy.interfaces import IHttpFilterFactory

__all__ = ["GrpcWebFilter", "GrpcWebConfig", "createGrpcWeb"]

_GRPC_WEB = b"application/grpc-web"
_GRPC_WEB_PROTO = b"application/grpc-web+proto"
_WEB_TYPES = frozenset([_GRPC_WEB, _GRPC_WEB_PROTO])
_TRAILER_FLAG = b"\x80"


class GrpcWebFilter(PassThroughFilter):
    """One request's gRPC-Web translation."""

    _active = False
    _contentType = None

    # Requests.

    def decodeHeaders(self, headers, endStream):
        entries = headers.headers
        contentType = entries.get(b"content-type")
        if contentType is None or contentType.lower() not in _WEB_TYPES:
            return FilterHeadersStatus.Continue
        contentType = contentType.lower()
        self._active = True
        self._contentType = contentType
        entries.set(b"content-type", b"application/grpc")
        entries.remove(b"content-length")
        entries.set(b"te", b"trailers")
        return FilterHeadersStatus.Continue

    # Responses.

    def encodeHeaders(self, headers, endStream):
        if not self._active:
            return FilterHeadersStatus.Continue
        entries = headers.headers
        current = entries.get(b"content-type")
        if current is not None and current.lower().startswith(b"application/grpc"):
            entries.set(b"content-type", self._contentType)
        return FilterHeadersStatus.Continue

    def encodeTrailers(self, trailers):
        if not self._active:
            return FilterTrailersStatus.Continue
        block = b"".join(name + b":" + value + b"\r\n" for name, value in trailers.items())
        frame = _TRAILER_FLAG + len(block).to_bytes(4, "big") + block
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
