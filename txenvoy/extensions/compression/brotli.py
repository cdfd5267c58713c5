# -*- test-case-name: tests.extensions.filters.http.test_compressor -*-
"""
C{envoy.compression.brotli.compressor} and
C{envoy.compression.brotli.decompressor}, through the C{brotli} bindings,
with Envoy's defaults (quality 3, window bits 18, input block bits 24).

Each piece is flushed so that a streamed body goes out as it comes; a body
that does not decode counts in C{decompressor_library.brotli_error} and what
follows is dropped.
"""

import brotli as _brotli
from zope.interface import implementer

from envoy.extensions.compression.brotli.compressor.v3 import brotli_pb2 as compressor_pb2
from envoy.extensions.compression.brotli.decompressor.v3 import brotli_pb2 as _decompressor_pb2  # noqa: F401,E501

from txenvoy.config.registry import Category, extension
from txenvoy.extensions.compression import wrappedInRange
from txenvoy.interfaces import ICompressorFactory, IDecompressorFactory

__all__ = ["BrotliCompressorFactory", "BrotliDecompressorFactory"]

_MODES = {
    compressor_pb2.Brotli.DEFAULT: _brotli.MODE_GENERIC,
    compressor_pb2.Brotli.GENERIC: _brotli.MODE_GENERIC,
    compressor_pb2.Brotli.TEXT: _brotli.MODE_TEXT,
    compressor_pb2.Brotli.FONT: _brotli.MODE_FONT,
}



class _BrotliCompressor:
    __slots__ = ("_c",)

    def __init__(self, mode, quality, windowBits, inputBlockBits):
        self._c = _brotli.Compressor(mode=mode, quality=quality, lgwin=windowBits,
                                     lgblock=inputBlockBits)

    def compress(self, data, finish):
        c = self._c
        out = c.process(data) if data else b""
        return out + (c.finish() if finish else c.flush())


@implementer(ICompressorFactory)
class BrotliCompressorFactory:
    """A compiled C{Brotli} compressor config."""

    contentEncoding = b"br"
    statsPrefix = "brotli"

    def __init__(self, mode=_brotli.MODE_GENERIC, quality=3, windowBits=18, inputBlockBits=24):
        self.mode = mode
        self.quality = quality
        self.windowBits = windowBits
        self.inputBlockBits = inputBlockBits

    def createCompressor(self):
        """A compressor for one body."""
        return _BrotliCompressor(self.mode, self.quality, self.windowBits, self.inputBlockBits)


@extension(Category.COMPRESSOR, "envoy.extensions.compression.brotli.compressor.v3.Brotli",
           "envoy.compression.brotli.compressor",
           fields=("quality", "encoder_mode", "window_bits", "input_block_bits", "chunk_size"))
def createBrotliCompressor(message, context):
    """
    Compile a C{Brotli} compressor config (C{disable_literal_context_modeling}
    is not offered by the bindings and is refused).
    """
    path = context.path + ".typed_config"
    return BrotliCompressorFactory(
        mode=_MODES[message.encoder_mode],
        quality=wrappedInRange(message, "quality", 3, 0, 11, path),
        windowBits=wrappedInRange(message, "window_bits", 18, 10, 24, path),
        inputBlockBits=wrappedInRange(message, "input_block_bits", 24, 16, 24, path))


class _BrotliDecompressor:
    __slots__ = ("_d", "_failed")

    def __init__(self):
        self._d = _brotli.Decompressor()
        self._failed = None

    def decompress(self, data):
        if self._failed is not None:
            return b"", self._failed
        try:
            return self._d.process(data), None
        except _brotli.error:
            self._failed = "brotli_error"
            return b"", self._failed


@implementer(IDecompressorFactory)
class BrotliDecompressorFactory:
    """A compiled C{Brotli} decompressor config."""

    contentEncoding = b"br"
    statsPrefix = "brotli"
    errorStats = ("brotli_error", "brotli_output_overflow", "brotli_redundant_input")

    def createDecompressor(self):
        """A decompressor for one body."""
        return _BrotliDecompressor()


@extension(Category.DECOMPRESSOR, "envoy.extensions.compression.brotli.decompressor.v3.Brotli",
           "envoy.compression.brotli.decompressor",
           fields=("disable_ring_buffer_reallocation", "chunk_size"))
def createBrotliDecompressor(message, context):
    """Compile a C{Brotli} decompressor config (both fields only size buffers)."""
    return BrotliDecompressorFactory()
