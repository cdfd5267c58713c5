"""
Envoy's own example configs (01, 02, 09, 14 of the corpus), run unchanged
from their folder through real Envoy 1.40 and then through txenvoy, with
the same origins behind them and the same requests in front; any
difference in status, headers (names, order and values, volatile ones
masked) or body, including what the origin received, fails the test.
"""

import os
import socket
import ssl
import subprocess
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import EXAMPLES, STARTUP_TIMEOUT, Envoy, Upstream, envoyBinary
from tests.e2e.test_http import Origin, exchange

CERTS = os.path.join(EXAMPLES, "certs")


class FixedOrigin(Origin):
    """The test origin on a fixed port (the corpus's 10080..10083), TLS optional."""

    def __init__(self, port, tls=False):
        Origin.__init__(self)
        self.server.stop()
        handler = self._handle
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(os.path.join(CERTS, "server.crt.pem"),
                                    os.path.join(CERTS, "server.key.pem"))

            def handler(conn):
                try:
                    conn = context.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError):
                    return
                self._handle(conn)
        self.server = Upstream(handler, port=port)
        self.port = port


def waitPort(proc, port, timeout=STARTUP_TIMEOUT):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError("proxy exited with %s" % (proc.returncode,))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("port %d not open" % (port,))


def runEnvoy(config, ports, requests):
    proc = subprocess.Popen([envoyBinary(), "--disable-hot-restart", "-c", config,
                             "--concurrency", "1", "-l", "critical"], cwd=EXAMPLES,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for port in ports:
            waitPort(proc, port)
        return [exchange(port, raw) for port, raw in requests]
    finally:
        proc.terminate()
        proc.wait(10)


def runTxenvoy(config, ports, requests):
    envoy = Envoy(configPath=config, cwd=EXAMPLES, args=("--concurrency", "1", "-l", "critical"))
    try:
        for port in ports:
            envoy.waitPort(port)
        return [exchange(port, raw) for port, raw in requests]
    finally:
        envoy.stop()


def get(path, host, extra=b""):
    return (b"GET " + path + b" HTTP/1.1\r\nhost: " + host + b"\r\nuser-agent: t\r\n" + extra
            + b"connection: close\r\n\r\n")


class ExampleComparisonTests(SynchronousTestCase):

    def compare(self, config, ports, requests, origins=((10080, False),)):
        servers = [FixedOrigin(port, tls) for port, tls in origins]
        try:
            envoy = runEnvoy(config, ports, requests)
            txenvoy = runTxenvoy(config, ports, requests)
        finally:
            for s in servers:
                s.stop()
        for (port, raw), expected, got in zip(requests, envoy, txenvoy):
            self.assertEqual(got, expected, raw)

    def test_envoyDemo(self):
        """01-envoy-demo.yaml: host rewrite to a TLS upstream (LOGICAL_DNS, SNI)."""
        self.compare("01-envoy-demo.yaml", [10000],
                     [(10000, get(b"/echo", b"example.test"))], origins=((10083, True),))

    def test_frontProxy(self):
        """02-front-proxy.yaml, the HTTP listener: two services and no route."""
        self.compare("02-front-proxy.yaml", [10002], [
            (10002, get(b"/service/1", b"front.test")),
            (10002, get(b"/service/2", b"front.test")),
            (10002, get(b"/other", b"front.test")),
        ], origins=((10080, False), (10081, False)))

    def test_routesRetriesTimeouts(self):
        """09-routes-retries-timeouts.yaml: vhosts, matches, rewrites, redirects, replies."""
        api = b"api.example.com"
        self.compare("09-routes-retries-timeouts.yaml", [10016], [
            (10016, get(b"/v1/users", api, b"x-canary: true\r\n")),
            (10016, get(b"/v2/users/42", api)),
            (10016, get(b"/v2/users/abc", api)),
            (10016, get(b"/search?debug=1", api)),
            (10016, get(b"/search?debug=0", api)),
            (10016, get(b"/old", b"www.example.com")),
            (10016, get(b"/secure/x?y=1", b"www.example.com")),
            (10016, get(b"/page", b"shop.example.org")),
            (10016, get(b"/healthz", b"other.test")),
            (10016, get(b"/anything", b"other.test")),
            (10016, get(b"/x", b"other.test", b"x_bad: 1\r\n")),
            (10016, b"GET / HTTP/1.0\r\nhost: other.test\r\n\r\n"),
        ], origins=((10080, False), (10081, False), (10082, False)))

    def test_faultInjection(self):
        """14-fault-injection.yaml: the disk runtime layer keeps the faults at 0%."""
        self.compare("14-fault-injection.yaml", [10030], [
            (10030, get(b"/", b"svc.test")),
            (10030, get(b"/x", b"svc.test")),
        ])
