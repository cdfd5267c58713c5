"""
C{dynamic_resources} from files, built with a fake clock: what is refused
with its path, what Envoy's serve mode refuses, and an LDS/CDS update read
by the stat poll (the watcher where there is no inotify).
"""

import json
import os
import tempfile

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.config.errors import ConfigError
from txenvoy.config.loader import loadBootstrap
from txenvoy.server.server import Server
from txenvoy.xds.path_subscription import POLL_INTERVAL

_NODE = {"id": "n", "cluster": "c"}


def _cluster(name, port):
    return {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            "name": name, "type": "STATIC",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {
                    "address": "127.0.0.1", "port_value": port}}}}]}]}}


def _write(path, version, resources):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"version_info": version, "resources": resources}, f)
    os.rename(tmp, path)


class RefusedSourcesTests(SynchronousTestCase):

    def build(self, dynamic, validateOnly=True, options=None):
        config = json.dumps({"node": _NODE, "dynamic_resources": dynamic})
        return Server(Clock(), loadBootstrap(configYaml=config), options,
                      validateOnly=validateOnly)

    def test_adsUnknownClusterWithPath(self):
        """Envoy's C{Unknown gRPC client cluster}, with the field path."""
        error = self.assertRaises(ConfigError, self.build, {"ads_config": {
            "api_type": "GRPC", "transport_api_version": "V3",
            "grpc_services": [{"envoy_grpc": {"cluster_name": "x"}}]}})
        self.assertIn("dynamic_resources.ads_config: Unknown gRPC client cluster 'x'",
                      error.message)

    def test_apiConfigSourceUnknownClusterWithPath(self):
        error = self.assertRaises(ConfigError, self.build, {"cds_config": {
            "api_config_source": {"api_type": "REST", "cluster_names": ["x"],
                                  "refresh_delay": "1s"}}})
        self.assertIn("dynamic_resources.cds_config.api_config_source: Unknown REST cluster 'x'",
                      error.message)

    def test_missingFileRefusedWhenServing(self):
        """
        Envoy's validate mode passes a path that does not exist; serve mode
        fails with C{paths must refer to an existing path in the system}.
        """
        dynamic = {"lds_config": {"path_config_source": {"path": "/nonexistent/lds.yaml"}}}
        self.build(dynamic)
        error = self.assertRaises(ConfigError, self.build, dynamic, validateOnly=False)
        self.assertIn("paths must refer to an existing path in the system: "
                      "'/nonexistent/lds.yaml' does not exist", error.message)


class PollTests(SynchronousTestCase):

    def test_cdsUpdateByPoll(self):
        """
        Without inotify the file is polled: a changed file is applied, a
        broken one counted as C{update_failure}, an invalid one as
        C{update_rejected}, each keeping what was there.
        """
        d = tempfile.mkdtemp()
        path = os.path.join(d, "cds.json")
        _write(path, "1", [_cluster("a", 1)])
        clock = Clock()
        config = json.dumps({"node": _NODE, "dynamic_resources": {
            "cds_config": {"path_config_source": {"path": path}}}})
        server = Server(clock, loadBootstrap(configYaml=config))
        cm = server.clusterManager
        server.xds.startService()
        self.addCleanup(server.xds.stopService)
        self.assertEqual(sorted(cm.clusters), ["a"])

        def stats():
            return {k[len("cluster_manager."):]: v.value
                    for k, v in server.mainStats.counters.items()
                    if k.startswith("cluster_manager.")}

        _write(path, "2", [_cluster("a", 1), _cluster("b", 2)])
        os.utime(path, ns=(1, 1))
        clock.advance(POLL_INTERVAL)
        self.assertEqual(sorted(cm.clusters), ["a", "b"])
        with open(path, "w") as f:
            f.write("{broken")
        clock.advance(POLL_INTERVAL)
        _write(path, "3", [_cluster("a", 1), _cluster("a", 3)])
        os.utime(path, ns=(2, 2))
        clock.advance(POLL_INTERVAL)
        _write(path, "4", [_cluster("b", 5)])
        os.utime(path, ns=(3, 3))
        clock.advance(POLL_INTERVAL)
        self.assertEqual(sorted(cm.clusters), ["b"])
        self.assertEqual(cm.clusters["b"].hosts[0].address, ("127.0.0.1", 5))
        s = stats()
        self.assertEqual(
            (s["cds.update_attempt"], s["cds.update_success"], s["cds.update_failure"],
             s["cds.update_rejected"], s["cluster_added"], s["cluster_modified"],
             s["cluster_removed"]),
            (5, 3, 1, 1, 2, 1, 1))


class StartRaceTests(SynchronousTestCase):

    def test_fileMovedBeforeWatchIsRead(self):
        """
        A file moved into place after the first read but before the watch
        began (the listeners already serve by then) is read when the watch
        begins, not missed until the next move.
        """
        d = tempfile.mkdtemp()
        path = os.path.join(d, "cds.json")
        _write(path, "1", [_cluster("a", 1)])
        config = json.dumps({"node": _NODE, "dynamic_resources": {
            "cds_config": {"path_config_source": {"path": path}}}})
        server = Server(Clock(), loadBootstrap(configYaml=config))
        _write(path, "2", [_cluster("b", 2)])
        server.xds.startService()
        self.addCleanup(server.xds.stopService)
        self.assertEqual(sorted(server.clusterManager.clusters), ["b"])
