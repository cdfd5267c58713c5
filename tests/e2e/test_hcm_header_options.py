"""
End-to-end comparison of the connection manager's header options:
C{server_header_transformation} (C{PASS_THROUGH}, C{APPEND_IF_ABSENT}),
C{scheme_header_transformation}, C{strip_matching_host_port},
C{preserve_external_request_id} and C{generate_request_id: false}. A real
C{twistd -n envoy} and a real Envoy 1.40 run the same config (one listener
per set of options) before the same origin; every reply and what the
origin received must be the same.
"""

import json
import re
from http.server import BaseHTTPRequestHandler

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.configs import bootstrap, cluster, httpListener
from tests.e2e.harness import OriginSideBySide, freePort, startProxy
from tests.e2e.harness import exchangeOne as _exchange


class _Origin(BaseHTTPRequestHandler):
    """Echoes the request headers as JSON; C{x-reply-*} headers are answered back."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_response(self, code, message=None):
        # No server header of http.server's own: x-reply-server says.
        self.log_request(code)
        self.send_response_only(code, message)

    def do_GET(self):
        body = json.dumps([[k.lower(), v] for k, v in self.headers.items()]).encode()
        self.send_response(200)
        for k, v in self.headers.items():
            if k.lower().startswith("x-reply-"):
                self.send_header(k.lower()[8:], v)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


#: Each listener's one route; ROUTE_HEADERS adds to its request headers.
ROUTE = """
- match: { prefix: "/" }
  route: { cluster: origin }
  request_headers_to_add:
  - header: { key: x-host, value: "%%REQ(:AUTHORITY)%%" }
"""

OPTIONS = {
    "passthrough": """
          server_header_transformation: PASS_THROUGH
          strip_matching_host_port: true
          generate_request_id: false
          scheme_header_transformation: { scheme_to_overwrite: https }""",
    "absent": """
          server_header_transformation: APPEND_IF_ABSENT
          use_remote_address: true
          preserve_external_request_id: true""",
    "edge": """
          use_remote_address: true""",
}

# txenvoy leaves an HTTP/1 request's :scheme unset where Envoy sets it from
# the connection; %REQ(:SCHEME)% is compared where it is overwritten.
ROUTE_HEADERS = {
    "passthrough": '  - header: { key: x-scheme, value: "%%REQ(:SCHEME)%%" }\n',
}

def _get(port, *headers, host=None):
    lines = ["GET /echo HTTP/1.1", "host: " + (host or "example.com:%d" % (port,))]
    lines.extend(headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


CASES = [
    ("passthrough", ()),
    ("passthrough", ("x-reply-server: origin-server",)),
    ("passthrough", ("x-request-id: mine",)),
    ("passthrough", ("x-forwarded-proto: https",)),
    ("passthrough", (), "example.com:8443"),
    ("absent", ()),
    ("absent", ("x-reply-server: origin-server",)),
    ("absent", ("x-request-id: mine",)),
    ("edge", ("x-request-id: mine", "x-reply-server: origin-server")),
]

_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _masked(raw, port):
    raw = re.sub(rb"date: [^\r]*\r\n", b"", raw)
    raw = re.sub(rb"x-envoy-upstream-service-time: \d+", b"x-envoy-upstream-service-time: T",
                 raw)
    raw = raw.replace(b":%d" % (port,), b":PORT")
    raw = re.sub(rb"content-length: \d+", b"content-length: N", raw)
    return _UUID.sub(b"UUID", raw)


class _Deployment:
    def __init__(self, real, origin):
        self.admin = freePort()
        self.ports = {name: freePort() for name in OPTIONS}
        config = bootstrap(
            [httpListener(name, self.ports[name], hcm=OPTIONS[name],
                          routes=ROUTE + ROUTE_HEADERS.get(name, ""))
             for name in sorted(OPTIONS)],
            [cluster("origin", origin)], admin=self.admin) % {}
        self.proxy = startProxy(real, config, self.ports["passthrough"], self.admin)
        for port in self.ports.values():
            self.proxy.waitPort(port)

    def stop(self):
        self.proxy.stop()


class HeaderOptionsSideBySideTests(OriginSideBySide, SynchronousTestCase):
    """Envoy 1.40 and txenvoy with the same connection manager options."""

    originHandler = _Origin
    deployment = _Deployment

    def test_sideBySide(self):
        """
        Every reply and what the origin saw alike: the upstream's C{server}
        kept (C{PASS_THROUGH}) or added when absent, C{:scheme} overwritten,
        the Host's port stripped when it is the listener's, no request id
        generated, an external request id preserved or replaced.
        """
        for case in CASES:
            name, headers = case[0], case[1]
            host = case[2] if len(case) > 2 else None
            results = []
            for deployment in (self.envoy, self.txenvoy):
                port = deployment.ports[name]
                raw = _exchange(port, _get(port, *headers, host=host))
                results.append(_masked(raw, port))
            self.assertEqual(results[1], results[0], (case, results[0]))
