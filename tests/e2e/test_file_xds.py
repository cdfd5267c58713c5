"""
End-to-end: LDS and CDS from files (C{path_config_source}), compared with
Envoy 1.40 on the same sequence of files moved into place: a changed
cluster, a changed and an added listener, a file that does not parse
(C{update_failure}), one that does not validate (C{update_rejected}, the
previous config keeps serving) and a removed listener; then the stats of
both proxies.
"""

import json
import os
import socket
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import (
    EXAMPLES,
    Envoy,
    RealEnvoy,
    adminStats,
    closingGet,
    forBoth,
    freePort,
    httpOrigin,
    statsWhen,
    statusOf,
)


def _origin(tag, delay=0):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            time.sleep(delay)
            self.send_response(200)
            self.send_header("content-length", str(len(tag)))
            self.end_headers()
            self.wfile.write(tag)

        def log_message(self, *args):
            pass

    return httpOrigin(Handler)


def _cluster(name, port):
    return {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            "name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {
                    "address": "127.0.0.1", "port_value": port}}}}]}]}}


def _listener(name, port, action):
    return {"@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
            "name": name,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network."
                             "http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": name,
                    "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router"
                                 ".v3.Router"}}],
                    "route_config": {"name": "r", "virtual_hosts": [{
                        "name": "v", "domains": ["*"],
                        "routes": [dict({"match": {"prefix": "/"}}, **action)]}]}}}]}]}


def _toCluster(name):
    return {"route": {"cluster": name}}


def _direct(body):
    return {"direct_response": {"status": 200, "body": {"inline_string": body}}}


def _moveInto(directory, name, text):
    """Write C{text} beside C{name} and rename it into place, as a deploy tool does."""
    tmp = os.path.join(directory, "." + name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, os.path.join(directory, name))


def _response(version, resources):
    return json.dumps({"version_info": version, "resources": resources})


def _body(port):
    try:
        return closingGet(port).partition(b"\r\n\r\n")[2]
    except OSError:
        return None


def _waitFor(port, expected, timeout=8.0):
    deadline = time.time() + timeout
    while True:
        got = _body(port)
        if got == expected or time.time() > deadline:
            return got
        time.sleep(0.05)


def _keepAliveExchange(sock):
    """
    One GET on a kept-alive connection: C{(body, whether the response said
    connection: close)}.
    """
    sock.sendall(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None, None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    length = int([l for l in lines if l.startswith(b"content-length:")][0].split(b":")[1])
    while len(body) < length:
        body += sock.recv(65536)
    return body, b"connection: close" in lines


def _proxy(real, config, adminPort, args):
    if real:
        return RealEnvoy(config, args)
    return Envoy(config, args=args + ("--concurrency", "1"), adminPort=adminPort)


class FileXdsTests(SynchronousTestCase):

    def _sequence(self, real, origins):
        a, b = origins
        d = tempfile.mkdtemp(prefix="xds-")
        p1, p2, adminPort = freePort(), freePort(), freePort()
        _moveInto(d, "cds.yaml", "version_info: c1\nresources:\n- " + json.dumps(
            _cluster("c1", a.server_address[1])))
        # The example's form: filters written as a mapping, not a list.
        lds = _listener("l1", p1, _toCluster("c1"))
        lds["filter_chains"][0]["filters"] = lds["filter_chains"][0]["filters"][0]
        _moveInto(d, "lds.json", _response("l1", [lds]))
        config = json.dumps({
            "node": {"id": "n", "cluster": "c"},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                     "port_value": adminPort}}},
            "dynamic_resources": {
                "cds_config": {"path_config_source": {"path": os.path.join(d, "cds.yaml")}},
                "lds_config": {"path_config_source": {
                    "path": os.path.join(d, "lds.json"),
                    "watched_directory": {"path": d}}}}})
        args = ("--drain-time-s", "30")
        proxy = _proxy(real, config, adminPort, args)
        seen = []
        try:
            proxy.waitPort(p1)
            seen.append(_waitFor(p1, b"a"))
            # A changed cluster: the same name, another endpoint.
            _moveInto(d, "cds.yaml", _response("c2", [_cluster("c1", b.server_address[1])]))
            seen.append(_waitFor(p1, b"b"))
            # A changed listener and an added one.
            _moveInto(d, "lds.json", _response("l2", [
                _listener("l1", p1, _direct("v2")), _listener("l2", p2, _toCluster("c1"))]))
            seen.append(_waitFor(p1, b"v2"))
            seen.append(_waitFor(p2, b"b"))
            # Not a DiscoveryResponse at all, then one naming an unknown cluster:
            # both refused, the previous listeners keep serving.
            _moveInto(d, "lds.json", "{not json")
            _waitAttempts(adminPort, 4)
            _moveInto(d, "lds.json", _response("l3", [
                _listener("l1", p1, _toCluster("nosuch")), _listener("l2", p2, _toCluster("c1"))]))
            _waitAttempts(adminPort, 5)
            seen.append(_body(p1))
            # A removed listener.
            _moveInto(d, "lds.json", _response("l4", [_listener("l2", p2, _toCluster("c1"))]))
            deadline = time.time() + 8
            while _body(p1) is not None and time.time() < deadline:
                time.sleep(0.05)
            seen.append(_body(p1))
            seen.append(_body(p2))
            stats = adminStats(adminPort)
            dump = _dynamicDump(adminPort, {p1: "p1", p2: "p2", a.server_address[1]: "a",
                                            b.server_address[1]: "b"})
        finally:
            proxy.stop()
        return seen, {k: v for k, v in stats.items() if k in _COMPARED}, dump

    def test_fileUpdatesAsEnvoy(self):
        """
        Envoy's filesystem subscriptions: each file moved into place is
        applied (or refused) as Envoy does, with the same stats.
        """
        origins = [_origin(b"a"), _origin(b"b")]
        for o in origins:
            self.addCleanup(o.server_close)
            self.addCleanup(o.shutdown)
        results = forBoth(lambda real: self._sequence(real, origins), timeout=90)
        realSeen, realStats, realDump = results[True]
        txSeen, txStats, txDump = results[False]
        self.assertEqual(realSeen, [b"a", b"b", b"v2", b"b", b"v2", None, b"b"])
        self.maxDiff = None
        self.assertEqual(txSeen, realSeen)
        self.assertEqual(txStats, realStats)
        self.assertEqual(txDump, realDump)


def _waitAttempts(adminPort, count, timeout=8.0):
    """Wait until LDS has read its file C{count} times."""
    deadline = time.time() + timeout
    while (adminStats(adminPort).get("listener_manager.lds.update_attempt", 0) < count
           and time.time() < deadline):
        time.sleep(0.05)


def _quickDrain(listener):
    """The HCM's drain_timeout (the wait after a drain's connection: close) cut to 0.2 s."""
    listener["filter_chains"][0]["filters"][0]["typed_config"]["drain_timeout"] = "0.2s"
    return listener


def _withoutTimes(value, ports):
    """
    C{value} with each C{last_updated} replaced by whether it was there,
    and each port by its name in C{ports}.
    """
    if isinstance(value, dict):
        return {k: (True if k == "last_updated" else
                    ports.get(v, v) if k == "port_value" else _withoutTimes(v, ports))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_withoutTimes(v, ports) for v in value]
    return value


def _dynamicDump(adminPort, ports):
    """
    What C{/config_dump} says of the dynamic listeners and clusters: the
    versions, and each resource's name, version and config.
    """
    import urllib.request

    with urllib.request.urlopen("http://127.0.0.1:%d/config_dump" % (adminPort,),
                                timeout=5) as r:
        configs = json.loads(r.read())["configs"]
    out = {}
    for c in configs:
        kind = c["@type"].rsplit(".", 1)[-1]
        if kind == "ListenersConfigDump":
            out["lds"] = (c.get("version_info"), c.get("static_listeners"), [
                _withoutTimes(d, ports) for d in c.get("dynamic_listeners", ())])
        if kind == "ClustersConfigDump":
            out["cds"] = (c.get("version_info"), c.get("static_clusters"), [
                _withoutTimes(d, ports) for d in c.get("dynamic_active_clusters", ())])
    return out


class ListenerDrainTests(SynchronousTestCase):

    def _sequence(self, real):
        d = tempfile.mkdtemp(prefix="xds-")
        port, adminPort = freePort(), freePort()
        lds = os.path.join(d, "lds.yaml")
        _moveInto(d, "lds.yaml", _response("1", [_quickDrain(_listener("l1", port, _direct("v1")))]))
        config = json.dumps({
            "node": {"id": "n", "cluster": "c"},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                     "port_value": adminPort}}},
            "dynamic_resources": {"lds_config": {"path": lds}}})
        # The drain must outlast the steps below on a loaded machine: when
        # it ends, the old connection is closed before its last exchange.
        proxy = _proxy(real, config, adminPort,
                       ("--drain-time-s", "60", "--drain-strategy", "immediate"))
        try:
            proxy.waitPort(port)
            old = socket.create_connection(("127.0.0.1", port), timeout=10)
            seen = [_keepAliveExchange(old)]
            _moveInto(d, "lds.yaml", _response("2", [_quickDrain(_listener("l1", port, _direct("v2")))]))
            seen.append(_waitFor(port, b"v2"))
            # The old connection keeps its listener's config and is told to go.
            seen.append(_keepAliveExchange(old))
            # Closed after that answer (not when the drain ends, a minute on).
            old.settimeout(30)
            seen.append(old.recv(10))
            old.close()
        finally:
            proxy.stop()
        return seen

    def test_oldConnectionsDrainAsEnvoy(self):
        """
        Envoy's listener drain on an LDS update: new connections get the new
        version; a kept-alive connection of the old one is answered by the
        old config with C{connection: close}, then closed.
        """
        results = forBoth(self._sequence, timeout=60)
        self.assertEqual(results[True], [(b"v1", False), b"v2", (b"v1", True), b""])
        self.assertEqual(results[False], results[True])


class ClusterRemovalTests(SynchronousTestCase):

    def _sequence(self, real, slow):
        d = tempfile.mkdtemp(prefix="xds-")
        port, adminPort = freePort(), freePort()
        _moveInto(d, "cds.yaml", _response("1", [_cluster("c1", slow.server_address[1])]))
        _moveInto(d, "lds.yaml", _response("1", [_listener("l1", port, _toCluster("c1"))]))
        config = json.dumps({
            "node": {"id": "n", "cluster": "c"},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                     "port_value": adminPort}}},
            "dynamic_resources": {
                "cds_config": {"path_config_source": {"path": os.path.join(d, "cds.yaml")}},
                "lds_config": {"path_config_source": {"path": os.path.join(d, "lds.yaml")}}}})
        proxy = _proxy(real, config, adminPort, ())
        inFlight = []
        try:
            proxy.waitPort(port)
            request = threading.Thread(target=lambda: inFlight.append(closingGet(port)))
            request.start()
            # The request is in flight once the proxy sent it to c1's origin.
            statsWhen(adminPort, lambda s: s.get("cluster.c1.upstream_rq_total", 0) >= 1,
                      timeout=30)
            _moveInto(d, "cds.yaml", _response("2", [_cluster("c2", slow.server_address[1])]))
            statsWhen(adminPort, lambda s: s.get("cluster_manager.cluster_removed") == 1,
                      timeout=30)
            after = statusOf(closingGet(port))
            request.join(10)
        finally:
            proxy.stop()
        return statusOf(inFlight[0]), inFlight[0].partition(b"\r\n\r\n")[2], after

    def test_inFlightRequestFinishesAsEnvoy(self):
        """
        Envoy's cluster removal by CDS: a request already sent to the
        cluster gets its response; a new one finds no cluster (503).
        """
        slow = _origin(b"slow", delay=1.0)
        self.addCleanup(slow.server_close)
        self.addCleanup(slow.shutdown)
        results = forBoth(lambda real: self._sequence(real, slow), timeout=60)
        self.assertEqual(results[True], (200, b"slow", 503))
        self.assertEqual(results[False], results[True])


class ExampleTests(SynchronousTestCase):

    def test_example05Unchanged(self):
        """
        Envoy's dynamic-config-fs example (05), run unchanged from its
        folder: the listener and the cluster its files give serve.
        """
        from tests.e2e.harness import Upstream

        def origin(conn):
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n05")

        upstream = Upstream(origin, port=10080)
        self.addCleanup(upstream.stop)
        proxy = Envoy(configPath="05-dynamic-fs/envoy.yaml", cwd=EXAMPLES, adminPort=10093,
                      args=("--concurrency", "1"))
        self.addCleanup(proxy.stop)
        proxy.waitReady()
        response = closingGet(10007)
        self.assertEqual((statusOf(response), response.partition(b"\r\n\r\n")[2]),
                         (200, b"05"))
        stats = proxy.stats()
        self.assertEqual((stats["listener_manager.lds.update_success"],
                          stats["cluster_manager.cds.update_success"],
                          stats["listener_manager.total_listeners_active"]), (1, 1, 1))


_COMPARED = {"listener_manager.lds." + n for n in (
    "update_attempt", "update_success", "update_rejected", "update_failure", "version")}
_COMPARED |= {"cluster_manager.cds." + n for n in (
    "update_attempt", "update_success", "update_rejected", "update_failure", "version")}
_COMPARED |= {"listener_manager." + n for n in (
    "listener_added", "listener_modified", "listener_removed", "listener_create_success",
    "listener_in_place_updated", "total_filter_chains_draining",
    "total_listeners_active", "total_listeners_warming", "total_listeners_draining")}
_COMPARED |= {"cluster_manager." + n for n in (
    "cluster_added", "cluster_modified", "cluster_removed", "active_clusters")}
