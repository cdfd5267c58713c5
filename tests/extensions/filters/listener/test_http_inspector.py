"""
Tests for L{txenvoy.extensions.filters.listener.http_inspector}. The
classification of odd request lines follows what Envoy 1.40 did with the
same bytes.
"""

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.extensions.filters.listener.fakes import Harness, RecorderFactory, singleChain
from txenvoy.extensions.filters.listener.http_inspector import (
    HTTP2_CONNECTION_PREFACE,
    HttpInspectorConfig,
    Protocol,
    classify,
)
from txenvoy.extensions.filters.listener.tls_inspector import TlsInspectorConfig
from txenvoy.interfaces import IListenerFilter, IListenerFilterFactory
from tests.extensions.filters.listener.fakes import clientHelloBytes


class ClassifyTests(SynchronousTestCase):

    def test_envoyObserved(self):
        """Each line and what Envoy 1.40's inspector made of it."""
        cases = [
            (b"GET / HTTP/1.1\r\n\r\n", Protocol.HTTP11),
            (b"GET / HTTP/1.0\r\n\r\n", Protocol.HTTP10),
            (HTTP2_CONNECTION_PREFACE, Protocol.H2C),
            (b"hello world\r\n", Protocol.NONE),
            (b"get / HTTP/1.1\r\n", Protocol.HTTP11),
            (b"FOO / HTTP/1.1\r\n", Protocol.HTTP11),
            (b"GET /\r\n", Protocol.HTTP10),
            (b"GET / HTTP/1.2\r\n", Protocol.HTTP10),
            (b"GET / HTTP/2.0\r\n", Protocol.HTTP10),
            (b"GET / HTTP/0.9\r\n", Protocol.HTTP10),
            (b"GET / HTTP/1.1\n", Protocol.HTTP11),
            (b"GET  /  HTTP/1.1\r\n", Protocol.HTTP11),
            (b"GET\t/\tHTTP/1.1\r\n", Protocol.HTTP11),
            (b"GET / HTTP/1.1 \r\n", Protocol.HTTP11),
            (b"GET / HTTP/1.1\x00\r\n", Protocol.HTTP11),
            (b"GET / HTTP/1.1 x\r\n", Protocol.NONE),
            (b"GET / http/1.1\r\n", Protocol.NONE),
            (b"GET / HTTP/12.1\r\n", Protocol.NONE),
            (b"GET / HTTP/1.10\r\n", Protocol.NONE),
            (b"GET / HTTP/1\r\n", Protocol.NONE),
            (b"/ HTTP/1.1\r\n", Protocol.NONE),
            (b"GE(T / HTTP/1.1\r\n", Protocol.NONE),
            (b"GET /a b HTTP/1.1\r\n", Protocol.NONE),
            (b"GET /\xff HTTP/1.1\r\n", Protocol.NONE),
            (b"GET\r\n", Protocol.NONE),
            (b" GET / HTTP/1.1\r\n", Protocol.NONE),
            (b"\r\nGET / HTTP/1.1\r\n", Protocol.NONE),
            (b"G\x00T / HTTP", Protocol.NONE),
            (b"GET world HTTP/1.1\r\n", Protocol.NONE),
            (b"GET world\r\n", Protocol.NONE),
            (b"GET http://a/\r\n", Protocol.HTTP10),
            (b"GET http://a/ HTTP/1.1\r\n", Protocol.HTTP11),
            (b"GET *\r\n", Protocol.HTTP10),
            (b"OPTIONS * HTTP/1.1\r\n", Protocol.HTTP11),
            (b"hello /\r\n", Protocol.HTTP10),
            (b"CONNECT a:443\r\n", Protocol.HTTP10),
            (b"GET a:443 HTTP/1.1\r\n", Protocol.NONE),
            (b"GET /  \r\n", Protocol.HTTP10),
            (b"GET / \x00\r\n", Protocol.NONE),
            (b"GET / HTTP/1.1\r\r\n", Protocol.HTTP11),
            (b"GET / HTTP/1.1\rX\n", Protocol.NONE),
        ]
        for data, expected in cases:
            self.assertEqual(classify(data), expected, data)

    def test_waits(self):
        """Envoy waits for these: no LF yet, or a prefix of the h2 preface."""
        for data in (b"GET / HTTP/1.1", b"GET / HTTP/1.1\r", b"hello", b"PRI * HTTP/2.0\r\n",
                     b"P", b"x" * 70000):
            self.assertEqual(classify(data), Protocol.MORE, data[:20])


class InspectorTests(SynchronousTestCase):

    def setUp(self):
        self.h = Harness()
        self.config = HttpInspectorConfig()
        self.recorder = RecorderFactory()

    def connect(self, filters=None):
        listener = singleChain(self.recorder)
        listener.listenerFilters = filters or [self.config]
        self.conn, self.transport = self.h.connect(listener)
        return self.conn

    def stat(self, name):
        return self.h.counter("http_inspector." + name)

    def test_interfaces(self):
        self.assertTrue(verifyObject(IListenerFilterFactory, self.config))
        self.assertTrue(verifyObject(IListenerFilter,
                                     self.config.buildListenerFilter(self.connect())))

    def test_http11(self):
        conn = self.connect()
        conn.dataReceived(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
        self.assertEqual(conn.applicationProtocols, ("http/1.1",))
        self.assertEqual(self.stat("http11_found"), 1)
        self.assertEqual(self.recorder.built[0].received(), b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")

    def test_http10(self):
        conn = self.connect()
        conn.dataReceived(b"GET / HTTP/1.0\r\n\r\n")
        self.assertEqual(conn.applicationProtocols, ("http/1.0",))
        self.assertEqual(self.stat("http10_found"), 1)

    def test_h2cPreface(self):
        conn = self.connect()
        conn.dataReceived(HTTP2_CONNECTION_PREFACE[:10])
        self.assertEqual(self.recorder.built, [])
        conn.dataReceived(HTTP2_CONNECTION_PREFACE[10:] + b"\x00\x00\x00\x04")
        self.assertEqual(conn.applicationProtocols, ("h2c",))
        self.assertEqual(self.stat("http2_found"), 1)

    def test_prefaceThenDiverges(self):
        """Bytes that start like the preface, then are an HTTP/1 line."""
        conn = self.connect()
        conn.dataReceived(b"PRI * HTTP/2.0\r\n")
        conn.dataReceived(b"oops")
        self.assertEqual(self.stat("http10_found"), 1)
        self.assertEqual(conn.applicationProtocols, ("http/1.0",))

    def test_garbage(self):
        conn = self.connect()
        conn.dataReceived(b"\x16\x03\x01\x00\x05hello")
        self.assertEqual(conn.applicationProtocols, ())
        self.assertEqual(self.stat("http_not_found"), 1)
        self.assertEqual(len(self.recorder.built), 1)

    def test_requestLineInPieces(self):
        conn = self.connect()
        for piece in (b"GE", b"T /lo", b"ng/pa", b"th HTT", b"P/1.", b"1\r", b"\n"):
            self.assertEqual(self.recorder.built, [])
            conn.dataReceived(piece)
        self.assertEqual(conn.applicationProtocols, ("http/1.1",))
        self.assertEqual(self.recorder.built[0].received(), b"GET /long/path HTTP/1.1\r\n")

    def test_badMethodInPieces(self):
        """An impossible method is refused before the line ends (as Envoy)."""
        conn = self.connect()
        conn.dataReceived(b"G\x00T / HT")
        self.assertEqual(self.stat("http_not_found"), 1)

    def test_skipsTls(self):
        """After tls_inspector found TLS there is nothing to read in clear."""
        conn = self.connect([TlsInspectorConfig(), self.config])
        conn.dataReceived(clientHelloBytes(b"a.example.com"))
        self.assertEqual(conn.transportProtocol, "tls")
        self.assertEqual(self.stat("http_not_found"), 0)
        self.assertEqual(self.stat("http11_found"), 0)
        self.assertEqual(len(self.recorder.built), 1)

    def test_afterTlsInspectorPlaintext(self):
        conn = self.connect([TlsInspectorConfig(), self.config])
        conn.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
        self.assertEqual(conn.transportProtocol, "raw_buffer")
        self.assertEqual(conn.applicationProtocols, ("http/1.1",))
        self.assertEqual(self.h.counter("tls_inspector.tls_not_found"), 1)
