"""
The tutorial's Python filter (docs/tutorial/apikey.py) through a real
C{txenvoy --import apikey} process with the tutorial's config, in front of
a real upstream: what the tutorial tells a reader to expect is what
happens.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import REPO, Upstream, freePort, processEnv, recvAll

TUTORIAL = os.path.join(REPO, "docs", "tutorial")


def _answer(conn):
    """An application: answers each request with the headers it got."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk
    head = data.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    body = json.dumps({"line": head[0], "headers": head[1:]}).encode()
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
    conn.close()


class TutorialTests(SynchronousTestCase):

    def setUp(self):
        self.app = Upstream(_answer)
        self.addCleanup(self.app.stop)
        self.port, self.adminPort = freePort(), freePort()
        with open(os.path.join(TUTORIAL, "envoy.yaml")) as f:
            config = (f.read().replace("port_value: 10000", "port_value: %d" % self.port)
                      .replace("port_value: 8080", "port_value: %d" % self.app.port)
                      .replace("port_value: 9901", "port_value: %d" % self.adminPort))
        tmp = tempfile.mkdtemp(prefix="txenvoy-tutorial-")
        path = os.path.join(tmp, "envoy.yaml")
        with open(path, "w") as f:
            f.write(config)
        env = processEnv()
        env["PYTHONPATH"] = TUTORIAL + os.pathsep + env["PYTHONPATH"]
        txenvoy = os.path.join(os.path.dirname(sys.executable), "txenvoy")
        self.proc = subprocess.Popen([txenvoy, "--import", "apikey", "-c", path],
                                     env=env, cwd=tmp, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        self.addCleanup(self._stop)
        self._waitPort(self.port)

    def _stop(self):
        self.proc.terminate()
        self.proc.wait(30)
        self.proc.stderr.close()

    def _waitPort(self, port):
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(self.proc.stderr.read().decode())
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("txenvoy never listened")

    def get(self, *headers):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        try:
            s.sendall(b"GET /orders HTTP/1.1\r\nhost: shop\r\nconnection: close\r\n"
                      + b"".join(h + b"\r\n" for h in headers) + b"\r\n")
            return recvAll(s)
        finally:
            s.close()

    def test_apiKey(self):
        """
        Without the key: 401 from the filter, nothing reaches the
        application. With it: the application answers, without the key.
        """
        denied = self.get()
        self.assertTrue(denied.startswith(b"HTTP/1.1 401 Unauthorized\r\n"), denied)
        self.assertTrue(denied.endswith(b"missing or unknown API key\n"), denied)
        self.assertEqual(self.app.accepted, 0)
        allowed = self.get(b"x-api-key: s3cret")
        self.assertTrue(allowed.startswith(b"HTTP/1.1 200 OK\r\n"), allowed)
        seen = json.loads(allowed.split(b"\r\n\r\n", 1)[1])
        self.assertEqual(seen["line"], "GET /orders HTTP/1.1")
        self.assertFalse([h for h in seen["headers"] if h.lower().startswith("x-api-key")])
        with urllib.request.urlopen("http://127.0.0.1:%d/stats?filter=api_key"
                                    % (self.adminPort,), timeout=5) as r:
            stats = r.read().decode()
        self.assertIn("http.ingress.api_key.allowed: 1", stats)
        self.assertIn("http.ingress.api_key.denied: 1", stats)
