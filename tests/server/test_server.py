"""
Tests for L{txenvoy.server.server}: the server as a tree of services in
Envoy's start order.
"""

import json
import socket

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from txenvoy.config.loader import loadBootstrap
from txenvoy.server.server import Server


def _config(admin=True):
    config = {"static_resources": {"listeners": [{
        "name": "echo",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.echo",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.echo.v3.Echo"},
        }]}],
    }]}}
    if admin:
        config["admin"] = {"address": {"socket_address": {"address": "127.0.0.1",
                                                          "port_value": 0}}}
    return config


def _refused(port):
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", port))
    except ConnectionRefusedError:
        return True
    finally:
        s.close()
    return False


class ServiceTreeTests(TestCase):

    def test_startOrder(self):
        """
        Every part is a child service, in the order of Envoy's
        C{InstanceImpl::initialize} and C{RunHelper}: workers last.
        """
        server = Server.fromConfig(reactor, configDict=_config())
        self.assertEqual([s.name for s in server], [
            "access_log", "runtime", "overload_manager", "stats_flush", "uptime", "admin",
            "guard_dog", "cluster_manager", "sds", "rds", "listener_manager", "workers"])

    def test_validateBuildsNoTimersNorPorts(self):
        bootstrap = loadBootstrap(None, json.dumps(_config()))
        server = Server(reactor, bootstrap, validateOnly=True)
        self.assertEqual([s.name for s in server], [
            "access_log", "runtime", "overload_manager", "uptime", "cluster_manager", "sds",
            "rds", "listener_manager", "workers"])

    @defer.inlineCallbacks
    def test_privilegedStartBinds(self):
        """
        C{privilegedStartService} binds the listeners and the admin port
        (as C{StreamServerEndpointService} does); the server is then still
        pre-initializing and no worker runs.
        """
        server = Server.fromConfig(reactor, configDict=_config())
        server.privilegedStartService()
        self.addCleanup(server.listenerManager.closeSockets)
        self.addCleanup(server.admin.stop)
        self.assertNotEqual(server.listenerManager.listeners[0].address[1], 0)
        self.assertIsNotNone(server.admin.port)
        self.assertEqual(server.state(), "PRE_INITIALIZING")
        self.assertFalse(any(w.running for w in server.workers))
        server.startService()
        yield server.initialized
        self.assertEqual(server.state(), "LIVE")
        self.assertTrue(all(w.running for w in server.workers))
        yield server.stopService()

    @defer.inlineCallbacks
    def test_stopClosesEverything(self):
        """
        Started without the privileged step (embedded in a running
        application), the server binds in C{startService}; stopped, every
        part stops and both ports refuse connections.
        """
        server = Server.fromConfig(reactor, configDict=_config())
        server.startService()
        yield server.initialized
        listenerPort = server.listenerManager.listeners[0].address[1]
        adminPort = server.admin.port
        yield server.stopService()
        self.assertEqual([s.name for s in server if s.running], [])
        self.assertTrue(_refused(listenerPort))
        self.assertTrue(_refused(adminPort))
