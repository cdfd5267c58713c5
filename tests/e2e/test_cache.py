"""
End-to-end comparison of C{envoy.filters.http.cache} with the simple HTTP
cache: a real C{twistd -n envoy} and a real Envoy 1.40 run the same config,
each before its own origin, and get the same sequence of requests (fresh
hits, responses that may not be kept, C{vary}, validation of stale
responses with C{304}s, requests that bypass the cache). Every reply
(status line, headers in order, body, C{age}) and what each origin was
asked must be the same.

Responses with C{vary} are left to the unit tests: Envoy 1.40 exits on
the first one it is given to keep (observed with C{allowed_vary_headers}
set, the process gone before the body is sent).
"""

import email.utils
import re
import time
from http.server import BaseHTTPRequestHandler

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.configs import bootstrap, cluster, httpListener
from tests.e2e.harness import SharedFixture, freePort, httpOrigin, startProxy, stopAll
from tests.e2e.harness import exchangeOne as _exchange

_LAST_MODIFIED = "Mon, 07 Dec 2026 10:00:00 GMT"

#: path -> (status, headers) of the origin's answers.
_ANSWERS = {
    "/fresh": (200, [("cache-control", "max-age=100"), ("etag", '"v1"')]),
    "/aged": (200, [("cache-control", "max-age=100"), ("age", "30")]),
    "/old": (200, [("cache-control", "max-age=100"), ("age", "200")]),
    "/nocache": (200, [("cache-control", "no-cache"), ("etag", '"e1"')]),
    "/stale": (200, [("cache-control", "max-age=0"), ("last-modified", _LAST_MODIFIED)]),
    "/private": (200, [("cache-control", "private, max-age=100")]),
    "/nostore": (200, [("cache-control", "no-store, max-age=100")]),
    "/none": (200, []),
    "/missing": (404, [("cache-control", "max-age=100")]),
    "/created": (201, [("cache-control", "max-age=100")]),
    "/expires": (200, [("date", "Mon, 07 Dec 2026 10:00:00 GMT"),
                       ("expires", "Mon, 07 Dec 2026 10:01:40 GMT")]),
    "/nodate": (200, [("cache-control", "max-age=100"), ("etag", '"n1"')]),
}


class _Origin(BaseHTTPRequestHandler):
    """Answers by path; counts and records what it was asked."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_response(self, code, message=None):
        # No server header; a date of the answer's own (or none for /nodate).
        self.log_request(code)
        self.send_response_only(code, message)

    def _answer(self):
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        path = self.path.split("?")[0]
        self.server.asked.append((self.command, self.path, self.headers.get("if-none-match"),
                                  self.headers.get("if-modified-since")))
        status, headers = _ANSWERS.get(path, (200, []))
        if path != "/nodate" and not any(name == "date" for name, _ in headers):
            # Five seconds old: every age is past 5 s, so whether a response
            # is still fresh never hangs on the sub-second timing of a run.
            headers = [("date", email.utils.formatdate(time.time() - 5, usegmt=True))] + headers
        validated = ((self.headers.get("if-none-match") == '"e1"' and path == "/nocache")
                     or (self.headers.get("if-modified-since") == _LAST_MODIFIED
                         and path == "/stale"))
        count = self.server.counts[path] = self.server.counts.get(path, 0) + 1
        if validated:
            self.send_response(304)
            self.send_header("x-validated", str(count))
            for name, value in headers:
                self.send_header(name, value)
            self.end_headers()
            return
        body = ("%s #%d lang=%s" % (path, count, self.headers.get("accept-language"))).encode()
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_HEAD = _answer


CONFIG = bootstrap(
    listeners=[
        httpListener("cache", "%(main)d", httpFilters="""
            - name: envoy.filters.http.cache
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.http.cache.v3.CacheConfig
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.http.cache.simple_http_cache.v3.SimpleHttpCacheConfig
                allowed_vary_headers:
                - exact: accept-language
            """),
    ],
    clusters=[cluster("origin")])


def _req(path, *headers, method="GET"):
    lines = ["%s %s HTTP/1.1" % (method, path), "host: example.com"] + list(headers)
    if method == "POST":
        lines.append("content-length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


STEPS = [
    _req("/fresh"), _req("/fresh"), _req("/fresh?q=1"),
    _req("/fresh", "cache-control: no-cache"),
    _req("/fresh", "cache-control: max-age=0"),
    _req("/fresh", "if-none-match: \"v1\""),
    _req("/fresh", "authorization: Bearer x"),
    _req("/fresh", method="POST"),
    _req("/fresh", method="HEAD"),
    _req("/aged"), _req("/aged"),
    _req("/old"), _req("/old"), _req("/old", "cache-control: max-stale=200"),
    _req("/nocache"), _req("/nocache"), _req("/nocache"),
    _req("/stale"), _req("/stale"),
    _req("/private"), _req("/private"),
    _req("/nostore"), _req("/nostore"),
    _req("/none"), _req("/none"),
    _req("/missing"), _req("/missing"),
    _req("/created"), _req("/created"),
    _req("/expires"), _req("/expires"),
    _req("/nodate"), _req("/nodate"),
]


def _masked(raw):
    raw = re.sub(rb"date: [A-Z][a-z][a-z], \d\d [A-Z][a-z][a-z] \d{4} [0-9:]{8} GMT\r\n",
                 b"date: D\r\n", raw)
    raw = re.sub(rb"x-envoy-upstream-service-time: \d+", b"x-envoy-upstream-service-time: T",
                 raw)
    # 5 or 6, by where the second boundaries fall (ages from 10 up are exact).
    return re.sub(rb"age: \d\r\n", b"age: A\r\n", raw)


def _maskedAsked(asked):
    # An if-modified-since made of the origin's own date (its second may
    # differ between the two runs) is compared as a date.
    return [(method, path, inm, "DATE" if ims and ims != _LAST_MODIFIED else ims)
            for method, path, inm, ims in asked]


def _exchangeHead(port, data):
    """A HEAD: the reply has no body whatever its content-length."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        buf = b""
        while b"\r\n\r\n" not in buf:
            piece = sock.recv(65536)
            if not piece:
                break
            buf += piece
        return buf


class _Deployment:
    def __init__(self, real):
        self.origin = httpOrigin(_Origin)
        self.origin.asked = []
        self.origin.counts = {}
        self.admin, self.port = freePort(), freePort()
        try:
            self.proxy = startProxy(real, CONFIG % dict(
                admin=self.admin, main=self.port, origin=self.origin.server_address[1]),
                self.port, self.admin)
        except BaseException:
            self.stopOrigin()
            raise

    def send(self, raw):
        if raw.startswith(b"HEAD "):
            return _masked(_exchangeHead(self.port, raw))
        return _masked(_exchange(self.port, raw))

    def stopOrigin(self):
        self.origin.shutdown()
        self.origin.server_close()

    def stop(self):
        self.proxy.stop()
        self.stopOrigin()


class CacheSideBySideTests(SharedFixture, SynchronousTestCase):
    """Envoy 1.40 and txenvoy with the same cache filter config."""

    @classmethod
    def startFixture(cls):
        cls.envoy = cls.txenvoy = None
        try:
            cls.envoy = _Deployment(True)
            cls.txenvoy = _Deployment(False)
        except BaseException:
            cls.stopFixture()
            raise

    @classmethod
    def stopFixture(cls):
        stopAll(cls.envoy, cls.txenvoy)

    def test_sideBySide(self):
        """
        Every reply alike, step by step, then what each origin was asked
        (fresh hits never reach it; validations carry C{if-none-match} or
        C{if-modified-since}).
        """
        for raw in STEPS:
            expected = self.envoy.send(raw)
            got = self.txenvoy.send(raw)
            self.assertEqual(got, expected, raw + b"\n" + expected)
        self.assertEqual(_maskedAsked(self.txenvoy.origin.asked),
                         _maskedAsked(self.envoy.origin.asked))
