"""
Envoy's connection-teardown counters, from real Envoy 1.40 and from a real
C{twistd -n envoy}, for the same scenarios with the same config: a host
that resets before answering, answers garbage, stalls past the route
timeout, says C{connection: close}, or is idle past the cluster's
C{idle_timeout}; a client that goes away in the middle of a request, or
that leaves a connection Envoy is closing open past
C{delayed_close_timeout}. Each scenario has its own cluster, so that the
C{cluster.<name>.*} counters name one scenario each.
"""

import socket
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.configs import bootstrap, cluster, httpListener
from tests.e2e.harness import (DeadPort, SharedFixture, Upstream, adminStats, freePort,
                                startProxy, statsWhen)
from tests.e2e.test_http import Client, Origin
from tests.e2e.test_overload import (GET, heapMonitor, onHeap, originHandler, proxyConfig,
                                     readResponse)

CLUSTERS = ("reset", "garbage", "stall", "gone", "idle", "closing", "keep", "partial", "dead",
            "slowbody", "aged")

ROUTE = """              - match: {prefix: "/%(name)s/"}
                route: {cluster: %(name)s}"""

OPTIONS = """
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        common_http_protocol_options: {%s}
        explicit_http_config: {http_protocol_options: {}}"""
CLUSTER_OPTIONS = {"idle": OPTIONS % ("idle_timeout: 0.3s",),
                   "keep": OPTIONS % ("max_requests_per_connection: 2",),
                   "aged": OPTIONS % ("max_connection_duration: 0.3s",)}


def teardownConfig(port, adminPort, originPort, deadPort):
    routes = [ROUTE % {"name": name} for name in CLUSTERS if name not in ("stall", "slowbody")]
    return bootstrap(
        [httpListener("front", port, statPrefix="teardown", hcm="""
            delayed_close_timeout: 0.5s
            common_http_protocol_options: {idle_timeout: 1.5s, max_requests_per_connection: 2}
            request_headers_timeout: 0.3s
            """, routes=["""
            - match: {prefix: "/stall/"}
              route: {cluster: stall, timeout: 0.3s}
            - match: {prefix: "/slowbody/"}
              route: {cluster: slowbody, timeout: 0.1s}
            """] + routes)],
        [cluster(name, deadPort if name == "dead" else originPort,
                 ["type: STATIC", CLUSTER_OPTIONS.get(name, "")]) for name in CLUSTERS],
        admin=adminPort)


# Counters compared, per cluster and for the connection manager.
UPSTREAM = ("upstream_cx_total", "upstream_cx_destroy", "upstream_cx_destroy_local",
            "upstream_cx_destroy_remote", "upstream_cx_destroy_with_active_rq",
            "upstream_cx_destroy_local_with_active_rq",
            "upstream_cx_destroy_remote_with_active_rq", "upstream_cx_protocol_error",
            "upstream_cx_idle_timeout", "upstream_cx_close_notify", "upstream_rq_timeout",
            "upstream_rq_total", "upstream_rq_rx_reset", "upstream_rq_tx_reset",
            "upstream_cx_connect_fail", "upstream_rq_pending_failure_eject",
            "upstream_cx_max_requests", "upstream_cx_max_duration_reached")
DOWNSTREAM = ("downstream_cx_total", "downstream_cx_destroy", "downstream_cx_destroy_local",
              "downstream_cx_destroy_remote", "downstream_cx_destroy_active_rq",
              "downstream_cx_destroy_local_active_rq", "downstream_cx_destroy_remote_active_rq",
              "downstream_cx_delayed_close_timeout", "downstream_rq_rx_reset",
              "downstream_rq_tx_reset", "downstream_rq_total", "downstream_rq_completed",
              "downstream_rq_2xx", "downstream_rq_4xx", "downstream_rq_5xx",
              "downstream_cx_protocol_error", "downstream_cx_idle_timeout",
              "rq_reset_after_downstream_response_started", "downstream_rq_header_timeout",
              "downstream_cx_max_requests_reached", "downstream_rq_response_before_rq_complete")


def waitClosed(sock, timeout=3.0):
    """Read until the proxy closes; @return: seconds it took."""
    started = time.time()
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass
    return time.time() - started


def closedAfter(sock):
    """
    When the proxy closed: C{"at once"}, C{"after 0.5 s"} (the delayed
    close configured here) or C{"later"}. The timers compared are 0.5 s
    apart, and a loaded machine makes either proxy up to a few hundred
    milliseconds late.
    """
    seconds = waitClosed(sock)
    return "at once" if seconds < 0.25 else "after 0.5 s" if seconds < 0.9 else "later"


def _get(port, path, headers=()):
    c = Client(port)
    try:
        return c.request("GET", path, headers=headers)
    finally:
        c.close()


class _Scenarios:
    """The scenarios, each run against one proxy; the results are kept."""

    def __init__(self, port, adminPort):
        self.port = port
        self.adminPort = adminPort
        self.seen = {}

    def runAll(self):
        port = self.port
        self.seen["reset"] = _get(port, "/reset/reset").status
        self.seen["dead"] = _get(port, "/dead/echo").status
        # The host closes in the middle of the response body.
        c = Client(port)
        c.send(b"GET /partial/partial HTTP/1.1\r\nhost: a\r\n\r\n")
        head = c.reader.readHead()
        c.reader.readRest()
        self.seen["partial"] = head.split(b"\r\n")[0].decode()
        c.close()
        # The route timeout (0.1 s) strikes in the middle of the body, long
        # before the host would close (3 s), however late either runs.
        c = Client(port)
        c.send(b"GET /slowbody/partial/hold HTTP/1.1\r\nhost: a\r\n\r\n")
        head = c.reader.readHead()
        self.seen["slowbody"] = (head.split(b"\r\n")[0].decode(), closedAfter(c.sock))
        c.close()
        # A request head that never ends: request_headers_timeout.
        c = Client(port)
        c.send(b"GET /keep/echo HTTP/1.1\r\nhost: a\r\n")
        response = c.read()
        self.seen["headTimeout"] = (response.status, response.header("connection"),
                                    closedAfter(c.sock))
        c.close()
        # max_requests_per_connection: the second response closes.
        c = Client(port)
        first = c.request("GET", "/keep/echo")
        second = c.request("GET", "/keep/echo")
        self.seen["maxRequests"] = (first.header("connection"), second.header("connection"),
                                    closedAfter(c.sock))
        c.close()
        # A connection with no request: closed after the HCM's idle_timeout.
        c = Client(port)
        # (Envoy closes it at once: no delayed close.)
        self.seen["downstreamIdle"] = 1.3 < waitClosed(c.sock, 4.0) < 1.9
        c.close()
        self.seen["garbage"] = _get(port, "/garbage/garbage").status
        self.seen["stall"] = _get(port, "/stall/stall").status
        # The client goes away while its request waits for the response.
        c = Client(port)
        c.send(b"GET /gone/stall HTTP/1.1\r\nhost: a\r\n\r\n")
        time.sleep(0.2)
        c.close()
        # A response that closes its connection; one kept alive.
        self.seen["closing"] = _get(port, "/closing/close").status
        self.seen["keep"] = _get(port, "/keep/echo").status
        # A connection older than the cluster's max_connection_duration.
        self.seen["aged"] = _get(port, "/aged/echo").status
        # A connection idle in the pool past the cluster's idle_timeout.
        self.seen["idle"] = _get(port, "/idle/echo").status
        # A client asking to close, reading the response and leaving its
        # end open: closed after delayed_close_timeout.
        c = Client(port)
        response = c.request("GET", "/keep/echo", headers=[("connection", "close")])
        self.seen["delayed"] = (response.status, response.header("connection"),
                                closedAfter(c.sock))
        c.close()
        # ... and one that closes its end first.
        c = Client(port)
        response = c.request("GET", "/keep/echo", headers=[("connection", "close")])
        c.close()
        # A local reply that closes the connection (no Host): Envoy waits
        # delayed_close_timeout for the client to close first.
        c = Client(port)
        response = c.request("GET", "/keep/echo", host=None)
        self.seen["noHost"] = (response.status, response.header("connection"),
                               closedAfter(c.sock))
        c.close()
        c = Client(port)
        c.send(b"GET /keep/echo HTTP/1.1\r\nbad header\r\n\r\n")
        response = c.read()
        self.seen["badRequest"] = (response.status, response.header("connection"),
                                   closedAfter(c.sock))
        c.close()
        c = Client(port)
        response = c.request("GET", "/keep/echo", host=None)
        c.close()
        self.stats = statsWhen(self.adminPort, self.settled)

    def settled(self, stats):
        """
        Every connection counted as ended (the pool's idle one after its
        idle_timeout) but C{keep}'s last, pooled for a next request.
        """
        if stats.get("http.teardown.downstream_cx_destroy") != stats.get(
                "http.teardown.downstream_cx_total"):
            return False
        return all(stats.get("cluster.%s.upstream_cx_destroy" % (name,), 0)
                   == stats.get("cluster.%s.upstream_cx_total" % (name,), 0)
                   - (name == "keep") for name in CLUSTERS)

    def counters(self):
        out = {}
        for name in CLUSTERS:
            for counter in UPSTREAM:
                out["cluster.%s.%s" % (name, counter)] = self.stats.get(
                    "cluster.%s.%s" % (name, counter))
        for counter in DOWNSTREAM:
            out["http.teardown." + counter] = self.stats.get("http.teardown." + counter)
        return out


class CompareTeardownStatsTests(SharedFixture, SynchronousTestCase):
    """The same scenarios through real Envoy and through txenvoy."""

    @classmethod
    def startFixture(cls):
        # The scenarios mostly wait for timeouts: both proxies run theirs
        # at the same time, each with its own origin and ports.
        with ThreadPoolExecutor(2) as pool:
            cls.results = list(pool.map(cls.runScenarios, (True, False)))

    @staticmethod
    def runScenarios(real):
        origin = Origin()
        dead = DeadPort()
        port, adminPort = freePort(), freePort()
        config = teardownConfig(port, adminPort, origin.port, dead.port)
        try:
            proxy = startProxy(real, config, port, adminPort)
            try:
                scenarios = _Scenarios(port, adminPort)
                scenarios.runAll()
                if not real:
                    scenarios.output = proxy.output()
            finally:
                proxy.stop()
        finally:
            origin.stop()
            dead.close()
        return scenarios

    @classmethod
    def stopFixture(cls):
        pass

    def test_sameResponses(self):
        envoy, txenvoy = self.results
        self.assertEqual(txenvoy.seen, envoy.seen)

    def test_sameCounters(self):
        """Every teardown counter reads the same in Envoy 1.40 and txenvoy."""
        envoy, txenvoy = self.results
        expected, got = envoy.counters(), txenvoy.counters()
        differing = {name: (expected[name], got[name]) for name in expected
                     if expected[name] != got[name]}
        self.assertEqual(differing, {})

    def test_noTraceback(self):
        out, err = self.results[1].output
        self.assertNotIn("Traceback", out + err)


DRAIN_HCM = ("drain_timeout: 0.5s\n          delayed_close_timeout: 0.3s\n"
             "          common_http_protocol_options: {idle_timeout: 0.6s}")
DRAIN_COUNTERS = ("downstream_cx_drain_close", "downstream_cx_idle_timeout",
                  "downstream_cx_delayed_close_timeout",
                  "downstream_cx_overload_disable_keepalive", "downstream_cx_destroy",
                  "downstream_cx_destroy_local", "downstream_cx_destroy_remote",
                  "downstream_rq_total", "downstream_cx_total")


def _drainScenarios(real, mode):
    """
    Through one proxy (C{drain_timeout} 0.5 s, C{delayed_close_timeout}
    0.3 s, C{idle_timeout} 0.6 s): a kept-alive connection left idle; in
    mode C{overload}, a response under C{disable_http_keepalive}; else one
    after C{/healthcheck/fail} (mode C{fail}) or C{/drain_listeners?graceful}
    (mode C{drain}), and a connection idle meanwhile. Each client keeps its
    end open; the seconds each close took are rounded to 0.1 s.
    """
    overload = mode == "overload"
    origin = Upstream(originHandler)
    port, adminPort = freePort(), freePort()
    monitors = [heapMonitor()] if overload else []
    actions = [onHeap("disable_http_keepalive")] if overload else []
    proxy = startProxy(real, proxyConfig(adminPort, port, origin.port, monitors, actions,
                                         hcm=DRAIN_HCM), port, adminPort)
    seen = {}

    def request():
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(GET)
        response = readResponse(s)
        return s, (response.split(b"\r\n")[0], b"\r\nconnection: close\r\n" in response)

    try:
        if overload:
            # Until the monitor has run, keep-alive is still on.
            deadline = time.time() + 5
            while (adminStats(adminPort).get(
                    "overload.envoy.overload_actions.disable_http_keepalive.active") != 1
                   and time.time() < deadline):
                time.sleep(0.05)
        s, seen["first"] = request()
        # idle_timeout + drain_timeout + delayed close (1.4 s); under
        # disable_http_keepalive drain_timeout + delayed close (0.8 s).
        seen["firstClose"] = round(waitClosed(s), 1)
        s.close()
        if not overload:
            idle, _ = request()
            idleSince = time.time()
            path = "/healthcheck/fail" if mode == "fail" else "/drain_listeners?graceful"
            urllib.request.urlopen(urllib.request.Request(
                "http://127.0.0.1:%d%s" % (adminPort, path), method="POST")).read()
            s, seen["failed"] = request()
            seen["failedClose"] = round(waitClosed(s), 1)
            s.close()
            waitClosed(idle)
            seen["idleClose"] = round(time.time() - idleSince, 1)
            idle.close()
        # The proxy counts a close just after the client sees it.
        stats = statsWhen(adminPort, lambda stats: stats.get(
            "http.ingress.downstream_cx_destroy") == stats.get("http.ingress.downstream_cx_total"))
        seen["counters"] = {name: stats.get("http.ingress." + name) for name in DRAIN_COUNTERS}
    finally:
        proxy.stop()
        origin.stop()
    return seen


class CompareDrainTests(SharedFixture, SynchronousTestCase):
    """
    Envoy's drain sequence for HTTP/1.1, through real Envoy and txenvoy:
    after an idle timeout on a connection that has spoken, a drain close
    (C{/healthcheck/fail}) or C{disable_http_keepalive}, the connection
    stays open for C{drain_timeout}, then is closed as after a response
    (C{delayed_close_timeout}). A graceful listener drain closes nothing
    early: Envoy's gradual drain (C{--drain-time-s} 600 s) has not yet
    begun to close connections.
    """

    @classmethod
    def startFixture(cls):
        # Six proxies at once, each with its own origin and ports.
        runs = [(real, mode) for real in (True, False) for mode in ("fail", "overload", "drain")]
        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(lambda run: _drainScenarios(*run), runs))
        cls.envoy, cls.txenvoy = results[:3], results[3:]

    @classmethod
    def stopFixture(cls):
        pass

    def assertWithin(self, seconds, low, high):
        self.assertTrue(low <= seconds <= high, "%s not in [%s, %s]" % (seconds, low, high))

    def test_timings(self):
        # A timer never fires early: the lower bounds tell each missing
        # step apart. A loaded machine (the suite runs four files at a time,
        # this fixture six proxies at once) may run one up to a second late.
        for run in (self.envoy, self.txenvoy):
            plain, overloaded, drained = run
            self.assertWithin(plain["firstClose"], 1.3, 2.5)
            self.assertWithin(plain["failedClose"], 0.7, 1.9)
            self.assertWithin(plain["idleClose"], 1.3, 2.6)
            self.assertWithin(overloaded["firstClose"], 0.7, 1.9)
            # Kept alive: idle_timeout + drain_timeout + delayed close.
            self.assertWithin(drained["failedClose"], 1.3, 2.5)
            self.assertWithin(drained["idleClose"], 1.3, 2.6)

    def test_sameResponses(self):
        for envoy, txenvoy in zip(self.envoy, self.txenvoy):
            self.assertEqual(
                {k: v for k, v in txenvoy.items() if not k.endswith("Close")},
                {k: v for k, v in envoy.items() if not k.endswith("Close")})
