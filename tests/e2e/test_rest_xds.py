"""
End-to-end: CDS and LDS by REST polling (C{api_type: REST}), from a small
JSON discovery server on 127.0.0.1, one per proxy, driving a real
C{twistd envoy} and Envoy 1.40 through the same updates: both POST the same
C{DiscoveryRequest}s (versions, ACK and NACK) and serve the same listener.
"""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import Envoy, RealEnvoy, adminStats, freePort
from tests.e2e.test_grpc_xds import _both, _cluster, _get, _listener
from tests.xds.control_plane import CLUSTER, LISTENER, packed

_BOOTSTRAP = """
node: {id: node-1, cluster: fleet}
admin: {address: {socket_address: {address: 127.0.0.1, port_value: %(admin)d}}}
dynamic_resources:
  cds_config:
    resource_api_version: V3
    api_config_source: {api_type: REST, transport_api_version: V3, cluster_names: [rest],
                        refresh_delay: 0.2s, request_timeout: 1s}
  lds_config:
    resource_api_version: V3
    api_config_source: {api_type: REST, transport_api_version: V3, cluster_names: [rest],
                        refresh_delay: 0.2s, request_timeout: 1s}
static_resources:
  clusters:
  - name: rest
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: rest
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %(rest)d}}}}]}]
"""

_PATHS = {"/v3/discovery:clusters": CLUSTER, "/v3/discovery:listeners": LISTENER}


class RestServer:
    """Answers each POST with the snapshot of its type; records the requests."""

    def __init__(self):
        self.snapshots = {}
        self.requests = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                typeUrl = _PATHS.get(self.path)
                with owner.lock:
                    owner.requests.append((self.path, json.loads(body)))
                    version, messages = owner.snapshots.get(typeUrl, ("", []))
                response = {"version_info": version, "type_url": typeUrl,
                            "resources": [json.loads(json_format.MessageToJson(packed(m)))
                                          for m in messages]}
                data = json.dumps(response).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def set(self, typeUrl, version, messages):
        with self.lock:
            self.snapshots[typeUrl] = (version, messages)

    def summary(self, path):
        """The distinct (version_info, error code) of the requests to one path, in order."""
        out = []
        with self.lock:
            for p, request in self.requests:
                if p != path:
                    continue
                item = (request.get("version_info", ""), request.get("type_url"),
                        request.get("error_detail", {}).get("code", 0),
                        "node" in request)
                if not out or out[-1] != item:
                    out.append(item)
        return out

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class RestTests(SynchronousTestCase):

    def test_pollingAsEnvoy(self):
        """
        Polled every C{refresh_delay}: the first request has no version;
        later ones carry the version accepted, and after a rejected response
        still the previous version (Envoy's REST sends no C{error_detail}),
        while the old listener serves on.
        """
        results = {}

        def run(real):
            rest = RestServer()
            admin, port = freePort(), freePort()
            rest.set(CLUSTER, "c1", [_cluster("a")])
            rest.set(LISTENER, "l1", [_listener("l1", port, "one")])
            config = _BOOTSTRAP % {"admin": admin, "rest": rest.port}
            proxy = (RealEnvoy(config) if real else
                     Envoy(config, args=("--concurrency", "1"), adminPort=admin))
            try:
                _waitBody(port, "one")
                rest.set(LISTENER, "l2", [_listener("l1", port, "two")])
                _waitBody(port, "two")
                bad = _listener("l1", port, "three")
                bad.filter_chains[0].filters[0].typed_config.Pack(Duration(seconds=1))
                rest.set(LISTENER, "l3", [bad])
                _waitStat(admin, "listener_manager.lds.update_rejected", 1)
                time.sleep(0.3)
                self.assertEqual(_get(port), "two")
                stats = adminStats(admin)
                results[real] = (rest.summary("/v3/discovery:listeners"),
                                 rest.summary("/v3/discovery:clusters")[:2],
                                 stats.get("listener_manager.lds.update_success") > 0,
                                 stats.get("cluster_manager.cds.update_success") > 0)
            finally:
                proxy.stop()
                rest.stop()

        _both(run, [True, False])
        self.assertEqual(results[True][0], [
            ("", LISTENER, 0, True), ("l1", LISTENER, 0, True), ("l2", LISTENER, 0, True)])
        self.assertEqual(results[False][0], results[True][0])
        self.assertEqual(results[False][1:], results[True][1:])


def _waitBody(port, body, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _get(port) == body:
            return
        time.sleep(0.05)
    raise AssertionError("port %d does not serve %r" % (port, body))


def _waitStat(admin, name, value, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if adminStats(admin).get(name, 0) >= value:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError("%s never reached %d" % (name, value))
