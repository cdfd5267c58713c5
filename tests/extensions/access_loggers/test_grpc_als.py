"""
Tests for L{txenvoy.extensions.access_loggers.grpc_als}: the stream's
messages, and a service that is away or slow.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from envoy.service.accesslog.v3 import als_pb2
from txenvoy.extensions.access_loggers.grpc_als import (
    MAX_QUEUED,
    GrpcAccessLogger,
    buildTcpEntry,
)
from txenvoy.interfaces import IAccessLogger
from txenvoy.network.stream_info import StreamInfo
from txenvoy.stats.store import StatsStore


class FakeCall:
    """A client-streaming call that keeps what it is sent."""

    def __init__(self):
        self.sent = []
        self.active = False
        self.backlog = 0

    def start(self, onDone):
        self.active = True
        self.onDone = onDone

    def send(self, message):
        self.sent.append(message)

    def queued(self):
        return self.backlog

    def cancel(self):
        self.active = False


class GrpcAccessLoggerTests(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.clock.callFromThread = lambda f, *args: f(*args)
        self.store = StatsStore()
        self.calls = []
        self.address = ("127.0.0.1", 1)

        def openCall(address):
            call = FakeCall()
            self.calls.append(call)
            return call

        identifier = als_pb2.StreamAccessLogsMessage.Identifier(log_name="tcplog")
        self.logger = GrpcAccessLogger(self.clock, lambda: self.address, identifier,
                                       "tcp_logs", buildTcpEntry,
                                       self.store.shard("main_thread"), openCall,
                                       bufferSizeBytes=4096)
        verifyObject(IAccessLogger, self.logger)
        self.info = StreamInfo(self.clock)
        self.info.bytesReceived, self.info.bytesSent = 5, 7

    def stat(self, name):
        return self.store.counterValue("access_logs.grpc_access_log." + name)

    def test_identifierFirst(self):
        """The stream's first message names the log; the next ones only carry entries."""
        for _ in range(2):
            self.logger.log(self.info)
            self.logger.flush()
        [call] = self.calls
        first, second = call.sent
        self.assertEqual((first.identifier.log_name, second.HasField("identifier")),
                         ("tcplog", False))
        entry = second.tcp_logs.log_entry[0]
        self.assertEqual((entry.connection_properties.received_bytes,
                          entry.connection_properties.sent_bytes), (5, 7))
        self.assertEqual(self.stat("grpc_entries_flushed"), 2)

    def test_streamEndsReopens(self):
        """A stream that ended (failed) is counted and opened again, identifier first."""
        self.logger.log(self.info)
        self.logger.flush()
        self.calls[0].onDone(14, "unavailable", None)
        self.logger.log(self.info)
        self.logger.flush()
        self.assertEqual((len(self.calls), self.stat("grpc_entries_flush_failed")), (2, 1))
        self.assertTrue(self.calls[1].sent[0].HasField("identifier"))

    def test_slowService(self):
        """A backlog grpcio has not taken costs entries, counted, never a wait."""
        self.logger.log(self.info)
        self.logger.flush()
        self.calls[0].backlog = MAX_QUEUED
        self.logger.log(self.info)
        self.logger.flush()
        self.assertEqual((len(self.calls[0].sent), self.stat("logs_dropped")), (1, 1))

    def test_noHost(self):
        """No host in the cluster: the batch is dropped and counted."""
        self.address = None
        self.logger.log(self.info)
        self.logger.flush()
        self.assertEqual((self.calls, self.stat("logs_dropped")), ([], 1))
