"""
End-to-end comparison of internal redirects (a route's
C{internal_redirect_policy}): a real C{twistd -n envoy} and a real Envoy
1.40 run the same config before the same origin, which answers 3xx with
the C{location} a request asks for. Every reply (status line, headers in
order, body: the origin echoes the request it saw), every access log line
and the redirect counters must be the same.
"""

import json
import os
import re
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import Envoy, OriginSideBySide, RealEnvoy, adminStats, freePort
from tests.e2e.harness import exchangeOne as _exchange


class _Origin(BaseHTTPRequestHandler):
    """
    C{?code=N&to=URL} answers N with C{location: URL} (C{self=1}: the
    request's own URL); anything else echoes the request as JSON.
    """

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _any(self):
        n = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(n) if n else b""
        query = parse_qs(urlsplit(self.path).query)
        if "code" in query:
            self.send_response(int(query["code"][0]))
            if "self" in query:
                self.send_header("location", "http://%s%s" % (self.headers["host"], self.path))
            elif "to" in query:
                self.send_header("location", query["to"][0])
            self.send_header("x-copy-me", "from-the-3xx")
            out = b"redirect body"
        else:
            self.send_response(200)
            out = json.dumps({
                "method": self.command, "path": self.path, "body": body.decode("latin-1"),
                "headers": [[k.lower(), v] for k, v in self.headers.items()
                            if k.lower() != "x-request-id"],
            }).encode()
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = _any


_PREDICATE = "type.googleapis.com/envoy.extensions.internal_redirect."

CONFIG = """
admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: %(admin)d }
static_resources:
  listeners:
  - name: ir
    address:
      socket_address: { address: 127.0.0.1, port_value: %(main)d }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ir
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: %(log)s
              log_format:
                text_format_source:
                  inline_string: "%%REQ(:METHOD)%% %%REQ(:AUTHORITY)%% %%REQ(:PATH)%% %%RESPONSE_CODE%% %%RESPONSE_CODE_DETAILS%% %%ROUTE_NAME%% %%REQ(X-ENVOY-ORIGINAL-URL)%% %%REQ(X-COPY-ME)%%\\n"
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - name: follow
                match: { prefix: "/follow" }
                route:
                  cluster: origin
                  internal_redirect_policy:
                    max_internal_redirects: 2
                    redirect_response_codes: [301, 302, 303, 307, 300]
              - name: default
                match: { prefix: "/default" }
                route: { cluster: origin, internal_redirect_policy: {} }
              - name: previous
                match: { prefix: "/previous" }
                route:
                  cluster: origin
                  internal_redirect_policy:
                    max_internal_redirects: 5
                    predicates:
                    - name: envoy.internal_redirect_predicates.previous_routes
                      typed_config:
                        "@type": %(predicate)sprevious_routes.v3.PreviousRoutesConfig
              - name: allow
                match: { prefix: "/allow" }
                route:
                  cluster: origin
                  internal_redirect_policy:
                    predicates:
                    - name: envoy.internal_redirect_predicates.allow_listed_routes
                      typed_config:
                        "@type": %(predicate)sallow_listed_routes.v3.AllowListedRoutesConfig
                        allowed_route_names: [target]
              - name: cross
                match: { prefix: "/cross" }
                route:
                  cluster: origin
                  internal_redirect_policy: { allow_cross_scheme_redirect: true }
              - name: safe
                match: { prefix: "/safe" }
                route:
                  cluster: origin
                  internal_redirect_policy:
                    allow_cross_scheme_redirect: true
                    predicates:
                    - name: envoy.internal_redirect_predicates.safe_cross_scheme
                      typed_config:
                        "@type": %(predicate)ssafe_cross_scheme.v3.SafeCrossSchemeConfig
              - name: copy
                match: { prefix: "/copy" }
                route:
                  cluster: origin
                  internal_redirect_policy: { response_headers_to_copy: [x-copy-me] }
              - name: legacy
                match: { prefix: "/legacy" }
                route: { cluster: origin, internal_redirect_action: HANDLE_INTERNAL_REDIRECT }
              - name: target
                match: { prefix: "/t/" }
                route: { cluster: origin, prefix_rewrite: "/target/" }
              - name: other
                match: { prefix: "/o/" }
                route: { cluster: origin }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: origin
    connect_timeout: 1s
    load_assignment:
      cluster_name: origin
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: %(origin)d } } }
"""


def _request(method, path, body=b"", host="example.com"):
    head = "%s %s HTTP/1.1\r\nhost: %s\r\n" % (method, path, host)
    if body or method == "POST":
        head += "content-length: %d\r\n" % (len(body),)
    return head.encode("latin-1") + b"\r\n" + body


_TO_T = "http://redirected.example/t/final%3Fq%3D1%2523frag"

CASES = [
    # Followed: a GET, then a POST whose body goes again (307, 308).
    _request("GET", "/follow/a?code=302&to=" + _TO_T),
    _request("POST", "/follow/b?code=307&to=http://h2:8080/t/post", b"the body"),
    _request("PUT", "/follow/c?code=307&to=http://h3:80/t/put", b"put body"),
    _request("GET", "/follow/n?code=308&to=http://h/t/x"),
    _request("GET", "/follow/p?code=302&to=http://UPPER.Example:8080/t/./a/../b/"),
    # A 303 to a POST: a GET without the body.
    _request("POST", "/follow/d?code=303&to=http://h4/t/see-other", b"dropped"),
    # Not followed: a relative location, no location, a code not listed,
    # a code the policy may not list, a location matching no route.
    _request("GET", "/follow/e?code=302&to=/t/relative"),
    _request("GET", "/follow/f?code=302"),
    _request("GET", "/default/g?code=301&to=http://h/t/x"),
    _request("GET", "/default/h?code=302&to=http://h/t/default"),
    _request("GET", "/follow/i?code=300&to=http://h/t/x"),
    _request("GET", "/follow/j?code=302&to=http://h/nowhere"),
    # Too many redirects: the third 302 of a loop reaches the client.
    _request("GET", "/follow/loop?code=302&self=1"),
    # previous_routes: the loop stops at the second visit of /previous.
    _request("GET", "/previous/loop?code=302&self=1"),
    # allow_listed_routes: only "target".
    _request("GET", "/allow/a?code=302&to=http://h/t/allowed"),
    _request("GET", "/allow/b?code=302&to=http://h/o/refused"),
    # Cross-scheme: refused, allowed, refused again by safe_cross_scheme.
    _request("GET", "/follow/k?code=302&to=https://h/t/tls"),
    _request("GET", "/cross/a?code=302&to=https://h/t/tls"),
    _request("GET", "/safe/a?code=302&to=https://h/t/tls"),
    _request("GET", "/safe/b?code=302&to=http://h/t/plain"),
    # response_headers_to_copy, and the deprecated internal_redirect_action.
    _request("GET", "/copy/a?code=302&to=http://h/t/copied"),
    _request("GET", "/legacy/a?code=302&to=http://h/t/legacy"),
    # A redirect to a route without a policy: its own 3xx goes back.
    _request("GET", "/follow/m?code=302&to=http://h/t/x%3Fcode%3D302%26to%3Dhttp://h/t/y"),
]


def _masked(raw):
    raw = re.sub(rb"date: [^\r]*\r\n", b"", raw)
    return re.sub(rb"x-envoy-upstream-service-time: \d+", b"x-envoy-upstream-service-time: T",
                  raw)


#: The stats the comparison reads (every counter under these prefixes).
_STATS = ("http.ir.", "cluster.origin.upstream_rq_", "cluster.origin.upstream_internal_",
          "cluster.origin.retry_or_shadow_abandoned")


class _Deployment:
    def __init__(self, real, origin):
        self.admin, self.port = freePort(), freePort()
        self.proxy = None
        config = CONFIG % dict(admin=self.admin, main=self.port, origin=origin,
                               predicate=_PREDICATE, log="access.log")
        if real:
            self.proxy = RealEnvoy(config, args=("--file-flush-interval-msec", "20"))
        else:
            self.proxy = Envoy(config, args=("--concurrency", "1", "--file-flush-interval-msec",
                                             "20"), adminPort=self.admin)
        self.log = os.path.join(self.proxy.tmp, "access.log")
        try:
            self.proxy.waitPort(self.port)
        except BaseException:
            self.proxy.stop()
            raise

    def logLines(self, count, timeout=10.0):
        deadline = time.time() + timeout
        lines = []
        while time.time() < deadline:
            if os.path.exists(self.log):
                with open(self.log) as f:
                    lines = f.read().splitlines()
                if len(lines) >= count:
                    break
            time.sleep(0.02)
        return lines

    def stats(self):
        return {k: v for k, v in adminStats(self.admin).items()
                if k.startswith(_STATS) and "_cx_" not in k and v}

    def stop(self):
        self.proxy.stop()


class InternalRedirectSideBySideTests(OriginSideBySide, SynchronousTestCase):
    """Envoy 1.40 and txenvoy with the same internal_redirect_policy routes."""

    originHandler = _Origin
    deployment = _Deployment

    def test_sideBySide(self):
        """
        Envoy's internal redirects: replies, access log lines (the first
        pass logged with C{internal_redirect} and the request as it was
        redirected, with C{x-envoy-original-url}) and the counters
        (C{upstream_internal_redirect_succeeded_total} /
        C{upstream_internal_redirect_failed_total} on the cluster,
        C{passthrough_internal_redirect_*} on the connection manager) match.
        """
        for raw in CASES:
            expected = _masked(_exchange(self.envoy.port, raw))
            got = _masked(_exchange(self.txenvoy.port, raw))
            self.assertEqual(got, expected, raw + b"\n" + expected)
        stats = self.envoy.stats()
        self.assertEqual(self.txenvoy.stats(), stats)
        # One line per stream, the redirects' own included.
        lines = stats["http.ir.downstream_rq_total"]
        self.maxDiff = None
        self.assertEqual(self.txenvoy.logLines(lines), self.envoy.logLines(lines))
