"""
Tests for L{txenvoy.interfaces}: every registered extension, and every
class of txenvoy that declares one of its interfaces, provides it.
"""

import glob
import importlib
import inspect
import os
import pkgutil

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementedBy
from zope.interface.verify import verifyClass, verifyObject

import txenvoy
from tests.e2e.harness import EXAMPLES
from txenvoy import interfaces
from txenvoy.config import registry
from txenvoy.config.errors import ConfigError
from txenvoy.config.loader import loadBootstrap
from txenvoy.server.server import Server

# What Envoy's example corpus does not use, in one config (the docs' table of
# supported fields builds it too).
EVERY_OTHER_EXTENSION = """
node: {id: node1, cluster: cluster1}
dynamic_resources:
  cds_config:
    api_config_source:
      api_type: GRPC
      transport_api_version: V3
      grpc_services: [{envoy_grpc: {cluster_name: zipkin}}]
      config_validators:
      - name: envoy.config.validators.minimum_clusters_validator
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.config.validators.minimum_clusters.v3.MinimumClustersValidator
          min_clusters_num: 1
bootstrap_extensions:
- name: envoy.bootstrap.internal_listener
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener
stats_sinks:
- name: envoy.stat_sinks.statsd
  typed_config:
    "@type": type.googleapis.com/envoy.config.metrics.v3.StatsdSink
    address: {socket_address: {address: 127.0.0.1, port_value: 8125}}
- name: envoy.stat_sinks.dog_statsd
  typed_config:
    "@type": type.googleapis.com/envoy.config.metrics.v3.DogStatsdSink
    address: {socket_address: {address: 127.0.0.1, port_value: 8125}}
- name: envoy.stat_sinks.open_telemetry
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.stat_sinks.open_telemetry.v3.SinkConfig
    grpc_service: {envoy_grpc: {cluster_name: zipkin}}
- name: envoy.stat_sinks.metrics_service
  typed_config:
    "@type": type.googleapis.com/envoy.config.metrics.v3.MetricsServiceConfig
    transport_api_version: V3
    grpc_service: {envoy_grpc: {cluster_name: zipkin}}
static_resources:
  listeners:
  - name: rest
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    listener_filters:
    - name: envoy.filters.listener.original_dst
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst
    - name: envoy.filters.listener.proxy_protocol
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol
    - name: envoy.filters.listener.http_inspector
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector
    access_log:
    - name: envoy.access_loggers.stderr
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog
    - name: envoy.access_loggers.tcp_grpc
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.TcpGrpcAccessLogConfig
        common_config: {log_name: l, transport_api_version: V3, grpc_service: {envoy_grpc: {cluster_name: zipkin}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.echo
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.echo.v3.Echo
  - name: network_services
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.ext_authz
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.ext_authz.v3.ExtAuthz
          stat_prefix: authz
          grpc_service: {envoy_grpc: {cluster_name: zipkin}}
      - name: envoy.filters.network.ratelimit
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.ratelimit.v3.RateLimit
          stat_prefix: rl
          domain: d
          descriptors: [{entries: [{key: k, value: v}]}]
          rate_limit_service: {grpc_service: {envoy_grpc: {cluster_name: zipkin}}}
      - name: envoy.filters.network.sni_cluster
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.sni_cluster.v3.SniCluster
      - name: envoy.filters.network.sni_dynamic_forward_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.sni_dynamic_forward_proxy.v3.FilterConfig
          port_value: 443
          dns_cache_config: {name: dfp, dns_lookup_family: V4_ONLY}
      - name: envoy.filters.network.echo
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.echo.v3.Echo
  - name: udp_proxy
    address: {socket_address: {protocol: UDP, address: 127.0.0.1, port_value: 0}}
    listener_filters:
    - name: envoy.filters.udp_listener.udp_proxy
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.udp.udp_proxy.v3.UdpProxyConfig
        stat_prefix: udp
        hash_policies: [{key: k}]
        matcher:
          on_no_match:
            action:
              name: route
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.udp.udp_proxy.v3.Route
                cluster: zipkin
  - name: http_services
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: services
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              rate_limits: [{actions: [{generic_key: {descriptor_value: v}}]}]
              routes:
              - match: {prefix: "/"}
                route:
                  cluster: zipkin
                  rate_limits:
                  - actions:
                    - request_headers: {header_name: x-user, descriptor_key: user}
                    - remote_address: {}
                    - header_value_match: {descriptor_value: m, headers: [{name: a, present_match: true}]}
                    - destination_cluster: {}
          http_filters:
          - name: envoy.filters.http.dynamic_forward_proxy
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_forward_proxy.v3.FilterConfig
              dns_cache_config: {name: dfp, dns_lookup_family: V4_ONLY}
          - name: envoy.filters.http.ratelimit
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit
              domain: d
              rate_limit_service: {grpc_service: {envoy_grpc: {cluster_name: zipkin}}}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  - name: compression
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: compression
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/redirects"}
                route:
                  cluster: zipkin
                  internal_redirect_policy:
                    predicates:
                    - name: envoy.internal_redirect_predicates.previous_routes
                      typed_config:
                        "@type": type.googleapis.com/envoy.extensions.internal_redirect.previous_routes.v3.PreviousRoutesConfig
                    - name: envoy.internal_redirect_predicates.allow_listed_routes
                      typed_config:
                        "@type": type.googleapis.com/envoy.extensions.internal_redirect.allow_listed_routes.v3.AllowListedRoutesConfig
                        allowed_route_names: [a]
                    - name: envoy.internal_redirect_predicates.safe_cross_scheme
                      typed_config:
                        "@type": type.googleapis.com/envoy.extensions.internal_redirect.safe_cross_scheme.v3.SafeCrossSchemeConfig
              - match: {prefix: "/lua"}
                route:
                  inline_cluster_specifier_plugin:
                    extension:
                      name: envoy.router.cluster_specifier_plugin.lua
                      typed_config:
                        "@type": type.googleapis.com/envoy.extensions.router.cluster_specifiers.lua.v3.LuaConfig
                        source_code: {inline_string: "function envoy_on_route(h) return 'x' end"}
                        default_cluster: x
              - match: {prefix: "/"}
                direct_response: {status: 200}
          http_filters:
          - name: skippable_buffer
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher
              xds_matcher:
                matcher_tree:
                  input:
                    name: h
                    typed_config:
                      "@type": type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput
                      header_name: x-skip
                  exact_match_map:
                    map:
                      "yes":
                        action:
                          name: skip
                          typed_config:
                            "@type": type.googleapis.com/envoy.extensions.filters.common.matcher.action.v3.SkipFilter
              extension_config:
                name: envoy.filters.http.buffer
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer
                  max_request_bytes: 1024
          - name: composite
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher
              xds_matcher:
                matcher_tree:
                  input:
                    name: h
                    typed_config:
                      "@type": type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput
                      header_name: x-delegate
                  exact_match_map:
                    map:
                      "buffer":
                        action:
                          name: execute
                          typed_config:
                            "@type": type.googleapis.com/envoy.extensions.filters.http.composite.v3.ExecuteFilterAction
                            sample_percent: {default_value: {numerator: 50}, runtime_key: composite.sample}
                            typed_config:
                              name: envoy.filters.http.buffer
                              typed_config:
                                "@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer
                                max_request_bytes: 1024
              extension_config:
                name: envoy.filters.http.composite
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.filters.http.composite.v3.Composite
          - name: gzip_compressor
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor
              compressor_library:
                name: gzip
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip
          - name: brotli_compressor
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor
              compressor_library:
                name: brotli
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.compression.brotli.compressor.v3.Brotli
          - name: zstd_compressor
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor
              compressor_library:
                name: zstd
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.compression.zstd.compressor.v3.Zstd
          - name: gzip_decompressor
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.decompressor.v3.Decompressor
              decompressor_library:
                name: gzip
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.compression.gzip.decompressor.v3.Gzip
          - name: brotli_decompressor
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.decompressor.v3.Decompressor
              decompressor_library:
                name: brotli
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.compression.brotli.decompressor.v3.Brotli
          - name: zstd_decompressor
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.decompressor.v3.Decompressor
              decompressor_library:
                name: zstd
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.compression.zstd.decompressor.v3.Zstd
          - name: envoy.filters.http.grpc_web
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.grpc_web.v3.GrpcWeb
          - name: envoy.filters.http.grpc_http1_bridge
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.grpc_http1_bridge.v3.Config
          - name: envoy.filters.http.csrf
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.csrf.v3.CsrfPolicy
              filter_enabled: {default_value: {numerator: 100}}
          - name: envoy.filters.http.set_metadata
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.set_metadata.v3.Config
              metadata: [{metadata_namespace: a, value: {k: v}}]
          - name: envoy.filters.http.cache
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.cache.v3.CacheConfig
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.http.cache.simple_http_cache.v3.SimpleHttpCacheConfig
          - name: envoy.filters.http.custom_response
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.custom_response.v3.CustomResponse
          - name: envoy.filters.http.lua
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua
              default_source_code: {inline_string: "function envoy_on_request(h) end"}
          - name: envoy.filters.http.header_mutation
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation
              mutations: {request_mutations: [{remove: x}]}
          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                p:
                  remote_jwks:
                    http_uri: {uri: "http://keys/jwks", cluster: keys, timeout: 1s}
              rules: [{match: {prefix: /}, requires: {provider_name: p}}]
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              http_service:
                server_uri: {uri: "http://authz", cluster: authz, timeout: 1s}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  - name: traced
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: traced
          tracing:
            provider:
              name: envoy.tracers.zipkin
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig
                collector_cluster: zipkin
                collector_endpoint: /api/v2/spans
                collector_endpoint_version: HTTP_JSON
          route_config:
            virtual_hosts:
            - {name: vh, domains: ["*"], routes: [{match: {prefix: "/"}, direct_response: {status: 200}}]}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  - name: otel
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: otel
          access_log:
          - name: envoy.access_loggers.open_telemetry
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.open_telemetry.v3.OpenTelemetryAccessLogConfig
              common_config:
                log_name: otel
                transport_api_version: V3
                grpc_service: {envoy_grpc: {cluster_name: zipkin}}
              body: {string_value: "%RESPONSE_CODE%"}
          tracing:
            provider:
              name: envoy.tracers.opentelemetry
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                http_service: {http_uri: {uri: "http://zipkin/v1/traces", cluster: zipkin, timeout: 1s}}
          route_config:
            virtual_hosts:
            - {name: vh, domains: ["*"], routes: [{match: {prefix: "/"}, direct_response: {status: 200}}]}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  - name: datadog
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: datadog
          access_log:
          - name: envoy.access_loggers.fluentd
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.fluentd.v3.FluentdAccessLogConfig
              cluster: zipkin
              tag: t
              stat_prefix: f
              record: {code: "%RESPONSE_CODE%"}
          - name: envoy.access_loggers.http_grpc
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig
              common_config: {log_name: h, transport_api_version: V3, grpc_service: {envoy_grpc: {cluster_name: zipkin}}}
          tracing:
            provider:
              name: envoy.tracers.datadog
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.DatadogConfig
                collector_cluster: zipkin
                service_name: edge
          route_config:
            virtual_hosts:
            - {name: vh, domains: ["*"], routes: [{match: {prefix: "/"}, direct_response: {status: 200}}]}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: zipkin
    load_assignment:
      cluster_name: zipkin
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 9411}}}}]}]
  - name: dynamic_forward_proxy
    lb_policy: CLUSTER_PROVIDED
    cluster_type:
      name: envoy.clusters.dynamic_forward_proxy
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.clusters.dynamic_forward_proxy.v3.ClusterConfig
        dns_cache_config: {name: dfp, dns_lookup_family: V4_ONLY}
  - name: internal
    transport_socket:
      name: envoy.transport_sockets.internal_upstream
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.internal_upstream.v3.InternalUpstreamTransport
        transport_socket:
          name: raw
          typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer}
    load_assignment:
      cluster_name: internal
      endpoints: [{lb_endpoints: [{endpoint: {address: {envoy_internal_address: {server_listener_name: internal}}}}]}]
"""


class _Recording:
    """Stands in for one registered factory and keeps what it made."""

    def __init__(self, category, typeName, factory, made):
        self.category = category
        self.typeNames = (typeName,)
        self.names = factory.names
        self._factory = factory
        self._made = made

    def create(self, message, context):
        created = self._factory.create(message, context)
        self._made.setdefault((self.category, self.typeNames[0]), created)
        return created


def _isOwn(factory):
    """
    Whether a registered factory is one of txenvoy's own (not a test's or a
    third party's).
    """
    create = getattr(factory, "function", factory)
    return (getattr(create, "__module__", None) or type(create).__module__).startswith(
        "txenvoy.")


class RegisteredExtensionsTests(SynchronousTestCase):

    def test_everyExtensionProvidesItsCategory(self):
        """
        Every registered extension, built from Envoy's example configs (and
        one config for what they do not use), passes C{verifyObject} for
        its category's interface.
        """
        registry.loadPlugins()
        made = {}
        own = [key for key in registry.registered() if _isOwn(registry.lookup(*key))]
        for category, typeName in own:
            original = registry.lookup(category, typeName)
            registry.register(_Recording(category, typeName, original, made))
            self.addCleanup(registry.register, original)
        cwd = os.getcwd()
        os.chdir(EXAMPLES)
        self.addCleanup(os.chdir, cwd)
        for path in sorted(glob.glob("*.yaml")):
            try:
                Server(Clock(), loadBootstrap(path), validateOnly=True)
            except ConfigError as e:
                self.assertIn("unsupported", str(e), path)
        Server(Clock(), loadBootstrap(None, EVERY_OTHER_EXTENSION), validateOnly=True)
        self.assertEqual(sorted(set(own) - set(made)), [])
        for (category, typeName), created in sorted(made.items()):
            interface = registry.CATEGORY_INTERFACES.get(category)
            if interface is not None:
                verifyObject(interface, created)

    def test_registryRefusesWhatDoesNotProvide(self):
        """
        A factory whose result does not provide its category's interface
        is a config error naming the field, the type and the interface.
        """
        key = (registry.Category.NETWORK_FILTER,
               "envoy.extensions.filters.network.echo.v3.Echo")
        original = registry.lookup(*key)
        self.addCleanup(registry.register, original)
        registry.register(registry.FunctionFactory(key[0], [key[1]], (), lambda m, c: object()))
        e = self.assertRaises(ConfigError, Server, Clock(), loadBootstrap(None, EVERY_OTHER_EXTENSION),
                              validateOnly=True)
        self.assertIn("static_resources.listeners[0].filter_chains[0].filters[0].typed_config: "
                      "the extension for 'envoy.extensions.filters.network.echo.v3.Echo' made",
                      str(e))
        self.assertIn("which does not provide INetworkFilterFactory", str(e))


def _txenvoyModules():
    for info in pkgutil.walk_packages(txenvoy.__path__, "txenvoy."):
        yield importlib.import_module(info.name)


class DeclaredSeamsTests(SynchronousTestCase):

    def test_declaringClassesHaveTheMethods(self):
        """
        Every class in txenvoy that declares one of L{txenvoy.interfaces}
        has its methods, with compatible signatures.
        """
        ours = {v for v in vars(interfaces).values()
                if isinstance(v, type(interfaces.IDispatcher))}
        checked = set()
        for module in _txenvoyModules():
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if cls.__module__ != module.__name__:
                    continue
                for interface in implementedBy(cls).flattened():
                    if interface in ours:
                        verifyClass(interface, cls)
                        checked.add(interface.__name__)
        for seam in ("IListenerFilterCallbacks", "IStreamFilterCallbacks",
                     "IUpstreamConnectionCallbacks", "IConnectionPoolCallbacks",
                     "IResponseDecoder", "ICluster", "IDownstreamTransportSocketFactory",
                     "IUpstreamTransportSocketFactory", "IStreamDecoderFilter",
                     "IStreamEncoderFilter", "IStreamFilterBase", "IDispatcher",
                     "IServerCodec", "IClientCodec", "IClientConnectionCodec",
                     "IResponseEncoder", "IRequestDecoder",
                     "IServerConnectionCallbacks", "IFilterManagerStream",
                     "IRouterFilterCallbacks", "IHttpConnPool"):
            self.assertIn(seam, checked)
