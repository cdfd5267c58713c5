"""
Tests for L{txenvoy.extensions.access_loggers.open_telemetry}: OTLP log
records formatted as Envoy's, buffered with bounded memory, exported from
the main thread.
"""

from envoy.extensions.access_loggers.open_telemetry.v3 import logs_service_pb2 as _als  # noqa: F401
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.accesslog.test_loggers import ThreadReactor, accessLog, streamInfo
from tests.tracing.test_reporter import RecordingCollector
from txenvoy.accesslog.filters import createAccessLog
from txenvoy.config.context import FactoryContext
from txenvoy.config.errors import ConfigError
from txenvoy.config.loader import loadBootstrap
from txenvoy.interfaces import IAccessLogger
from txenvoy.stats.store import StatsStore

OTEL = ("type.googleapis.com/envoy.extensions.access_loggers.open_telemetry.v3."
        "OpenTelemetryAccessLogConfig")
BOOTSTRAP = """
node: {id: n1, cluster: c1, locality: {zone: z1}}
static_resources:
  clusters:
  - name: otel
    load_assignment:
      cluster_name: otel
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 4317}}}}]}]
"""


class OpenTelemetryAccessLoggerTests(SynchronousTestCase):

    def setUp(self):
        self.reactor = ThreadReactor()
        self.store = StatsStore()
        self.context = FactoryContext(self.reactor, self.store,
                                      bootstrap=loadBootstrap(None, BOOTSTRAP))

    def build(self, **config):
        typed = {"@type": OTEL, "common_config": {
            "log_name": "edge", "grpc_service": {"envoy_grpc": {"cluster_name": "otel"}},
            "buffer_size_bytes": 200}}
        typed.update(config)
        logger = createAccessLog(accessLog({"name": "envoy.access_loggers.open_telemetry",
                                            "typed_config": typed}), self.context, "al[0]")
        self.addCleanup(logger.stop)
        verifyObject(IAccessLogger, logger)
        logger.collector = self.collector = RecordingCollector()
        return logger

    def stat(self, name):
        return self.store.snapshot().counters.get(
            "access_logs.open_telemetry_access_log." + name, 0)

    def exported(self, index=0):
        request = logs_service_pb2.ExportLogsServiceRequest()
        request.ParseFromString(self.collector.posts[index][1])
        return request

    def test_recordAsEnvoy(self):
        """
        Built-in resource labels then resource_attributes; the body and
        attributes formatted; the start time in nanoseconds; sent when the
        flush interval ends.
        """
        logger = self.build(
            resource_attributes={"values": [{"key": "team", "value": {"string_value": "t"}}]},
            body={"string_value": "%RESPONSE_CODE% %BYTES_RECEIVED%"},
            attributes={"values": [{"key": "flags",
                                    "value": {"string_value": "%RESPONSE_FLAGS%"}}]})
        logger.log(streamInfo(code=200, flags=["UH"]), None, None)
        self.assertEqual(self.collector.posts, [])
        self.reactor.advance(1.0)
        [rl] = self.exported().resource_logs
        self.assertEqual([(a.key, a.value.string_value) for a in rl.resource.attributes],
                         [("log_name", "edge"), ("zone_name", "z1"), ("cluster_name", "c1"),
                          ("node_name", "n1"), ("team", "t")])
        [record] = rl.scope_logs[0].log_records
        self.assertEqual((record.body.string_value, record.time_unix_nano,
                          [(a.key, a.value.string_value) for a in record.attributes]),
                         ("200 3", 1795645031272000000, [("flags", "UH")]))
        self.assertEqual(self.stat("logs_written"), 1)

    def test_fullBufferFlushesFromMain(self):
        """buffer_size_bytes waiting: a flush is posted to the main thread."""
        logger = self.build(body={"string_value": "x" * 100})
        logger.log(streamInfo(code=200), None, None)
        logger.log(streamInfo(code=200), None, None)
        self.assertEqual(len(self.reactor.posted), 1)
        self.reactor.runPosted()
        self.assertEqual(len(self.exported().resource_logs[0].scope_logs[0].log_records), 2)

    def test_boundedWhenCollectorStuck(self):
        """
        With exports stuck in flight, records past four buffers are dropped
        and counted, and later flushes are dropped too.
        """
        logger = self.build(body={"string_value": "x" * 100})
        for _ in range(4):
            logger.log(streamInfo(code=200), None, None)
            self.reactor.runPosted()
        for _ in range(10):
            logger.log(streamInfo(code=200), None, None)
        self.assertEqual(len(self.collector.posts), 2)
        self.assertGreater(self.stat("logs_dropped"), 0)
        self.assertLessEqual(logger.buffer.bufferedBytes, 4 * 200)

    def test_unknownCluster(self):
        e = self.assertRaises(ConfigError, self.build, common_config={
            "log_name": "edge", "grpc_service": {"envoy_grpc": {"cluster_name": "nope"}}})
        self.assertIn("al[0].typed_config.common_config.grpc_service.envoy_grpc.cluster_name",
                      str(e))

    def test_structuredBodyRefused(self):
        e = self.assertRaises(ConfigError, self.build,
                              body={"kvlist_value": {"values": []}})
        self.assertIn("al[0].typed_config.body", str(e))
