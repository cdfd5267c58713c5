"""
End-to-end: the resources a static or LDS listener subscribes to (RDS,
EDS, SDS) from files moved into place, compared with Envoy 1.40 on the
same sequence: what each update serves, what is refused, the stats and
C{/config_dump}.
"""

import json
import os
import socket
import tempfile
import threading
import time
import urllib.request

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import (
    EXAMPLES,
    STARTUP_TIMEOUT,
    adminStats,
    forBoth,
    freePort,
    statsWhen,
    statusOf,
)
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
    """
    C{(status, body)} of one GET on a connection of its own, read up to
    its content-length (not to the close, which Envoy delays a second).
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(("GET %s HTTP/1.1\r\nhost: a\r\n\r\n" % (path,)).encode())
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(65536)
                if not chunk:
                    return None
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = 0
            for line in head.lower().split(b"\r\n")[1:]:
                if line.startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            while len(body) < length:
                chunk = s.recv(65536)
                if not chunk:
                    break
                body += chunk
            return statusOf(head), body
    except OSError:
        return None


def _waitStat(adminPort, name, value, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if adminStats(adminPort).get(name, 0) >= value:
                return
        except OSError:
            # The admin listener is not up yet.
            pass
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
            # In flight once the proxy sent it to the slow origin.
            statsWhen(adminPort, lambda s: s.get("cluster.slow.upstream_rq_total", 0) >= 1,
                      timeout=30)
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


_CLA_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"


def _assignment(name, localities, **extra):
    """
    A C{ClusterLoadAssignment}: C{localities} are C{(priority, zone,
    [(port, health_status)])}.
    """
    return dict({"@type": _CLA_TYPE, "cluster_name": name, "endpoints": [
        {"priority": priority, "locality": {"zone": zone}, "lb_endpoints": [
            {"health_status": status, "endpoint": {"address": {"socket_address": {
                "address": "127.0.0.1", "port_value": port}}}}
            for port, status in endpoints]}
        for priority, zone, endpoints in localities]}, **extra)


def _directListener(port, cluster):
    return {"name": "l", "address": {"socket_address": {"address": "127.0.0.1",
                                                        "port_value": port}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {"@type": _HCM_TYPE, "stat_prefix": "ingress",
                                 "http_filters": [_ROUTER],
                                 "route_config": {"name": "r", "virtual_hosts": [{
                                     "name": "v", "domains": ["*"],
                                     "routes": [_toCluster("/", cluster)]}]}}}]}]}


_EDS_STATS = ("update_attempt", "update_success", "update_rejected", "update_failure",
              "update_empty", "update_no_rebuild", "version", "membership_change",
              "membership_total", "membership_healthy")


class EdsTests(SynchronousTestCase):

    def _sequence(self, real, origins):
        a, b = (o.server_address[1] for o in origins)
        d = tempfile.mkdtemp(prefix="eds-")
        port, adminPort = freePort(), freePort()
        path = os.path.join(d, "eds.yaml")

        def move(version, resources):
            _moveInto(d, "eds.yaml", _response(version, resources))

        move("1", [_assignment("svc", [(0, "z0", [(a, "HEALTHY")]),
                                       (1, "z1", [(b, "HEALTHY")])])])
        config = _bootstrap(adminPort, [_directListener(port, "c")], [{
            "name": "c", "type": "EDS", "connect_timeout": "1s",
            # A health-only change is applied at once, not merged.
            "common_lb_config": {"update_merge_window": "0s"},
            "eds_cluster_config": {"service_name": "svc", "eds_config": {
                "path_config_source": {"path": path}, "resource_api_version": "V3"}}}])
        proxy = _proxy(real, config, adminPort, ())
        seen = []
        attempts = [1]

        def moveAndWait(version, resources):
            move(version, resources)
            attempts[0] += 1
            _waitStat(adminPort, "cluster.c.update_attempt", attempts[0])
            seen.append(_get(port))

        try:
            proxy.waitPort(port)
            seen.append(_get(port))
            # Priority 0 unhealthy: priority 1 takes the traffic.
            moveAndWait("2", [_assignment("svc", [(0, "z0", [(a, "UNHEALTHY")]),
                                                  (1, "z1", [(b, "HEALTHY")])])])
            # Refused whole: another cluster, two assignments, a bad address.
            moveAndWait("3", [_assignment("other", [(0, "z0", [(a, "HEALTHY")])])])
            moveAndWait("4", [_assignment("svc", [(0, "z0", [(a, "HEALTHY")])]),
                              _assignment("svc", [(0, "z0", [(a, "HEALTHY")])])])
            bad = _assignment("svc", [(0, "z0", [(a, "HEALTHY")])])
            bad["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"][
                "socket_address"]["address"] = "not-an-ip"
            moveAndWait("5", [bad])
            moveAndWait("6", [])
            # The same hosts again: no rebuild.
            moveAndWait("7", [_assignment("svc", [(0, "z0", [(a, "UNHEALTHY")]),
                                                  (1, "z1", [(b, "HEALTHY")])])])
            # Back to priority 0, with a field this version does not know.
            moveAndWait("8", [_assignment("svc", [(0, "z0", [(a, "HEALTHY")]),
                                                  (1, "z1", [(b, "HEALTHY")])],
                                          field_from_the_future=1)])
            stats = adminStats(adminPort)
            dump = _configDump(adminPort, "include_eds&resource=static_endpoint_configs")
        finally:
            proxy.stop()
        stats = {n: stats.get("cluster.c." + n) for n in _EDS_STATS}
        return seen, stats, _withoutTimes(dump, {a: "a", b: "b"})

    def test_edsUpdatesAsEnvoy(self):
        """
        Envoy's EDS cluster from a file: priorities and health status from
        the assignment choose the host; an assignment for another cluster,
        more than one or an invalid one is rejected whole and the hosts stay;
        unchanged hosts are C{update_no_rebuild}; the same
        C{cluster.<name>.update_*} stats and C{?include_eds} dump as Envoy.
        """
        origins = [_origin(b"a"), _origin(b"b")]
        for o in origins:
            self.addCleanup(o.server_close)
            self.addCleanup(o.shutdown)
        results = forBoth(lambda real: self._sequence(real, origins), timeout=90)
        self.maxDiff = None
        realSeen, realStats, realDump = results[True]
        a, b = (200, b"a"), (200, b"b")
        self.assertEqual(realSeen, [a, b, b, b, b, b, b, a])
        self.assertEqual(results[False][0], realSeen)
        self.assertEqual(results[False][1], realStats)
        self.assertEqual(results[False][2], realDump)


EXAMPLES_CERTS = os.path.join(EXAMPLES, "certs")
_SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
_SDS_STATS = ["sds.server_cert." + n for n in (
    "update_attempt", "update_success", "update_rejected", "update_failure", "version")]


def _secret(name, domain):
    certs = os.path.abspath(EXAMPLES_CERTS)
    return {"@type": _SECRET_TYPE, "name": name, "tls_certificate": {
        "certificate_chain": {"filename": os.path.join(certs, domain + ".crt.pem")},
        "private_key": {"filename": os.path.join(certs, domain + ".key.pem")}}}


def _tlsListener(port, sdsPath):
    listener = _directListener(port, "unused")
    listener["filter_chains"][0]["filters"][0]["typed_config"]["route_config"] = {
        "name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"],
                                        "routes": [_direct("/", "tls")]}]}
    listener["filter_chains"][0]["transport_socket"] = {
        "name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                     "DownstreamTlsContext",
            "common_tls_context": {"tls_certificate_sds_secret_configs": [{
                "name": "server_cert", "sds_config": {
                    "path_config_source": {"path": sdsPath},
                    "resource_api_version": "V3"}}]}}}
    return listener


def _tlsConnect(port):
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return context.wrap_socket(raw)


def _commonName(tlsSocket):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_der_x509_certificate(tlsSocket.getpeercert(binary_form=True))
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def _tlsExchange(tlsSocket):
    """One request on a kept-alive TLS connection: its response body."""
    tlsSocket.sendall(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
    data = b""
    while not data.endswith(b"tls"):
        chunk = tlsSocket.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.partition(b"\r\n\r\n")[2]


class SdsTests(SynchronousTestCase):

    def _sequence(self, real):
        d = tempfile.mkdtemp(prefix="sds-")
        port, adminPort = freePort(), freePort()
        path = os.path.join(d, "sds.yaml")

        def move(version, resources):
            _moveInto(d, "sds.yaml", _response(version, resources))

        move("1", [_secret("server_cert", "domain1")])
        config = _bootstrap(adminPort, [_tlsListener(port, path)])
        proxy = _proxy(real, config, adminPort, ())
        seen = []
        attempts = [1]

        def moveAndWait(version, resources):
            move(version, resources)
            attempts[0] += 1
            _waitStat(adminPort, "sds.server_cert.update_attempt", attempts[0])
            with _tlsConnect(port) as s:
                seen.append(_commonName(s))

        try:
            proxy.waitPort(port)
            old = _tlsConnect(port)
            seen.append((_commonName(old), _tlsExchange(old)))
            # A rotation reaches new handshakes; the old connection goes on.
            moveAndWait("2", [_secret("server_cert", "domain2")])
            seen.append((_commonName(old), _tlsExchange(old)))
            old.close()
            # Refused whole, the rotated certificate serving on.
            missing = _secret("server_cert", "domain2")
            missing["tls_certificate"]["certificate_chain"]["filename"] = "/nonexistent.pem"
            moveAndWait("3", [missing])
            moveAndWait("4", [_secret("other", "domain1")])
            moveAndWait("5", [])
            stats = adminStats(adminPort)
        finally:
            proxy.stop()
        prefix = "listener.127.0.0.1_%d.server_ssl_socket_factory." % (port,)
        compared = {n: stats.get(n) for n in _SDS_STATS}
        compared["ssl_context_update_by_sds"] = stats.get(prefix + "ssl_context_update_by_sds")
        return seen, compared

    def test_sdsRotationAsEnvoy(self):
        """
        Envoy's SDS certificate rotation from a file: new handshakes get
        the new certificate, a connection made before keeps serving; a
        secret that cannot be loaded, another secret or none is rejected
        and the current one serves on; the same C{sds.<name>.*} and
        C{ssl_context_update_by_sds} stats.
        """
        results = forBoth(self._sequence, timeout=90)
        self.maxDiff = None
        one, two = "domain1.example.com", "domain2.example.com"
        self.assertEqual(results[True][0], [
            (one, b"tls"), two, (one, b"tls"), two, two, two])
        self.assertEqual(results[False], results[True])


class SdsFileRotationTests(SynchronousTestCase):
    """
    An SDS secret naming certificate files: files moved into its
    C{watched_directory}, or (without one) into the directory of the
    files, are read again and reach new handshakes without a restart, as
    Envoy's C{SdsApi::onWatchUpdate}; a static secret's files are read
    once (its C{watched_directory} accepted and not watched), as Envoy
    1.40's.
    """

    def _sequence(self, real):
        import shutil

        d = tempfile.mkdtemp(prefix="sds-files-")
        names = ("server_cert", "plain_cert", "static_cert")
        directories = [os.path.join(d, n) for n in names]

        def place(directory, domain):
            for ext in ("crt", "key"):
                tmp = os.path.join(d, "tmp." + ext)
                shutil.copy(os.path.join(EXAMPLES_CERTS, "%s.%s.pem" % (domain, ext)), tmp)
                os.rename(tmp, os.path.join(directory, "cert.%s.pem" % (ext,)))

        certificates = {}
        for name, directory in zip(names, directories):
            os.mkdir(directory)
            place(directory, "domain1")
            certificates[name] = {
                "certificate_chain": {"filename": os.path.join(directory, "cert.crt.pem")},
                "private_key": {"filename": os.path.join(directory, "cert.key.pem")}}
            if name != "plain_cert":
                certificates[name]["watched_directory"] = {"path": directory}
            if name != "static_cert":
                _moveInto(d, name + ".yaml", _response("1", [{
                    "@type": _SECRET_TYPE, "name": name,
                    "tls_certificate": certificates[name]}]))
        ports, adminPort = [freePort() for _ in names], freePort()
        listeners = []
        for i, (port, name) in enumerate(zip(ports, names)):
            listener = _tlsListener(port, os.path.join(d, name + ".yaml"))
            listener["name"] = "l%d" % (i,)
            context = listener["filter_chains"][0]["transport_socket"]["typed_config"]
            config = context["common_tls_context"]["tls_certificate_sds_secret_configs"][0]
            config["name"] = name
            if name == "static_cert":
                del config["sds_config"]
            listeners.append(listener)
        bootstrap = json.loads(_bootstrap(adminPort, listeners))
        bootstrap["static_resources"]["secrets"] = [
            {"name": "static_cert", "tls_certificate": certificates["static_cert"]}]
        proxy = _proxy(real, json.dumps(bootstrap), adminPort, ())
        seen = []
        try:
            for port in ports:
                proxy.waitPort(port)
            old = _tlsConnect(ports[0])
            for port in ports:
                with _tlsConnect(port) as s:
                    seen.append(_commonName(s))
            place(directories[2], "domain2")
            for directory, port in zip(directories[:2], ports):
                place(directory, "domain2")
                deadline = time.monotonic() + 20
                while True:
                    with _tlsConnect(port) as s:
                        name = _commonName(s)
                    if name.startswith("domain2") or time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
                seen.append(name)
            # The static secret's files were moved first: still not read.
            with _tlsConnect(ports[2]) as s:
                seen.append(_commonName(s))
            # The connection made before keeps its certificate and serves.
            seen.append((_commonName(old), _tlsExchange(old)))
            old.close()
            stats = adminStats(adminPort)
        finally:
            proxy.stop()
        updates = [stats.get("listener.127.0.0.1_%d.server_ssl_socket_factory."
                             "ssl_context_update_by_sds" % (port,)) for port in ports]
        return seen, updates, [stats.get("sds.%s.update_success" % (n,)) for n in names[:2]]

    def test_rotatedFilesAsEnvoy(self):
        results = forBoth(self._sequence, timeout=90)
        one, two = "domain1.example.com", "domain2.example.com"
        self.assertEqual(results[True], ([one, one, one, two, two, one, (one, b"tls")],
                                         [2, 2, 0], [1, 1]))
        self.assertEqual(results[False], results[True])


_ADS_BOOTSTRAP = {
    "node": {"id": "node-1", "cluster": "fleet"},
    "dynamic_resources": {"ads_config": {
        "api_type": "GRPC", "transport_api_version": "V3",
        "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_cluster"}}]}},
}


_ADS = {"ads": {}, "resource_api_version": "V3"}


def _parse(data, cls):
    """A message of C{cls} from a resource written as JSON (its C{@type} dropped)."""
    from google.protobuf import json_format

    data = dict(data)
    data.pop("@type", None)
    return json_format.ParseDict(data, cls())


def _adsSide(adminPort, listeners, clusters):
    """
    A test control plane and a bootstrap using it for ADS, with
    C{listeners} and C{clusters} (and the control plane's) static.
    """
    from tests.xds.control_plane import ControlPlane

    # Its own port, chosen when bound: two free ports picked apart may be
    # the same one, and grpcio binds with SO_REUSEPORT.
    cp = ControlPlane(0)
    xdsCluster = _staticCluster("xds_cluster", cp.port)
    xdsCluster["typed_extension_protocol_options"] = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3."
                     "HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}}
    config = json.loads(_bootstrap(adminPort, listeners, [xdsCluster] + list(clusters)))
    config.update(_ADS_BOOTSTRAP)
    return cp, config


class AdsTests(SynchronousTestCase):

    def _sequence(self, real, origins):
        from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment
        from envoy.config.route.v3.route_pb2 import RouteConfiguration

        from txenvoy.xds.resources import ENDPOINT_TYPE, ROUTE_TYPE

        a, b = (o.server_address[1] for o in origins)
        port, adminPort = freePort(), freePort()
        cp, config = _adsSide(adminPort, [_rdsListener(port, {
            "route_config_name": "local_route", "config_source": _ADS})], [
            {"name": "c", "type": "EDS", "connect_timeout": "1s",
             "eds_cluster_config": {"service_name": "svc", "eds_config": _ADS}}])
        cp.setResources(ROUTE_TYPE, "1", [_parse(_routeConfig(
            "local_route", [_toCluster("/", "c")]), RouteConfiguration)])
        cp.setResources(ENDPOINT_TYPE, "1", [_parse(_assignment(
            "svc", [(0, "z0", [(a, "HEALTHY")])]), ClusterLoadAssignment)])
        proxy = _proxy(real, json.dumps(config), adminPort, ())
        seen = []

        def waitFor(expected):
            deadline = time.time() + 10
            got = _get(port)
            while got != expected and time.time() < deadline:
                time.sleep(0.05)
                got = _get(port)
            seen.append(got)

        try:
            proxy.waitPort(port)
            waitFor((200, b"a"))
            cp.setResources(ENDPOINT_TYPE, "2", [_parse(_assignment(
                "svc", [(0, "z0", [(b, "HEALTHY")])]), ClusterLoadAssignment)])
            waitFor((200, b"b"))
            cp.setResources(ROUTE_TYPE, "2", [_parse(_routeConfig(
                "local_route", [_direct("/", "v2")]), RouteConfiguration)])
            waitFor((200, b"v2"))
            stats = adminStats(adminPort)
        finally:
            proxy.stop()
            cp.stop()
        names = ("http.ingress.rds.local_route.update_success",
                 "http.ingress.rds.local_route.config_reload", "cluster.c.update_success",
                 "cluster.c.membership_total")
        return seen, {n: stats.get(n) for n in names}

    def test_rdsAndEdsOverAdsAsEnvoy(self):
        """
        RDS and EDS by name over the ADS stream of a control plane, as
        Envoy: the route table and the hosts it sends are served, and each
        new version replaces them.
        """
        origins = [_origin(b"a"), _origin(b"b")]
        for o in origins:
            self.addCleanup(o.server_close)
            self.addCleanup(o.shutdown)
        results = forBoth(lambda real: self._sequence(real, origins), timeout=90)
        self.assertEqual(results[True][0], [(200, b"a"), (200, b"b"), (200, b"v2")])
        self.assertEqual(results[False], results[True])


def _chainListener(port, sourceBody, defaultBody):
    """A listener with a chain for 127.0.0.1 and a default chain."""
    def chain(body):
        hcm = _directListener(port, "unused")["filter_chains"][0]
        hcm["filters"][0]["typed_config"]["route_config"] = {
            "name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"],
                                            "routes": [_direct("/", body)]}]}
        return hcm

    listener = {"@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
                "name": "l", "address": {"socket_address": {"address": "127.0.0.1",
                                                            "port_value": port}},
                "filter_chains": [chain(sourceBody)],
                "default_filter_chain": chain(defaultBody)}
    listener["filter_chains"][0]["filter_chain_match"] = {
        "source_prefix_ranges": [{"address_prefix": "127.0.0.1", "prefix_len": 32}]}
    return listener


class InPlaceUpdateTests(SynchronousTestCase):

    def _sequence(self, real):
        from tests.e2e.test_file_xds import _keepAliveExchange

        d = tempfile.mkdtemp(prefix="lds-")
        port, adminPort = freePort(), freePort()
        path = os.path.join(d, "lds.yaml")

        def move(version, listener):
            _moveInto(d, "lds.yaml", _response(version, [listener]))

        move("1", _chainListener(port, "A1", "D1"))
        config = json.dumps({
            "node": {"id": "n", "cluster": "c"},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                     "port_value": adminPort}}},
            "dynamic_resources": {"lds_config": {"path": path}}})
        # The drain must outlast the steps below on a loaded machine: when
        # it ends, the old connection is closed before its last exchange.
        proxy = _proxy(real, config, adminPort,
                       ("--drain-time-s", "60", "--drain-strategy", "immediate"))
        seen = []
        try:
            proxy.waitPort(port)
            old = socket.create_connection(("127.0.0.1", port), timeout=10)
            seen.append(_keepAliveExchange(old))
            # Only the default chain changes: the connection on the other
            # chain is not drained.
            move("2", _chainListener(port, "A1", "D2"))
            _waitStat(adminPort, "listener_manager.lds.update_attempt", 2)
            seen.append(_keepAliveExchange(old))
            # Its own chain changes: it drains, new connections get the new one.
            move("3", _chainListener(port, "A3", "D2"))
            _waitStat(adminPort, "listener_manager.lds.update_attempt", 3)
            # The workers take the new listener a moment after the update counts.
            deadline = time.time() + 8
            got = _get(port)
            while got[1] != b"A3" and time.time() < deadline:
                time.sleep(0.05)
                got = _get(port)
            seen.append(got)
            seen.append(_keepAliveExchange(old))
            old.close()
            stats = adminStats(adminPort)
        finally:
            proxy.stop()
        return seen, {n: stats.get("listener_manager." + n) for n in (
            "listener_in_place_updated", "listener_modified", "total_listeners_active")}

    def test_filterChainOnlyUpdateAsEnvoy(self):
        """
        Envoy's in-place listener update (C{listener_in_place_updated}):
        when only filter chains change, connections on the unchanged chains
        are kept, without C{connection: close}; those on a changed chain
        drain.
        """
        results = forBoth(self._sequence, timeout=60)
        self.assertEqual(results[True][0], [
            (b"A1", False), (b"A1", False), (200, b"A3"), (b"A1", True)])
        self.assertEqual(results[False], results[True])


class ListenerWarmingTests(SynchronousTestCase):

    def _sequence(self, real):
        from envoy.config.listener.v3.listener_pb2 import Listener
        from envoy.config.route.v3.route_pb2 import RouteConfiguration
        from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
        from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
            http_connection_manager_pb2,
        )

        from tests.xds.control_plane import LISTENER
        from txenvoy.xds.resources import ROUTE_TYPE

        port, adminPort = freePort(), freePort()
        cp, config = _adsSide(adminPort, [], [])
        config["dynamic_resources"] = dict(config["dynamic_resources"], lds_config=_ADS)
        listener = _rdsListener(port, {"route_config_name": "late", "config_source": _ADS})
        # No listener at first: the workers start, then one is added.
        cp.setResources(LISTENER, "1", [])
        proxy = _proxy(real, json.dumps(config), adminPort, ())
        names = ("listener_manager.total_listeners_warming",
                 "listener_manager.total_listeners_active")
        seen = []
        try:
            _waitStat(adminPort, "listener_manager.workers_started", 1,
                      timeout=STARTUP_TIMEOUT)
            cp.setResources(LISTENER, "2", [_parse(listener, Listener)])
            deadline = time.time() + 10
            stats = {}
            while stats.get(names[0]) != 1 and time.time() < deadline:
                time.sleep(0.05)
                try:
                    stats = adminStats(adminPort)
                except OSError:
                    pass
            seen.append([stats.get(n) for n in names])
            dump = _configDump(adminPort, "resource=dynamic_listeners")["configs"]
            seen.append([sorted(k for k in d if k.endswith("_state")) for d in dump])
            cp.setResources(ROUTE_TYPE, "1", [_parse(_routeConfig(
                "late", [_direct("/", "warm")]), RouteConfiguration)])
            proxy.waitPort(port)
            deadline = time.time() + 10
            got = _get(port)
            while got != (200, b"warm") and time.time() < deadline:
                time.sleep(0.05)
                got = _get(port)
            seen.append(got)
            stats = adminStats(adminPort)
            seen.append([stats.get(n) for n in names])
        finally:
            proxy.stop()
            cp.stop()
        return seen

    def test_listenerWarmsOnRdsAsEnvoy(self):
        """
        Envoy's listener warming: a listener from LDS whose route table
        comes by RDS from the control plane counts in
        C{total_listeners_warming} and as C{warming_state} in
        C{/config_dump}, not active, until the table arrives. (A listener
        of the first LDS update counts as active while the server's
        initialization waits for it, in Envoy as here.)
        """
        results = forBoth(self._sequence, timeout=60)
        self.assertEqual(results[True], [[1, 0], [["warming_state"]], (200, b"warm"), [0, 1]])
        self.assertEqual(results[False], results[True])
