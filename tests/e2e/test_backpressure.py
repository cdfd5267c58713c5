"""
End-to-end: per_connection_buffer_limit_bytes bounds what txenvoy holds
for a fast sender and a receiver that does not read.
"""

import socket
import threading
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import Envoy, Upstream, freePort
from tests.e2e.test_l4 import l4Config, staticCluster, tcpProxyListener


def rssKiB(pid):
    with open("/proc/%d/status" % (pid,)) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class BackPressureTests(SynchronousTestCase):

    def test_slowReceiverStopsTheSender(self):
        """
        An upstream that never reads: the proxy stops reading the client once
        its buffers are full, so the client cannot push 64 MiB and the
        proxy's memory stays put.
        """
        stop = threading.Event()

        def neverRead(conn):
            stop.wait(30)
        upstream = Upstream(neverRead)
        self.addCleanup(upstream.stop)
        port = freePort()
        adminPort = freePort()
        listener = tcpProxyListener("p", port, "u")
        listener["per_connection_buffer_limit_bytes"] = 32768
        envoy = Envoy(l4Config(adminPort, [listener], [staticCluster("u", [upstream.port])]),
                      args=("--concurrency", "1"), adminPort=adminPort)
        self.addCleanup(envoy.stop)
        # Cleanups run last first: the upstream lets go of its connection
        # before the proxy is stopped, so that the proxy's drain has
        # nothing to wait for.
        self.addCleanup(stop.set)
        envoy.waitReady()
        before = rssKiB(envoy.proc.pid)
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.addCleanup(s.close)
        s.setblocking(False)
        chunk = b"x" * 65536
        sent = 0
        deadline = time.time() + 5
        stalled = 0
        while time.time() < deadline and sent < 64 * 1024 * 1024:
            try:
                sent += s.send(chunk)
                stalled = 0
            except BlockingIOError:
                stalled += 1
                if stalled > 50:
                    break
                time.sleep(0.02)
        self.assertLess(sent, 16 * 1024 * 1024)
        grown = rssKiB(envoy.proc.pid) - before
        self.assertLess(grown, 16 * 1024)
        stats = envoy.stats()
        self.assertGreaterEqual(stats["tcp.p.downstream_flow_control_paused_reading_total"], 1)
