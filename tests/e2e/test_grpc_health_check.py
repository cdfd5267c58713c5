"""
The gRPC active health check (C{grpc_health_check}) side by side with
real Envoy: the same YAML, a real C{grpc.health.v1} server (grpcio) whose
answer the test changes, and the host flags, stats and the refusal of a
cluster without HTTP/2 compared.
"""

import os
import subprocess
import sys
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import envoyBinary, freePort, startProxy, twistdCommand, processEnv
from tests.e2e.test_health_check import admin, waitFor

HERE = os.path.dirname(os.path.abspath(__file__))

#: A grpc.health.v1 server answering the status written in a file.
SERVER = r'''
import sys, time
from concurrent import futures
import grpc
port, statusFile = int(sys.argv[1]), sys.argv[2]
def check(request, context):
    with open(statusFile) as f:
        status = int(f.read().strip() or 0)
    return b"\x08" + bytes([status])
handler = grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
    "Check": grpc.unary_unary_rpc_method_handler(
        check, request_deserializer=lambda b: b, response_serializer=lambda b: b)})
server = grpc.server(futures.ThreadPoolExecutor(2))
server.add_generic_rpc_handlers((handler,))
server.add_insecure_port("127.0.0.1:%d" % port)
server.start()
print("ready", flush=True)
time.sleep(120)
'''

CONFIG = """
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: %(admin)d}}
static_resources:
  clusters:
  - name: backend
    connect_timeout: 1s
    type: STATIC
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    health_checks:
    - timeout: 1s
      interval: 0.2s
      no_traffic_interval: 0.2s
      unhealthy_threshold: 2
      healthy_threshold: 1
      grpc_health_check: {service_name: "svc"}
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %(port)d}}}
"""


def healthFlags(adminPort):
    for line in admin(adminPort, "/clusters").splitlines():
        parts = line.split("::")
        if len(parts) == 4 and parts[0] == "backend" and parts[2] == "health_flags":
            return parts[3]
    return None


def hcCounter(adminPort, name):
    for line in admin(adminPort, "/stats?filter=health_check").splitlines():
        key, _, value = line.partition(": ")
        if key == "cluster.backend.health_check." + name:
            return int(value)
    return None


class GrpcHealthCheckComparison(SynchronousTestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="grpc-hc-")
        self.statusFile = os.path.join(self.tmp, "status")
        self.setStatus(1)
        self.port = freePort()
        script = os.path.join(self.tmp, "server.py")
        with open(script, "w") as f:
            f.write(SERVER)
        self.server = subprocess.Popen([sys.executable, script, str(self.port), self.statusFile],
                                       stdout=subprocess.PIPE)
        self.addCleanup(self.server.wait)
        self.addCleanup(self.server.kill)
        self.assertEqual(self.server.stdout.readline().strip(), b"ready")

    def setStatus(self, status):
        with open(self.statusFile + ".new", "w") as f:
            f.write(str(status))
        os.rename(self.statusFile + ".new", self.statusFile)

    def scenario(self, real):
        adminPort = freePort()
        proxy = startProxy(real, CONFIG % {"admin": adminPort, "port": self.port}, adminPort,
                           adminPort)
        self.addCleanup(proxy.stop)
        seen = {}
        waitFor(lambda: hcCounter(adminPort, "success") >= 1)
        seen["serving"] = healthFlags(adminPort)
        self.setStatus(2)  # NOT_SERVING
        waitFor(lambda: healthFlags(adminPort) == "/failed_active_hc")
        # Not retriable (Envoy's ACTIVE failure): one answer is enough.
        seen["notServingFailures"] = hcCounter(adminPort, "failure") >= 1
        self.setStatus(1)
        waitFor(lambda: healthFlags(adminPort) == "healthy")
        seen["back"] = healthFlags(adminPort)
        seen["networkFailures"] = hcCounter(adminPort, "network_failure")
        proxy.stop()
        self.setStatus(1)
        return seen

    def test_sameAsEnvoy(self):
        """
        A SERVING answer keeps the host healthy, NOT_SERVING marks it
        /failed_active_hc, SERVING again brings it back, without network
        failures, in txenvoy as in Envoy.
        """
        ours = self.scenario(real=False)
        envoys = self.scenario(real=True)
        self.assertEqual(ours, envoys)
        self.assertEqual(ours["serving"], "healthy")

    def test_needsHttp2(self):
        """
        A cluster without HTTP/2 is refused with Envoy's words, and the
        field path.
        """
        config = CONFIG % {"admin": freePort(), "port": self.port}
        config = config.replace(
            "explicit_http_config: {http2_protocol_options: {}}",
            "explicit_http_config: {http_protocol_options: {}}")
        path = os.path.join(self.tmp, "h1.yaml")
        with open(path, "w") as f:
            f.write(config)
        words = "backend cluster must support HTTP/2 for gRPC healthchecking"
        ours = subprocess.run(twistdCommand() + ["-n", "envoy", "-c", path, "--mode", "validate"],
                              capture_output=True, text=True, env=processEnv(), timeout=60)
        theirs = subprocess.run([envoyBinary(), "--mode", "validate", "-c", path],
                                capture_output=True, text=True, timeout=60)
        self.assertEqual((ours.returncode, theirs.returncode), (1, 1))
        self.assertIn(words, theirs.stdout + theirs.stderr)
        self.assertIn("static_resources.clusters[0].health_checks[0].grpc_health_check: "
                      + words, ours.stdout + ours.stderr)
