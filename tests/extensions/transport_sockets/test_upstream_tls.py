"""
Tests for L{txenvoy.extensions.transport_sockets.upstream_tls}: real TLS
handshakes in memory (iosim) between a cluster's L{UpstreamConnection} and
a pyOpenSSL server, with the example certificates. The expected failure
reasons and stats are those Envoy 1.40 gave against the same servers.
"""

import os

from cryptography import x509
from OpenSSL import SSL
from twisted.internet import error
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from envoy.extensions.transport_sockets.tls.v3 import tls_pb2  # noqa: F401

from tests.upstream.test_fakes import FakeDispatcher, Recorder, clusterProto, endpoint, stat
from txenvoy.config import registry
from txenvoy.config.errors import ConfigError, UnsupportedField
from txenvoy.config.loader import loadBootstrap
from txenvoy.extensions.transport_sockets import upstream_tls
from txenvoy.extensions.transport_sockets.upstream_tls import (
    CONNECTION_RESET_REASON,
    UpstreamTlsError,
    UpstreamTlsProtocol,
    UpstreamTlsSocket,
)
from txenvoy.stats.store import StatsStore
from txenvoy.upstream.cluster import compileCluster
from txenvoy.upstream.cluster_manager import ClusterManager
from txenvoy.upstream.connection import CONNECT_TIMEOUT, REMOTE_CONNECTION_FAILURE
from txenvoy.upstream.http_protocol_options import TransportSocketOptions

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))))
EXAMPLES = os.path.join(REPO, "..", "shared", "envoy-examples")
CERTS = os.path.join(EXAMPLES, "certs")
TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"


def cert(name):
    """The path of one of the example certificates or keys."""
    return os.path.join(CERTS, name)


def tlsSocket(**upstreamTlsContext):
    """C{transport_socket} for a cluster, from UpstreamTlsContext fields."""
    return {"name": "envoy.transport_sockets.tls",
            "typed_config": dict({"@type": TLS_TYPE}, **upstreamTlsContext)}


def trustedCa(name="ca.crt.pem", **extra):
    """A C{validation_context} trusting one certificate file."""
    return dict({"trusted_ca": {"filename": cert(name)}}, **extra)


def clientCertificate():
    return [{"certificate_chain": {"filename": cert("client.crt.pem")},
             "private_key": {"filename": cert("client.key.pem")}}]


@implementer(IOpenSSLServerConnectionCreator)
class TlsServer:
    """
    A TLS server with C{certs/server.*} (SAN localhost, *.example.com,
    127.0.0.1), up to TLS 1.3, recording the SNI each client sent.
    """

    def __init__(self, requireClientCertificate=False, alpn=None, certificate="server"):
        context = SSL.Context(SSL.TLS_SERVER_METHOD)
        context.use_certificate_chain_file(cert(certificate + ".crt.pem"))
        context.use_privatekey_file(cert(certificate + ".key.pem"))
        context.set_session_id(b"txenvoy-tests")
        context.set_tlsext_servername_callback(self._onServerName)
        if requireClientCertificate:
            context.load_verify_locations(cert("ca.crt.pem"))
            context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT,
                               lambda conn, x509, errno, depth, ok: bool(ok))
        if alpn:
            context.set_alpn_select_callback(
                lambda conn, offered: next((p for p in alpn if p in offered),
                                           SSL.NO_OVERLAPPING_PROTOCOLS))
        self.context = context
        self.serverNames = []

    def _onServerName(self, connection):
        self.serverNames.append(connection.get_servername())

    def serverConnectionForTLS(self, tlsProtocol):
        return SSL.Connection(self.context, None)


class ServerProtocol(Protocol):
    """Records what it receives and what the handshake gave."""

    def __init__(self):
        self.received = []
        self.lost = None

    def dataReceived(self, data):
        self.received.append(data)

    def connectionLost(self, reason):
        self.lost = reason


class Plain(Protocol):
    """A server that answers anything with plain HTTP."""

    def dataReceived(self, data):
        self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")


class UpstreamTlsTestCase(SynchronousTestCase):
    """A cluster with an UpstreamTlsContext, connected in memory."""

    def setUp(self):
        # The certificates come with the repository; without them these
        # tests must fail, not pass vacuously.
        if not os.path.isdir(CERTS):
            self.fail("example certificates not found at %s" % (CERTS,))
        self.reactor = MemoryReactorClock()

    def cluster(self, **tls):
        store = StatsStore()
        cm = ClusterManager(self.reactor, store, store.shard("main_thread"), [
            clusterProto("c1", [endpoint("127.0.0.1", 10083, hostname="upstream.example.com")],
                         connect_timeout="2s", transport_socket=tlsSocket(**tls))])
        self.addCleanup(cm.stop)
        self.store = store
        self.tlc = cm.createThreadLocal(FakeDispatcher(self.reactor, "worker_0", store)) \
            .getThreadLocalCluster("c1")
        return self.tlc

    def s(self, name):
        return stat(self.store, "cluster.c1." + name)

    def connect(self, server=None, serverProtocol=None, greet=True):
        """
        Open an upstream connection and wire it to C{server} (a
        L{TlsServer}, or C{None} for the plain C{serverProtocol}).

        @return: C{(recorder, upstreamConnection, serverProtocol, pump)}.
        """
        recorder = Recorder()
        conn = self.tlc.connect(self.tlc.chooseHost(), recorder)
        factory = self.reactor.tcpClients[-1][2]
        self.clientProtocol = factory.buildProtocol(None)
        serverProtocol = serverProtocol or ServerProtocol()
        if server is not None:
            serverFactory = TLSMemoryBIOFactory(server, False, Factory.forProtocol(lambda: None),
                                                clock=self.reactor)
            serverSide = serverFactory.protocol(serverFactory, serverProtocol)
        else:
            serverSide = serverProtocol
        self.clientTransport = iosim.makeFakeClient(self.clientProtocol)
        self.serverTransport = iosim.makeFakeServer(serverSide)
        pump = iosim.connect(serverSide, self.serverTransport, self.clientProtocol,
                             self.clientTransport, greet=greet, clock=self.reactor)
        return recorder, conn, serverProtocol, pump


class HandshakeTests(UpstreamTlsTestCase):

    def test_registered(self):
        """The UpstreamTlsContext @type is an upstream transport socket."""
        factory = registry.lookup(registry.Category.TRANSPORT_SOCKET_UPSTREAM,
                                  TLS_TYPE.rsplit("/", 1)[-1])
        self.assertIsNotNone(factory)
        self.assertIs(factory.function, upstream_tls.createUpstreamTlsSocket)

    def test_sniAndVerifiedHandshake(self):
        """
        With sni, trusted_ca and a SAN matcher, the server sees the SNI,
        the certificate is verified, and the connection opens only once the
        handshake is done, at TLS 1.2: Envoy's client maximum by default,
        though the server offers TLS 1.3.
        """
        self.cluster(sni="foo.example.com", common_tls_context={"validation_context": trustedCa(
            match_typed_subject_alt_names=[{"san_type": "DNS", "matcher": {"exact": "localhost"}}])})
        server = TlsServer()
        recorder, conn, serverProtocol, pump = self.connect(server, greet=False)
        self.assertIsInstance(self.clientProtocol, UpstreamTlsProtocol)
        self.assertEqual(recorder.events, [])
        pump.flush()
        self.assertEqual(recorder.events, ["connected"])
        self.assertEqual(server.serverNames, [b"foo.example.com"])
        conn.write(b"ping")
        pump.flush()
        self.assertEqual(b"".join(serverProtocol.received), b"ping")
        serverProtocol.transport.write(b"pong")
        pump.flush()
        self.assertEqual(recorder.data, [b"pong"])
        info = conn.transport.ssl
        self.assertEqual(info.tlsVersion, "TLSv1.2")
        self.assertTrue(info.peerCertificateValidated)
        self.assertEqual(info.dnsSansPeerCertificate, ("localhost", "*.example.com"))
        self.assertEqual((self.s("ssl.handshake"), self.s("ssl.versions.TLSv1.2"),
                          self.s("ssl.connection_error"), self.s("upstream_cx_connect_fail")),
                         (1, 1, 0, 0))
        self.assertEqual(conn.transportFailureReason, "")

    def test_workerClock(self):
        """TLS writes are flushed by the worker's reactor, not the global one."""
        self.cluster()
        self.tlc.connect(self.tlc.chooseHost(), Recorder())
        factory = self.reactor.tcpClients[-1][2]
        self.assertIsInstance(factory, TLSMemoryBIOFactory)
        self.assertIs(factory._clock, self.reactor)

    def test_noSni(self):
        """Without sni, none is sent (as Envoy)."""
        self.cluster()
        server = TlsServer()
        recorder, _, _, _ = self.connect(server)
        self.assertEqual(recorder.events, ["connected"])
        self.assertEqual(server.serverNames, [None])

    def test_autoHostSni(self):
        """auto_host_sni sends the host's name instead of sni."""
        self.cluster(sni="configured.example.com", auto_host_sni=True)
        server = TlsServer()
        self.connect(server)
        self.assertEqual(server.serverNames, [b"upstream.example.com"])

    def test_noValidationContextTrustsAnything(self):
        """
        Without a validation_context Envoy does not check the server's
        certificate at all: a certificate from no trusted CA, for another
        name, is accepted.
        """
        self.cluster(sni="localhost")
        recorder, conn, _, _ = self.connect(TlsServer(certificate="domain1"))
        self.assertEqual(recorder.events, ["connected"])
        self.assertFalse(conn.transport.ssl.peerCertificateValidated)

    def test_caOnlyNoHostnameCheck(self):
        """trusted_ca alone checks the chain, not the SNI against the name."""
        self.cluster(sni="not-in-the-certificate.test",
                     common_tls_context={"validation_context": trustedCa()})
        recorder, conn, _, _ = self.connect(TlsServer())
        self.assertEqual(recorder.events, ["connected"])
        self.assertTrue(conn.transport.ssl.peerCertificateValidated)

    def test_untrustedCa(self):
        """
        A chain that does not lead to trusted_ca fails the connect, with
        Envoy's reason text and C{ssl.fail_verify_error}.
        """
        self.cluster(common_tls_context={"validation_context": trustedCa("domain1.crt.pem")})
        recorder, conn, _, _ = self.connect(TlsServer())
        self.assertEqual(recorder.events, [("failed", REMOTE_CONNECTION_FAILURE)])
        self.assertEqual(
            conn.transportFailureReason,
            "TLS_error:|268435581:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:"
            "verify cert failed: X509_verify_cert: certificate verification error at depth 0: "
            "unable to get local issuer certificate:TLS_error_end")
        self.assertTrue(conn.failureReason.check(UpstreamTlsError))
        self.assertEqual((self.s("ssl.fail_verify_error"), self.s("ssl.connection_error"),
                          self.s("ssl.handshake"), self.s("upstream_cx_connect_fail"),
                          self.s("upstream_cx_active")), (1, 0, 0, 1, 0))

    def test_sanMismatch(self):
        """A SAN matcher no SAN satisfies: C{ssl.fail_verify_san}."""
        self.cluster(common_tls_context={"validation_context": trustedCa(
            match_typed_subject_alt_names=[{"san_type": "DNS",
                                            "matcher": {"exact": "other.example.org"}}])})
        recorder, conn, _, _ = self.connect(TlsServer())
        self.assertEqual(recorder.events, [("failed", REMOTE_CONNECTION_FAILURE)])
        self.assertEqual(
            conn.transportFailureReason,
            "TLS_error:|268435581:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:"
            "verify cert failed: SAN matcher, certificate SANs are [localhost, *.example.com, "
            "127.0.0.1]:TLS_error_end")
        self.assertEqual((self.s("ssl.fail_verify_san"), self.s("ssl.fail_verify_error"),
                          self.s("ssl.connection_error")), (1, 0, 0))

    def test_sanMatches(self):
        """
        A DNS SAN matches exactly or through the certificate's wildcard;
        the deprecated match_subject_alt_names works too; an IP SAN
        matches by its text.
        """
        for vc in (
            trustedCa(match_typed_subject_alt_names=[
                {"san_type": "DNS", "matcher": {"exact": "api.example.com"}}]),
            trustedCa(match_subject_alt_names=[{"exact": "localhost"}]),
            trustedCa(match_typed_subject_alt_names=[
                {"san_type": "IP_ADDRESS", "matcher": {"exact": "127.0.0.1"}}]),
        ):
            self.cluster(common_tls_context={"validation_context": vc})
            recorder, _, _, _ = self.connect(TlsServer())
            self.assertEqual(recorder.events, ["connected"], vc)

    def test_certHashMismatch(self):
        """A pinned hash that does not match: C{ssl.fail_verify_cert_hash}."""
        self.cluster(common_tls_context={"validation_context": trustedCa(
            verify_certificate_hash=["00" * 32])})
        recorder, conn, _, _ = self.connect(TlsServer())
        self.assertEqual(recorder.events, [("failed", REMOTE_CONNECTION_FAILURE)])
        self.assertEqual(
            conn.transportFailureReason,
            "TLS_error:|268435581:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:"
            "verify cert failed: cert hash and spki:TLS_error_end")
        self.assertEqual(self.s("ssl.fail_verify_cert_hash"), 1)

    def test_clientCertificatePresented(self):
        """tls_certificates gives the client certificate a server asks for."""
        self.cluster(common_tls_context={"tls_certificates": clientCertificate()})
        recorder, conn, serverProtocol, pump = self.connect(
            TlsServer(requireClientCertificate=True))
        self.assertEqual(recorder.events, ["connected"])
        peer = serverProtocol.transport.getPeerCertificate().to_cryptography()
        san = peer.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(san.get_values_for_type(x509.DNSName), ["client.example.com"])

    def test_clientCertificateMissing(self):
        """
        A server that requires a client certificate refuses a client with
        none: Envoy's text for the alert, and C{ssl.connection_error}.
        """
        self.cluster()
        recorder, conn, _, _ = self.connect(TlsServer(requireClientCertificate=True))
        self.assertEqual(recorder.events, [("failed", REMOTE_CONNECTION_FAILURE)])
        self.assertEqual(conn.transportFailureReason,
                         "TLS_error:|268436496:SSL routines:OPENSSL_internal:"
                         "SSLV3_ALERT_HANDSHAKE_FAILURE:TLS_error_end")
        self.assertEqual((self.s("ssl.connection_error"), self.s("ssl.handshake")), (1, 0))

    def test_plainServer(self):
        """A server that does not speak TLS: WRONG_VERSION_NUMBER."""
        self.cluster()
        recorder, conn, _, _ = self.connect(serverProtocol=Plain())
        self.assertEqual(recorder.events, [("failed", REMOTE_CONNECTION_FAILURE)])
        self.assertEqual(conn.transportFailureReason,
                         "TLS_error:|268435703:SSL routines:OPENSSL_internal:"
                         "WRONG_VERSION_NUMBER:TLS_error_end")
        self.assertEqual(self.s("ssl.connection_error"), 1)

    def test_resetDuringHandshake(self):
        """
        A reset before the handshake completes is Envoy's "Connection reset
        by peer"; a clean close has no reason. Neither is an ssl error.
        """
        for lost, reason in ((error.ConnectionLost(), CONNECTION_RESET_REASON),
                             (error.ConnectionDone(), "")):
            self.cluster()
            recorder, conn, serverProtocol, pump = self.connect(serverProtocol=Protocol(),
                                                                greet=False)
            self.clientTransport.disconnectReason = lost
            self.serverTransport.loseConnection()
            pump.flush()
            self.assertEqual(recorder.events, [("failed", REMOTE_CONNECTION_FAILURE)])
            self.assertEqual(conn.transportFailureReason, reason)
            self.assertEqual((self.s("ssl.connection_error"), self.s("upstream_cx_connect_fail")),
                             (0, 1))

    def test_connectTimeoutCoversHandshake(self):
        """
        The connect timeout runs until the handshake is done; when it fires
        during the handshake the socket is dropped.
        """
        self.cluster()
        recorder, conn, _, pump = self.connect(serverProtocol=Protocol())
        self.assertEqual(recorder.events, [])
        # As a real connector is once the TCP connection is up.
        connector = self.reactor.connectors[-1]
        connector.transport = self.clientTransport

        def stopConnecting():
            raise error.NotConnectingError()

        connector.stopConnecting = stopConnecting
        self.reactor.advance(2)
        self.assertEqual(recorder.events, [("failed", CONNECT_TIMEOUT)])
        self.assertTrue(self.clientTransport.disconnecting)
        pump.flush()
        self.assertEqual(recorder.events, [("failed", CONNECT_TIMEOUT)])
        self.assertEqual((self.s("upstream_cx_connect_timeout"), self.s("upstream_cx_active")),
                         (1, 0))

    def test_closeNotifyIsReadHalfClose(self):
        """The host's close_notify reaches the callbacks as a read half-close."""
        self.cluster()
        recorder, conn, serverProtocol, pump = self.connect(TlsServer())
        serverProtocol.transport.loseConnection()
        pump.flush()
        self.assertEqual(recorder.events[:2], ["connected", "read-closed"])

    def test_sessionResumption(self):
        """The session of one connection is resumed by the next."""
        self.cluster()
        server = TlsServer()
        self.connect(server)
        self.assertEqual(self.s("ssl.session_reused"), 0)
        self.connect(server)
        self.assertEqual((self.s("ssl.session_reused"), self.s("ssl.handshake")), (1, 2))

    def test_noSessionResumption(self):
        """max_session_keys: 0 keeps no session."""
        self.cluster(max_session_keys=0)
        server = TlsServer()
        self.connect(server)
        self.connect(server)
        self.assertEqual((self.s("ssl.session_reused"), self.s("ssl.handshake")), (0, 2))

    def test_alpn(self):
        """alpn_protocols are offered; the negotiated one is on the transport."""
        self.cluster(common_tls_context={"alpn_protocols": ["h2", "http/1.1"]})
        recorder, conn, _, _ = self.connect(TlsServer(alpn=[b"http/1.1"]))
        self.assertEqual(conn.transport.negotiatedProtocol, b"http/1.1")
        self.assertEqual(conn.transport.ssl.alpn, "http/1.1")

    def test_tlsParams(self):
        """
        tls_maximum_protocol_version allows TLS 1.3; a minimum above the
        default maximum of 1.2 fails the handshake, as in Envoy.
        """
        self.cluster(common_tls_context={"tls_params": {
            "tls_maximum_protocol_version": "TLSv1_3"}})
        recorder, conn, _, _ = self.connect(TlsServer())
        self.assertEqual(conn.transport.ssl.tlsVersion, "TLSv1.3")
        self.assertEqual(self.s("ssl.versions.TLSv1.3"), 1)
        self.cluster(common_tls_context={"tls_params": {
            "tls_minimum_protocol_version": "TLSv1_3"}})
        recorder, conn, _, _ = self.connect(TlsServer())
        self.assertEqual(recorder.events, [("failed", REMOTE_CONNECTION_FAILURE)])
        self.assertIn(":NO_SUPPORTED_VERSIONS_ENABLED:", conn.transportFailureReason)


class AutoSanValidationTests(UpstreamTlsTestCase):
    """
    Per-request transport socket options (a cluster's C{auto_sni} and
    C{auto_san_validation}): the reasons and stats are those Envoy 1.40 gave
    for the same certificates.
    """

    def connectWith(self, options, server, **tls):
        self.cluster(**tls)
        recorder = Recorder()
        conn = self.tlc.connect(self.tlc.chooseHost(), recorder, options)
        factory = self.reactor.tcpClients[-1][2]
        clientProtocol = factory.buildProtocol(None)
        serverFactory = TLSMemoryBIOFactory(server, False, Factory.forProtocol(lambda: None),
                                            clock=self.reactor)
        serverSide = serverFactory.protocol(serverFactory, ServerProtocol())
        iosim.connect(serverSide, iosim.makeFakeServer(serverSide), clientProtocol,
                      iosim.makeFakeClient(clientProtocol), clock=self.reactor)
        return recorder, conn

    def test_serverNameReplacesSni(self):
        """The request's server name is sent instead of the configured sni."""
        server = TlsServer()
        recorder, _ = self.connectWith(TransportSocketOptions("api.example.com"), server,
                                       sni="configured.example.com")
        self.assertEqual(recorder.events, ["connected"])
        self.assertEqual(server.serverNames, [b"api.example.com"])

    def test_sanListMatches(self):
        """A wildcard DNS SAN and an IP SAN match the names to verify."""
        for name in ("api.example.com", "localhost", "127.0.0.1"):
            recorder, conn = self.connectWith(
                TransportSocketOptions("", (name,)), TlsServer(),
                common_tls_context={"validation_context": trustedCa()})
            self.assertEqual(recorder.events, ["connected"], name)
            self.assertEqual(self.s("ssl.fail_verify_san"), 0)

    def test_sanListMismatch(self):
        """
        Envoy's "verify SAN list" failure: C{ssl.fail_verify_san} and the
        expected and actual SANs in the transport failure reason.
        """
        recorder, conn = self.connectWith(
            TransportSocketOptions("bad.test", ("bad.test",)), TlsServer(),
            common_tls_context={"validation_context": trustedCa()})
        self.assertEqual(recorder.events, [("failed", REMOTE_CONNECTION_FAILURE)])
        self.assertEqual(
            conn.transportFailureReason,
            "TLS_error:|268435581:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:"
            "verify cert failed: verify SAN list, expected SANs: [bad.test], certificate "
            "SANs: [localhost, *.example.com, 127.0.0.1]:TLS_error_end")
        self.assertEqual((self.s("ssl.fail_verify_san"), self.s("upstream_cx_connect_fail")),
                         (1, 1))

    def test_sanListWithoutValidationContext(self):
        """
        Without a validation_context, auto_san_validation still verifies
        the chain, against no trusted CA: Envoy refuses every certificate.
        """
        recorder, conn = self.connectWith(
            TransportSocketOptions("localhost", ("localhost",)), TlsServer())
        self.assertEqual(recorder.events, [("failed", REMOTE_CONNECTION_FAILURE)])
        self.assertIn("CERTIFICATE_VERIFY_FAILED:verify cert failed: X509_verify_cert",
                      conn.transportFailureReason)
        self.assertEqual(self.s("ssl.fail_verify_error"), 1)

    def test_sessionsKeptPerServerName(self):
        """
        A session is resumed only by a connection with the same server
        name and SAN list: resumption would skip the SAN check.
        """
        server = TlsServer()
        tls = {"common_tls_context": {"validation_context": trustedCa()}}
        self.cluster(**tls)
        socket = self.tlc.info.transportSocket
        for name in ("api.example.com", "localhost", "bad.test"):
            recorder = Recorder()
            self.tlc.connect(self.tlc.chooseHost(), recorder,
                             TransportSocketOptions(name, (name,)))
            client = self.reactor.tcpClients[-1][2].buildProtocol(None)
            serverFactory = TLSMemoryBIOFactory(server, False, Factory.forProtocol(lambda: None),
                                                clock=self.reactor)
            serverSide = serverFactory.protocol(serverFactory, ServerProtocol())
            iosim.connect(serverSide, iosim.makeFakeServer(serverSide), client,
                          iosim.makeFakeClient(client), clock=self.reactor)
            if name == "bad.test":
                self.assertEqual(recorder.events, [("failed", REMOTE_CONNECTION_FAILURE)])
            else:
                self.assertEqual(recorder.events, ["connected"])
                self.assertFalse(client.ssl.sessionReused)
        self.assertEqual(self.s("ssl.fail_verify_san"), 1)
        self.assertEqual(sorted(socket._sessions),
                         [("api.example.com", ("api.example.com",)),
                          ("localhost", ("localhost",))])


class ConfigTests(UpstreamTlsTestCase):

    def compile(self, **tls):
        return compileCluster(clusterProto("c1", [endpoint("127.0.0.1", 10083)],
                                           transport_socket=tlsSocket(**tls)),
                              "static_resources.clusters[0]")[0]

    def test_compiled(self):
        info = self.compile(sni="x.example.com", max_session_keys=3)
        ts = info.transportSocket
        self.assertIsInstance(ts, UpstreamTlsSocket)
        self.assertTrue(verifyObject(IOpenSSLClientConnectionCreator, ts))
        self.assertEqual((ts.sni, ts.maxSessionKeys, ts.validation), ("x.example.com", 3, None))
        self.assertEqual(ts.options.maximumVersion, SSL.TLS1_2_VERSION)

    def test_rawBufferStaysPlain(self):
        info = compileCluster(clusterProto("c1", transport_socket={
            "name": "envoy.transport_sockets.raw_buffer", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3"
                         ".RawBuffer"}}), "c")[0]
        self.assertIsNone(info.transportSocket)

    def test_renegotiation(self):
        self.compile(allow_renegotiation=False)
        e = self.assertRaises(UnsupportedField, self.compile, allow_renegotiation=True)
        self.assertIn("static_resources.clusters[0].transport_socket.typed_config"
                      ".allow_renegotiation", str(e))

    def test_unsupportedFields(self):
        e = self.assertRaises(UnsupportedField, self.compile, auto_sni_san_validation=True)
        self.assertIn(".auto_sni_san_validation", str(e))

    def test_multipleCertificates(self):
        """Envoy's message."""
        e = self.assertRaises(ConfigError, self.compile, common_tls_context={
            "tls_certificates": clientCertificate() * 2})
        self.assertIn("Multiple TLS certificates are not supported for client contexts", str(e))

    def test_sanWithoutCa(self):
        """Envoy's message."""
        e = self.assertRaises(ConfigError, self.compile, common_tls_context={
            "validation_context": {"match_typed_subject_alt_names": [
                {"san_type": "DNS", "matcher": {"exact": "x"}}]}})
        self.assertIn("SAN-based verification of peer certificates without trusted CA is "
                      "insecure and not allowed", str(e))

    def test_examplesCompile(self):
        """The upstream TLS clusters of 01-envoy-demo and 13-tls-mtls compile."""
        cwd = os.getcwd()
        os.chdir(EXAMPLES)
        self.addCleanup(os.chdir, cwd)
        demo = loadBootstrap("01-envoy-demo.yaml").static_resources.clusters[0]
        ts = compileCluster(demo, "static_resources.clusters[0]")[0].transportSocket
        self.assertEqual((ts.sni, ts.validation, ts.options.certificates), (
            "www.envoyproxy.io", None, ()))
        clusters = loadBootstrap("13-tls-mtls-upstream-tls.yaml").static_resources.clusters
        infos = [compileCluster(c, "static_resources.clusters[%d]" % (i,))[0]
                 for i, c in enumerate(clusters)]
        ts = infos[0].transportSocket
        self.assertEqual(ts.sni, "localhost")
        self.assertEqual(len(ts.options.certificates), 1)
        self.assertEqual(ts.options.certificates[0].dnsNames, ("client.example.com",))
        self.assertEqual(len(ts.validation.trustedCa), 1)
        self.assertEqual(len(ts.validation.sanMatchers), 1)
        self.assertIsNone(infos[1].transportSocket)


class FailureReasonTests(SynchronousTestCase):
    """Envoy's reason text from OpenSSL's error queue."""

    def test_alerts(self):
        error = SSL.Error([("SSL routines", "", "tlsv1 alert protocol version")])
        self.assertEqual(upstream_tls.tlsFailureReason(error),
                         "TLS_error:|268436526:SSL routines:OPENSSL_internal:"
                         "TLSV1_ALERT_PROTOCOL_VERSION:TLS_error_end")

    def test_unknownReason(self):
        """A reason BoringSSL's table lacks keeps its name, code 0."""
        error = SSL.Error([("SSL routines", "", "some new reason")])
        self.assertEqual(upstream_tls.tlsFailureReason(error),
                         "TLS_error:|268435456:SSL routines:OPENSSL_internal:"
                         "SOME_NEW_REASON:TLS_error_end")
