"""Tests for L{txenvoy.server.listener_manager}."""

import socket

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from envoy.config.listener.v3 import listener_pb2
from txenvoy.config.context import FactoryContext
from txenvoy.config.loader import parseDict
from txenvoy.config.registry import loadPlugins
from txenvoy.server.listener_manager import ListenerManager
from txenvoy.server.worker import BindError
from txenvoy.stats.store import StatsStore


def _listener(name, port=0):
    return parseDict({
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{"name": "echo", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.echo.v3.Echo"}}]}],
    }, listener_pb2.Listener())


class _Server:
    def __init__(self):
        self.stats = StatsStore()
        self.mainStats = self.stats.shard("main_thread")


class _Worker:
    def __init__(self, name, ok=True):
        self.name = name
        self.ok = ok
        self.added = []
        self.stopped = []

    def addListener(self, config, sock, completion):
        self.added.append(config.name)
        sock.close()
        completion(self.ok)

    def stopListener(self, name):
        self.stopped.append(name)


class ListenerManagerTests(SynchronousTestCase):

    def setUp(self):
        loadPlugins()
        self.server = _Server()
        self.context = FactoryContext(Clock(), self.server.stats)

    def manager(self, listeners, workerCount=1):
        lm = ListenerManager(self.server, listeners, self.context, workerCount=workerCount)
        self.addCleanup(lm.closeSockets)
        return lm

    def counter(self, name):
        return self.server.stats.counterValue("listener_manager." + name)

    def test_duplicateNameSkipped(self):
        """Envoy skips a second static listener with a name already used."""
        lm = self.manager([_listener("a"), _listener("a"), _listener("b")])
        self.assertEqual([c.name for c in lm.listeners], ["a", "b"])

    def test_privilegedStartBinds(self):
        """
        The service binds in C{privilegedStartService}: port 0 becomes the
        kernel's choice and no other socket can take the port; stopped,
        it gives the port back.
        """
        lm = self.manager([_listener("a")])
        lm.privilegedStartService()
        port = lm.listeners[0].address[1]
        self.assertNotEqual(port, 0)
        self.assertEqual(self.counter("listener_added"), 1)
        other = socket.socket()
        self.addCleanup(other.close)
        self.assertRaises(OSError, other.bind, ("127.0.0.1", port))
        lm.startService()
        lm.stopService()
        again = socket.socket()
        self.addCleanup(again.close)
        again.bind(("127.0.0.1", port))

    def test_listensWhenWorkersStart(self):
        """
        As Envoy's (C{doFinalPreWorkerInit}), a listener's port refuses
        connections until the workers start, once the server initialized;
        then it accepts them.
        """
        kept = []

        class Keeping(_Worker):
            def addListener(self, config, sock, completion):
                kept.append(sock)
                completion(True)

        lm = self.manager([_listener("a")])
        lm.privilegedStartService()
        port = lm.listeners[0].address[1]
        early = socket.socket()
        self.addCleanup(early.close)
        self.assertRaises(ConnectionRefusedError, early.connect, ("127.0.0.1", port))
        lm.startWorkers([Keeping("worker_0")])
        for sock in kept:
            self.addCleanup(sock.close)
        socket.create_connection(("127.0.0.1", port)).close()

    def test_portInUse(self):
        """A port in use is a BindError naming the listener and the address."""
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        lm = self.manager([_listener("busy", port)])
        e = self.assertRaises(BindError, lm.privilegedStartService)
        self.assertIn("listener 'busy' failed to bind or apply socket options: cannot bind "
                      "'127.0.0.1:%d'" % (port,), str(e))

    def test_startWorkersCountsResults(self):
        """
        Every listener goes to every worker; the main thread counts
        C{listener_create_success} / C{listener_create_failure}.
        """
        lm = self.manager([_listener("a"), _listener("b")], workerCount=2)
        lm.startService()
        workers = [_Worker("worker_0"), _Worker("worker_1", ok=False)]
        lm.startWorkers(workers)
        self.assertEqual([w.added for w in workers], [["a", "b"], ["a", "b"]])
        self.assertEqual((self.counter("listener_create_success"),
                          self.counter("listener_create_failure")), (2, 2))
        self.assertEqual(self.server.stats.gaugeValue("listener_manager.total_listeners_active"),
                         2)
        self.assertEqual(self.server.stats.gaugeValue("listener_manager.workers_started"), 1)

    def test_stopListenersInboundOnly(self):
        """C{/drain_listeners?inboundonly}: OUTBOUND listeners keep accepting."""
        outbound = _listener("out")
        outbound.traffic_direction = 2
        lm = self.manager([_listener("in"), outbound])
        worker = _Worker("worker_0")
        lm.stopListeners([worker], inboundOnly=True)
        self.assertEqual(worker.stopped, ["in"])
        self.assertTrue(lm.stopped)
        self.assertEqual(self.counter("listener_stopped"), 1)


class _WorkerProcesses:
    """Records the listening sockets the main process shares with its worker processes."""

    def __init__(self):
        self.started = []
        self.added = []
        self.removed = []

    def startWorkers(self, shares):
        self.started = [address for address, _ in shares]

    def addListenerSockets(self, address, socks):
        self.added.append((address, len(socks)))

    def removeListenerSockets(self, address):
        self.removed.append(address)


class WorkerProcessUpdateTests(SynchronousTestCase):
    """LDS in the main process of worker processes (each applies the update itself)."""

    def setUp(self):
        loadPlugins()
        self.server = _Server()
        self.server.reactor = self.clock = Clock()
        self.server.workerProcesses = self.processes = _WorkerProcesses()
        self.context = FactoryContext(self.clock, self.server.stats)
        self.lm = ListenerManager(self.server, [_listener("static")], self.context,
                                  workerCount=4)
        self.addCleanup(self.lm.closeSockets)
        self.lm.privilegedStartService()
        self.lm.startWorkers([])

    def gauge(self, name):
        return self.server.stats.gaugeValue("listener_manager." + name)

    def test_addedListenerSocketsShared(self):
        """
        An added listener is bound here, one socket per worker thread of
        every process, passed on before the update reaches them, and
        counted active; removed, its sockets close here, no new worker
        process gets them, and it counts as draining for the drain time.
        """
        from txenvoy.network.listener import ListenerConfig

        self.assertEqual(self.processes.started, ["tcp://127.0.0.1:0"])
        added = ListenerConfig(_listener("added"), self.context, "resources[0]")
        self.lm.applyUpdate([added], [], [], 1.0)
        self.assertEqual(self.processes.added, [("tcp://127.0.0.1:0", 4)])
        port = added.address[1]
        socket.create_connection(("127.0.0.1", port)).close()
        self.assertEqual((self.gauge("total_listeners_active"),
                          self.server.stats.counterValue("listener_manager.listener_added")),
                         (2, 2))
        self.lm.applyUpdate([], [], ["added"], 1.0)
        self.assertEqual(self.processes.removed, ["tcp://127.0.0.1:0"])
        self.assertRaises(OSError, socket.create_connection, ("127.0.0.1", port))
        self.assertEqual((self.gauge("total_listeners_active"),
                          self.gauge("total_listeners_draining")), (1, 1))
        self.clock.advance(1.0)
        self.assertEqual(self.gauge("total_listeners_draining"), 0)
