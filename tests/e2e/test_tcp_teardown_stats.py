"""
tcp_proxy's connection-teardown counters, from real Envoy 1.40 and from a
real C{twistd -n envoy} (with and without the splice fast path), for the
same scenarios: the client closes first or resets, the host closes first
or resets, the host refuses, and the session is idle past the tcp_proxy's
C{idle_timeout}. Each scenario has its own listener and cluster, so that each stat prefix
names one scenario; the proxies are probed for readiness on a listener of
their own.
"""

import os
import socket
import struct
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.configs import block, cluster
from tests.e2e.harness import DeadPort, SharedFixture, Upstream, freePort, startProxy, statsWhen
from tests.e2e.test_teardown_stats import waitClosed

SCENARIOS = ("downfirst", "downreset", "upfirst", "upreset", "refused", "idle")
LISTENERS = SCENARIOS + ("probe",)

LISTENER = """  - name: %(name)s
    address: {socket_address: {address: 127.0.0.1, port_value: %(port)d}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: %(name)s
          cluster: %(name)s%(options)s"""

CONFIG = """
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: %(admin)d}}
static_resources:
  listeners:
%(listeners)s
  clusters:
%(clusters)s
"""

UPSTREAM = ("upstream_cx_total", "upstream_cx_destroy", "upstream_cx_destroy_local",
            "upstream_cx_destroy_remote", "upstream_cx_destroy_with_active_rq",
            "upstream_cx_destroy_local_with_active_rq",
            "upstream_cx_destroy_remote_with_active_rq", "upstream_cx_connect_fail",
            "upstream_cx_connect_attempts_exceeded", "upstream_cx_rx_bytes_total",
            "upstream_cx_tx_bytes_total")
TCP = ("downstream_cx_total", "downstream_cx_no_route", "downstream_cx_tx_bytes_total",
       "downstream_cx_rx_bytes_total", "idle_timeout", "upstream_flush_total",
       "downstream_flow_control_paused_reading_total",
       "downstream_flow_control_resumed_reading_total")
LISTENER_STATS = ("downstream_cx_total", "downstream_cx_destroy")


def echoThenClose(conn):
    """Echo until the client's FIN, then close."""
    while True:
        data = conn.recv(65536)
        if not data:
            return
        conn.sendall(data)


def answerThenReset(conn):
    """Read one chunk, answer it and reset the connection."""
    conn.recv(65536)
    conn.sendall(b"bye")
    # The answer reaches the client before the reset.
    time.sleep(0.1)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def answerThenClose(conn):
    """Read one chunk, answer it and close first."""
    conn.recv(65536)
    conn.sendall(b"bye")


class _Scenarios:
    def __init__(self, ports, adminPort):
        self.ports = ports
        self.adminPort = adminPort
        self.seen = {}

    def _connect(self, name):
        return socket.create_connection(("127.0.0.1", self.ports[name]), timeout=3)

    def runAll(self):
        # The client sends, reads the echo and closes first.
        s = self._connect("downfirst")
        s.sendall(b"hello")
        self.seen["downfirst"] = s.recv(100)
        s.close()
        # The client resets its connection.
        s = self._connect("downreset")
        s.sendall(b"hello")
        self.seen["downreset"] = s.recv(100)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        # The host answers and closes first.
        s = self._connect("upfirst")
        s.sendall(b"hello")
        self.seen["upfirst"] = s.recv(100)
        s.settimeout(3)
        self.seen["upfirstEof"] = s.recv(100)
        s.close()
        # The host answers and resets.
        s = self._connect("upreset")
        s.sendall(b"hello")
        s.settimeout(3)
        try:
            self.seen["upreset"] = s.recv(100)
        except OSError as e:
            self.seen["upreset"] = e.__class__.__name__
        # Closed by the proxy, not by the 3 s wait (a loaded machine makes
        # either proxy a few hundred milliseconds late).
        self.seen["upresetEof"] = waitClosed(s) < 1.5
        s.close()
        # Nobody listens at the host's address.
        s = self._connect("refused")
        self.seen["refused"] = waitClosed(s) < 1.5
        s.close()
        # Nothing moves for the idle_timeout.
        s = self._connect("idle")
        s.sendall(b"x")
        s.recv(100)
        self.seen["idle"] = 0.45 < waitClosed(s) < 1.5
        s.close()
        self.stats = statsWhen(self.adminPort, self.settled)

    def settled(self, stats):
        """Every session counted as ended, on both sides of the proxy."""
        for name in SCENARIOS:
            listener = "listener.127.0.0.1_%d." % (self.ports[name],)
            if stats.get(listener + "downstream_cx_destroy") != 1:
                return False
            if name != "refused" and stats.get("cluster.%s.upstream_cx_destroy" % (name,)) != 1:
                return False
        return True

    def counters(self):
        out = {}
        for name in SCENARIOS:
            for c in UPSTREAM:
                key = "cluster.%s.%s" % (name, c)
                out[key] = self.stats.get(key)
            for c in TCP:
                key = "tcp.%s.%s" % (name, c)
                out[key] = self.stats.get(key)
            for c in LISTENER_STATS:
                key = "listener.127.0.0.1_%d.%s" % (self.ports[name], c)
                out[key.replace(str(self.ports[name]), name)] = self.stats.get(key)
        return out


def _config(ports, adminPort, origins):
    listeners = "\n".join(
        LISTENER % {"name": n, "port": ports[n],
                    "options": "\n          idle_timeout: 0.5s" if n == "idle" else ""}
        for n in LISTENERS)
    clusters = "".join(block(cluster(n, origins[n]), 2) for n in LISTENERS).rstrip("\n")
    return CONFIG % {"admin": adminPort, "listeners": listeners, "clusters": clusters}


def _run(real, splice=True):
    handlers = {"downfirst": echoThenClose, "downreset": echoThenClose,
                "upfirst": answerThenClose, "upreset": answerThenReset,
                "idle": echoThenClose}
    upstreams = {n: Upstream(h) for n, h in handlers.items()}
    origins = {n: u.port for n, u in upstreams.items()}
    dead = DeadPort()
    origins["refused"] = origins["probe"] = dead.port
    ports = {n: freePort() for n in LISTENERS}
    adminPort = freePort()
    saved = os.environ.get("TXENVOY_SPLICE")
    os.environ["TXENVOY_SPLICE"] = "1" if splice else "0"
    try:
        proxy = startProxy(real, _config(ports, adminPort, origins), ports["probe"],
                           adminPort)
        try:
            scenarios = _Scenarios(ports, adminPort)
            scenarios.runAll()
            if not real:
                scenarios.output = proxy.output()
        finally:
            proxy.stop()
    finally:
        if saved is None:
            del os.environ["TXENVOY_SPLICE"]
        else:
            os.environ["TXENVOY_SPLICE"] = saved
        for u in upstreams.values():
            u.stop()
        dead.close()
    return scenarios


class CompareTcpTeardownStatsTests(SharedFixture, SynchronousTestCase):
    """
    The same tcp_proxy scenarios through real Envoy and through txenvoy,
    with the splice fast path and without (C{TXENVOY_SPLICE=0}).
    """

    @classmethod
    def startFixture(cls):
        cls.envoy = _run(True)
        cls.spliced = _run(False, splice=True)
        cls.unspliced = _run(False, splice=False)

    @classmethod
    def stopFixture(cls):
        pass

    def test_sameResults(self):
        self.assertEqual(self.envoy.seen["idle"], True)
        self.assertEqual(self.spliced.seen, self.envoy.seen)
        self.assertEqual(self.unspliced.seen, self.envoy.seen)

    def assertSameCounters(self, got):
        expected, got = self.envoy.counters(), got.counters()
        differing = {name: (expected[name], got[name]) for name in expected
                     if expected[name] != got[name]}
        self.assertEqual(differing, {})

    def test_sameCountersSpliced(self):
        """
        Envoy 1.40: the host's FIN after the client's counts
        C{upstream_cx_destroy_remote}, the client's FIN after the host's
        C{upstream_cx_destroy_local}, both C{_with_active_rq}.
        """
        self.assertSameCounters(self.spliced)

    def test_sameCountersUnspliced(self):
        self.assertSameCounters(self.unspliced)

    def test_noTraceback(self):
        for run in (self.spliced, self.unspliced):
            out, err = run.output
            self.assertNotIn("Traceback", out + err)

