"""
End-to-end: the guard dog sees a worker blocked by a filter that sleeps on
purpose, counts misses, and past kill_timeout aborts the process (Envoy
exits 134: SIGABRT).

The blocking filter is a third-party extension: a C{twisted.plugin} in a
temporary folder, configured through Envoy's C{TypedStruct}, which is also
the path for any filter users write in Python.
"""

import os
import socket
import tempfile
import textwrap
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import Envoy, freePort, statsWhen

PLUGIN = textwrap.dedent('''
    import time

    from twisted.internet.protocol import Protocol
    from zope.interface import implementer

    from txenvoy.config.registry import Category, FunctionFactory
    from txenvoy.interfaces import INetworkFilterFactory


    class Blocker(Protocol):
        def __init__(self, seconds):
            self.seconds = seconds

        def dataReceived(self, data):
            time.sleep(self.seconds)  # blocks the worker's reactor on purpose
            self.transport.write(data)


    @implementer(INetworkFilterFactory)
    class BlockerFactory:
        terminal = True

        def __init__(self, seconds):
            self.seconds = seconds

        def buildFilter(self, connection, nextProtocol):
            return Blocker(self.seconds)


    blocker = FunctionFactory(
        Category.NETWORK_FILTER, ["txenvoy.test.Blocker"], ["test.blocker"],
        lambda value, context: BlockerFactory(float(value["seconds"])))
''')


def blockerConfig(adminPort, port, seconds, watchdog):
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                 "port_value": adminPort}}},
        # The main thread's miss_timeout is Envoy's 0.2 s by default, which
        # a loaded machine's scheduling alone can exceed: only the worker's
        # block may count here.
        "watchdogs": {"worker_watchdog": watchdog,
                      "main_thread_watchdog": {"miss_timeout": "60s"}},
        "static_resources": {"listeners": [{
            "name": "blocker",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{
                "name": "test.blocker",
                "typed_config": {
                    "@type": "type.googleapis.com/xds.type.v3.TypedStruct",
                    "type_url": "type.googleapis.com/txenvoy.test.Blocker",
                    "value": {"seconds": seconds},
                },
            }]}],
        }]},
    }


class WatchdogTests(SynchronousTestCase):

    def setUp(self):
        self.pluginRoot = tempfile.mkdtemp(prefix="txenvoy-plugin-")
        os.makedirs(os.path.join(self.pluginRoot, "twisted", "plugins"))
        with open(os.path.join(self.pluginRoot, "twisted", "plugins", "txenvoy_test_blocker.py"),
                  "w") as f:
            f.write(PLUGIN)
        self.oldPath = os.environ.get("PYTHONPATH", "")
        os.environ["PYTHONPATH"] = self.pluginRoot + os.pathsep + self.oldPath
        self.addCleanup(os.environ.__setitem__, "PYTHONPATH", self.oldPath)

    def test_blockedWorkerCountsMisses(self):
        """
        Envoy: a 0.5 s block on worker_0 with miss_timeout 0.2s gives
        workers.watchdog_miss and server.worker_0.watchdog_miss.
        """
        adminPort, port = freePort(), freePort()
        envoy = Envoy(blockerConfig(adminPort, port, 0.6, {"miss_timeout": "0.2s"}),
                      args=("--concurrency", "1"), adminPort=adminPort)
        self.addCleanup(envoy.stop)
        envoy.waitReady()
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"x")
        self.assertEqual(s.recv(1), b"x")
        s.close()
        stats = statsWhen(adminPort, lambda stats: stats.get("workers.watchdog_miss", 0) >= 1
                          and stats.get("server.worker_0.watchdog_miss", 0) >= 1)
        self.assertGreaterEqual(stats["workers.watchdog_miss"], 1)
        self.assertGreaterEqual(stats["server.worker_0.watchdog_miss"], 1)
        self.assertEqual(stats["main_thread.watchdog_miss"], 0)

    def test_killTimeoutAborts(self):
        """Past kill_timeout the process dumps its threads and aborts (134)."""
        adminPort, port = freePort(), freePort()
        envoy = Envoy(blockerConfig(adminPort, port, 5, {"kill_timeout": "1s"}),
                      args=("--concurrency", "1"), adminPort=adminPort)
        self.addCleanup(envoy.stop)
        envoy.waitReady()
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.addCleanup(s.close)
        s.sendall(b"x")
        rc = envoy.proc.wait(15)
        self.assertIn(rc, (-6, 134))
        self.assertIn("Thread", envoy.output()[1])
