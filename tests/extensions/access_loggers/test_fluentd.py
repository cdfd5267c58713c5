"""
Tests for L{txenvoy.extensions.access_loggers.fluentd}: buffering,
the forward message, and a receiver that is away or slow.
"""

import io

import msgpack
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from txenvoy.extensions.access_loggers.fluentd import FluentdAccessLogger
from txenvoy.formatter.substitution import compileJsonFormat
from txenvoy.interfaces import IAccessLogger
from txenvoy.network.stream_info import StreamInfo
from txenvoy.stats.store import StatsStore


class FluentdAccessLoggerTests(SynchronousTestCase):

    def setUp(self):
        self.reactor = MemoryReactorClock()
        # A worker hands a full buffer to the main thread; here it is one thread.
        self.reactor.callFromThread = lambda f, *args: f(*args)
        self.store = StatsStore()
        self.shard = self.store.shard("main_thread")
        self.address = ("127.0.0.1", 24224)
        self.logger = FluentdAccessLogger(
            self.reactor, lambda: self.address, "envoy.access",
            compileJsonFormat({"code": "%RESPONSE_CODE%", "m": "x %RESPONSE_CODE%"}),
            self.shard, "fl", bufferSizeBytes=64)
        verifyObject(IAccessLogger, self.logger)
        self.info = StreamInfo(self.reactor)
        self.info.responseCode = 200

    def stat(self, name):
        return self.store.counterValue("access_logs.fluentd.fl." + name)

    def connect(self):
        [(host, port, factory, timeout, _)] = self.reactor.tcpClients
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def test_forwardMessage(self):
        """The first flush connects; the batch goes as [tag, [[time, record]...]]."""
        self.logger.log(self.info)
        self.logger.flush()
        self.assertEqual(self.reactor.tcpClients[0][:2], self.address)
        _, transport = self.connect()
        [message] = list(msgpack.Unpacker(io.BytesIO(transport.value())))
        tag, entries = message
        self.assertEqual((tag, [record for _, record in entries]),
                         ("envoy.access", [{"code": 200, "m": "x 200"}]))
        self.assertEqual((self.stat("entries_buffered"), self.stat("events_sent")), (1, 1))

    def test_boundedWhileAway(self):
        """Nobody listening: at most twice buffer_size_bytes wait, the rest is lost."""
        for _ in range(20):
            self.logger.log(self.info)
        self.assertGreater(self.stat("entries_lost"), 0)
        self.assertEqual(self.stat("entries_buffered") + self.stat("entries_lost"), 20)

    def test_slowReceiver(self):
        """A transport that pauses us gets nothing more until it resumes."""
        self.logger.log(self.info)
        self.logger.flush()
        protocol, transport = self.connect()
        sent = len(transport.value())
        protocol.pauseProducing()
        self.logger.log(self.info)
        self.logger.flush()
        self.assertEqual(len(transport.value()), sent)
        protocol.resumeProducing()
        self.assertGreater(len(transport.value()), sent)

    def test_reconnect(self):
        """A closed connection is counted, and the next flush connects again."""
        self.logger.log(self.info)
        self.logger.flush()
        protocol, _ = self.connect()
        protocol.connectionLost(None)
        self.assertEqual(self.stat("connections_closed"), 1)
        self.logger.log(self.info)
        self.logger.flush()
        self.assertEqual((len(self.reactor.tcpClients), self.stat("reconnect_attempts")), (2, 1))
