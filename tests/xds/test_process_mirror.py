"""
Tests for L{txenvoy.xds.process_mirror}: the main process's accepted
updates, carried (as JSON, as the worker process channel does) to the
subscriptions of a worker process, which applies them through the same
handlers and neither reads files nor talks to a control plane.
"""

import json
import os
import tempfile

from google.protobuf import json_format
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from envoy.config.core.v3.config_source_pb2 import ConfigSource
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401 (the Any)
    http_connection_manager_pb2,
)
from txenvoy.config.errors import ConfigError
from txenvoy.stats.store import StatsStore
from txenvoy.xds.process_mirror import (
    LDS_KEY,
    MirroredSubscription,
    UpdateMirror,
    UpdateRelay,
    decodeResources,
    encodeResources,
    mainOwnedStat,
    subscriptionKey,
)
from txenvoy.xds.resources import ENDPOINT_TYPE, ROUTE_TYPE
from txenvoy.xds.subscription_factory import SubscriptionFactory

_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3." \
       "HttpConnectionManager"


def _listener(name, body):
    return json_format.ParseDict({
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {"@type": _HCM, "stat_prefix": body, "route_config": {}}}]}]},
        Listener())


def _routesFile():
    """An RDS file of route configuration C{routes}: its path, C{ConfigSource} and a scope."""
    path = os.path.join(tempfile.mkdtemp(), "rds.yaml")
    with open(path, "w") as f:
        json.dump({"version_info": "r1", "resources": [{"@type": ROUTE_TYPE, "name": "routes"}]},
                  f)
    source = json_format.ParseDict({"path_config_source": {"path": path}}, ConfigSource())
    return path, source, StatsStore().shard("main_thread").scope("x.")


def subscriptionKeyOf(source):
    """The key of the route configuration C{routes} from C{source}."""
    return subscriptionKey(ROUTE_TYPE, "routes", source)


def _channel(message):
    """A message as the worker process receives it."""
    return json.loads(json.dumps(message))


class _Handler:
    def __init__(self, reject=False):
        self.updates = []
        self.reject = reject

    def __call__(self, resources, versionInfo):
        if self.reject:
            raise ConfigError("bad")
        self.updates.append((list(resources), versionInfo))


class RelayTests(SynchronousTestCase):

    def setUp(self):
        self.sent = []
        self.relay = UpdateRelay()
        self.relay.send = lambda message: self.sent.append(_channel(message))

    def test_acceptedUpdateSentAndKept(self):
        """An update the handler accepted goes on with its version, and is kept."""
        handler = _Handler()
        listener = _listener("l", "a")
        self.relay.wrap(LDS_KEY, handler)([listener], "v1")
        self.assertEqual(handler.updates, [([listener], "v1")])
        [message] = self.sent
        self.assertEqual((message["xds_update"]["key"], message["xds_update"]["version"]),
                         (LDS_KEY, "v1"))
        self.assertEqual(decodeResources(message["xds_update"]["resources"]), [listener])
        self.assertEqual(self.relay.snapshot(), [message["xds_update"]])

    def test_rejectedUpdateNotSent(self):
        """A rejected update reaches no worker process; the last accepted one stays."""
        self.relay.wrap(LDS_KEY, _Handler())([_listener("l", "a")], "v1")
        self.assertRaises(ConfigError, self.relay.wrap(LDS_KEY, _Handler(reject=True)),
                          [_listener("l", "b")], "v2")
        self.assertEqual([m["xds_update"]["version"] for m in self.sent], ["v1"])
        self.assertEqual(self.relay.current[LDS_KEY]["version"], "v1")

    def test_typedConfigsRoundTrip(self):
        """The C{Any}s inside a resource unpack in the worker process."""
        listener = _listener("l", "typed")
        [again] = decodeResources(_channel(encodeResources([listener])))
        self.assertEqual(again, listener)
        self.assertEqual(again.filter_chains[0].filters[0].typed_config.type_url, _HCM)


class MirrorTests(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.relay = UpdateRelay()
        self.sent = []
        self.relay.send = lambda message: self.sent.append(_channel(message))

    def deliver(self, mirror):
        for message in self.sent:
            mirror.onUpdate(message["xds_update"])
        del self.sent[:]

    def test_firstUpdateAppliedWhenMade(self):
        """
        A worker process started after an update applies it as its
        subscription is made (C{refresh}), as a file is read while the
        server is built; later updates as they come, once started.
        """
        self.relay.wrap(LDS_KEY, _Handler())([_listener("l", "a")], "v1")
        mirror = UpdateMirror(self.clock, _channel(self.relay.snapshot()))
        del self.sent[:]
        handler = _Handler()
        subscription = mirror.subscribe(LDS_KEY, handler)
        self.assertIsInstance(subscription, MirroredSubscription)
        self.assertFalse(subscription.initialized.called)
        self.assertTrue(subscription.refresh())
        self.assertTrue(subscription.initialized.called)
        subscription.start()
        self.assertEqual([v for _, v in handler.updates], ["v1"])
        self.relay.wrap(LDS_KEY, _Handler())([_listener("l", "b")], "v2")
        self.deliver(mirror)
        self.assertEqual([v for _, v in handler.updates], ["v1", "v2"])
        self.assertEqual(handler.updates[-1][0], [_listener("l", "b")])
        self.assertEqual(subscription.lastVersion, "v2")
        subscription.stop()
        self.relay.wrap(LDS_KEY, _Handler())([], "v3")
        self.deliver(mirror)
        self.assertEqual(len(handler.updates), 2)

    def test_updateBeforeStartNotMissed(self):
        """An update that came between C{refresh} and C{start} is applied by C{start}."""
        mirror = UpdateMirror(self.clock)
        handler = _Handler()
        subscription = mirror.subscribe(LDS_KEY, handler)
        self.assertFalse(subscription.refresh())
        self.relay.wrap(LDS_KEY, _Handler())([_listener("l", "a")], "v1")
        self.deliver(mirror)
        self.assertEqual(handler.updates, [])
        subscription.start()
        self.assertEqual([v for _, v in handler.updates], ["v1"])
        initialized = []
        subscription.whenInitialized().addCallback(initialized.append)
        self.assertEqual(initialized, [None])

    def test_factoryKeysMatchAcrossProcesses(self):
        """
        RDS from a file: the main process's factory reads and sends it; a
        worker process's factory, given the same source and name, makes a
        subscription fed by the main process that reads no file. EDS is not
        sent (host sets travel by themselves).
        """
        path, source, scope = _routesFile()
        main = SubscriptionFactory(self.clock, relay=self.relay)
        mainHandler = _Handler()
        main.subscribe(source, "p", scope, ROUTE_TYPE, mainHandler, "routes").refresh()
        main.subscribe(source, "p", scope, ENDPOINT_TYPE, _Handler(), "routes")
        self.assertEqual(len(self.sent), 1)
        os.remove(path)
        mirror = UpdateMirror(self.clock)
        self.deliver(mirror)
        worker = SubscriptionFactory(self.clock, mirror=mirror)
        handler = _Handler()
        subscription = worker.subscribe(source, "p", scope, ROUTE_TYPE, handler, "routes")
        self.assertTrue(subscription.refresh())
        self.assertEqual(handler.updates, mainHandler.updates)

    def test_readyWithoutUpdate(self):
        """
        A main process subscription initialized without an update (its
        first rejected, or its C{initial_fetch_timeout} passed) lets what
        waits on the worker processes' copies go on, as in the main
        process; an update after it is applied as usual.
        """
        mirror = UpdateMirror(self.clock)
        handler = _Handler()
        subscription = mirror.subscribe("k", handler)
        subscription.refresh()
        subscription.start()
        self.relay.ready("k")
        self.deliver(mirror)
        self.assertTrue(subscription.initialized.called)
        self.assertEqual(handler.updates, [])
        late = UpdateMirror(self.clock, _channel(self.relay.snapshot())).subscribe("k", handler)
        late.refresh()
        self.assertTrue(late.initialized.called)
        self.relay.wrap("k", _Handler())([_listener("l", "a")], "v1")
        self.relay.ready("k")
        self.deliver(mirror)
        self.assertEqual([v for _, v in handler.updates], ["v1"])

    def test_stoppedSubscriptionForgotten(self):
        """
        Routes no listener uses any more: the main process stops their
        subscription, and a worker process that asks for them again waits
        for a new update, as the main process does, instead of serving the
        old one.
        """
        path, source, scope = _routesFile()
        main = SubscriptionFactory(self.clock, relay=self.relay)
        subscription = main.subscribe(source, "p", scope, ROUTE_TYPE, _Handler(), "routes")
        self.assertTrue(subscription.refresh())
        mirror = UpdateMirror(self.clock)
        self.deliver(mirror)
        self.assertEqual(len(mirror.current), 1)
        subscription.stop()
        self.deliver(mirror)
        self.assertEqual((self.relay.current, mirror.current), ({}, {}))
        handler = _Handler()
        again = mirror.subscribe(subscriptionKeyOf(source), handler)
        self.assertFalse(again.refresh())
        self.assertEqual(handler.updates, [])

    def test_fileReadyAtOnce(self):
        """
        A worker process's copy of a file subscription is initialized when
        made, update or not: the main process read the file first.
        """
        source = json_format.ParseDict({"path": "/nonexistent/r.yaml"}, ConfigSource())
        scope = StatsStore().shard("main_thread").scope("x.")
        worker = SubscriptionFactory(self.clock, mirror=UpdateMirror(self.clock))
        subscription = worker.subscribe(source, "p", scope, ROUTE_TYPE, _Handler(), "routes")
        self.assertFalse(subscription.refresh())
        self.assertTrue(subscription.initialized.called)

    def test_mainOwnedStats(self):
        """The subscriptions' stats are the main process's alone; traffic stats are not."""
        for name in ("listener_manager.lds.update_success", "cluster_manager.cds.version",
                     "http.ingress.rds.local_route.update_attempt", "control_plane.connected_state",
                     "listener_manager.listener_added", "cluster_manager.active_clusters",
                     "cluster.e.update_success", "cluster.e.membership_change",
                     "listener.127.0.0.1_1.server_ssl_socket_factory.ssl_context_update_by_sds"):
            self.assertTrue(mainOwnedStat(name), name)
        for name in ("http.ingress.downstream_rq_2xx", "listener_manager.listener_create_success",
                     "cluster.a.upstream_rq_total", "cluster.a.membership_total"):
            self.assertFalse(mainOwnedStat(name), name)
