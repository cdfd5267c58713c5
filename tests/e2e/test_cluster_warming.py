"""
End-to-end: a cluster added by CDS whose hosts come from EDS warms, as
Envoy 1.40's does: it stays in C{dynamic_warming_clusters}
(C{cluster_manager.warming_clusters}) until its first assignment or, with
a control plane that never answers, its C{initial_fetch_timeout}; then it
is active.
"""

import json
import os
import socket
import tempfile
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import STARTUP_TIMEOUT, adminStats, forBoth, freePort
from tests.e2e.test_file_xds import _moveInto, _proxy, _response
from tests.e2e.test_xds_resources import _bootstrap, _configDump, _staticCluster, _waitStat

_CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
_GAUGES = ("cluster_manager.warming_clusters", "cluster_manager.active_clusters")


def _edsCluster(name):
    # The observations after each update must come within the fetch
    # timeout, while the cluster warms: two seconds on a loaded machine.
    return {"@type": _CLUSTER_TYPE, "name": name, "type": "EDS", "connect_timeout": "1s",
            "eds_cluster_config": {"eds_config": {
                "api_config_source": {
                    "api_type": "GRPC", "transport_api_version": "V3",
                    "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_cluster"}}]},
                "initial_fetch_timeout": "2s", "resource_api_version": "V3"}}}


def _clusterNames(adminPort, resource):
    dump = _configDump(adminPort, "resource=" + resource)
    return sorted((c["cluster"]["name"], c.get("version_info"))
                  for c in dump.get("configs", ()))


class ClusterWarmingTests(SynchronousTestCase):

    def _sequence(self, real):
        d = tempfile.mkdtemp(prefix="warming-")
        adminPort = freePort()
        # A control plane that accepts and never answers.
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        xdsCluster = _staticCluster("xds_cluster", silent.getsockname()[1])
        xdsCluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3."
                         "HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}}
        config = json.loads(_bootstrap(adminPort, [], [xdsCluster]))
        config["dynamic_resources"] = {"cds_config": {
            "path_config_source": {"path": os.path.join(d, "cds.yaml")},
            "resource_api_version": "V3"}}
        _moveInto(d, "cds.yaml", _response("1", []))
        proxy = _proxy(real, json.dumps(config), adminPort, ())
        seen = []

        def observe():
            stats = adminStats(adminPort)
            return ([stats.get(n) for n in _GAUGES],
                    _clusterNames(adminPort, "dynamic_warming_clusters"),
                    _clusterNames(adminPort, "dynamic_active_clusters"))

        def waitWarm():
            deadline = time.time() + 30
            while (time.time() < deadline
                   and adminStats(adminPort).get("cluster_manager.warming_clusters")):
                time.sleep(0.05)

        try:
            _waitStat(adminPort, "cluster_manager.cds.update_success", 1,
                      timeout=STARTUP_TIMEOUT)
            _moveInto(d, "cds.yaml", _response("2", [_edsCluster("late")]))
            _waitStat(adminPort, "cluster_manager.cds.update_success", 2)
            seen.append(observe())
            waitWarm()
            seen.append(observe())
            # A changed version warms too; the one it replaces serves on.
            changed = dict(_edsCluster("late"), connect_timeout="2s")
            _moveInto(d, "cds.yaml", _response("3", [changed]))
            _waitStat(adminPort, "cluster_manager.cds.update_success", 3)
            seen.append(observe())
            waitWarm()
            seen.append(observe())
        finally:
            proxy.stop()
            silent.close()
        return seen

    def test_edsClusterWarmsAsEnvoy(self):
        """
        Envoy's cluster warming: a CDS cluster whose EDS control plane
        never answers is warming (C{dynamic_warming_clusters},
        C{cluster_manager.warming_clusters} 1, not yet counted in
        C{active_clusters}) until its C{initial_fetch_timeout}, then active;
        a changed version warms likewise, the old one active meanwhile.
        """
        results = forBoth(self._sequence, timeout=60)
        self.maxDiff = None
        self.assertEqual(results[True], [
            ([1, 1], [("late", "2")], []), ([0, 2], [], [("late", "2")]),
            ([1, 2], [("late", "3")], [("late", "2")]), ([0, 2], [], [("late", "3")])])
        self.assertEqual(results[False], results[True])
