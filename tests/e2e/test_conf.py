"""
End-to-end: the ready configs in C{conf/} validate (in txenvoy and in real
Envoy) and do what their comments say, on free ports.
"""

import glob
import os
import socket
import ssl
import subprocess
from concurrent.futures import ThreadPoolExecutor

import yaml
from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import (REPO, Envoy, Upstream, echoHandler, envoyBinary, freePort,
                               recvAll, runTwistd)

CONFS = sorted(glob.glob(os.path.join(REPO, "conf", "*.yaml")))


def onFreePorts(name, upstreamPort):
    """
    conf/NAME with a free port for each listener and the admin, and the
    (single) cluster's endpoint moved to C{upstreamPort}.

    @return: (config dict, admin port, [listener ports])
    """
    with open(os.path.join(REPO, "conf", name)) as f:
        config = yaml.safe_load(f)
    adminPort = freePort()
    config["admin"]["address"]["socket_address"]["port_value"] = adminPort
    ports = []
    for listener in config["static_resources"]["listeners"]:
        ports.append(freePort())
        listener["address"]["socket_address"]["port_value"] = ports[-1]
    for cluster in config["static_resources"]["clusters"]:
        for group in cluster["load_assignment"]["endpoints"]:
            for ep in group["lb_endpoints"]:
                ep["endpoint"]["address"]["socket_address"]["port_value"] = upstreamPort
    return config, adminPort, ports


def httpOrigin(conn):
    conn.recv(65536)
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\nconnection: close\r\n\r\nfrom app\n")


class ConfTests(SynchronousTestCase):

    def test_thereAreSeveral(self):
        self.assertGreaterEqual(len(CONFS), 3)

    def test_everyConfValidates(self):
        """Each config is valid for txenvoy and for Envoy 1.40 itself."""
        rels = [os.path.relpath(path, REPO) for path in CONFS]

        def envoyValidates(rel):
            return subprocess.run([envoyBinary(), "--mode", "validate", "-c", rel, "-l", "error"],
                                  cwd=REPO, capture_output=True, text=True, timeout=60)

        # A few processes at a time: each is mostly its interpreter starting.
        with ThreadPoolExecutor(4) as pool:
            ours = [pool.submit(runTwistd, ["--mode", "validate", "-c", rel]) for rel in rels]
            envoys = [pool.submit(envoyValidates, rel) for rel in rels]
            ours = [f.result() for f in ours]
            envoys = [f.result() for f in envoys]
        self.assertTrue(rels)
        for rel, (rc, out, err), p in zip(rels, ours, envoys):
            self.assertEqual((rc, out), (0, "configuration '%s' OK\n" % (rel,)), err)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def test_demoCertIsMarkedDemoOnly(self):
        with open(os.path.join(REPO, "conf", "front-proxy-tls.yaml")) as f:
            self.assertIn("DEMO ONLY", f.read())

    def test_frontProxyTls(self):
        """HTTPS with the shipped demo certificate, to a plain HTTP app."""
        origin = Upstream(httpOrigin)
        self.addCleanup(origin.stop)
        config, adminPort, (port,) = onFreePorts("front-proxy-tls.yaml", origin.port)
        envoy = Envoy(config, cwd=REPO, adminPort=adminPort)
        self.addCleanup(envoy.stop)
        envoy.waitReady()
        context = ssl.create_default_context(cafile=os.path.join(REPO, "conf", "demo-cert.pem"))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
                response = recvAll(s, 10)
        self.assertTrue(response.startswith(b"HTTP/1.1 200 OK\r\n"), response)
        self.assertTrue(response.endswith(b"\r\n\r\nfrom app\n"), response)

    def test_tcpProxy(self):
        origin = Upstream(echoHandler)
        self.addCleanup(origin.stop)
        config, adminPort, (port,) = onFreePorts("tcp-proxy.yaml", origin.port)
        envoy = Envoy(config, adminPort=adminPort)
        self.addCleanup(envoy.stop)
        envoy.waitReady()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"select 1;")
            s.shutdown(socket.SHUT_WR)
            self.assertEqual(recvAll(s, 10), b"select 1;")

    def test_tracingZipkin(self):
        """The README's tracing setup: a traced request reaches the Zipkin receiver."""
        from tests.e2e.collectors import RecordingOrigin, ZipkinReceiver

        origin, zipkin = RecordingOrigin(), ZipkinReceiver()
        self.addCleanup(origin.stop)
        self.addCleanup(zipkin.stop)
        config, adminPort, (port,) = onFreePorts("tracing-zipkin.yaml", origin.port)
        for cluster in config["static_resources"]["clusters"]:
            if cluster["name"] == "zipkin":
                for group in cluster["load_assignment"]["endpoints"]:
                    for ep in group["lb_endpoints"]:
                        ep["endpoint"]["address"]["socket_address"]["port_value"] = zipkin.port
        config["layered_runtime"] = {"layers": [{"name": "static", "static_layer": {
            "tracing.zipkin.flush_interval_ms": 100}}]}
        envoy = Envoy(config, adminPort=adminPort)
        self.addCleanup(envoy.stop)
        envoy.waitReady()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /cart HTTP/1.1\r\nhost: shop\r\nx-customer: c7\r\n"
                      b"connection: close\r\n\r\n")
            self.assertTrue(recvAll(s, 10).startswith(b"HTTP/1.1 200 OK\r\n"))
        [span] = zipkin.waitSpans(1)
        self.assertEqual((span["name"], span["localEndpoint"]["serviceName"],
                          span["tags"]["customer"], span["tags"]["http.url"]),
                         ("app", "front-proxy", "c7", "http://shop/cart"))
        head = dict((k.lower(), v) for k, v in origin.heads[0])
        self.assertEqual(head["x-b3-traceid"], span["traceId"])
