# -*- test-case-name: tests.extensions.access_loggers.test_fluentd -*-
"""
C{envoy.access_loggers.fluentd}: access log records sent to a Fluentd
(or Fluent Bit) forward input over TCP, as Envoy's: each batch is one
msgpack C{[tag, [[time, record], ...]]} (the Forward mode of the forward
protocol), C{time} the emission second, C{record} the C{record} struct
formatted as the JSON access log format does (keys sorted, a lone command
keeps its type).

Records are formatted on the worker, kept in a
L{txenvoy.accesslog.buffered.RecordBuffer} and written by the main thread every
C{buffer_flush_interval} (default 1 s) or once C{buffer_size_bytes}
(default 16384) wait. A receiver that is down, slow or gone costs bounded
memory and never a request: the connection is Twisted's, written only
while the receiver keeps up (its transport pauses us otherwise); past
twice C{buffer_size_bytes} waiting, records are dropped. Stats
C{access_logs.fluentd.<stat_prefix>.entries_buffered} (records taken),
C{events_sent} (messages written), C{entries_lost}, C{reconnect_attempts}
and C{connections_closed}, as Envoy counts them.
"""

import json

import msgpack
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from txenvoy.accesslog.buffered import RecordBuffer
from txenvoy.config.errors import ConfigError
from txenvoy.config.fields import durationSeconds
from txenvoy.config.registry import Category, extension
from txenvoy.formatter import substitution as _formatter
from txenvoy.grpc.async_client import mainThreadHosts
from txenvoy.interfaces import IAccessLogger
from txenvoy.tracing.reporter import checkCollectorCluster

log = Logger(namespace="fluentd")

STATS = ("entries_buffered", "events_sent", "entries_lost", "reconnect_attempts",
         "connections_closed")
_FIELDS = ("cluster", "tag", "stat_prefix", "buffer_flush_interval", "buffer_size_bytes",
           "record")


class _ForwardProtocol(Protocol):
    """The connection to the receiver: reports its state, reads nothing."""

    def __init__(self, logger):
        self._logger = logger

    def connectionMade(self):
        self.transport.registerProducer(self, True)
        self._logger.connected(self)

    def dataReceived(self, data):
        # The forward protocol's acks are not asked for.
        pass

    def connectionLost(self, reason):
        self._logger.disconnected(self)

    # The transport's producer: a receiver that does not keep up pauses us.

    def pauseProducing(self):
        self._logger.writable = False

    def resumeProducing(self):
        self._logger.writable = True
        self._logger.flush()

    def stopProducing(self):
        pass


class _ForwardFactory(ClientFactory):
    def __init__(self, logger):
        self._logger = logger

    def buildProtocol(self, addr):
        return _ForwardProtocol(self._logger)

    def clientConnectionFailed(self, connector, reason):
        self._logger.connectFailed(reason)


@implementer(IAccessLogger)
class FluentdAccessLogger:
    """
    Formats and buffers on the calling thread; the main thread connects
    and writes.
    """

    def __init__(self, reactor, host, tag, record, stats, statPrefix, flushInterval=1.0,
                 bufferSizeBytes=16384, connectTimeout=5.0):
        self._reactor = reactor
        self._host = host
        self._tag = msgpack.packb(tag)
        self._record = record
        prefix = "access_logs.fluentd.%s." % (statPrefix,)
        for name in STATS:
            setattr(self, "_" + name, stats.counter(prefix + name))
        self._connectTimeout = connectTimeout
        self.buffer = RecordBuffer(reactor, self.flush, self._entries_buffered,
                                   self._entries_lost, flushInterval, bufferSizeBytes)
        self._protocol = None
        self._connecting = False
        self._everConnected = False
        self.writable = True

    def start(self):
        """Start the flush timer on the main reactor."""
        self.buffer.start()

    def stop(self):
        self.buffer.stop()
        if self._protocol is not None:
            self._protocol.transport.loseConnection()

    def log(self, streamInfo, requestHeaders=None, responseHeaders=None,
            responseTrailers=None):
        """Format one record and buffer it (any worker thread; never blocks)."""
        text = self._record.format(streamInfo, requestHeaders, responseHeaders,
                                   responseTrailers)
        entry = msgpack.packb([int(streamInfo.startTime + streamInfo.duration()),
                               json.loads(text)])
        self.buffer.add(entry, len(entry))

    def flush(self):
        """Write what is buffered as one forward message (main thread)."""
        if not self.buffer.waiting():
            return
        protocol = self._protocol
        if protocol is None:
            self._connect()
            return
        if not self.writable:
            return
        entries = self.buffer.take()
        packer = msgpack.Packer()
        protocol.transport.write(b"".join([packer.pack_array_header(2), self._tag,
                                           packer.pack_array_header(len(entries))] + entries))
        self._events_sent.inc()

    def _connect(self):
        if self._connecting:
            return
        address = self._host()
        if address is None:
            self._drop()
            return
        self._connecting = True
        if self._everConnected:
            self._reconnect_attempts.inc()
        self._reactor.connectTCP(address[0], address[1], _ForwardFactory(self),
                                 timeout=self._connectTimeout)

    def _drop(self):
        self.buffer.drop(len(self.buffer.take()))

    def connected(self, protocol):
        self._connecting = False
        self._everConnected = True
        self._protocol = protocol
        self.writable = True
        self.flush()

    def connectFailed(self, reason):
        # What waits stays (bounded): the next flush tries again.
        self._connecting = False
        self._everConnected = True
        log.debug("fluentd connect failed: {reason}", reason=reason.getErrorMessage())

    def disconnected(self, protocol):
        if self._protocol is protocol:
            self._protocol = None
            self._connections_closed.inc()


@extension(Category.ACCESS_LOGGER,
           "envoy.extensions.access_loggers.fluentd.v3.FluentdAccessLogConfig",
           "envoy.access_loggers.fluentd", fields=_FIELDS)
def createFluentdAccessLogger(message, context):
    """Build a L{FluentdAccessLogger}."""
    path = context.path + ".typed_config"
    for field in ("cluster", "tag", "stat_prefix"):
        if not getattr(message, field):
            raise ConfigError("%s.%s: value length must be at least 1 characters"
                              % (path, field))
    if not message.HasField("record"):
        raise ConfigError("%s.record: value is required" % (path,))
    checkCollectorCluster(context, message.cluster, path + ".cluster")
    record = _formatter.compileJsonFormat(message.record, path=path + ".record")
    flush = (durationSeconds(message.buffer_flush_interval)
             if message.HasField("buffer_flush_interval") else 1.0)
    if message.HasField("buffer_flush_interval") and flush <= 0:
        raise ConfigError("%s.buffer_flush_interval: value must be greater than 0s" % (path,))
    size = message.buffer_size_bytes.value if message.HasField("buffer_size_bytes") else 16384
    stats = (context.stats.shard("main_thread") if hasattr(context.stats, "shard")
             else context.stats)
    logger = FluentdAccessLogger(context.reactor,
                                 mainThreadHosts(context.clusterManager, message.cluster),
                                 message.tag, record, stats, message.stat_prefix,
                                 flushInterval=flush, bufferSizeBytes=size)
    if not context.validateOnly:
        logger.start()
    return logger
