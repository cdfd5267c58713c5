"""
End-to-end: SIGTERM drains. txenvoy stops accepting, lets a transfer in
progress finish (up to --drain-time-s), then exits 0. Envoy itself drops
in-flight work on SIGTERM; this is txenvoy going further.
"""

import signal
import socket
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import Envoy, Upstream, freePort, recvAll
from tests.e2e.test_l4 import l4Config, staticCluster, tcpProxyListener


def slowSender(conn):
    """Send 20 pieces of 64 KiB over about two seconds, then close."""
    for _ in range(20):
        conn.sendall(b"y" * 65536)
        time.sleep(0.1)


class DrainTests(SynchronousTestCase):

    def test_transferInProgressCompletesOnSigterm(self):
        upstream = Upstream(slowSender)
        self.addCleanup(upstream.stop)
        port, adminPort = freePort(), freePort()
        envoy = Envoy(l4Config(adminPort, [tcpProxyListener("p", port, "u")],
                               [staticCluster("u", [upstream.port])]),
                      args=("--concurrency", "1", "--drain-time-s", "20"), adminPort=adminPort)
        self.addCleanup(envoy.stop)
        envoy.waitReady()
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        first = s.recv(65536)
        self.assertTrue(first)
        envoy.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        # No new connections while draining.
        self.assertRaises(OSError, socket.create_connection, ("127.0.0.1", port), 2)
        rest = recvAll(s, 15)
        s.close()
        self.assertEqual(len(first) + len(rest), 20 * 65536)
        self.assertEqual(envoy.proc.wait(15), 0)

    def test_sighupIsIgnored(self):
        """Envoy eats SIGHUP (hot restart is driven from outside); so does txenvoy."""
        adminPort = freePort()
        envoy = Envoy(l4Config(adminPort, [], []), adminPort=adminPort)
        self.addCleanup(envoy.stop)
        envoy.waitReady()
        envoy.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        self.assertIsNone(envoy.proc.poll())
        self.assertEqual(envoy.admin("/ready"), (200, "LIVE\n"))
        self.assertIn("caught and eating SIGHUP", envoy.output()[1])
