"""
End-to-end comparison of C{envoy.filters.http.custom_response}'s
C{RedirectPolicy}: a real C{twistd -n envoy} and a real Envoy 1.40 run the
same config before the same origin. A matched response sends the request
again (to a C{uri} or by a C{redirect_action}) on a new stream; every reply
(status line, headers in order, body: the origin echoes the request it
saw) and the counters must be the same.
"""

import json
import re
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.configs import bootstrap, cluster, httpFilter, httpListener
from tests.e2e.harness import OriginSideBySide, adminStats, freePort, startProxy
from tests.e2e.harness import exchangeOne as _exchange


class _Origin(BaseHTTPRequestHandler):
    """C{?code=N} answers N; anything else echoes the request as JSON."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _any(self):
        n = int(self.headers.get("content-length") or 0)
        received = self.rfile.read(n) if n else b""
        query = parse_qs(urlsplit(self.path).query)
        if "code" in query:
            self.send_response(int(query["code"][0]))
            body = b"origin says no"
        else:
            self.send_response(200)
            body = json.dumps({
                "method": self.command, "path": self.path, "body": received.decode("latin-1"),
                "headers": [[k.lower(), v] for k, v in self.headers.items()
                            if k.lower() != "x-request-id"]}).encode()
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _any


_REDIRECT = ("type.googleapis.com/envoy.extensions.http.custom_response.redirect_policy.v3."
             "RedirectPolicy")


def _onStatus(status, name, policy):
    """One matcher of the filter: the upstream's C{status} picks C{policy}."""
    return """
- predicate:
    single_predicate:
      input:
        name: status
        typed_config:
          "@type": type.googleapis.com/envoy.type.matcher.v3.HttpResponseStatusCodeMatchInput
      value_match: { exact: "%d" }
  on_match:
    action:
      name: %s
      typed_config:
        "@type": %s
%s""" % (status, name, _REDIRECT,
         "".join("        " + line + "\n" for line in policy.strip().splitlines()))


MATCHERS = "".join([
    _onStatus(402, "to-uri", """
uri: "http://err.example/echo/402?x=1#frag"
status_code: 299
response_headers_to_add:
- header: { key: x-cr, value: "was %%RESPONSE_CODE%%" }
request_headers_to_add:
- header: { key: x-from-cr, value: "yes" }
"""),
    _onStatus(409, "to-action", """
redirect_action: { host_redirect: other.example, path_redirect: "/echo/409" }
"""),
    _onStatus(410, "no-route", """
uri: "http://noroute.example/elsewhere"
request_headers_to_add:
- header: { key: x-kept, value: "1" }
"""),
    _onStatus(411, "to-error", """
uri: "http://err.example/echo/again?code=500"
status_code: 200
response_headers_to_add:
- header: { key: x-cr, value: "on an error" }
"""),
    _onStatus(412, "to-error-keeping-status", """
uri: "http://err.example/echo/again?code=502"
response_headers_to_add:
- header: { key: x-cr, value: "on an error" }
"""),
])

CONFIG = bootstrap(
    listeners=[httpListener(
        "crr", "%(main)d",
        virtualHosts=["""
- name: narrow
  domains: ["noroute.example"]
  routes:
  - match: { prefix: "/only/" }
    route: { cluster: origin }
""", """
- name: all
  domains: ["*"]
  routes:
  - match: { prefix: "/" }
    route: { cluster: origin }
"""],
        httpFilters=httpFilter(
            "envoy.filters.http.custom_response",
            "envoy.extensions.filters.http.custom_response.v3.CustomResponse",
            "custom_response_matcher:\n  matcher_list:\n    matchers:\n"
            + "".join("    " + line + "\n" for line in MATCHERS.strip().splitlines())))],
    clusters=[cluster("origin")])


def _request(method, path, body=b"", *headers):
    lines = ["%s %s HTTP/1.1" % (method, path), "host: example.com"] + list(headers)
    if method == "POST":
        lines.append("content-length: %d" % (len(body),))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


CASES = [
    # To a uri: a POST goes again as a GET without its body; the answer
    # gets the policy's status and headers.
    _request("GET", "/a?code=402"),
    _request("POST", "/b?code=402", b"body"),
    # By a redirect_action: the original status comes back.
    _request("GET", "/c?code=409&q=1", b"", "x-forwarded-proto: https"),
    # A URL no route matches: the original response goes out.
    _request("GET", "/d?code=410"),
    # The redirected request fails: its answer goes out as it is.
    _request("GET", "/e?code=411"),
    _request("GET", "/e?code=412"),
    # Not matched.
    _request("GET", "/f?code=403"),
]

_STATS = ("http.crr.", "cluster.origin.upstream_rq_")


def _masked(raw):
    raw = re.sub(rb"date: [^\r]*\r\n", b"", raw)
    return re.sub(rb"x-envoy-upstream-service-time: \d+", b"x-envoy-upstream-service-time: T",
                  raw)


class _Deployment:
    def __init__(self, real, origin):
        self.admin, self.port = freePort(), freePort()
        self.proxy = startProxy(real, CONFIG % dict(admin=self.admin, main=self.port,
                                                     origin=origin),
                                self.port, self.admin)

    def stats(self):
        return {k: v for k, v in adminStats(self.admin).items()
                if k.startswith(_STATS) and "_cx_" not in k and v}

    def stop(self):
        self.proxy.stop()


class CustomResponseRedirectSideBySideTests(OriginSideBySide, SynchronousTestCase):
    """Envoy 1.40 and txenvoy with the same redirect policies."""

    originHandler = _Origin
    deployment = _Deployment

    def test_sideBySide(self):
        """
        Envoy's RedirectPolicy: replies alike, and the counters
        (C{custom_response_redirect_no_route}, a request counted once per
        stream) too.
        """
        for raw in CASES:
            expected = _masked(_exchange(self.envoy.port, raw))
            got = _masked(_exchange(self.txenvoy.port, raw))
            self.assertEqual(got, expected, raw + b"\n" + expected)
        self.assertEqual(self.txenvoy.stats(), self.envoy.stats())
