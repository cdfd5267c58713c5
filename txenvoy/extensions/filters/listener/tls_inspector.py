# -*- test-case-name: tests.extensions.filters.listener.test_tls_inspector -*-
"""
C{envoy.filters.listener.tls_inspector}: peeks at the ClientHello and tells
filter chain matching whether the connection is TLS, which server name
(SNI) and which application protocols (ALPN) it asks for. It never
consumes a byte.
"""

from zope.interface import implementer

from txenvoy.config.errors import UnsupportedField
from txenvoy.config.registry import Category, extension
from txenvoy.interfaces import IListenerFilter, IListenerFilterFactory
from txenvoy.network.tls_parse import TLS_MAX_CLIENT_HELLO, ClientHelloParser, ParseState
from txenvoy.stats.per_worker import PerWorker


_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LOWER_TABLE = str.maketrans(_UPPER, _UPPER.lower())


def _asciiLower(text):
    return text.translate(_LOWER_TABLE)


class TlsInspectorStats:
    """The C{tls_inspector.*} stats of one worker."""

    COUNTERS = ("tls_found", "tls_not_found", "sni_found", "sni_not_found", "alpn_found",
                "alpn_not_found", "client_hello_too_large")

    def __init__(self, shard):
        scope = shard.scope("tls_inspector.")
        for name in self.COUNTERS:
            setattr(self, name, scope.counter(name))
        self.bytes_processed = scope.histogram("bytes_processed", unit="bytes")


@implementer(IListenerFilter)
class TlsInspector:
    """
    The TLS inspector for one accepted socket (Envoy's
    C{TlsInspector::Filter}).
    """

    def __init__(self, config, connection):
        self._config = config
        self._stats = config.statsFor(connection.dispatcher)
        self._parser = ClientHelloParser(config.maxClientHelloSize)
        self._callbacks = None
        self.maxReadBytes = config.maxClientHelloSize

    def onAccept(self, callbacks):
        self._callbacks = callbacks
        return False

    def onData(self, data):
        parser = self._parser
        state = parser.parse(data)
        if state == ParseState.NEED_MORE:
            return False
        stats = self._stats
        stats.bytes_processed.recordValue(parser.bytesProcessed)
        callbacks = self._callbacks
        if state == ParseState.TLS:
            hello = parser.clientHello
            if hello.serverName:
                stats.sni_found.inc()
                # Envoy's socket keeps the requested server name in lower case.
                callbacks.setRequestedServerName(_asciiLower(hello.serverName))
            else:
                stats.sni_not_found.inc()
            if hello.alpnProtocols:
                stats.alpn_found.inc()
                callbacks.setRequestedApplicationProtocols(hello.alpnProtocols)
            else:
                stats.alpn_not_found.inc()
            stats.tls_found.inc()
            callbacks.setDetectedTransportProtocol("tls")
            return True
        if state == ParseState.TOO_LARGE:
            # Envoy closes the socket: an unreasonably large ClientHello.
            stats.client_hello_too_large.inc()
            callbacks.closeSocket()
            return False
        if self._config.closeOnParseError:
            callbacks.closeSocket()
            return False
        stats.tls_not_found.inc()
        callbacks.setDetectedTransportProtocol("raw_buffer")
        return True


@implementer(IListenerFilterFactory)
class TlsInspectorConfig:
    """
    A compiled C{TlsInspector}.

    @ivar maxClientHelloSize: bytes a ClientHello may take before the
        connection is closed as C{client_hello_too_large}.
    @ivar closeOnParseError: C{close_connection_on_client_hello_parsing_errors}.
    """

    def __init__(self, maxClientHelloSize=TLS_MAX_CLIENT_HELLO, closeOnParseError=False):
        self.maxClientHelloSize = maxClientHelloSize
        self.closeOnParseError = closeOnParseError
        self.statsFor = PerWorker(lambda d: TlsInspectorStats(d.stats)).get

    def buildListenerFilter(self, connection):
        return TlsInspector(self, connection)


@extension(Category.LISTENER_FILTER,
           "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
           "envoy.filters.listener.tls_inspector",
           fields=("enable_ja3_fingerprinting", "enable_ja4_fingerprinting",
                   "initial_read_buffer_size", "close_connection_on_client_hello_parsing_errors",
                   "max_client_hello_size"))
def createTlsInspector(message, context):
    """Build a L{TlsInspectorConfig} from a C{TlsInspector} message."""
    path = context.configPath
    for field in ("enable_ja3_fingerprinting", "enable_ja4_fingerprinting"):
        if message.HasField(field) and getattr(message, field).value:
            raise UnsupportedField("%s.%s" % (path, field))
    size = TLS_MAX_CLIENT_HELLO
    if message.HasField("max_client_hello_size"):
        size = message.max_client_hello_size.value
    # initial_read_buffer_size only tunes how Envoy peeks; reads here are
    # whatever the socket delivers.
    return TlsInspectorConfig(size, message.close_connection_on_client_hello_parsing_errors)
