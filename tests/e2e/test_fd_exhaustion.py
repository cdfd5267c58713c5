"""
File descriptors exhausted, end to end: a real C{twistd -n envoy} whose
C{RLIMIT_NOFILE} is lowered while it runs, connections opened until
accept(2) fails with C{EMFILE}.

The connections it cannot take are closed at once and counted in the
listener's C{downstream_global_cx_overflow}; the log says so at a bounded
rate; once connections are released, the admin and the listener answer
again.
"""

import os
import resource
import socket
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import Envoy, Upstream, freePort, statsWhen
from tests.e2e.test_overload import GET, isClosed, originHandler, proxyConfig, readResponse


ROOM = 8
CLIENTS = 40


class DescriptorExhaustionTests(SynchronousTestCase):

    def test_emfileCountedLoggedAndSurvived(self):
        origin = Upstream(originHandler)
        self.addCleanup(origin.stop)
        admin, port = freePort(), freePort()
        proxy = Envoy(proxyConfig(admin, port, origin.port), adminPort=admin,
                      args=("--concurrency", "1"))
        self.addCleanup(proxy.stop)
        proxy.waitReady()
        prefix = "listener.127.0.0.1_%d." % (port,)
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(GET)
            self.assertEqual(readResponse(s).split(b"\r\n")[0], b"HTTP/1.1 200 OK")
        time.sleep(0.2)

        pid = proxy.proc.pid
        inUse = len(os.listdir("/proc/%d/fd" % (pid,)))
        _, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (inUse + ROOM, hard))
        clients = []
        try:
            for _ in range(CLIENTS):
                clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            # The proxy accepts what it can and drops the rest, however
            # late a loaded machine lets it: count closes until none came
            # for a second.
            closed = set()
            deadline = time.time() + 20
            lastClose = time.time()
            while time.time() < deadline and (not closed or time.time() - lastClose < 1.0):
                for i, c in enumerate(clients):
                    if i not in closed and isClosed(c, 0.01):
                        closed.add(i)
                        lastClose = time.time()
            dropped = len(closed)
        finally:
            for c in clients:
                c.close()
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (hard, hard))

        stats = statsWhen(admin, lambda stats: stats.get(prefix + "downstream_global_cx_overflow", 0)
                          + stats.get(prefix + "downstream_cx_total", 0) - 1 >= CLIENTS)
        overflow = stats[prefix + "downstream_global_cx_overflow"]
        accepted = stats[prefix + "downstream_cx_total"] - 1
        self.assertGreater(dropped, CLIENTS // 2)
        self.assertEqual(overflow, dropped)
        self.assertEqual(overflow + accepted, CLIENTS)
        self.assertEqual(proxy.admin("/ready"), (200, "LIVE\n"))
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(GET)
            self.assertEqual(readResponse(s).split(b"\r\n")[0], b"HTTP/1.1 200 OK")

        err = proxy.output()[1]
        lines = [line for line in err.splitlines() if "cannot accept connections" in line]
        self.assertEqual(len(lines), 1, err[-3000:])
        self.assertIn("[warning][conn_handler] listener 'l1': cannot accept connections: "
                      "Too many open files (EMFILE); ", lines[0])
