"""
Tests for L{txenvoy.extensions.filters.listener.proxy_protocol}. Outcomes
and stat names follow Envoy 1.40, checked with the same bytes against the
real binary.
"""

import socket
import struct

from envoy.extensions.filters.listener.proxy_protocol.v3 import proxy_protocol_pb2
from google.protobuf import json_format
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.extensions.filters.listener.fakes import (
    Harness,
    RecorderFactory,
    clientHelloBytes,
    singleChain,
)
from txenvoy.config.context import FactoryContext
from txenvoy.config.errors import ConfigError, UnsupportedField
from txenvoy.extensions.filters.listener.proxy_protocol import (
    FILTER_STATE_KEY,
    V2_SIGNATURE,
    Decision,
    ProxyProtocolConfig,
    ProxyProtocolData,
    ProxyProtocolParser,
    createProxyProtocol,
    parseV1,
)
from txenvoy.extensions.filters.listener.tls_inspector import TlsInspectorConfig
from txenvoy.interfaces import IListenerFilter, IListenerFilterFactory
from txenvoy.stats.store import StatsStore


def tlv(tlvType, value):
    return bytes([tlvType]) + struct.pack("!H", len(value)) + value


def v4(src, dst, sport, dport):
    return socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)


def v6(src, dst, sport, dport):
    return (socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
            + struct.pack("!HH", sport, dport))


def v2Header(command=1, family=1, transport=1, block=b"", version=2, blockLength=None):
    length = len(block) if blockLength is None else blockLength
    return (V2_SIGNATURE + bytes([(version << 4) | command, (family << 4) | transport])
            + struct.pack("!H", length) + block)


V1_TCP4 = b"PROXY TCP4 203.0.113.7 198.51.100.1 40000 443\r\n"


class FilterTestCase(SynchronousTestCase):

    def setUp(self):
        self.h = Harness()

    def connect(self, config=None, extra=()):
        self.config = config or ProxyProtocolConfig()
        self.recorder = RecorderFactory()
        listener = singleChain(self.recorder)
        listener.listenerFilters = [self.config] + list(extra)
        self.conn, self.transport = self.h.connect(listener)
        return self.conn

    def stat(self, name):
        return self.h.counter(name)

    def assertRejected(self, data, stat):
        conn = self.connect()
        conn.dataReceived(data)
        self.assertTrue(self.transport.disconnected, data)
        self.assertEqual(self.recorder.built, [])
        self.assertEqual(self.stat(stat), 1, data)
        self.assertEqual(self.stat("downstream_cx_proxy_proto_error"), 1, data)


class V1Tests(FilterTestCase):

    def test_interfaces(self):
        conn = self.connect()
        self.assertTrue(verifyObject(IListenerFilterFactory, self.config))
        self.assertTrue(verifyObject(IListenerFilter, self.config.buildListenerFilter(conn)))

    def test_tcp4(self):
        """The header is consumed; the addresses it carries become the connection's."""
        conn = self.connect()
        conn.dataReceived(V1_TCP4 + b"hello")
        self.assertEqual(self.recorder.built[0].received(), b"hello")
        self.assertEqual(conn.remoteAddress, ("203.0.113.7", 40000))
        self.assertEqual(conn.localAddress, ("198.51.100.1", 443))
        info = conn.streamInfo
        self.assertEqual(info.downstreamRemoteAddress, ("203.0.113.7", 40000))
        self.assertEqual(info.downstreamLocalAddress, ("198.51.100.1", 443))
        self.assertEqual(info.downstreamDirectRemoteAddress, ("10.0.0.1", 5555))
        self.assertEqual(info.filterState[FILTER_STATE_KEY],
                         ProxyProtocolData(("203.0.113.7", 40000), ("198.51.100.1", 443), ()))
        self.assertEqual(self.stat("proxy_proto.versions.v1.found"), 1)
        self.assertEqual(self.stat("downstream_cx_proxy_proto_error"), 0)

    def test_splitAcrossReads(self):
        conn = self.connect()
        for i in range(len(V1_TCP4)):
            self.assertEqual(self.recorder.built, [])
            conn.dataReceived(V1_TCP4[i:i + 1])
        conn.dataReceived(b"body")
        self.assertEqual(conn.remoteAddress, ("203.0.113.7", 40000))
        self.assertEqual(self.recorder.built[0].received(), b"body")

    def test_tcp6(self):
        conn = self.connect()
        conn.dataReceived(b"PROXY TCP6 2001:db8::1 2001:db8::2 1234 80\r\nx")
        self.assertEqual(conn.remoteAddress, ("2001:db8::1", 1234))
        self.assertEqual(conn.localAddress, ("2001:db8::2", 80))
        self.assertEqual(self.recorder.built[0].received(), b"x")

    def test_unknown(self):
        """C{UNKNOWN}: consumed, the real addresses stand."""
        conn = self.connect()
        conn.dataReceived(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\nhi")
        self.assertEqual(conn.remoteAddress, ("10.0.0.1", 5555))
        self.assertEqual(conn.localAddress, ("127.0.0.1", 10000))
        self.assertEqual(self.recorder.built[0].received(), b"hi")
        self.assertEqual(self.stat("proxy_proto.versions.v1.found"), 1)
        self.assertEqual(conn.streamInfo.filterState[FILTER_STATE_KEY].sourceAddress,
                         ("10.0.0.1", 5555))

    def test_lenientBits(self):
        """Envoy takes C{+5} and C{0111} as ports, and a trailing space."""
        header = parseV1(b"PROXY TCP4 1.2.3.4 5.6.7.8 0111 +5 \r\n")
        self.assertEqual((header.remoteAddress, header.localAddress),
                         (("1.2.3.4", 111), ("5.6.7.8", 5)))

    def test_errors(self):
        """Each of these was a C{versions.v1.error} and a reset on Envoy 1.40."""
        for line in (b"hello\r\n",
                     b"PROXY TCP4 1.2.3.4 5.6.7.8 111 99999\r\n",
                     b"PROXY TCP4 1.2.3.4 224.0.0.1 111 222\r\n",
                     b"PROXY TCP4 0.0.0.0 5.6.7.8 111 222\r\n",
                     b"PROXY TCP4 255.255.255.255 5.6.7.8 111 222\r\n",
                     b"PROXY TCP4 ::1 ::2 1 2\r\n",
                     b"PROXY  TCP4 1.2.3.4  5.6.7.8 111 222\r\n",
                     b"PROXY TCP4 01.2.3.4 5.6.7.8 111 222\r\n",
                     b"PROXY TCP4 1.2.3.4 5.6.7.8 111 -1\r\n",
                     b"PROXY garbage\r\n",
                     b"PROXY " + b"A" * 120 + b"\r\n"):
            self.setUp()
            self.assertRejected(line, "proxy_proto.versions.v1.error")

    def test_garbage(self):
        """16 bytes that are neither signature: not found, reset."""
        self.assertRejected(b"hello world, garbage!", "proxy_proto.not_found_disallowed")
        self.assertEqual(self.stat("proxy_proto.versions.v1.error"), 0)

    def test_noCrlfTooLong(self):
        self.assertRejected(b"PROXY" + b" " * 200, "proxy_proto.not_found_disallowed")

    def test_shortWaits(self):
        """Under 16 bytes and no CRLF: nothing to decide yet."""
        conn = self.connect()
        conn.dataReceived(b"hi there")
        self.assertFalse(self.transport.disconnected)
        self.assertEqual(self.recorder.built, [])

    def test_lfOnlyWaits(self):
        conn = self.connect()
        conn.dataReceived(b"PROXY TCP4 1.2.3.4 5.6.7.8 111 222\n")
        self.assertFalse(self.transport.disconnected)
        self.assertEqual(self.recorder.built, [])

    def test_timeoutWhileWaiting(self):
        """A client that sends no header: listener_filters_timeout ends it."""
        self.connect()
        self.h.clock.advance(15)
        self.assertTrue(self.transport.disconnecting or self.transport.disconnected)
        self.assertEqual(self.stat("listener.127.0.0.1_10000.downstream_pre_cx_timeout"), 1)

    def test_thenTlsInspector(self):
        """The next listener filter sees what follows the header."""
        conn = self.connect(extra=[TlsInspectorConfig()])
        hello = clientHelloBytes(b"a.example.com")
        conn.dataReceived(V1_TCP4 + hello)
        self.assertEqual(conn.streamInfo.requestedServerName, "a.example.com")
        self.assertEqual(conn.remoteAddress, ("203.0.113.7", 40000))
        self.assertEqual(self.recorder.built[0].received(), hello)


class V2Tests(FilterTestCase):

    def test_tcp4(self):
        conn = self.connect()
        conn.dataReceived(v2Header(block=v4("203.0.113.7", "198.51.100.1", 111, 222)) + b"hello")
        self.assertEqual(conn.remoteAddress, ("203.0.113.7", 111))
        self.assertEqual(conn.localAddress, ("198.51.100.1", 222))
        self.assertEqual(self.recorder.built[0].received(), b"hello")
        self.assertEqual(self.stat("proxy_proto.versions.v2.found"), 1)

    def test_tcp6(self):
        conn = self.connect()
        conn.dataReceived(v2Header(family=2, block=v6("2001:db8::7", "2001:db8::1", 9, 10)))
        self.assertEqual(conn.remoteAddress, ("2001:db8::7", 9))
        self.assertEqual(conn.localAddress, ("2001:db8::1", 10))

    def test_udp(self):
        conn = self.connect()
        conn.dataReceived(v2Header(transport=2, block=v4("1.2.3.4", "5.6.7.8", 1, 2)))
        self.assertEqual(conn.remoteAddress, ("1.2.3.4", 1))

    def test_local(self):
        """C{LOCAL} (a health check): consumed, TLVs and all; addresses stand."""
        conn = self.connect()
        conn.dataReceived(v2Header(command=0, family=0, block=tlv(5, b"x")) + b"ping")
        self.assertEqual(conn.remoteAddress, ("10.0.0.1", 5555))
        self.assertEqual(self.recorder.built[0].received(), b"ping")
        self.assertEqual(self.stat("proxy_proto.versions.v2.found"), 1)

    def test_splitAcrossReads(self):
        data = v2Header(block=v4("1.2.3.4", "5.6.7.8", 1, 2) + tlv(2, b"example.com")) + b"rest"
        conn = self.connect()
        for piece in (data[:5], data[5:16], data[16:20], data[20:30], data[30:]):
            self.assertEqual(self.recorder.built, [])
            conn.dataReceived(piece)
        self.assertEqual(conn.remoteAddress, ("1.2.3.4", 1))
        self.assertEqual(self.recorder.built[0].received(), b"rest")

    def test_largeTlvBlock(self):
        """TLVs beyond the first peek size are waited for."""
        data = v2Header(block=v4("1.2.3.4", "5.6.7.8", 1, 2) + tlv(0xE0, b"z" * 1000))
        conn = self.connect()
        conn.dataReceived(data[:300])
        self.assertEqual(self.recorder.built, [])
        conn.dataReceived(data[300:] + b"!")
        self.assertEqual(self.recorder.built[0].received(), b"!")

    def test_errors(self):
        """Each of these was a C{versions.v2.error} on Envoy 1.40."""
        for data in (v2Header(family=0, block=b""),
                     v2Header(version=3, block=v4("1.2.3.4", "5.6.7.8", 1, 2)),
                     v2Header(block=v4("1.2.3.4", "5.6.7.8", 1, 2) + b"\x05\x00\x05X"),
                     v2Header(family=3, block=b"\x00" * 216),
                     v2Header(command=2, block=v4("1.2.3.4", "5.6.7.8", 1, 2)),
                     v2Header(transport=0, block=v4("1.2.3.4", "5.6.7.8", 1, 2)),
                     v2Header(block=v4("1.2.3.4", "5.6.7.8", 1, 2), blockLength=4),
                     v2Header(block=v4("0.0.0.0", "5.6.7.8", 1, 2))):
            self.setUp()
            self.assertRejected(data + b"0123456789", "proxy_proto.versions.v2.error")

    def test_tlvsToMetadataAndFilterState(self):
        config = ProxyProtocolConfig(rules={2: ("ns", "authority"), 0xEA: ("ns2", "vpc")},
                                     passThroughTypes=[2])
        conn = self.connect(config)
        block = v4("1.2.3.4", "5.6.7.8", 1, 2) + tlv(2, b"example.com") + tlv(0xEA, b"vpce-1")
        conn.dataReceived(v2Header(block=block))
        info = conn.streamInfo
        self.assertEqual(info.dynamicMetadata,
                         {"ns": {"authority": "example.com"}, "ns2": {"vpc": "vpce-1"}})
        self.assertEqual(info.filterState[FILTER_STATE_KEY].tlvs, ((2, b"example.com"),))


class OptionTests(FilterTestCase):

    def test_allowWithoutHeader(self):
        conn = self.connect(ProxyProtocolConfig(allowRequestsWithoutProxyProtocol=True))
        conn.dataReceived(b"hello world, garbage!")
        self.assertEqual(self.recorder.built[0].received(), b"hello world, garbage!")
        self.assertEqual(self.stat("proxy_proto.not_found_allowed"), 1)
        self.assertEqual(conn.remoteAddress, ("10.0.0.1", 5555))

    def test_allowWithoutHeaderShort(self):
        """Two bytes that cannot start a header are enough to decide."""
        conn = self.connect(ProxyProtocolConfig(allowRequestsWithoutProxyProtocol=True))
        conn.dataReceived(b"hi")
        self.assertEqual(self.recorder.built[0].received(), b"hi")

    def test_allowWithoutHeaderStillParses(self):
        conn = self.connect(ProxyProtocolConfig(allowRequestsWithoutProxyProtocol=True))
        conn.dataReceived(b"PRO")
        self.assertEqual(self.recorder.built, [])
        conn.dataReceived(V1_TCP4[3:] + b"x")
        self.assertEqual(conn.remoteAddress, ("203.0.113.7", 40000))
        self.assertEqual(self.recorder.built[0].received(), b"x")

    def test_allowWithoutHeaderBadHeader(self):
        conn = self.connect(ProxyProtocolConfig(allowRequestsWithoutProxyProtocol=True))
        conn.dataReceived(b"PROXY garbage\r\n")
        self.assertTrue(self.transport.disconnected)
        self.assertEqual(self.stat("proxy_proto.versions.v1.error"), 1)

    def test_disallowedVersion(self):
        """A disallowed version is found, disallowed, reset; no legacy error."""
        conn = self.connect(ProxyProtocolConfig(allowV1=False))
        conn.dataReceived(V1_TCP4)
        self.assertTrue(self.transport.disconnected)
        self.assertEqual(self.stat("proxy_proto.versions.v1.found"), 1)
        self.assertEqual(self.stat("proxy_proto.versions.v1.disallowed"), 1)
        self.assertEqual(self.stat("downstream_cx_proxy_proto_error"), 0)

    def test_statPrefix(self):
        conn = self.connect(ProxyProtocolConfig(statPrefix="pfx"))
        conn.dataReceived(V1_TCP4)
        self.assertEqual(self.stat("proxy_proto.pfx.versions.v1.found"), 1)
        self.setUp()
        self.connect(ProxyProtocolConfig(statPrefix="pfx")).dataReceived(b"x" * 16)
        self.assertEqual(self.stat("proxy_proto.pfx.not_found_disallowed"), 1)
        self.assertEqual(self.stat("downstream_cx_proxy_proto_error"), 1)


class ParserTests(SynchronousTestCase):

    def test_waitsForV2Signature(self):
        """A leading CRLF could still be the v2 signature."""
        p = ProxyProtocolParser()
        self.assertEqual(p.parse(b"\r\n"), Decision.MORE)
        self.assertEqual(p.parse(b"\r\n\r\n\x00"), Decision.MORE)


class ConfigTests(SynchronousTestCase):

    def create(self, data):
        message = json_format.ParseDict(data, proxy_protocol_pb2.ProxyProtocol())
        return createProxyProtocol(message, FactoryContext(None, StatsStore()).child("lf"))

    def test_fields(self):
        config = self.create({
            "allow_requests_without_proxy_protocol": True, "stat_prefix": "p",
            "rules": [{"tlv_type": 2, "on_tlv_present": {"key": "authority"}}],
            "pass_through_tlvs": {"match_type": "INCLUDE", "tlv_type": [1, 2]},
            "disallowed_versions": ["V1"]})
        self.assertTrue(config.allowRequestsWithoutProxyProtocol)
        self.assertEqual(config.statPrefix, "p")
        self.assertEqual(config.rules, {2: ("envoy.filters.listener.proxy_protocol", "authority")})
        self.assertTrue(config.passThrough(2))
        self.assertFalse(config.passThrough(3))
        self.assertFalse(config.allowV1)
        self.assertTrue(config.allowV2)

    def test_passAll(self):
        self.assertTrue(self.create({"pass_through_tlvs": {}}).passThrough(0x77))
        self.assertFalse(self.create({}).passThrough(0x77))

    def test_allVersionsDisallowed(self):
        e = self.assertRaises(ConfigError, self.create, {"disallowed_versions": ["V1", "V2"]})
        self.assertIn("all proxy protocol versions are disallowed", str(e))

    def test_filterStateLocation(self):
        self.assertRaises(UnsupportedField, self.create, {"tlv_location": "FILTER_STATE"})
