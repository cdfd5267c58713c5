"""
Tests for L{txenvoy.upstream.cluster}: compiling C{Cluster} messages and
static membership.
"""

from google.protobuf import json_format
from twisted.trial.unittest import SynchronousTestCase

from envoy.config.cluster.v3 import cluster_pb2
from txenvoy.config.errors import ConfigError, UnsupportedExtension, UnsupportedField
from txenvoy.upstream import cluster as clustermod
from txenvoy.upstream.cluster import compileCluster
from txenvoy.upstream.host import Host

from tests.upstream.test_fakes import clusterProto, endpoint

PATH = "static_resources.clusters[0]"


def compile_(**fields):
    eps = fields.pop("endpoints", [endpoint("127.0.0.1", 8080)])
    return compileCluster(clusterProto("c1", eps, **fields), PATH)


class DefaultsTests(SynchronousTestCase):
    """Envoy's defaults when fields are left out."""

    def test_defaults(self):
        info, endpoints = compile_()
        self.assertEqual(info.name, "c1")
        self.assertEqual(info.observabilityName, "c1")
        self.assertEqual(info.statPrefix, "cluster.c1.")
        self.assertEqual(info.type, "STATIC")
        self.assertEqual(info.connectTimeout, 5.0)
        self.assertEqual(info.perConnectionBufferLimitBytes, 1024 * 1024)
        self.assertEqual(info.lbPolicy, "ROUND_ROBIN")
        self.assertEqual(info.maxRequestsPerConnection, 0)
        self.assertEqual(info.typedExtensionProtocolOptions, {})
        self.assertIsNone(info.bindAddress)
        self.assertEqual(info.dns.refreshRate, 5.0)
        self.assertEqual(info.dns.lookupFamily, "AUTO")
        self.assertEqual(info.lbConfig.healthyPanicThreshold, 50.0)
        self.assertEqual([(e.address, e.port, e.weight) for e in endpoints],
                         [("127.0.0.1", 8080, 1)])

    def test_circuitBreakerDefaults(self):
        """/clusters prints 1024/1024/1024/3 for both priorities."""
        info, _ = compile_()
        for t, prio in zip(info.circuitBreakers.thresholds, ("DEFAULT", "HIGH")):
            self.assertEqual(
                (t.priority, t.maxConnections, t.maxPendingRequests, t.maxRequests,
                 t.maxRetries), (prio, 1024, 1024, 1024, 3))

    def test_immutable(self):
        info, _ = compile_()
        self.assertRaises(AttributeError, setattr, info, "connectTimeout", 1)


class ValuesTests(SynchronousTestCase):
    """Fields that are implemented."""

    def test_values(self):
        info, _ = compile_(connect_timeout="0.25s", per_connection_buffer_limit_bytes=32768,
                           lb_policy="RANDOM", alt_stat_name="alt",
                           common_lb_config={"healthy_panic_threshold": {"value": 20}})
        self.assertEqual(info.connectTimeout, 0.25)
        self.assertEqual(info.perConnectionBufferLimitBytes, 32768)
        self.assertEqual(info.lbPolicy, "RANDOM")
        self.assertEqual(info.statPrefix, "cluster.alt.")
        self.assertEqual(info.lbConfig.healthyPanicThreshold, 20)

    def test_httpProtocolOptions(self):
        key = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        info, _ = compile_(typed_extension_protocol_options={key: {
            "@type": "type.googleapis.com/" + key,
            "common_http_protocol_options": {"max_requests_per_connection": 7,
                                             "idle_timeout": "30s"},
            "explicit_http_config": {"http_protocol_options": {}},
        }})
        self.assertEqual(info.maxRequestsPerConnection, 7)
        self.assertEqual(list(info.typedExtensionProtocolOptions), [key])
        self.assertEqual(
            info.httpProtocolOptions.common_http_protocol_options.idle_timeout.seconds, 30)
        self.assertEqual(info.upstreamIdleTimeout, 30.0)

    def test_httpProtocolOptionsPool(self):
        """The common options the pool acts on, and Envoy's defaults."""
        info, _ = compile_()
        self.assertEqual((info.upstreamIdleTimeout, info.upstreamMaxConnectionDuration,
                          info.upstreamMaxHeadersCount), (3600.0, 0.0, 100))
        key = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        info, _ = compile_(typed_extension_protocol_options={key: {
            "@type": "type.googleapis.com/" + key,
            "common_http_protocol_options": {"max_connection_duration": "9s",
                                             "max_headers_count": 50, "idle_timeout": "0s"},
            "explicit_http_config": {"http_protocol_options": {}},
        }})
        self.assertEqual((info.upstreamIdleTimeout, info.upstreamMaxConnectionDuration,
                          info.upstreamMaxHeadersCount), (0.0, 9.0, 50))

    def test_leastRequest(self):
        info, _ = compile_(lb_policy="LEAST_REQUEST",
                           least_request_lb_config={"choice_count": 3,
                                                    "active_request_bias": {
                                                        "default_value": 0.5,
                                                        "runtime_key": "k"}})
        self.assertEqual(info.lbPolicy, "LEAST_REQUEST")
        self.assertEqual(info.lbConfig.choiceCount, 3)
        self.assertEqual(info.lbConfig.activeRequestBias, 0.5)

    def test_loadBalancingPolicy(self):
        """
        The typed C{load_balancing_policy} wins over C{lb_policy}; the first
        implemented policy in the list is used, as Envoy does.
        """
        info, _ = compile_(load_balancing_policy={"policies": [
            {"typed_extension_config": {
                "name": "x", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.load_balancing_policies"
                             ".least_request.v3.LeastRequest",
                    "choice_count": 4}}}]})
        self.assertEqual(info.lbPolicy, "LEAST_REQUEST")
        self.assertEqual(info.lbConfig.choiceCount, 4)

    def test_dnsSettings(self):
        info, _ = compile_(type="STRICT_DNS", dns_refresh_rate="2s", dns_jitter="1s",
                           dns_lookup_family="V4_ONLY",
                           dns_failure_refresh_rate={"base_interval": "1s",
                                                     "max_interval": "8s"})
        self.assertEqual((info.dns.refreshRate, info.dns.jitter, info.dns.lookupFamily),
                         (2.0, 1.0, "V4_ONLY"))
        self.assertEqual((info.dns.failureBaseInterval, info.dns.failureMaxInterval),
                         (1.0, 8.0))

    def test_bindAndKeepalive(self):
        info, _ = compile_(
            upstream_bind_config={"source_address": {"address": "127.0.0.1", "port_value": 0}},
            upstream_connection_options={"tcp_keepalive": {"keepalive_time": 30}})
        self.assertEqual(info.bindAddress, ("127.0.0.1", 0))
        self.assertEqual(info.tcpKeepalive.time, 30)
        self.assertIsNone(info.tcpKeepalive.probes)

    def test_rawBufferTransportSocket(self):
        compile_(transport_socket={"name": "envoy.transport_sockets.raw_buffer", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3"
                     ".RawBuffer"}})

    def test_circuitBreakerThresholds(self):
        info, _ = compile_(circuit_breakers={"thresholds": [
            {"max_connections": 1, "max_pending_requests": 2, "max_requests": 3,
             "max_retries": 4, "max_connection_pools": 5, "track_remaining": True},
            {"priority": "HIGH", "max_requests": 7}]})
        d, h = info.circuitBreakers.thresholds
        self.assertEqual(
            (d.maxConnections, d.maxPendingRequests, d.maxRequests, d.maxRetries,
             d.maxConnectionPools, d.trackRemaining), (1, 2, 3, 4, 5, True))
        self.assertEqual((h.priority, h.maxConnections, h.maxRequests, h.trackRemaining),
                         ("HIGH", 1024, 7, False))
        self.assertEqual(info.resourceManagers["HIGH"].requests.max, 7)
        self.assertEqual(info.resourceManagers["DEFAULT"].connectionPools.max, 5)

    def test_retryBudget(self):
        """Envoy's defaults: 20% of active requests, at least 3 retries."""
        info, _ = compile_(circuit_breakers={"thresholds": [
            {"retry_budget": {}},
            {"priority": "HIGH", "retry_budget": {"budget_percent": {"value": 50},
                                                  "min_retry_concurrency": 1}}]})
        self.assertEqual(info.circuitBreakers.default.retryBudget, (20.0, 3))
        self.assertEqual(info.circuitBreakers.high.retryBudget, (50.0, 1))
        self.assertEqual(info.resourceManagers["HIGH"].retries.max, 1)

    def test_circuitBreakerSamePriorityTwice(self):
        """
        Envoy 1.40 accepts a priority listed twice and uses the first entry
        (C{/clusters} shows C{default_priority::max_connections::5}).
        """
        info, _ = compile_(circuit_breakers={"thresholds": [
            {"max_connections": 5}, {"priority": "DEFAULT", "max_connections": 6}]})
        self.assertEqual(info.circuitBreakers.default.maxConnections, 5)
        self.assertEqual(info.circuitBreakers.high.maxConnections, 1024)

    def test_explicitDefaultCircuitBreakers(self):
        compile_(circuit_breakers={"thresholds": [
            {"priority": "DEFAULT", "max_connections": 1024, "max_retries": 3}]})

    def test_ignoredFields(self):
        """Fields listed as harmless are accepted."""
        compile_(metadata={"filter_metadata": {"x": {"a": 1}}},
                 common_lb_config={"update_merge_window": "1s"})

    def test_endpointDetails(self):
        _, eps = compile_(endpoints=[
            endpoint("10.0.0.1", 80, weight=3, healthStatus="UNHEALTHY", hostname="web")])
        ep = eps[0]
        self.assertEqual((ep.weight, ep.hostname, ep.edsHealthStatus), (3, "web", "UNHEALTHY"))
        host = ep.makeHost("c1")
        self.assertFalse(host.healthy)
        self.assertEqual(host.healthFlags(), "/failed_eds_health")


class RejectionTests(SynchronousTestCase):
    """Settings txenvoy does not implement are errors naming the field."""

    def assertRejected(self, exc, path, **fields):
        e = self.assertRaises(exc, compile_, **fields)
        self.assertIn(path, str(e))
        return e

    def test_edsWithoutConfig(self):
        """An EDS cluster needs its eds_cluster_config.eds_config."""
        self.assertRejected(ConfigError, PATH + ".eds_cluster_config.eds_config", type="EDS")

    def test_edsConfigOnOtherType(self):
        self.assertRejected(ConfigError, PATH + ".eds_cluster_config",
                            eds_cluster_config={"service_name": "x"})

    def test_hostSetChangeClose(self):
        """Closing connections on a host set change is not implemented yet."""
        self.assertRejected(
            UnsupportedField, PATH + ".common_lb_config.close_connections_on_host_set_change",
            common_lb_config={"close_connections_on_host_set_change": True})

    def test_httpProtocolOptions(self):
        """
        Upstream HTTP filters; auto_config without a transport socket
        that does ALPN (Envoy's words).
        """
        key = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        opath = PATH + ".typed_extension_protocol_options[%s]" % (key,)
        self.assertRejected(
            UnsupportedField, opath + ".http_filters",
            typed_extension_protocol_options={key: {
                "@type": "type.googleapis.com/" + key,
                "http_filters": [{"name": "envoy.filters.http.upstream_codec"}],
                "explicit_http_config": {"http_protocol_options": {}}}})
        self.assertRejected(
            ConfigError, opath + ".auto_config: ALPN configured for cluster c1 which has a "
            "non-ALPN transport socket",
            typed_extension_protocol_options={key: {
                "@type": "type.googleapis.com/" + key, "auto_config": {}}})

    def test_grpcHealthCheckNeedsHttp2(self):
        """A gRPC health check on a cluster without HTTP/2: Envoy's words."""
        self.assertRejected(ConfigError, PATH + ".health_checks[0].grpc_health_check: c1 "
                            "cluster must support HTTP/2 for gRPC healthchecking",
                            health_checks=[{
                                "timeout": "1s", "interval": "1s", "unhealthy_threshold": 1,
                                "healthy_threshold": 1, "grpc_health_check": {}}])

    def test_unknownTransportSocket(self):
        """A transport socket txenvoy lacks (ALTS) is named in the error."""
        from txenvoy.config.protos import importTypeName
        importTypeName("envoy.extensions.transport_sockets.alts.v3.Alts")
        e = self.assertRejected(
            UnsupportedExtension, PATH + ".transport_socket",
            transport_socket={"name": "envoy.transport_sockets.alts", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.alts.v3.Alts",
                "handshaker_service": "x"}})
        self.assertIn("Alts", str(e))

    def test_perHostThresholdsOtherLimits(self):
        """
        Envoy 1.40 (--mode validate): a per-host limit other than
        max_connections is "Unsupported field in per_host_thresholds";
        track_remaining is accepted.
        """
        for field in ("max_requests", "max_pending_requests", "max_retries",
                      "max_connection_pools"):
            e = self.assertRejected(
                ConfigError, PATH + ".circuit_breakers.per_host_thresholds[0]." + field,
                circuit_breakers={"per_host_thresholds": [{"max_connections": 1, field: 4}]})
            self.assertIn("Unsupported field in per_host_thresholds", str(e))
        info, _ = compile_(circuit_breakers={"per_host_thresholds": [
            {"max_connections": 1, "track_remaining": True},
            {"max_connections": 5}, {"priority": "HIGH", "max_connections": 2}]})
        self.assertEqual((info.circuitBreakers.default.maxConnectionsPerHost,
                          info.circuitBreakers.high.maxConnectionsPerHost), (1, 2))

    def test_otherProtocolOptions(self):
        key = "envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions"
        self.assertRejected(UnsupportedExtension, PATH + ".typed_extension_protocol_options",
                            typed_extension_protocol_options={key: {
                                "@type": "type.googleapis.com/" + key}})

    def test_staticHostname(self):
        """Envoy's own message for a name in a STATIC cluster."""
        e = self.assertRejected(ConfigError, PATH + ".load_assignment.endpoints[0]"
                                ".lb_endpoints[0].endpoint.address.socket_address",
                                endpoints=[endpoint("localhost", 80)])
        self.assertIn("malformed IP address: localhost. Consider setting resolver_name or "
                      "setting cluster type to 'STRICT_DNS' or 'LOGICAL_DNS'", str(e))

    def test_logicalDnsSingleEndpoint(self):
        e = self.assertRejected(ConfigError, PATH + ".load_assignment", type="LOGICAL_DNS",
                                endpoints=[endpoint("a.example", 80), endpoint("b.example", 80)])
        self.assertIn("LOGICAL_DNS clusters must have a single locality_lb_endpoint and a "
                      "single lb_endpoint", str(e))

    def test_zeroWeight(self):
        self.assertRejected(ConfigError, "lb_endpoints[0].load_balancing_weight",
                            endpoints=[endpoint("10.0.0.1", 80, weight=0)])

    def test_badValues(self):
        self.assertRejected(ConfigError, PATH + ".connect_timeout", connect_timeout="0s")
        self.assertRejected(ConfigError, PATH + ".dns_refresh_rate", dns_refresh_rate="0.001s")

    def test_emptyName(self):
        e = self.assertRaises(ConfigError, compileCluster, cluster_pb2.Cluster(), PATH)
        self.assertIn(PATH + ".name", str(e))

    def test_nestedUnknownSetting(self):
        self.assertRejected(UnsupportedField, "lb_endpoints[0].endpoint.additional_addresses",
                            endpoints=[{"endpoint": {
                                "address": {"socket_address": {"address": "10.0.0.1",
                                                               "port_value": 1}},
                                "additional_addresses": [{"address": {"socket_address": {
                                    "address": "10.0.0.2", "port_value": 1}}}]}}])

    def test_laterEndpointsChecked(self):
        """
        Every endpoint's fields are checked, not only the first one's: each
        unsupported field of a later endpoint is reported with its path.
        """
        from txenvoy.config.errors import ConfigErrors, collectErrors

        def address(**extra):
            return {"socket_address": dict(address="10.0.0.1", port_value=1, **extra)}

        def check():
            with collectErrors():
                compile_(endpoints=[
                    endpoint("10.0.0.1", 1),
                    {"endpoint": {"address": address(),
                                  "additional_addresses": [{"address": address()}]}},
                    {"endpoint": {"address": address(ipv4_compat=True)}},
                    {"endpoint": {"address": address(resolver_name="r")}},
                    {"endpoint": {"address": address(protocol="UDP")}}])
        e = self.assertRaises(ConfigErrors, check)
        where = PATH + ".load_assignment.endpoints[0].lb_endpoints"
        self.assertEqual([x.path for x in e.errors], [
            where + "[1].endpoint.additional_addresses",
            where + "[3].endpoint.address.socket_address.resolver_name",
            where + "[4].endpoint.address.socket_address.protocol"])

    def test_noFieldSilentlyIgnored(self):
        """
        Setting any Cluster field that is neither implemented nor listed as
        harmless is an error: none is dropped without a word.
        """
        handled = set(clustermod._CLUSTER_HANDLED) | set(clustermod.IGNORED_CLUSTER_FIELDS)
        desc = cluster_pb2.Cluster.DESCRIPTOR
        checked = 0
        for field in desc.fields:
            if field.name in handled:
                continue
            msg = clusterProto("c1", [endpoint("127.0.0.1", 1)])
            _setSomething(msg, field)
            self.assertTrue(msg.ListFields(), field.name)
            self.assertRaises(ConfigError, compileCluster, msg, PATH)
            checked += 1
        self.assertGreater(checked, 15)


def _setSomething(msg, field):
    """Give C{field} of C{msg} a non-default value."""
    fd = field
    if fd.is_repeated:
        container = getattr(msg, fd.name)
        if fd.message_type is not None:
            container.add()
        else:
            container.append("x" if fd.type == fd.TYPE_STRING else 1)
    elif fd.message_type is not None:
        getattr(msg, fd.name).SetInParent()
    elif fd.type == fd.TYPE_BOOL:
        setattr(msg, fd.name, True)
    elif fd.type == fd.TYPE_STRING:
        setattr(msg, fd.name, "x")
    else:
        setattr(msg, fd.name, 1)


class HostTests(SynchronousTestCase):
    """L{Host}."""

    def test_perWorkerStatsSummed(self):
        h = Host(("10.0.0.1", 80))
        h.statsFor("worker_0").cx_total += 2
        h.statsFor("worker_1").cx_total += 3
        h.statsFor("worker_1").rq_active += 1
        self.assertEqual(h.stats("cx_total"), 5)
        self.assertEqual(h.stats("rq_active"), 1)
        self.assertEqual(h.allStats()["cx_total"], 5)
        self.assertIs(h.statsFor("worker_0"), h.statsFor("worker_0"))

    def test_addressString(self):
        self.assertEqual(Host(("::1", 80)).addressString, "[::1]:80")
        self.assertEqual(Host(("10.0.0.1", 80)).addressString, "10.0.0.1:80")

    def test_healthFlags(self):
        h = Host(("10.0.0.1", 80))
        self.assertEqual(h.healthFlags(), "healthy")
        self.assertTrue(h.healthy)
        h.setHealthFlag("failed_active_hc")
        self.assertEqual(h.healthFlags(), "/failed_active_hc")
        self.assertFalse(h.healthy)
        h.clearHealthFlag("failed_active_hc")
        self.assertTrue(h.healthy)
        self.assertEqual(h.edsHealthStatus(), "HEALTHY")


class ProtoJsonTests(SynchronousTestCase):
    """The fixture builder parses what Envoy's YAML would."""

    def test_roundTrip(self):
        msg = clusterProto("c1", [endpoint("10.0.0.1", 80)], connect_timeout="1s")
        self.assertEqual(json_format.MessageToDict(msg)["connectTimeout"], "1s")
