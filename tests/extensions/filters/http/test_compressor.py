"""
Tests for L{txenvoy.extensions.filters.http.compressor} and
L{txenvoy.extensions.filters.http.decompressor}.

The expected headers and stats are what Envoy 1.40 did with the same
configs (a gzip compressor with C{min_content_length: 100},
C{remove_accept_encoding_header} and C{uncompressible_response_codes: [404]},
a brotli and a zstd compressor after it, and a gzip decompressor); the
side-by-side run is C{tests/e2e/test_compression.py}.
"""

import gzip
import zlib

import brotli
import zstandard
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from txenvoy.config.errors import ConfigError
from txenvoy.http.filter import FilterDataStatus, FilterHeadersStatus
from txenvoy.interfaces import IHttpFilterFactory

from tests.extensions.filters.http.fakes import (
    FakeCallbacks,
    compileFilter,
    request,
    response,
    routeFor,
    routeTable,
    runtimeWith,
    makeContext,
)
from tests.http.hcm_harness import ROUTER, Harness

COMPRESSOR = "envoy.extensions.filters.http.compressor.v3.Compressor"
DECOMPRESSOR = "envoy.extensions.filters.http.decompressor.v3.Decompressor"
PREFIX = "http.ingress_http.compressor."
TEXT = b"hello compression " * 20


def library(kind="gzip", name=None, extra=""):
    types = {
        "gzip": "envoy.extensions.compression.gzip.compressor.v3.Gzip",
        "brotli": "envoy.extensions.compression.brotli.compressor.v3.Brotli",
        "zstd": "envoy.extensions.compression.zstd.compressor.v3.Zstd",
    }
    return ("compressor_library: {name: %s, typed_config: {'@type': type.googleapis.com/%s%s}}"
            % (name or kind, types[kind], extra))


GZIP_RESPONSE = """
%s
response_direction_config:
  common_config: {min_content_length: 100}
  remove_accept_encoding_header: true
  uncompressible_response_codes: [404]
request_direction_config:
  common_config:
    content_type: [application/octet-stream]
""" % (library("gzip", "text_optimized"),)


def compressor(text=None, **kw):
    return compileFilter(COMPRESSOR, text or library(), **kw)


class _Stream:
    """The compressor filters of one stream, sharing its stream info."""

    def __init__(self, *configs, route=None, filterConfigNames=None):
        self.callbacks = []
        self.filters = []
        first = None
        for i, config in enumerate(configs):
            callbacks = FakeCallbacks(route=route, filterConfigName=(
                filterConfigNames[i] if filterConfigNames else "envoy.filters.http.compressor"))
            if first is None:
                first = callbacks
            else:
                callbacks.streamInfo = first.streamInfo
                callbacks.store = first.store
                callbacks.dispatcher = first.dispatcher
            self.callbacks.append(callbacks)
            self.filters.append(config.createFilter(callbacks))

    def request(self, head, endStream=True):
        for f in self.filters:
            self.assertContinue(f.decodeHeaders(head, endStream))
        return head

    def response(self, head, endStream=False):
        for f in reversed(self.filters):
            self.assertContinue(f.encodeHeaders(head, endStream))
        return head

    @staticmethod
    def assertContinue(status):
        assert status == FilterHeadersStatus.Continue, status

    def counter(self, name):
        return self.callbacks[0].counter(name)


def names(head):
    return [n for n, _ in head.headers.items()]


class CompressorConfigTests(SynchronousTestCase):
    """Compiling a C{Compressor}."""

    def test_factory(self):
        verifyObject(IHttpFilterFactory, compressor())

    def test_libraryRequired(self):
        e = self.assertRaises(ConfigError, compressor, "choose_first: true")
        self.assertIn("typed_config: Proto constraint validation failed "
                      "(CompressorValidationError.CompressorLibrary: value is required)", str(e))

    def test_statusHeaderRefused(self):
        """C{status_header_enabled} is not implemented: refused with its path."""
        e = self.assertRaises(ConfigError, compressor,
                              library() + "\nresponse_direction_config: "
                                          "{status_header_enabled: true}")
        self.assertIn("typed_config.response_direction_config.status_header_enabled", str(e))

    def test_unknownLibrary(self):
        e = self.assertRaises(ConfigError, compressor,
                              "compressor_library: {name: x, typed_config: {'@type': "
                              "type.googleapis.com/envoy.extensions.compression.gzip."
                              "decompressor.v3.Gzip}}")
        self.assertIn("typed_config.compressor_library.typed_config", str(e))

    def test_gzipWindowBitsRange(self):
        e = self.assertRaises(ConfigError, compressor, library("gzip", extra=", window_bits: 20"))
        self.assertIn("compressor_library.typed_config.window_bits: Proto constraint", str(e))

    def test_brotliLiteralContextModelingRefused(self):
        e = self.assertRaises(ConfigError, compressor, library(
            "brotli", extra=", disable_literal_context_modeling: true"))
        self.assertIn("typed_config.disable_literal_context_modeling", str(e))

    def test_statsDeclared(self):
        """
        Envoy 1.40 shows every stat at zero from the start: the common ones
        under C{response.} with C{response_direction_config}, the header
        ones at the top.
        """
        from txenvoy.stats.store import StatsStore
        from txenvoy.testing.http_filter import FakeServer

        store = StatsStore()
        compressor(GZIP_RESPONSE, context=makeContext(server=FakeServer(store)))
        counters = sorted(n for n in store.snapshot().counters if "compressor" in n)
        base = PREFIX + "text_optimized.gzip."
        self.assertEqual(counters, sorted(
            [base + "response." + n for n in (
                "compressed", "not_compressed", "total_uncompressed_bytes",
                "total_compressed_bytes", "content_length_too_small")]
            + [base + "request." + n for n in (
                "compressed", "not_compressed", "total_uncompressed_bytes",
                "total_compressed_bytes", "content_length_too_small")]
            + [base + n for n in (
                "no_accept_header", "header_identity", "header_compressor_used",
                "header_compressor_overshadowed", "header_wildcard", "header_not_valid",
                "not_compressed_etag")]))


class ResponseTests(SynchronousTestCase, _Stream):
    """Response compression decisions, one gzip filter."""

    def start(self, acceptEncoding="gzip", text=GZIP_RESPONSE, route=None):
        _Stream.__init__(self, compressor(text), route=route)
        headers = [("accept-encoding", acceptEncoding)] if acceptEncoding is not None else []
        self.request(request("GET", "/", headers))

    def test_compressed(self):
        """
        Envoy 1.40: no content-length, content-encoding and vary added at
        the end (the codec writes them in Envoy's order, see
        L{ThroughConnectionManagerTests}).
        """
        self.start()
        head = self.response(response(200, [("content-type", "text/plain"),
                                            ("content-length", "360"),
                                            ("x-envoy-upstream-service-time", "1")]))
        self.assertEqual(list(head.headers.items()), [
            (b"content-type", b"text/plain"), (b"x-envoy-upstream-service-time", b"1"),
            (b"content-encoding", b"gzip"), (b"vary", b"Accept-Encoding")])
        f = self.filters[0]
        status, first = f.encodeData(TEXT[:200], False)
        self.assertEqual(status, FilterDataStatus.Continue)
        status, last = f.encodeData(TEXT[200:], True)
        self.assertEqual(gzip.decompress(first + last), TEXT)
        base = PREFIX + "text_optimized.gzip."
        self.assertEqual(self.counter(base + "response.compressed"), 1)
        self.assertEqual(self.counter(base + "header_compressor_used"), 1)
        self.assertEqual(self.counter(base + "response.total_uncompressed_bytes"), 360)
        self.assertEqual(self.counter(base + "response.total_compressed_bytes"),
                         len(first) + len(last))

    def test_flushedAsItComes(self):
        """Each piece decodes on its own (a sync flush), so streams are not held."""
        self.start()
        self.response(response(200, [("content-type", "text/plain")]))
        _, first = self.filters[0].encodeData(b"first part", False)
        self.assertEqual(zlib.decompressobj(16 + 15).decompress(first), b"first part")

    def test_trailersEndTheStream(self):
        """Envoy's C{encodeTrailers}: the compressor finishes, through C{addEncodedData}."""
        self.start()
        self.response(response(200, [("content-type", "text/plain")]))
        f = self.filters[0]
        _, first = f.encodeData(TEXT, False)
        f.encodeTrailers(None)
        self.assertEqual(gzip.decompress(first + b"".join(self.callbacks[0].addedEncoded)), TEXT)

    def test_acceptEncodingRemoved(self):
        self.start()
        head = request("GET", "/", [("accept-encoding", "gzip"), ("x", "1")])
        _Stream.__init__(self, compressor(GZIP_RESPONSE))
        self.request(head)
        self.assertEqual(names(head), [b"x"])

    def test_acceptEncodingKeptByDefault(self):
        _Stream.__init__(self, compressor())
        head = self.request(request("GET", "/", [("accept-encoding", "gzip")]))
        self.assertEqual(names(head), [b"accept-encoding"])

    def test_tooSmall(self):
        """Envoy 1.40: a small body is left alone and gets no vary."""
        self.start()
        head = self.response(response(200, [("content-type", "text/plain"),
                                            ("content-length", "4")]))
        self.assertEqual(names(head), [b"content-type", b"content-length"])
        base = PREFIX + "text_optimized.gzip."
        self.assertEqual(self.counter(base + "response.content_length_too_small"), 1)
        self.assertEqual(self.counter(base + "response.not_compressed"), 1)

    def test_contentTypeNotListed(self):
        self.start()
        head = self.response(response(200, [("content-type", "image/png"),
                                            ("content-length", "360")]))
        self.assertEqual(names(head), [b"content-type", b"content-length"])

    def test_contentTypeParametersAndCase(self):
        self.start()
        head = self.response(response(200, [("content-type", "Text/HTML; charset=utf-8")]))
        self.assertEqual(head.headers.get(b"content-encoding"), b"gzip")

    def test_noContentType(self):
        """Envoy 1.40 compressed a response without C{content-type}."""
        self.start()
        head = self.response(response(200, [("content-length", "360")]))
        self.assertEqual(head.headers.get(b"content-encoding"), b"gzip")

    def test_strongEtagRemoved(self):
        """Envoy 1.40 drops a strong etag of a body it compresses."""
        self.start()
        head = self.response(response(200, [("content-type", "text/plain"),
                                            ("etag", '"abc"')]))
        self.assertEqual(head.headers.get(b"etag"), None)
        self.assertEqual(head.headers.get(b"content-encoding"), b"gzip")

    def test_weakEtagKept(self):
        self.start()
        head = self.response(response(200, [("content-type", "text/plain"),
                                            ("etag", 'W/"abc"')]))
        self.assertEqual(head.headers.get(b"etag"), b'W/"abc"')

    def test_disableOnEtag(self):
        self.start(text=library() + "\ndisable_on_etag_header: true")
        head = self.response(response(200, [("content-type", "text/plain"),
                                            ("etag", '"abc"')]))
        self.assertEqual(names(head), [b"content-type", b"etag"])
        self.assertEqual(self.counter(PREFIX + "gzip.gzip.not_compressed_etag"), 1)

    def test_varyAppended(self):
        """Envoy 1.40: C{vary: Origin} became C{Origin, Accept-Encoding} in place."""
        self.start()
        head = self.response(response(200, [("content-type", "text/plain"),
                                            ("vary", "Origin"), ("x", "1")]))
        self.assertEqual(list(head.headers.items())[:3], [
            (b"content-type", b"text/plain"), (b"vary", b"Origin, Accept-Encoding"),
            (b"x", b"1")])

    def test_varyAlreadyThere(self):
        self.start()
        head = self.response(response(200, [("content-type", "text/plain"),
                                            ("vary", "accept-encoding")]))
        self.assertEqual(head.headers.getAll(b"vary"), [b"accept-encoding"])

    def test_alreadyEncoded(self):
        self.start()
        head = self.response(response(200, [("content-type", "text/plain"),
                                            ("content-encoding", "br")]))
        self.assertEqual(head.headers.getAll(b"content-encoding"), [b"br"])
        self.assertEqual(head.headers.get(b"vary"), None)

    def test_noTransform(self):
        self.start()
        head = self.response(response(200, [("content-type", "text/plain"),
                                            ("cache-control", "public, No-Transform")]))
        self.assertEqual(head.headers.get(b"content-encoding"), None)

    def test_uncompressibleStatus(self):
        """Envoy 1.40: a 404 listed is not compressed, but gets vary and counts the header."""
        self.start()
        head = self.response(response(404, [("content-type", "text/plain"),
                                            ("content-length", "360")]))
        self.assertEqual(names(head), [b"content-type", b"content-length", b"vary"])
        self.assertEqual(self.counter(PREFIX + "text_optimized.gzip.header_compressor_used"), 1)

    def test_headersOnlyResponse(self):
        """A response without a body (HEAD) is not compressed; Envoy still adds vary."""
        self.start()
        head = self.response(response(200, [("content-type", "text/plain"),
                                            ("content-length", "360")]), endStream=True)
        self.assertEqual(names(head), [b"content-type", b"content-length", b"vary"])

    def test_noAcceptEncoding(self):
        self.start(acceptEncoding=None)
        head = self.response(response(200, [("content-type", "text/plain")]))
        self.assertEqual(names(head), [b"content-type", b"vary"])
        self.assertEqual(self.counter(PREFIX + "text_optimized.gzip.no_accept_header"), 1)

    def test_runtimeDisabled(self):
        text = library() + ("\nresponse_direction_config: {common_config: {enabled: "
                            "{default_value: true, runtime_key: gz.on}}}")
        config = compressor(text, context=makeContext(runtime=runtimeWith({"gz.on": 0})))
        _Stream.__init__(self, config)
        self.request(request("GET", "/", [("accept-encoding", "gzip")]))
        head = self.response(response(200, [("content-type", "text/plain")]))
        self.assertEqual(names(head), [b"content-type"])


ROUTES = """
virtual_hosts:
- name: all
  domains: ["*"]
  routes:
  - match: {prefix: "/off/"}
    route: {cluster: origin}
    typed_per_filter_config:
      envoy.filters.http.compressor:
        "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.CompressorPerRoute
        disabled: true
  - match: {prefix: "/keep/"}
    route: {cluster: origin}
    typed_per_filter_config:
      envoy.filters.http.compressor:
        "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.CompressorPerRoute
        overrides: {response_direction_config: {remove_accept_encoding_header: false}}
  - match: {prefix: "/"}
    route: {cluster: origin}
"""


class PerRouteTests(SynchronousTestCase, _Stream):
    """C{CompressorPerRoute}."""

    def start(self, path):
        table = routeTable(ROUTES)
        _Stream.__init__(self, compressor(GZIP_RESPONSE), route=routeFor(table, path.encode()))
        return self.request(request("GET", path, [("accept-encoding", "gzip")]))

    def test_disabled(self):
        """Envoy 1.40: disabled for the route, accept-encoding kept, vary not added."""
        head = self.start("/off/x")
        self.assertEqual(names(head), [b"accept-encoding"])
        out = self.response(response(200, [("content-type", "text/plain")]))
        self.assertEqual(names(out), [b"content-type"])

    def test_keepAcceptEncoding(self):
        head = self.start("/keep/x")
        self.assertEqual(names(head), [b"accept-encoding"])
        out = self.response(response(200, [("content-type", "text/plain")]))
        self.assertEqual(out.headers.get(b"content-encoding"), b"gzip")


class NegotiationTests(SynchronousTestCase, _Stream):
    """
    Envoy's C{chooseEncoding} over gzip, brotli and zstd filters (zstd with
    C{choose_first}), none removing accept-encoding.
    """

    def encoding(self, acceptEncoding):
        _Stream.__init__(self, compressor(library("gzip")), compressor(library("brotli")),
                         compressor(library("zstd") + "\nchoose_first: true"),
                         filterConfigNames=["gzip", "br", "zstd"])
        self.request(request("GET", "/", [("accept-encoding", acceptEncoding)]))
        head = self.response(response(200, [("content-type", "text/plain")]))
        return head.headers.get(b"content-encoding")

    def test_single(self):
        self.assertEqual(self.encoding("br"), b"br")

    def test_qValues(self):
        self.assertEqual(self.encoding("gzip;q=0.5, br;q=0.8"), b"br")

    def test_tieChooseFirst(self):
        self.assertEqual(self.encoding("gzip, br, zstd"), b"zstd")

    def test_tieFirstListed(self):
        self.assertEqual(self.encoding("br, gzip"), b"br")

    def test_wildcardFirstRegistered(self):
        self.assertEqual(self.encoding("*"), b"gzip")
        self.assertEqual(self.counter(PREFIX + "gzip.gzip.header_wildcard"), 1)

    def test_qZeroExcludes(self):
        self.assertEqual(self.encoding("gzip;q=0, *"), b"br")

    def test_identity(self):
        self.assertEqual(self.encoding("identity"), None)
        self.assertEqual(self.counter(PREFIX + "gzip.gzip.header_identity"), 1)

    def test_notValid(self):
        self.assertEqual(self.encoding("bogus"), None)
        self.assertEqual(self.counter(PREFIX + "gzip.gzip.header_not_valid"), 1)

    def test_badQSkipped(self):
        self.assertEqual(self.encoding("gzip;q=abc"), None)

    def test_caseSensitive(self):
        """Envoy 1.40 did not compress for C{GZIP}."""
        self.assertEqual(self.encoding("GZIP"), None)

    def test_overshadowed(self):
        self.assertEqual(self.encoding("br"), b"br")
        self.assertEqual(self.counter(PREFIX + "gzip.gzip.header_compressor_overshadowed"), 1)
        self.assertEqual(self.counter(PREFIX + "brotli.brotli.header_compressor_used"), 1)

    def test_eachLibraryDecodes(self):
        for coding, decode in ((b"gzip", gzip.decompress), (b"br", brotli.decompress),
                               (b"zstd", lambda b: zstandard.ZstdDecompressor()
                                .decompressobj().decompress(b))):
            self.assertEqual(self.encoding(coding.decode()), coding)
            f = self.filters[[b"gzip", b"br", b"zstd"].index(coding)]
            _, a = f.encodeData(TEXT[:100], False)
            _, b = f.encodeData(TEXT[100:], True)
            self.assertEqual(decode(a + b), TEXT)


class RequestTests(SynchronousTestCase, _Stream):
    """C{request_direction_config}."""

    def test_compressed(self):
        """Envoy 1.40: content-length removed, content-encoding appended."""
        _Stream.__init__(self, compressor(GZIP_RESPONSE))
        head = request("POST", "/", [("content-type", "application/octet-stream"),
                                     ("content-length", "500"), ("x-request-id", "r")])
        self.request(head, endStream=False)
        self.assertEqual(list(head.headers.items()), [
            (b"content-type", b"application/octet-stream"), (b"x-request-id", b"r"),
            (b"content-encoding", b"gzip")])
        _, out = self.filters[0].decodeData(b"x" * 500, True)
        self.assertEqual(gzip.decompress(out), b"x" * 500)
        base = PREFIX + "text_optimized.gzip.request."
        self.assertEqual(self.counter(base + "compressed"), 1)
        self.assertEqual(self.counter(base + "total_uncompressed_bytes"), 500)

    def test_smallNotCompressed(self):
        _Stream.__init__(self, compressor(GZIP_RESPONSE))
        head = request("POST", "/", [("content-type", "application/octet-stream"),
                                     ("content-length", "4")])
        self.request(head, endStream=False)
        self.assertEqual(head.headers.get(b"content-encoding"), None)
        base = PREFIX + "text_optimized.gzip.request."
        self.assertEqual(self.counter(base + "content_length_too_small"), 1)
        self.assertEqual(self.counter(base + "not_compressed"), 1)

    def test_notConfigured(self):
        """Without C{request_direction_config} requests are counted, not compressed."""
        _Stream.__init__(self, compressor())
        head = request("POST", "/", [("content-type", "text/plain")])
        self.request(head, endStream=False)
        self.assertEqual(head.headers.get(b"content-encoding"), None)
        self.assertEqual(self.counter(PREFIX + "gzip.gzip.request.not_compressed"), 1)

    def test_trailers(self):
        _Stream.__init__(self, compressor(GZIP_RESPONSE))
        self.request(request("POST", "/", [("content-type", "application/octet-stream")]),
                     endStream=False)
        f = self.filters[0]
        _, first = f.decodeData(b"hello", False)
        f.decodeTrailers(None)
        self.assertEqual(gzip.decompress(first + b"".join(self.callbacks[0].addedDecoded)),
                         b"hello")


class ThroughConnectionManagerTests(SynchronousTestCase):
    """The compressor in a real connection manager, bytes on the wire."""

    def harness(self):
        return Harness(self, routes='[{match: {prefix: "/"}, route: {cluster: origin}}]',
                       filters=[{"name": "envoy.filters.http.compressor", "typed_config": {
                           "@type": "type.googleapis.com/" + COMPRESSOR,
                           "request_direction_config": {},
                           "compressor_library": {"name": "gzip", "typed_config": {
                               "@type": "type.googleapis.com/envoy.extensions.compression."
                                        "gzip.compressor.v3.Gzip"}}}}, ROUTER])

    def test_streamedResponse(self):
        h = self.harness()
        down = h.connect()
        down.send(b"GET /o HTTP/1.1\r\nhost: a\r\naccept-encoding: gzip\r\n\r\n")
        up = h.upstream()
        up.respond(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
                   b"transfer-encoding: chunked\r\n\r\n64\r\n" + TEXT[:100] + b"\r\n")
        up.respond(b"%x\r\n%s\r\n0\r\n\r\n" % (len(TEXT) - 100, TEXT[100:]))
        r = down.responses()[0]
        # On the wire: the filter added content-encoding, then vary.
        self.assertEqual(r.names(), ["content-type", "x-envoy-upstream-service-time",
                                     "content-encoding", "vary", "date", "server",
                                     "transfer-encoding"])
        self.assertEqual(r.header("content-encoding"), "gzip")
        self.assertEqual(r.header("transfer-encoding"), "chunked")
        self.assertEqual(gzip.decompress(r.body), TEXT)

    def test_requestWithTrailers(self):
        """The compressed request body ends before the trailers (C{addDecodedData})."""
        h = self.harness()
        down = h.connect()
        down.send(b"POST /o HTTP/1.1\r\nhost: a\r\ncontent-type: text/plain\r\n"
                  b"transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-t: 1\r\n\r\n")
        up = h.upstream()
        received = up.received()
        head, _, body = received.partition(b"\r\n\r\n")
        self.assertIn(b"content-encoding: gzip", head)
        chunks = []
        while True:
            size, _, body = body.partition(b"\r\n")
            if not int(size, 16):
                break
            chunks.append(body[:int(size, 16)])
            body = body[int(size, 16) + 2:]
        self.assertEqual(gzip.decompress(b"".join(chunks)), b"hello")


DECOMPRESS = """
decompressor_library:
  name: upstream_gzip
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.compression.gzip.decompressor.v3.Gzip
"""
DPREFIX = "http.ingress_http.decompressor.upstream_gzip.gzip."


class DecompressorTests(SynchronousTestCase):
    """The decompressor filter."""

    def start(self, text=DECOMPRESS, headers=(), endStream=True):
        self.callbacks = FakeCallbacks()
        self.filter = compileFilter(DECOMPRESSOR, text).createFilter(self.callbacks)
        head = request("GET", "/", list(headers))
        self.filter.decodeHeaders(head, endStream)
        return head

    def test_advertises(self):
        """Envoy 1.40 appends the encoding to accept-encoding, even for a GET."""
        head = self.start(headers=[("x-request-id", "r")])
        self.assertEqual(list(head.headers.items()),
                         [(b"x-request-id", b"r"), (b"accept-encoding", b"gzip")])
        head = self.start(headers=[("accept-encoding", "br")])
        self.assertEqual(head.headers.get(b"accept-encoding"), b"br,gzip")

    def test_advertiseOff(self):
        head = self.start(DECOMPRESS + "request_direction_config: "
                                       "{advertise_accept_encoding: false}")
        self.assertEqual(head.headers.get(b"accept-encoding"), None)

    def test_response(self):
        self.start()
        head = response(200, [("content-type", "text/plain"), ("content-encoding", "gzip"),
                              ("content-length", "40")])
        self.filter.encodeHeaders(head, False)
        self.assertEqual(names(head), [b"content-type"])
        packed = gzip.compress(TEXT)
        _, a = self.filter.encodeData(packed[:10], False)
        _, b = self.filter.encodeData(packed[10:], True)
        self.assertEqual(a + b, TEXT)
        self.assertEqual(self.callbacks.counter(DPREFIX + "response.decompressed"), 1)
        self.assertEqual(self.callbacks.counter(DPREFIX + "response.total_compressed_bytes"),
                         len(packed))
        self.assertEqual(self.callbacks.counter(DPREFIX + "response.total_uncompressed_bytes"),
                         len(TEXT))

    def test_corruptResponse(self):
        """Envoy 1.40: a corrupt gzip body becomes an empty one; zlib_data_error counts."""
        self.start()
        self.filter.encodeHeaders(response(200, [("content-encoding", "gzip")]), False)
        status, out = self.filter.encodeData(b"not gzip at all", True)
        self.assertEqual((status, out), (FilterDataStatus.Continue, b""))
        self.assertEqual(self.callbacks.counter(
            DPREFIX + "decompressor_library.zlib_data_error"), 1)

    def test_otherEncodingLeft(self):
        self.start()
        head = response(200, [("content-encoding", "br"), ("content-length", "4")])
        self.filter.encodeHeaders(head, False)
        self.assertEqual(self.filter.encodeData(b"abcd", True), FilterDataStatus.Continue)
        self.assertEqual(self.callbacks.counter(DPREFIX + "response.not_decompressed"), 1)

    def test_firstCodingRemoved(self):
        head = self.start(headers=[("content-encoding", "gzip, br")], endStream=False)
        self.assertEqual(head.headers.get(b"content-encoding"), b"br")
        _, out = self.filter.decodeData(gzip.compress(b"hi"), True)
        self.assertEqual(out, b"hi")

    def test_noTransform(self):
        self.start()
        head = response(200, [("content-encoding", "gzip"), ("cache-control", "no-transform")])
        self.filter.encodeHeaders(head, False)
        self.assertEqual(head.headers.get(b"content-encoding"), b"gzip")

    def test_libraries(self):
        for kind, encoding, pack in (
                ("brotli", b"br", brotli.compress),
                ("zstd", b"zstd", lambda b: zstandard.ZstdCompressor().compress(b))):
            self.start("decompressor_library: {name: d, typed_config: {'@type': "
                       "type.googleapis.com/envoy.extensions.compression.%s.decompressor.v3."
                       "%s}}" % (kind, kind.title()))
            self.filter.encodeHeaders(response(200, [("content-encoding", encoding.decode())]),
                                      False)
            _, out = self.filter.encodeData(pack(TEXT), True)
            self.assertEqual(out, TEXT)
            _, out = self.filter.encodeData(b"junk", True)
            self.assertEqual(out, b"")
