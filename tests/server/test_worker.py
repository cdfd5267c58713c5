"""
Tests for L{txenvoy.server.worker}: sockets bound on the main thread,
adopted by a worker running its own reactor in a thread.
"""

import socket

from twisted.internet import defer, reactor, task, threads
from twisted.trial.unittest import SynchronousTestCase, TestCase

from txenvoy.server.server import Server
from txenvoy.server.worker import BindError, Worker, bindListenSockets, newReactor


class _Config:
    name = "l"
    backlog = 16

    def __init__(self, port=0, enableReusePort=True):
        self.address = ("127.0.0.1", port)
        self.enableReusePort = enableReusePort


class BindListenSocketsTests(SynchronousTestCase):

    def _bind(self, config, count):
        socks = bindListenSockets(config, count)
        for s in socks:
            self.addCleanup(s.close)
        return socks

    def test_onePerWorkerWithReusePort(self):
        """Envoy's default C{enable_reuse_port}: one socket per worker, one port."""
        socks = self._bind(_Config(), 3)
        self.assertEqual(len(socks), 3)
        self.assertEqual(len({s.getsockname()[1] for s in socks}), 1)
        self.assertEqual(len({s.fileno() for s in socks}), 3)

    def test_acceptedSocketsHaveNoDelay(self):
        """
        Envoy sets TCP_NODELAY on every downstream connection: the listening
        socket has it, and an accepted socket inherits it.
        """
        [listening] = self._bind(_Config(), 1)
        self.assertTrue(listening.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        listening.setblocking(True)
        client = socket.create_connection(listening.getsockname())
        self.addCleanup(client.close)
        accepted, _ = listening.accept()
        self.addCleanup(accepted.close)
        self.assertTrue(accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    def test_sharedWithoutReusePort(self):
        """Without reuse_port every worker adopts a copy of one socket."""
        socks = self._bind(_Config(enableReusePort=False), 2)
        self.assertEqual(len(socks), 2)
        self.assertEqual(socks[0].getsockname(), socks[1].getsockname())

    def test_bindError(self):
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        e = self.assertRaises(BindError, bindListenSockets,
                              _Config(port, enableReusePort=False), 1)
        self.assertIn("cannot bind '127.0.0.1:%d'" % (port,), str(e))

    def test_workerReactorIsItsOwn(self):
        """A worker never runs on the global reactor."""
        r = newReactor()
        self.addCleanup(r.waker.connectionLost, None)
        self.assertIsNot(r, reactor)


class WorkerThreadTests(TestCase):

    @defer.inlineCallbacks
    def test_echoOnAWorkerThread(self):
        """
        With C{--concurrency 1} the listener runs on the worker's own
        reactor thread: a client is echoed, counted on that worker's shard,
        and the thread ends when the worker stops.
        """
        server = Server.fromConfig(reactor, concurrency=1, configDict={"static_resources": {
            "listeners": [{
                "name": "echo",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": [{"name": "echo", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.echo.v3"
                             ".Echo"}}]}]}]}})
        server.startService()
        yield server.initialized
        [worker] = server.workers
        self.assertIsInstance(worker, Worker)
        port = server.listenerManager.listeners[0].address[1]

        def talk():
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"ping")
                return s.recv(4)

        self.assertEqual((yield threads.deferToThread(talk)), b"ping")
        yield server.stopService()
        self.assertFalse(worker._thread.is_alive())
        prefix = server.listenerManager.listeners[0].statPrefix
        self.assertEqual(server.stats.counterValue(prefix + "worker_0.downstream_cx_total"), 1)


class InternalListenerWorkerTests(TestCase):

    @defer.inlineCallbacks
    def test_registeredPerWorker(self):
        """
        An internal listener binds no socket: each worker registers it by
        name in its dispatcher's internal listeners (Envoy's per-thread
        registry), counted as created, and forgets it when it stops
        accepting.
        """
        server = Server.fromConfig(reactor, concurrency=0, configDict={
            "bootstrap_extensions": [{"name": "il", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3"
                         ".InternalListener"}}],
            "static_resources": {"listeners": [{
                "name": "b", "internal_listener": {},
                "filter_chains": [{"filters": [{"name": "echo", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.echo.v3"
                             ".Echo"}}]}]}]}})
        server.startService()
        yield server.initialized
        # The worker adds its listeners by a post.
        yield task.deferLater(reactor, 0.01, lambda: None)
        [worker] = server.workers
        active = worker.dispatcher.internalListeners["b"]
        self.assertIs(active.config, server.listenerManager.listeners[0])
        self.assertIsNone(active.port)
        self.assertEqual(server.stats.counterValue("listener_manager.listener_create_success"), 1)
        server.listenerManager.stopListeners(server.workers)
        yield task.deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(worker.dispatcher.internalListeners, {})
        yield server.stopService()
