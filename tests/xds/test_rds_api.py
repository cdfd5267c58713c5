"""
Tests for L{txenvoy.xds.rds_api}: RDS updates applied to, or kept from, the
connection managers that name a route configuration; a server reading one
from a file.
"""

import json
import os
import tempfile

from google.protobuf import json_format
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from envoy.config.route.v3.route_pb2 import RouteConfiguration
from txenvoy.config.errors import ConfigError
from txenvoy.config.loader import loadBootstrap
from txenvoy.http.conn_manager import ConnectionManagerConfig
from txenvoy.server.server import Server
from txenvoy.stats.store import StatsStore
from txenvoy.xds.rds_api import RdsRouteConfigSubscription

_HCM = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager"
        ".v3.HttpConnectionManager")


def _routes(name, body, regex=None):
    match = {"safe_regex": {"regex": regex}} if regex else {"prefix": "/"}
    return json_format.ParseDict({"name": name, "virtual_hosts": [{
        "name": "v", "domains": ["*"], "routes": [{
            "match": match,
            "direct_response": {"status": 200, "body": {"inline_string": body}}}]}]},
        RouteConfiguration())


class SubscriptionTests(SynchronousTestCase):

    def setUp(self):
        self.store = StatsStore()
        self.scope = self.store.shard("main_thread").scope("http.x.rds.r.")
        self.rds = RdsRouteConfigSubscription("r", self.scope)
        self.config = ConnectionManagerConfig()
        self.precompiled = []
        self.rds.attach(self.config, self.precompiled.append)

    def counter(self, name):
        return self.scope.counter(name).value

    def test_updateSwapsTable(self):
        """An update compiles the table and hands it to each connection manager."""
        self.assertIsNone(self.config.routeTable)
        self.rds.onConfigUpdate([_routes("r", "v1")], "1")
        first = self.config.routeTable
        self.assertEqual(self.precompiled, [first])
        self.rds.onConfigUpdate([_routes("r", "v2")], "2")
        self.assertIsNot(self.config.routeTable, first)
        self.assertEqual((self.rds.versionInfo, self.counter("config_reload")), ("2", 2))

    def test_sameTableNoReload(self):
        """Envoy's RDS: the same route configuration under a new version is no reload."""
        self.rds.onConfigUpdate([_routes("r", "v1")], "1")
        table = self.config.routeTable
        self.rds.onConfigUpdate([_routes("r", "v1")], "2")
        self.assertIs(self.config.routeTable, table)
        self.assertEqual((self.rds.versionInfo, self.counter("config_reload")), ("1", 1))

    def test_rejectedKeepsTable(self):
        """
        Envoy's messages for another name and for more than one resource;
        a table that does not compile is rejected too, the old one stays.
        """
        self.rds.onConfigUpdate([_routes("r", "v1")], "1")
        table = self.config.routeTable
        e = self.assertRaises(ConfigError, self.rds.onConfigUpdate, [_routes("o", "x")], "2")
        self.assertEqual(e.message, "Unexpected RDS configuration (expecting r): o")
        e = self.assertRaises(ConfigError, self.rds.onConfigUpdate,
                              [_routes("r", "x"), _routes("o", "x")], "3")
        self.assertEqual(e.message, "Unexpected RDS resource length: 2")
        self.assertRaises(ConfigError, self.rds.onConfigUpdate, [_routes("r", "x", "(")], "4")
        self.assertIs(self.config.routeTable, table)

    def test_precompileFailureRejects(self):
        """A filter's per-route config that does not compile rejects the update."""
        def refuse(table):
            raise ConfigError("no")

        # Kept: the subscription holds the connection managers it feeds weakly.
        refused = ConnectionManagerConfig()
        self.rds.attach(refused, refuse)
        self.assertRaises(ConfigError, self.rds.onConfigUpdate, [_routes("r", "v1")], "1")
        self.assertIsNone(self.config.routeTable)

    def test_emptyCounted(self):
        self.rds.onConfigUpdate([_routes("r", "v1")], "1")
        self.rds.onConfigUpdate([], "2")
        self.assertEqual(self.counter("update_empty"), 1)
        self.assertIsNotNone(self.config.routeTable)


class ServerTests(SynchronousTestCase):

    def test_fileRdsInServer(self):
        """
        A static listener's connection manager reads its routes from the
        file when the server is built; two naming the same source share it;
        C{/config_dump} shows it under C{dynamic_route_configs}.
        """
        from txenvoy.admin._dumps import configDump

        d = tempfile.mkdtemp()
        path = os.path.join(d, "rds.json")
        resource = json_format.MessageToDict(_routes("r", "v1"))
        resource["@type"] = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
        with open(path, "w") as f:
            json.dump({"version_info": "7", "resources": [resource]}, f)
        listeners = [{
            "name": "l%d" % (i,),
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
            "filter_chains": [{"filters": [{
                "name": "hcm", "typed_config": {
                    "@type": _HCM, "stat_prefix": "s%d" % (i,),
                    "rds": {"route_config_name": "r",
                            "config_source": {"path": path}},
                    "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http"
                                 ".router.v3.Router"}}]}}]}]} for i in range(2)]
        server = Server(Clock(), loadBootstrap(configYaml=json.dumps({
            "node": {"id": "n", "cluster": "c"},
            "static_resources": {"listeners": listeners}})))
        providers = server.routeConfigProviders
        [(proto, version, _)] = providers.dumpState()
        self.assertEqual((proto.name, version), ("r", "7"))
        self.assertEqual(len(providers.dumpState()), 1)
        counters = server.mainStats.counters
        self.assertEqual(counters["http.s0.rds.r.config_reload"].value, 1)
        self.assertNotIn("http.s1.rds.r.config_reload", counters)
        dump = json.loads(configDump(server.bootstrap, 0, dynamic={
            "rds": providers.dumpState()}))
        routes = dump["configs"][-2]
        self.assertEqual([(c["version_info"], c["route_config"]["name"])
                          for c in routes["dynamic_route_configs"]], [("7", "r")])


class ReleaseTests(SynchronousTestCase):
    """
    A route configuration no connection manager uses any more is
    unsubscribed, as Envoy's shared provider is destroyed with its last
    listener. (Against Envoy over ADS: L{tests.e2e.test_grpc_xds}.)
    """

    def test_lastManagerGone(self):
        from tests.xds.test_grpc_mux import ThreadlessClock
        from txenvoy.xds.rds_api import RouteConfigProviderManager

        stopped = []

        class Subscription:
            def refresh(self):
                pass

            def stop(self):
                stopped.append(True)

        class Factory:
            reactor = ThreadlessClock()

            def subscribe(self, *args):
                return Subscription()

        from envoy.extensions.filters.network.http_connection_manager.v3 import (
            http_connection_manager_pb2,
        )

        rds = http_connection_manager_pb2.Rds(route_config_name="r")
        rds.config_source.path = "/nonexistent"
        manager = RouteConfigProviderManager(Factory(), StatsStore().shard("main_thread"))
        subscription = manager.subscribe(rds, "http.x.", "rds")
        first, second = ConnectionManagerConfig(), ConnectionManagerConfig()
        subscription.attach(first, lambda table: None)
        subscription.attach(second, lambda table: None)
        del first
        self.assertEqual(stopped, [])
        del second
        self.assertEqual(stopped, [True])
        # Named again, it is a new subscription.
        self.assertIsNot(manager.subscribe(rds, "http.x.", "rds"), subscription)
