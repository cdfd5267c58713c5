"""
Unix domain sockets (Envoy's C{pipe} addresses), compared with Envoy 1.40
on the same YAML: listeners on a path (with its C{mode}) and on an abstract
C{@} name, a static cluster whose endpoint is a Unix socket, and the admin
on a Unix socket; the stats, C{/listeners} and C{/clusters} name each by
its path, and a path that cannot be bound stops the start with Envoy's
message and exit status 1.
"""

import http.client
import json
import os
import shutil
import socket
import stat
import tempfile
import time

from twisted.trial.unittest import TestCase

from tests.e2e.harness import (
    Envoy,
    RealEnvoy,
    SharedFixture,
    freePort,
    runTwistd,
)

ECHO = ('[{name: echo, typed_config: {"@type": '
        'type.googleapis.com/envoy.extensions.filters.network.echo.v3.Echo}}]')

CONFIG = """
admin:
  address: {pipe: {path: %(dir)s/admin.sock}}
static_resources:
  listeners:
  - name: unix
    address: {pipe: {path: %(dir)s/l.sock, mode: 0600}}
    filter_chains: [{filters: %(echo)s}]
  - name: abstract
    address: {pipe: {path: "@%(abstract)s"}}
    filter_chains: [{filters: %(echo)s}]
  - name: http
    address: {pipe: {path: %(dir)s/h.sock}}
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: h
          use_remote_address: true
          access_log:
          - name: file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: %(dir)s/access.log
              log_format:
                text_format: "%%DOWNSTREAM_REMOTE_ADDRESS%% %%DOWNSTREAM_LOCAL_ADDRESS%% %%REQ(X-FORWARDED-FOR)%% %%RESPONSE_CODE%%\\n"
          route_config:
            virtual_hosts:
            - name: v
              domains: ["*"]
              routes: [{match: {prefix: /}, direct_response: {status: 200, body: {inline_string: ok}}}]
          http_filters:
          - name: router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  - name: tcp
    address: {socket_address: {address: 127.0.0.1, port_value: %(port)d}}
    filter_chains:
    - filters:
      - name: tcp
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: t
          cluster: up
  clusters:
  - name: up
    connect_timeout: 1s
    load_assignment:
      cluster_name: up
      endpoints: [{lb_endpoints: [{endpoint: {address: {pipe: {path: %(dir)s/l.sock}}}}]}]
"""


class _Side:
    """One proxy of the comparison, its socket directory and its ports."""

    def __init__(self, real):
        self.real = real
        self.dir = tempfile.mkdtemp(prefix="txenvoy-pipe-")
        self.port = freePort()
        self.abstract = "txenvoy-e2e-%d-%s" % (os.getpid(), "envoy" if real else "txenvoy")
        config = CONFIG % {"dir": self.dir, "port": self.port, "abstract": self.abstract,
                           "echo": ECHO}
        flush = ("--file-flush-interval-msec", "100")
        self.proxy = (RealEnvoy(config, args=flush) if real
                      else Envoy(config, args=("--concurrency", "1") + flush))
        self.proxy.waitPort(self.port)

    def get(self, name, path):
        """GET C{path} over the Unix socket C{name}: C{(status, body)}."""
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(5)
        sock.connect(os.path.join(self.dir, name))
        conn = http.client.HTTPConnection("localhost")
        conn.sock = sock
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read().decode()
        conn.close()
        return response.status, body.replace(self.dir, "<dir>").replace(
            self.abstract, "<abstract>")

    def admin(self, path):
        """GET C{path} from the admin on its Unix socket."""
        return self.get("admin.sock", path)[1]

    def accessLog(self):
        """The HTTP listener's access log lines, once written."""
        path = os.path.join(self.dir, "access.log")
        deadline = time.time() + 10
        while time.time() < deadline:
            if os.path.exists(path):
                with open(path) as f:
                    text = f.read()
                if text.endswith("\n"):
                    return text.replace(self.dir, "<dir>").splitlines()
            time.sleep(0.05)
        raise AssertionError("no access log line at %s (%s)" % (path, self.real))

    def stats(self):
        out = {}
        for line in self.admin("/stats").splitlines():
            name, _, value = line.partition(": ")
            if value.isdigit():
                out[name] = int(value)
        return out

    def stop(self):
        self.proxy.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _exchange(family, address, data):
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(address)
    sock.sendall(data)
    reply = b""
    while len(reply) < len(data):
        chunk = sock.recv(len(data) - len(reply))
        if not chunk:
            break
        reply += chunk
    sock.close()
    return reply


class PipeComparisonTests(SharedFixture, TestCase):

    @classmethod
    def startFixture(cls):
        cls.sides = []
        try:
            for real in (True, False):
                cls.sides.append(_Side(real))
            for side in cls.sides:
                # One connection to each listener, then the counts settle.
                side.echoed = (
                    _exchange(socket.AF_UNIX, os.path.join(side.dir, "l.sock"), b"path"),
                    _exchange(socket.AF_UNIX, "\0" + side.abstract, b"abstract"),
                    _exchange(socket.AF_INET, ("127.0.0.1", side.port), b"upstream"))
                side.response = side.get("h.sock", "/")
            for side in cls.sides:
                # Each proxy counts the upstream connection's end when it
                # gets to it, after the client saw the echo.
                deadline = time.time() + 30
                while (side.stats().get("cluster.up.upstream_cx_active")
                       and time.time() < deadline):
                    time.sleep(0.05)
        except BaseException:
            cls.stopFixture()
            raise

    @classmethod
    def stopFixture(cls):
        for side in cls.sides:
            side.stop()
        cls.sides = []

    def test_echoed(self):
        """
        Each listener answers: on a path, on an abstract name, and through a
        TCP listener whose cluster's endpoint is the Unix socket.
        """
        for side in self.sides:
            self.assertEqual(side.echoed, (b"path", b"abstract", b"upstream"))

    def test_httpOverPipe(self):
        """
        HTTP on a pipe listener: Envoy names the unnamed client by the
        listener's path and appends no C{x-forwarded-for} for it.
        """
        for side in self.sides:
            self.assertEqual(side.response, (200, "ok"))
        envoy, txenvoy = (side.accessLog() for side in self.sides)
        self.assertEqual(txenvoy, envoy)
        self.assertEqual(envoy, ["<dir>/h.sock <dir>/h.sock - 200"])

    def test_socketMode(self):
        """Envoy applies the pipe's C{mode} to the socket file."""
        for side in self.sides:
            mode = os.stat(os.path.join(side.dir, "l.sock")).st_mode
            self.assertTrue(stat.S_ISSOCK(mode))
            self.assertEqual(stat.S_IMODE(mode), 0o600)

    def test_stats(self):
        """
        A pipe listener's stats are C{listener.<path>.*} and
        C{listener.@<name>.*}; the upstream connection counts on the cluster.
        """
        envoy, txenvoy = (side.stats() for side in self.sides)
        names = [
            "listener.<dir>/l.sock.downstream_cx_total",
            "listener.<dir>/l.sock.worker_0.downstream_cx_total",
            "listener.<dir>/l.sock.downstream_cx_active",
            "listener.@<abstract>.downstream_cx_total",
            "listener.@<abstract>.worker_0.downstream_cx_total",
            "cluster.up.upstream_cx_total",
            "cluster.up.upstream_rq_total",
            "cluster.up.upstream_rq_active",
        ]
        self.assertEqual([envoy.get(n) for n in names], [txenvoy.get(n) for n in names])

    def test_listeners(self):
        """C{/listeners}, text and JSON, name a pipe listener by its path."""
        envoy, txenvoy = self.sides
        for path in ("/listeners", "/listeners?format=json"):
            mine = txenvoy.admin(path).replace("%d" % (txenvoy.port,), "<port>")
            theirs = envoy.admin(path).replace("%d" % (envoy.port,), "<port>")
            self.assertEqual(mine, theirs)

    def test_clusters(self):
        """C{/clusters} names a Unix socket host by its path."""
        envoy, txenvoy = ([line for line in side.admin("/clusters").splitlines()
                           if line.startswith("up::<dir>/")] for side in self.sides)
        self.maxDiff = None
        self.assertEqual(txenvoy, envoy)
        for side in self.sides:
            hosts = json.loads(side.admin("/clusters?format=json"))["cluster_statuses"][0]
            self.assertEqual(hosts["host_statuses"][0]["address"],
                             {"pipe": {"path": "<dir>/l.sock"}})


class PipeBindFailureTests(TestCase):

    def test_unbindablePath(self):
        """
        Envoy: C{listener 'unix' failed to bind or apply socket options:
        cannot bind '/nonexistent/l.sock': No such file or directory}, exit 1.
        """
        config = ("static_resources:\n  listeners:\n  - name: unix\n"
                  "    address: {pipe: {path: /nonexistent-txenvoy/l.sock}}\n"
                  "    filter_chains: [{filters: %s}]\n" % (ECHO,))
        message = ("listener 'unix' failed to bind or apply socket options: cannot bind "
                   "'/nonexistent-txenvoy/l.sock': No such file or directory")
        envoy = RealEnvoy(config)
        try:
            envoy.proc.wait(20)
            with open(envoy.log.name) as f:
                self.assertIn(message, f.read())
            self.assertEqual(envoy.proc.returncode, 1)
        finally:
            envoy.stop()
        tmp = tempfile.mkdtemp(prefix="txenvoy-pipe-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "envoy.yaml")
        with open(path, "w") as f:
            f.write(config)
        rc, out, err = runTwistd(["-c", path], cwd=tmp)
        self.assertEqual(rc, 1)
        self.assertIn(message, err + out)
        self.assertNotIn("Traceback", err + out)
