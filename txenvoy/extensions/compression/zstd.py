# -*- test-case-name: tests.extensions.filters.http.test_compressor -*-
"""
C{envoy.compression.zstd.compressor} and
C{envoy.compression.zstd.decompressor}, through the C{zstandard}
bindings, with Envoy's defaults (level 3, no checksum).

Each piece is flushed as a zstd block so that a streamed body goes out as
it comes; a body that does not decode counts in
C{decompressor_library.zstd_generic_error} and what follows is dropped.
Dictionaries are not supported and are refused.
"""

import zstandard
from zope.interface import implementer

from envoy.extensions.compression.zstd.compressor.v3 import zstd_pb2 as compressor_pb2
from envoy.extensions.compression.zstd.decompressor.v3 import zstd_pb2 as _decompressor_pb2  # noqa: F401,E501

from txenvoy.config.registry import Category, extension
from txenvoy.interfaces import ICompressorFactory, IDecompressorFactory

__all__ = ["ZstdCompressorFactory", "ZstdDecompressorFactory"]

_FLUSH_BLOCK = zstandard.COMPRESSOBJ_FLUSH_BLOCK
_FLUSH_FINISH = zstandard.COMPRESSOBJ_FLUSH_FINISH


class _ZstdCompressor:
    __slots__ = ("_c",)

    def __init__(self, compressor):
        self._c = compressor.compressobj()

    def compress(self, data, finish):
        c = self._c
        out = c.compress(data) if data else b""
        return out + c.flush(_FLUSH_FINISH if finish else _FLUSH_BLOCK)


@implementer(ICompressorFactory)
class ZstdCompressorFactory:
    """A compiled C{Zstd} compressor config."""

    contentEncoding = b"zstd"
    statsPrefix = "zstd"

    def __init__(self, level=3, checksum=False, strategy=0):
        if strategy:
            params = zstandard.ZstdCompressionParameters.from_level(
                level, strategy=strategy, write_checksum=checksum)
            self._compressor = zstandard.ZstdCompressor(compression_params=params)
        else:
            self._compressor = zstandard.ZstdCompressor(level=level, write_checksum=checksum)

    def createCompressor(self):
        """A compressor for one body."""
        return _ZstdCompressor(self._compressor)


@extension(Category.COMPRESSOR, "envoy.extensions.compression.zstd.compressor.v3.Zstd",
           "envoy.compression.zstd.compressor",
           fields=("compression_level", "enable_checksum", "strategy", "chunk_size"))
def createZstdCompressor(message, context):
    """Compile a C{Zstd} compressor config."""
    level = message.compression_level.value if message.HasField("compression_level") else 3
    return ZstdCompressorFactory(level, message.enable_checksum, int(message.strategy))


class _ZstdDecompressor:
    __slots__ = ("_d", "_failed")

    def __init__(self):
        self._d = zstandard.ZstdDecompressor().decompressobj()
        self._failed = None

    def decompress(self, data):
        if self._failed is not None:
            return b"", self._failed
        try:
            return self._d.decompress(data), None
        except zstandard.ZstdError:
            self._failed = "zstd_generic_error"
            return b"", self._failed


@implementer(IDecompressorFactory)
class ZstdDecompressorFactory:
    """A compiled C{Zstd} decompressor config."""

    contentEncoding = b"zstd"
    statsPrefix = "zstd"
    errorStats = ("zstd_checksum_wrong_error", "zstd_dictionary_error", "zstd_generic_error",
                  "zstd_memory_error")

    def createDecompressor(self):
        """A decompressor for one body."""
        return _ZstdDecompressor()


@extension(Category.DECOMPRESSOR, "envoy.extensions.compression.zstd.decompressor.v3.Zstd",
           "envoy.compression.zstd.decompressor", fields=("chunk_size",))
def createZstdDecompressor(message, context):
    """Compile a C{Zstd} decompressor config."""
    return ZstdDecompressorFactory()
