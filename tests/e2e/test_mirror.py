"""
End-to-end comparison of a route's C{request_mirror_policies} (shadow
traffic): a real C{twistd -n envoy} and a real Envoy 1.40 with the same
config mirror requests to a second origin. The client's reply, what the
main origin received and what the shadow origin received (its copy, host
suffixed C{-shadow}, the body included) must be the same; a
C{runtime_fraction} of 0 sends no copy, and the client is answered even
when the shadow never answers.
"""

import functools
import json
import re
import time
from http.server import BaseHTTPRequestHandler

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.configs import bootstrap, cluster, httpListener
from tests.e2e.harness import (
    SharedFixture,
    exchangeToClose,
    freePort,
    httpOrigin,
    rawRequest,
    startProxy,
    stopAll,
)


def _recordingHandler(seen, stall=False):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _answer(self):
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            record = {"method": self.command, "path": self.path,
                      "headers": sorted([k.lower(), v] for k, v in self.headers.items()
                                        if k.lower() != "x-request-id"),
                      "body": body.decode("latin-1")}
            seen.append(record)
            if stall and "stall" in self.path:
                time.sleep(2)
            out = json.dumps(record).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        do_GET = do_POST = _answer

    return Handler


CONFIG = bootstrap(
    listeners=[
        httpListener("mirror", "%(main)d", routes="""
            - match: { prefix: "/never/" }
              route:
                cluster: origin
                request_mirror_policies:
                - cluster: shadow
                  runtime_fraction: { default_value: { numerator: 0 } }
            - match: { prefix: "/plain/" }
              route:
                cluster: origin
                request_mirror_policies:
                - { cluster: shadow, disable_shadow_host_suffix_append: true }
            - match: { prefix: "/" }
              route:
                cluster: origin
                request_mirror_policies:
                - cluster: shadow
                  runtime_fraction: { default_value: { numerator: 100 } }
            """),
    ],
    clusters=[cluster("origin"), cluster("shadow")])


_request = functools.partial(rawRequest, host="app.example:8080")


CASES = [
    _request("/a/x?q=1", "x-user: u"),
    _request("/a/x", method="POST", body=b"hello shadow"),
    _request("/a/x", host="app.example"),
    _request("/plain/x"),
    _request("/never/x"),
]


def _masked(raw):
    raw = re.sub(rb"date: [^\\r]*\r\n", b"", raw)
    return re.sub(rb"x-envoy-upstream-service-time: \d+", b"x-envoy-upstream-service-time: N",
                  raw)


class MirrorSideBySideTests(SharedFixture, SynchronousTestCase):

    @classmethod
    def startFixture(cls):
        cls.originSeen, cls.shadowSeen = [], []
        cls.servers = []
        for handler in (_recordingHandler(cls.originSeen),
                        _recordingHandler(cls.shadowSeen, stall=True)):
            cls.servers.append(httpOrigin(handler))
        origin, shadow = (s.server_address[1] for s in cls.servers)
        cls.proxies = []
        try:
            for real in (True, False):
                ports = dict(admin=freePort(), main=freePort(), origin=origin, shadow=shadow)
                proxy = startProxy(real, CONFIG % ports, ports["main"], ports["admin"])
                cls.proxies.append((proxy, ports["main"]))
        except BaseException:
            cls.stopFixture()
            raise

    @classmethod
    def stopFixture(cls):
        stopAll(*[proxy for proxy, _ in cls.proxies], *cls.servers)

    def run_(self, port, raw):
        del self.originSeen[:]
        del self.shadowSeen[:]
        reply = _masked(exchangeToClose(port, raw))
        deadline = time.time() + 10
        while time.time() < deadline and len(self.shadowSeen) < (0 if b"/never/" in raw else 1):
            time.sleep(0.01)
        time.sleep(0.05)
        return reply, list(self.originSeen), list(self.shadowSeen)

    def test_sideBySide(self):
        """The same reply, the same request at the origin, the same copy at the shadow."""
        (envoy, envoyPort), (txenvoy, txenvoyPort) = self.proxies
        for raw in CASES:
            expected = self.run_(envoyPort, raw)
            got = self.run_(txenvoyPort, raw)
            self.assertEqual(got, expected, raw)

    def test_clientDoesNotWait(self):
        """The shadow stalls for 2 s; the client has its answer at once."""
        del self.shadowSeen[:]
        for _, port in self.proxies:
            start = time.time()
            reply = exchangeToClose(port, _request("/a/stall"))
            self.assertTrue(reply.startswith(b"HTTP/1.1 200 OK"))
            self.assertLess(time.time() - start, 1.5)
        # Both copies reach the shadow before the next test counts its own.
        deadline = time.time() + 10
        while time.time() < deadline and len(self.shadowSeen) < len(self.proxies):
            time.sleep(0.01)
        self.assertEqual([r["path"] for r in self.shadowSeen], ["/a/stall"] * len(self.proxies))
