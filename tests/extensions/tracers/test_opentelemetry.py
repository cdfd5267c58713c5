"""
Tests for L{txenvoy.extensions.tracers.opentelemetry}: spans as Envoy's
OpenTelemetry tracer makes them, their OTLP encoding and the config.
"""

import weakref

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.extensions.tracers.freeing import withoutCollector
from tests.http.hcm_harness import Harness
from txenvoy.config.errors import ConfigError
from txenvoy.extensions.tracers.opentelemetry import OpenTelemetryDriver
from txenvoy.http.filter_config import snapshotSource
from txenvoy.http.headers import HeaderMap, RequestHeaders
from txenvoy.interfaces import ISpan, ITracerDriver
from txenvoy.network.stream_info import StreamInfo
from txenvoy.server.dispatcher import Dispatcher
from txenvoy.stats.store import StatsStore
from txenvoy.tracing.reporter import HttpCollector

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"
OTEL = "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig"
SAMPLERS = "type.googleapis.com/envoy.extensions.tracers.opentelemetry.samplers.v3."


def request(*pairs):
    return RequestHeaders(b"GET", b"/", b"h", headers=HeaderMap(
        [(n.encode(), v.encode()) for n, v in pairs]))


def harness(testCase, **fields):
    typed = {"@type": OTEL, "grpc_service": {"envoy_grpc": {"cluster_name": "origin"}}}
    typed.update(fields)
    return Harness(testCase, hcm={"tracing": {"provider": {
        "name": "envoy.tracers.opentelemetry", "typed_config": typed}}})


class DriverTests(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.dispatcher = Dispatcher(self.clock, "worker_0", StatsStore().shard("worker_0"))
        self.info = StreamInfo(self.clock)

    def driver(self, **fields):
        driver = harness(self, **fields).config.tracing.driver
        verifyObject(ITracerDriver, driver)
        return driver

    def start(self, driver, headers, traced=True, egress=False):
        span = driver.startSpan(self.dispatcher, headers, self.info, "ingress", traced, egress,
                                10.0)
        if span is not None:
            verifyObject(ISpan, span)
        return span

    def test_freedByReferenceCounting(self):
        """
        A driver and the reporter it made for a worker are freed by
        reference counting alone once a new config lets them go: the
        reporter encodes without holding the driver.
        """
        driver = OpenTelemetryDriver(
            lambda dispatcher: HttpCollector(dispatcher, "otel", "/v1/traces",
                                             b"application/x-protobuf"),
            snapshotSource(None), [("service.name", "svc")])
        refs = [weakref.ref(driver), weakref.ref(driver.reporterFor(self.dispatcher))]
        withoutCollector(self)
        del driver
        self.assertEqual([ref() for ref in refs], [None, None])

    def test_continuesTraceParent(self):
        """A caller's trace id, its span as parent, its tracestate and sampled flag."""
        span = self.start(self.driver(), request(
            ("traceparent", "00-%s-%s-01" % (TRACE, SPAN)), ("tracestate", "k=v")), False)
        self.assertEqual((span.traceId.hex(), span.parentId.hex(), span.traceState,
                          span.sampled, span.remoteParent), (TRACE, SPAN, "k=v", True, True))

    def test_rootUsesEnvoysDecision(self):
        span = self.start(self.driver(), request(), traced=False)
        self.assertEqual((span.parentId, span.sampled, len(span.traceId)), (None, False, 16))

    def test_malformedNoSpan(self):
        """A traceparent that cannot be read: no span, as Envoy."""
        self.assertIsNone(self.start(self.driver(), request(("traceparent", "00-x-y-01"))))

    def test_alwaysOnSampler(self):
        """The always_on sampler traces what Envoy's decision would not."""
        driver = self.driver(sampler={"name": "always_on", "typed_config": {
            "@type": SAMPLERS + "AlwaysOnSamplerConfig"}})
        self.assertTrue(self.start(driver, request(), traced=False).sampled)

    def test_parentBasedSampler(self):
        """parent_based: a caller's flag decides, the wrapped sampler decides for roots."""
        driver = self.driver(sampler={"name": "parent", "typed_config": {
            "@type": SAMPLERS + "ParentBasedSamplerConfig",
            "wrapped_sampler": {"name": "on", "typed_config": {
                "@type": SAMPLERS + "AlwaysOnSamplerConfig"}}}})
        self.assertTrue(self.start(driver, request(), traced=False).sampled)
        self.assertFalse(self.start(driver, request(
            ("traceparent", "00-%s-%s-00" % (TRACE, SPAN)))).sampled)

    def test_encode(self):
        """
        One ExportTraceServiceRequest: the resource (service.name,
        detectors), scope envoy, string attributes in order, Envoy's flags.
        """
        driver = self.driver(service_name="svc", resource_detectors=[{
            "name": "static", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.tracers.opentelemetry."
                         "resource_detectors.v3.StaticConfigResourceDetectorConfig",
                "attributes": {"deployment.environment": "test"}}}])
        span = self.start(driver, request(("traceparent", "00-%s-%s-01" % (TRACE, SPAN))))
        span.setTag("component", "proxy")
        span.setTag("http.status_code", "200")
        span.finishSpan(10.5)
        message = trace_service_pb2.ExportTraceServiceRequest()
        message.ParseFromString(driver.encode([span]))
        [rs] = message.resource_spans
        resource = {a.key: a.value.string_value for a in rs.resource.attributes}
        self.assertEqual((resource["service.name"], resource["deployment.environment"],
                          resource["telemetry.sdk.name"]), ("svc", "test", "envoy"))
        [out] = rs.scope_spans[0].spans
        self.assertEqual(rs.scope_spans[0].scope.name, "envoy")
        self.assertEqual((out.name, out.kind, out.flags, out.parent_span_id.hex(),
                          out.start_time_unix_nano, out.end_time_unix_nano),
                         ("ingress", 2, 0x301, SPAN, 10000000000, 10500000000))
        self.assertEqual([(a.key, a.value.string_value) for a in out.attributes],
                         [("component", "proxy"), ("http.status_code", "200")])


class ConfigTests(SynchronousTestCase):

    def test_needsAnExporter(self):
        e = self.assertRaises(ConfigError, Harness, self, hcm={"tracing": {"provider": {
            "name": "envoy.tracers.opentelemetry", "typed_config": {"@type": OTEL}}}})
        self.assertIn("one of grpc_service or http_service is required", str(e))

    def test_googleGrpcRefused(self):
        e = self.assertRaises(ConfigError, harness, self, grpc_service={
            "google_grpc": {"target_uri": "x:1", "stat_prefix": "s"}})
        self.assertIn("tracing.provider.typed_config.grpc_service", str(e))

    def test_otherSamplerRefused(self):
        """A sampler txenvoy does not have is refused with its path."""
        e = self.assertRaises(ConfigError, harness, self, sampler={
            "name": "ratio", "typed_config": {
                "@type": SAMPLERS + "TraceIdRatioBasedSamplerConfig",
                "sampling_percentage": {"numerator": 1}}})
        self.assertIn("tracing.provider.typed_config.sampler.typed_config", str(e))
