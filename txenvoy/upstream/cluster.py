# -*- test-case-name: tests.upstream.test_cluster -*-
"""
Clusters: the compiled settings of one C{envoy.config.cluster.v3.Cluster}
(L{ClusterInfo}), its stats, and the main-thread object that owns its
membership (L{PrimaryCluster}, L{StaticCluster}; the DNS types are in
L{txenvoy.upstream.dns}).

Compilation is strict in Envoy's way and in txenvoy's: every field that is
set is either implemented, listed in one of the C{IGNORED_*} tuples below
with the reason it is harmless, or rejected with
L{txenvoy.config.errors.UnsupportedField} naming its path.
"""

import socket
import threading

import attr
from google.protobuf import json_format
from twisted.internet import defer
from twisted.internet.abstract import isIPAddress, isIPv6Address
from zope.interface import implementer

from txenvoy.config import messages
from txenvoy.config.errors import ConfigError, UnsupportedExtension, UnsupportedField, report
from txenvoy.config.fields import checkFields, durationSeconds, setsOtherFields
from txenvoy.config.registry import unpackAny
from txenvoy.interfaces import ICluster
from txenvoy.network.pipe import pipeAddress
from txenvoy.network.user_space import InternalAddress
from txenvoy.upstream.health_checker import compileHealthChecks
from txenvoy.upstream.http_protocol_options import compileHttpProtocolOptions
from txenvoy.upstream.host import (
    DEGRADED_EDS_HEALTH,
    FAILED_EDS_HEALTH,
    Host,
    Locality,
)
from txenvoy.upstream.metadata_match import hostValues
from txenvoy.upstream.outlier_detection import compileOutlierDetection
from txenvoy.upstream.load_balancer import (
    LEAST_REQUEST,
    RANDOM,
    ROUND_ROBIN,
    LbConfig,
)
from txenvoy.upstream.maglev_lb import compileMaglev
from txenvoy.upstream.resource_manager import PRIORITIES, UNLIMITED, ResourceManager
from txenvoy.upstream.ring_hash_lb import compileRingHash
from txenvoy.upstream.thread_aware_lb import MainThreadTables, TableCache, newLoadBalancer

RING_HASH = "RING_HASH"
MAGLEV = "MAGLEV"
from txenvoy.upstream.subset_lb import SubsetLoadBalancer, compileSubsetConfig

STATIC = "STATIC"
STRICT_DNS = "STRICT_DNS"
LOGICAL_DNS = "LOGICAL_DNS"
ORIGINAL_DST = "ORIGINAL_DST"
#: C{cluster_type} C{envoy.clusters.aggregate}.
AGGREGATE = "AGGREGATE"
EDS = "EDS"
#: C{cluster_type} C{envoy.clusters.dynamic_forward_proxy}.
DYNAMIC_FORWARD_PROXY = "DYNAMIC_FORWARD_PROXY"
_DFP_CONFIG_TYPE = "envoy.extensions.clusters.dynamic_forward_proxy.v3.ClusterConfig"
CLUSTER_PROVIDED = "CLUSTER_PROVIDED"
_AGGREGATE_CONFIG_TYPE = "envoy.extensions.clusters.aggregate.v3.ClusterConfig"

_DISCOVERY_TYPES = {0: STATIC, 1: STRICT_DNS, 2: LOGICAL_DNS, 3: EDS, 4: ORIGINAL_DST}

#: The extension that makes each discovery type (Envoy's
#: C{ClusterFactoryImplBase::create} maps the C{type} enum to these names).
CLUSTER_FACTORY_NAMES = {
    STATIC: "envoy.cluster.static",
    STRICT_DNS: "envoy.cluster.strict_dns",
    LOGICAL_DNS: "envoy.cluster.logical_dns",
    ORIGINAL_DST: "envoy.cluster.original_dst",
    AGGREGATE: "envoy.clusters.aggregate",
    EDS: "envoy.cluster.eds",
    DYNAMIC_FORWARD_PROXY: "envoy.clusters.dynamic_forward_proxy",
}
_LB_POLICIES = {
    0: ROUND_ROBIN, 1: LEAST_REQUEST, 2: RING_HASH, 3: RANDOM, 5: MAGLEV,
    6: CLUSTER_PROVIDED, 7: "LOAD_BALANCING_POLICY_CONFIG",
}
DNS_LOOKUP_FAMILIES = {0: "AUTO", 1: "V4_ONLY", 2: "V6_ONLY", 3: "V4_PREFERRED", 4: "ALL"}
_HEALTH_STATUS = {0: "UNKNOWN", 1: "HEALTHY", 2: "UNHEALTHY", 3: "DRAINING", 4: "TIMEOUT",
                  5: "DEGRADED"}

DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_BUFFER_LIMIT = 1024 * 1024
DEFAULT_DNS_REFRESH_RATE = 5.0
DEFAULT_UPSTREAM_IDLE_TIMEOUT = 3600.0

HTTP_PROTOCOL_OPTIONS_TYPE = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
# Envoy accepts the extension name as the map key too.
_HTTP_PROTOCOL_OPTIONS_KEYS = (HTTP_PROTOCOL_OPTIONS_TYPE, "envoy.upstreams.http.http_protocol_options")
_RAW_BUFFER_TYPE = "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
_GETADDRINFO_TYPE = "envoy.extensions.network.dns_resolver.getaddrinfo.v3.GetAddrInfoDnsResolverConfig"
_LB_POLICY_TYPES = {
    "envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin": ROUND_ROBIN,
    "envoy.extensions.load_balancing_policies.random.v3.Random": RANDOM,
    "envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest": LEAST_REQUEST,
    "envoy.extensions.load_balancing_policies.ring_hash.v3.RingHash": RING_HASH,
    "envoy.extensions.load_balancing_policies.maglev.v3.Maglev": MAGLEV,
}
_LB_POLICY_PACKAGE = "envoy.extensions.load_balancing_policies."
_WRR_LOCALITY = "envoy.extensions.load_balancing_policies.wrr_locality.v3.WrrLocality"
_CLIENT_SIDE_WRR = ("envoy.extensions.load_balancing_policies.client_side_weighted_round_robin."
                    "v3.ClientSideWeightedRoundRobin")

# Cluster fields that are accepted and deliberately not acted on, each
# because ignoring it cannot change what a request sees:
IGNORED_CLUSTER_FIELDS = (
    # Read only by the subset load balancer and metadata_match, which are
    # rejected where they are configured.
    "metadata",
)

# common_lb_config fields accepted and not acted on:
IGNORED_COMMON_LB_FIELDS = ()
# zone_aware_lb_config fields accepted and not acted on: zone-aware routing
# needs cluster_manager.local_cluster_name's membership, which txenvoy does
# not route by; without a local cluster Envoy does not use them either.
IGNORED_ZONE_AWARE_FIELDS = ("routing_enabled", "min_cluster_size",
                             "force_locality_direct_routing")

# load_assignment (and nested) fields accepted and not acted on:
IGNORED_LOAD_ASSIGNMENT_FIELDS = (
    # Informational: Envoy does not check it against the cluster name for
    # STATIC and DNS clusters.
    "cluster_name",
)
IGNORED_LOCALITY_ENDPOINTS_FIELDS = (
    # Subset load balancing / metadata_match only (rejected).
    "metadata",
    # Not used by Envoy's built-in load balancers.
    "proximity",
)
IGNORED_LB_ENDPOINT_FIELDS = ()
IGNORED_ENDPOINT_FIELDS = ()
HEALTH_CHECK_CONFIG_FIELDS = ("port_value", "hostname", "disable_active_health_check")
IGNORED_POLICY_FIELDS = (
    # EDS only: static and DNS assignments never go stale.
    "endpoint_stale_after",
)
IGNORED_SOCKET_ADDRESS_FIELDS = (
    # Only affects binding a dual-stack listening socket.
    "ipv4_compat",
)
IGNORED_DNS_RESOLVER_FIELDS = (
    # The size of Envoy's resolver thread pool; txenvoy resolves in the
    # main reactor's thread pool.
    "num_resolver_threads",
)


class Thresholds:
    """
    One circuit breaker priority's limits (Envoy's
    C{CircuitBreakers.Thresholds}), as printed by C{/clusters}.
    """

    __slots__ = ("priority", "maxConnections", "maxPendingRequests", "maxRequests",
                 "maxRetries", "maxConnectionPools", "trackRemaining", "retryBudget",
                 "maxConnectionsPerHost")

    def __init__(self, priority, maxConnections=1024, maxPendingRequests=1024,
                 maxRequests=1024, maxRetries=3, maxConnectionPools=UNLIMITED,
                 trackRemaining=False, retryBudget=None, maxConnectionsPerHost=UNLIMITED):
        self.priority = priority
        #: C{per_host_thresholds} C{max_connections} of this priority.
        self.maxConnectionsPerHost = maxConnectionsPerHost
        self.maxConnections = maxConnections
        self.maxPendingRequests = maxPendingRequests
        self.maxRequests = maxRequests
        self.maxRetries = maxRetries
        self.maxConnectionPools = maxConnectionPools
        self.trackRemaining = trackRemaining
        #: C{(budget_percent, min_retry_concurrency)} or C{None}.
        self.retryBudget = retryBudget

    def __repr__(self):
        return "Thresholds(%s, %d, %d, %d, %d)" % (
            self.priority, self.maxConnections, self.maxPendingRequests,
            self.maxRequests, self.maxRetries)


class CircuitBreakers:
    """
    @ivar default: L{Thresholds} for C{DEFAULT} priority.
    @ivar high: L{Thresholds} for C{HIGH} priority.
    """

    __slots__ = ("default", "high")

    def __init__(self, default=None, high=None):
        self.default = default or Thresholds("DEFAULT")
        self.high = high or Thresholds("HIGH")

    @property
    def thresholds(self):
        """C{(default, high)}."""
        return (self.default, self.high)


class TcpKeepalive:
    """Compiled C{upstream_connection_options.tcp_keepalive}; C{None} = OS default."""

    __slots__ = ("probes", "time", "interval")

    def __init__(self, probes=None, time=None, interval=None):
        self.probes = probes
        self.time = time
        self.interval = interval


class DnsSettings:
    """
    The DNS settings of a C{STRICT_DNS} / C{LOGICAL_DNS} cluster.

    @ivar lookupFamily: one of C{AUTO}, C{V4_ONLY}, C{V6_ONLY},
        C{V4_PREFERRED}, C{ALL}.
    @ivar refreshRate: seconds between successful resolutions (5.0).
    @ivar jitter: up to this many seconds added to each refresh.
    @ivar failureBaseInterval: C{dns_failure_refresh_rate.base_interval}, or
        C{None} to retry failures at L{refreshRate}.
    @ivar failureMaxInterval: its C{max_interval} (10 x base by default).
    """

    __slots__ = ("lookupFamily", "refreshRate", "jitter", "failureBaseInterval",
                 "failureMaxInterval")

    def __init__(self, lookupFamily="AUTO", refreshRate=DEFAULT_DNS_REFRESH_RATE,
                 jitter=0.0, failureBaseInterval=None, failureMaxInterval=None):
        self.lookupFamily = lookupFamily
        self.refreshRate = refreshRate
        self.jitter = jitter
        self.failureBaseInterval = failureBaseInterval
        self.failureMaxInterval = failureMaxInterval


class OriginalDstSettings:
    """
    The settings of an C{ORIGINAL_DST} cluster.

    @ivar cleanupInterval: seconds between sweeps of unused hosts
        (C{cleanup_interval}, 5 by default).
    @ivar httpHeaderName: the lower-case request header naming the
        destination (C{original_dst_lb_config.use_http_header}; default
        C{x-envoy-original-dst-host}), or C{None} when headers are not read.
    @ivar portOverride: C{upstream_port_override}, or C{None}.
    """

    __slots__ = ("cleanupInterval", "httpHeaderName", "portOverride")

    def __init__(self, cleanupInterval=5.0, httpHeaderName=None, portOverride=None):
        self.cleanupInterval = cleanupInterval
        self.httpHeaderName = httpHeaderName
        self.portOverride = portOverride


class ClusterInfo:
    """
    The compiled, immutable settings of one cluster, shared read-only by
    the main thread and every worker.

    @ivar name: the cluster's name.
    @ivar observabilityName: C{alt_stat_name} or the name; stats use it.
    @ivar statPrefix: C{"cluster.<observabilityName>."}.
    @ivar type: C{"STATIC"}, C{"STRICT_DNS"} or C{"LOGICAL_DNS"}.
    @ivar connectTimeout: seconds (5.0).
    @ivar perConnectionBufferLimitBytes: (1 MiB).
    @ivar lbPolicy: C{"ROUND_ROBIN"}, C{"RANDOM"} or C{"LEAST_REQUEST"}.
    @ivar lbConfig: the L{LbConfig} built from it.
    @ivar maxRequestsPerConnection: 0 for unlimited.
    @ivar upstreamIdleTimeout: seconds an HTTP connection may sit idle in
        its pool before it is closed (C{common_http_protocol_options.
        idle_timeout}; Envoy's default is 1 hour, 0 for never).
    @ivar upstreamMaxConnectionDuration: seconds an HTTP connection may live
        (C{common_http_protocol_options.max_connection_duration}), 0 for
        ever.
    @ivar upstreamMaxStreamDuration: seconds an upstream request may last
        from its connection (C{common_http_protocol_options.
        max_stream_duration}), 0 for no limit.
    @ivar upstreamMaxHeadersCount: the most headers a response may have
        (C{common_http_protocol_options.max_headers_count}, 100).
    @ivar upstreamMaxResponseHeadersKb: the largest response head, in KiB
        (C{max_response_headers_kb}, 60).
    @ivar upstreamEnableTrailers: C{explicit_http_config.http_protocol_options.
        enable_trailers}: request trailers are sent, response trailers passed on.
    @ivar upstreamHttpOptions: the compiled C{upstream_http_protocol_options}
        (L{txenvoy.upstream.http_protocol_options.UpstreamHttpOptions}), or
        C{None}.
    @ivar upstreamHttp2Options: the L{txenvoy.http.http2.options.Http2Options}
        of an HTTP/2 upstream (C{explicit_http_config.http2_protocol_options},
        or C{use_downstream_protocol_config}'s), or C{None} for HTTP/1.1.
    @ivar upstreamUseDownstreamProtocol: C{use_downstream_protocol_config}:
        HTTP/2 upstream only for requests that came over HTTP/2.
    @ivar upstreamAutoConfig: C{auto_config}: each TLS connection offers
        ALPN C{h2,http/1.1} and speaks what the handshake chose.
    @ivar circuitBreakers: L{CircuitBreakers}.
    @ivar resourceManagers: C{{priority: ResourceManager}}, the cluster's
        circuit breaker counts, shared by every worker (see
        L{txenvoy.upstream.resource_manager}).
    @ivar typedExtensionProtocolOptions: C{{key: google.protobuf.Any}} as
        configured.
    @ivar httpProtocolOptions: the unpacked C{HttpProtocolOptions} message,
        or C{None}.
    @ivar dns: L{DnsSettings}.
    @ivar bindAddress: C{(ip, port)} from C{upstream_bind_config}, or C{None}.
    @ivar tcpKeepalive: L{TcpKeepalive} or C{None}.
    @ivar transportSocket: the compiled upstream transport socket (an object
        with C{wrapProtocolFactory}), or C{None} for plain TCP.
    @ivar waitForWarmOnInit: whether server init waits for this cluster.
    @ivar addedViaApi: whether CDS gave it (C{False} for static clusters).
    @ivar proto: the C{Cluster} message as configured.
    @ivar healthCheck: the compiled C{health_checks[0]}
        (L{txenvoy.upstream.health_checker.HealthCheckConfig}), or C{None}.
    @ivar outlierDetection: the compiled C{outlier_detection}
        (L{txenvoy.upstream.outlier_detection.OutlierConfig}), or C{None}.
    @ivar originalDst: L{OriginalDstSettings} (read by C{ORIGINAL_DST}
        clusters only).
    @ivar lbSubset: the compiled C{lb_subset_config}
        (L{txenvoy.upstream.subset_lb.SubsetConfig}), or C{None}.
    @ivar aggregateClusters: an aggregate cluster's C{clusters}, in order
        (a tuple of names).
    @ivar edsConfig: an C{EDS} cluster's C{(ConfigSource, serviceName)}.
    """

    def __init__(self, **kw):
        self.name = kw.pop("name")
        self.observabilityName = kw.pop("observabilityName", "") or self.name
        self.statPrefix = "cluster.%s." % (self.observabilityName,)
        self.type = kw.pop("type", STATIC)
        self.connectTimeout = kw.pop("connectTimeout", DEFAULT_CONNECT_TIMEOUT)
        self.perConnectionBufferLimitBytes = kw.pop(
            "perConnectionBufferLimitBytes", DEFAULT_BUFFER_LIMIT)
        self.lbConfig = kw.pop("lbConfig", None) or LbConfig()
        self.lbPolicy = self.lbConfig.policy
        self.maxRequestsPerConnection = kw.pop("maxRequestsPerConnection", 0)
        self.upstreamIdleTimeout = kw.pop("upstreamIdleTimeout", DEFAULT_UPSTREAM_IDLE_TIMEOUT)
        self.upstreamMaxConnectionDuration = kw.pop("upstreamMaxConnectionDuration", 0.0)
        self.upstreamMaxStreamDuration = kw.pop("upstreamMaxStreamDuration", 0.0)
        self.upstreamMaxHeadersCount = kw.pop("upstreamMaxHeadersCount", 100)
        self.upstreamMaxResponseHeadersKb = kw.pop("upstreamMaxResponseHeadersKb", 60)
        self.upstreamEnableTrailers = kw.pop("upstreamEnableTrailers", False)
        self.upstreamHttpOptions = kw.pop("upstreamHttpOptions", None)
        self.upstreamHttp2Options = kw.pop("upstreamHttp2Options", None)
        self.upstreamUseDownstreamProtocol = kw.pop("upstreamUseDownstreamProtocol", False)
        self.upstreamAutoConfig = bool(kw.pop("upstreamAutoConfig", False))
        self.circuitBreakers = kw.pop("circuitBreakers", None) or CircuitBreakers()
        self.resourceManagers = {t.priority: ResourceManager(t)
                                 for t in self.circuitBreakers.thresholds}
        self.typedExtensionProtocolOptions = kw.pop("typedExtensionProtocolOptions", {})
        self.httpProtocolOptions = kw.pop("httpProtocolOptions", None)
        self.dns = kw.pop("dns", None) or DnsSettings()
        self.bindAddress = kw.pop("bindAddress", None)
        self.tcpKeepalive = kw.pop("tcpKeepalive", None)
        self.transportSocket = kw.pop("transportSocket", None)
        self.waitForWarmOnInit = kw.pop("waitForWarmOnInit", True)
        self.addedViaApi = kw.pop("addedViaApi", False)
        self.proto = kw.pop("proto", None)
        self.healthCheck = kw.pop("healthCheck", None)
        self.outlierDetection = kw.pop("outlierDetection", None)
        self.originalDst = kw.pop("originalDst", None) or OriginalDstSettings()
        self.lbSubset = kw.pop("lbSubset", None)
        self.aggregateClusters = kw.pop("aggregateClusters", ())
        self.edsConfig = kw.pop("edsConfig", None)
        self.dnsCacheConfig = kw.pop("dnsCacheConfig", None)
        if kw:
            raise TypeError("unknown ClusterInfo settings: %s" % (sorted(kw),))

    def __setattr__(self, name, value):
        if "_frozen" in self.__dict__:
            raise AttributeError("ClusterInfo is immutable")
        object.__setattr__(self, name, value)

    def freeze(self):
        """Forbid further changes (done once compiled)."""
        self.__dict__["_frozen"] = True
        return self

    def __repr__(self):
        return "<ClusterInfo %s %s %s>" % (self.name, self.type, self.lbPolicy)


class EndpointSpec:
    """
    One configured C{lb_endpoint}: what to resolve and how to weigh it.

    @ivar address: the configured address (an IP, or a DNS name for the
        DNS cluster types).
    @ivar port: the port.
    @ivar hostname: the endpoint's C{hostname} field.
    """

    __slots__ = ("address", "port", "hostname", "weight", "priority", "locality",
                 "healthFlags", "edsHealthStatus", "_path", "healthCheck", "hashKey",
                 "metadata", "filterMetadata")

    def __init__(self, address, port, hostname="", weight=1, priority=0, locality=None,
                 healthFlags=(), edsHealthStatus="HEALTHY", path="", healthCheck=(0, "", False),
                 hashKey="", metadata=None, filterMetadata=None):
        self.address = address
        self.port = port
        self.hostname = hostname
        self.weight = weight
        self.priority = priority
        self.locality = locality
        self.healthFlags = healthFlags
        self.edsHealthStatus = edsHealthStatus
        # Its field path, or (locality path, index) to make it from.
        self._path = path
        # health_check_config: (port_value, hostname, disable_active_health_check).
        self.healthCheck = healthCheck
        self.hashKey = hashKey
        # envoy.lb metadata (metadata_match.hostValues).
        self.metadata = metadata
        # Every namespace of the endpoint's filter_metadata, as dicts
        # (what an internal_upstream transport socket passes through).
        self.filterMetadata = filterMetadata

    @property
    def path(self):
        """The field path of its C{endpoint}."""
        path = self._path
        if isinstance(path, tuple):
            path = self._path = _lbEndpointPath(*path) + ".endpoint"
        return path

    def makeHost(self, clusterName, ip=None, hostname=None):
        """A new L{Host} for this endpoint at C{ip} (default: the address)."""
        metadata = self.metadata
        healthCheck = self.healthCheck
        # Positional: an EDS update makes ten thousand.
        return Host(
            (ip if ip is not None else self.address, self.port),
            self.hostname if hostname is None else hostname,
            self.weight, self.priority, self.locality, clusterName, self.healthFlags,
            self.edsHealthStatus, healthCheck[0], healthCheck[1], healthCheck[2], self.hashKey,
            metadata, bool(metadata) and metadata.get("canary", ("",))[0] == "true",
            self.filterMetadata)


# --- compilation -------------------------------------------------------

_CLUSTER_HANDLED = frozenset((
    "name", "alt_stat_name", "type", "connect_timeout", "per_connection_buffer_limit_bytes",
    "lb_policy", "load_assignment", "max_requests_per_connection", "circuit_breakers",
    "typed_extension_protocol_options", "dns_refresh_rate", "dns_jitter",
    "dns_failure_refresh_rate", "dns_lookup_family", "typed_dns_resolver_config",
    "wait_for_warm_on_init", "upstream_bind_config", "least_request_lb_config",
    "round_robin_lb_config", "common_lb_config", "transport_socket",
    "protocol_selection", "upstream_connection_options", "load_balancing_policy",
    "health_checks", "outlier_detection", "cleanup_interval", "original_dst_lb_config",
    "ring_hash_lb_config", "maglev_lb_config",
    "lb_subset_config", "cluster_type", "eds_cluster_config",
))


def compileCluster(proto, path, addedViaApi=False, secretManager=None):
    """
    Compile one C{Cluster} message.

    @param path: its field path, e.g. C{static_resources.clusters[0]}.
    @param addedViaApi: whether CDS gave it.
    @param secretManager: the L{txenvoy.xds.sds_api.SecretManager} of the
        SDS secrets its TLS context names, or C{None}.
    @return: C{(ClusterInfo, [EndpointSpec])}.
    @raise ConfigError: for an invalid or unsupported setting.
    """
    checkFields(proto, _CLUSTER_HANDLED, path, IGNORED_CLUSTER_FIELDS)
    if not proto.name:
        raise ConfigError(
            "%s.name: value length must be at least 1 characters "
            "(ClusterValidationError.Name)" % (path,))
    kw = {"name": proto.name, "observabilityName": proto.alt_stat_name, "proto": proto,
          "addedViaApi": addedViaApi}

    ctype = _DISCOVERY_TYPES.get(proto.type, str(proto.type))
    if proto.WhichOneof("cluster_discovery_type") == "cluster_type":
        ct = proto.cluster_type
        typeName = ct.typed_config.type_url.rsplit("/", 1)[-1]
        if typeName == _AGGREGATE_CONFIG_TYPE:
            ctype = AGGREGATE
            kw["aggregateClusters"] = _compileAggregate(ct, path + ".cluster_type")
        elif typeName == _DFP_CONFIG_TYPE:
            ctype = DYNAMIC_FORWARD_PROXY
            kw["dnsCacheConfig"] = _compileDynamicForwardProxy(ct, path + ".cluster_type")
        else:
            report(UnsupportedExtension(path + ".cluster_type", typeName, ct.name))
    if ctype == EDS:
        kw["edsConfig"] = _compileEdsClusterConfig(proto, path)
    elif proto.HasField("eds_cluster_config"):
        raise ConfigError("%s.eds_cluster_config: only for a cluster of type EDS" % (path,))
    if ctype not in (STATIC, STRICT_DNS, LOGICAL_DNS, ORIGINAL_DST, AGGREGATE, EDS,
                     DYNAMIC_FORWARD_PROXY):
        report(UnsupportedField(path + ".type", "type %s" % (ctype,)))
        # Reported: the rest of the cluster is checked as a static one.
        ctype = STATIC
    kw["type"] = ctype

    if proto.HasField("connect_timeout"):
        t = durationSeconds(proto.connect_timeout)
        if t <= 0:
            raise ConfigError(
                "%s.connect_timeout: value must be greater than 0s "
                "(ClusterValidationError.ConnectTimeout)" % (path,))
        kw["connectTimeout"] = t
    if proto.HasField("per_connection_buffer_limit_bytes"):
        kw["perConnectionBufferLimitBytes"] = proto.per_connection_buffer_limit_bytes.value
    if proto.HasField("max_requests_per_connection"):
        kw["maxRequestsPerConnection"] = proto.max_requests_per_connection.value

    kw["lbConfig"] = _compileLb(proto, path)
    kw["originalDst"] = _compileOriginalDst(proto, path, ctype)
    kw["lbSubset"] = compileSubsetConfig(proto, path)
    kw["circuitBreakers"] = _compileCircuitBreakers(proto, path)
    _compileProtocolOptions(proto, path, kw)
    kw["dns"] = _compileDns(proto, path)
    if proto.HasField("wait_for_warm_on_init"):
        kw["waitForWarmOnInit"] = proto.wait_for_warm_on_init.value
    if proto.HasField("upstream_bind_config"):
        kw["bindAddress"] = _compileBindConfig(proto.upstream_bind_config,
                                               path + ".upstream_bind_config")
    if proto.HasField("upstream_connection_options"):
        kw["tcpKeepalive"] = _compileConnectionOptions(
            proto.upstream_connection_options, path + ".upstream_connection_options")
    if proto.HasField("transport_socket"):
        ts = proto.transport_socket
        checkFields(ts, ("name", "typed_config"), path + ".transport_socket")
        typeName = ts.typed_config.type_url.rsplit("/", 1)[-1]
        if typeName != _RAW_BUFFER_TYPE:
            kw["transportSocket"] = _compileTransportSocket(
                ts, path + ".transport_socket", secretManager,
                "cluster.%s." % (proto.alt_stat_name or proto.name,))
    if proto.protocol_selection != 0:
        report(UnsupportedField(path + ".protocol_selection", "USE_DOWNSTREAM_PROTOCOL"))
    autoPath = kw.get("upstreamAutoConfig")
    if autoPath and not getattr(kw.get("transportSocket"), "supportsAlpn", False):
        # Envoy's ClusterInfoImpl: auto_config needs a socket that does ALPN.
        raise ConfigError("%s: ALPN configured for cluster %s which has a non-ALPN "
                          "transport socket" % (autoPath, proto.name))

    kw["healthCheck"] = compileHealthChecks(
        proto, path, http2=kw.get("upstreamHttp2Options") is not None)
    kw["outlierDetection"] = compileOutlierDetection(proto, path)
    endpoints = _compileLoadAssignment(proto, path, ctype)
    if proto.health_checks and any(isinstance(e.address, InternalAddress) for e in endpoints):
        # Health checks run on the main thread, which has no internal listeners.
        report(UnsupportedField(path + ".health_checks", "of envoy_internal_address endpoints"))
    info = ClusterInfo(**kw).freeze()
    return info, endpoints


def _compileEdsClusterConfig(proto, path):
    """
    C{(edsConfig, serviceName)} of an C{EDS} cluster: the C{ConfigSource}
    message (its source is checked when the cluster subscribes) and the
    name its C{ClusterLoadAssignment} has (C{service_name}, or the
    cluster's name).
    """
    epath = path + ".eds_cluster_config"
    eds = proto.eds_cluster_config
    checkFields(eds, ("eds_config", "service_name"), epath)
    if not eds.HasField("eds_config"):
        raise ConfigError("%s.eds_config: value is required" % (epath,))
    return eds.eds_config, eds.service_name or proto.name


def _compileTransportSocket(ts, path, secretManager, statPrefix):
    # Imported here: extensions import this module.
    import txenvoy.extensions  # noqa: F401  (registers the built-in transport sockets)
    from txenvoy.config.context import FactoryContext
    from txenvoy.config.registry import Category, createExtension

    context = FactoryContext(None, None, secretManager=secretManager)
    # Where the socket factory counts (client_ssl_socket_factory.*).
    context.clusterStatPrefix = statPrefix
    return createExtension(Category.TRANSPORT_SOCKET_UPSTREAM, ts, context, path)


def _compileLb(proto, path):
    cfg = LbConfig()
    if proto.HasField("load_balancing_policy"):
        _compilePolicyList(cfg, proto.load_balancing_policy, path + ".load_balancing_policy",
                           proto)
    else:
        policy = _LB_POLICIES.get(proto.lb_policy, str(proto.lb_policy))
        if policy == "LOAD_BALANCING_POLICY_CONFIG":
            raise ConfigError("%s.lb_policy: LOAD_BALANCING_POLICY_CONFIG needs "
                              "load_balancing_policy" % (path,))
        if policy not in (ROUND_ROBIN, RANDOM, LEAST_REQUEST, CLUSTER_PROVIDED, RING_HASH,
                          MAGLEV):
            report(UnsupportedField(path + ".lb_policy", "lb_policy %s" % (policy,)))
            policy = ROUND_ROBIN
        cfg.policy = policy
        useHostname, factor = _consistentHashing(proto.common_lb_config,
                                                 path + ".common_lb_config")
        # Envoy reads the other policy's settings without complaint.
        ringPath = path + ".ring_hash_lb_config"
        ring = proto.ring_hash_lb_config if proto.HasField("ring_hash_lb_config") else None
        maglevPath = path + ".maglev_lb_config"
        maglev = proto.maglev_lb_config if proto.HasField("maglev_lb_config") else None
        if policy == RING_HASH:
            cfg.hashing = TableCache(compileRingHash(ring, ringPath, useHostname,
                                                     hashBalanceFactor=factor))
        elif ring is not None:
            checkFields(ring, ("minimum_ring_size", "maximum_ring_size", "hash_function"),
                        ringPath)
        if policy == MAGLEV:
            cfg.hashing = TableCache(compileMaglev(maglev, maglevPath, useHostname,
                                                   hashBalanceFactor=factor))
        elif maglev is not None:
            checkFields(maglev, ("table_size",), maglevPath)
    if proto.HasField("least_request_lb_config"):
        lpath = path + ".least_request_lb_config"
        checkFields(proto.least_request_lb_config, ("choice_count", "active_request_bias"), lpath)
        _applyLeastRequest(cfg, proto.least_request_lb_config, lpath)
    if proto.HasField("round_robin_lb_config"):
        checkFields(proto.round_robin_lb_config, (), path + ".round_robin_lb_config")
    if proto.HasField("common_lb_config"):
        cpath = path + ".common_lb_config"
        common = proto.common_lb_config
        checkFields(common, ("healthy_panic_threshold", "update_merge_window",
                             "locality_weighted_lb_config", "zone_aware_lb_config",
                             "consistent_hashing_lb_config"), cpath,
                    IGNORED_COMMON_LB_FIELDS)
        if common.HasField("locality_weighted_lb_config"):
            if cfg.hashing is not None:
                # Envoy normalizes ring and table weights per locality;
                # not done here yet.
                report(UnsupportedField(cpath + ".locality_weighted_lb_config",
                                        "with lb_policy %s" % (cfg.policy,)))
            checkFields(common.locality_weighted_lb_config, (),
                        cpath + ".locality_weighted_lb_config")
            cfg.localityWeights = _localityWeights(proto.load_assignment)
        if common.HasField("zone_aware_lb_config"):
            zone = common.zone_aware_lb_config
            checkFields(zone, ("fail_traffic_on_panic",), cpath + ".zone_aware_lb_config",
                        IGNORED_ZONE_AWARE_FIELDS)
            cfg.failTrafficOnPanic = zone.fail_traffic_on_panic
        if common.HasField("update_merge_window"):
            cfg.updateMergeWindow = max(0.0, durationSeconds(common.update_merge_window))
        if common.HasField("healthy_panic_threshold"):
            checkFields(common.healthy_panic_threshold, ("value",),
                        cpath + ".healthy_panic_threshold")
            v = common.healthy_panic_threshold.value
            if not 0 <= v <= 100:
                raise ConfigError("%s.healthy_panic_threshold.value: value must be inside "
                                  "range [0, 100]" % (cpath,))
            cfg.healthyPanicThreshold = v
    if proto.load_assignment.HasField("policy"):
        pol = proto.load_assignment.policy
        if pol.HasField("overprovisioning_factor"):
            f = pol.overprovisioning_factor.value
            if f < 1:
                raise ConfigError("%s.load_assignment.policy.overprovisioning_factor: value "
                                  "must be greater than 0" % (path,))
            cfg.overprovisioningFactor = f
    return cfg


def _localityWeights(la):
    """
    C{{priority: {localityKey: load_balancing_weight}}} of a load
    assignment; a locality listed twice at one priority keeps its last
    weight, as Envoy's C{PriorityStateManager} does, and one without a
    weight has 0 (it gets no traffic).
    """
    weights = {}
    for lle in la.endpoints:
        key = (lle.locality.region, lle.locality.zone, lle.locality.sub_zone)
        weight = lle.load_balancing_weight.value if lle.HasField("load_balancing_weight") else 0
        weights.setdefault(lle.priority, {})[key] = weight
    return weights


def _compileAggregate(clusterType, path):
    """The C{clusters} of an aggregate cluster's C{ClusterConfig}."""
    checkFields(clusterType, ("name", "typed_config"), path)
    cpath = path + ".typed_config"
    msg = unpackAny(clusterType.typed_config, cpath)
    checkFields(msg, ("clusters",), cpath)
    if not msg.clusters:
        raise ConfigError("%s.clusters: Proto constraint validation failed "
                          "(ClusterConfigValidationError.Clusters: value must contain at least "
                          "1 item(s))" % (cpath,))
    return tuple(msg.clusters)


def _compileDynamicForwardProxy(clusterType, path):
    """The C{dns_cache_config} of a dynamic forward proxy C{ClusterConfig}."""
    from txenvoy.extensions.common.dns_cache import compileDnsCacheConfig

    checkFields(clusterType, ("name", "typed_config"), path)
    cpath = path + ".typed_config"
    msg = unpackAny(clusterType.typed_config, cpath)
    checkFields(msg, ("dns_cache_config", "allow_insecure_cluster_options",
                      "allow_coalesced_connections"), cpath)
    if not msg.HasField("dns_cache_config"):
        raise ConfigError("%s.dns_cache_config: txenvoy implements the DNS cache "
                          "(sub_clusters_config is not implemented)" % (cpath,))
    return compileDnsCacheConfig(msg.dns_cache_config, cpath + ".dns_cache_config")


def _compileOriginalDst(proto, path, ctype):
    """
    C{cleanup_interval} and C{original_dst_lb_config}, with the checks
    Envoy's C{OriginalDstClusterFactory} and cluster manager make: an
    C{ORIGINAL_DST} cluster has no endpoints and only C{CLUSTER_PROVIDED}
    load balancing, which no other type provides.
    """
    settings = OriginalDstSettings()
    if proto.HasField("cleanup_interval"):
        interval = durationSeconds(proto.cleanup_interval)
        if interval <= 0:
            raise ConfigError("%s.cleanup_interval: value must be greater than 0s "
                              "(ClusterValidationError.CleanupInterval)" % (path,))
        settings.cleanupInterval = interval
    lbc = proto.original_dst_lb_config
    if proto.HasField("original_dst_lb_config"):
        opath = path + ".original_dst_lb_config"
        checkFields(lbc, ("use_http_header", "http_header_name", "upstream_port_override"),
                    opath)
        if lbc.HasField("upstream_port_override"):
            port = lbc.upstream_port_override.value
            if port > 65535:
                raise ConfigError("%s.upstream_port_override: value must be less than or "
                                  "equal to 65535" % (opath,))
            settings.portOverride = port
        if lbc.use_http_header:
            settings.httpHeaderName = (lbc.http_header_name or "x-envoy-original-dst-host").lower()
    lbPolicy = _LB_POLICIES.get(proto.lb_policy, str(proto.lb_policy))
    if ctype == ORIGINAL_DST:
        if lbPolicy != CLUSTER_PROVIDED:
            raise ConfigError(
                "%s.lb_policy: cluster: LB policy %s is not valid for Cluster type "
                "ORIGINAL_DST. Only 'CLUSTER_PROVIDED' is allowed with cluster type "
                "'ORIGINAL_DST'" % (path, lbPolicy))
        if proto.HasField("load_assignment"):
            raise ConfigError("%s.load_assignment: ORIGINAL_DST clusters must have no load "
                              "assignment configured" % (path,))
        if not lbc.use_http_header and lbc.http_header_name:
            raise ConfigError(
                "%s.original_dst_lb_config.http_header_name: ORIGINAL_DST cluster: invalid "
                "config http_header_name=%s and use_http_header is false. Set use_http_header "
                "to true if http_header_name is desired." % (path, lbc.http_header_name))
    elif ctype in (AGGREGATE, DYNAMIC_FORWARD_PROXY):
        if lbPolicy != CLUSTER_PROVIDED:
            raise ConfigError("%s.lb_policy: cluster manager: cluster provided LB not specified "
                              "but cluster '%s' provided one. Check cluster documentation."
                              % (path, proto.name))
    elif lbPolicy == CLUSTER_PROVIDED and not proto.HasField("load_balancing_policy"):
        raise ConfigError("%s.lb_policy: cluster manager: cluster provided LB specified but "
                          "cluster '%s' did not provide one. Check cluster documentation."
                          % (path, proto.name))
    return settings


def _compilePolicyList(cfg, lbp, path, proto):
    """
    A C{load_balancing_policy}: Envoy uses the first policy it has a
    factory for. Every C{envoy.load_balancing_policies.*} policy is one
    Envoy has, so one txenvoy lacks is refused where it stands rather than
    skipped for a later one Envoy would never reach.
    """
    checkFields(lbp, ("policies",), path)
    if not lbp.policies:
        raise ConfigError("%s.policies: must have at least one policy" % (path,))
    for i, policy in enumerate(lbp.policies):
        ppath = "%s.policies[%d]" % (path, i)
        checkFields(policy, ("typed_extension_config",), ppath)
        ext = policy.typed_extension_config
        typeName = ext.typed_config.type_url.rsplit("/", 1)[-1]
        if typeName in _LB_POLICY_TYPES or typeName == _WRR_LOCALITY:
            _compilePolicy(cfg, typeName, ext.typed_config,
                           ppath + ".typed_extension_config.typed_config", proto)
            return
        if typeName.startswith(_LB_POLICY_PACKAGE):
            raise UnsupportedExtension(ppath, typeName, ext.name)
    ext = lbp.policies[0].typed_extension_config
    raise UnsupportedExtension("%s.policies[0]" % (path,),
                               ext.typed_config.type_url.rsplit("/", 1)[-1], ext.name)


def _compilePolicy(cfg, typeName, anyMsg, ppath, proto):
    msg = unpackAny(anyMsg, ppath)
    if typeName == _WRR_LOCALITY:
        # Envoy 1.40 takes only client_side_weighted_round_robin under it,
        # which txenvoy does not have.
        checkFields(msg, ("endpoint_picking_policy",), ppath)
        epath = ppath + ".endpoint_picking_policy"
        for i, child in enumerate(msg.endpoint_picking_policy.policies):
            ext = child.typed_extension_config
            childType = ext.typed_config.type_url.rsplit("/", 1)[-1]
            if childType == _CLIENT_SIDE_WRR:
                raise UnsupportedExtension("%s.policies[%d]" % (epath, i), childType, ext.name)
        raise ConfigError("%s: Currently WrrLocalityLoadBalancer only supports "
                          "ClientSideWeightedRoundRobinLoadBalancer as its endpoint picking "
                          "policy." % (epath,))
    cfg.policy = _LB_POLICY_TYPES[typeName]
    if cfg.policy == LEAST_REQUEST:
        checkFields(msg, ("choice_count", "active_request_bias", "selection_method",
                          "locality_lb_config"), ppath)
        if msg.selection_method != 0:
            report(UnsupportedField(ppath + ".selection_method", "FULL_SCAN"))
        _applyLeastRequest(cfg, msg, ppath)
    elif cfg.policy in (RING_HASH, MAGLEV):
        useHostname, factor = _consistentHashing(msg, ppath, ("hash_policy",))
        if cfg.policy == RING_HASH:
            if not msg.HasField("consistent_hashing_lb_config"):
                # The deprecated fields count only without the new message.
                useHostname = msg.use_hostname_for_hashing
                factor = msg.hash_balance_factor.value
            table = compileRingHash(msg, ppath, useHostname, True, factor)
        else:
            table = compileMaglev(msg, ppath, useHostname, True, factor)
        table.hashPolicies = _lbHashPolicies(msg, ppath)
        cfg.hashing = TableCache(table)
        return
    else:
        checkFields(msg, ("locality_lb_config",), ppath)
    if msg.HasField("locality_lb_config"):
        lpath = ppath + ".locality_lb_config"
        llc = msg.locality_lb_config
        checkFields(llc, ("locality_weighted_lb_config",), lpath)
        if llc.HasField("locality_weighted_lb_config"):
            checkFields(llc.locality_weighted_lb_config, (),
                        lpath + ".locality_weighted_lb_config")
            cfg.localityWeights = _localityWeights(proto.load_assignment)


def _consistentHashing(msg, path, more=()):
    """
    C{(use_hostname_for_hashing, hash_balance_factor)} from
    C{msg.consistent_hashing_lb_config} (C{(False, 0)} without it).
    """
    if not msg.HasField("consistent_hashing_lb_config"):
        return False, 0
    chc = msg.consistent_hashing_lb_config
    cpath = path + ".consistent_hashing_lb_config"
    checkFields(chc, ("use_hostname_for_hashing", "hash_balance_factor") + more, cpath)
    return chc.use_hostname_for_hashing, chc.hash_balance_factor.value


def _lbHashPolicies(msg, path):
    """
    The policy's own C{consistent_hashing_lb_config.hash_policy}, which
    Envoy uses instead of the route's.
    """
    # Imported here: the router's config imports the upstream modules.
    from txenvoy.router.config import compileHashPolicy

    cpath = path + ".consistent_hashing_lb_config.hash_policy[%d]"
    return tuple(compileHashPolicy(p, cpath % (i,))
                 for i, p in enumerate(msg.consistent_hashing_lb_config.hash_policy))


def _applyLeastRequest(cfg, msg, path):
    if msg.HasField("choice_count"):
        if msg.choice_count.value < 2:
            raise ConfigError("%s.choice_count: value must be greater than or equal "
                              "to 2" % (path,))
        cfg.choiceCount = msg.choice_count.value
    if msg.HasField("active_request_bias"):
        bias = msg.active_request_bias.default_value
        if bias < 0:
            raise ConfigError("%s.active_request_bias: must be >= 0" % (path,))
        cfg.activeRequestBias = bias


_THRESHOLD_FIELDS = (
    ("max_connections", "maxConnections"),
    ("max_pending_requests", "maxPendingRequests"),
    ("max_requests", "maxRequests"),
    ("max_retries", "maxRetries"),
    ("max_connection_pools", "maxConnectionPools"),
)


_PER_HOST_REFUSED = ("max_pending_requests", "max_requests", "max_retries",
                     "max_connection_pools", "retry_budget")


def _compileCircuitBreakers(proto, path):
    """
    C{circuit_breakers.thresholds}: one L{Thresholds} per priority. As in
    Envoy, the first entry of a priority wins and a later one with the same
    priority is silently unused; a priority with no entry gets the
    defaults.
    """
    if not proto.HasField("circuit_breakers"):
        return CircuitBreakers()
    cbpath = path + ".circuit_breakers"
    cb = proto.circuit_breakers
    checkFields(cb, ("thresholds", "per_host_thresholds"), cbpath)
    perHost = {}
    for i, t in enumerate(cb.per_host_thresholds):
        # Envoy reads max_connections only, per host; track_remaining is
        # accepted and has no effect there, the other limits are Envoy's error.
        hpath = "%s.per_host_thresholds[%d]" % (cbpath, i)
        for field in _PER_HOST_REFUSED:
            if t.HasField(field):
                raise ConfigError("%s.%s: Unsupported field in per_host_thresholds"
                                  % (hpath, field))
        checkFields(t, ("priority", "max_connections"), hpath, ("track_remaining",))
        priority = PRIORITIES[t.priority]
        if priority not in perHost and t.HasField("max_connections"):
            perHost[priority] = t.max_connections.value
    byPriority = {}
    for i, t in enumerate(cb.thresholds):
        tpath = "%s.thresholds[%d]" % (cbpath, i)
        checkFields(t, ("priority", "track_remaining", "retry_budget") + tuple(
            f for f, _ in _THRESHOLD_FIELDS), tpath)
        priority = PRIORITIES[t.priority]
        if priority in byPriority:
            continue
        kw = {attr: getattr(t, field).value
              for field, attr in _THRESHOLD_FIELDS if t.HasField(field)}
        if t.HasField("retry_budget"):
            # Envoy: the budget replaces max_retries; 20% and 3 by default.
            budget = t.retry_budget
            checkFields(budget, ("budget_percent", "min_retry_concurrency"),
                        tpath + ".retry_budget")
            kw["retryBudget"] = (
                budget.budget_percent.value if budget.HasField("budget_percent") else 20.0,
                budget.min_retry_concurrency.value
                if budget.HasField("min_retry_concurrency") else 3)
        byPriority[priority] = Thresholds(priority, trackRemaining=t.track_remaining, **kw)
    for priority, limit in perHost.items():
        if priority not in byPriority:
            byPriority[priority] = Thresholds(priority)
        byPriority[priority].maxConnectionsPerHost = limit
    return CircuitBreakers(byPriority.get("DEFAULT"), byPriority.get("HIGH"))


def _compileProtocolOptions(proto, path, kw):
    options = {}
    for key in sorted(proto.typed_extension_protocol_options):
        anyMsg = proto.typed_extension_protocol_options[key]
        opath = "%s.typed_extension_protocol_options[%s]" % (path, key)
        typeName = anyMsg.type_url.rsplit("/", 1)[-1]
        if key not in _HTTP_PROTOCOL_OPTIONS_KEYS or typeName != HTTP_PROTOCOL_OPTIONS_TYPE:
            report(UnsupportedExtension(opath, typeName, key))
            continue
        compileHttpProtocolOptions(anyMsg, opath, kw)
        options[key] = anyMsg
    kw["typedExtensionProtocolOptions"] = options


def _compileDns(proto, path):
    dns = DnsSettings(lookupFamily=DNS_LOOKUP_FAMILIES.get(proto.dns_lookup_family, "AUTO"))
    if proto.HasField("dns_refresh_rate"):
        r = durationSeconds(proto.dns_refresh_rate)
        if r <= 0.001:
            raise ConfigError("%s.dns_refresh_rate: value must be greater than 1ms "
                              "(ClusterValidationError.DnsRefreshRate)" % (path,))
        dns.refreshRate = r
    if proto.HasField("dns_jitter"):
        dns.jitter = max(0.0, durationSeconds(proto.dns_jitter))
    if proto.HasField("dns_failure_refresh_rate"):
        fpath = path + ".dns_failure_refresh_rate"
        rr = proto.dns_failure_refresh_rate
        checkFields(rr, ("base_interval", "max_interval"), fpath)
        base = durationSeconds(rr.base_interval)
        if base <= 0.001:
            raise ConfigError("%s.base_interval: value must be greater than 1ms" % (fpath,))
        maxI = durationSeconds(rr.max_interval) if rr.HasField("max_interval") else 10 * base
        if maxI < base:
            raise ConfigError("%s.max_interval: must be greater than or equal to the "
                              "base_interval" % (fpath,))
        dns.failureBaseInterval = base
        dns.failureMaxInterval = maxI
    if proto.HasField("typed_dns_resolver_config"):
        rpath = path + ".typed_dns_resolver_config"
        ext = proto.typed_dns_resolver_config
        typeName = ext.typed_config.type_url.rsplit("/", 1)[-1]
        if typeName != _GETADDRINFO_TYPE:
            report(UnsupportedExtension(rpath, typeName, ext.name))
            return dns
        msg = unpackAny(ext.typed_config, rpath + ".typed_config")
        checkFields(msg, (), rpath + ".typed_config", IGNORED_DNS_RESOLVER_FIELDS)
    return dns


def _compileSocketAddress(sa, path):
    checkFields(sa, ("address", "port_value", "protocol"), path, IGNORED_SOCKET_ADDRESS_FIELDS)
    if sa.protocol != 0:
        report(UnsupportedField(path + ".protocol", "UDP"))
    return sa.address, sa.port_value


def _compileBindConfig(bind, path):
    checkFields(bind, ("source_address",), path)
    if not bind.HasField("source_address"):
        return None
    ip, port = _compileSocketAddress(bind.source_address, path + ".source_address")
    if not isIPAddress(ip) and not isIPv6Address(ip):
        raise messages.malformedIpAddress(ip, path + ".source_address.address")
    return (ip, port)


def _compileConnectionOptions(opts, path):
    checkFields(opts, ("tcp_keepalive",), path)
    if not opts.HasField("tcp_keepalive"):
        return None
    ka = opts.tcp_keepalive
    return TcpKeepalive(
        probes=ka.keepalive_probes.value if ka.HasField("keepalive_probes") else None,
        time=ka.keepalive_time.value if ka.HasField("keepalive_time") else None,
        interval=ka.keepalive_interval.value if ka.HasField("keepalive_interval") else None,
    )


def _lbHashKey(lbe):
    # Envoy's HashingLoadBalancer::hashKey: a string hash_key in the
    # envoy.lb filter metadata; any other kind is ignored.
    if not lbe.HasField("metadata"):
        return ""
    ns = lbe.metadata.filter_metadata.get("envoy.lb")
    if ns is None or "hash_key" not in ns.fields:
        return ""
    value = ns.fields["hash_key"]
    return value.string_value if value.WhichOneof("kind") == "string_value" else ""


def _filterMetadata(lbe):
    """An endpoint's C{filter_metadata} as C{{namespace: dict}}, or C{None}."""
    if not lbe.HasField("metadata") or not lbe.metadata.filter_metadata:
        return None
    return {ns: json_format.MessageToDict(value)
            for ns, value in lbe.metadata.filter_metadata.items()}


def _compileLoadAssignment(proto, path, ctype):
    if not proto.HasField("load_assignment"):
        return []
    return compileLoadAssignment(proto.load_assignment, path + ".load_assignment", ctype)


#: An endpoint's C{health_check_config} when it has none: (port_value,
#: hostname, disable_active_health_check).
_NO_HEALTH_CHECK_CONFIG = (0, "", False)


_LB_ENDPOINT_FIELDS = ("endpoint", "health_status", "load_balancing_weight", "metadata")
_ENDPOINT_FIELDS = ("address", "hostname", "health_check_config")
_ADDRESS_FIELDS = ("socket_address", "pipe", "envoy_internal_address")
_SOCKET_ADDRESS_FIELDS = ("address", "port_value", "protocol")
#: The fast tests of L{setsOtherFields} for the messages of each endpoint,
#: made on first use: (LbEndpoint, Endpoint, Address, SocketAddress).
_endpointFieldTests = []


def _endpointTests(lbe):
    if not _endpointFieldTests:
        endpoint = lbe.DESCRIPTOR.fields_by_name["endpoint"].message_type
        address = endpoint.fields_by_name["address"].message_type
        socketAddress = address.fields_by_name["socket_address"].message_type
        _endpointFieldTests.extend((
            setsOtherFields(lbe.DESCRIPTOR, _LB_ENDPOINT_FIELDS, IGNORED_LB_ENDPOINT_FIELDS),
            setsOtherFields(endpoint, _ENDPOINT_FIELDS, IGNORED_ENDPOINT_FIELDS),
            setsOtherFields(address, _ADDRESS_FIELDS),
            setsOtherFields(socketAddress, _SOCKET_ADDRESS_FIELDS,
                            IGNORED_SOCKET_ADDRESS_FIELDS)))
    return _endpointFieldTests


def _edsHealth(status):
    """A C{health_status}'s name as a host keeps it, and the health flags it sets."""
    flags = ()
    if status in ("UNHEALTHY", "DRAINING", "TIMEOUT"):
        flags = (FAILED_EDS_HEALTH,)
    elif status == "DEGRADED":
        flags = (DEGRADED_EDS_HEALTH,)
    return ("HEALTHY" if status == "UNKNOWN" else status), flags


#: C{health_status} value: (its name as a host keeps it, the flags it sets).
_EDS_HEALTH = {value: _edsHealth(name) for value, name in _HEALTH_STATUS.items()}
_EDS_UNKNOWN = _edsHealth("UNKNOWN")


def _lbEndpointPath(epath, j):
    return "%s.lb_endpoints[%d]" % (epath, j)


def _otherEndpoint(lbe, ep, epAddress, kind, staticOrEds, epath, j, weight, priority,
                   locality, flags, edsHealthStatus, healthCheck):
    """
    The L{EndpointSpec} arguments of an endpoint whose address is not a
    C{socket_address}.
    """
    dpath = _lbEndpointPath(epath, j) + ".endpoint"
    if kind == "envoy_internal_address" and staticOrEds:
        # An internal listener of this process (txenvoy.network.user_space).
        internal = epAddress.envoy_internal_address
        checkFields(internal, ("server_listener_name", "endpoint_id"),
                    dpath + ".address.envoy_internal_address")
        return (InternalAddress(internal.server_listener_name, internal.endpoint_id), 0,
                ep.hostname, weight, priority, locality, flags, edsHealthStatus, dpath,
                healthCheck, "", hostValues(lbe.metadata), _filterMetadata(lbe))
    if kind == "pipe" and staticOrEds:
        # A Unix socket: the host is (pipe, 0), printed as its path.
        return (pipeAddress(epAddress.pipe, dpath + ".address.pipe"), 0, ep.hostname, weight,
                priority, locality, flags, edsHealthStatus, dpath, healthCheck, "", None, None)
    raise ConfigError("%s.address: a socket_address is required" % (dpath,))


def _isIP(address, inet_pton=socket.inet_pton, AF_INET=socket.AF_INET):
    """
    Twisted's C{isIPAddress} or C{isIPv6Address}, the dotted IPv4 form tested
    without their calls (ten thousand endpoints test theirs).
    """
    if address.count(".") == 3:
        try:
            inet_pton(AF_INET, address)
        except (ValueError, OSError):
            pass
        else:
            return True
    return isIPv6Address(address)


def compileLoadAssignment(la, lapath, ctype=STATIC, make=EndpointSpec):
    """
    The L{EndpointSpec}s of a C{ClusterLoadAssignment} (a cluster's
    C{load_assignment}, or one EDS gave).

    Ten thousand endpoints make one pass, field paths built only for an
    error: each endpoint's messages get L{checkFields} the first time
    (which notes their declared fields) and then only when the fast test
    of L{setsOtherFields} finds a field it would report.

    @param lapath: its field path, for messages.
    @param make: what each endpoint becomes, called with L{EndpointSpec}'s
        arguments, all positional: an EDS cluster makes its hosts in the
        same pass (L{txenvoy.extensions.clusters.eds}).
    @return: what C{make} returned for each endpoint, in order.
    @raise ConfigError: naming the field of an invalid endpoint.
    """
    endpoints = []
    append = endpoints.append
    checkFields(la, ("endpoints", "policy"), lapath, IGNORED_LOAD_ASSIGNMENT_FIELDS)
    if la.HasField("policy"):
        checkFields(la.policy, ("overprovisioning_factor",), lapath + ".policy",
                    IGNORED_POLICY_FIELDS)
    staticOrEds = ctype in (STATIC, EDS)
    otherLbe = otherEp = otherAddress = otherSa = None
    for i, lle in enumerate(la.endpoints):
        epath = "%s.endpoints[%d]" % (lapath, i)
        checkFields(lle, ("locality", "lb_endpoints", "priority", "load_balancing_weight"),
                    epath,
                    IGNORED_LOCALITY_ENDPOINTS_FIELDS)
        locality = None
        if lle.HasField("locality"):
            locality = Locality(lle.locality.region, lle.locality.zone, lle.locality.sub_zone)
        priority = lle.priority
        for j, lbe in enumerate(lle.lb_endpoints):
            if otherLbe is None:
                checkFields(lbe, _LB_ENDPOINT_FIELDS, _lbEndpointPath(epath, j),
                            IGNORED_LB_ENDPOINT_FIELDS)
                otherLbe, otherEp, otherAddress, otherSa = _endpointTests(lbe)
                firstEp = firstAddress = firstSa = True
            elif otherLbe(lbe):
                checkFields(lbe, _LB_ENDPOINT_FIELDS, _lbEndpointPath(epath, j),
                            IGNORED_LB_ENDPOINT_FIELDS)
            weight = 1
            if lbe.HasField("load_balancing_weight"):
                weight = lbe.load_balancing_weight.value
                if weight < 1:
                    raise ConfigError(
                        "%s.load_balancing_weight: value must be greater than or equal to 1 "
                        "(LbEndpointValidationError.LoadBalancingWeight)"
                        % (_lbEndpointPath(epath, j),))
            edsHealthStatus, flags = _EDS_HEALTH.get(lbe.health_status, _EDS_UNKNOWN)
            ep = lbe.endpoint
            if firstEp or otherEp(ep):
                firstEp = False
                checkFields(ep, _ENDPOINT_FIELDS, _lbEndpointPath(epath, j) + ".endpoint",
                            IGNORED_ENDPOINT_FIELDS)
            if ep.HasField("health_check_config"):
                dpath = _lbEndpointPath(epath, j) + ".endpoint"
                hcc = ep.health_check_config
                checkFields(hcc, HEALTH_CHECK_CONFIG_FIELDS, dpath + ".health_check_config")
                if hcc.port_value > 65535:
                    raise ConfigError("%s.health_check_config.port_value: value must be less "
                                      "than or equal to 65535" % (dpath,))
                healthCheck = (hcc.port_value, hcc.hostname, hcc.disable_active_health_check)
            else:
                healthCheck = _NO_HEALTH_CHECK_CONFIG
            epAddress = ep.address
            if firstAddress or otherAddress(epAddress):
                firstAddress = False
                checkFields(epAddress, _ADDRESS_FIELDS,
                            _lbEndpointPath(epath, j) + ".endpoint.address")
            kind = epAddress.WhichOneof("address")
            if kind != "socket_address":
                append(make(*_otherEndpoint(lbe, ep, epAddress, kind, staticOrEds, epath, j,
                                            weight, priority, locality, flags, edsHealthStatus,
                                            healthCheck)))
                continue
            sa = epAddress.socket_address
            if firstSa or otherSa(sa):
                firstSa = False
                checkFields(sa, _SOCKET_ADDRESS_FIELDS,
                            _lbEndpointPath(epath, j) + ".endpoint.address.socket_address",
                            IGNORED_SOCKET_ADDRESS_FIELDS)
            address = sa.address
            if sa.protocol != 0:
                report(UnsupportedField(
                    _lbEndpointPath(epath, j) + ".endpoint.address.socket_address.protocol",
                    "UDP"))
            if staticOrEds and not _isIP(address):
                raise messages.malformedIpAddress(
                    address, _lbEndpointPath(epath, j) + ".endpoint.address.socket_address"
                    ".address", messages.STATIC_ENDPOINT_HINT)
            if not address:
                raise ConfigError("%s.endpoint.address.socket_address.address: value length "
                                  "must be at least 1 characters" % (_lbEndpointPath(epath, j),))
            if lbe.HasField("metadata"):
                hashKey, metadata = _lbHashKey(lbe), hostValues(lbe.metadata)
            else:
                hashKey, metadata = "", {}
            # Positional: keywords cost a third of the spec's making.
            append(make(address, sa.port_value, ep.hostname, weight, priority, locality, flags,
                        edsHealthStatus, (epath, j), healthCheck, hashKey, metadata, None))
    if ctype == LOGICAL_DNS and (len(la.endpoints) != 1 or len(endpoints) != 1):
        raise ConfigError(
            "%s: LOGICAL_DNS clusters must have a single locality_lb_endpoint and a "
            "single lb_endpoint" % (lapath,))
    return endpoints


# --- stats -----------------------------------------------------------------

#: Per-worker counters of C{cluster.<name>.*}, created at zero on every
#: worker as Envoy does, so dashboards see them before traffic.
WORKER_COUNTERS = (
    "upstream_cx_total", "upstream_cx_connect_fail", "upstream_cx_connect_timeout",
    "upstream_cx_connect_attempts_exceeded", "upstream_cx_overflow",
    "upstream_cx_pool_overflow", "upstream_cx_none_healthy", "upstream_cx_destroy",
    "upstream_cx_destroy_local", "upstream_cx_destroy_remote",
    "upstream_cx_destroy_with_active_rq", "upstream_cx_destroy_local_with_active_rq",
    "upstream_cx_destroy_remote_with_active_rq", "upstream_cx_rx_bytes_total",
    "upstream_cx_tx_bytes_total", "upstream_cx_http1_total", "upstream_cx_http2_total",
    "upstream_cx_http3_total", "upstream_cx_idle_timeout", "upstream_cx_max_requests",
    "upstream_cx_max_duration_reached", "upstream_cx_protocol_error",
    "upstream_cx_close_notify", "upstream_flow_control_paused_reading_total",
    "upstream_flow_control_resumed_reading_total", "upstream_flow_control_backed_up_total",
    "upstream_flow_control_drained_total", "upstream_rq_total", "upstream_rq_pending_total",
    "upstream_rq_pending_overflow", "upstream_rq_pending_failure_eject",
    "upstream_rq_active_overflow",
    "upstream_rq_completed", "upstream_rq_cancelled", "upstream_rq_timeout",
    "upstream_rq_per_try_timeout", "upstream_rq_per_try_idle_timeout", "upstream_rq_rx_reset",
    "upstream_rq_tx_reset", "upstream_rq_retry", "upstream_rq_retry_success",
    "upstream_rq_retry_overflow", "upstream_rq_retry_limit_exceeded",
    "upstream_rq_retry_backoff_exponential", "upstream_rq_retry_backoff_ratelimited",
    "upstream_rq_max_duration_reached", "upstream_rq_maintenance_mode",
    "lb_healthy_panic", "bind_errors", "retry_or_shadow_abandoned",
    "upstream_internal_redirect_succeeded_total", "upstream_internal_redirect_failed_total",
    "original_dst_host_invalid", "lb_subsets_created", "lb_subsets_fallback",
    "lb_subsets_fallback_panic", "lb_subsets_removed", "lb_subsets_selected",
)
WORKER_GAUGES = (
    "upstream_cx_active", "upstream_rq_active", "upstream_rq_pending_active",
    "upstream_cx_rx_bytes_buffered", "upstream_cx_tx_bytes_buffered", "lb_subsets_active",
)
WORKER_HISTOGRAMS = (
    "upstream_cx_connect_ms", "upstream_cx_length_ms", "upstream_rq_time",
    "upstream_rq_per_cx",
)

#: Main-thread stats of C{cluster.<name>.*}.
MAIN_COUNTERS = (
    "membership_change", "update_attempt", "update_success", "update_failure",
    "update_empty", "update_no_rebuild", "assignment_stale", "assignment_timeout_received",
    "assignment_use_cached", "lb_local_cluster_not_ok", "lb_recalculate_zone_structures",
    "lb_zone_cluster_too_small", "lb_zone_no_capacity_left", "lb_zone_routing_all_directly",
    "lb_zone_routing_cross_zone", "lb_zone_routing_sampled",
)
MAIN_GAUGES = (
    "membership_total", "membership_healthy", "membership_degraded", "membership_excluded",
    "max_host_weight", "version", "warming_state",
)


class ClusterStats:
    """
    One worker's C{cluster.<name>.*} stat objects, as attributes named
    like the stats (C{stats.upstream_cx_total.inc()}), resolved once when
    the worker sets the cluster up.
    """

    # Slots: read on every request, and too many for a compact __dict__.
    __slots__ = WORKER_COUNTERS + WORKER_GAUGES + WORKER_HISTOGRAMS + (
        "_scope", "_codes", "_prefixedCodes", "_prefixedTimes", "__dict__")

    def __init__(self, scope):
        self._scope = scope
        for name in WORKER_COUNTERS:
            setattr(self, name, scope.counter(name))
        for name in WORKER_GAUGES:
            setattr(self, name, scope.gauge(name))
        for name in WORKER_HISTOGRAMS:
            setattr(self, name, scope.histogram(name))
        self._codes = {}
        self._prefixedCodes = {}
        self._prefixedTimes = {}

    def gauge(self, name):
        """A gauge of this cluster's scope not among L{WORKER_GAUGES}."""
        return self._scope.gauge(name)

    def rqCode(self, code):
        """
        @return: C{(upstream_rq_<code>, upstream_rq_<N>xx)} counters,
            created on first use and cached.
        """
        pair = self._codes.get(code)
        if pair is None:
            scope = self._scope
            pair = self._codes[code] = (
                scope.counter("upstream_rq_%d" % (code,)),
                scope.counter("upstream_rq_%dxx" % (code // 100,)),
            )
        return pair

    def prefixedRqCode(self, prefix, code):
        """
        Envoy's C{chargeBasicResponseStat} under C{prefix} (C{"external."},
        C{"internal."}, C{"retry."}).

        @return: C{(<prefix>upstream_rq_<code>, <prefix>upstream_rq_<N>xx,
            <prefix>upstream_rq_completed)} counters, created on first use.
        """
        key = (prefix, code)
        triple = self._prefixedCodes.get(key)
        if triple is None:
            scope = self._scope
            triple = self._prefixedCodes[key] = (
                scope.counter("%supstream_rq_%d" % (prefix, code)),
                scope.counter("%supstream_rq_%dxx" % (prefix, code // 100)),
                scope.counter(prefix + "upstream_rq_completed"),
            )
        return triple

    def prefixedRqTime(self, prefix):
        """The C{<prefix>upstream_rq_time} histogram, created on first use."""
        histogram = self._prefixedTimes.get(prefix)
        if histogram is None:
            histogram = self._prefixedTimes[prefix] = self._scope.histogram(
                prefix + "upstream_rq_time")
        return histogram


class MainClusterStats:
    """
    The main thread's C{cluster.<name>.*} stats (membership, updates), and
    the C{circuit_breakers.*} gauges read from the cluster's resource
    managers.
    """

    def __init__(self, scope, resourceManagers=None):
        for name in MAIN_COUNTERS:
            setattr(self, name, scope.counter(name))
        for name in MAIN_GAUGES:
            setattr(self, name, scope.gauge(name))
        for manager in (resourceManagers or {}).values():
            for name, gauge in manager.gauges():
                scope.addGauge(name, gauge)


class _MergeStats:
    """The C{cluster_manager.*} counters of Envoy's update merging."""

    def __init__(self, scope):
        for name in ("cluster_updated_via_merge", "update_merge_cancelled",
                     "update_out_of_merge_window"):
            setattr(self, name, scope.counter(name))


# --- primary clusters ----------------------------------------------------


@implementer(ICluster)
class PrimaryCluster:
    """
    The main thread's side of one cluster: it owns membership and posts
    each new host list to every worker's L{ThreadLocalCluster}.

    @ivar info: the L{ClusterInfo}.
    @ivar hosts: the current membership, a tuple of L{Host} (replaced, never
        mutated, so any thread may read it).
    @ivar initialized: whether the first membership is known.
    """

    #: The L{txenvoy.upstream.health_checker.HealthChecker}, or C{None};
    #: see L{attachHealthChecker}.
    healthChecker = None
    #: The L{txenvoy.upstream.outlier_detection.Detector}, or C{None}.
    outlierDetector = None

    def __init__(self, reactor, info, endpoints, mainShard):
        self.reactor = reactor
        self.info = info
        self.endpoints = endpoints
        self.hosts = ()
        self.initialized = False
        self.stats = MainClusterStats(mainShard.scope(info.statPrefix), info.resourceManagers)
        self._lock = threading.Lock()
        self._threadLocals = []
        self._initWaiters = []
        self._stopped = False
        self._healthCheckStarted = False
        self._secretsWaited = False
        self._cmStats = _MergeStats(mainShard.scope("cluster_manager."))
        self._mergeTimer = None
        self._lastPosted = float("-inf")
        self._hashTables = None
        if info.lbConfig.hashing is not None:
            self._hashTables = MainThreadTables(info.lbConfig,
                                                mainShard.scope(info.statPrefix))

    def createLoadBalancer(self, threadLocal, rng=None):
        """
        Build one worker's load balancer (Envoy's thread-aware load
        balancer factory): the policy of C{lb_policy}. A cluster type that
        provides its own (C{CLUSTER_PROVIDED}) overrides this.

        @param threadLocal: the worker's
            L{txenvoy.upstream.cluster_manager.ThreadLocalCluster} (its
            C{workerName} and C{stats}).
        """
        info = self.info
        if info.lbSubset is not None:
            return SubsetLoadBalancer(info.lbSubset, info.lbConfig, threadLocal.workerName,
                                      threadLocal.stats, rng)
        return newLoadBalancer(info.lbConfig, threadLocal.workerName,
                               threadLocal.stats.lb_healthy_panic, rng)

    def attachHealthChecker(self, checker):
        """
        Check this cluster's hosts with C{checker} (before L{start}): its
        hosts start failed until their first check, and initialization
        waits for every first result, as Envoy's does.
        """
        self.healthChecker = checker
        checker.onHosts(self.hosts)
        self.refreshHealth()

    def attachOutlierDetector(self, detector):
        """Eject this cluster's outliers with C{detector} (before L{start})."""
        self.outlierDetector = detector
        detector.onHosts(self.hosts)

    #: Whether a worker process takes this cluster's membership and
    #: health from the main process (L{startMirrored}, L{mirrorHosts})
    #: instead of discovering and checking it itself. Not for a cluster
    #: whose workers make its hosts (C{ORIGINAL_DST}) or that has none of
    #: its own (aggregate).
    sharedMembership = True

    def start(self):
        """Begin discovering membership (main thread)."""
        self.startMirrored()

    def startMirrored(self, waitForHosts=False):
        """
        Start without discovering membership: in a worker process, whose
        hosts and their health come from the main process (L{mirrorHosts}).
        Outlier detection stays, fed by this process's own responses.

        @param waitForHosts: initialized only once the first hosts came
            (a cluster CDS added, which the main process warms).
        """
        if self.outlierDetector is not None:
            self.outlierDetector.start()
        if not waitForHosts:
            self._markInitialized()

    def stop(self):
        """Cancel timers; later results are dropped."""
        self._stopped = True
        timer, self._mergeTimer = self._mergeTimer, None
        if timer is not None and timer.active():
            timer.cancel()
        if self.healthChecker is not None:
            self.healthChecker.stop()
        if self.outlierDetector is not None:
            self.outlierDetector.stop()

    def whenInitialized(self):
        """@return: a Deferred fired once the first membership is known."""
        if self.initialized:
            return defer.succeed(None)
        d = defer.Deferred()
        self._initWaiters.append(d)
        return d

    def _markInitialized(self):
        if self.initialized:
            return
        if not self._secretsWaited:
            # As Envoy's cluster init manager: the TLS secrets its transport
            # socket takes from a control plane (SDS) come first (or their
            # initial_fetch_timeout), then the first health check round.
            self._secretsWaited = True
            whenReady = getattr(self.info.transportSocket, "whenSecretsReady", None)
            ready = whenReady() if whenReady is not None else None
            if ready is not None and not ready.called:
                ready.addCallback(lambda _: self._markInitialized())
                return
        if self.healthChecker is not None and not self._healthCheckStarted:
            self._healthCheckStarted = True
            self.healthChecker.start().addCallback(lambda _: self._markInitialized())
            return
        if self.healthChecker is not None and self.healthChecker.pendingFirstRound():
            return
        self.initialized = True
        waiters, self._initWaiters = self._initWaiters, []
        for d in waiters:
            d.callback(None)

    def _register(self, threadLocal):
        """
        Add a worker's cluster and give it the current membership, under
        the lock so that no update falls between the two.
        """
        with self._lock:
            self._threadLocals.append(threadLocal)
            threadLocal.updateHosts(self.hosts)

    def _unregister(self, threadLocal):
        with self._lock:
            try:
                self._threadLocals.remove(threadLocal)
            except ValueError:
                pass

    def setHosts(self, hosts, membershipChanged=True):
        """
        Install a new membership (main thread): update the membership
        stats and post the list to every worker.
        """
        hosts = tuple(hosts)
        if self.healthChecker is not None and membershipChanged:
            self.healthChecker.onHosts(hosts)
        self._countMembership(hosts, membershipChanged)
        if not membershipChanged:
            self.hosts = hosts
            window = self.info.lbConfig.updateMergeWindow
            now = self.reactor.seconds()
            # Before initialization workers get the whole state at once,
            # as Envoy's thread-local clusters are made after it.
            if window > 0 and self.initialized and now - self._lastPosted <= window:
                # Envoy's ClusterManagerImpl::scheduleUpdate: a health-only
                # change within update_merge_window of the last update
                # reaches workers when the window ends, merged with any
                # other change meanwhile.
                if self._mergeTimer is None:
                    self._mergeTimer = self.reactor.callLater(window, self._applyMerged)
                return
            if window > 0 and self.initialized:
                self._cmStats.update_out_of_merge_window.inc()
        self._cancelMerge()
        self._post(hosts)

    def mirrorHosts(self, hosts, membershipChanged):
        """
        Install the membership the main process sent (a worker process):
        posted to this process's workers at once, as the main process
        already applied C{update_merge_window}.
        """
        hosts = tuple(hosts)
        self._countMembership(hosts, membershipChanged)
        self._cancelMerge()
        self._post(hosts)
        if not self.initialized:
            self._markInitialized()

    def _countMembership(self, hosts, membershipChanged):
        """The membership gauges (and the outlier detector's hosts) for C{hosts}."""
        if self.outlierDetector is not None and membershipChanged:
            self.outlierDetector.onHosts(hosts)
        s = self.stats
        healthy = degraded = excluded = 0
        for h in hosts:
            if h.excluded:
                excluded += 1
            elif h.healthy:
                if h.degraded:
                    degraded += 1
                else:
                    healthy += 1
        s.membership_total.set(len(hosts))
        s.membership_healthy.set(healthy)
        s.membership_degraded.set(degraded)
        s.membership_excluded.set(excluded)
        if membershipChanged:
            s.membership_change.inc()

    def _cancelMerge(self):
        timer, self._mergeTimer = self._mergeTimer, None
        if timer is not None and timer.active():
            timer.cancel()
            self._cmStats.update_merge_cancelled.inc()

    def _applyMerged(self):
        self._mergeTimer = None
        self._cmStats.cluster_updated_via_merge.inc()
        self._post(self.hosts)

    def _post(self, hosts):
        if self._hashTables is not None:
            self._hashTables.refresh(hosts)
        if self.initialized:
            self._lastPosted = self.reactor.seconds()
        with self._lock:
            self.hosts = hosts
            targets = list(self._threadLocals)
            # Posting under the lock keeps every worker's queue in the
            # order the memberships were made.
            for tlc in targets:
                tlc.dispatcher.post(tlc.updateHosts, hosts)

    def refreshHealth(self):
        """
        Re-post the current membership after health flags changed (main
        thread), so workers rebuild their healthy host lists; within
        C{update_merge_window} of the last post, at the end of the window.
        """
        self.setHosts(self.hosts, membershipChanged=False)


@attr.s(frozen=True)
class ClusterFactoryContext:
    """
    What a cluster extension builds one cluster with (Envoy's
    C{ClusterFactoryContext}); its C{create(info, context)} gets the
    compiled L{ClusterInfo}.

    @ivar reactor: the main reactor.
    @ivar mainShard: the main thread's stats shard.
    @ivar endpoints: the compiled L{EndpointSpec}s of C{load_assignment}.
    @ivar dnsResolver: has C{resolve(name, family)}, for DNS types.
    @ivar rng: a C{random()}-like function (DNS jitter, back-off).
    @ivar path: the cluster's field path, for messages.
    @ivar edsSubscriptions: makes an C{EDS} cluster's subscription
        (L{txenvoy.xds.subscription_factory.SubscriptionFactory}), or C{None}.
    """

    reactor = attr.ib()
    mainShard = attr.ib()
    endpoints = attr.ib()
    dnsResolver = attr.ib(default=None)
    rng = attr.ib(default=None)
    path = attr.ib(default="")
    edsSubscriptions = attr.ib(default=None)
