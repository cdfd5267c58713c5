"""
End-to-end: the resources a static or LDS listener subscribes to (RDS,
EDS, SDS) from files moved into place, compared with Envoy 1.40 on the
same sequence: what each update serves, what is refused, the stats and
C{/config_dump}.
"""

import json
import os
import tempfile
import threading
import time
import urllib.request

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import adminStats, closingGet, forBoth, freePort, statusOf
from tests.e2e.test_file_xds import _moveInto, _origin, _proxy, _response, _withoutTimes

_ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
_HCM_TYPE = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager"
             ".v3.HttpConnectionManager")
_ROUTER = {"name": "envoy.filters.http.router", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}


def _routeConfig(name, routes, **extra):
    return dict({"@type": _ROUTE_TYPE, "name": name, "virtual_hosts": [
        {"name": "v", "domains": ["*"], "routes": routes}]}, **extra)


def _direct(prefix, body):
    return {"match": {"prefix": prefix},
            "direct_response": {"status": 200, "body": {"inline_string": body}}}


def _toCluster(prefix, cluster):
    return {"match": {"prefix": prefix}, "route": {"cluster": cluster}}


def _get(port, path="/"):
    try:
        response = closingGet(port, path)
    except OSError:
        return None
    return statusOf(response), response.partition(b"\r\n\r\n")[2]


def _waitStat(adminPort, name, value, timeout=8.0):
    deadline = time.time() + timeout
    while adminStats(adminPort).get(name, 0) < value and time.time() < deadline:
        time.sleep(0.05)


def _configDump(adminPort, query):
    url = "http://127.0.0.1:%d/config_dump?%s" % (adminPort, query)
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def _bootstrap(adminPort, listeners, clusters=()):
    return json.dumps({
        "node": {"id": "n", "cluster": "c"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                 "port_value": adminPort}}},
        "static_resources": {"listeners": list(listeners), "clusters": list(clusters)}})


def _staticCluster(name, port):
    return {"name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {
                    "address": "127.0.0.1", "port_value": port}}}}]}]}}


def _rdsListener(port, rds):
    return {"name": "l", "address": {"socket_address": {"address": "127.0.0.1",
                                                        "port_value": port}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {"@type": _HCM_TYPE, "stat_prefix": "ingress",
                                 "rds": rds, "http_filters": [_ROUTER]}}]}]}


_RDS_STATS = ("update_attempt", "update_success", "update_rejected", "update_failure",
              "update_empty", "config_reload", "version")


class RdsTests(SynchronousTestCase):

    def _sequence(self, real, slow):
        d = tempfile.mkdtemp(prefix="rds-")
        port, adminPort = freePort(), freePort()
        path = os.path.join(d, "rds.yaml")

        def move(version, resources):
            _moveInto(d, "rds.yaml", _response(version, resources))

        move("1", [_routeConfig("local_route", [
            _toCluster("/slow", "slow"), _direct("/", "v1")])])
        config = _bootstrap(adminPort, [_rdsListener(port, {
            "route_config_name": "local_route",
            "config_source": {"path_config_source": {"path": path},
                              "resource_api_version": "V3"}})],
            [_staticCluster("slow", slow.server_address[1])])
        proxy = _proxy(real, config, adminPort, ())
        seen = []
        prefix = "http.ingress.rds.local_route."
        attempts = [1]

        def moveAndWait(version, resources):
            move(version, resources)
            attempts[0] += 1
            _waitStat(adminPort, prefix + "update_attempt", attempts[0])
            seen.append(_get(port))

        try:
            proxy.waitPort(port)
            seen.append(_get(port))
            # A request in flight keeps the route it started with.
            inFlight = []
            request = threading.Thread(target=lambda: inFlight.append(_get(port, "/slow")))
            request.start()
            time.sleep(0.3)
            moveAndWait("2", [_routeConfig("local_route", [
                _direct("/slow", "no longer slow"), _direct("/", "v2")])])
            seen.append(_get(port, "/slow"))
            request.join(10)
            seen.append(inFlight)
            # Refused whole, the previous table serving on: another name,
            # two route configurations, a regex that does not compile.
            moveAndWait("3", [_routeConfig("other", [_direct("/", "other")])])
            moveAndWait("4", [_routeConfig("local_route", [_direct("/", "v4")]),
                              _routeConfig("other", [_direct("/", "other")])])
            moveAndWait("5", [_routeConfig("local_route", [
                {"match": {"safe_regex": {"regex": "("}},
                 "direct_response": {"status": 200}}])])
            # Nothing at all: counted as empty, the table stays.
            moveAndWait("6", [])
            # An unknown field is dropped, as Envoy does for dynamic resources.
            moveAndWait("7", [_routeConfig("local_route", [_direct("/", "v7")],
                                           field_from_the_future=1)])
            # An unknown cluster is no error for RDS (validate_clusters false).
            moveAndWait("8", [_routeConfig("local_route", [_toCluster("/", "nosuch")])])
            # The same table under a new version: no reload.
            moveAndWait("9", [_routeConfig("local_route", [_toCluster("/", "nosuch")])])
            stats = adminStats(adminPort)
            dump = _configDump(adminPort, "resource=dynamic_route_configs")
        finally:
            proxy.stop()
        stats = {n: stats.get(prefix + n) for n in _RDS_STATS}
        stats["dynamic_unknown_fields"] = stats.get("server.dynamic_unknown_fields")
        return seen, stats, _withoutTimes(dump, {})

    def test_rdsUpdatesAsEnvoy(self):
        """
        Envoy's RDS from a file: an update reaches new streams only, a bad
        one is rejected whole (C{update_rejected}) and the previous route
        table serves on, an empty one is C{update_empty}, unknown fields are
        ignored; the same C{http.<prefix>.rds.<name>.*} stats and
        C{dynamic_route_configs} as Envoy.
        """
        slow = _origin(b"slow", delay=1.0)
        self.addCleanup(slow.server_close)
        self.addCleanup(slow.shutdown)
        results = forBoth(lambda real: self._sequence(real, slow), timeout=90)
        self.maxDiff = None
        realSeen, realStats, realDump = results[True]
        v2 = (200, b"v2")
        self.assertEqual(realSeen, [
            (200, b"v1"), v2, (200, b"no longer slow"), [(200, b"slow")], v2, v2, v2, v2,
            (200, b"v7"), (503, b""), (503, b"")])
        self.assertEqual(results[False][0], realSeen)
        self.assertEqual(results[False][1], realStats)
        self.assertEqual(results[False][2], realDump)
