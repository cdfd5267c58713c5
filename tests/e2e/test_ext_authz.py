"""
End-to-end comparison of C{envoy.filters.http.ext_authz} with an HTTP
authorization service: a real C{twistd -n envoy} and a real Envoy 1.40
with the same config, in front of the same origin and the same
authorization service (both small threaded servers started here), asked
the same raw requests.

Compared for every request: the client's reply (status line, headers in
order, body), what the authorization service received (its headers as a
set: Envoy sends the allowed ones in hash-map order) and what the origin
received; then the C{ext_authz} stats and the response codes charged to
the clusters. The service allows, denies (403 with a body, 302), fails
(500), is slow (past the 0.5 s timeout) and, for two listeners, is down
(C{failure_mode_allow}, C{status_on_error}).
"""

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import SharedFixture, adminStats, freePort, startProxy


class _QuietServer(ThreadingHTTPServer):
    """A threaded server that does not print the clients that went away."""

    daemon_threads = True

    def handle_error(self, request, clientAddress):
        pass


class _Recorder:
    """What a server received, in order, across its threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.seen = []

    def add(self, record):
        with self.lock:
            self.seen.append(record)

    def take(self):
        with self.lock:
            seen, self.seen = self.seen, []
        return seen


def _readBody(handler):
    if handler.headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int(handler.rfile.readline().split(b";")[0], 16)
            if not size:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return body
            body += handler.rfile.read(size)
            handler.rfile.readline()
    length = int(handler.headers.get("content-length") or 0)
    return handler.rfile.read(length) if length else b""


def _record(handler, body):
    return {"method": handler.command, "path": handler.path,
            "headers": [[k.lower(), v] for k, v in handler.headers.items()],
            "body": body.decode("latin-1")}


_ANSWERS = [
    # (path contains, status, headers, body)
    ("deny", 403, [("x-reason", "nope"), ("x-other", "o"), ("www-authenticate", "Bearer"),
                   ("content-type", "text/plain")], b"denied by authz"),
    ("err", 500, [("x-reason", "boom")], b"oops"),
    ("redirect", 302, [("location", "http://login/")], b""),
    ("", 200, [("x-auth-user", "alice"), ("x-extra", "1"), ("x-reason", "fine"),
               ("x-user", "overridden")], b"ok-body"),
]


def _authzHandler(recorder):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _answer(self):
            recorder.add(_record(self, _readBody(self)))
            if "slow" in self.path:
                time.sleep(1.0)
            for part, status, headers, body in _ANSWERS:
                if part in self.path:
                    break
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

    return Handler


def _originHandler(recorder):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _answer(self):
            record = _record(self, _readBody(self))
            recorder.add(record)
            out = json.dumps(record).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        do_GET = do_POST = _answer

    return Handler


CONFIG = """
admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: %(admin)d }
static_resources:
  listeners:
  - name: authz
    address:
      socket_address: { address: 127.0.0.1, port_value: %(main)d }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: authz
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/public/" }
                route: { cluster: origin }
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    disabled: true
              - match: { prefix: "/ctx/" }
                route: { cluster: origin }
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    check_settings:
                      context_extensions: { k: v }
              - match: { prefix: "/" }
                route: { cluster: origin }
          http_filters:
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              http_service:
                server_uri: { uri: "http://authz.local", cluster: authz, timeout: 0.5s }
                path_prefix: /check
                authorization_request:
                  allowed_headers:
                    patterns: [{ exact: x-user }, { prefix: x-auth }]
                  headers_to_add:
                  - { key: x-authz-added, value: "yes" }
                authorization_response:
                  allowed_upstream_headers:
                    patterns: [{ exact: x-auth-user }, { exact: x-user }]
                  allowed_client_headers:
                    patterns: [{ exact: x-reason }]
                  allowed_client_headers_on_success:
                    patterns: [{ exact: x-extra }]
              with_request_body: { max_request_bytes: 100, allow_partial_message: false }
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  - name: failopen
    address:
      socket_address: { address: 127.0.0.1, port_value: %(failopen)d }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: failopen
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: origin }
          http_filters:
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              failure_mode_allow: true
              http_service:
                server_uri: { uri: "http://dead", cluster: dead, timeout: 0.5s }
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  - name: failclosed
    address:
      socket_address: { address: 127.0.0.1, port_value: %(failclosed)d }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: failclosed
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: origin }
          http_filters:
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              status_on_error: { code: ServiceUnavailable }
              http_service:
                server_uri: { uri: "http://dead", cluster: dead, timeout: 0.5s }
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  - name: defaults
    address:
      socket_address: { address: 127.0.0.1, port_value: %(defaults)d }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: defaults
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: origin }
          http_filters:
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              http_service:
                server_uri: { uri: "http://authz.local", cluster: authz, timeout: 0.5s }
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
  - name: authz
    connect_timeout: 1s
    load_assignment:
      cluster_name: authz
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: %(authz)d } } }
  - name: dead
    connect_timeout: 1s
    load_assignment:
      cluster_name: dead
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: %(dead)d } } }
"""


def _request(path, *headers, method="GET", body=None):
    lines = ["%s %s HTTP/1.1" % (method, path), "host: example.com", "connection: close"]
    lines.extend(headers)
    if body is not None:
        lines.append("content-length: %d" % (len(body),))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def _exchange(port, data):
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock.sendall(data)
        chunks = []
        while True:
            piece = sock.recv(65536)
            if not piece:
                return b"".join(chunks)
            chunks.append(piece)
    finally:
        sock.close()


def _masked(raw):
    raw = re.sub(rb"date: [^\r]*\r\n", b"", raw)
    raw = re.sub(rb'"x-request-id", "[^"]*"', b'"x-request-id", "R"', raw)
    raw = re.sub(rb'"host", "[^"]*"', b'"host", "H"', raw)
    return re.sub(rb"x-envoy-upstream-service-time: \d+", b"x-envoy-upstream-service-time: N",
                  raw)


def _seen(records):
    """Records with volatile values masked and headers as a set."""
    out = []
    for record in records:
        headers = sorted(
            (name, "R" if name == "x-request-id" else "H" if name == "host" else value)
            for name, value in record["headers"])
        out.append((record["method"], record["path"], headers, record["body"]))
    return out


_USER = ["x-user: bob", "x-auth-token: t1", "X-Other: no", "authorization: Bearer abc",
         "cookie: c=1"]

CASES = (
    [("main", _request(path, *_USER)) for path in (
        "/allow/echo", "/deny/x", "/err/x", "/redirect/x", "/public/deny/echo",
        "/ctx/allow/echo", "/allow/echo?q=1")]
    + [("main", _request("/allow/echo", method="POST", body=b"hello body")),
       ("main", _request("/allow/echo", method="POST", body=b"a" * 200)),
       ("main", _request("/allow/echo", method="POST", body=b"a" * 100)),
       ("main", b"POST /allow/echo HTTP/1.1\r\nhost: e\r\nconnection: close\r\n"
                b"transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n"),
       ("main", _request("/slow/echo")),
       ("failopen", _request("/x/echo")),
       ("failclosed", _request("/x/echo")),
       ("defaults", _request("/deny/x", *_USER)),
       ("defaults", _request("/allow/echo", *_USER))])

_PORTS = ("admin", "main", "failopen", "failclosed", "defaults")


class _Deployment:
    def __init__(self, real, origin, authz, dead):
        self.ports = {name: freePort() for name in _PORTS}
        config = CONFIG % dict(self.ports, origin=origin, authz=authz, dead=dead)
        self.proxy = startProxy(real, config, self.ports["defaults"], self.ports["admin"])
        for name in _PORTS[1:]:
            self.proxy.waitPort(self.ports[name])

    def stats(self):
        return {name: value for name, value in adminStats(self.ports["admin"]).items()
                if ".ext_authz." in name or re.match(
                    r"cluster\.(origin|authz)\.upstream_rq_([0-9]+|[0-9]xx|completed)$", name)}

    def stop(self):
        self.proxy.stop()


class ExtAuthzSideBySideTests(SharedFixture, SynchronousTestCase):
    """Envoy 1.40 and txenvoy, the same ext_authz config, the same requests."""

    @classmethod
    def startFixture(cls):
        cls.servers = []
        cls.authzSeen, cls.originSeen = _Recorder(), _Recorder()
        for handler in (_authzHandler(cls.authzSeen), _originHandler(cls.originSeen)):
            server = _QuietServer(("127.0.0.1", 0), handler)
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                             daemon=True).start()
            cls.servers.append(server)
        authz, origin = (s.server_address[1] for s in cls.servers)
        cls.envoy = cls.txenvoy = None
        try:
            cls.envoy = _Deployment(True, origin, authz, freePort())
            cls.txenvoy = _Deployment(False, origin, authz, freePort())
        except BaseException:
            cls.stopFixture()
            raise

    @classmethod
    def stopFixture(cls):
        for deployment in (cls.envoy, cls.txenvoy):
            if deployment is not None:
                deployment.stop()
        for server in cls.servers:
            server.shutdown()
            server.server_close()

    def run_(self, deployment, listener, raw):
        reply = _masked(_exchange(deployment.ports[listener], raw))
        # The slow check's service thread answers after the proxy gave up.
        time.sleep(0.05)
        return reply, _seen(self.authzSeen.take()), _seen(self.originSeen.take())

    def test_sideBySide(self):
        """
        Every request: the same reply, the same check request, the same
        request at the origin; then the same stats.
        """
        for listener, raw in CASES:
            expected = self.run_(self.envoy, listener, raw)
            got = self.run_(self.txenvoy, listener, raw)
            self.assertEqual(got, expected, raw)
        self.assertEqual(self.txenvoy.stats(), self.envoy.stats())
