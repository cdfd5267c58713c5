# -*- test-case-name: tests.e2e.test_grpc,tests.extensions.filters.http.test_grpc_http1_bridge -*-
"""
C{envoy.filters.http.grpc_http1_bridge}: an HTTP/1.1 client that cannot
read trailers calls a gRPC service (Envoy's C{Http1BridgeFilter}).

For a gRPC request (C{content-type: application/grpc...}) that came over
HTTP/1.x, the response is held until its trailers: a C{grpc-status} other
than 0 turns the HTTP status into 503, C{grpc-status} and C{grpc-message}
are copied into the response headers, and C{content-length} is set to the
held body's length. Over HTTP/2 the filter does nothing.

C{upgrade_protobuf_to_grpc}: a request with C{content-type:
application/x-protobuf} goes upstream as gRPC (one frame around the whole
body, C{content-type: application/grpc}, no C{content-length}); the reply's
frame header is taken off again. C{ignore_query_parameters}: a bridged
request's path loses its query, which gRPC servers do not understand.
"""

from zope.interface import implementer

# Imported so that the message type is known to the registry.
from envoy.extensions.filters.http.grpc_http1_bridge.v3 import config_pb2  # noqa: F401

from txenvoy.config.registry import Category, extension
from txenvoy.http.filter import (
    FilterDataStatus,
    FilterHeadersStatus,
    FilterTrailersStatus,
    LocalReplyDetails,
    PassThroughFilter,
)
from txenvoy.http.grpc.common import isGrpcRequest
from txenvoy.interfaces import IHttpFilterFactory

__all__ = ["Http1BridgeFilter", "Http1BridgeConfig", "createHttp1Bridge"]

_PROTOBUF = b"application/x-protobuf"
_FRAME_HEADER = 5


class Http1BridgeFilter(PassThroughFilter):
    """One request's bridging."""

    _bridging = False
    _framing = False
    _unframeResponse = False
    _responseHeaders = None

    def __init__(self, callbacks, config):
        PassThroughFilter.__init__(self, callbacks)
        self.config = config
        self._requestBody = []
        self._requestSize = 0
        self._responseSize = 0

    # Requests.

    def decodeHeaders(self, headers, endStream):
        entries = headers.headers
        if self.config.upgradeProtobuf and entries.get(b"content-type") == _PROTOBUF:
            self._framing = self._unframeResponse = True
            entries.set(b"content-type", b"application/grpc")
            entries.remove(b"content-length")
            self.callbacks.clearRouteCache()
        if isGrpcRequest(headers) and headers.version != "HTTP/2":
            self._bridging = True
            if self.config.ignoreQueryParameters and headers.path is not None:
                headers.path = headers.path.split(b"?", 1)[0]
        return FilterHeadersStatus.Continue

    def decodeData(self, data, endStream):
        if not (self._bridging and self._framing):
            return FilterDataStatus.Continue
        # The frame header needs the whole body's length: keep it all.
        self._requestBody.append(data)
        self._requestSize += len(data)
        if self._requestSize > self.callbacks.bufferLimit():
            self.callbacks.sendLocalReply(413, b"Payload Too Large", None,
                                          LocalReplyDetails.REQUEST_PAYLOAD_TOO_LARGE)
            return FilterDataStatus.StopIterationNoBuffer
        if not endStream:
            return FilterDataStatus.StopIterationNoBuffer
        body = b"".join(self._requestBody)
        self._requestBody = []
        return FilterDataStatus.Continue, b"\x00" + len(body).to_bytes(4, "big") + body

    # Responses.

    def encodeHeaders(self, headers, endStream):
        if not self._bridging or endStream:
            return FilterHeadersStatus.Continue
        self._responseHeaders = headers
        return FilterHeadersStatus.StopIteration

    def encodeData(self, data, endStream):
        if not self._bridging or endStream:
            return FilterDataStatus.Continue
        if self._unframeResponse:
            # Envoy drains the frame header from the first piece only.
            self._unframeResponse = False
            data = data[_FRAME_HEADER:]
        self._responseSize += len(data)
        return FilterDataStatus.StopIterationAndBuffer, data

    def encodeTrailers(self, trailers):
        if not self._bridging:
            return FilterTrailersStatus.Continue
        headers = self._responseHeaders
        entries = headers.headers
        status = trailers.get(b"grpc-status")
        if status is not None:
            if status != b"0":
                headers.status = 503
                headers.reason = None
            entries.set(b"grpc-status", status)
        message = trailers.get(b"grpc-message")
        if message is not None:
            entries.set(b"grpc-message", message)
        entries.set(b"content-length", b"%d" % (self._responseSize,))
        return FilterTrailersStatus.Continue


class Http1BridgeConfig:
    """The compiled C{Config}."""

    def __init__(self, upgradeProtobuf, ignoreQueryParameters):
        self.upgradeProtobuf = upgradeProtobuf
        self.ignoreQueryParameters = ignoreQueryParameters


@implementer(IHttpFilterFactory)
class Http1BridgeFactory:
    """Makes one L{Http1BridgeFilter} per stream."""

    def __init__(self, config):
        self.config = config

    def createFilter(self, callbacks):
        return Http1BridgeFilter(callbacks, self.config)


@extension(Category.HTTP_FILTER, "envoy.extensions.filters.http.grpc_http1_bridge.v3.Config",
           "envoy.filters.http.grpc_http1_bridge",
           fields=("upgrade_protobuf_to_grpc", "ignore_query_parameters"))
def createHttp1Bridge(message, context):
    """Compile a C{grpc_http1_bridge} C{Config} message."""
    return Http1BridgeFactory(Http1BridgeConfig(message.upgrade_protobuf_to_grpc,
                                                message.ignore_query_parameters))
