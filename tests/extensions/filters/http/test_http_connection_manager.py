"""
Tests for L{txenvoy.extensions.filters.network.http_connection_manager}:
how an C{HttpConnectionManager} compiles, what it accepts and rejects.
"""

import os

from google.protobuf import json_format
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from envoy.config.listener.v3 import listener_components_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2,
)
from envoy.extensions.access_loggers.stream.v3 import stream_pb2  # noqa: F401
from envoy.extensions.request_id.uuid.v3 import uuid_pb2  # noqa: F401
from txenvoy.config import registry
from txenvoy.config.context import FactoryContext
from txenvoy.config.errors import ConfigError, UnsupportedExtension, UnsupportedField
from txenvoy.config.registry import Category, loadPlugins
from txenvoy.http import conn_manager_utility
from txenvoy.http.conn_manager import ConnectionManagerConfig
from txenvoy.interfaces import INetworkFilterFactory
from txenvoy.stats.store import StatsStore

from tests.e2e.harness import EXAMPLES

HCM = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager"
       ".v3.HttpConnectionManager")
ROUTER = {"name": "envoy.filters.http.router", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
ROUTES = {"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
    {"match": {"prefix": "/"}, "direct_response": {"status": 200}}]}]}
PATH = "static_resources.listeners[0].filter_chains[0].filters[0]"


def build(**fields):
    typed = {"@type": HCM, "stat_prefix": "ingress", "route_config": ROUTES,
             "http_filters": [ROUTER]}
    typed.update(fields)
    for name in [k for k, v in typed.items() if v is None]:
        del typed[name]
    message = json_format.ParseDict(
        {"name": "envoy.filters.network.http_connection_manager", "typed_config": typed},
        listener_components_pb2.Filter())
    loadPlugins()
    store = StatsStore()
    context = FactoryContext(Clock(), store, path="x", validateOnly=True)
    return registry.createExtension(Category.NETWORK_FILTER, message, context, PATH)


class CompileTests(SynchronousTestCase):

    def test_defaults(self):
        """Envoy 1.40's defaults."""
        config = build()
        self.assertIsInstance(config, ConnectionManagerConfig)
        self.assertTrue(verifyObject(INetworkFilterFactory, config))
        self.assertTrue(config.terminal)
        self.assertEqual(config.statPrefix, "http.ingress.")
        self.assertEqual(config.serverName, b"envoy")
        self.assertEqual(config.serverHeaderTransformation, conn_manager_utility.OVERWRITE)
        self.assertEqual(config.streamIdleTimeout, 300.0)
        self.assertEqual(config.idleTimeout, 3600.0)
        self.assertEqual((config.requestTimeout, config.requestHeadersTimeout), (0.0, 0.0))
        self.assertEqual((config.maxHeadersCount, config.maxRequestHeadersKb), (100, 60))
        self.assertFalse(config.useRemoteAddress)
        self.assertTrue(config.generateRequestId)
        self.assertFalse(config.acceptHttp10)
        self.assertEqual(config.headersWithUnderscoresAction, "ALLOW")
        self.assertEqual(config.upgradeTypes, frozenset())
        self.assertEqual(config.escapedSlashesAction, conn_manager_utility.KEEP_UNCHANGED)
        self.assertEqual([name for name, _ in config.filterFactories],
                         ["envoy.filters.http.router"])

    def test_fields(self):
        config = build(
            codec_type="HTTP1", server_name="front", server_header_transformation="PASS_THROUGH",
            use_remote_address=True, xff_num_trusted_hops=1, skip_xff_append=True, via="v",
            generate_request_id=False, preserve_external_request_id=True,
            stream_idle_timeout="10s", request_timeout="20s", request_headers_timeout="5s",
            drain_timeout="1s", delayed_close_timeout="2s", max_request_headers_kb=30,
            normalize_path=True, merge_slashes=True,
            path_with_escaped_slashes_action="UNESCAPE_AND_FORWARD",
            common_http_protocol_options={
                "idle_timeout": "60s", "max_headers_count": 50, "max_stream_duration": "9s",
                "max_connection_duration": "99s", "headers_with_underscores_action": "DROP_HEADER",
                "max_requests_per_connection": 7},
            http_protocol_options={"accept_http_10": True, "default_host_for_http_10": "h",
                                   "enable_trailers": True},
            upgrade_configs=[{"upgrade_type": "WebSocket"}, {"upgrade_type": "x", "enabled": False}],
            internal_address_config={"cidr_ranges": [{"address_prefix": "10.0.0.0",
                                                      "prefix_len": 8}]},
            request_id_extension={"typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.request_id.uuid.v3."
                         "UuidRequestIdConfig"}},
            strip_any_host_port=True)
        self.assertEqual(config.serverName, b"front")
        self.assertEqual(config.serverHeaderTransformation, conn_manager_utility.PASS_THROUGH)
        self.assertTrue(config.useRemoteAddress and config.skipXffAppend)
        self.assertEqual(config.xffNumTrustedHops, 1)
        self.assertEqual(config.via, b"v")
        self.assertFalse(config.generateRequestId)
        self.assertTrue(config.preserveExternalRequestId)
        self.assertEqual((config.streamIdleTimeout, config.requestTimeout,
                          config.requestHeadersTimeout), (10.0, 20.0, 5.0))
        self.assertEqual(config.maxRequestHeadersKb, 30)
        self.assertTrue(config.normalizePath and config.mergeSlashes)
        self.assertEqual(config.escapedSlashesAction, conn_manager_utility.UNESCAPE_AND_FORWARD)
        self.assertEqual((config.idleTimeout, config.maxHeadersCount, config.maxStreamDuration,
                          config.maxConnectionDuration, config.maxRequestsPerConnection),
                         (60.0, 50, 9.0, 99.0, 7))
        self.assertEqual(config.headersWithUnderscoresAction, "DROP_HEADER")
        self.assertTrue(config.acceptHttp10 and config.enableTrailers)
        self.assertEqual(config.defaultHostForHttp10, b"h")
        self.assertEqual(config.upgradeTypes, frozenset([b"websocket"]))
        self.assertTrue(config.isInternal("10.9.9.9"))
        self.assertFalse(config.isInternal("11.0.0.1"))
        self.assertTrue(config.stripAnyHostPort)

    def test_accessLogs(self):
        config = build(access_log=[{"name": "envoy.access_loggers.stdout", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3."
                     "StdoutAccessLog"}}])
        self.assertEqual(len(config.accessLogs), 1)

    def test_localReplyConfig(self):
        config = build(local_reply_config={"body_format": {"text_format": "%LOCAL_REPLY_BODY%"}})
        self.assertTrue(config.localReply.active)

    def test_routerGetsStatPrefix(self):
        config = build(stat_prefix="front")
        router = config.filterFactories[0][1]
        self.assertEqual(router.statPrefix, "http.front.")

    def test_emptyFilterChain(self):
        """Envoy 1.40 accepts http_filters: [] (requests then wait for stream_idle_timeout)."""
        self.assertEqual(build(http_filters=[]).filterFactories, [])


class RejectTests(SynchronousTestCase):

    def assertUnsupported(self, field, **fields):
        e = self.assertRaises(UnsupportedField, build, **fields)
        self.assertIn("%s.typed_config.%s" % (PATH, field), str(e))

    def test_rds(self):
        self.assertUnsupported("rds", route_config=None, rds={"route_config_name": "r"})

    def test_tracingOperation(self):
        """Tracing's formatted operation names are not read yet."""
        self.assertUnsupported("tracing.operation", tracing={"operation": "%REQ(:PATH)%"})

    def test_codecTypes(self):
        self.assertUnsupported("codec_type", codec_type="HTTP3")

    def test_others(self):
        for field, value in [("http2_protocol_options", {"allow_metadata": True}),
                             ("scoped_routes", {"name": "s"}), ("proxy_status_config", {}),
                             ("proxy_100_continue", True)]:
            self.assertUnsupported(field, route_config=ROUTES if field != "scoped_routes"
                                   else None, **{field: value})

    def test_streamErrorOnInvalidHttpMessage(self):
        """
        Envoy's HTTP/2 codec takes the connection manager's setting unless
        http2_protocol_options.override_stream_error_on_invalid_http_message
        is set.
        """
        self.assertFalse(build().http2Options.streamErrorOnInvalidHttpMessage)
        self.assertTrue(build(stream_error_on_invalid_http_message=True)
                        .http2Options.streamErrorOnInvalidHttpMessage)
        config = build(stream_error_on_invalid_http_message=True, http2_protocol_options={
            "override_stream_error_on_invalid_http_message": False,
            "max_concurrent_streams": 7})
        self.assertEqual((config.http2Options.streamErrorOnInvalidHttpMessage,
                          config.http2Options.maxConcurrentStreams), (False, 7))
        config = build(stream_error_on_invalid_http_message=True,
                       http2_protocol_options={"max_concurrent_streams": 7})
        self.assertEqual((config.http2Options.streamErrorOnInvalidHttpMessage,
                          config.http2Options.maxConcurrentStreams), (True, 7))

    def test_protocolOptions(self):
        self.assertUnsupported("common_http_protocol_options.max_response_headers_kb",
                               common_http_protocol_options={"max_response_headers_kb": 10})
        self.assertUnsupported("http_protocol_options.allow_chunked_length",
                               http_protocol_options={"allow_chunked_length": True})
        self.assertUnsupported("http_protocol_options.header_key_format",
                               http_protocol_options={"header_key_format": {
                                   "proper_case_words": {}}})

    def test_upgradeFilters(self):
        self.assertUnsupported("upgrade_configs[0].filters", upgrade_configs=[
            {"upgrade_type": "websocket", "filters": [ROUTER]}])

    def test_unknownHttpFilter(self):
        """An @type no HTTP filter is registered for; skipped when is_optional."""
        bad = {"name": "x", "typed_config": {"@type": "type.googleapis.com/google.protobuf.Empty"}}
        e = self.assertRaises(UnsupportedExtension, build, http_filters=[bad, ROUTER])
        self.assertIn("http_filters[0].typed_config", str(e))
        optional = dict(bad, is_optional=True)
        self.assertEqual(len(build(http_filters=[optional, ROUTER]).filterFactories), 1)

    def test_routerNotLast(self):
        """Envoy 1.40's message for a terminal filter that is not last."""
        e = self.assertRaises(ConfigError, build, http_filters=[ROUTER, ROUTER])
        self.assertIn("Error: terminal filter named envoy.filters.http.router of type "
                      "envoy.filters.http.router must be the last filter in a http filter "
                      "chain.", str(e))
        self.assertIn("http_filters[0]", str(e))

    def test_lastNotTerminal(self):
        """Envoy 1.40's message for a chain that does not end with the router."""
        key = (Category.HTTP_FILTER, "envoy.extensions.filters.http.router.v3.Router")
        original = registry._factories[key]

        from zope.interface import implementer

        from txenvoy.interfaces import IHttpFilterFactory

        @implementer(IHttpFilterFactory)
        class NotTerminal:
            terminal = False

        class Factory:
            category = Category.HTTP_FILTER
            typeNames = original.typeNames
            names = ("test.nt",)

            def create(self, message, context):
                return NotTerminal()

        registry._factories[key] = Factory()
        self.addCleanup(registry._factories.__setitem__, key, original)
        e = self.assertRaises(ConfigError, build, http_filters=[dict(ROUTER, name="nt")])
        self.assertIn("Error: non-terminal filter named nt of type test.nt is the last filter "
                      "in a http filter chain.", str(e))

    def test_unknownCluster(self):
        from envoy.config.bootstrap.v3 import bootstrap_pb2
        typed = {"@type": HCM, "stat_prefix": "s", "http_filters": [ROUTER], "route_config": {
            "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
                {"match": {"prefix": "/"}, "route": {"cluster": "nosuch"}}]}]}}
        message = json_format.ParseDict(
            {"name": "hcm", "typed_config": typed}, listener_components_pb2.Filter())
        context = FactoryContext(Clock(), StatsStore(), path="x",
                                 bootstrap=bootstrap_pb2.Bootstrap())
        e = self.assertRaises(ConfigError, registry.createExtension, Category.NETWORK_FILTER,
                              message, context, PATH)
        self.assertIn("unknown cluster 'nosuch'", str(e))

    def test_statPrefixRequired(self):
        self.assertRaises(ConfigError, build, stat_prefix="")


class ExampleTests(SynchronousTestCase):
    """Envoy's example configs with an HTTP connection manager build."""

    def test_examples(self):
        from txenvoy.config.loader import loadBootstrap
        from txenvoy.server.server import Server
        cwd = os.getcwd()
        os.chdir(EXAMPLES)
        self.addCleanup(os.chdir, cwd)
        for name in ("01-envoy-demo.yaml", "02-front-proxy.yaml",
                     "09-routes-retries-timeouts.yaml"):
            Server(Clock(), loadBootstrap(name), validateOnly=True)
