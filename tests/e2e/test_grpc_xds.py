"""
End-to-end: LDS and CDS over gRPC ADS (state of the world and delta) from
the test control plane (L{tests.xds.control_plane}), one per proxy, driving
a real C{twistd envoy} and Envoy 1.40 through the same updates. Both must
send the same requests (node, versions, nonces, ACK or NACK), serve the
same listener afterwards, and count the same stats: a listener appears
and serves, a changed one serves its new route, a bad update is NACKed and
the old config keeps serving, garbage and a closed stream change nothing,
and a control plane that is down at startup stops nothing.
"""

import os
import threading
import urllib.request

from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401 (for the Any)
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2,
)
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import REPO, STARTUP_TIMEOUT, Envoy, RealEnvoy, adminStats, freePort
from tests.e2e.test_file_xds import _direct
from tests.e2e.test_file_xds import _listener as fileListener
from tests.xds.control_plane import CLUSTER, LISTENER, ROUTE, SECRET, ControlPlane, packed

_BOOTSTRAP = """
node: {id: node-1, cluster: fleet, locality: {region: r1}}
admin: {address: {socket_address: {address: 127.0.0.1, port_value: %(admin)d}}}
dynamic_resources:
  ads_config:
    api_type: %(api)s
    transport_api_version: V3
    set_node_on_first_message_only: true
%(validators)s
    grpc_services:
    - envoy_grpc:
        cluster_name: xds_cluster
        retry_policy: {retry_back_off: {base_interval: 0.1s, max_interval: 0.2s}}
  cds_config: {ads: {}, resource_api_version: V3, initial_fetch_timeout: %(timeout)s}
  lds_config: {ads: {}, resource_api_version: V3, initial_fetch_timeout: %(timeout)s}
static_resources:
  listeners:
  - name: static
    address: {socket_address: {address: 127.0.0.1, port_value: %(static)d}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: static
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          route_config:
            virtual_hosts:
            - name: v
              domains: ["*"]
              routes: [{match: {prefix: /}, direct_response: {status: 200, body: {inline_string: static}}}]
  clusters:
  - name: xds_cluster
    type: STATIC
    connect_timeout: 1s
%(tls)s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment:
      cluster_name: xds_cluster
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %(xds)d}}}}]}]
"""


_TLS_SOCKET = """    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: localhost
        common_tls_context:
          validation_context: {trusted_ca: {filename: %s}}""" % (
    os.path.join(REPO, "conf", "demo-cert.pem"),)


_VALIDATORS = """    config_validators:
    - name: envoy.config.validators.minimum_clusters_validator
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.config.validators.minimum_clusters.v3.MinimumClustersValidator
        min_clusters_num: %d"""


#: TLS without a validation context: Envoy does not verify the server.
_TLS_UNVERIFIED = """    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"""


def _demoCertificate():
    """The demo certificate (localhost, self-signed) and key, as PEM bytes."""
    with open(os.path.join(REPO, "conf", "demo-cert.pem"), "rb") as c, \
            open(os.path.join(REPO, "conf", "demo-key.pem"), "rb") as k:
        return c.read(), k.read()


def _cluster(name):
    return json_format.ParseDict({"name": name, "type": "STATIC", "connect_timeout": "1s",
                                  "load_assignment": {"cluster_name": name}}, Cluster())


def _listener(name, port, body):
    proto = dict(fileListener(name, port, _direct(body)))
    del proto["@type"]
    return json_format.ParseDict(proto, Listener())


def _get(port):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/" % (port,), timeout=5) as r:
            return r.read().decode()
    except Exception as e:
        return "error: %s" % (e,)


def _summary(request):
    """What is compared of a request: all but the node's details and error message."""
    if isinstance(request, discovery_pb2.DeltaDiscoveryRequest):
        return (request.HasField("node"), request.type_url, request.response_nonce,
                sorted(request.resource_names_subscribe),
                sorted(request.resource_names_unsubscribe),
                sorted(request.initial_resource_versions.items()),
                request.error_detail.code)
    return (request.HasField("node"), request.type_url, request.version_info,
            request.response_nonce, list(request.resource_names), request.error_detail.code)


class Side:
    """One proxy (real Envoy or txenvoy) and its own control plane."""

    def __init__(self, real, api, timeout="5s", controlPlaneUp=True, tls=False, minClusters=0):
        self.real = real
        self.admin, self.static, self.port = freePort(), freePort(), freePort()
        self.xdsPort = freePort()
        self.tls = _demoCertificate() if tls else None
        self.cp = ControlPlane(self.xdsPort, self.tls) if controlPlaneUp else None
        self.config = _BOOTSTRAP % {"admin": self.admin, "static": self.static,
                                    "xds": self.xdsPort, "api": api, "timeout": timeout,
                                    "tls": {False: "", True: _TLS_SOCKET,
                                            "unverified": _TLS_UNVERIFIED}[tls],
                                    "validators": _VALIDATORS % (minClusters,)
                                    if minClusters else ""}

    def start(self, args=()):
        if self.real:
            self.proxy = RealEnvoy(self.config, args=args)
        else:
            self.proxy = Envoy(self.config, args=("--concurrency", "1") + tuple(args),
                               adminPort=self.admin)

    def startServing(self):
        """Start with one cluster and listener l1 serving "one", ACKed."""
        self.cp.setResources(CLUSTER, "c1", [_cluster("a")])
        self.cp.setResources(LISTENER, "l1", [_listener("l1", self.port, "one")])
        self.start()
        # The first answer waits for the process to start, slow under load.
        self.waitBody(self.port, "one", timeout=STARTUP_TIMEOUT)
        self.cp.waitFor(lambda cp: len(cp.requestsOf(LISTENER)) >= 2)

    def startControlPlane(self):
        self.cp = ControlPlane(self.xdsPort)

    def waitBody(self, port, body, timeout=STARTUP_TIMEOUT):
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = _get(port)
            if got == body:
                return
            time.sleep(0.05)
        raise AssertionError("%s: port %d serves %r, not %r" % (self.name(), port, got, body))

    def name(self):
        return "envoy" if self.real else "txenvoy"

    def waitStat(self, name, value, timeout=20.0):
        """Poll the admin stats until C{name} is C{value}."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if adminStats(self.admin).get(name) == value:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("%s: %s never became %r" % (self.name(), name, value))

    def requests(self):
        return [[_summary(r) for r in s.requests] for s in self.cp.streams]

    def errors(self):
        return [r.error_detail.message for s in self.cp.streams for r in s.requests
                if r.error_detail.code]

    def stats(self, *names):
        stats = adminStats(self.admin)
        return {name: stats.get(name) for name in names}

    def stop(self):
        self.proxy.stop()
        if self.cp is not None:
            self.cp.stop()


def _both(f, sides):
    """Run C{f(side)} for both sides at once; raise the first failure."""
    errors = []

    def run(side):
        try:
            f(side)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(side,)) for side in sides]
    for t in threads:
        t.start()
    for t in threads:
        t.join(STARTUP_TIMEOUT + 60)
    if errors:
        raise errors[0]


_STATS = ("control_plane.connected_state", "listener_manager.lds.update_success",
          "listener_manager.lds.update_rejected", "cluster_manager.cds.update_success",
          "cluster_manager.cds.update_rejected", "listener_manager.lds.version",
          "cluster_manager.cds.version")


class AdsTests(SynchronousTestCase):

    maxDiff = None

    def sides(self, api, **kw):
        sides = [Side(True, api, **kw), Side(False, api, **kw)]
        for side in sides:
            self.addCleanup(side.stop)
        return sides

    def sequence(self, api):
        """
        The whole sequence on one pair of proxies: the first config, a
        changed listener, a rejected update, garbage, a closed stream.
        """
        sides = self.sides(api)

        def first(side):
            side.cp.setResources(CLUSTER, "c1", [_cluster("a")])
            side.cp.setResources(LISTENER, "l1", [_listener("l1", side.port, "one")])
            side.start()
            # The first answer waits for the process to start, slow under load.
            side.waitBody(side.port, "one", timeout=STARTUP_TIMEOUT)
            side.waitBody(side.static, "static")

        _both(first, sides)

        def acked(version, nonceCount):
            def wait(side):
                side.cp.waitFor(lambda cp: len(cp.requestsOf(LISTENER)) >= nonceCount)
            return wait

        def changed(side):
            side.cp.setResources(LISTENER, "l2", [_listener("l1", side.port, "two")])
            side.cp.waitFor(lambda cp: len(cp.requestsOf(LISTENER)) >= 3)
            side.waitBody(side.port, "two")
            # Rejected whole: a bad value. The old listener keeps serving.
            bad = _listener("l1", side.port, "three")
            bad.filter_chains[0].filters[0].typed_config.Pack(Duration(seconds=1))
            side.cp.setResources(LISTENER, "l3", [bad])
            side.cp.waitFor(lambda cp: len(cp.requestsOf(LISTENER)) >= 4)
            side.waitBody(side.port, "two")
            # Garbage: a cluster where listeners are expected.
            side.cp.sendRaw(self.garbage(api))
            side.cp.waitFor(lambda cp: len(cp.requestsOf(LISTENER)) >= 5)
            side.waitBody(side.port, "two")
            # The stream closes; the proxy comes back with what it has.
            side.cp.closeStreams()
            # The new stream's first requests, then the NACK of the bad
            # snapshot the control plane sends again.
            side.cp.waitFor(lambda cp: len(cp.streams) >= 2
                            and len(cp.requestsOf(LISTENER, 1)) >= 2)
            side.waitBody(side.port, "two")
            side.waitBody(side.static, "static")

        _both(changed, sides)
        real, tx = sides
        self.assertEqual(tx.requests(), real.requests())
        self.assertEqual(tx.stats(*_STATS), real.stats(*_STATS))
        for side in sides:
            errors = side.errors()
            self.assertEqual(len(errors), 3, errors)
            self.assertIn("l1", errors[0])
            self.assertIn("does not match the message-wide type URL", errors[1])
        return sides

    def garbage(self, api):
        if api == "DELTA_GRPC":
            response = discovery_pb2.DeltaDiscoveryResponse(
                type_url=LISTENER, nonce="garbage", system_version_info="g")
            response.resources.add(name="c", version="g", resource=packed(_cluster("c")))
            return response
        return discovery_pb2.DiscoveryResponse(
            version_info="g", type_url=LISTENER, nonce="garbage",
            resources=[packed(_cluster("c"))])

    def test_stateOfTheWorld(self):
        """
        SotW ADS: CDS first (with the node), LDS once CDS has its first
        update and before CDS's ACK (as Envoy's init manager orders them),
        ACKs with the version and nonce, NACKs with the previous version and
        code 13, and after the stream closes a new stream whose requests
        carry the versions held and no nonce.
        """
        real, tx = self.sequence("GRPC")
        self.assertEqual(real.requests()[1][0], (True, CLUSTER, "c1", "", [], 0))
        self.assertNodeAsEnvoys(real.cp.streams[0].requests[0].node,
                                tx.cp.streams[0].requests[0].node)

    def assertNodeAsEnvoys(self, envoys, mine):
        """
        The node of the first request: C{user_agent_name}, the build's
        metadata keys, and C{extensions} as Envoy lists its own: every
        extension txenvoy registers by Envoy's category and name, with
        config types Envoy lists for it (Envoy adds per-route types).
        """
        self.assertEqual(mine.user_agent_name, envoys.user_agent_name)
        self.assertTrue(mine.user_agent_build_version.HasField("version"))
        self.assertLessEqual(set(mine.user_agent_build_version.metadata.keys()),
                             set(envoys.user_agent_build_version.metadata.keys()))
        known = {(e.category, e.name): set(e.type_urls) for e in envoys.extensions}
        unknown = []
        self.assertGreater(len(mine.extensions), 50)
        for extension in mine.extensions:
            key = (extension.category, extension.name)
            if key not in known:
                unknown.append(key)
                continue
            self.assertLessEqual(set(extension.type_urls), known[key], key)
        # The one txenvoy names that Envoy 1.40 does not build in.
        self.assertEqual(unknown, [("envoy.resource_monitors",
                                    "envoy.resource_monitors.global_downstream_max_connections")])

    def test_tlsControlPlane(self):
        """
        The control plane's cluster has a TLS transport socket (trusted CA
        and SNI): the stream is encrypted and the server verified; the
        listener it gives serves.
        """
        sides = self.sides("GRPC", tls=True)

        def run(side):
            side.startServing()

        _both(run, sides)
        real, tx = sides
        self.assertEqual(tx.requests(), real.requests())

    def test_tlsControlPlaneWithoutValidationContext(self):
        """
        The control plane's cluster has a TLS transport socket without a
        validation context, and the control plane a self-signed
        certificate: Envoy does not verify it, and neither does txenvoy
        (grpcio would refuse it), so the listener it gives serves; the
        same requests on both.
        """
        sides = self.sides("GRPC", tls="unverified")
        _both(lambda side: side.startServing(), sides)
        real, tx = sides
        self.assertEqual(tx.requests(), real.requests())

    def test_controlPlaneDownAtStart(self):
        """
        With the control plane down at startup, the initial fetches time
        out (C{init_fetch_timeout}), the static listener serves, and once
        the control plane is up (reconnect with backoff) its listener
        serves too.
        """
        sides = self.sides("GRPC", timeout="0.5s", controlPlaneUp=False)

        def run(side):
            side.start()
            side.waitBody(side.static, "static")
            side.startControlPlane()
            side.cp.setResources(CLUSTER, "c1", [_cluster("a")])
            side.cp.setResources(LISTENER, "l1", [_listener("l1", side.port, "one")])
            side.waitBody(side.port, "one")

        _both(run, sides)
        names = ("listener_manager.lds.init_fetch_timeout", "cluster_manager.cds.init_fetch_timeout",
                 "control_plane.connected_state", "listener_manager.lds.update_success")
        real, tx = sides
        self.assertEqual(tx.stats(*names), real.stats(*names))
        self.assertEqual(tx.requests(), real.requests())

    def test_delta(self):
        """
        Delta ADS: the same sequence; the first request of each stream
        lists the versions held (C{initial_resource_versions}), an ACK
        carries only the nonce, a NACK the nonce and code 13.
        """
        real, tx = self.sequence("DELTA_GRPC")
        self.assertEqual(real.requests()[1][1][5], [("l1", "l2:l1")])

    def test_routesFromTheirOwnStream(self):
        """
        go-control-plane's example layout: clusters and listeners over
        ADS, the listener's route table by RDS on a stream of its own
        (C{api_config_source} GRPC, C{set_node_on_first_message_only}),
        subscribed by name; the listener serves through the cluster.
        """
        from envoy.config.route.v3.route_pb2 import RouteConfiguration

        from tests.e2e.harness import Upstream

        def origin(conn):
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\n"
                         b"upstream")

        upstream = Upstream(origin)
        self.addCleanup(upstream.stop)
        sides = self.sides("GRPC")
        source = {"resource_api_version": "V3", "api_config_source": {
            "api_type": "GRPC", "transport_api_version": "V3",
            "set_node_on_first_message_only": True,
            "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_cluster"}}]}}

        def run(side):
            cluster = json_format.ParseDict({
                "name": "example_proxy_cluster", "type": "STATIC", "connect_timeout": "1s",
                "load_assignment": {"cluster_name": "example_proxy_cluster", "endpoints": [
                    {"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                        "address": "127.0.0.1", "port_value": upstream.port}}}}]}]}},
                Cluster())
            listener = _listener("listener_0", side.port, "unused")
            hcm = http_connection_manager_pb2.HttpConnectionManager()
            listener.filter_chains[0].filters[0].typed_config.Unpack(hcm)
            hcm.ClearField("route_config")
            json_format.ParseDict({"route_config_name": "local_route", "config_source": source},
                                  hcm.rds)
            listener.filter_chains[0].filters[0].typed_config.Pack(hcm)
            routes = json_format.ParseDict({"name": "local_route", "virtual_hosts": [{
                "name": "local_service", "domains": ["*"], "routes": [{
                    "match": {"prefix": "/"},
                    "route": {"cluster": "example_proxy_cluster"}}]}]}, RouteConfiguration())
            side.cp.setResources(CLUSTER, "1", [cluster])
            side.cp.setResources(ROUTE, "1", [routes])
            side.cp.setResources(LISTENER, "1", [listener])
            side.start()
            side.waitBody(side.port, "upstream")
            side.cp.waitFor(lambda cp: len(cp.requestsOf(ROUTE)) >= 2)

        _both(run, sides)
        real, tx = sides
        self.assertEqual(real.requests()[1], [(True, ROUTE, "", "", ["local_route"], 0),
                                              (False, ROUTE, "1", "3", ["local_route"], 0)])
        self.assertEqual(tx.requests(), real.requests())
        names = ("http.listener_0.rds.local_route.update_success",
                 "http.listener_0.rds.local_route.version")
        self.assertEqual(tx.stats(*names), real.stats(*names))

    def test_deltaAliasesAndRemovals(self):
        """
        Envoy's C{DeltaSubscriptionState} on a delta LDS stream: an entry
        with aliases and no resource (an unresolved alias, which only VHDS
        answers) is NACKed as the listener handler's rejection (counted
        twice in C{update_attempt}, as Envoy's delta subscription counts
        it); an entry without a resource at the version held is a
        heartbeat, ACKed; one at another version, a name twice among the
        resources, or among the resources and the removals are NACKed with
        Envoy's words; aliases beside a resource change nothing; removing
        an unknown name is ACKed, removing the listener removes it, and
        the next stream claims no version for it.
        """
        sides = self.sides("DELTA_GRPC")

        def delta(nonce, removed=(), **entries):
            response = discovery_pb2.DeltaDiscoveryResponse(
                type_url=LISTENER, nonce=nonce, system_version_info="s-" + nonce)
            for name, entry in entries.items():
                response.resources.add(name=name.split("_")[0], **entry)
            response.removed_resources.extend(removed)
            return response

        def run(side):
            side.startServing()
            changed = packed(_listener("l1", side.port, "aliased"))
            for response in [
                    delta("alias", l9={"aliases": ["l9.example"], "version": "v9"}),
                    delta("heartbeat", l1={"version": "l1:l1"}),
                    delta("empty", l1={"version": "v2"}),
                    delta("dup", l1_a={"version": "v3", "resource": changed},
                          l1_b={"version": "v3", "resource": changed}),
                    delta("union", ["l1"], l1={"version": "v4", "resource": changed}),
                    delta("aliased", l1={"version": "v5", "aliases": ["x"], "resource": changed}),
                    delta("unknown", ["nosuch"]),
                    delta("removed", ["l1"])]:
                count = len(side.cp.requestsOf(LISTENER))
                side.cp.sendRaw(response)
                side.cp.waitFor(lambda cp: len(cp.requestsOf(LISTENER)) > count)
                if response.nonce == "aliased":
                    side.waitBody(side.port, "aliased")
            side.cp.closeStreams()
            # The new stream claims no listener; the control plane sends l1 again.
            side.cp.waitFor(lambda cp: len(cp.streams) >= 2
                            and len(cp.requestsOf(LISTENER, 1)) >= 2)
            side.waitBody(side.port, "one")

        _both(run, sides)
        real, tx = sides
        self.assertEqual(tx.requests(), real.requests())
        self.assertEqual([r[5] for r in real.requests()[1] if r[1] == LISTENER][0], [])
        names = ("listener_manager.lds.update_attempt", "listener_manager.lds.update_success",
                 "listener_manager.lds.update_rejected", "listener_manager.lds.update_failure",
                 "listener_manager.listener_removed")
        self.assertEqual(tx.stats(*names), real.stats(*names))
        envoyErrors, errors = real.errors(), tx.errors()
        self.assertEqual(len(errors), 4)
        self.assertIn("aliases without a resource", errors[0])
        for mine, envoys in zip(errors[1:], envoyErrors[1:]):
            self.assertEqual(mine.split(" in DeltaDiscoveryResponse")[0],
                             envoys.split(" in DeltaDiscoveryResponse")[0])

    def test_clusterAndRouteLifecycle(self):
        """
        One pair of proxies (ADS, C{config_validators} with
        C{minimum_clusters_validator} at 2, C{--drain-time-s 1}) through
        what Envoy's init managers, validators and route config providers
        do:

         - a CDS cluster whose upstream TLS context takes its client
           certificate from SDS over ADS warms until the secret arrives
           (C{warming_clusters} 1), and LDS is not asked for meanwhile (the
           clusters of CDS's first update warm before LDS starts); once the
           secret is pushed the listeners serve;
         - a CDS update leaving fewer clusters than C{min_clusters_num} is
           NACKed with Envoy's words and the clusters stay;
         - two listeners take their routes by RDS; when LDS removes one,
           once it drained its route configuration is no longer asked for,
           and when both are gone the RDS request names none, as Envoy's
           shared route config providers die with their last listener.
        """
        from envoy.config.route.v3.route_pb2 import RouteConfiguration
        from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2

        sides = self.sides("GRPC", minClusters=2)
        certificate, key = _demoCertificate()
        context = json_format.ParseDict({"common_tls_context": {
            "tls_certificate_sds_secret_configs": [{
                "name": "client", "sds_config": {"ads": {}, "resource_api_version": "V3"}}]}},
            tls_pb2.UpstreamTlsContext())
        tlsCluster = _cluster("tls_c")
        tlsCluster.transport_socket.name = "envoy.transport_sockets.tls"
        tlsCluster.transport_socket.typed_config.Pack(context)
        secret = secret_pb2.Secret(name="client")
        secret.tls_certificate.certificate_chain.inline_bytes = certificate
        secret.tls_certificate.private_key.inline_bytes = key

        def rdsListener(name, port, route):
            listener = _listener(name, port, "unused")
            hcm = http_connection_manager_pb2.HttpConnectionManager()
            listener.filter_chains[0].filters[0].typed_config.Unpack(hcm)
            hcm.ClearField("route_config")
            json_format.ParseDict({"route_config_name": route, "config_source": {
                "ads": {}, "resource_api_version": "V3"}}, hcm.rds)
            listener.filter_chains[0].filters[0].typed_config.Pack(hcm)
            return listener

        def routes(name, body):
            return json_format.ParseDict({"name": name, "virtual_hosts": [{
                "name": "v", "domains": ["*"], "routes": [{
                    "match": {"prefix": "/"},
                    "direct_response": {"status": 200, "body": {"inline_string": body}}}]}]},
                RouteConfiguration())

        names = ("cluster_manager.warming_clusters", "cluster_manager.active_clusters")
        seen = {}

        def run(side):
            mine = seen[side.name()] = {}
            other = freePort()
            side.cp.setResources(CLUSTER, "c1", [_cluster("a"), tlsCluster])
            side.cp.setResources(ROUTE, "1", [routes("r1", "one"), routes("r2", "two")])
            side.cp.setResources(LISTENER, "1", [rdsListener("l1", side.port, "r1"),
                                                 rdsListener("l2", other, "r2")])
            side.start(("--drain-time-s", "1"))
            side.cp.waitFor(lambda cp: len(cp.requestsOf(SECRET)) >= 1, timeout=STARTUP_TIMEOUT)
            side.waitStat("cluster_manager.warming_clusters", 1)
            mine["warming"] = (side.stats(*names), len(side.cp.requestsOf(LISTENER)))
            side.cp.setResources(SECRET, "s1", [secret])
            side.waitBody(side.port, "one")
            side.waitBody(other, "two")
            side.cp.waitFor(lambda cp: len(cp.requestsOf(ROUTE)) >= 2
                            and cp.requestsOf(ROUTE)[-1].response_nonce)
            mine["warm"] = side.stats(*names)
            # Below the minimum: NACKed, the clusters stay.
            count = len(side.cp.requestsOf(CLUSTER))
            side.cp.setResources(CLUSTER, "c2", [_cluster("a")])
            side.cp.waitFor(lambda cp: len(cp.requestsOf(CLUSTER)) > count)
            mine["nack"] = [(r.version_info, r.error_detail.code, r.error_detail.message)
                            for r in side.cp.requestsOf(CLUSTER)[count:]]
            first = len(side.cp.requestsOf(ROUTE))
            for count, listeners in ((1, [rdsListener("l2", other, "r2")]), (2, [])):
                side.cp.setResources(LISTENER, str(count + 1), listeners)
                side.cp.waitFor(lambda cp: len(cp.requestsOf(ROUTE)) >= first + count)
            mine["routes"] = [(r.version_info, sorted(r.resource_names), r.error_detail.code)
                              for r in side.cp.requestsOf(ROUTE)[first:]]
            mine["stats"] = side.stats(
                "cluster_manager.cds.update_attempt", "cluster_manager.cds.update_success",
                "cluster_manager.cds.update_rejected", "cluster_manager.active_clusters",
                "sds.client.update_success")

        _both(run, sides)
        self.maxDiff = None
        self.assertEqual(seen["txenvoy"], seen["envoy"])
        envoy = seen["envoy"]
        self.assertEqual(envoy["warming"], ({"cluster_manager.warming_clusters": 1,
                                             "cluster_manager.active_clusters": 2}, 0))
        self.assertEqual(envoy["warm"], {"cluster_manager.warming_clusters": 0,
                                         "cluster_manager.active_clusters": 3})
        self.assertEqual(envoy["nack"], [("c1", 13, "CDS update attempts to reduce clusters "
                                                    "below configured minimum.")])
        self.assertEqual(envoy["routes"], [("1", ["r2"], 0), ("1", [], 0)])
