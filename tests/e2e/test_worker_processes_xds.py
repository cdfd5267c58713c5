"""
Dynamic resources with worker processes, end to end: C{twistd envoy
--worker-processes 2} driven by files (Envoy's dynamic-config-fs example,
05) and by the test ADS control plane. The main process alone subscribes
and counts; each update it accepts changes what both worker processes
serve, and a worker process that replaces a killed one starts with the
current dynamic config. Which worker process served a connection is told
by the per-worker stats (C{worker_0}, C{worker_1}: one worker thread per
process).
"""

import copy
import os
import shutil
import signal
import socket
import tempfile
import time

from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment
from envoy.config.route.v3.route_pb2 import RouteConfiguration
from google.protobuf import json_format
from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import (
    EXAMPLES,
    STARTUP_TIMEOUT,
    Envoy,
    SharedFixture,
    Upstream,
    adminStats,
    closingGet,
    freePort,
    stopAll,
)
from tests.e2e.test_file_xds import _direct, _listener, _moveInto, _response, _toCluster
from tests.e2e.test_grpc_xds import _BOOTSTRAP, _cluster
from tests.e2e.test_worker_processes import waitUntil, workerPids
from tests.xds.control_plane import CLUSTER, LISTENER, ROUTE, ControlPlane

ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"

ARGS = ("--worker-processes", "2", "--concurrency", "1", "--shutdown-drain-time-s", "1",
        "--drain-time-s", "1")


def _origin(body):
    """An HTTP origin answering C{body} to every request, on a new connection each."""
    def handle(conn):
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
                     % (len(body), body))
    return handle


def _body(port):
    """The body of one GET on a new connection, or C{None} when none came."""
    try:
        return closingGet(port).partition(b"\r\n\r\n")[2]
    except OSError:
        return None


def _served(adminPort, port):
    """Connections each worker process accepted on the listener at C{port}."""
    stats = adminStats(adminPort)
    return [stats.get("listener.127.0.0.1_%d.worker_%d.downstream_cx_total" % (port, index), 0)
            for index in range(2)]


def _counted(adminPort, port, total, timeout=2.0):
    """
    The per-process counts once they include C{total} connections (each
    worker process pushes its stats twice a second), or after C{timeout}
    (a process killed before it pushed its last ones).
    """
    deadline = time.monotonic() + timeout
    while True:
        served = _served(adminPort, port)
        if sum(served) >= total or time.monotonic() > deadline:
            return served
        time.sleep(0.05)


def spread(adminPort, port, expected, timeout=STARTUP_TIMEOUT):
    """
    Connect to C{port} until both worker processes answered C{expected}.
    They apply an update one after the other: from the last other answer
    on, every connection must be answered C{expected} and each worker
    process must have served at least one (its stats say so).
    """
    deadline = time.monotonic() + timeout
    answered = sum(_served(adminPort, port))
    before = None
    sent = 0
    while time.monotonic() < deadline and sent < 2000:
        if before is None:
            # Counted from here on: every connection answered so far is in.
            before = _counted(adminPort, port, answered)
        for _ in range(8):
            body = _body(port)
            sent += 1
            if body is not None:
                answered += 1
            if body != expected:
                before = None
                break
        if before is not None and all(a > b for a, b in zip(_served(adminPort, port), before)):
            return
        time.sleep(0.02)
    raise AssertionError("port %d: not %r from both worker processes (%r last)"
                         % (port, expected, _body(port)))


def killWorkerProcess(envoy, index):
    """SIGKILL worker process C{index}; wait for its replacement to be started."""
    pid = workerPids(envoy.output()[1])[index]
    os.kill(pid, signal.SIGKILL)
    waitUntil(lambda: workerPids(envoy.output()[1]).get(index) not in (None, pid), 20,
              "a new worker process %d" % (index,))


def _waitStarted(fixture):
    """Wait for the fixture's proxy and its two worker processes; stop it on failure."""
    try:
        fixture.envoy.waitReady()
        waitUntil(lambda: len(workerPids(fixture.envoy.output()[1])) == 2, STARTUP_TIMEOUT,
                  "two worker processes")
    except BaseException:
        fixture.stopFixture()
        raise


class FileXdsTests(SharedFixture, SynchronousTestCase):
    """Envoy's example 05 from a copy of its folder, with its files rewritten."""

    @classmethod
    def startFixture(cls):
        cls.tmp = tempfile.mkdtemp(prefix="txenvoy-wp-xds-")
        cls.folder = os.path.join(cls.tmp, "05-dynamic-fs")
        shutil.copytree(os.path.join(EXAMPLES, "05-dynamic-fs"), cls.folder)
        cls.originA = Upstream(_origin(b"A"), port=10080)
        cls.originB = Upstream(_origin(b"B"))
        cls.envoy = Envoy(configPath="05-dynamic-fs/envoy.yaml", cwd=cls.tmp,
                          adminPort=10093, args=ARGS)
        cls.updated = False
        cls.secondPort = freePort()
        _waitStarted(cls)

    @classmethod
    def stopFixture(cls):
        stopAll(cls.envoy, cls.originA, cls.originB)
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def update(self):
        """
        Once per fixture: a new cluster (CDS), then listener_0 routed to it
        and a second listener (LDS), each file moved into place.
        """
        cls = type(self)
        if cls.updated:
            return
        spread(10093, 10007, b"A")
        _moveInto(self.folder, "cds.yaml", _response("2", [
            {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
             "name": "example_proxy_cluster", "type": "STATIC",
             "load_assignment": {"cluster_name": "example_proxy_cluster", "endpoints": [
                 {"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                     "address": "127.0.0.1", "port_value": 10080}}}}]}]}},
            {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
             "name": "b", "type": "STATIC",
             "load_assignment": {"cluster_name": "b", "endpoints": [
                 {"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                     "address": "127.0.0.1", "port_value": cls.originB.port}}}}]}]}}]))
        waitUntil(lambda: self.envoy.stats().get("cluster_manager.cds.update_success") == 2,
                  20, "the new cds.yaml")
        _moveInto(self.folder, "lds.yaml", _response("2", [
            _listener("listener_0", 10007, _toCluster("b")),
            _listener("listener_1", cls.secondPort, _toCluster("example_proxy_cluster"))]))
        waitUntil(lambda: self.envoy.stats().get("listener_manager.lds.update_success") == 2,
                  20, "the new lds.yaml")
        cls.updated = True

    def test_filesChangeWhatBothProcessesServe(self):
        """
        Moving a new C{cds.yaml} and C{lds.yaml} into place: the changed
        listener and the new one serve from both worker processes; the
        subscriptions' stats are the main process's, counted once.
        """
        self.update()
        spread(10093, 10007, b"B")
        spread(10093, self.secondPort, b"A")
        stats = self.envoy.stats()
        self.assertEqual(
            {name: stats.get(name) for name in (
                "listener_manager.lds.update_success", "listener_manager.lds.update_attempt",
                "cluster_manager.cds.update_success", "listener_manager.listener_added",
                "listener_manager.listener_modified", "listener_manager.total_listeners_active",
                "cluster_manager.active_clusters", "cluster_manager.cluster_added")},
            {"listener_manager.lds.update_success": 2, "listener_manager.lds.update_attempt": 2,
             "cluster_manager.cds.update_success": 2, "listener_manager.listener_added": 2,
             "listener_manager.listener_modified": 1,
             "listener_manager.total_listeners_active": 2,
             "cluster_manager.active_clusters": 2, "cluster_manager.cluster_added": 2})

    def test_replacementStartsWithCurrentConfig(self):
        """
        A worker process killed after the update is replaced by one that
        serves the files' current listeners and clusters at once.
        """
        self.update()
        killWorkerProcess(self.envoy, 0)
        spread(10093, self.secondPort, b"A")
        spread(10093, 10007, b"B")
        self.assertEqual(self.envoy.stats()["server.worker_process_restarts"], 1)


def _rdsListener(name, port, routeName):
    """A listener whose connection manager takes route C{routeName} from ADS."""
    proto = copy.deepcopy(_listener(name, port, _direct("unused")))
    del proto["@type"]
    hcm = proto["filter_chains"][0]["filters"][0]["typed_config"]
    del hcm["route_config"]
    hcm["rds"] = {"config_source": {"ads": {}, "resource_api_version": "V3"},
                  "route_config_name": routeName}
    return proto


def _parsedListener(proto):
    from envoy.config.listener.v3.listener_pb2 import Listener

    proto = dict(proto)
    proto.pop("@type", None)
    return json_format.ParseDict(proto, Listener())


def _route(name, action):
    return json_format.ParseDict({"name": name, "virtual_hosts": [{
        "name": "v", "domains": ["*"],
        "routes": [dict({"match": {"prefix": "/"}}, **action)]}]}, RouteConfiguration())


def _edsCluster(name):
    return json_format.ParseDict({
        "name": name, "type": "EDS", "connect_timeout": "1s",
        "eds_cluster_config": {"eds_config": {"ads": {}, "resource_api_version": "V3"}}},
        Cluster())


def _assignment(name, port):
    return json_format.ParseDict({"cluster_name": name, "endpoints": [{"lb_endpoints": [
        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                     "port_value": port}}}}]}]},
        ClusterLoadAssignment())


def _refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return True
    return False


class AdsTests(SharedFixture, SynchronousTestCase):
    """The test ADS control plane and one txenvoy with two worker processes."""

    @classmethod
    def startFixture(cls):
        cls.admin, cls.static, cls.port = freePort(), freePort(), freePort()
        cls.routedPort = freePort()
        cls.origin = Upstream(_origin(b"E"))
        cls.cp = ControlPlane()
        cls.cp.setResources(CLUSTER, "c1", [_cluster("a")])
        cls.cp.setResources(LISTENER, "l1", [
            _parsedListener(_listener("l1", cls.port, _direct("one")))])
        config = _BOOTSTRAP % {"admin": cls.admin, "static": cls.static, "xds": cls.cp.port,
                               "api": "GRPC", "timeout": "5s", "tls": "", "validators": ""}
        cls.envoy = Envoy(config, adminPort=cls.admin, args=ARGS)
        _waitStarted(cls)

    @classmethod
    def stopFixture(cls):
        stopAll(cls.envoy, cls.cp, cls.origin)

    def test_updatesReachBothProcesses(self):
        """
        A changed listener, and a new one whose routes (RDS) lead to a new
        cluster whose endpoints come by EDS: the new listener warms until
        its routes arrived, then both worker processes serve both, the
        new cluster's hosts once its assignment came. Only the main process
        holds a stream to the control plane, and its stats count each
        update once. A worker process killed comes back with the current
        listeners, routes and hosts; a removed listener stops accepting in
        every process.
        """
        cp = self.cp
        spread(self.admin, self.port, b"one")
        cp.setResources(CLUSTER, "c2", [_cluster("a"), _edsCluster("e")])
        cp.setResources(LISTENER, "l2", [
            _parsedListener(_listener("l1", self.port, _direct("two"))),
            _parsedListener(_rdsListener("routed", self.routedPort, "r1"))])
        waitUntil(lambda: self.envoy.stats().get("listener_manager.total_listeners_warming") == 1,
                  20, "the routed listener warming")
        spread(self.admin, self.port, b"two")
        cp.setResources(ROUTE, "r1", [_route("r1", _toCluster("e"))])
        cp.setResources(ENDPOINT, "e1", [_assignment("e", self.origin.port)])
        spread(self.admin, self.routedPort, b"E")
        stats = self.envoy.stats()
        self.assertEqual(
            {name: stats.get(name) for name in (
                "listener_manager.lds.update_success", "cluster_manager.cds.update_success",
                "http.routed.rds.r1.update_success", "cluster.e.update_success",
                "listener_manager.total_listeners_warming",
                "listener_manager.total_listeners_active", "control_plane.connected_state")},
            {"listener_manager.lds.update_success": 2, "cluster_manager.cds.update_success": 2,
             "http.routed.rds.r1.update_success": 1, "cluster.e.update_success": 1,
             "listener_manager.total_listeners_warming": 0,
             "listener_manager.total_listeners_active": 3, "control_plane.connected_state": 1})
        self.assertEqual(len(cp.streams), 1)

        killWorkerProcess(self.envoy, 1)
        spread(self.admin, self.routedPort, b"E")
        spread(self.admin, self.port, b"two")
        self.assertEqual(len(cp.streams), 1)

        cp.setResources(LISTENER, "l3", [
            _parsedListener(_listener("l1", self.port, _direct("two")))])
        waitUntil(lambda: _refused(self.routedPort), 20, "the removed listener closed")
        spread(self.admin, self.port, b"two")
