"""
End-to-end: tcp_proxy's splice fast path and its ordinary path behave the
same through a real C{twistd -n envoy} process. Every test runs twice, with
C{TXENVOY_SPLICE=1} and C{TXENVOY_SPLICE=0}, and checks the same exact
results; the fast-path runs also check that pipes were in use.
"""

import os
import socket
import struct
import tempfile
import threading
import time

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.e2e.harness import Envoy, Upstream, echoHandler, freePort, recvAll
from tests.e2e.test_l4 import l4Config, staticCluster, tcpProxyListener
from txenvoy.network import splice


def pipeCount(pid):
    """How many pipe ends process C{pid} holds open."""
    n = 0
    base = "/proc/%d/fd" % (pid,)
    for name in os.listdir(base):
        try:
            if os.readlink(os.path.join(base, name)).startswith("pipe:"):
                n += 1
        except OSError:
            pass
    return n


def rssKiB(pid):
    with open("/proc/%d/status" % (pid,)) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def kernelBufferBound():
    """
    The most a path client -> proxy -> upstream that does not read can
    hold in socket buffers: the client's send buffer, the proxy's receive
    and send buffers (all autotuned up to the sysctl maxima) and the
    upstream's initial receive buffer.
    """
    def sysctl(name):
        with open("/proc/sys/net/ipv4/" + name) as f:
            return [int(x) for x in f.read().split()]
    rmem, wmem = sysctl("tcp_rmem"), sysctl("tcp_wmem")
    return 2 * wmem[2] + rmem[2] + rmem[1]


def waitFor(predicate, timeout=10.0, message="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("%s not met in %ss" % (message, timeout))


class _SpliceE2EMixin:
    """The tests; subclasses say whether the fast path is on."""

    splice = None
    accessLogFormat = "rx=%BYTES_RECEIVED% tx=%BYTES_SENT%\n"

    def startProxy(self, handler, listenerFilters=None):
        """An upstream running C{handler} and txenvoy in front of it."""
        if self.splice and not splice.AVAILABLE:
            raise SkipTest("os.splice is not available here")
        self.upstream = Upstream(handler)
        self.addCleanup(self.upstream.stop)
        self.port = freePort()
        self.adminPort = freePort()
        self.accessLog = os.path.join(tempfile.mkdtemp(prefix="txenvoy-splice-"), "access.log")
        listener = tcpProxyListener("p", self.port, "u", access_log=[{
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3."
                         "FileAccessLog",
                "path": self.accessLog,
                "log_format": {"text_format_source": {"inline_string": self.accessLogFormat}},
            }}])
        if listenerFilters:
            listener["listener_filters"] = listenerFilters
        config = l4Config(self.adminPort, [listener], [staticCluster("u", [self.upstream.port])])
        saved = os.environ.get("TXENVOY_SPLICE")
        os.environ["TXENVOY_SPLICE"] = "1" if self.splice else "0"
        try:
            envoy = Envoy(config, args=("--concurrency", "1", "--file-flush-interval-msec", "50"),
                          adminPort=self.adminPort)
        finally:
            if saved is None:
                del os.environ["TXENVOY_SPLICE"]
            else:
                os.environ["TXENVOY_SPLICE"] = saved
        self.addCleanup(envoy.stop)
        envoy.waitReady()
        self.envoy = envoy
        self.basePipes = pipeCount(envoy.proc.pid)
        return envoy

    def connect(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        self.addCleanup(s.close)
        return s

    def assertPathUsed(self):
        """While a connection has moved bytes, pipes exist only on the fast path."""
        extra = pipeCount(self.envoy.proc.pid) - self.basePipes
        if self.splice:
            self.assertGreaterEqual(extra, 4)
        else:
            self.assertEqual(extra, 0)

    def accessLogLines(self, n, timeout=10.0):
        """Wait for C{n} access log lines and return them."""
        lines = []

        def ready():
            lines[:] = []
            if os.path.exists(self.accessLog):
                with open(self.accessLog) as f:
                    lines.extend(line.strip() for line in f if line.strip())
            return len(lines) >= n
        waitFor(ready, timeout, "%d access log lines" % (n,))
        return lines

    def waitClosed(self):
        """Both sides of every proxied connection are gone."""
        waitFor(lambda: self.envoy.stats().get("cluster.u.upstream_cx_active") == 0,
                message="upstream_cx_active == 0")

    # --- the tests ---------------------------------------------------------

    def test_fiveMiBRoundTrip(self):
        """5 MiB through tcp_proxy to an echo upstream come back intact."""
        self.startProxy(echoHandler)
        payload = os.urandom(5 * 1024 * 1024)
        s = self.connect()
        s.sendall(b"ping")
        self.assertEqual(s.recv(4), b"ping")
        self.assertPathUsed()
        received = []
        reader = threading.Thread(target=lambda: received.append(recvAll(s)))
        reader.start()
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        reader.join(60)
        self.assertEqual(len(received[0]), len(payload))
        self.assertTrue(received[0] == payload)
        total = len(payload) + 4
        self.assertEqual(self.accessLogLines(1), ["rx=%d tx=%d" % (total, total)])
        self.waitClosed()

    def test_clientFinThenUpstreamAnswers(self):
        """
        The client half-closes; the upstream reads to EOF, then answers and
        closes: the answer reaches the client, then EOF (Envoy's half-close
        with both directions carried).
        """
        got = []

        def handler(conn):
            data = recvAll(conn)
            got.append(data)
            conn.sendall(b"answer:" + data)
        self.startProxy(handler)
        s = self.connect()
        s.sendall(b"question")
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(recvAll(s, 10), b"answer:question")
        self.assertEqual(got, [b"question"])
        self.assertEqual(self.accessLogLines(1), ["rx=8 tx=15"])
        self.waitClosed()

    def test_upstreamFinFirst(self):
        """
        The upstream sends a banner and half-closes first: the client sees
        the banner and EOF, and can still send; its bytes and its FIN reach
        the upstream.
        """
        got = []
        done = threading.Event()

        def handler(conn):
            conn.sendall(b"banner")
            conn.shutdown(socket.SHUT_WR)
            got.append(recvAll(conn))
            done.set()
        self.startProxy(handler)
        s = self.connect()
        self.assertEqual(recvAll(s, 10), b"banner")
        late = b"late-" * 20000
        s.sendall(late)
        s.shutdown(socket.SHUT_WR)
        self.assertTrue(done.wait(10))
        self.assertEqual(got, [late])
        self.assertEqual(self.accessLogLines(1), ["rx=%d tx=6" % (len(late),)])
        self.waitClosed()

    def test_backPressure(self):
        """
        An upstream that does not read: the client cannot push more than a
        bounded amount and the proxy's memory stays put, then once the
        upstream reads, everything arrives.
        """
        go = threading.Event()
        got = []

        def slowReader(conn):
            go.wait(30)
            got.append(recvAll(conn))
        self.startProxy(slowReader)
        self.addCleanup(go.set)
        before = rssKiB(self.envoy.proc.pid)
        s = self.connect()
        s.setblocking(False)
        chunk = b"x" * 65536
        sent = 0
        stalled = 0
        deadline = time.time() + 10
        while time.time() < deadline and sent < 64 * 1024 * 1024:
            try:
                sent += s.send(chunk)
                stalled = 0
            except BlockingIOError:
                stalled += 1
                if stalled > 50:
                    break
                time.sleep(0.02)
        # The sender stalled, having pushed no more than the kernel's
        # socket buffers along the way can hold plus the proxy's own
        # (its pipe, or its buffer limit): on loopback the receive buffers
        # autotune up to tcp_rmem's maximum, so that is the bound, not a
        # constant.
        self.assertGreater(stalled, 50)
        self.assertLess(sent, kernelBufferBound() + (1 << 20))
        self.assertLess(rssKiB(self.envoy.proc.pid) - before, 16 * 1024)
        self.assertPathUsed()
        stats = self.envoy.stats()
        self.assertGreaterEqual(stats["tcp.p.downstream_flow_control_paused_reading_total"], 1)
        go.set()
        s.setblocking(True)
        s.shutdown(socket.SHUT_WR)
        waitFor(lambda: got, 30, "upstream read everything")
        self.assertEqual(len(got[0]), sent)
        self.assertEqual(self.accessLogLines(1), ["rx=%d tx=0" % (sent,)])

    def test_byteStats(self):
        """
        Byte counters (tcp.<p>.downstream_cx_rx/tx_bytes_total, the
        cluster's upstream_cx_rx/tx_bytes_total) and the access log's byte
        counts are exact on both paths.
        """
        def handler(conn):
            recvAll(conn)
            conn.sendall(b"r" * 300000)
        self.startProxy(handler)
        for _ in range(3):
            s = self.connect()
            s.sendall(b"q" * 200000)
            s.shutdown(socket.SHUT_WR)
            self.assertEqual(len(recvAll(s, 10)), 300000)
            s.close()
        self.assertEqual(self.accessLogLines(3), ["rx=200000 tx=300000"] * 3)
        self.waitClosed()
        stats = self.envoy.stats()
        self.assertEqual(stats["tcp.p.downstream_cx_rx_bytes_total"], 600000)
        self.assertEqual(stats["tcp.p.downstream_cx_tx_bytes_total"], 900000)
        self.assertEqual(stats["cluster.u.upstream_cx_tx_bytes_total"], 600000)
        self.assertEqual(stats["cluster.u.upstream_cx_rx_bytes_total"], 900000)
        self.assertEqual(stats["tcp.p.downstream_cx_total"], 3)
        self.assertEqual(stats["cluster.u.upstream_cx_destroy"], 3)

    def test_readAheadBytesGoFirst(self):
        """
        Bytes a listener filter read before the upstream connected (here
        tls_inspector looking at plain text) are written before anything
        else, on both paths.
        """
        self.startProxy(echoHandler, listenerFilters=[{
            "name": "envoy.filters.listener.tls_inspector",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener."
                                      "tls_inspector.v3.TlsInspector"}}])
        s = self.connect()
        head = b"GET / HTTP/1.1\r\n\r\n"
        s.sendall(head)
        self.assertEqual(recvExactly(s, len(head)), head)
        self.assertPathUsed()
        body = os.urandom(1 << 20)
        reader = []
        t = threading.Thread(target=lambda: reader.append(recvAll(s)))
        t.start()
        s.sendall(body)
        s.shutdown(socket.SHUT_WR)
        t.join(30)
        self.assertTrue(reader[0] == body)
        total = len(head) + len(body)
        self.assertEqual(self.accessLogLines(1), ["rx=%d tx=%d" % (total, total)])

    def test_clientCloses(self):
        """
        The client closes while the upstream is idle: the upstream sees EOF,
        and once it closes too both connections are gone.
        """
        sawEof = threading.Event()

        def handler(conn):
            if recvAll(conn) == b"hi":
                sawEof.set()
        self.startProxy(handler)
        s = self.connect()
        s.sendall(b"hi")
        s.close()
        self.assertTrue(sawEof.wait(10))
        self.waitClosed()
        self.assertEqual(self.accessLogLines(1), ["rx=2 tx=0"])

    def test_upstreamCloses(self):
        """
        The upstream closes: the client reads EOF; when it closes too both
        connections are gone.
        """
        def handler(conn):
            conn.sendall(b"bye")
        self.startProxy(handler)
        s = self.connect()
        self.assertEqual(recvAll(s, 10), b"bye")
        s.close()
        self.waitClosed()
        self.assertEqual(self.accessLogLines(1), ["rx=0 tx=3"])

    def test_clientReset(self):
        """
        The client resets mid-stream: the proxy closes the upstream, and
        the connection is logged and accounted for.
        """
        upstreamDone = threading.Event()

        def handler(conn):
            try:
                while conn.recv(65536):
                    pass
            except OSError:
                pass
            upstreamDone.set()
        self.startProxy(handler)
        s = self.connect()
        s.sendall(b"a" * 1000)
        waitFor(lambda: self.envoy.stats().get("tcp.p.downstream_cx_rx_bytes_total") == 1000,
                message="bytes counted")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        self.assertTrue(upstreamDone.wait(10))
        self.waitClosed()
        self.assertEqual(self.accessLogLines(1), ["rx=1000 tx=0"])

    def test_upstreamReset(self):
        """
        The upstream resets mid-stream: the client's connection is closed
        and the connection is logged and accounted for.
        """
        def handler(conn):
            conn.recv(10)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.startProxy(handler)
        s = self.connect()
        s.sendall(b"0123456789")
        s.settimeout(10)
        try:
            rest = recvAll(s, 10)
        except ConnectionResetError:
            rest = b""
        self.assertEqual(rest, b"")
        self.waitClosed()
        self.assertEqual(self.accessLogLines(1), ["rx=10 tx=0"])

    def test_idleConnections(self):
        """
        Connections that idle once connected (the fast path builds no pump
        for them until a socket is readable): one closed by the client
        without a byte is logged with none; one becomes active after
        idling and moves bytes both ways; one whose upstream closes while
        idle gives the client EOF.
        """
        closeThird = threading.Event()

        def handler(conn):
            if closeThird.is_set():
                return
            echoHandler(conn)
        self.startProxy(handler)

        def waitConnected(n):
            waitFor(lambda: self.envoy.stats().get("cluster.u.upstream_rq_active") == n,
                    message="%d upstream sessions" % (n,))
        active = self.connect()
        waitConnected(1)
        silent = self.connect()
        waitConnected(2)
        silent.close()
        self.assertEqual(self.accessLogLines(1), ["rx=0 tx=0"])
        waitConnected(1)
        active.sendall(b"ping")
        self.assertEqual(recvExactly(active, 4), b"ping")
        self.assertPathUsed()
        closeThird.set()
        closed = self.connect()
        self.assertEqual(recvAll(closed, 10), b"")
        closed.close()
        active.shutdown(socket.SHUT_WR)
        self.assertEqual(recvAll(active, 10), b"")
        active.close()
        self.waitClosed()
        self.assertEqual(sorted(self.accessLogLines(3)), ["rx=0 tx=0", "rx=0 tx=0", "rx=4 tx=4"])


def recvExactly(sock, n, timeout=10.0):
    """Read exactly C{n} bytes."""
    sock.settimeout(timeout)
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


class SpliceFastPathTests(_SpliceE2EMixin, SynchronousTestCase):
    """The tests with the splice fast path on."""

    splice = True


class SpliceSlowPathTests(_SpliceE2EMixin, SynchronousTestCase):
    """The same tests on the ordinary path."""

    splice = False
