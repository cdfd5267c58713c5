# -*- test-case-name: tests.extensions.filters.http.test_compressor -*-
"""
C{envoy.filters.http.decompressor}: decompress request and response bodies
whose C{content-encoding} is the library's (C{gzip}, C{br}, C{zstd}).

Behaviour copied from Envoy 1.40 (C{DecompressorFilter}; checked against
the binary, pinned in C{tests/extensions/filters/http/test_compressor.py}
and C{tests/e2e/test_compression.py}):

 - while response decompression is enabled, the request's
   C{accept-encoding} gets the library's encoding appended
   (C{request_direction_config.advertise_accept_encoding}, true by
   default), so that the upstream may compress;
 - a body (in either direction, each with its C{common_config.enabled}
   runtime flag) whose first C{content-encoding} is the library's, without
   C{cache-control: no-transform} (unless C{ignore_no_transform_header}),
   loses that coding and its C{content-length} and goes on decompressed
   (chunked on HTTP/1);
 - a corrupt body is not an error reply: what could not be decoded is
   dropped (the client gets a shorter, often empty, body) and the
   library's error counter goes up
   (C{decompressor_library.zlib_data_error} for gzip).

Stats, under C{http.<prefix>.decompressor.<library name>.<library>.}:
C{request.} and C{response.} C{decompressed}, C{not_decompressed},
C{total_compressed_bytes}, C{total_uncompressed_bytes}, and the library's
C{decompressor_library.*} error counters.
"""

from zope.interface import implementer

from envoy.extensions.filters.http.decompressor.v3 import decompressor_pb2  # noqa: F401

from txenvoy.config.errors import ConfigError
from txenvoy.config.fields import checkFields
from txenvoy.config.registry import Category, createExtension, extension
from txenvoy.extensions.filters.http.compressor import RuntimeFlag, hasNoTransform
from txenvoy.http.filter import ConfiguredFilter, FilterDataStatus, FilterHeadersStatus
from txenvoy.http.filter_config import WorkerStats, httpStatPrefix, snapshotSource
from txenvoy.interfaces import IHttpFilterFactory, IStreamDecoderFilter, IStreamEncoderFilter

__all__ = ["DecompressorConfig", "DecompressorFilter", "createDecompressor"]

_NAME = "envoy.filters.http.decompressor"
_DECOMPRESSOR = "envoy.extensions.filters.http.decompressor.v3.Decompressor"
_STATS = ("decompressed", "not_decompressed", "total_compressed_bytes",
          "total_uncompressed_bytes")


class _Direction:
    """One direction's C{CommonDirectionConfig} and its stats."""

    def __init__(self, common, statPrefix, path):
        checkFields(common, ("enabled", "ignore_no_transform_header"), path)
        self.flag = RuntimeFlag(common.enabled if common.HasField("enabled") else None)
        self.ignoreNoTransform = common.ignore_no_transform_header
        self.stats = WorkerStats({name: statPrefix + name for name in _STATS})


@implementer(IHttpFilterFactory)
class DecompressorConfig:
    """
    A compiled C{Decompressor}; the filter factory.

    @ivar library: the L{txenvoy.interfaces.IDecompressorFactory}.
    """

    terminal = False

    def __init__(self, library, request, response, advertise, errorStats, snapshot):
        self.library = library
        self.contentEncoding = library.contentEncoding.lower()
        self.request = request
        self.response = response
        self.advertise = advertise
        self.errorStats = errorStats
        self.snapshot = snapshot

    def createFilter(self, callbacks):
        """@return: a L{DecompressorFilter} for one request."""
        return DecompressorFilter(self, callbacks)


@implementer(IStreamDecoderFilter, IStreamEncoderFilter)
class DecompressorFilter(ConfiguredFilter):
    """The decompressor filter of one request."""

    _requestDecompressor = None
    _responseDecompressor = None

    def decodeHeaders(self, headers, endStream):
        config = self.config
        entries = headers.headers
        if config.advertise and config.response.flag.enabled(config.snapshot):
            encoding = config.library.contentEncoding
            current = entries.get(b"accept-encoding")
            entries.set(b"accept-encoding",
                        encoding if current is None else current + b"," + encoding)
        if endStream:
            return FilterHeadersStatus.Continue
        self._requestDecompressor = self._maybeInit(config.request, entries)
        if self._requestDecompressor is not None:
            headers.contentLength = None
        return FilterHeadersStatus.Continue

    def decodeData(self, data, endStream):
        decompressor = self._requestDecompressor
        if decompressor is None:
            return FilterDataStatus.Continue
        return FilterDataStatus.Continue, self._decompress(
            decompressor, self.config.request, data)

    def encodeHeaders(self, headers, endStream):
        if endStream:
            return FilterHeadersStatus.Continue
        self._responseDecompressor = self._maybeInit(self.config.response, headers.headers)
        return FilterHeadersStatus.Continue

    def encodeData(self, data, endStream):
        decompressor = self._responseDecompressor
        if decompressor is None:
            return FilterDataStatus.Continue
        return FilterDataStatus.Continue, self._decompress(
            decompressor, self.config.response, data)

    def _maybeInit(self, direction, entries):
        config = self.config
        stats = direction.stats.forDispatcher(self.callbacks.dispatcher)
        coding = entries.get(b"content-encoding")
        matches = (coding is not None
                   and coding.split(b",", 1)[0].strip().lower() == config.contentEncoding)
        if (matches and direction.flag.enabled(config.snapshot)
                and (direction.ignoreNoTransform or not hasNoTransform(entries))):
            stats.decompressed.inc()
            rest = coding.split(b",", 1)[1].strip() if b"," in coding else b""
            if rest:
                entries.set(b"content-encoding", rest)
            else:
                entries.remove(b"content-encoding")
            entries.remove(b"content-length")
            return config.library.createDecompressor()
        stats.not_decompressed.inc()
        return None

    def _decompress(self, decompressor, direction, data):
        dispatcher = self.callbacks.dispatcher
        stats = direction.stats.forDispatcher(dispatcher)
        out, error = decompressor.decompress(data)
        if error is not None and data:
            dispatcher.stats.counter(self.config.errorStats + error).inc()
        stats.total_compressed_bytes.inc(len(data))
        stats.total_uncompressed_bytes.inc(len(out))
        return out


@extension(Category.HTTP_FILTER, _DECOMPRESSOR, _NAME,
           fields=("decompressor_library", "request_direction_config",
                   "response_direction_config"))
def createDecompressor(message, context):
    """Compile a C{Decompressor} message."""
    path = context.path + ".typed_config"
    if not message.HasField("decompressor_library"):
        raise ConfigError("%s: Proto constraint validation failed (DecompressorValidationError."
                          "DecompressorLibrary: value is required)" % (path,))
    entry = message.decompressor_library
    library = createExtension(Category.DECOMPRESSOR, entry, context,
                              path + ".decompressor_library")
    prefix = "%sdecompressor.%s.%s." % (httpStatPrefix(context), entry.name,
                                        library.statsPrefix)
    rdc = message.request_direction_config
    checkFields(rdc, ("common_config", "advertise_accept_encoding"),
                path + ".request_direction_config")
    request = _Direction(rdc.common_config, prefix + "request.",
                         path + ".request_direction_config.common_config")
    sdc = message.response_direction_config
    checkFields(sdc, ("common_config",), path + ".response_direction_config")
    response = _Direction(sdc.common_config, prefix + "response.",
                          path + ".response_direction_config.common_config")
    advertise = (rdc.advertise_accept_encoding.value
                 if rdc.HasField("advertise_accept_encoding") else True)
    config = DecompressorConfig(library, request, response, advertise,
                                prefix + "decompressor_library.", snapshotSource(context))
    request.stats.declare(context)
    response.stats.declare(context)
    errors = WorkerStats({name: prefix + "decompressor_library." + name
                          for name in library.errorStats})
    errors.declare(context)
    return config
