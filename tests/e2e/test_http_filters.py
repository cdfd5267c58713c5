"""
End-to-end tests of the HTTP filters (health_check, cors, fault,
local_ratelimit, buffer, header_to_metadata, rbac): a real
C{twistd -n envoy} and a real Envoy 1.40 with the same config, side by
side in front of one small threaded origin, asked the same raw requests.
Every reply is checked against what Envoy 1.40 answered (status line,
header names in order, body) and against the other proxy.

The config is modelled on C{11-http-filters.yaml},
C{14-fault-injection.yaml} (its disk runtime layer in a temporary
folder, switched by swapping the layer's symlink as Envoy expects),
C{15-rbac-http.yaml} and C{04-local-ratelimit.yaml}, on free ports.
"""

import json
import os
import shutil
import socket
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.configs import bootstrap, cluster, httpListener
from tests.e2e.harness import Envoy, RealEnvoy, SharedFixture, freePort

# -- the origin ----------------------------------------------------------------


class _EchoHandler(BaseHTTPRequestHandler):
    """Answers every request with a JSON echo of what it received."""

    protocol_version = "HTTP/1.1"

    def _echo(self):
        body = b""
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if not size:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        else:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
        out = json.dumps({"method": self.command, "path": self.path,
                          "headers": [[k.lower(), v] for k, v in self.headers.items()],
                          "body": body.decode("latin-1")}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_OPTIONS = do_PUT = _echo

    def log_message(self, *args):
        pass


class Origin:
    """A threaded HTTP/1.1 origin on 127.0.0.1."""

    def __init__(self):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


# -- raw HTTP/1.1 --------------------------------------------------------------


class Reply:
    """One response: the status line, C{(name, value)} headers, the body."""

    def __init__(self, statusLine, headers, body):
        self.statusLine = statusLine
        self.headers = headers
        self.body = body

    @property
    def status(self):
        return int(self.statusLine.split(" ")[1])

    def names(self):
        return [n for n, _ in self.headers]

    def header(self, name):
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def echo(self):
        """What the origin saw (for proxied requests)."""
        return json.loads(self.body)

    def __repr__(self):
        return "<Reply %r %r %r>" % (self.statusLine, self.headers, self.body[:80])


class Connection:
    """A client connection: raw requests out, parsed responses in."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed")
        self.buf += data

    def read(self):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
        length = 0
        for name, value in headers:
            if name == "content-length":
                length = int(value)
        while len(self.buf) < length:
            self._fill()
        body, self.buf = self.buf[:length], self.buf[length:]
        return Reply(lines[0], headers, body)

    def close(self):
        self.sock.close()


def exchange(port, data):
    """One request on a fresh connection."""
    c = Connection(port)
    try:
        c.send(data)
        return c.read()
    finally:
        c.close()


def get(path, *headers, method="GET", host="example.com", body=None):
    """The bytes of a request."""
    lines = ["%s %s HTTP/1.1" % (method, path), "host: " + host]
    lines.extend("%s: %s" % h for h in headers)
    if body is not None:
        lines.append("content-length: %d" % (len(body),))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


# -- the deployment ---------------------------------------------------------------

CONFIG = bootstrap(
    listeners=[
        httpListener("chain", "%(chain)d", statPrefix="filtered", routes="""
            - match: { prefix: "/limited" }
              route: { cluster: backend }
              typed_per_filter_config:
                envoy.filters.http.local_ratelimit:
                  "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
                  stat_prefix: route_rl
                  token_bucket: { max_tokens: 10, tokens_per_fill: 10, fill_interval: 1s }
                  filter_enabled:
                    default_value: { numerator: 100, denominator: HUNDRED }
                  filter_enforced:
                    default_value: { numerator: 100, denominator: HUNDRED }
                  response_headers_to_add:
                  - header: { key: x-local-rate-limit, value: "true" }
                    append_action: OVERWRITE_IF_EXISTS_OR_ADD
            - match: { prefix: "/" }
              route: { cluster: backend }
            """, virtualHost="""
            typed_per_filter_config:
              envoy.filters.http.cors:
                "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy
                allow_origin_string_match:
                - safe_regex: { regex: "https://.*\\\\.example\\\\.com" }
                allow_methods: "GET, POST, OPTIONS"
                allow_headers: "content-type, x-requested-with"
                max_age: "600"
            """, routeConfig="""
            name: filtered_routes
            """, httpFilters="""
            - name: envoy.filters.http.health_check
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck
                pass_through_mode: false
                headers:
                - name: ":path"
                  string_match: { exact: "/healthz" }
            - name: envoy.filters.http.cors
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors
            - name: envoy.filters.http.fault
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
                abort:
                  header_abort: {}
                  percentage: { numerator: 100, denominator: HUNDRED }
                delay:
                  header_delay: {}
                  percentage: { numerator: 100, denominator: HUNDRED }
                max_active_faults: 100
            - name: envoy.filters.http.local_ratelimit
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
                stat_prefix: http_local_rate_limiter
            - name: envoy.filters.http.buffer
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer
                max_request_bytes: 10
            - name: envoy.filters.http.header_to_metadata
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.http.header_to_metadata.v3.Config
                request_rules:
                - header: x-tenant
                  on_header_present:
                    metadata_namespace: envoy.lb
                    key: tenant
                    type: STRING
                  remove: true
            """),
        httpListener("fault", "%(fault)d", statPrefix="ingress_http", virtualHosts="""
            - name: service
              domains: ["*"]
              routes:
              - match: { prefix: / }
                route: { cluster: backend }
            """, routeConfig="""
            name: local_route
            """, httpFilters="""
            - name: envoy.filters.http.fault
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
                abort:
                  http_status: 503
                  percentage: { numerator: 0, denominator: HUNDRED }
                delay:
                  fixed_delay: 3s
                  percentage: { numerator: 0, denominator: HUNDRED }
            """),
        httpListener("rbac", "%(rbac)d", statPrefix="rbac_http", virtualHosts="""
            - name: service
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: backend }
            """, routeConfig="""
            name: local_route
            """, httpFilters="""
            - name: envoy.filters.http.rbac
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
                matcher:
                  matcher_list:
                    matchers:
                    - predicate:
                        not_matcher:
                          single_predicate:
                            input:
                              name: envoy.matching.inputs.request_headers
                              typed_config:
                                "@type": type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput
                                header_name: referer
                            value_match:
                              safe_regex:
                                google_re2: {}
                                regex: https?://(www.)?envoyproxy.io/docs/envoy.*
                      on_match:
                        action:
                          name: action
                          typed_config:
                            "@type": type.googleapis.com/envoy.config.rbac.v3.Action
                            name: illegal-referer
                            action: DENY
                  on_no_match:
                    action:
                      name: action
                      typed_config:
                        "@type": type.googleapis.com/envoy.config.rbac.v3.Action
                        name: all-pass
                        action: ALLOW
            """),
        httpListener("ratelimit", "%(ratelimit)d", statPrefix="rl_http", virtualHosts="""
            - name: backend
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: backend }
            """, routeConfig="""
            name: local_route
            """, httpFilters="""
            - name: envoy.filters.http.local_ratelimit
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
                stat_prefix: rl04
                token_bucket: { max_tokens: 2, tokens_per_fill: 2, fill_interval: 60s }
                filter_enabled:
                  runtime_key: local_rate_limit_enabled
                  default_value: { numerator: 100, denominator: HUNDRED }
                filter_enforced:
                  runtime_key: local_rate_limit_enforced
                  default_value: { numerator: 100, denominator: HUNDRED }
                response_headers_to_add:
                - append_action: OVERWRITE_IF_EXISTS_OR_ADD
                  header: { key: x-local-rate-limit, value: 'true' }
                local_rate_limit_per_downstream_connection: false
            """),
    ],
    clusters=[
        cluster("backend", "%(origin)d", extra="""
            type: STATIC
            """),
    ],
    extra="""
    layered_runtime:
      layers:
      - name: disk_layer_0
        disk_layer: { symlink_root: %(runtimeRoot)s, subdirectory: envoy }
    """)

LISTENERS = ("chain", "fault", "rbac", "ratelimit")


class RuntimeFolder:
    """
    A disk runtime layer as Envoy watches it: C{root} is a symlink to a
    version directory, and a change is a new version swapped in with a
    rename over the symlink.
    """

    def __init__(self, values):
        self.base = tempfile.mkdtemp(prefix="txenvoy-runtime-")
        self.root = os.path.join(self.base, "current")
        self.versions = 0
        self.write(values)

    def write(self, values):
        """Swap in a new version holding C{{key: text}} under C{envoy/}."""
        self.versions += 1
        version = os.path.join(self.base, "v%d" % (self.versions,))
        for key, text in values.items():
            path = os.path.join(version, "envoy", *key.split("."))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
        os.makedirs(os.path.join(version, "envoy"), exist_ok=True)
        link = self.root + ".new"
        os.symlink(version, link)
        os.replace(link, self.root)

    def remove(self):
        shutil.rmtree(self.base, ignore_errors=True)


class Proxy:
    """One proxy's ports, admin and stats."""

    def __init__(self, runtimeRoot, originPort, real):
        self.ports = {name: freePort() for name in LISTENERS}
        self.adminPort = freePort()
        config = CONFIG % dict(self.ports, admin=self.adminPort, origin=originPort,
                               runtimeRoot=runtimeRoot)
        if real:
            self.process = RealEnvoy(config)
        else:
            self.process = Envoy(config, args=("--concurrency", "1"), adminPort=self.adminPort)
        for port in self.ports.values():
            self.process.waitPort(port)
        self.process.waitPort(self.adminPort)

    def admin(self, path, method="GET"):
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (self.adminPort, path),
                                     method=method)
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.read().decode()

    def stats(self):
        """C{/stats} counters and gauges as a dict."""
        out = {}
        for line in self.admin("/stats").splitlines():
            name, _, value = line.partition(": ")
            if value.isdigit():
                out[name] = int(value)
        return out

    def request(self, listener, data):
        return exchange(self.ports[listener], data)

    def stop(self):
        self.process.stop()


# Stats of these filters, by name prefix.
FILTER_STATS = ("http.filtered.cors.", "http.filtered.fault.", "http.filtered.health_check.",
                "http_local_rate_limiter.", "http.ingress_http.fault.", "http.rbac_http.rbac.",
                "rl04.")
REFERER = ("referer", "https://www.envoyproxy.io/docs/envoy/latest")


class HttpFiltersTests(SharedFixture, SynchronousTestCase):
    """txenvoy and Envoy 1.40 with the same config, the same requests."""

    @classmethod
    def startFixture(cls):
        # Empty at first: the fault runtime keys are read by every fault
        # filter of the process, the header-driven ones of "chain" included.
        cls.runtime = RuntimeFolder({})
        cls.origin = Origin()
        cls.tx = cls.envoy = None
        try:
            cls.tx = Proxy(cls.runtime.root, cls.origin.port, real=False)
            cls.envoy = Proxy(cls.runtime.root, cls.origin.port, real=True)
            cls.initialStats = (cls.tx.stats(), cls.envoy.stats())
        except BaseException:
            cls.stopFixture()
            raise

    @classmethod
    def stopFixture(cls):
        for proxy in (cls.tx, cls.envoy):
            if proxy is not None:
                proxy.stop()
        cls.origin.stop()
        cls.runtime.remove()

    def both(self, listener, data):
        """Send C{data} to txenvoy and to Envoy: C{(txReply, envoyReply)}."""
        return self.tx.request(listener, data), self.envoy.request(listener, data)

    def assertSameReply(self, tx, envoy, body=True, ignore=()):
        self.assertEqual(tx.statusLine, envoy.statusLine)
        self.assertEqual([n for n in tx.names() if n not in ignore],
                         [n for n in envoy.names() if n not in ignore])
        if body:
            self.assertEqual(tx.body, envoy.body)

    # -- stats names -------------------------------------------------------

    def test_statsAtStart(self):
        """
        The filters' stats exist, at zero, from the start, under Envoy's
        names (the route's C{route_rl.*} stats excepted: txenvoy builds a
        route's config on its first request).
        """
        tx, envoy = self.initialStats
        for prefix in FILTER_STATS:
            txNames = sorted(n for n in tx if n.startswith(prefix))
            envoyNames = sorted(n for n in envoy if n.startswith(prefix))
            self.assertTrue(envoyNames, prefix)
            self.assertEqual(txNames, envoyNames)
        self.assertIn("http.filtered.fault.active_faults", envoy)

    # -- health_check --------------------------------------------------------

    def test_healthCheck(self):
        """GET /healthz: 200, empty, C{x-envoy-upstream-healthchecked-cluster:} first."""
        tx, envoy = self.both("chain", get("/healthz"))
        self.assertSameReply(tx, envoy)
        self.assertEqual(tx.statusLine, "HTTP/1.1 200 OK")
        self.assertEqual(tx.names(), ["x-envoy-upstream-healthchecked-cluster", "date",
                                      "server", "content-length"])
        self.assertEqual((tx.header("content-length"), tx.body), ("0", b""))

    def test_healthCheckFail(self):
        """After C{POST /healthcheck/fail} on the admin: 503, until C{/healthcheck/ok}."""
        try:
            for proxy in (self.tx, self.envoy):
                self.assertEqual(proxy.admin("/healthcheck/fail", "POST").strip(), "OK")
            tx, envoy = self.both("chain", get("/healthz"))
            self.assertSameReply(tx, envoy)
            self.assertEqual(tx.statusLine, "HTTP/1.1 503 Service Unavailable")
            self.assertEqual(tx.header("x-envoy-immediate-health-check-fail"), "true")
            tx, envoy = self.both("chain", get("/other"))
            self.assertSameReply(tx, envoy, body=False)
            self.assertEqual(tx.header("x-envoy-immediate-health-check-fail"), "true")
        finally:
            for proxy in (self.tx, self.envoy):
                proxy.admin("/healthcheck/ok", "POST")
        self.assertEqual(self.tx.request("chain", get("/healthz")).status, 200)
        failed = "http.filtered.health_check.failed"
        self.assertEqual(self.tx.stats()[failed], self.envoy.stats()[failed])

    # -- cors ----------------------------------------------------------------------

    def test_corsPreflight(self):
        """The preflight of 11-http-filters.yaml, answered by the proxy."""
        tx, envoy = self.both("chain", get("/", ("origin", "https://a.example.com"),
                                           ("access-control-request-method", "POST"),
                                           method="OPTIONS"))
        self.assertSameReply(tx, envoy)
        self.assertEqual(tx.status, 200)
        self.assertEqual(tx.headers[:4], [
            ("access-control-allow-origin", "https://a.example.com"),
            ("access-control-allow-methods", "GET, POST, OPTIONS"),
            ("access-control-allow-headers", "content-type, x-requested-with"),
            ("access-control-max-age", "600")])

    def test_corsSimple(self):
        tx, envoy = self.both("chain", get("/", ("origin", "https://b.example.com")))
        self.assertSameReply(tx, envoy, body=False)
        self.assertEqual(tx.headers[-1], ("access-control-allow-origin", "https://b.example.com"))

    def test_corsOriginNotAllowed(self):
        """Envoy forwards a preflight from an origin it does not allow."""
        tx, envoy = self.both("chain", get("/", ("origin", "https://evil.org"),
                                           ("access-control-request-method", "POST"),
                                           method="OPTIONS"))
        self.assertSameReply(tx, envoy, body=False)
        self.assertEqual(tx.echo()["method"], "OPTIONS")

    # -- fault -----------------------------------------------------------------------

    def test_faultHeaderAbort(self):
        """C{x-envoy-fault-abort-request: 418}: C{HTTP/1.1 418 Unknown}, C{fault filter abort}."""
        tx, envoy = self.both("chain", get("/", ("x-envoy-fault-abort-request", "418")))
        self.assertSameReply(tx, envoy)
        self.assertEqual(tx.statusLine, "HTTP/1.1 418 Unknown")
        self.assertEqual(tx.body, b"fault filter abort")
        self.assertEqual(tx.names(), ["content-length", "content-type", "date", "server"])

    def test_faultHeaderDelay(self):
        """C{x-envoy-fault-delay-request: 300} holds the request 300 ms."""
        started = time.time()
        reply = self.tx.request("chain", get("/", ("x-envoy-fault-delay-request", "300")))
        self.assertEqual(reply.status, 200)
        self.assertGreaterEqual(time.time() - started, 0.3)

    def test_faultFromRuntime(self):
        """
        14-fault-injection.yaml: the fault is configured at 0%; writing
        C{abort_percent: 100} into the runtime folder makes requests fail
        with the configured code (503), on both proxies.
        """
        for proxy in (self.tx, self.envoy):
            self.assertEqual(proxy.request("fault", get("/")).status, 200)
        try:
            self.runtime.write({"fault.http.abort.abort_percent": "100"})
            for proxy in (self.tx, self.envoy):
                deadline = time.time() + 10
                while True:
                    reply = proxy.request("fault", get("/"))
                    if reply.status != 200 or time.time() > deadline:
                        break
                    time.sleep(0.1)
                self.assertEqual(reply.statusLine, "HTTP/1.1 503 Service Unavailable")
                self.assertEqual(reply.body, b"fault filter abort")
            tx, envoy = self.both("fault", get("/"))
            self.assertSameReply(tx, envoy)
        finally:
            self.runtime.write({})
        for proxy in (self.tx, self.envoy):
            deadline = time.time() + 10
            while proxy.request("fault", get("/")).status != 200:
                self.assertLess(time.time(), deadline)
                time.sleep(0.1)
        name = "http.ingress_http.fault.aborts_injected"
        self.assertGreaterEqual(self.tx.stats()[name], 2)

    # -- local_ratelimit ------------------------------------------------------------

    def test_localRateLimit(self):
        """
        04-local-ratelimit.yaml's filter (a minute's fill here): two requests,
        then 429 C{local_rate_limited} with C{x-local-rate-limit: true}.
        """
        replies = {}
        for name, proxy in (("tx", self.tx), ("envoy", self.envoy)):
            replies[name] = [proxy.request("ratelimit", get("/")) for _ in range(3)]
            self.assertEqual([r.status for r in replies[name]], [200, 200, 429], name)
        tx, envoy = replies["tx"][-1], replies["envoy"][-1]
        self.assertSameReply(tx, envoy)
        self.assertEqual(tx.statusLine, "HTTP/1.1 429 Too Many Requests")
        self.assertEqual(tx.body, b"local_rate_limited")
        self.assertEqual(tx.names(), ["x-local-rate-limit", "content-length", "content-type",
                                      "date", "server"])
        txStats, envoyStats = self.tx.stats(), self.envoy.stats()
        for stat in ("enabled", "enforced", "ok", "rate_limited", "shadow_mode"):
            name = "rl04.http_local_rate_limit." + stat
            self.assertEqual(txStats[name], envoyStats[name], name)

    def test_routeLocalRateLimit(self):
        """
        11-http-filters.yaml: C{/limited} empties its route's bucket (10
        tokens a second). The 40 requests are pipelined, so that they all
        reach the proxy well within the second however loaded the machine.
        """
        c = Connection(self.tx.ports["chain"])
        try:
            c.send(get("/limited") * 40)
            statuses = [c.read().status for _ in range(40)]
        finally:
            c.close()
        self.assertEqual(statuses[:10], [200] * 10)
        self.assertIn(429, statuses)
        stats = self.tx.stats()
        self.assertEqual(stats["route_rl.http_local_rate_limit.rate_limited"],
                         statuses.count(429))
        self.assertEqual(stats["http_local_rate_limiter.http_local_rate_limit.enabled"], 0)

    # -- buffer -------------------------------------------------------------------

    def test_bufferTooLarge(self):
        """
        Past C{max_request_bytes}: 413 C{Payload Too Large}. Envoy's HTTP/1
        codec ends the request separately from its body, so its 413 comes
        before the request is complete and adds C{connection: close}.
        """
        tx, envoy = self.both("chain", get("/", method="POST", body=b"0123456789a"))
        self.assertSameReply(tx, envoy)
        self.assertEqual(tx.statusLine, "HTTP/1.1 413 Payload Too Large")
        self.assertEqual(tx.header("connection"), "close")
        self.assertEqual(tx.body, b"Payload Too Large")

    def test_bufferChunked(self):
        """A chunked body reaches the origin whole, with a C{content-length}."""
        data = (b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
                b"5\r\n01234\r\n3\r\nabc\r\n0\r\n\r\n")
        tx, envoy = self.both("chain", data)
        self.assertSameReply(tx, envoy, body=False)
        seen = dict(tx.echo()["headers"])
        self.assertEqual(seen["content-length"], "8")
        self.assertEqual(tx.echo()["body"], "01234abc")
        self.assertEqual([n for n, _ in tx.echo()["headers"]],
                         [n for n, _ in envoy.echo()["headers"]])

    # -- header_to_metadata -------------------------------------------------------

    def test_headerToMetadataRemoves(self):
        """C{remove: true}: the header is taken off the request."""
        tx, envoy = self.both("chain", get("/", ("x-tenant", "acme"), ("x-keep", "1")))
        for reply in (tx, envoy):
            names = [n for n, _ in reply.echo()["headers"]]
            self.assertNotIn("x-tenant", names)
            self.assertIn("x-keep", names)

    # -- rbac -------------------------------------------------------------------------

    def test_rbacDenied(self):
        """15-rbac-http.yaml without a good referer: 403 C{RBAC: access denied}."""
        tx, envoy = self.both("rbac", get("/"))
        self.assertSameReply(tx, envoy)
        self.assertEqual(tx.statusLine, "HTTP/1.1 403 Forbidden")
        self.assertEqual(tx.body, b"RBAC: access denied")

    def test_rbacAllowed(self):
        tx, envoy = self.both("rbac", get("/", REFERER))
        self.assertSameReply(tx, envoy, body=False)
        self.assertEqual(tx.status, 200)
        txStats, envoyStats = self.tx.stats(), self.envoy.stats()
        for name in ("allowed", "denied", "shadow_allowed", "shadow_denied"):
            self.assertIn("http.rbac_http.rbac." + name, txStats)
        self.assertGreaterEqual(txStats["http.rbac_http.rbac.allowed"], 1)
        self.assertGreaterEqual(envoyStats["http.rbac_http.rbac.allowed"], 1)
