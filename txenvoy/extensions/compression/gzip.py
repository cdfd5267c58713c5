# -*- test-case-name: tests.extensions.filters.http.test_compressor -*-
"""
C{envoy.compression.gzip.compressor} and
C{envoy.compression.gzip.decompressor}: gzip through C{zlib}, with
Envoy's defaults (compression: level C{DEFAULT_COMPRESSION}, memory level
5, window bits 12; decompression: window bits 15).

Each compressed piece is flushed (C{Z_SYNC_FLUSH}) so that a streamed
response reaches the client as it comes, as Envoy does; the last one
finishes the stream. A body zlib cannot inflate counts in
C{decompressor_library.zlib_<error>} and what follows is dropped, as
Envoy's C{ZlibDecompressorImpl} does.
"""

import re
import zlib

from zope.interface import implementer

from envoy.extensions.compression.gzip.compressor.v3 import gzip_pb2 as compressor_pb2
from envoy.extensions.compression.gzip.decompressor.v3 import gzip_pb2 as _decompressor_pb2  # noqa: F401,E501

from txenvoy.config.registry import Category, extension
from txenvoy.extensions.compression import wrappedInRange
from txenvoy.interfaces import ICompressorFactory, IDecompressorFactory

__all__ = ["GzipCompressorFactory", "GzipDecompressorFactory"]

_GZIP_HEADER = 16

#: Envoy's zlib error counters, by zlib's return code.
ZLIB_ERRORS = {
    -1: "zlib_errno",
    -2: "zlib_stream_error",
    -3: "zlib_data_error",
    -4: "zlib_mem_error",
    -5: "zlib_buf_error",
    -6: "zlib_version_error",
}

_STRATEGIES = {
    compressor_pb2.Gzip.DEFAULT_STRATEGY: zlib.Z_DEFAULT_STRATEGY,
    compressor_pb2.Gzip.FILTERED: zlib.Z_FILTERED,
    compressor_pb2.Gzip.HUFFMAN_ONLY: zlib.Z_HUFFMAN_ONLY,
    compressor_pb2.Gzip.RLE: zlib.Z_RLE,
    compressor_pb2.Gzip.FIXED: zlib.Z_FIXED,
}

_ERROR_CODE = re.compile(r"Error (-?\d+)")



class _GzipCompressor:
    __slots__ = ("_z",)

    def __init__(self, level, windowBits, memoryLevel, strategy):
        self._z = zlib.compressobj(level, zlib.DEFLATED, _GZIP_HEADER + windowBits,
                                   memoryLevel, strategy)

    def compress(self, data, finish):
        z = self._z
        out = z.compress(data) if data else b""
        return out + z.flush(zlib.Z_FINISH if finish else zlib.Z_SYNC_FLUSH)


@implementer(ICompressorFactory)
class GzipCompressorFactory:
    """A compiled C{Gzip} compressor config."""

    contentEncoding = b"gzip"
    statsPrefix = "gzip"

    def __init__(self, level=-1, windowBits=12, memoryLevel=5, strategy=zlib.Z_DEFAULT_STRATEGY):
        self.level = level
        self.windowBits = windowBits
        self.memoryLevel = memoryLevel
        self.strategy = strategy

    def createCompressor(self):
        """A compressor for one body."""
        return _GzipCompressor(self.level, self.windowBits, self.memoryLevel, self.strategy)


@extension(Category.COMPRESSOR, "envoy.extensions.compression.gzip.compressor.v3.Gzip",
           "envoy.compression.gzip.compressor",
           fields=("memory_level", "compression_level", "compression_strategy", "window_bits",
                   "chunk_size"))
def createGzipCompressor(message, context):
    """Compile a C{Gzip} compressor config (C{chunk_size} only sizes Envoy's buffers)."""
    path = context.path + ".typed_config"
    level = message.compression_level
    return GzipCompressorFactory(
        level=-1 if level == compressor_pb2.Gzip.DEFAULT_COMPRESSION else level,
        windowBits=wrappedInRange(message, "window_bits", 12, 9, 15, path),
        memoryLevel=wrappedInRange(message, "memory_level", 5, 1, 9, path),
        strategy=_STRATEGIES[message.compression_strategy])


class _GzipDecompressor:
    __slots__ = ("_z", "_failed")

    def __init__(self, windowBits):
        self._z = zlib.decompressobj(_GZIP_HEADER + windowBits)
        self._failed = None

    def decompress(self, data):
        if self._failed is not None:
            return b"", self._failed
        try:
            return self._z.decompress(data), None
        except zlib.error as e:
            match = _ERROR_CODE.search(str(e))
            code = int(match.group(1)) if match else -3
            self._failed = ZLIB_ERRORS.get(code, "zlib_data_error")
            return b"", self._failed


@implementer(IDecompressorFactory)
class GzipDecompressorFactory:
    """A compiled C{Gzip} decompressor config."""

    contentEncoding = b"gzip"
    statsPrefix = "gzip"
    errorStats = tuple(sorted(ZLIB_ERRORS.values()))

    def __init__(self, windowBits=15):
        self.windowBits = windowBits

    def createDecompressor(self):
        """A decompressor for one body."""
        return _GzipDecompressor(self.windowBits)


@extension(Category.DECOMPRESSOR, "envoy.extensions.compression.gzip.decompressor.v3.Gzip",
           "envoy.compression.gzip.decompressor", fields=("window_bits", "chunk_size"))
def createGzipDecompressor(message, context):
    """Compile a C{Gzip} decompressor config."""
    path = context.path + ".typed_config"
    return GzipDecompressorFactory(wrappedInRange(message, "window_bits", 15, 9, 15, path))
