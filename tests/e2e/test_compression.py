"""
End-to-end comparison of the compressor and decompressor filters: a real
C{twistd -n envoy} and a real Envoy 1.40 with the same config, side by
side in front of one small threaded origin, asked the same raw requests.

The client side has a gzip compressor (C{min_content_length: 100},
C{remove_accept_encoding_header}, C{uncompressible_response_codes},
request compression for C{application/octet-stream}, per-route
C{disabled} and C{overrides}), then a brotli one (the deprecated
C{disable_on_etag_header}) and a zstd one (C{choose_first}); a second
listener has a gzip decompressor. Every response (status line, header
names and values in order, the decoded body, what the origin received) and
every stat but the compressed byte counts (zlib builds flush differently)
must be the same.
"""

import functools
import gzip
import json
import re
from http.server import BaseHTTPRequestHandler

import brotli
import zstandard
from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.configs import bootstrap, cluster, httpListener
from tests.e2e.harness import OriginSideBySide, adminStats, freePort, rawRequest, startProxy
from tests.e2e.harness import exchangeToClose as _exchange

TEXT = b"hello compression " * 20

#: path -> (status, headers, body, with a content-length)
_RESPONSES = {
    "text": (200, [("content-type", "text/plain")], TEXT, True),
    "small": (200, [("content-type", "text/plain")], b"tiny", True),
    "chunked": (200, [("content-type", "text/html; charset=utf-8")], TEXT * 5, False),
    "image": (200, [("content-type", "image/png")], TEXT, True),
    "notype": (200, [], TEXT, True),
    "etag": (200, [("content-type", "text/plain"), ("etag", '"abc"')], TEXT, True),
    "weak": (200, [("content-type", "text/plain"), ("etag", 'W/"abc"')], TEXT, True),
    "vary": (200, [("content-type", "text/plain"), ("vary", "Origin")], TEXT, True),
    "encoded": (200, [("content-type", "text/plain"), ("content-encoding", "br")], TEXT, True),
    "notransform": (200, [("content-type", "text/plain"), ("cache-control", "no-transform")],
                    TEXT, True),
    "notfound": (404, [("content-type", "text/plain")], TEXT, True),
    "gz": (200, [("content-type", "text/plain"), ("content-encoding", "gzip")],
           gzip.compress(TEXT), True),
    "corrupt": (200, [("content-type", "text/plain"), ("content-encoding", "gzip")],
                b"\x1f\x8b\x08\x00garbage-not-deflate" * 3, True),
}


class _Handler(BaseHTTPRequestHandler):
    """Answers by the last path segment; C{echo} echoes the request as JSON."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _body(self):
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if not size:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def _answer(self):
        name = self.path.split("?")[0].rsplit("/", 1)[-1]
        body = self._body()
        if name == "echo":
            out = json.dumps({"method": self.command,
                              "headers": [[k.lower(), v] for k, v in self.headers.items()],
                              "body": body.decode("latin-1")}).encode()
            status, headers, body, framed = 200, [("content-type", "application/json")], out, True
        else:
            status, headers, body, framed = _RESPONSES.get(name, (404, [], b"none", True))
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if framed:
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            return
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for i in range(0, len(body), 100):
            piece = body[i:i + 100]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")

    do_GET = do_POST = do_HEAD = _answer


CONFIG = bootstrap(
    listeners=[
        httpListener("compress", "%(compress)d", statPrefix="comp", routes="""
            - match: { prefix: "/off/" }
              route: { cluster: origin }
              typed_per_filter_config:
                gzip:
                  "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.CompressorPerRoute
                  disabled: true
            - match: { prefix: "/keep/" }
              route: { cluster: origin }
              typed_per_filter_config:
                gzip:
                  "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.CompressorPerRoute
                  overrides:
                    response_direction_config:
                      remove_accept_encoding_header: false
            - match: { prefix: "/" }
              route: { cluster: origin }
            """, httpFilters="""
            - name: gzip
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor
                response_direction_config:
                  common_config:
                    min_content_length: 100
                  remove_accept_encoding_header: true
                  uncompressible_response_codes: [404]
                request_direction_config:
                  common_config:
                    enabled: { default_value: true, runtime_key: gzip.request.enabled }
                    content_type: [application/octet-stream]
                compressor_library:
                  name: text_optimized
                  typed_config:
                    "@type": type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip
                    memory_level: 3
                    window_bits: 10
                    compression_level: BEST_COMPRESSION
            - name: brotli
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor
                disable_on_etag_header: true
                compressor_library:
                  name: br
                  typed_config:
                    "@type": type.googleapis.com/envoy.extensions.compression.brotli.compressor.v3.Brotli
                    quality: 5
            - name: zstd
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor
                choose_first: true
                compressor_library:
                  name: zstd
                  typed_config:
                    "@type": type.googleapis.com/envoy.extensions.compression.zstd.compressor.v3.Zstd
                    compression_level: 5
            """),
        httpListener("decompress", "%(decompress)d", statPrefix="decomp", httpFilters="""
            - name: envoy.filters.http.decompressor
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.http.decompressor.v3.Decompressor
                decompressor_library:
                  name: upstream_gzip
                  typed_config:
                    "@type": type.googleapis.com/envoy.extensions.compression.gzip.decompressor.v3.Gzip
            """),
    ],
    clusters=[cluster("origin")])


_request = functools.partial(rawRequest, host="a")


_DECODERS = {
    b"gzip": gzip.decompress,
    b"br": brotli.decompress,
    b"zstd": lambda b: zstandard.ZstdDecompressor().decompressobj().decompress(b),
}


def _normalized(raw):
    """The status line, headers (volatile values masked) and the decoded body."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b": ")
        if name == b"date":
            continue
        if name == b"x-envoy-upstream-service-time":
            value = b"N"
        headers.append((name, value))
    fields = dict(headers)
    if fields.get(b"transfer-encoding") == b"chunked":
        out = []
        while True:
            size, _, body = body.partition(b"\r\n")
            size = int(size, 16)
            if not size:
                break
            out.append(body[:size])
            body = body[size + 2:]
        body = b"".join(out)
    decode = _DECODERS.get(fields.get(b"content-encoding"))
    if decode is not None:
        try:
            body = b"decoded: " + decode(body)
        except Exception:
            # An upstream's own content-encoding, passed through as it is.
            pass
    if body.startswith(b'{"method"'):
        # What the origin received: a request body the proxy compressed is
        # compared decoded (zlib builds differ in the bytes they make).
        echo = json.loads(body)
        if ["content-encoding", "gzip"] in echo["headers"]:
            echo["body"] = "decoded: " + gzip.decompress(
                echo["body"].encode("latin-1")).decode("latin-1")
            body = json.dumps(echo).encode()
            headers = [(n, b"N" if n == b"content-length" else v) for n, v in headers]
    body = re.sub(rb'"x-request-id", "[^"]*"', b'"x-request-id", "R"', body)
    body = re.sub(rb'"host", "[^"]*"', b'"host", "H"', body)
    return lines[0], headers, body


_ENCODINGS = ["br", "zstd", "gzip;q=0.5, br;q=0.8", "*", "identity", "gzip;q=0",
              "br, zstd, gzip", "bogus", "gzip;q=abc", "GZIP", "gzip;q=0.3,*;q=0.5"]

COMPRESS_CASES = (
    [_request("/a/" + name, "accept-encoding: gzip") for name in (
        "text", "small", "chunked", "image", "notype", "etag", "weak", "vary", "encoded",
        "notransform", "notfound", "echo")]
    + [_request(prefix + "text", "accept-encoding: " + ae)
       for ae in _ENCODINGS for prefix in ("/a/", "/keep/")]
    + [_request("/off/text", "accept-encoding: gzip"),
       _request("/off/echo", "accept-encoding: gzip"),
       _request("/keep/echo", "accept-encoding: gzip"),
       _request("/a/text", method="HEAD"),
       _request("/a/text", "accept-encoding: gzip", method="HEAD"),
       _request("/a/echo", "content-type: application/octet-stream", method="POST",
                body=b"x" * 500),
       _request("/a/echo", "content-type: application/octet-stream", method="POST",
                body=b"tiny"),
       _request("/a/echo", "content-type: text/plain", method="POST", body=b"x" * 500),
       _request("/a/echo", "content-type: application/octet-stream", "content-encoding: br",
                method="POST", body=b"x" * 500),
       b"POST /a/echo HTTP/1.1\r\nhost: a\r\nconnection: close\r\n"
       b"content-type: application/octet-stream\r\ntransfer-encoding: chunked\r\n\r\n"
       b"5\r\nhello\r\n0\r\nx-t: 1\r\n\r\n"])

DECOMPRESS_CASES = [
    _request("/a/gz"), _request("/a/corrupt"), _request("/a/text"), _request("/a/echo"),
    _request("/a/echo", "accept-encoding: br"),
    _request("/a/echo", "content-encoding: gzip", method="POST",
             body=gzip.compress(b"hello world " * 10)),
    _request("/a/echo", "content-encoding: gzip, br", method="POST",
             body=gzip.compress(b"hello world " * 10)),
    _request("/a/echo", "content-encoding: gzip", method="POST", body=b"notgzip"),
    _request("/a/echo", "content-encoding: gzip", "cache-control: no-transform",
             method="POST", body=gzip.compress(b"hello")),
]


class _Deployment:
    """One proxy (Envoy or txenvoy) with its ports."""

    def __init__(self, real, originPort):
        self.admin, self.compress, self.decompress = freePort(), freePort(), freePort()
        config = CONFIG % dict(admin=self.admin, compress=self.compress,
                               decompress=self.decompress, origin=originPort)
        self.proxy = startProxy(real, config, self.decompress, self.admin)
        self.proxy.waitPort(self.compress)

    def stats(self):
        return {name: value for name, value in adminStats(self.admin).items()
                if "compressor." in name}

    def stop(self):
        self.proxy.stop()


class CompressionSideBySideTests(OriginSideBySide, SynchronousTestCase):
    """Envoy 1.40 and txenvoy, the same compression config, the same requests."""

    originHandler = _Handler
    deployment = _Deployment

    def compare(self, port, cases):
        for raw in cases:
            expected = _normalized(_exchange(getattr(self.envoy, port), raw))
            got = _normalized(_exchange(getattr(self.txenvoy, port), raw))
            self.assertEqual(got, expected, raw)

    def test_compressor(self):
        """
        Every compressor request alike, then the same stats (but the
        compressed byte counts, only checked to be there).
        """
        self.compare("compress", COMPRESS_CASES)
        expected, got = self.envoy.stats(), self.txenvoy.stats()
        compressed = [n for n in expected
                      if ".compressor." in n and n.endswith("total_compressed_bytes")]
        for name in compressed:
            self.assertEqual(got.pop(name) > 0, expected.pop(name) > 0, name)
        self.assertEqual(
            {n: v for n, v in got.items() if ".decompressor." not in n},
            {n: v for n, v in expected.items() if ".decompressor." not in n})

    def test_decompressor(self):
        """
        Envoy 1.40: decoded bodies both ways, accept-encoding advertised,
        a corrupt body answered 200 with what could be decoded (nothing),
        counted in C{zlib_data_error}.
        """
        before = self.txenvoy.stats()
        self.compare("decompress", DECOMPRESS_CASES)
        expected = {n: v for n, v in self.envoy.stats().items() if ".decompressor." in n}
        got = {n: v for n, v in self.txenvoy.stats().items() if ".decompressor." in n}
        self.assertEqual(got, expected)
        self.assertEqual(
            got["http.decomp.decompressor.upstream_gzip.gzip.decompressor_library."
                "zlib_data_error"]
            - before["http.decomp.decompressor.upstream_gzip.gzip.decompressor_library."
                     "zlib_data_error"], 2)
