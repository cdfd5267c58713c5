"""
Tests for L{txenvoy.extensions.transport_sockets.tls}: real TLS handshakes
in memory (a pyOpenSSL client on a memory BIO against a ServerConnection on
a StringTransport), with the example certificates.
"""

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf import json_format
from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator, IPushProducer
from twisted.internet.protocol import Protocol
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from tests.extensions.filters.listener.fakes import (
    Echo,
    Harness,
    Recorder,
    RecorderFactory,
    TlsClient,
    certPath,
    clientContext,
    singleChain,
)
from txenvoy.config.context import FactoryContext
from txenvoy.config.errors import ConfigError, UnsupportedField
from txenvoy.extensions.transport_sockets.tls import (
    CommonTlsOptions,
    DownstreamTlsProtocol,
    DownstreamTlsSocket,
    createDownstreamTlsSocket,
    dnsNameMatch,
    loadCertificateOptions,
)
from txenvoy.stats.store import StatsStore

SSL_PREFIX = "listener.127.0.0.1_10000.ssl."


def serverCertificate(name="server"):
    return {"certificate_chain": {"filename": certPath(name + ".crt.pem")},
            "private_key": {"filename": certPath(name + ".key.pem")}}


def downstreamContext(**fields):
    """A C{DownstreamTlsContext} from plain data, with the server certificate by default."""
    data = {"common_tls_context": {"tls_certificates": [serverCertificate()]}}
    common = fields.pop("common", None)
    if common is not None:
        data["common_tls_context"].update(common)
    data.update(fields)
    return json_format.ParseDict(data, tls_pb2.DownstreamTlsContext())


def tlsSocket(**fields):
    context = FactoryContext(None, StatsStore()).child("l.transport_socket")
    return createDownstreamTlsSocket(downstreamContext(**fields), context)


MTLS = {"validation_context": {
    "trusted_ca": {"filename": certPath("ca.crt.pem")},
    "match_typed_subject_alt_names": [
        {"san_type": "DNS", "matcher": {"exact": "client.example.com"}}]}}


def rogueCertificate(tmpdir):
    """A self-signed certificate for client.example.com, unknown to the CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "client.example.com")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(7)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("client.example.com")]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    certFile, keyFile = tmpdir + "/rogue.crt", tmpdir + "/rogue.key"
    with open(certFile, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(keyFile, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return certFile, keyFile


class TlsTestCase(SynchronousTestCase):

    def setUp(self):
        self.h = Harness()

    def accept(self, socket, cls=Echo):
        self.factory = RecorderFactory(cls)
        conn, transport = self.h.connect(singleChain(self.factory, socket))
        return conn, transport

    def handshake(self, socket, context=None, serverName=b"localhost", cls=Echo):
        conn, transport = self.accept(socket, cls)
        client = TlsClient(context or clientContext(), serverName)
        client.pump(conn, transport, self.h.clock)
        return conn, transport, client

    def ssl(self, name):
        return self.h.counter(SSL_PREFIX + name)


class HandshakeTests(TlsTestCase):

    def test_interfaces(self):
        socket = tlsSocket()
        self.assertTrue(verifyObject(IOpenSSLServerConnectionCreator, socket))
        self.assertIsInstance(socket, DownstreamTlsSocket)

    def test_handshakeAndEcho(self):
        """
        The chain's head gets the cleartext, its writes go back encrypted;
        the listener counts Envoy's ssl stats.
        """
        conn, transport, client = self.handshake(tlsSocket())
        self.assertIsNone(client.error)
        self.assertTrue(client.handshakeDone)
        client.send(b"ping")
        client.pump(conn, transport, self.h.clock)
        self.assertEqual(self.factory.built[0].received(), b"ping")
        self.assertEqual(client.data(), b"ping")
        self.assertIsInstance(conn.head, DownstreamTlsProtocol)
        self.assertEqual(self.ssl("handshake"), 1)
        self.assertEqual(self.ssl("no_certificate"), 1)
        self.assertEqual(self.ssl("versions.TLSv1.3"), 1)
        self.assertEqual(self.ssl("ciphers." + conn.ssl.ciphersuiteString), 1)
        self.assertEqual(self.ssl("connection_error"), 0)
        self.assertEqual(conn.ssl.tlsVersion, "TLSv1.3")
        self.assertEqual(conn.ssl.sni, "localhost")
        self.assertFalse(conn.ssl.peerCertificatePresented)
        self.assertEqual(conn.ssl.dnsSansLocalCertificate,
                         ("localhost", "*.example.com"))
        self.assertIsNone(conn.negotiatedProtocol)

    def test_curveStat(self):
        """C{ssl.curves.<name>} uses Envoy's spelling of the group."""
        context = clientContext()
        context.set_tmp_ecdh(ec.SECP256R1())
        self.handshake(tlsSocket(), context)
        self.assertEqual(self.ssl("curves.P-256"), 1)

    def test_writesFlushOnWorkerClock(self):
        """
        TLS writes are aggregated and flushed by the worker's reactor (the
        connection's dispatcher), never the global reactor.
        """
        from twisted.internet import reactor

        before = list(reactor.getDelayedCalls())
        conn, transport, client = self.handshake(tlsSocket())
        self.factory.built[0].transport.write(b"x")
        self.assertEqual(transport.value(), b"")
        self.assertEqual(len(self.h.clock.getDelayedCalls()), 1)
        self.h.clock.advance(0)
        self.assertNotEqual(transport.value(), b"")
        self.assertEqual(list(reactor.getDelayedCalls()), before)

    def test_alpnServerPreference(self):
        """Envoy picks the first of its own ALPN list the client offers."""
        socket = tlsSocket(common={"alpn_protocols": ["h2", "http/1.1"]})
        conn, _, client = self.handshake(
            socket, clientContext(alpn=[b"http/1.1", b"h2"]))
        self.assertEqual(conn.negotiatedProtocol, "h2")
        self.assertEqual(conn.ssl.alpn, "h2")
        self.assertEqual(self.factory.built[0].transport.negotiatedProtocol, b"h2")
        self.assertEqual(client.tls.get_alpn_proto_negotiated(), b"h2")

    def test_alpnNoOverlap(self):
        """No protocol in common: the handshake goes on without ALPN."""
        socket = tlsSocket(common={"alpn_protocols": ["h2"]})
        conn, _, client = self.handshake(socket, clientContext(alpn=[b"foo"]))
        self.assertIsNone(client.error)
        self.assertIsNone(conn.negotiatedProtocol)
        self.assertEqual(self.ssl("handshake"), 1)

    def test_garbageIsConnectionError(self):
        """Plaintext on a TLS chain: C{ssl.connection_error}, then close."""
        conn, transport = self.accept(tlsSocket())
        conn.dataReceived(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        self.h.clock.advance(0)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.ssl("connection_error"), 1)
        self.assertEqual(self.ssl("handshake"), 0)

    def test_closeDuringHandshakeNotCounted(self):
        """A client that goes away mid-handshake is no ssl error (as Envoy)."""
        conn, transport = self.accept(tlsSocket())
        conn.dataReceived(b"\x16\x03\x01\x00\x05")
        conn.connectionLost(None)
        self.assertEqual(self.ssl("connection_error"), 0)
        self.assertIsNotNone(self.factory.built[0].lostReason)

    def test_finDuringHandshakeCloses(self):
        conn, transport = self.accept(tlsSocket())
        conn.dataReceived(b"\x16\x03\x01")
        conn.readConnectionLost()
        self.assertTrue(transport.disconnecting)
        self.assertFalse(self.factory.built[0].readClosed)

    def test_minimumVersion(self):
        """A TLS 1.2 client against C{tls_minimum_protocol_version: TLSv1_3}."""
        socket = tlsSocket(common={"tls_params": {"tls_minimum_protocol_version": "TLSv1_3"}})
        _, transport, client = self.handshake(
            socket, clientContext(maximum=SSL.TLS1_2_VERSION))
        self.assertIsNotNone(client.error)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.ssl("connection_error"), 1)

    def test_cipherSuites(self):
        """C{cipher_suites} applies to TLS 1.2."""
        socket = tlsSocket(common={"tls_params": {
            "tls_maximum_protocol_version": "TLSv1_2",
            "cipher_suites": ["ECDHE-RSA-AES256-GCM-SHA384"]}})
        conn, _, client = self.handshake(socket)
        self.assertIsNone(client.error)
        self.assertEqual(conn.ssl.tlsVersion, "TLSv1.2")
        self.assertEqual(conn.ssl.ciphersuiteString, "ECDHE-RSA-AES256-GCM-SHA384")
        self.assertEqual(self.ssl("ciphers.ECDHE-RSA-AES256-GCM-SHA384"), 1)
        self.assertEqual(self.ssl("versions.TLSv1.2"), 1)

    def test_sessionResumption(self):
        """A client resuming its session counts C{ssl.session_reused}."""
        socket = tlsSocket(common={"tls_params": {"tls_maximum_protocol_version": "TLSv1_2"}})
        context = clientContext()
        conn, transport, client = self.handshake(socket, context)
        session = client.tls.get_session()
        conn2, transport2 = self.accept(socket)
        second = TlsClient(context, b"localhost")
        second.tls.set_session(session)
        second.pump(conn2, transport2, self.h.clock)
        self.assertIsNone(second.error)
        self.assertTrue(conn2.ssl.sessionReused)
        self.assertEqual(self.ssl("session_reused"), 1)
        self.assertEqual(self.ssl("handshake"), 2)


class HalfCloseTests(TlsTestCase):

    def test_closeNotifyIsReadHalfClose(self):
        """
        The client's close_notify reaches the head as C{readConnectionLost};
        the head can still write, and its C{loseWriteConnection} sends
        close_notify and a FIN.
        """
        conn, transport, client = self.handshake(tlsSocket())
        client.send(b"abc")
        client.closeNotify()
        client.pump(conn, transport, self.h.clock)
        echo = self.factory.built[0]
        self.assertTrue(echo.readClosed)
        self.assertEqual(echo.received(), b"abc")
        self.assertIsNone(echo.lostReason)
        self.assertEqual(client.data(), b"abc")
        self.assertTrue(client.closedByPeer)
        # The client's side was already done, so the socket closes too.
        self.assertTrue(transport.disconnecting)

    def test_writeAfterCloseNotify(self):
        """After the client's close_notify, the server keeps sending."""
        conn, transport, client = self.handshake(tlsSocket(), cls=Recorder)
        client.closeNotify()
        client.pump(conn, transport, self.h.clock)
        head = self.factory.built[0]
        self.assertTrue(head.readClosed)
        head.transport.write(b"late reply")
        client.pump(conn, transport, self.h.clock)
        self.assertEqual(client.data(), b"late reply")
        self.assertFalse(transport.disconnecting)
        head.transport.loseWriteConnection()
        client.pump(conn, transport, self.h.clock)
        self.assertTrue(client.closedByPeer)
        self.assertTrue(transport.disconnecting)

    def test_finIsReadHalfClose(self):
        """A TCP FIN without close_notify is a read half-close too."""
        conn, transport, client = self.handshake(tlsSocket(), cls=Recorder)
        client.send(b"req")
        client.pump(conn, transport, self.h.clock)
        conn.readConnectionLost()
        head = self.factory.built[0]
        self.assertTrue(head.readClosed)
        self.assertEqual(head.received(), b"req")
        head.transport.write(b"resp")
        client.pump(conn, transport, self.h.clock)
        self.assertEqual(client.data(), b"resp")
        self.assertFalse(transport.disconnecting)
        head.transport.loseWriteConnection()
        self.assertTrue(transport.disconnecting)

    def test_serverHalfCloseFirst(self):
        """
        The head's C{loseWriteConnection}: close_notify, then a FIN; the
        client can still send, and its FIN then closes the socket.
        """
        conn, transport, client = self.handshake(tlsSocket(), cls=Recorder)
        head = self.factory.built[0]
        head.transport.write(b"bye")
        head.transport.loseWriteConnection()
        self.assertTrue(transport.writeClosed)
        self.assertFalse(transport.disconnecting)
        client.pump(conn, transport, self.h.clock)
        self.assertEqual(client.data(), b"bye")
        self.assertTrue(client.closedByPeer)
        conn.writeConnectionLost()
        self.assertTrue(head.writeClosed)
        client.send(b"more")
        client.pump(conn, transport, self.h.clock)
        self.assertEqual(head.received(), b"more")
        conn.readConnectionLost()
        self.assertTrue(head.readClosed)
        self.assertTrue(transport.disconnecting)

    def test_closeWithProducerRegistered(self):
        """
        tcp_proxy registers the upstream as producer and later calls
        C{loseConnection}: close_notify goes out and the socket closes at
        once, as a TCP transport would (Twisted's TLS would wait for
        C{unregisterProducer}).
        """
        conn, transport, client = self.handshake(tlsSocket(), cls=Recorder)
        head = self.factory.built[0]

        @implementer(IPushProducer)
        class Upstream:
            def pauseProducing(self):
                pass

            def resumeProducing(self):
                pass

            def stopProducing(self):
                pass

        head.transport.registerProducer(Upstream(), True)
        head.transport.write(b"last words")
        head.transport.loseConnection()
        self.assertTrue(transport.disconnecting)
        client.pump(conn, transport, self.h.clock)
        self.assertEqual(client.data(), b"last words")
        self.assertTrue(client.closedByPeer)
        head.transport.write(b"after close")
        client.pump(conn, transport, self.h.clock)
        self.assertEqual(client.data(), b"last words")

    def test_closeBeforeHandshake(self):
        conn, transport = self.accept(tlsSocket(), Recorder)
        self.factory.built[0].transport.loseConnection()
        self.assertTrue(transport.disconnected)

    def test_writesAfterWriteCloseDropped(self):
        conn, transport, client = self.handshake(tlsSocket(), cls=Recorder)
        head = self.factory.built[0]
        head.transport.loseWriteConnection()
        head.transport.write(b"too late")
        client.pump(conn, transport, self.h.clock)
        self.assertEqual(client.data(), b"")
        self.assertIsNone(client.error)

    def test_notHalfCloseable(self):
        """A head without half-close: close_notify closes the connection."""

        class Plain(Protocol):
            lost = None

            def connectionLost(self, reason):
                self.lost = reason

        conn, transport, client = self.handshake(tlsSocket(), cls=Plain)
        client.closeNotify()
        client.pump(conn, transport, self.h.clock)
        self.assertTrue(transport.disconnecting)
        self.assertTrue(client.closedByPeer)


class ClientCertificateTests(TlsTestCase):

    def test_requiredMissing(self):
        """C{require_client_certificate} and no certificate: C{fail_verify_no_cert}."""
        socket = tlsSocket(require_client_certificate=True, common=MTLS)
        _, transport, client = self.handshake(socket)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.ssl("fail_verify_no_cert"), 1)
        self.assertEqual(self.ssl("handshake"), 0)
        self.assertEqual(self.ssl("connection_error"), 0)

    def test_requiredPresented(self):
        socket = tlsSocket(require_client_certificate=True, common=MTLS)
        conn, transport, client = self.handshake(
            socket, clientContext(cert="client.crt.pem", key="client.key.pem"))
        self.assertIsNone(client.error)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.ssl("handshake"), 1)
        self.assertEqual(self.ssl("no_certificate"), 0)
        info = conn.ssl
        self.assertTrue(info.peerCertificatePresented)
        self.assertTrue(info.peerCertificateValidated)
        self.assertEqual(info.subjectPeerCertificate, "CN=client.example.com")
        self.assertEqual(info.dnsSansPeerCertificate, ("client.example.com",))
        self.assertEqual(len(info.sha256PeerCertificateDigest), 64)
        self.assertIn("BEGIN%20CERTIFICATE", info.urlEncodedPemEncodedPeerCertificate)
        client.send(b"hi")
        client.pump(conn, transport, self.h.clock)
        self.assertEqual(client.data(), b"hi")

    def test_sanMismatch(self):
        """A certificate from the right CA for another name: C{fail_verify_san}."""
        socket = tlsSocket(require_client_certificate=True, common=MTLS)
        _, transport, client = self.handshake(
            socket, clientContext(cert="domain1.crt.pem", key="domain1.key.pem"))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.ssl("fail_verify_san"), 1)
        self.assertEqual(self.ssl("handshake"), 0)

    def test_untrusted(self):
        """A certificate from another CA: C{fail_verify_error}."""
        certFile, keyFile = rogueCertificate(self.mktemp_dir())
        socket = tlsSocket(require_client_certificate=True, common=MTLS)
        _, transport, client = self.handshake(
            socket, clientContext(cert=certFile, key=keyFile))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.ssl("fail_verify_error"), 1)
        self.assertEqual(self.ssl("fail_verify_san"), 0)

    def test_sanPinnedRequiresCertificate(self):
        """
        Without C{require_client_certificate} but with a SAN matcher, a
        client without a certificate still fails (Envoy 1.40, observed).
        """
        socket = tlsSocket(common=MTLS)
        _, transport, client = self.handshake(socket)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.ssl("fail_verify_no_cert"), 1)

    def test_trustedCaOnlyIsOptional(self):
        """With only C{trusted_ca}, a certificate is asked for but optional."""
        socket = tlsSocket(common={"validation_context": {
            "trusted_ca": {"filename": certPath("ca.crt.pem")}}})
        conn, transport, client = self.handshake(socket)
        self.assertIsNone(client.error)
        self.assertEqual(self.ssl("no_certificate"), 1)
        conn2, transport2 = self.accept(socket)
        second = TlsClient(clientContext(cert="client.crt.pem", key="client.key.pem"),
                           b"localhost")
        second.pump(conn2, transport2, self.h.clock)
        self.assertTrue(conn2.ssl.peerCertificateValidated)

    def test_certificateHashPinned(self):
        """C{verify_certificate_hash} without a CA: only that certificate passes."""
        with open(certPath("client.crt.pem"), "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        digest = cert.fingerprint(hashes.SHA256()).hex()
        pinned = ":".join(digest[i:i + 2] for i in range(0, 64, 2)).upper()
        socket = tlsSocket(common={"validation_context": {"verify_certificate_hash": [pinned]}})
        conn, transport, client = self.handshake(
            socket, clientContext(cert="client.crt.pem", key="client.key.pem"))
        self.assertIsNone(client.error)
        self.assertTrue(conn.ssl.peerCertificatePresented)
        self.assertFalse(conn.ssl.peerCertificateValidated)
        _, transport2, client2 = self.handshake(
            socket, clientContext(cert="domain1.crt.pem", key="domain1.key.pem"))
        self.assertTrue(transport2.disconnecting)
        self.assertEqual(self.ssl("fail_verify_cert_hash"), 1)

    def test_acceptUntrusted(self):
        """C{ACCEPT_UNTRUSTED}: the failure is counted, the handshake goes on."""
        certFile, keyFile = rogueCertificate(self.mktemp_dir())
        socket = tlsSocket(common={"validation_context": {
            "trusted_ca": {"filename": certPath("ca.crt.pem")},
            "trust_chain_verification": "ACCEPT_UNTRUSTED"}})
        conn, transport, client = self.handshake(socket, clientContext(cert=certFile, key=keyFile))
        self.assertIsNone(client.error)
        self.assertEqual(self.ssl("fail_verify_error"), 1)
        self.assertEqual(self.ssl("handshake"), 1)
        self.assertFalse(conn.ssl.peerCertificateValidated)

    def mktemp_dir(self):
        import os

        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        return path


class SniTests(TlsTestCase):

    def twoCertificates(self, **fields):
        return tlsSocket(common={"tls_certificates": [
            serverCertificate("domain1"), serverCertificate("domain2")]}, **fields)

    def served(self, socket, serverName):
        context = clientContext()
        conn, transport, client = self.handshake(socket, context, serverName)
        cert = client.tls.get_peer_certificate(as_cryptography=True)
        return client, cert

    def test_certificateBySni(self):
        socket = self.twoCertificates()
        client, cert = self.served(socket, b"domain2.example.com")
        self.assertIsNone(client.error)
        self.assertEqual(cert.subject.rfc4514_string(), "CN=domain2.example.com")
        client, cert = self.served(socket, b"domain1.example.com")
        self.assertEqual(cert.subject.rfc4514_string(), "CN=domain1.example.com")

    def test_firstCertificateByDefault(self):
        socket = self.twoCertificates()
        client, cert = self.served(socket, b"other.example.org")
        self.assertEqual(cert.subject.rfc4514_string(), "CN=domain1.example.com")
        client, cert = self.served(socket, None)
        self.assertEqual(cert.subject.rfc4514_string(), "CN=domain1.example.com")

    def test_requireSni(self):
        socket = tlsSocket(require_sni=True)
        _, transport, client = self.handshake(socket, serverName=None)
        self.assertIsNotNone(client.error)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.ssl("handshake"), 0)
        _, transport, client = self.handshake(socket, serverName=b"localhost")
        self.assertIsNone(client.error)

    def test_dnsNameMatch(self):
        self.assertTrue(dnsNameMatch("a.example.com", "*.example.com"))
        self.assertTrue(dnsNameMatch("A.example.com", "a.EXAMPLE.com"))
        self.assertFalse(dnsNameMatch("a.b.example.com", "*.example.com"))
        self.assertFalse(dnsNameMatch("example.com", "*.example.com"))


class ConfigTests(SynchronousTestCase):

    def assertConfigError(self, text, **fields):
        e = self.assertRaises(ConfigError, tlsSocket, **fields)
        self.assertIn(text, str(e))
        return e

    def test_noCertificates(self):
        self.assertConfigError("No TLS certificates found for server context",
                               common={"tls_certificates": []})

    def test_missingFile(self):
        self.assertConfigError(
            "Failed to load incomplete certificate from /nonexistent/x.pem",
            common={"tls_certificates": [{
                "certificate_chain": {"filename": "/nonexistent/x.pem"},
                "private_key": {"filename": certPath("server.key.pem")}}]})

    def test_notACertificate(self):
        self.assertConfigError(
            "Failed to load certificate chain from <inline>",
            common={"tls_certificates": [{
                "certificate_chain": {"inline_string": "garbage"},
                "private_key": {"filename": certPath("server.key.pem")}}]})

    def test_keyMismatch(self):
        self.assertConfigError("does not match", common={"tls_certificates": [{
            "certificate_chain": {"filename": certPath("server.crt.pem")},
            "private_key": {"filename": certPath("client.key.pem")}}]})

    def test_notAKey(self):
        self.assertConfigError("Failed to load private key from", common={"tls_certificates": [{
            "certificate_chain": {"filename": certPath("server.crt.pem")},
            "private_key": {"filename": certPath("server.crt.pem")}}]})

    def test_sanWithoutCa(self):
        self.assertConfigError(
            "SAN-based verification of peer certificates without trusted CA is insecure and "
            "not allowed",
            common={"validation_context": {"match_typed_subject_alt_names": [
                {"san_type": "DNS", "matcher": {"exact": "a"}}]}})

    def test_unknownCipher(self):
        self.assertConfigError(
            "Failed to initialize cipher suites ECDHE-RSA-AES128-GCM-SHA256:FOO. The following "
            "ciphers were rejected when tried individually: FOO",
            common={"tls_params": {"cipher_suites": ["ECDHE-RSA-AES128-GCM-SHA256", "FOO"]}})

    def test_envoyDefaultCipherList(self):
        """Envoy's own default list, bracket groups and all, is accepted."""
        socket = tlsSocket(common={"tls_params": {"cipher_suites": [
            "[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]",
            "[ECDHE-RSA-AES128-GCM-SHA256|ECDHE-RSA-CHACHA20-POLY1305]",
            "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384"]}})
        self.assertIn(b"ECDHE-RSA-CHACHA20-POLY1305", socket.options.cipherList)

    def test_unsupportedFields(self):
        context = FactoryContext(None, StatsStore()).child("l.ts")
        message = downstreamContext()
        message.session_ticket_keys.keys.add().inline_bytes = b"k" * 80
        self.assertRaises(UnsupportedField, createDownstreamTlsSocket, message, context)
        message = downstreamContext(ocsp_staple_policy="STRICT_STAPLING")
        self.assertRaises(UnsupportedField, createDownstreamTlsSocket, message, context)
        message = downstreamContext(common={"tls_params": {"signature_algorithms": ["x"]}})
        self.assertRaises(UnsupportedField, createDownstreamTlsSocket, message, context)

    def test_harmlessFields(self):
        socket = tlsSocket(session_timeout="300s", disable_stateless_session_resumption=True,
                           ocsp_staple_policy="LENIENT_STAPLING",
                           full_scan_certs_on_sni_mismatch=False)
        self.assertIsInstance(socket, DownstreamTlsSocket)

    def test_loadCertificateOptions(self):
        """The shared helper an upstream TLS socket can build contexts from."""
        message = downstreamContext(common={
            "alpn_protocols": ["h2"],
            "tls_params": {"tls_minimum_protocol_version": "TLSv1_3"},
            "validation_context": {"trusted_ca": {"filename": certPath("ca.crt.pem")}}})
        options = loadCertificateOptions(message.common_tls_context, "c")
        self.assertIsInstance(options, CommonTlsOptions)
        self.assertEqual(options.alpnProtocols, (b"h2",))
        self.assertEqual(options.minimumVersion, SSL.TLS1_3_VERSION)
        self.assertEqual(options.maximumVersion, SSL.TLS1_3_VERSION)
        self.assertEqual(len(options.validation.trustedCa), 1)
        self.assertEqual(options.certificates[0].dnsNames, ("localhost", "*.example.com"))
        self.assertIsInstance(options.newContext(SSL.TLS_CLIENT_METHOD), SSL.Context)

    def test_inlineCertificates(self):
        """Example 02 keeps its certificate and key inline."""
        with open(certPath("server.crt.pem")) as c, open(certPath("server.key.pem")) as k:
            socket = tlsSocket(common={"tls_certificates": [{
                "certificate_chain": {"inline_string": c.read()},
                "private_key": {"inline_string": k.read()}}]})
        self.assertEqual(len(socket.options.certificates), 1)
