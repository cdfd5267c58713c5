"""
Tests for L{txenvoy.extensions.filters.listener.tls_inspector} and
L{txenvoy.network.tls_parse}, with ClientHellos from a real OpenSSL client
and hand-built ones. Expected outcomes were checked against Envoy 1.40.
"""

from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.extensions.filters.listener.fakes import (
    Harness,
    RecorderFactory,
    alpnExtension,
    clientHelloBytes,
    handBuiltClientHello,
    paddingExtension,
    records,
    singleChain,
    sniExtension,
)
from txenvoy.config.context import FactoryContext
from txenvoy.config.errors import UnsupportedField
from txenvoy.extensions.filters.listener.tls_inspector import (
    TlsInspectorConfig,
    createTlsInspector,
)
from txenvoy.interfaces import IListenerFilter, IListenerFilterFactory
from txenvoy.network.tls_parse import (
    TLS_MAX_CLIENT_HELLO,
    ClientHelloParser,
    ParseState,
    isGrease,
    parseClientHello,
)
from txenvoy.stats.store import StatsStore


class ParserTests(SynchronousTestCase):
    """L{parseClientHello} on its own."""

    def test_realClientHello(self):
        data = clientHelloBytes(b"www.example.com", [b"h2", b"http/1.1"])
        state, hello, processed = parseClientHello(data)
        self.assertEqual(state, ParseState.TLS)
        self.assertEqual(hello.serverName, "www.example.com")
        self.assertEqual(hello.alpnProtocols, ("h2", "http/1.1"))
        self.assertEqual(hello.maximumVersion, 0x0304)
        self.assertEqual(processed, len(data))

    def test_noSniNoAlpn(self):
        state, hello, _ = parseClientHello(clientHelloBytes())
        self.assertEqual(state, ParseState.TLS)
        self.assertEqual(hello.serverName, "")
        self.assertEqual(hello.alpnProtocols, ())

    def test_needMore(self):
        data = clientHelloBytes(b"a.example.com")
        for n in (0, 1, 4, 5, 9, len(data) - 1):
            self.assertEqual(parseClientHello(data[:n])[0], ParseState.NEED_MORE, n)

    def test_incremental(self):
        """Fed a byte at a time, the parser resumes where it stopped."""
        data = records(handBuiltClientHello(sniExtension("x.example.com")), size=7)
        parser = ClientHelloParser()
        for n in range(1, len(data)):
            self.assertEqual(parser.parse(data[:n]), ParseState.NEED_MORE)
        self.assertEqual(parser.parse(data), ParseState.TLS)
        self.assertEqual(parser.clientHello.serverName, "x.example.com")
        self.assertEqual(parser.bytesProcessed, len(data))

    def test_plaintext(self):
        """Not a handshake record: decided on the 5-byte record header."""
        state, hello, processed = parseClientHello(b"GET / HTTP/1.1\r\n")
        self.assertEqual(state, ParseState.NOT_TLS)
        self.assertIsNone(hello)
        self.assertEqual(processed, 5)

    def test_notClientHello(self):
        data = records(handBuiltClientHello(sniExtension("x.com"), messageType=2))
        self.assertEqual(parseClientHello(data)[0], ParseState.NOT_TLS)

    def test_wrongRecordType(self):
        data = records(handBuiltClientHello(sniExtension("x.com")), contentType=23)
        self.assertEqual(parseClientHello(data)[0], ParseState.NOT_TLS)

    def test_malformed(self):
        """What BoringSSL refuses is not TLS (tls_not_found in Envoy)."""
        cases = [
            handBuiltClientHello(ciphers=()),
            handBuiltClientHello(sniExtension("")),
            handBuiltClientHello(sniExtension("a.com") + sniExtension("b.com")),
            handBuiltClientHello(b"\x00\x00\x00\x05\x00\x03\x00\x00\x00"),
            handBuiltClientHello(version=0x0300),
            handBuiltClientHello(b"\x00"),
        ]
        for message in cases:
            self.assertEqual(parseClientHello(records(message))[0], ParseState.NOT_TLS)

    def test_oddButAccepted(self):
        """Envoy still finds TLS with an empty or empty-named ALPN list."""
        for ext in (alpnExtension([]), alpnExtension([b""])):
            state, hello, _ = parseClientHello(records(handBuiltClientHello(ext)))
            self.assertEqual(state, ParseState.TLS)
            self.assertEqual(hello.alpnProtocols, ())
        state, hello, _ = parseClientHello(records(handBuiltClientHello(None)))
        self.assertEqual(state, ParseState.TLS)

    def test_tooLarge(self):
        """Envoy 1.40 gives up at 16 KiB (C{max_client_hello_size})."""
        message = handBuiltClientHello(sniExtension("a.example.com") + paddingExtension(16500))
        data = records(message)
        state, _, processed = parseClientHello(data)
        self.assertEqual(state, ParseState.TOO_LARGE)
        self.assertEqual(processed, TLS_MAX_CLIENT_HELLO)
        self.assertEqual(parseClientHello(data[:TLS_MAX_CLIENT_HELLO - 1])[0],
                         ParseState.NEED_MORE)

    def test_largestThatFits(self):
        """A ClientHello whose records end exactly at the limit fits."""
        base = len(handBuiltClientHello(sniExtension("a.example.com") + paddingExtension(0)))
        message = handBuiltClientHello(
            sniExtension("a.example.com") + paddingExtension(TLS_MAX_CLIENT_HELLO - 5 - base))
        data = records(message)
        self.assertEqual(len(data), TLS_MAX_CLIENT_HELLO)
        self.assertEqual(parseClientHello(data)[0], ParseState.TLS)
        self.assertEqual(parseClientHello(data + b"x")[0], ParseState.TLS)

    def test_grease(self):
        self.assertTrue(isGrease(0x0A0A))
        self.assertTrue(isGrease(0xFAFA))
        self.assertFalse(isGrease(0x0A1A))
        self.assertFalse(isGrease(0x1301))


class InspectorTests(SynchronousTestCase):

    def setUp(self):
        self.h = Harness()
        self.config = TlsInspectorConfig()
        self.recorder = RecorderFactory()
        listener = singleChain(self.recorder)
        listener.listenerFilters = [self.config]
        self.conn, self.transport = self.h.connect(listener)

    def stat(self, name):
        return self.h.counter("tls_inspector." + name)

    def test_interfaces(self):
        self.assertTrue(verifyObject(IListenerFilterFactory, self.config))
        self.assertTrue(verifyObject(IListenerFilter, self.config.buildListenerFilter(self.conn)))

    def test_tlsWithSniAndAlpn(self):
        data = clientHelloBytes(b"a.example.com", [b"h2", b"http/1.1"])
        self.conn.dataReceived(data)
        self.assertEqual(self.conn.transportProtocol, "tls")
        self.assertEqual(self.conn.streamInfo.requestedServerName, "a.example.com")
        self.assertEqual(self.conn.applicationProtocols, ("h2", "http/1.1"))
        for name in ("tls_found", "sni_found", "alpn_found"):
            self.assertEqual(self.stat(name), 1, name)
        for name in ("tls_not_found", "sni_not_found", "alpn_not_found"):
            self.assertEqual(self.stat(name), 0, name)
        self.assertEqual(self.h.histogram("tls_inspector.bytes_processed").count, 1)
        self.assertEqual(self.h.histogram("tls_inspector.bytes_processed").unit, "bytes")
        # Nothing consumed: the chain gets the whole ClientHello.
        self.assertEqual(self.recorder.built[0].received(), data)

    def test_tlsWithoutSniOrAlpn(self):
        self.conn.dataReceived(clientHelloBytes())
        self.assertEqual(self.conn.transportProtocol, "tls")
        self.assertEqual(self.conn.streamInfo.requestedServerName, "")
        self.assertEqual(self.stat("sni_not_found"), 1)
        self.assertEqual(self.stat("alpn_not_found"), 1)
        self.assertEqual(self.stat("tls_found"), 1)

    def test_serverNameLowerCase(self):
        """Envoy's socket keeps the requested server name in lower case."""
        self.conn.dataReceived(records(handBuiltClientHello(sniExtension("A.Example.COM"))))
        self.assertEqual(self.conn.streamInfo.requestedServerName, "a.example.com")

    def test_splitAcrossReads(self):
        data = clientHelloBytes(b"split.example.com")
        self.conn.dataReceived(data[:3])
        self.conn.dataReceived(data[3:40])
        self.assertEqual(self.recorder.built, [])
        self.conn.dataReceived(data[40:])
        self.assertEqual(self.conn.streamInfo.requestedServerName, "split.example.com")
        self.assertEqual(self.recorder.built[0].received(), data)

    def test_plaintext(self):
        self.conn.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
        self.assertEqual(self.conn.transportProtocol, "raw_buffer")
        self.assertEqual(self.stat("tls_not_found"), 1)
        self.assertEqual(self.stat("tls_found"), 0)
        self.assertEqual(self.recorder.built[0].received(), b"GET / HTTP/1.1\r\n\r\n")
        h = self.h.histogram("tls_inspector.bytes_processed")
        self.assertEqual((h.count, h.sum), (1, 5))

    def test_shortPlaintextWaits(self):
        """Fewer than 5 bytes decide nothing (as Envoy: it waits)."""
        self.conn.dataReceived(b"hi")
        self.assertEqual(self.recorder.built, [])
        self.assertEqual(self.stat("tls_not_found"), 0)

    def test_tooLarge(self):
        """An oversized ClientHello: counted, and the socket is reset."""
        message = handBuiltClientHello(sniExtension("a.example.com") + paddingExtension(20000))
        self.conn.dataReceived(records(message))
        self.assertEqual(self.stat("client_hello_too_large"), 1)
        self.assertTrue(self.transport.disconnected)
        self.assertEqual(self.recorder.built, [])


class ConfigTests(SynchronousTestCase):

    def create(self, **fields):
        message = tls_inspector_pb2.TlsInspector(**fields)
        return createTlsInspector(message, FactoryContext(None, StatsStore()).child("lf"))

    def test_defaults(self):
        config = self.create()
        self.assertEqual(config.maxClientHelloSize, TLS_MAX_CLIENT_HELLO)
        self.assertFalse(config.closeOnParseError)

    def test_maxClientHelloSize(self):
        from google.protobuf.wrappers_pb2 import UInt32Value

        config = self.create(max_client_hello_size=UInt32Value(value=1024))
        h = Harness()
        listener = singleChain(RecorderFactory())
        listener.listenerFilters = [config]
        conn, transport = h.connect(listener)
        message = handBuiltClientHello(paddingExtension(2000))
        conn.dataReceived(records(message))
        self.assertEqual(h.counter("tls_inspector.client_hello_too_large"), 1)

    def test_closeOnParseErrors(self):
        config = self.create(close_connection_on_client_hello_parsing_errors=True)
        h = Harness()
        listener = singleChain(RecorderFactory())
        listener.listenerFilters = [config]
        conn, transport = h.connect(listener)
        conn.dataReceived(b"GET / HTTP/1.1\r\n")
        self.assertTrue(transport.disconnected)
        self.assertEqual(h.counter("tls_inspector.tls_not_found"), 0)

    def test_fingerprintsUnsupported(self):
        from google.protobuf.wrappers_pb2 import BoolValue

        self.assertRaises(UnsupportedField, self.create,
                          enable_ja3_fingerprinting=BoolValue(value=True))
        self.create(enable_ja3_fingerprinting=BoolValue(value=False))
