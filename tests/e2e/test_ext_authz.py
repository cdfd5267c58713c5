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
import time
from http.server import BaseHTTPRequestHandler

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.configs import bootstrap, cluster, httpFilter, httpListener
from tests.e2e.harness import (
    Recorder,
    SharedFixture,
    adminStats,
    exchangeToClose,
    freePort,
    httpOrigin,
    rawRequest,
    readBody,
    startProxy,
    stopAll,
)


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
            recorder.add(_record(self, readBody(self)))
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
            record = _record(self, readBody(self))
            recorder.add(record)
            out = json.dumps(record).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        do_GET = do_POST = _answer

    return Handler


def _extAuthz(config):
    return httpFilter("envoy.filters.http.ext_authz",
                      "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz", config)


CONFIG = bootstrap(
    listeners=[
        httpListener("authz", "%(main)d", routes="""
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
            """, httpFilters=_extAuthz("""
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
            """)),
        httpListener("failopen", "%(failopen)d", httpFilters=_extAuthz("""
            failure_mode_allow: true
            http_service:
              server_uri: { uri: "http://dead", cluster: dead, timeout: 0.5s }
            """)),
        httpListener("failclosed", "%(failclosed)d", httpFilters=_extAuthz("""
            status_on_error: { code: ServiceUnavailable }
            http_service:
              server_uri: { uri: "http://dead", cluster: dead, timeout: 0.5s }
            """)),
        httpListener("defaults", "%(defaults)d", httpFilters=_extAuthz("""
            http_service:
              server_uri: { uri: "http://authz.local", cluster: authz, timeout: 0.5s }
            """)),
    ],
    clusters=[cluster("origin"), cluster("authz"), cluster("dead")])


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
    [("main", rawRequest(path, *_USER)) for path in (
        "/allow/echo", "/deny/x", "/err/x", "/redirect/x", "/public/deny/echo",
        "/ctx/allow/echo", "/allow/echo?q=1")]
    + [("main", rawRequest("/allow/echo", method="POST", body=b"hello body")),
       ("main", rawRequest("/allow/echo", method="POST", body=b"a" * 200)),
       ("main", rawRequest("/allow/echo", method="POST", body=b"a" * 100)),
       ("main", b"POST /allow/echo HTTP/1.1\r\nhost: e\r\nconnection: close\r\n"
                b"transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n"),
       ("main", rawRequest("/slow/echo")),
       ("failopen", rawRequest("/x/echo")),
       ("failclosed", rawRequest("/x/echo")),
       ("defaults", rawRequest("/deny/x", *_USER)),
       ("defaults", rawRequest("/allow/echo", *_USER))])

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
        cls.authzSeen, cls.originSeen = Recorder(), Recorder()
        for handler in (_authzHandler(cls.authzSeen), _originHandler(cls.originSeen)):
            cls.servers.append(httpOrigin(handler))
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
        stopAll(cls.envoy, cls.txenvoy, *cls.servers)

    def run_(self, deployment, listener, raw):
        reply = _masked(exchangeToClose(deployment.ports[listener], raw))
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
