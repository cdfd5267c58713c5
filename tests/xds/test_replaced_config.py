"""
What an xDS update replaces is freed by reference counting alone: no
reference cycle among listeners, connection managers, route tables,
clusters, host sets, subscriptions and filter factories. The server's
garbage freezer relies on it (L{txenvoy.server.gc_freeze}): it never
collects the frozen heap again once the server is live, since that walk
pauses every worker thread (130 to 230 ms after a thousand clusters), so
a cycle here would be a leak with each update.

A server embedded on the test's reactor is driven by the test control
plane (LDS, RDS, CDS with STATIC, RING_HASH and EDS clusters, health
checks and outlier detection), serves traffic through every cluster, and
then every resource is replaced; the collector, in C{DEBUG_SAVEALL} mode,
must then find no txenvoy object in cyclic garbage.
"""

import gc
import socket
from http.server import BaseHTTPRequestHandler

from google.protobuf import json_format
from twisted.internet import defer, reactor, task, tcp, threads
from twisted.trial.unittest import TestCase

from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.config.route.v3.route_pb2 import RouteConfiguration

from tests.e2e.harness import DeadPort, freePort, httpOrigin
from tests.e2e.test_grpc_xds import _BOOTSTRAP
from tests.xds.control_plane import CLUSTER, LISTENER, ROUTE, ControlPlane
from txenvoy.config.protos import importTypeName
from txenvoy.server.server import Server

ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
_HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_FILTERS = ("envoy.extensions.filters.http.cors.v3.Cors",
            "envoy.extensions.filters.http.fault.v3.HTTPFault",
            "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
            "envoy.extensions.filters.http.router.v3.Router")


class _Origin(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    #: Every connection accepted, closed by the test's cleanup.
    accepted = []

    def setup(self):
        BaseHTTPRequestHandler.setup(self)
        self.accepted.append(self.connection)

    def do_GET(self):
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"up")

    def log_message(self, *args):
        pass


#: The tracer's collector, a static cluster as Envoy requires: a port that
#: refuses connections, so that no report leaves a connection behind; each
#: span is reported at once, so that none waits on a timer.
_COLLECTOR = """\
  - name: zipkin
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: zipkin
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %(port)d}}}}]}]
layered_runtime:
  layers:
  - name: static
    static_layer: {tracing.zipkin.min_flush_spans: 1}
"""


def _listener(port, generation):
    for name in _FILTERS + (_HCM, "envoy.extensions.access_loggers.file.v3.FileAccessLog",
                            "envoy.config.trace.v3.ZipkinConfig"):
        importTypeName(name)
    filters = [{"name": name.split(".v3.")[0].replace("extensions.", ""),
                "typed_config": {"@type": "type.googleapis.com/" + name}} for name in _FILTERS]
    filters[2]["typed_config"]["stat_prefix"] = "lrl"
    return json_format.ParseDict({
        "name": "l1",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{"name": "hcm", "typed_config": {
            "@type": "type.googleapis.com/" + _HCM,
            "stat_prefix": "g%d" % (generation,),
            "rds": {"route_config_name": "r1",
                    "config_source": {"ads": {}, "resource_api_version": "V3"}},
            "http_filters": filters,
            "tracing": {"provider": {"name": "envoy.tracers.zipkin", "typed_config": {
                "@type": "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig",
                "collector_cluster": "zipkin", "collector_endpoint": "/api/v2/spans",
                "collector_endpoint_version": "HTTP_JSON"}}},
            "access_log": [{"name": "a", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3."
                         "FileAccessLog", "path": "/dev/null"}}]}}]}]}, Listener())


def _routes(generation):
    return json_format.ParseDict({"name": "r1", "virtual_hosts": [{
        "name": "v%d" % (generation,), "domains": ["*"], "routes": [
            {"match": {"prefix": "/eds"}, "route": {
                "cluster": "eds", "timeout": "%ds" % (5 + generation,),
                "retry_policy": {"retry_on": "5xx", "num_retries": 1}}},
            {"match": {"prefix": "/rh"}, "route": {
                "cluster": "rh", "hash_policy": [{"header": {"header_name": "x"}}]}},
            {"match": {"prefix": "/"}, "route": {"cluster": "st"}}]}]},
        RouteConfiguration())


def _endpoints(name, port):
    return {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
        "socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}


def _clusters(port, generation):
    timeout = "%ds" % (1 + generation,)
    return [json_format.ParseDict(c, Cluster()) for c in (
        {"name": "st", "type": "STATIC", "connect_timeout": timeout,
         "circuit_breakers": {"thresholds": [{"max_connections": 100 + generation}]},
         "outlier_detection": {"consecutive_5xx": 5},
         "health_checks": [{"timeout": "1s", "interval": "1s", "unhealthy_threshold": 2,
                            "healthy_threshold": 1, "http_health_check": {"path": "/hc"}}],
         "load_assignment": _endpoints("st", port)},
        {"name": "eds", "type": "EDS", "connect_timeout": timeout,
         "eds_cluster_config": {"eds_config": {"ads": {}, "resource_api_version": "V3"}}},
        {"name": "rh", "type": "STATIC", "lb_policy": "RING_HASH", "connect_timeout": timeout,
         "load_assignment": _endpoints("rh", port)})]


def _assignment(port, generation):
    assignment = _endpoints("eds", port)
    assignment["endpoints"][0]["lb_endpoints"][0]["load_balancing_weight"] = 1 + generation
    return json_format.ParseDict(assignment, ClusterLoadAssignment())


def _push(controlPlane, typeUrl, version, messages):
    """
    Push a snapshot and wait (in a thread) for its ACK, whatever else the
    server asks meanwhile: a cluster replaced re-subscribes to its
    assignment with the nonce it last saw, and a stream that reconnects is
    sent every snapshot again under new nonces.
    """
    controlPlane.setResources(typeUrl, version, messages)
    controlPlane.waitFor(lambda cp: cp.acked(typeUrl, version))


def _get(port, paths):
    """Keep-alive GETs on one connection, each answered 200 by the origin."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for path in paths:
            sock.sendall(b"GET %s HTTP/1.1\r\nhost: a\r\nx: 1\r\n\r\n" % (path,))
            data = b""
            while not data.endswith(b"up"):
                chunk = sock.recv(65536)
                assert chunk, data
                data += chunk
            assert data.startswith(b"HTTP/1.1 200 "), data


def cyclicGarbage():
    """
    The txenvoy objects that only a collection of reference cycles would
    free, as C{{type name: count}}: what became garbage since the
    collector was paused (L{pauseCollector}), frozen or not.
    """
    gc.unfreeze()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        found = {}
        for o in gc.garbage:
            module = getattr(type(o), "__module__", "")
            if isinstance(module, str) and module.startswith("txenvoy"):
                name = "%s.%s" % (module, type(o).__qualname__)
                found[name] = found.get(name, 0) + 1
        return found
    finally:
        gc.set_debug(0)
        del gc.garbage[:]


def pauseCollector(testCase):
    """
    Collect what is garbage now, then pause the collector until the test
    ends: what becomes garbage after is either freed by reference
    counting or found by L{cyclicGarbage}. (Garbage an update froze,
    left by earlier tests, is collected too.)
    """
    gc.unfreeze()
    gc.collect()
    if gc.isenabled():
        gc.disable()
        testCase.addCleanup(gc.enable)


def keepEarlierObjects(testCase):
    """
    Hold every txenvoy object that exists before the test builds its own
    server, until the test ends: what an earlier test in the same process
    left behind (a server whose last reference goes while this one runs)
    cannot become garbage here, so L{cyclicGarbage} counts only this
    test's objects.
    """
    gc.unfreeze()
    gc.collect()
    earlier = [o for o in gc.get_objects()
               if str(getattr(type(o), "__module__", "")).startswith("txenvoy")]
    testCase.addCleanup(earlier.clear)


class ReplacedConfigTests(TestCase):

    @defer.inlineCallbacks
    def setUp(self):
        keepEarlierObjects(self)
        self.origin = httpOrigin(_Origin)
        self.addCleanup(self.origin.server_close)
        self.addCleanup(self.origin.shutdown)
        self.upstream = self.origin.server_address[1]
        self.controlPlane = ControlPlane()
        self.addCleanup(self.controlPlane.stop)
        self.port = freePort()
        config = _BOOTSTRAP % {"admin": freePort(), "static": freePort(),
                               "xds": self.controlPlane.port, "api": "GRPC",
                               "timeout": "5s", "tls": "", "validators": ""}
        collector = DeadPort()
        self.addCleanup(collector.close)
        config += _COLLECTOR % {"port": collector.port}
        self.configure(0, wait=False)
        self.server = Server.fromConfig(reactor, configYaml=config, concurrency=0,
                                        freezeGarbage=False, drainTimeS=0)
        self.server.privilegedStartService()
        self.server.startService()
        self.addCleanup(self.server.stopService)
        self.addCleanup(self.closeUpstreamConnections)
        yield self.server.initialized
        yield self.until(lambda: self.server.stats.counterValue(
            "listener_manager.listener_create_success") >= 2)

    def configure(self, generation, wait=True):
        """Every dynamic resource of this generation, each ACKed when C{wait}."""
        cp, version = self.controlPlane, str(generation)
        for typeUrl, messages in ((CLUSTER, _clusters(self.upstream, generation)),
                                  (ENDPOINT, [_assignment(self.upstream, generation)]),
                                  (ROUTE, [_routes(generation)]),
                                  (LISTENER, [_listener(self.port, generation)])):
            if wait:
                _push(cp, typeUrl, version, messages)
            else:
                cp.setResources(typeUrl, version, messages)

    def closeUpstreamConnections(self):
        """
        The origin closes every connection it kept alive, and the proxy's
        pools see them go.
        """
        for connection in _Origin.accepted:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        del _Origin.accepted[:]

        def upstreams():
            return [r for r in reactor.getReaders() + reactor.getWriters()
                    if isinstance(r, tcp.Client) and r.addr[1] == self.upstream]

        return self.until(lambda: not upstreams())

    @defer.inlineCallbacks
    def until(self, predicate, timeout=20.0):
        for _ in range(int(timeout / 0.02)):
            if predicate():
                return
            yield task.deferLater(reactor, 0.02, lambda: None)
        self.fail("condition not met")

    def reportsSettled(self):
        """
        How many spans were reported and came to an end: sent, failed, or
        dropped (by the collector, or unsent while four reports were in
        flight). Each span is reported alone.
        """
        return sum(self.server.stats.counterValue("tracing.zipkin.reports_" + outcome)
                   for outcome in ("sent", "dropped", "failed"))

    def connectionsClosed(self):
        """Until the proxy closed every downstream connection."""
        return self.until(lambda: self.server.stats.gaugeValue(
            "listener.127.0.0.1_%d.downstream_cx_active" % (self.port,)) == 0)

    @defer.inlineCallbacks
    def test_replacedConfigHasNoCycles(self):
        """
        After traffic through every cluster, an update replacing every
        listener (with its tracer, whose reporter made reports), route
        table, cluster and assignment leaves no txenvoy object in cyclic
        garbage; nor do keep-alive requests through a chain of several HTTP
        filters and the router, on the new configuration, and their
        connection once closed.
        """
        yield threads.deferToThread(_get, self.port, [b"/", b"/eds", b"/rh"])
        yield self.connectionsClosed()
        pauseCollector(self)
        for generation in (1, 2):
            yield threads.deferToThread(self.configure, generation)
        # The last listener is warm and every one it replaced has drained.
        yield self.until(lambda: all(self.server.stats.gaugeValue(
            "listener_manager.total_listeners_" + state) == 0
            for state in ("warming", "draining")))
        self.assertEqual(cyclicGarbage(), {})
        yield threads.deferToThread(_get, self.port, [b"/", b"/eds", b"/rh"] * 3)
        yield self.connectionsClosed()
        self.assertEqual(self.server.stats.counterValue("cluster.eds.upstream_rq_200"), 4)
        # Every report has come to an end: none is left in flight.
        yield self.until(lambda: self.reportsSettled() == 12)
        self.assertEqual(cyclicGarbage(), {})
