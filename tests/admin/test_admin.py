"""
Tests for L{txenvoy.admin}.

Requests go through the admin's real C{Site} over a C{StringTransport}; the
server is a fake with exactly the attributes the admin uses. Expected
bodies, status codes and headers were read from Envoy 1.40's admin.
"""

import json

from google.protobuf import json_format
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2  # noqa: F401
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2  # noqa: F401

from txenvoy.admin import AdminServer, checkAdminConfig
from txenvoy.admin import _handlers
from txenvoy.admin._help import helpText
from txenvoy.config.errors import ConfigError, UnsupportedField
from txenvoy.server.logging import LogLevels
from txenvoy.stats.flush import StatsFlusher
from txenvoy.stats.store import StatsStore
from txenvoy.testing import FakeDispatcher

BOOTSTRAP = {
    "node": {"id": "node1", "cluster": "txenvoy-test"},
    "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 10690}}},
    "layered_runtime": {"layers": [
        {"name": "static", "static_layer": {"overload": {
            "global_downstream_max_connections": 1000}}},
        {"name": "admin", "admin_layer": {}},
    ]},
    "static_resources": {
        "listeners": [
            {"name": "tcp_listener",
             "address": {"socket_address": {"address": "127.0.0.1", "port_value": 10610}},
             "filter_chains": [{
                 "filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                     "@type": "type.googleapis.com/envoy.extensions.filters.network."
                              "tcp_proxy.v3.TcpProxy",
                     "stat_prefix": "tcp_stats", "cluster": "c1"}}],
                 "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                     "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                              "DownstreamTlsContext",
                     "common_tls_context": {"tls_certificates": [{
                         "certificate_chain": {"inline_string": "CERT"},
                         "private_key": {"inline_string": "SECRET KEY"}}]}}}}]},
            {"name": "http_listener",
             "address": {"socket_address": {"address": "127.0.0.1", "port_value": 10611}},
             "filter_chains": [{"filters": [{
                 "name": "envoy.filters.network.http_connection_manager", "typed_config": {
                     "@type": "type.googleapis.com/envoy.extensions.filters.network."
                              "http_connection_manager.v3.HttpConnectionManager",
                     "stat_prefix": "ingress_http",
                     "route_config": {"name": "local_route", "virtual_hosts": [
                         {"name": "backend", "domains": ["*"], "routes": [
                             {"match": {"prefix": "/"}, "route": {"cluster": "c1"}}]}]},
                     "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                         "@type": "type.googleapis.com/envoy.extensions.filters.http.router."
                                  "v3.Router"}}]}}]}]},
        ],
        "clusters": [
            {"name": "c1", "connect_timeout": "1s", "type": "STATIC",
             "load_assignment": {"cluster_name": "c1", "endpoints": [{"lb_endpoints": [
                 {"endpoint": {"address": {"socket_address": {
                     "address": "127.0.0.1", "port_value": 10680}}}}]}]},
             "circuit_breakers": {"thresholds": [{
                 "priority": "DEFAULT", "max_connections": 100, "max_pending_requests": 100,
                 "max_requests": 100, "max_retries": 3}]},
             "outlier_detection": {"consecutive_5xx": 5}},
            {"name": "empty", "connect_timeout": "0.5s", "type": "STATIC",
             "load_assignment": {"cluster_name": "empty"}},
        ],
    },
}


def makeBootstrap():
    return json_format.ParseDict(BOOTSTRAP, bootstrap_pb2.Bootstrap())


class Obj:
    def __init__(self, **kw):
        self.__dict__.update(kw)


class FakeHost:
    def __init__(self, ip, port, stats):
        self.address = (ip, port)
        self.addressString = "%s:%d" % (ip, port)
        self.hostname = ""
        self.weight = 1
        self.priority = 0
        self._stats = stats
        self.flags = "healthy"

    def healthFlags(self):
        return self.flags

    def stats(self, name):
        return self._stats.get(name, 0)


class FakeServer:
    """The attributes of txenvoy.server.server.Server the admin reads."""

    def __init__(self, bootstrap):
        self.stats = StatsStore()
        self.mainStats = self.stats.shard("main_thread")
        self.mainDispatcher = FakeDispatcher(MemoryReactorClock(), "main_thread", self.stats)
        self.versionString = "txenvoy/0.1.0/Clean/RELEASE/OpenSSL"
        self.startTime = 1000.0
        self._state = "LIVE"
        self.healthCheckFailed = False
        self.node = bootstrap.node
        self.bootstrap = bootstrap
        self.listenerManager = Obj(listeners=[
            Obj(name=p.name, proto=p, address=(p.address.socket_address.address,
                                               p.address.socket_address.port_value))
            for p in bootstrap.static_resources.listeners])
        c1, empty = bootstrap.static_resources.clusters
        self.host = FakeHost("127.0.0.1", 10680, {
            "cx_active": 2, "cx_total": 6, "rq_error": 5, "rq_success": 5, "rq_timeout": 1,
            "rq_total": 10})
        self.clusterManager = Obj(clusters={
            "c1": Obj(proto=c1, hosts=[self.host], info=Obj(name="c1", circuitBreakers={
                "default": {"max_connections": 100, "max_pending_requests": 100,
                            "max_requests": 100, "max_retries": 3},
                "high": {"max_connections": 1024, "max_pending_requests": 1024,
                         "max_requests": 1024, "max_retries": 3}})),
            "empty": Obj(proto=empty, hosts=[], info=Obj(name="empty", circuitBreakers=None)),
        })
        self.logLevels = LogLevels()
        self.reopened = 0
        self.accessLogManager = Obj(reopen=self._reopen)
        self.drains = []
        self.shutdowns = 0
        self.runtime = {"overload.global_downstream_max_connections": 1000.0}

    def _reopen(self):
        self.reopened += 1

    def state(self):
        return self._state

    def failHealthcheck(self):
        self.healthCheckFailed = True

    def passHealthcheck(self):
        self.healthCheckFailed = False

    def commandLineOptions(self):
        return {"concurrency": 2, "base_id": "0", "log_level": "info"}

    def drainListeners(self, graceful=False, inboundOnly=False, skipExit=False):
        self.drains.append((graceful, inboundOnly, skipExit))

    def shutdown(self):
        self.shutdowns += 1


class RecordingLogger:
    def __init__(self):
        self.entries = []

    def log(self, streamInfo, requestHeaders, responseHeaders):
        self.entries.append((streamInfo, requestHeaders, responseHeaders))


class Response:
    def __init__(self, raw):
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headerList = [tuple(x.split(": ", 1)) for x in lines[1:]]
        self.headers = {k.lower(): v for k, v in self.headerList}
        self.text = self.body.decode("utf-8")


class AdminTestCase(SynchronousTestCase):

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.bootstrap = makeBootstrap()
        self.server = FakeServer(self.bootstrap)
        self.accessLog = RecordingLogger()
        self.admin = AdminServer(self.reactor, self.server, self.bootstrap.admin,
                                 accessLogs=[self.accessLog])
        self.patch(_handlers, "wallTime", lambda: 1084.5)

    def connect(self):
        proto = self.admin.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 54321))
        transport = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 10690),
                                    peerAddress=IPv4Address("TCP", "127.0.0.1", 54321))
        proto.makeConnection(transport)
        return proto, transport

    def request(self, method, path, body=b"", headers=()):
        proto, transport = self.connect()
        extra = "".join("%s: %s\r\n" % h for h in headers)
        raw = ("%s %s HTTP/1.1\r\nHost: 127.0.0.1:10690\r\nUser-Agent: curl/8\r\n%s"
               "Content-Length: %d\r\n\r\n" % (method, path, extra, len(body))).encode() + body
        proto.dataReceived(raw)
        response = Response(transport.value())
        proto.connectionLost(Failure(ConnectionDone()))
        return response

    def get(self, path):
        return self.request("GET", path)

    def post(self, path, body=b"", headers=()):
        return self.request("POST", path, body, headers)

    def stat(self, name):
        snap = self.server.stats.snapshot()
        return snap.counters.get(name, snap.gauges.get(name))


class HeadersAndRoutingTests(AdminTestCase):

    def test_headers(self):
        """Envoy's admin headers; one Server header, saying envoy."""
        r = self.get("/ready")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.headers["content-type"], "text/plain; charset=UTF-8")
        self.assertEqual(r.headers["cache-control"], "no-cache, max-age=0")
        self.assertEqual(r.headers["x-content-type-options"], "nosniff")
        self.assertEqual([v for k, v in r.headerList if k.lower() == "server"], ["envoy"])
        self.assertEqual(r.body, b"LIVE\n")

    def test_notFound(self):
        """Unknown paths (and a trailing slash) answer 404 with the command list."""
        for path in ("/nonexistent", "/ready/", "/stats/"):
            r = self.get(path)
            self.assertEqual(r.status, 404, path)
            self.assertEqual(r.text, "invalid path. " + helpText())

    def test_doubleSlash(self):
        """Envoy serves //ready as /ready."""
        self.assertEqual(self.get("//ready").body, b"LIVE\n")

    def test_mutatingNeedsPost(self):
        """GET on a state-changing path: 405, Envoy's body, nothing changes."""
        for path in ("/quitquitquit", "/healthcheck/fail", "/healthcheck/ok", "/logging",
                     "/reset_counters", "/drain_listeners", "/reopen_logs", "/runtime_modify",
                     "/cpuprofiler", "/stats/recentlookups/enable"):
            r = self.get(path)
            self.assertEqual((r.status, r.body), (405, b"Method GET not allowed, POST required."),
                             path)
        self.assertEqual(self.request("PUT", "/quitquitquit").body,
                         b"Method PUT not allowed, POST required.")
        self.assertEqual(self.server.shutdowns, 0)
        self.assertFalse(self.server.healthCheckFailed)
        self.flushLoggedErrors()

    def test_readOnlyAnyMethod(self):
        """Envoy answers read-only paths whatever the method."""
        self.assertEqual(self.request("PUT", "/ready").body, b"LIVE\n")
        self.assertEqual(self.post("/ready").body, b"LIVE\n")

    def test_head(self):
        r = self.request("HEAD", "/ready")
        self.assertEqual((r.status, r.body), (200, b""))
        self.assertEqual(r.headers["content-length"], "5")

    def test_help(self):
        r = self.get("/help")
        self.assertEqual(r.status, 200)
        self.assertTrue(r.text.startswith("admin commands are:\n  /: Admin home page\n"
                                          "  /allocprofiler (POST): enable/disable the "
                                          "allocation profiler (if supported)\n"))
        self.assertIn("  /stats/prometheus: print server stats in prometheus format\n"
                      "      usedonly: Only include stats that have been written by system "
                      "since restart\n", r.text)
        self.assertIn("      level: desired logging level, this will change all loggers's "
                      "level; One of (, trace, debug, info, warning, error, critical, off)\n",
                      r.text)
        self.assertTrue(r.text.endswith("  /stats/recentlookups/enable (POST): enable "
                                        "recording of reset stat-name lookup names\n"))
        self.assertEqual(len(r.text), 5053)

    def test_home(self):
        r = self.get("/")
        self.assertEqual(r.headers["content-type"], "text/html; charset=UTF-8")
        self.assertTrue(r.text.startswith("<!DOCTYPE html>"))
        self.assertIn("<a href='certs'>certs</a>", r.text)
        self.assertIn("<form action='quitquitquit' method='post'", r.text)


class StateTests(AdminTestCase):

    def test_readyStates(self):
        """200 LIVE; 503 with the state name otherwise."""
        self.server._state = "INITIALIZING"
        r = self.get("/ready")
        self.assertEqual((r.status, r.body), (503, b"INITIALIZING\n"))

    def test_healthcheck(self):
        """POST /healthcheck/fail: OK, then /ready is 503 DRAINING; /ok undoes it."""
        r = self.post("/healthcheck/fail")
        self.assertEqual((r.status, r.body), (200, b"OK\n"))
        r = self.get("/ready")
        self.assertEqual((r.status, r.body), (503, b"DRAINING\n"))
        self.assertEqual(self.post("/healthcheck/ok").body, b"OK\n")
        self.assertEqual(self.get("/ready").status, 200)

    def test_quitquitquit(self):
        """OK is written first; the shutdown runs on the next reactor turn."""
        r = self.post("/quitquitquit")
        self.assertEqual((r.status, r.body), (200, b"OK\n"))
        self.assertEqual(self.server.shutdowns, 0)
        self.reactor.advance(0)
        self.assertEqual(self.server.shutdowns, 1)

    def test_drainListeners(self):
        self.assertEqual(self.post("/drain_listeners").body, b"OK\n")
        self.post("/drain_listeners?graceful&inboundonly")
        self.post("/drain_listeners?skip_exit")
        self.assertEqual(self.server.drains, [(False, False, False), (True, True, False),
                                              (False, False, True)])

    def test_resetCountersAndReopen(self):
        self.server.mainStats.counter("x").inc(5)
        self.assertEqual(self.post("/reset_counters").body, b"OK\n")
        self.assertEqual(self.stat("x"), 0)
        self.assertEqual(self.post("/reopen_logs").body, b"OK\n")
        self.assertEqual(self.server.reopened, 1)

    def test_serverInfo(self):
        r = self.get("/server_info")
        self.assertEqual(r.headers["content-type"], "application/json")
        self.assertTrue(r.text.startswith('{\n "version": "txenvoy/0.1.0/Clean/RELEASE/OpenSSL",'
                                          '\n "state": "LIVE",\n'))
        info = json.loads(r.text)
        self.assertEqual(list(info), ["version", "state", "uptime_current_epoch",
                                      "uptime_all_epochs", "hot_restart_version",
                                      "command_line_options", "node",
                                      "hot_restart_initializing"])
        self.assertEqual(info["uptime_current_epoch"], "84s")
        self.assertEqual(info["hot_restart_version"], "disabled")
        self.assertEqual(list(info["command_line_options"]), ["base_id", "concurrency",
                                                              "log_level"])
        self.assertEqual(info["node"]["id"], "node1")
        self.assertEqual(info["node"]["client_features"], [])
        self.assertEqual(info["node"]["dynamic_parameters"], {})

    def test_smallEndpoints(self):
        """Envoy's bodies for the endpoints with nothing to report."""
        self.assertEqual(self.get("/hot_restart_version").body, b"disabled")
        r = self.get("/certs")
        self.assertEqual((r.headers["content-type"], r.body),
                         ("application/json", b'{\n "certificates": []\n}\n'))
        self.assertEqual(self.get("/init_dump").body, b"{}\n")
        self.assertEqual(self.get("/contention").text,
                         "Mutex contention tracing is not enabled. To enable, run Envoy with "
                         "flag --enable-mutex-tracing.")
        self.assertEqual(list(json.loads(self.get("/memory").text)), [
            "allocated", "heap_size", "pageheap_unmapped", "pageheap_free",
            "total_thread_cache", "total_physical_bytes"])
        r = self.post("/cpuprofiler")
        self.assertEqual((r.status, r.body), (400, b"?enable=<y|n>\n"))
        self.assertEqual(self.post("/heapprofiler?enable=y").status, 501)
        self.assertTrue(self.get("/stats/recentlookups").text.startswith(
            "Lookup tracking is not enabled."))
        self.assertEqual(self.post("/stats/recentlookups/enable").body, b"OK\n")


class StatsEndpointTests(AdminTestCase):

    def setUp(self):
        AdminTestCase.setUp(self)
        s = self.server.mainStats
        s.counter("cluster.c1.upstream_rq_200").inc(3)
        s.counter("cluster.c1.upstream_rq_total").inc(3)
        s.gauge("server.live").set(1)
        s.counter("cluster.c1.never")
        s.histogram("cluster.c1.upstream_rq_time").recordValue(40)

    def test_text(self):
        r = self.get("/stats?filter=^cluster%5C.c1%5C.upstream_rq")
        self.assertEqual(r.headers["content-type"], "text/plain; charset=UTF-8")
        self.assertEqual(r.text, (
            "cluster.c1.upstream_rq_200: 3\ncluster.c1.upstream_rq_total: 3\n"
            "cluster.c1.upstream_rq_time: P0(nan,40.5) P25(nan,40.5) P50(nan,40.5) "
            "P75(nan,40.5) P90(nan,40.5) P95(nan,40.5) P99(nan,40.5) P99.5(nan,40.5) "
            "P99.9(nan,40.5) P100(nan,40.5)\n"))

    def test_plusIsNotSpace(self):
        """Envoy leaves + in a query alone: it is part of the regex."""
        self.assertEqual(self.get("/stats?filter=serv.+live").text, "server.live: 1\n")

    def test_usedOnlyTypeJson(self):
        self.assertNotIn("never", self.get("/stats?usedonly").text)
        self.assertEqual(self.get("/stats?type=Gauges&filter=live").text, "server.live: 1\n")
        r = self.get("/stats?format=json&filter=server.live")
        self.assertEqual((r.headers["content-type"], r.body),
                         ("application/json", b'{"stats":[{"name":"server.live","value":1}]}'))

    def test_errors(self):
        r = self.get("/stats?type=Bogus")
        self.assertEqual((r.status, r.body), (400, b"invalid &type= param"))
        r = self.get("/stats?format=bogus")
        self.assertEqual(
            r.body, b"usage: /stats?format=(html|active-html|json|prometheus|text)\n\n")
        self.assertEqual(self.get("/stats?filter=(").status, 400)
        self.assertEqual(self.get("/stats/prometheus?filter=(").status, 400)

    def test_intervalFromFlusher(self):
        """Interval values come from the last completed stats flush."""
        flusher = StatsFlusher(self.reactor, self.server.stats, [], 5)
        self.server.statsFlusher = flusher
        self.assertIn("P0(nan,40.5)", self.get("/stats?type=Histograms").text)
        flusher.flush()
        self.assertIn("P0(40.5,40.5)", self.get("/stats?type=Histograms").text)
        flusher.flush()
        self.assertIn("P0(nan,40.5)", self.get("/stats?type=Histograms").text)

    def test_prometheus(self):
        r = self.get("/stats/prometheus")
        self.assertEqual(r.headers["content-type"], "text/plain; charset=UTF-8")
        self.assertIn('# TYPE envoy_cluster_upstream_rq counter\n'
                      'envoy_cluster_upstream_rq{envoy_response_code="200",'
                      'envoy_cluster_name="c1"} 3\n', r.text)
        self.assertIn("# TYPE envoy_server_live gauge\nenvoy_server_live{} 1\n", r.text)
        names = {f.name for f in text_string_to_metric_families(r.text)}
        self.assertIn("envoy_cluster_upstream_rq_time", names)
        self.assertEqual(self.get("/stats?format=prometheus&filter=server.live").text,
                         "# TYPE envoy_server_live gauge\nenvoy_server_live{} 1\n")


class ListenersClustersTests(AdminTestCase):

    def test_listeners(self):
        self.assertEqual(self.get("/listeners").text,
                         "tcp_listener::127.0.0.1:10610\nhttp_listener::127.0.0.1:10611\n")
        r = self.get("/listeners?format=json")
        self.assertEqual(r.headers["content-type"], "application/json")
        self.assertTrue(r.text.startswith(
            '{\n "listener_statuses": [\n  {\n   "name": "tcp_listener",\n'
            '   "local_address": {\n    "socket_address": {\n     "address": "127.0.0.1",\n'
            '     "port_value": 10610\n    }\n   }\n  },\n'))
        self.assertEqual(self.get("/listeners?format=bogus").text.count("\n"), 2)

    def test_clustersText(self):
        """Envoy's sample: c1 with outlier detection and its host."""
        self.assertEqual(self.get("/clusters?filter=^c1$").text, (
            "c1::observability_name::c1\n"
            "c1::outlier::success_rate_average::-1\n"
            "c1::outlier::success_rate_ejection_threshold::-1\n"
            "c1::outlier::local_origin_success_rate_average::-1\n"
            "c1::outlier::local_origin_success_rate_ejection_threshold::-1\n"
            "c1::default_priority::max_connections::100\n"
            "c1::default_priority::max_pending_requests::100\n"
            "c1::default_priority::max_requests::100\n"
            "c1::default_priority::max_retries::3\n"
            "c1::high_priority::max_connections::1024\n"
            "c1::high_priority::max_pending_requests::1024\n"
            "c1::high_priority::max_requests::1024\n"
            "c1::high_priority::max_retries::3\n"
            "c1::added_via_api::false\n"
            "c1::127.0.0.1:10680::cx_active::2\n"
            "c1::127.0.0.1:10680::cx_connect_fail::0\n"
            "c1::127.0.0.1:10680::cx_total::6\n"
            "c1::127.0.0.1:10680::rq_active::0\n"
            "c1::127.0.0.1:10680::rq_error::5\n"
            "c1::127.0.0.1:10680::rq_pending_active::0\n"
            "c1::127.0.0.1:10680::rq_success::5\n"
            "c1::127.0.0.1:10680::rq_timeout::1\n"
            "c1::127.0.0.1:10680::rq_total::10\n"
            "c1::127.0.0.1:10680::hostname::\n"
            "c1::127.0.0.1:10680::health_flags::healthy\n"
            "c1::127.0.0.1:10680::weight::1\n"
            "c1::127.0.0.1:10680::region::\n"
            "c1::127.0.0.1:10680::zone::\n"
            "c1::127.0.0.1:10680::sub_zone::\n"
            "c1::127.0.0.1:10680::canary::false\n"
            "c1::127.0.0.1:10680::priority::0\n"
            "c1::127.0.0.1:10680::success_rate::-1\n"
            "c1::127.0.0.1:10680::local_origin_success_rate::-1\n"))

    def test_clusterWithoutHosts(self):
        """No outlier detection and no hosts: only the cluster lines; defaults 1024/3."""
        self.assertEqual(self.get("/clusters?filter=empty").text, (
            "empty::observability_name::empty\n"
            "empty::default_priority::max_connections::1024\n"
            "empty::default_priority::max_pending_requests::1024\n"
            "empty::default_priority::max_requests::1024\n"
            "empty::default_priority::max_retries::3\n"
            "empty::high_priority::max_connections::1024\n"
            "empty::high_priority::max_pending_requests::1024\n"
            "empty::high_priority::max_requests::1024\n"
            "empty::high_priority::max_retries::3\n"
            "empty::added_via_api::false\n"))
        r = self.get("/clusters?filter=(")
        self.assertEqual((r.status, r.body), (400, b"Invalid re2 regex"))

    def test_clustersJson(self):
        """Envoy's sample, field for field and in its order; zero stats omit value."""
        r = self.get("/clusters?format=json&filter=c1")
        self.assertEqual(r.headers["content-type"], "application/json")
        data = json.loads(r.text)
        self.assertEqual(data, {"cluster_statuses": [{
            "name": "c1",
            "host_statuses": [{
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 10680}},
                "stats": [
                    {"name": "cx_connect_fail"}, {"value": "6", "name": "cx_total"},
                    {"value": "5", "name": "rq_error"}, {"value": "5", "name": "rq_success"},
                    {"value": "1", "name": "rq_timeout"}, {"value": "10", "name": "rq_total"},
                    {"type": "GAUGE", "value": "2", "name": "cx_active"},
                    {"type": "GAUGE", "name": "rq_active"},
                    {"type": "GAUGE", "name": "rq_pending_active"}],
                "health_status": {"eds_health_status": "HEALTHY"},
                "weight": 1,
                "locality": {}}],
            "circuit_breakers": {"thresholds": [
                {"max_connections": 100, "max_pending_requests": 100, "max_requests": 100,
                 "max_retries": 3},
                {"priority": "HIGH", "max_connections": 1024, "max_pending_requests": 1024,
                 "max_requests": 1024, "max_retries": 3}]},
            "observability_name": "c1"}]})
        host = data["cluster_statuses"][0]["host_statuses"][0]
        self.assertEqual(list(host), ["address", "stats", "health_status", "weight", "locality"])
        self.assertEqual(list(host["stats"][6]), ["type", "value", "name"])

    def test_unhealthyHost(self):
        self.server.host.flags = "/failed_active_hc"
        self.assertIn("c1::127.0.0.1:10680::health_flags::/failed_active_hc\n",
                      self.get("/clusters").text)
        data = json.loads(self.get("/clusters?format=json&filter=c1").text)
        self.assertEqual(data["cluster_statuses"][0]["host_statuses"][0]["health_status"],
                         {"failed_active_health_check": True, "eds_health_status": "HEALTHY"})


class ConfigDumpTests(AdminTestCase):

    def test_dump(self):
        """Envoy's six dumps, in its order, with the private key redacted."""
        r = self.get("/config_dump")
        self.assertEqual(r.headers["content-type"], "application/json")
        data = json.loads(r.text)
        self.assertEqual([c["@type"] for c in data["configs"]], [
            "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
            "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
            "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
            "type.googleapis.com/envoy.admin.v3.ScopedRoutesConfigDump",
            "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
            "type.googleapis.com/envoy.admin.v3.SecretsConfigDump"])
        self.assertNotIn("SECRET KEY", r.text)
        self.assertEqual(r.text.count('"inline_string": "[redacted]"'), 2)
        self.assertIn('"inline_string": "CERT"', r.text)
        boot = data["configs"][0]
        self.assertEqual(boot["last_updated"], "1970-01-01T00:16:40Z")
        self.assertEqual(boot["bootstrap"]["static_resources"]["clusters"][0]["connect_timeout"],
                         "1s")
        self.assertEqual(boot["bootstrap"]["layered_runtime"]["layers"][0]["static_layer"],
                         {"overload": {"global_downstream_max_connections": 1000}})
        self.assertIn('"global_downstream_max_connections": 1000\n', r.text)
        clusters = data["configs"][1]["static_clusters"]
        self.assertEqual([c["cluster"]["name"] for c in clusters], ["c1", "empty"])
        self.assertEqual(clusters[0]["cluster"]["@type"],
                         "type.googleapis.com/envoy.config.cluster.v3.Cluster")
        routes = data["configs"][4]["static_route_configs"]
        self.assertEqual([x["route_config"]["name"] for x in routes], ["local_route"])
        self.assertTrue(r.text.endswith("\n  }\n ]\n}\n"))

    def test_params(self):
        data = json.loads(self.get("/config_dump?resource=static_listeners").text)
        self.assertEqual(
            [(c["@type"], c["listener"]["name"]) for c in data["configs"]],
            [("type.googleapis.com/envoy.admin.v3.ListenersConfigDump.StaticListener",
              "tcp_listener"),
             ("type.googleapis.com/envoy.admin.v3.ListenersConfigDump.StaticListener",
              "http_listener")])
        data = json.loads(self.get(
            "/config_dump?resource=static_clusters&mask=cluster.name").text)
        self.assertEqual([c["cluster"] for c in data["configs"]], [
            {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "c1"},
            {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "empty"}])
        data = json.loads(self.get("/config_dump?mask=bootstrap.node").text)
        self.assertEqual(data["configs"], [{
            "@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
            "bootstrap": {"node": {"id": "node1", "cluster": "txenvoy-test"}}}])
        data = json.loads(self.get("/config_dump?name_regex=^c1$").text)
        self.assertEqual(len(data["configs"][1]["static_clusters"]), 1)
        self.assertNotIn("static_listeners", data["configs"][2])
        data = json.loads(self.get("/config_dump?include_eds").text)
        self.assertEqual(data["configs"][2]["@type"],
                         "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump")

    def test_paramErrors(self):
        """Envoy's messages, as text/plain without a charset."""
        r = self.get("/config_dump?resource=bogus")
        self.assertEqual((r.status, r.body, r.headers["content-type"]),
                         (404, b"bogus not found in config dump", "text/plain"))
        r = self.get("/config_dump?mask=bogus")
        self.assertEqual((r.status, r.body), (
            400, b"FieldMask bogus could not be successfully applied to any configs."))
        r = self.get("/config_dump?resource=static_clusters&mask=bogus")
        self.assertEqual((r.status, r.body),
                         (400, b"FieldMask bogus could not be successfully used."))
        r = self.get("/config_dump?name_regex=(a")
        self.assertEqual((r.status, r.text), (
            400, "INVALID_ARGUMENT: Error while parsing name_regex from (a: missing ): (a"))


class RuntimeTests(AdminTestCase):

    def test_runtime(self):
        """Envoy's sample: a static value and an empty admin layer."""
        r = self.get("/runtime")
        self.assertEqual(r.headers["content-type"], "application/json")
        self.assertEqual(json.loads(r.text), {
            "entries": {"overload.global_downstream_max_connections": {
                "layer_values": ["1000", ""], "final_value": "1000"}},
            "layers": ["static", "admin"]})

    def test_modify(self):
        """Overrides land in the admin layer and in the server's runtime; '' removes them."""
        self.assertEqual(self.post("/runtime_modify?overload.global_downstream_max_connections"
                                   "=5&fresh=abc").body, b"OK\n")
        entries = json.loads(self.get("/runtime").text)["entries"]
        self.assertEqual(entries["overload.global_downstream_max_connections"],
                         {"layer_values": ["1000", "5"], "final_value": "5"})
        self.assertEqual(entries["fresh"], {"layer_values": ["", "abc"], "final_value": "abc"})
        self.assertEqual(self.server.runtime["overload.global_downstream_max_connections"], 5)
        self.post("/runtime_modify", b"fresh=&overload.global_downstream_max_connections=",
                  [("Content-Type", "application/x-www-form-urlencoded")])
        self.assertEqual(self.server.runtime,
                         {"overload.global_downstream_max_connections": 1000.0})
        self.assertNotIn("fresh", json.loads(self.get("/runtime").text)["entries"])

    def test_modifyErrors(self):
        r = self.post("/runtime_modify")
        self.assertEqual(r.status, 400)
        self.assertTrue(r.text.startswith("usage: /runtime_modify?key1=value1"))
        self.server.bootstrap.ClearField("layered_runtime")
        r = self.post("/runtime_modify?a=b")
        self.assertEqual((r.status, r.body), (503, b"No admin layer specified\n"))
        self.assertEqual(json.loads(self.get("/runtime").text),
                         {"entries": {"overload.global_downstream_max_connections": {
                             "layer_values": [], "final_value": ""}}, "layers": []})


class LoggingTests(AdminTestCase):

    USAGE = (
        "usage: /logging?<name>=<level> (change single level)\n"
        "usage: /logging?paths=name1:level1,name2:level2,... (change multiple levels)\n"
        "usage: /logging?level=<level> (change all levels)\n"
        "usage: /logging?group=<group_name>:<level> (change group of loggers)\n"
        "levels: trace debug info warning error critical off \n")

    def test_list(self):
        r = self.post("/logging")
        self.assertEqual((r.status, r.text), (200, self.server.logLevels.text()))
        self.assertTrue(r.text.startswith("active loggers:\n  a2a: info\n"))

    def test_changes(self):
        self.assertIn("  admin: debug\n", self.post("/logging?level=debug").text)
        self.assertEqual(self.server.logLevels.levelOf("upstream"), "debug")
        text = self.post("/logging?paths=admin:info,http:trace").text
        self.assertIn("  admin: info\n", text)
        self.assertIn("  http: trace\n", text)
        self.post("/logging?upstream=critical")
        self.assertEqual(self.server.logLevels.levelOf("upstream"), "critical")
        self.assertEqual(self.post("/logging?level=").status, 200)

    def test_errors(self):
        """Envoy's messages; nothing changes on an error."""
        cases = [
            ("/logging?level=warn", "unknown logger level"),
            ("/logging?level=bogus", "unknown logger level"),
            ("/logging?admin=bogus", "unknown logger level"),
            ("/logging?paths=nosuch:info", "unknown logger name"),
            ("/logging?paths=admin:debug,nosuch:info", "unknown logger name"),
            ("/logging?paths=admin", "empty logger name or empty logger level"),
            ("/logging?level=info&paths=admin:debug", "invalid number of parameters"),
            ("/logging?group=admin:debug",
             "group parameter requires fine-grain logging to be enabled"),
        ]
        for path, message in cases:
            r = self.post(path)
            self.assertEqual(r.status, 400, path)
            self.assertEqual(r.text, "error: %s\n\n%s%s" % (
                message, self.USAGE, self.server.logLevels.text()), path)
        self.assertEqual(self.server.logLevels.levelOf("admin"), "info")


class AdminStatsAndAccessLogTests(AdminTestCase):

    def test_counted(self):
        """listener.admin.* and http.admin.* as Envoy counts its admin traffic."""
        self.get("/ready")
        self.get("/nonexistent")
        self.post("/healthcheck/fail")
        self.assertEqual(self.stat("http.admin.downstream_rq_total"), 3)
        self.assertEqual(self.stat("http.admin.downstream_rq_completed"), 3)
        self.assertEqual(self.stat("http.admin.downstream_rq_2xx"), 2)
        self.assertEqual(self.stat("http.admin.downstream_rq_4xx"), 1)
        self.assertEqual(self.stat("listener.admin.http.admin.downstream_rq_2xx"), 2)
        self.assertEqual(self.stat("http.admin.downstream_rq_active"), 0)
        self.assertEqual(self.stat("listener.admin.downstream_cx_total"), 3)
        self.assertEqual(self.stat("listener.admin.main_thread.downstream_cx_total"), 3)
        self.assertEqual(self.stat("listener.admin.downstream_cx_active"), 0)
        self.assertEqual(self.stat("http.admin.downstream_cx_destroy_remote"), 3)
        self.assertGreater(self.stat("http.admin.downstream_cx_rx_bytes_total"), 100)
        self.assertGreater(self.stat("http.admin.downstream_cx_tx_bytes_total"), 5000)
        snap = self.server.stats.snapshot()
        self.assertEqual(snap.histograms["http.admin.downstream_rq_time"].count, 3)
        self.assertEqual(snap.histograms["listener.admin.downstream_cx_length_ms"].count, 3)

    def test_openConnection(self):
        proto, transport = self.connect()
        self.assertEqual(self.stat("http.admin.downstream_cx_active"), 1)
        proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.stat("http.admin.downstream_cx_active"), 0)

    def test_accessLog(self):
        """Each request goes to the admin's access loggers with its stream info."""
        self.get("/stats?usedonly")
        [(si, req, resp)] = self.accessLog.entries
        self.assertEqual(si.responseCode, 200)
        self.assertEqual(si.protocol, "HTTP/1.1")
        self.assertEqual(si.downstreamRemoteAddress, ("127.0.0.1", 54321))
        self.assertEqual(si.downstreamLocalAddress, ("127.0.0.1", 10690))
        self.assertGreater(si.bytesSent, 0)
        self.assertEqual((req.method, req.path, req.authority),
                         (b"GET", b"/stats?usedonly", b"127.0.0.1:10690"))
        self.assertEqual(req.get(b"user-agent"), b"curl/8")
        self.assertEqual(resp.status, b"200")
        self.assertEqual(resp.get(b"content-type"), b"text/plain; charset=UTF-8")


class LifecycleTests(AdminTestCase):

    def test_startStop(self):
        """Binds the configured address on the given reactor; .port is the bound port."""
        self.admin.start()
        [(port, site, backlog, interface)] = self.reactor.tcpServers
        self.assertEqual((port, interface), (10690, "127.0.0.1"))
        self.assertIs(site, self.admin.site)
        self.assertEqual(self.admin.port, 10690)
        proto, transport = self.connect()
        d = self.admin.stop()
        self.assertIsNone(self.successResultOf(d))
        self.assertTrue(transport.disconnecting)
        self.assertIsNone(self.successResultOf(self.admin.stop()))

    def test_unbindablePipe(self):
        """
        Envoy 1.40: C{cannot bind '/nonexistent-dir/admin.sock': No such
        file or directory}, an error naming the admin's address, no
        traceback.
        """
        proto = bootstrap_pb2.Admin()
        proto.address.pipe.path = "/nonexistent-txenvoy-dir/admin.sock"
        admin = AdminServer(self.reactor, self.server, proto)
        e = self.assertRaises(ConfigError, admin.start)
        self.assertEqual(str(e), "admin.address: cannot bind "
                                 "'/nonexistent-txenvoy-dir/admin.sock': No such file or directory")

    def test_noAddress(self):
        proto = bootstrap_pb2.Admin()
        self.assertRaises(ConfigError, AdminServer, self.reactor, self.server, proto)

    def test_unsupported(self):
        proto = bootstrap_pb2.Admin()
        proto.address.envoy_internal_address.server_listener_name = "x"
        e = self.assertRaises(UnsupportedField, checkAdminConfig, proto)
        self.assertIn("admin.address.envoy_internal_address", str(e))
        proto = bootstrap_pb2.Admin(allow_paths=[{"exact": "/stats"}])
        e = self.assertRaises(UnsupportedField, checkAdminConfig, proto)
        self.assertIn("admin.allow_paths", str(e))
        proto = bootstrap_pb2.Admin(access_log_path="/dev/null")
        self.assertRaises(UnsupportedField, checkAdminConfig, proto)



class CircuitBreakerLimitsTests(SynchronousTestCase):
    """C{/clusters} prints the live limits of the cluster's resource managers."""

    def test_retryBudget(self):
        """
        Envoy 1.40 prints a retry budget's current limit as C{max_retries}:
        C{min_retry_concurrency} at rest, in place of the configured
        C{max_retries}.
        """
        from txenvoy.admin._dumps import _thresholds
        from txenvoy.upstream.cluster import CircuitBreakers, ClusterInfo, Thresholds

        info = ClusterInfo(name="c1", circuitBreakers=CircuitBreakers(
            Thresholds("DEFAULT", maxConnections=5, maxRetries=7, retryBudget=(20.0, 2)),
            Thresholds("HIGH", maxPendingRequests=9, maxRequests=11)))
        cluster = Obj(info=info)
        self.assertEqual(_thresholds(cluster, "default"), {
            "max_connections": 5, "max_pending_requests": 1024, "max_requests": 1024,
            "max_retries": 2})
        self.assertEqual(_thresholds(cluster, "high"), {
            "max_connections": 1024, "max_pending_requests": 9, "max_requests": 11,
            "max_retries": 3})


class LocalityDumpTests(SynchronousTestCase):

    def test_subZoneShown(self):
        """
        A host's sub-zone appears in C{/clusters} as Envoy prints
        C{sub_zone::}, read from the host's L{Locality}.
        """
        from txenvoy.admin._dumps import _locality
        from txenvoy.upstream.host import Locality

        class HostLike:
            locality = Locality("r", "z", "s")

        self.assertEqual(_locality(HostLike()), ("r", "z", "s"))
