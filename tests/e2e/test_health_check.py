"""
End-to-end: active health checking (issue 11) through a real C{twistd -n
envoy} and real Envoy 1.40 on the same YAML, with real origins on 127.0.0.1
that fail their health checks and come back: which host gets each request,
when a host is marked unhealthy and healthy again, panic mode, stats and
C{/clusters} flags.
"""

import http.client
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import freePort, startProxy


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        origin = self.server.origin
        if origin.stopped:
            # Kept-alive connections end too: close without answering.
            self.close_connection = True
            return
        if self.path == "/healthz":
            origin.checks.append(dict(self.headers.items()))
            code = origin.healthStatus
            headers = origin.healthHeaders
        else:
            code, headers = origin.dataStatus, origin.dataHeaders
        body = origin.tag
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, clientAddress):
        # Proxies abort their check connections when they stop.
        pass


class Origin:
    """An HTTP/1.1 origin whose C{/healthz} answers L{healthStatus}."""

    def __init__(self, tag, healthStatus=200):
        self.tag = tag
        self.healthStatus = healthStatus
        self.healthHeaders = {}
        self.dataHeaders = {}
        self.dataStatus = 200
        self.checks = []
        self.stopped = False
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.origin = self
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self):
        self.stopped = True
        self.server.shutdown()
        self.server.server_close()


def config(port, adminPort, ports, healthCheck, panic=None, outlier=None):
    cluster = {
        "name": "backend", "type": "STATIC", "connect_timeout": "0.5s",
        "load_assignment": {"cluster_name": "backend", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                          "port_value": p}}}}
            for p in ports]}]},
    }
    if healthCheck is not None:
        cluster["health_checks"] = [healthCheck]
    if outlier is not None:
        cluster["outlier_detection"] = outlier
    if panic is not None:
        cluster["common_lb_config"] = {"healthy_panic_threshold": {"value": panic}}
    return json.dumps({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                 "port_value": adminPort}}},
        "static_resources": {
            "listeners": [{
                "name": "l", "address": {"socket_address": {"address": "127.0.0.1",
                                                            "port_value": port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network."
                                 "http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "in",
                        "route_config": {"virtual_hosts": [{
                            "name": "all", "domains": ["*"],
                            "routes": [{"match": {"prefix": "/"},
                                        "route": {"cluster": "backend"}}]}]},
                        "http_filters": [{
                            "name": "envoy.filters.http.router",
                            "typed_config": {"@type": "type.googleapis.com/envoy.extensions."
                                                      "filters.http.router.v3.Router"}}],
                    }}]}],
            }],
            "clusters": [cluster],
        },
    })


HTTP_CHECK = {
    "timeout": "0.5s", "interval": "0.2s", "no_traffic_interval": "0.2s",
    "unhealthy_threshold": 2, "healthy_threshold": 2,
    "http_health_check": {"path": "/healthz"},
}


def get(port, path="/"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def admin(adminPort, path):
    c = http.client.HTTPConnection("127.0.0.1", adminPort, timeout=5)
    try:
        c.request("GET", path)
        return c.getresponse().read().decode()
    finally:
        c.close()


def flags(adminPort):
    """C{{port: health_flags}} from text C{/clusters}."""
    out = {}
    for line in admin(adminPort, "/clusters").splitlines():
        parts = line.split("::")
        if len(parts) == 4 and parts[0] == "backend" and parts[2] == "health_flags":
            out[int(parts[1].rsplit(":", 1)[1])] = parts[3]
    return out


def jsonHealth(adminPort):
    """C{{port: health_status}} from JSON C{/clusters}."""
    out = {}
    for cs in json.loads(admin(adminPort, "/clusters?format=json"))["cluster_statuses"]:
        if cs["name"] == "backend":
            for h in cs["host_statuses"]:
                out[h["address"]["socket_address"]["port_value"]] = h["health_status"]
    return out


def hcStats(adminPort, prefix="cluster.backend.health_check."):
    out = {}
    for line in admin(adminPort, "/stats").splitlines():
        name, _, value = line.partition(": ")
        if name.startswith(prefix) or name.endswith("lb_healthy_panic"):
            out[name] = int(value)
    return out


def outlierStats(adminPort):
    """The non-zero C{outlier_detection.*} stats, without the prefix."""
    prefix = "cluster.backend.outlier_detection."
    return {k[len(prefix):]: v for k, v in hcStats(adminPort, prefix).items()
            if v and k.startswith(prefix)}


def waitFor(predicate, timeout=30.0):
    """Poll until C{predicate()} is true; @return: seconds it took."""
    start = time.time()
    while time.time() - start < timeout:
        if predicate():
            return time.time() - start
        time.sleep(0.02)
    raise AssertionError("condition not met in %ss" % (timeout,))


class _Scenario:
    """Run each scenario through one proxy; subclasses say which."""

    real = None

    def startProxy(self, ports, healthCheck=HTTP_CHECK, panic=None, outlier=None):
        self.port, self.adminPort = freePort(), freePort()
        proxy = startProxy(self.real, config(self.port, self.adminPort, ports, healthCheck,
                                             panic, outlier), self.port, self.adminPort)
        self.addCleanup(proxy.stop)
        return proxy

    def origins(self, *statuses):
        out = []
        for i, status in enumerate(statuses):
            o = Origin(b"ABCD"[i:i + 1], status)
            self.addCleanup(o.stop)
            out.append(o)
        return out

    def tags(self, n):
        return [get(self.port)[1] for _ in range(n)]

    def test_failingHostNeverGetsTheFirstRequests(self):
        """
        Envoy's initialization waits for every host's first check, so the
        listener opens with the failing host already out: the first
        requests all go to the healthy one. The first failure of a 503
        counts as a failure (not a network failure); checks carry Envoy's
        C{host: <cluster>} and C{user-agent: Envoy/HC}.
        """
        a, b = self.origins(200, 503)
        self.startProxy([a.port, b.port])
        self.assertEqual(self.tags(6), [b"A"] * 6)
        self.assertEqual(flags(self.adminPort),
                         {a.port: "healthy", b.port: "/failed_active_hc"})
        self.assertEqual(jsonHealth(self.adminPort), {
            a.port: {"eds_health_status": "HEALTHY"},
            b.port: {"failed_active_health_check": True, "eds_health_status": "HEALTHY"}})
        stats = hcStats(self.adminPort)
        self.assertEqual(stats["cluster.backend.health_check.healthy"], 1)
        self.assertEqual(stats["cluster.backend.health_check.network_failure"], 0)
        self.assertGreaterEqual(stats["cluster.backend.health_check.failure"], 1)
        self.assertGreaterEqual(stats["cluster.backend.health_check.success"], 1)
        self.assertGreaterEqual(stats["cluster.backend.health_check.attempt"], 2)
        self.assertEqual(stats["cluster.backend.health_check.passive_failure"], 0)
        self.assertEqual(stats["cluster.backend.health_check.verify_cluster"], 0)
        self.assertEqual(stats["cluster.backend.health_check.degraded"], 0)
        check = {k.lower(): v for k, v in a.checks[0].items()}
        self.assertEqual((check["host"], check["user-agent"]), ("backend", "Envoy/HC"))

    def test_unhealthyThenHealthyAgain(self):
        """
        A 503 fails a healthy host at the next check (a status outside
        C{expected_statuses} ignores C{unhealthy_threshold}); it needs
        C{healthy_threshold} (2) passing checks to come back. Network
        failures count towards C{unhealthy_threshold} (C{network_failure}).
        """
        a, b = self.origins(200, 200)
        self.startProxy([a.port, b.port])
        self.assertEqual(sorted(set(self.tags(4))), [b"A", b"B"])
        b.healthStatus = 503
        took = waitFor(lambda: flags(self.adminPort)[b.port] == "/failed_active_hc")
        # One interval (0.2s) plus the check itself.
        self.assertLess(took, 2.0)
        # The worker hears of it by a post: the next requests, not
        # necessarily the very next one, avoid the host.
        waitFor(lambda: self.tags(4) == [b"A"] * 4)
        nb = len(b.checks)
        b.healthStatus = 200
        waitFor(lambda: flags(self.adminPort)[b.port] == "healthy")
        # The first passing check only makes the change pending.
        self.assertGreaterEqual(len(b.checks) - nb, 2)
        # Workers see the new health once it is posted to them.
        waitFor(lambda: set(self.tags(2)) == {b"A", b"B"})
        # An origin that goes away fails after unhealthy_threshold (2)
        # network failures.
        b.stop()
        waitFor(lambda: flags(self.adminPort)[b.port] == "/failed_active_hc")
        stats = hcStats(self.adminPort)
        self.assertGreaterEqual(stats["cluster.backend.health_check.network_failure"], 2)
        # This change came within update_merge_window (1s) of the last one:
        # workers get it at the end of the window (Envoy's scheduleUpdate).
        waitFor(lambda: self.tags(3) == [b"A"] * 3)
        merged = hcStats(self.adminPort, "cluster_manager.")
        self.assertGreaterEqual(merged["cluster_manager.cluster_updated_via_merge"], 1)

    def test_panicWhenEveryHostFails(self):
        """
        With every host failed the cluster is below the 50% panic
        threshold: traffic goes to all hosts and counts C{lb_healthy_panic}.
        """
        a, b = self.origins(503, 503)
        self.startProxy([a.port, b.port])
        self.assertEqual(flags(self.adminPort),
                         {a.port: "/failed_active_hc", b.port: "/failed_active_hc"})
        self.assertEqual(sorted(set(self.tags(6))), [b"A", b"B"])
        self.assertEqual(hcStats(self.adminPort)["cluster.backend.lb_healthy_panic"], 6)

    def test_noPanicWithThresholdZero(self):
        """With C{healthy_panic_threshold: 0} a failed cluster answers 503."""
        a, = self.origins(503)
        self.startProxy([a.port], panic=0)
        status, body = get(self.port)
        self.assertEqual((status, body), (503, b"no healthy upstream"))

    def test_tcpCheckWithSendAndReceive(self):
        """
        A TCP check passes when the C{receive} payload comes back: an HTTP
        origin answers C{HTTP/1.1 200} to the request sent.
        """
        a, b = self.origins(200, 200)
        b.stop()
        check = {
            "timeout": "0.5s", "interval": "0.2s", "no_traffic_interval": "0.2s",
            "unhealthy_threshold": 1, "healthy_threshold": 1,
            "tcp_health_check": {
                "send": {"text": b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n".hex()},
                "receive": [{"text": b"HTTP/1.1 200".hex()}]},
        }
        self.startProxy([a.port, b.port], healthCheck=check)
        self.assertEqual(flags(self.adminPort),
                         {a.port: "healthy", b.port: "/failed_active_hc"})
        self.assertEqual(self.tags(3), [b"A"] * 3)
        # A 503 does not match: the check times out (the connection is
        # reused, so the origin is still answering), hence the flag.
        a.healthStatus = 503
        waitFor(lambda: flags(self.adminPort)[a.port] == "/failed_active_hc/active_hc_timeout")

    def test_immediateHealthCheckFail(self):
        """
        A failing check answered with C{x-envoy-immediate-health-check-fail}
        also excludes the host (C{/excluded_via_immediate_hc_fail}); so does
        a proxied response carrying it (a C{passive_failure}).
        """
        a, b = self.origins(200, 200)
        self.startProxy([a.port, b.port])
        b.healthHeaders = {"x-envoy-immediate-health-check-fail": "true"}
        b.healthStatus = 503
        waitFor(lambda: flags(self.adminPort)[b.port]
                == "/failed_active_hc/excluded_via_immediate_hc_fail")
        b.healthHeaders = {}
        b.healthStatus = 200
        waitFor(lambda: flags(self.adminPort)[b.port] == "healthy")
        self.assertEqual(
            hcStats(self.adminPort)["cluster.backend.health_check.passive_failure"], 0)
        # From the data path: a proxied response with the header fails and
        # excludes its host at once, a passive_failure.
        b.dataHeaders = {"x-envoy-immediate-health-check-fail": "true"}
        waitFor(lambda: b"B" in self.tags(2))
        waitFor(lambda: flags(self.adminPort)[b.port]
                == "/failed_active_hc/excluded_via_immediate_hc_fail")
        self.assertEqual(
            hcStats(self.adminPort)["cluster.backend.health_check.passive_failure"], 1)
        # Within update_merge_window of the last change: workers see it at
        # the end of the window.
        waitFor(lambda: self.tags(4) == [b"A"] * 4)
        waitFor(lambda: flags(self.adminPort)[b.port] == "healthy")


    def test_consecutive5xxEjectsThenReturns(self):
        """
        C{consecutive_5xx: 3}: the third 500 in a row ejects the host
        (C{/failed_outlier_check}, Envoy's ejection stats); it returns at
        the first C{interval} tick after C{base_ejection_time}.
        """
        a, b = self.origins(200, 200)
        b.dataStatus = 500
        self.startProxy([a.port, b.port], healthCheck=None, outlier={
            "consecutive_5xx": 3, "interval": "0.3s", "base_ejection_time": "1s",
            "max_ejection_percent": 50})
        got = self.tags(6)
        self.assertEqual(sorted(got), [b"A"] * 3 + [b"B"] * 3)
        waitFor(lambda: flags(self.adminPort)[b.port] == "/failed_outlier_check")
        ejected = time.time()
        self.assertEqual(outlierStats(self.adminPort), {
            "ejections_active": 1, "ejections_consecutive_5xx": 1,
            "ejections_detected_consecutive_5xx": 1, "ejections_enforced_consecutive_5xx": 1,
            "ejections_enforced_total": 1, "ejections_total": 1})
        self.assertEqual(jsonHealth(self.adminPort)[b.port],
                         {"failed_outlier_check": True, "eds_health_status": "HEALTHY"})
        # The worker hears of it by a post: the next requests, not
        # necessarily the very next one, avoid the host.
        waitFor(lambda: self.tags(4) == [b"A"] * 4)
        b.dataStatus = 200
        waitFor(lambda: flags(self.adminPort)[b.port] == "healthy")
        self.assertGreaterEqual(time.time() - ejected, 0.9)
        self.assertEqual(outlierStats(self.adminPort)["ejections_enforced_total"], 1)
        self.assertNotIn("ejections_active", outlierStats(self.adminPort))
        waitFor(lambda: set(self.tags(2)) == {b"A", b"B"})

    def test_gatewayFailuresDetectedNotEnforced(self):
        """
        C{consecutive_gateway_failure} is detected but, with Envoy's
        default C{enforcing_consecutive_gateway_failure: 0}, not enforced;
        the 503s still eject through C{consecutive_5xx}.
        """
        a, b = self.origins(200, 200)
        b.dataStatus = 503
        self.startProxy([a.port, b.port], healthCheck=None, outlier={
            "consecutive_5xx": 3, "consecutive_gateway_failure": 2, "interval": "5s",
            "base_ejection_time": "5s", "max_ejection_percent": 50})
        self.tags(6)
        waitFor(lambda: flags(self.adminPort)[b.port] == "/failed_outlier_check")
        self.assertEqual(outlierStats(self.adminPort), {
            "ejections_active": 1, "ejections_consecutive_5xx": 1,
            "ejections_detected_consecutive_5xx": 1,
            "ejections_detected_consecutive_gateway_failure": 1,
            "ejections_enforced_consecutive_5xx": 1,
            "ejections_enforced_total": 1, "ejections_total": 1})

    def test_maxEjectionPercentDefault(self):
        """
        Envoy's default C{max_ejection_percent} is 10: ejecting one host of
        two (50%) would overflow it, so the host stays and
        C{ejections_overflow} counts.
        """
        a, b = self.origins(200, 200)
        b.dataStatus = 500
        self.startProxy([a.port, b.port], healthCheck=None, outlier={
            "consecutive_5xx": 2, "interval": "5s"})
        self.tags(4)
        waitFor(lambda: "ejections_overflow" in outlierStats(self.adminPort))
        self.assertEqual(flags(self.adminPort)[b.port], "healthy")
        self.assertEqual(outlierStats(self.adminPort), {
            "ejections_consecutive_5xx": 1, "ejections_detected_consecutive_5xx": 1,
            "ejections_overflow": 1})


class TxEnvoyHealthCheckTests(_Scenario, SynchronousTestCase):
    """The scenarios through txenvoy."""

    real = False


class RealEnvoyHealthCheckTests(_Scenario, SynchronousTestCase):
    """The same scenarios through Envoy 1.40: what txenvoy copies."""

    real = True
