# -*- test-case-name: tests.extensions.filters.http.test_buffer -*-
"""
C{envoy.filters.http.buffer}: hold the whole request body before the
request goes on, up to C{max_request_bytes}.

Behaviour copied from Envoy 1.40 (checked against the binary, pinned in
C{tests/extensions/filters/http/test_buffer.py}):

 - a request without a body (headers with end of stream) is not touched;
 - past C{max_request_bytes} of body the reply is
   C{413 Payload Too Large}, body C{Payload Too Large}, details
   C{request_payload_too_large}, and C{http.<prefix>.downstream_rq_too_large}
   is counted, as the connection manager does for any buffer overflow;
 - a body that came without a length (chunked) goes upstream with a
   C{content-length} added after the headers already present;
 - C{typed_per_filter_config} may hold a C{BufferPerRoute}: C{disabled}
   turns the filter off for the route, C{buffer} replaces the limit.
"""

from twisted.logger import Logger
from zope.interface import implementer

# Imported so that a BufferPerRoute in typed_per_filter_config can be unpacked.
from envoy.extensions.filters.http.buffer.v3 import buffer_pb2  # noqa: F401

from txenvoy.config.errors import ConfigError
from txenvoy.config.registry import Category, extension
from txenvoy.http.filter import (
    ConfiguredFilter,
    FilterDataStatus,
    FilterHeadersStatus,
    FilterTrailersStatus,
)
from txenvoy.interfaces import IHttpFilterFactory, IStreamDecoderFilter
from txenvoy.http.filter_config import RouteSpecificConfigs, httpStatPrefix

log = Logger(namespace="http")

__all__ = ["BufferConfig", "BufferFilter", "createBuffer"]


# -- the buffer filter ------------------------------------------------------------

_BUFFER = "envoy.extensions.filters.http.buffer.v3.Buffer"
_BUFFER_PER_ROUTE = "envoy.extensions.filters.http.buffer.v3.BufferPerRoute"
_NAME = "envoy.filters.http.buffer"


class BufferSettings:
    """
    What one request is buffered with.

    @ivar disabled: the filter does nothing for the route.
    @ivar maxRequestBytes: the most body bytes held.
    """

    __slots__ = ("disabled", "maxRequestBytes")

    def __init__(self, maxRequestBytes, disabled=False):
        self.maxRequestBytes = maxRequestBytes
        self.disabled = disabled


_DISABLED = BufferSettings(0, disabled=True)


def _maxRequestBytes(message, path):
    if not message.HasField("max_request_bytes"):
        raise ConfigError("%s: Proto constraint validation failed (BufferValidationError."
                          "MaxRequestBytes: value is required)" % (path,))
    value = message.max_request_bytes.value
    if value <= 0:
        raise ConfigError("%s: Proto constraint validation failed (BufferValidationError."
                          "MaxRequestBytes: value must be greater than 0)" % (path,))
    return value


def compileBufferPerRoute(message):
    """Compile a C{BufferPerRoute} into L{BufferSettings}."""
    which = message.WhichOneof("override")
    if which == "disabled":
        return _DISABLED
    if which == "buffer":
        return BufferSettings(_maxRequestBytes(message.buffer, "buffer"))
    raise ConfigError("BufferPerRouteValidationError.Override: value is required")


@implementer(IHttpFilterFactory)
class BufferConfig:
    """
    A compiled C{Buffer}; the filter factory.

    @ivar settings: the filter-level L{BufferSettings}.
    @ivar tooLargeStat: the connection manager's
        C{downstream_rq_too_large} counter name.
    """

    terminal = False

    def __init__(self, settings, statPrefix):
        self.settings = settings
        self.tooLargeStat = statPrefix + "downstream_rq_too_large"
        self.routeConfigs = RouteSpecificConfigs(
            _NAME, (_BUFFER_PER_ROUTE,), compileBufferPerRoute)

    def createFilter(self, callbacks):
        """@return: a L{BufferFilter} for one request."""
        return BufferFilter(self, callbacks)


@implementer(IStreamDecoderFilter)
class BufferFilter(ConfiguredFilter):
    """The buffer filter of one request (request direction only)."""

    _headers = None
    _size = 0
    _limit = 0

    def decodeHeaders(self, headers, endStream):
        if endStream:
            return FilterHeadersStatus.Continue
        config = self.config
        settings = config.settings
        perRoute = config.routeConfigs.mostSpecific(self.callbacks)
        if perRoute is not None:
            settings = perRoute
        if settings.disabled:
            return FilterHeadersStatus.Continue
        self._headers = headers
        self._limit = limit = settings.maxRequestBytes
        # Envoy raises (or lowers) the stream's buffer limit to the
        # filter's; without that seam the connection's limit still applies
        # above it.
        setLimit = getattr(self.callbacks, "setDecoderBufferLimit", None)
        if setLimit is not None:
            setLimit(limit)
        return FilterHeadersStatus.StopIteration

    def decodeData(self, data, endStream):
        if self._headers is None:
            return FilterDataStatus.Continue
        size = self._size = self._size + len(data)
        if size > self._limit:
            self._tooLarge()
            return FilterDataStatus.StopIterationNoBuffer
        if endStream:
            self._addContentLength()
            return FilterDataStatus.Continue
        return FilterDataStatus.StopIterationAndBuffer

    def decodeTrailers(self, trailers):
        if self._headers is not None:
            self._addContentLength()
        return FilterTrailersStatus.Continue

    def _addContentLength(self):
        entries = self._headers.headers
        if entries.get(b"content-length") is None:
            entries.add(b"content-length", b"%d" % (self._size,))

    def _tooLarge(self):
        callbacks = self.callbacks
        self._headers = None
        callbacks.dispatcher.stats.counter(self.config.tooLargeStat).inc()
        callbacks.sendLocalReply(413, b"Payload Too Large", None, "request_payload_too_large")


@extension(Category.HTTP_FILTER, _BUFFER, _NAME, fields=("max_request_bytes",))
def createBuffer(message, context):
    """Compile a C{Buffer} message."""
    path = context.configPath
    return BufferConfig(BufferSettings(_maxRequestBytes(message, path)),
                        httpStatPrefix(context))
