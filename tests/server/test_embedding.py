"""
Embedding: a txenvoy server built from a config dict inside another
Twisted application, on that application's reactor, with no twistd.
"""

import gc

from twisted.application.service import Application, IService
from twisted.internet import defer, endpoints, protocol, reactor
from twisted.trial.unittest import TestCase

from tests.e2e.harness import freePort
from txenvoy.server.server import Server


class _Collect(protocol.Protocol):
    def __init__(self):
        self.data = b""
        self.done = defer.Deferred()

    def dataReceived(self, data):
        self.data += data
        if self.data.endswith(b"\n"):
            self.transport.loseConnection()

    def connectionLost(self, reason):
        self.done.callback(self.data)


class EmbeddingTests(TestCase):

    @defer.inlineCallbacks
    def test_echoOnTheApplicationsReactor(self):
        """
        C{Server.fromConfig(reactor, configDict=..., concurrency=0)} is an
        IService of an Application; its listeners run on the given reactor.
        """
        port = freePort()
        config = {"static_resources": {"listeners": [{
            "name": "echo",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.echo",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.echo.v3.Echo"},
            }]}],
        }]}}
        application = Application("embedder")
        server = Server.fromConfig(reactor, configDict=config, concurrency=0)
        server.setServiceParent(application)
        service = IService(application)
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        yield server.initialized
        proto = _Collect()
        yield endpoints.connectProtocol(
            endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port), proto)
        proto.transport.write(b"ping\n")
        data = yield proto.done
        self.assertEqual(data, b"ping\n")
        self.assertEqual(server.stats.counterValue(
            "listener.127.0.0.1_%d.downstream_cx_total" % (port,)), 1)


class EmbeddedStopTests(TestCase):

    @defer.inlineCallbacks
    def test_stopServiceDrainsThenStops(self):
        """
        A plain C{startService()} on the application's reactor;
        C{stopService()} waits for the open connection (the SIGTERM drain),
        which still gets served, and stops as soon as the peer closes it.
        """
        port = freePort()
        server = Server.fromConfig(reactor, configDict={"static_resources": {"listeners": [{
            "name": "echo",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.echo",
                "typed_config": {"@type": "type.googleapis.com/"
                                          "envoy.extensions.filters.network.echo.v3.Echo"},
            }]}],
        }]}}, concurrency=0, shutdownDrainTimeS=10)
        server.startService()
        yield server.initialized
        client = _Collect()
        yield endpoints.connectProtocol(
            endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        start = reactor.seconds()
        stopped = server.stopService()
        self.assertEqual(server.state(), "DRAINING")
        client.transport.write(b"still served while draining\n")
        data = yield client.done
        self.assertEqual(data, b"still served while draining\n")
        yield stopped
        self.assertLess(reactor.seconds() - start, 5)


class EmbeddedGarbageFreezeTests(TestCase):

    def _config(self):
        return {"admin": {"address": {"socket_address": {
            "address": "127.0.0.1", "port_value": freePort()}}}}

    @defer.inlineCallbacks
    def test_freezeOnceLiveAndGiveBackOnStop(self):
        """
        The server freezes the long-lived heap before its workers start,
        and schedules another freeze once live; the embedding program gets
        its heap back unfrozen when it stops.
        """
        server = Server.fromConfig(reactor, configDict=self._config(), concurrency=0)
        server.privilegedStartService()
        server.startService()
        yield server.initialized
        freezer = server.garbageFreezer
        self.assertEqual(freezer.freezes, 1)
        self.assertGreater(gc.get_freeze_count(), 0)
        freezer.freezeNow()
        self.assertEqual(freezer.freezes, 2)
        yield server.stopService()
        self.assertEqual(gc.get_freeze_count(), 0)

    def test_optOut(self):
        """C{freezeGarbage=False} leaves the collector alone."""
        server = Server.fromConfig(reactor, configDict=self._config(), concurrency=0,
                                   freezeGarbage=False)
        self.assertIsNone(server.garbageFreezer)
