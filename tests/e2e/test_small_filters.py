"""
End-to-end comparison of the small HTTP filters real configs use:
C{envoy.filters.http.csrf} (with C{additional_origins} and a route in
shadow mode), C{envoy.filters.http.set_metadata} (read back by a route's
C{%DYNAMIC_METADATA(acme:team)%}) and C{envoy.filters.http.header_mutation}
(filter and route mutations, requests and responses, local replies
included). A real C{twistd -n envoy} and a real Envoy 1.40 run the same
config before the same origin; every reply (status line, headers in order,
body, what the origin received) and the filters' stats must be the same.
"""

import json
import re
from http.server import BaseHTTPRequestHandler

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.configs import bootstrap, cluster, httpListener
from tests.e2e.harness import OriginSideBySide, adminStats, freePort, startProxy
from tests.e2e.harness import exchangeOne as _exchange


class _Handler(BaseHTTPRequestHandler):
    """C{.../echo} echoes the request as JSON; anything else is a 404."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _answer(self):
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        if self.path.split("?")[0].endswith("/echo"):
            status = 200
            body = json.dumps({"method": self.command, "headers": [
                [k.lower(), v] for k, v in self.headers.items()]}).encode()
        else:
            status, body = 404, b"not here"
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _answer


CONFIG = bootstrap(
    listeners=[
        httpListener("small", "%(main)d", routes="""
            - match: { prefix: "/shadow/" }
              route: { cluster: origin }
              typed_per_filter_config:
                envoy.filters.http.csrf:
                  "@type": type.googleapis.com/envoy.extensions.filters.http.csrf.v3.CsrfPolicy
                  filter_enabled: { default_value: { numerator: 0 } }
                  shadow_enabled: { default_value: { numerator: 100 } }
            - match: { prefix: "/mut/" }
              route: { cluster: origin }
              request_headers_to_add:
              - header: { key: x-meta, value: "%%DYNAMIC_METADATA(acme:team)%%" }
              typed_per_filter_config:
                envoy.filters.http.header_mutation:
                  "@type": type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutationPerRoute
                  mutations:
                    request_mutations:
                    - append: { header: { key: x-route, value: "r" }, append_action: APPEND_IF_EXISTS_OR_ADD }
                    - remove: x-filter
                    response_mutations:
                    - append: { header: { key: x-resp-route, value: "rr" } }
            - match: { prefix: "/" }
              route: { cluster: origin }
              request_headers_to_add:
              - header: { key: x-meta, value: "%%DYNAMIC_METADATA(acme:team)%%" }
            """, httpFilters="""
            - name: envoy.filters.http.csrf
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.http.csrf.v3.CsrfPolicy
                filter_enabled: { default_value: { numerator: 100 } }
                additional_origins:
                - exact: trusted.example
                - suffix: .partner.example
            - name: envoy.filters.http.set_metadata
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.http.set_metadata.v3.Config
                metadata:
                - metadata_namespace: acme
                  value: { team: blue, n: 1 }
                - metadata_namespace: acme
                  value: { team: red }
            - name: envoy.filters.http.header_mutation
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation
                mutations:
                  request_mutations:
                  - remove: x-drop
                  - append: { header: { key: x-filter, value: "f" }, append_action: OVERWRITE_IF_EXISTS_OR_ADD }
                  - append: { header: { key: x-path, value: "%%REQ(:PATH)%%" } }
                  response_mutations:
                  - append: { header: { key: x-resp, value: "%%RESPONSE_CODE%%" } }
                  - remove: x-envoy-upstream-service-time
            """),
    ],
    clusters=[cluster("origin")])


def _request(path, *headers, method="GET", host="example.com"):
    lines = ["%s %s HTTP/1.1" % (method, path), "host: " + host, "connection: close"]
    lines.extend(headers)
    if method != "GET":
        lines.append("content-length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


CASES = [
    _request("/a/echo"),
    _request("/a/echo", method="POST"),
    _request("/a/echo", "origin: http://example.com", method="POST"),
    _request("/a/echo", "origin: http://evil.example", method="POST"),
    _request("/a/echo", "origin: https://example.com", method="POST"),
    _request("/a/echo", "origin: http://trusted.example", method="POST"),
    _request("/a/echo", "origin: http://x.partner.example", method="PUT"),
    _request("/a/echo", "referer: http://example.com/page?x", method="DELETE"),
    _request("/a/echo", "referer: http://evil.example/", method="PATCH"),
    _request("/a/echo", "origin: null", method="POST"),
    _request("/a/echo", "origin: http://example.com:8080", method="POST", host="example.com:8080"),
    _request("/a/echo", "origin: http://evil.example", method="OPTIONS"),
    _request("/shadow/echo", "origin: http://evil.example", method="POST"),
    _request("/shadow/echo", method="POST"),
    _request("/a/echo?q=1", "x-drop: 1", "x-filter: old", "x-keep: k"),
    _request("/mut/echo", "x-drop: 1", "x-filter: old", "x-route: first"),
    _request("/a/notfound"),
]




def _masked(raw):
    raw = re.sub(rb"date: [^\r]*\r\n", b"", raw)
    raw = re.sub(rb'"x-request-id", "[^"]*"', b'"x-request-id", "R"', raw)
    return re.sub(rb'"host", "[^"]*"', b'"host", "H"', raw)


class _Deployment:
    def __init__(self, real, origin):
        self.admin, self.port = freePort(), freePort()
        self.proxy = startProxy(real, CONFIG % dict(admin=self.admin, main=self.port,
                                                     origin=origin), self.port, self.admin)

    def stats(self):
        return {n: v for n, v in adminStats(self.admin).items()
                if ".csrf." in n or ".set_metadata." in n}

    def stop(self):
        self.proxy.stop()


class SmallFiltersSideBySideTests(OriginSideBySide, SynchronousTestCase):
    """Envoy 1.40 and txenvoy: csrf, set_metadata and header_mutation."""

    originHandler = _Handler
    deployment = _Deployment

    def test_sideBySide(self):
        """Every reply alike (Envoy's 403 "Invalid origin"), then the same stats."""
        for raw in CASES:
            expected = _masked(_exchange(self.envoy.port, raw))
            got = _masked(_exchange(self.txenvoy.port, raw))
            self.assertEqual(got, expected, raw)
        self.assertEqual(self.txenvoy.stats(), self.envoy.stats())
