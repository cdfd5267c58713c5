"""
End-to-end comparison of C{envoy.filters.http.custom_response}: a real
C{twistd -n envoy} and a real Envoy 1.40 run the same config (local
response policies picked by status, status class and header matchers, a
route's own matcher) before the same origin; every reply (status line,
headers in order, body) must be the same.
"""

import re
from http.server import BaseHTTPRequestHandler

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.configs import bootstrap, cluster, httpListener
from tests.e2e.harness import OriginSideBySide, freePort, startProxy
from tests.e2e.harness import exchangeOne as _exchange


class _Origin(BaseHTTPRequestHandler):
    """C{/status/N} answers N with a small body; C{x-reply-*} headers are echoed back."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        parts = self.path.split("/")
        status = int(parts[2]) if len(parts) > 2 and parts[1] == "status" else 200
        body = b"origin body"
        self.send_response(status)
        self.send_header("content-type", "text/x-origin")
        for k, v in self.headers.items():
            if k.lower().startswith("x-reply-"):
                self.send_header(k.lower()[8:], v)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


_LOCAL = "type.googleapis.com/envoy.extensions.http.custom_response.local_response_policy.v3.LocalResponsePolicy"

CONFIG = bootstrap(
    listeners=[
        httpListener("cr", "%(main)d", routes="""
            - match: { prefix: "/other/" }
              route: { cluster: origin, prefix_rewrite: "/" }
              typed_per_filter_config:
                envoy.filters.http.custom_response:
                  "@type": type.googleapis.com/envoy.extensions.filters.http.custom_response.v3.CustomResponse
                  custom_response_matcher:
                    matcher_list:
                      matchers:
                      - predicate:
                          single_predicate:
                            input:
                              name: status
                              typed_config:
                                "@type": type.googleapis.com/envoy.type.matcher.v3.HttpResponseStatusCodeMatchInput
                            value_match: { exact: "404" }
                        on_match:
                          action:
                            name: route-404
                            typed_config:
                              "@type": %(local)s
                              body: { inline_string: "route says not found" }
            - match: { prefix: "/" }
              route: { cluster: origin }
            """, httpFilters="""
            - name: envoy.filters.http.custom_response
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.http.custom_response.v3.CustomResponse
                custom_response_matcher:
                  matcher_list:
                    matchers:
                    - predicate:
                        single_predicate:
                          input:
                            name: status
                            typed_config:
                              "@type": type.googleapis.com/envoy.type.matcher.v3.HttpResponseStatusCodeMatchInput
                          value_match: { exact: "404" }
                      on_match:
                        action:
                          name: not-found
                          typed_config:
                            "@type": %(local)s
                            body: { inline_string: "custom not found" }
                            status_code: 499
                            response_headers_to_add:
                            - header: { key: x-custom, value: "yes" }
                    - predicate:
                        single_predicate:
                          input:
                            name: status
                            typed_config:
                              "@type": type.googleapis.com/envoy.type.matcher.v3.HttpResponseStatusCodeMatchInput
                          value_match: { exact: "401" }
                      on_match:
                        action:
                          name: status-only
                          typed_config:
                            "@type": %(local)s
                            status_code: 403
                            response_headers_to_add:
                            - header: { key: x-was, value: "%%RESPONSE_CODE%%" }
                    - predicate:
                        single_predicate:
                          input:
                            name: class
                            typed_config:
                              "@type": type.googleapis.com/envoy.type.matcher.v3.HttpResponseStatusCodeClassMatchInput
                          value_match: { exact: "5xx" }
                      on_match:
                        action:
                          name: server-error
                          typed_config:
                            "@type": %(local)s
                            body: { inline_string: "sorry" }
                            body_format:
                              text_format: "oops: %%LOCAL_REPLY_BODY%% (%%RESPONSE_CODE%%) %%REQ(:PATH)%%"
                    - predicate:
                        single_predicate:
                          input:
                            name: header
                            typed_config:
                              "@type": type.googleapis.com/envoy.type.matcher.v3.HttpResponseHeaderMatchInput
                              header_name: x-replace
                          value_match: { exact: "json" }
                      on_match:
                        action:
                          name: json
                          typed_config:
                            "@type": %(local)s
                            body: { inline_string: "replaced" }
                            body_format:
                              json_format: { message: "%%LOCAL_REPLY_BODY%%", code: "%%RESPONSE_CODE%%" }
                    - predicate:
                        single_predicate:
                          input:
                            name: request
                            typed_config:
                              "@type": type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput
                              header_name: x-want
                          value_match: { exact: "teapot" }
                      on_match:
                        action:
                          name: teapot
                          typed_config:
                            "@type": %(local)s
                            body: { inline_string: "short and stout" }
                            status_code: 418
            """),
    ],
    clusters=[cluster("origin")])


def _get(path, *headers):
    lines = ["GET %s HTTP/1.1" % (path,), "host: example.com"] + list(headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


CASES = [
    _get("/status/200"),
    _get("/status/404"),
    _get("/status/401"),
    _get("/status/503"),
    _get("/status/500"),
    _get("/status/200", "x-reply-x-replace: json"),
    _get("/status/201", "x-want: teapot"),
    _get("/other/status/404"),
    _get("/other/status/503"),
]


def _masked(raw):
    raw = re.sub(rb"date: [^\r]*\r\n", b"", raw)
    return re.sub(rb"x-envoy-upstream-service-time: \d+", b"x-envoy-upstream-service-time: T",
                  raw)


class _Deployment:
    def __init__(self, real, origin):
        self.admin, self.port = freePort(), freePort()
        self.proxy = startProxy(real, CONFIG % dict(admin=self.admin, main=self.port,
                                                     origin=origin, local=_LOCAL),
                                self.port, self.admin)

    def stop(self):
        self.proxy.stop()


class CustomResponseSideBySideTests(OriginSideBySide, SynchronousTestCase):
    """Envoy 1.40 and txenvoy with the same custom_response config."""

    originHandler = _Origin
    deployment = _Deployment

    def test_sideBySide(self):
        """
        Every reply alike: a local response policy with a body replaces the
        response (its status or the upstream's, its headers, a formatted
        body); without one it changes the status and adds headers.
        """
        for raw in CASES:
            expected = _masked(_exchange(self.envoy.port, raw))
            got = _masked(_exchange(self.txenvoy.port, raw))
            self.assertEqual(got, expected, raw + b"\n" + expected)
