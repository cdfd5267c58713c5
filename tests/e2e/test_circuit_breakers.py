"""
End-to-end: cluster circuit breakers (issue 11) through a real C{twistd -n
envoy --concurrency 2} and real Envoy 1.40 on the same YAML, in front of a
slow origin on 127.0.0.1: what the client sees on each overflow (status,
headers, body, or a closed TCP connection) and the overflow counters and
C{circuit_breakers.*} gauges, compared between the two.

Each threshold has its own cluster, so that one scenario's counts do not
shape another's, and each scenario's outcome does not depend on which
worker a connection lands on.
"""

import http.client
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import SharedFixture, adminStats, freePort, startProxy

SLOW = 1.5


class _Handler(BaseHTTPRequestHandler):
    """
    C{/pools}, C{/rq}, C{/retry}, C{/budget} and C{/perhost} answer after L{SLOW}: 503 C{busy} when
    the path has C{fail}, else 200 C{ok}.
    """

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path.startswith(("/pools", "/rq", "/retry", "/budget", "/perhost")):
            time.sleep(SLOW)
        code, body = (503, b"busy") if "fail" in self.path else (200, b"ok")
        self.send_response(code)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _echo(conn):
    conn.settimeout(10)
    try:
        while True:
            data = conn.recv(65536)
            if not data:
                return
            conn.sendall(data)
    except OSError:
        pass
    finally:
        conn.close()


class EchoServer:
    """A TCP echo server for the tcp_proxy cluster."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=_echo, args=(conn,), daemon=True).start()

    def stop(self):
        self.sock.close()


def cluster(name, ports, thresholds):
    endpoints = ", ".join(
        "{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}"
        % (port,) for port in ports)
    return """
  - name: %s
    connect_timeout: 1s
    circuit_breakers: {thresholds: %s}
    load_assignment:
      cluster_name: %s
      endpoints: [{lb_endpoints: [%s]}]
""" % (name, thresholds, name, endpoints)


def config(admin, http, tcp, origins, echo):
    route = '{match: {prefix: "%s"}, route: {cluster: %s%s}}'
    routes = ", ".join([
        route % ("/pending", "pending", ""),
        route % ("/rq", "rq", ""),
        route % ("/retry", "retry", ", retry_policy: {retry_on: 5xx, num_retries: 1}"),
        route % ("/pools", "pools", ""),
        route % ("/budget", "budget", ", retry_policy: {retry_on: 5xx, num_retries: 1}"),
        route % ("/high", "rq", ", priority: HIGH"),
        route % ("/perhost", "perhost", ""),
    ])
    return """
admin: {address: {socket_address: {address: 127.0.0.1, port_value: %(admin)d}}}
static_resources:
  listeners:
  - name: http
    address: {socket_address: {address: 127.0.0.1, port_value: %(http)d}}
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts: [{name: all, domains: ["*"], routes: [%(routes)s]}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  - name: tcp
    address: {socket_address: {address: 127.0.0.1, port_value: %(tcp)d}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: tcp
  clusters:%(clusters)s
""" % dict(admin=admin, http=http, tcp=tcp, routes=routes, clusters="".join([
        cluster("pending", origins[:1], "[{max_pending_requests: 0}]"),
        cluster("rq", origins[:1], "[{max_requests: 2, track_remaining: true}, "
                                   "{priority: HIGH, max_requests: 5, track_remaining: true}]"),
        cluster("retry", origins[:1], "[{max_retries: 1}]"),
        cluster("budget", origins[:1], "[{retry_budget: {budget_percent: {value: 0}, "
                                       "min_retry_concurrency: 1}, track_remaining: true}]"),
        cluster("pools", origins, "[{max_connection_pools: 1, track_remaining: true}]"),
        cluster("tcp", [echo], "[{max_connections: 1}]"),
        cluster("perhost", origins[:1], "[], per_host_thresholds: [{max_connections: 1}]"),
    ]))


def get(port, path, results, key, delay=0.0):
    time.sleep(delay)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        results[key] = (r.status, r.getheader("x-envoy-overloaded"), r.read())
    finally:
        conn.close()


def concurrently(*calls):
    threads = [threading.Thread(target=f, args=a) for f, *a in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)


def run(real, origins, echo):
    """Every scenario against one proxy: C{(client results, stats)}."""
    admin, http, tcp = freePort(), freePort(), freePort()
    yaml = config(admin, http, tcp, origins, echo)
    proxy = startProxy(real, yaml, http, admin, concurrency=2)
    try:
        proxy.waitPort(tcp)
        results = {}
        before = adminStats(admin)
        # max_pending_requests 0: no connection is ready, so no request may wait.
        get(http, "/pending", results, "pending")
        # max_requests 2: a third request while two are in flight; a HIGH
        # request counts against HIGH's own limit.
        # max_retries 1: a retry holds the slot while a second request's
        # retry is refused. max_connection_pools 1: the second host has none.
        held = {}
        concurrently(
            (get, http, "/rq/1", results, "rq1"),
            (get, http, "/rq/2", results, "rq2"),
            (get, http, "/rq/3", results, "rq3", 0.5),
            (get, http, "/high/1", results, "high", 0.5),
            (gauges, admin, held, 1.0),
            (get, http, "/retry/fail/a", results, "retryA"),
            (get, http, "/retry/fail/b", results, "retryB", 0.75),
            (get, http, "/budget/fail/a", results, "budgetA"),
            (get, http, "/budget/fail/b", results, "budgetB", 0.75),
            (get, http, "/pools/1", results, "pools1"),
            (get, http, "/pools/2", results, "pools2", 0.5),
            (tcpPair, tcp, admin, results),
            # per_host_thresholds max_connections 1: the second request
            # waits for the host's connection (upstream_cx_overflow).
            (get, http, "/perhost/1", results, "perhost1"),
            (get, http, "/perhost/2", results, "perhost2", 0.5),
        )
        return results, held, before, adminStats(admin)
    finally:
        proxy.stop()


def gauges(admin, out, delay):
    time.sleep(delay)
    out.update({k: v for k, v in adminStats(admin).items() if ".circuit_breakers." in k})


def tcpPair(port, admin, results):
    """max_connections 1: a second connection is closed at once."""
    # The readiness probe's connection must be gone, and its upstream slot
    # with it.
    listener = "listener.127.0.0.1_%d." % (port,)
    deadline = time.time() + 5
    while time.time() < deadline:
        stats = adminStats(admin)
        if (stats.get(listener + "downstream_cx_total", 0) >= 1
                and stats.get(listener + "downstream_cx_active") == 0
                and stats.get("cluster.tcp.upstream_cx_active") == 0):
            break
        time.sleep(0.05)
    first = socket.create_connection(("127.0.0.1", port), timeout=5)
    first.sendall(b"ping")
    echoed = first.recv(16)
    second = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        closed = second.recv(16)
    except ConnectionResetError:
        closed = b"reset"
    results["tcp"] = (echoed, closed)
    second.close()
    first.close()


STATS = [
    "cluster.pending.upstream_rq_pending_overflow",
    "cluster.rq.upstream_rq_pending_overflow",
    "cluster.rq.upstream_rq_active_overflow",
    "cluster.retry.upstream_rq_retry_overflow",
    "cluster.retry.upstream_rq_retry",
    "cluster.retry.upstream_rq_retry_limit_exceeded",
    "cluster.budget.upstream_rq_retry_overflow",
    "cluster.budget.upstream_rq_retry",
    "cluster.pools.upstream_cx_pool_overflow",
    "cluster.tcp.upstream_cx_overflow",
    "cluster.perhost.upstream_cx_overflow",
]


class CircuitBreakerComparison(SharedFixture, SynchronousTestCase):
    """The same scenarios through Envoy 1.40 and txenvoy."""

    maxDiff = None

    @classmethod
    def startFixture(cls):
        cls.origins = []
        for _ in range(2):
            origin = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
            origin.daemon_threads = True
            threading.Thread(target=origin.serve_forever, daemon=True).start()
            cls.origins.append(origin)
        cls.echo = EchoServer()
        ports = [o.server_address[1] for o in cls.origins]
        cls.outcomes = {}

        def one(real):
            cls.outcomes[real] = run(real, ports, cls.echo.port)

        concurrently((one, True), (one, False))

    @classmethod
    def stopFixture(cls):
        for origin in cls.origins:
            origin.shutdown()
            origin.server_close()
        cls.echo.stop()

    def test_clientSees(self):
        """Status, x-envoy-overloaded and body of every request, and the TCP close."""
        envoy, tx = self.outcomes[True][0], self.outcomes[False][0]
        overflow = (503, "true", b"upstream connect error or disconnect/reset before headers. "
                                 b"reset reason: overflow")
        self.assertEqual(envoy["pending"], overflow)
        self.assertEqual(envoy["rq3"], overflow)
        self.assertEqual(envoy["high"][0], 200)
        self.assertEqual(envoy["retryB"], (503, None, b"busy"))
        self.assertEqual(envoy["budgetB"], (503, None, b"busy"))
        self.assertEqual(envoy["pools1"], (200, None, b"ok"))
        self.assertEqual(envoy["pools2"], (503, None, b"no healthy upstream"))
        self.assertEqual(envoy["tcp"], (b"ping", b""))
        self.assertEqual((envoy["perhost1"], envoy["perhost2"]), ((200, None, b"ok"),) * 2)
        self.assertEqual(tx, envoy)

    def test_stats(self):
        """The overflow counters, before and after, are Envoy's."""
        envoy, tx = self.outcomes[True], self.outcomes[False]
        self.assertEqual({n: tx[3].get(n) for n in STATS}, {n: envoy[3].get(n) for n in STATS})
        self.assertEqual({n: tx[2].get(n) for n in STATS}, {n: envoy[2].get(n) for n in STATS})

    def test_gauges(self):
        """
        C{circuit_breakers.<priority>.*} gauges, while the C{rq} requests
        are in flight and at rest: the same names and values.
        """
        envoy, tx = self.outcomes[True], self.outcomes[False]
        for snapshotE, snapshotT in ((envoy[1], tx[1]), (envoy[3], tx[3])):
            namesE = sorted(k for k in snapshotE if ".circuit_breakers." in k)
            self.assertEqual(sorted(k for k in snapshotT if ".circuit_breakers." in k), namesE)
            self.assertEqual(comparable(snapshotT, namesE), comparable(snapshotE, namesE))


def comparable(snapshot, names):
    """
    The gauges of C{names} that do not depend on the worker count: the
    kept-alive connections and pools (one worker in Envoy, up to two in
    txenvoy) are left out, except for the cluster limited to one pool.
    """
    return {n: snapshot[n] for n in names
            if n.startswith("cluster.pools.") or not n.endswith(
                ("remaining_cx", "remaining_cx_pools"))}
