"""
The TLS examples of the conformance corpus, end to end in memory: the
listener filters, filter chain match and transport sockets compiled from
C{03-tls-sni.yaml} and C{13-tls-mtls-upstream-tls.yaml}, with the network
filters replaced by an echo so the test needs nothing else from the tree.
"""

import os

from twisted.trial.unittest import SynchronousTestCase

from tests.extensions.filters.listener.fakes import (
    CERTS,
    EXAMPLES,
    Echo,
    FakeListenerConfig,
    Harness,
    RecorderFactory,
    TlsClient,
    certPath,
    clientContext,
)
import txenvoy.extensions.filters.listener  # noqa: F401  (registers the filters)
import txenvoy.extensions.transport_sockets  # noqa: F401
from txenvoy.config.context import FactoryContext
from txenvoy.config.loader import parseDict, parseYaml
from txenvoy.config.registry import Category
from txenvoy.network.filter_chain import FilterChain, FilterChainMatch
from txenvoy.stats.store import StatsStore

PREFIX = "listener.127.0.0.1_10000."


def loadListener(name, index=0):
    """
    Listener C{index} of an example, with its certificate paths made
    absolute (Envoy reads them relative to the working directory).
    """
    from envoy.config.bootstrap.v3 import bootstrap_pb2

    certPath("ca.crt.pem")
    with open(os.path.join(EXAMPLES, name)) as f:
        text = f.read().replace("certs/", os.path.abspath(CERTS) + "/")
    bootstrap = parseDict(parseYaml(text), bootstrap_pb2.Bootstrap())
    return bootstrap.static_resources.listeners[index]


def compileListener(proto, path="static_resources.listeners[0]"):
    """
    The listener's filters, chains and transport sockets, built through
    the extension registry as the listener config does, with an echo
    standing in for each chain's network filters.

    @return: C{(config, {chain name or index: RecorderFactory})}.
    """
    context = FactoryContext(None, StatsStore())
    filters = [context.createExtension(Category.LISTENER_FILTER, lf,
                                       "%s.listener_filters[%d]" % (path, i))
               for i, lf in enumerate(proto.listener_filters)]
    chains, echoes = [], {}
    for i, fc in enumerate(proto.filter_chains):
        p = "%s.filter_chains[%d]" % (path, i)
        transport = None
        if fc.HasField("transport_socket"):
            transport = context.createExtension(Category.TRANSPORT_SOCKET_DOWNSTREAM,
                                                fc.transport_socket, p + ".transport_socket")
        echoes[fc.name or i] = factory = RecorderFactory(Echo)
        match = FilterChainMatch(fc.filter_chain_match, p + ".filter_chain_match")
        chains.append(FilterChain(fc.name, [factory], transport, match))
    return FakeListenerConfig(chains, filters), echoes


class TlsSniExampleTests(SynchronousTestCase):
    """C{03-tls-sni.yaml}: tls_inspector, then a chain per server name."""

    def setUp(self):
        self.h = Harness()
        self.config, self.echoes = compileListener(loadListener("03-tls-sni.yaml"))

    def connectTls(self, serverName):
        conn, transport = self.h.connect(self.config)
        client = TlsClient(clientContext(), serverName)
        client.pump(conn, transport, self.h.clock)
        return conn, transport, client

    def test_domain1(self):
        """SNI picks the chain; that chain's certificate is served; data flows."""
        conn, transport, client = self.connectTls(b"domain1.example.com")
        self.assertIsNone(client.error)
        cert = client.tls.get_peer_certificate(as_cryptography=True)
        self.assertEqual(cert.subject.rfc4514_string(), "CN=domain1.example.com")
        self.assertEqual(conn.streamInfo.requestedServerName, "domain1.example.com")
        self.assertEqual(conn.transportProtocol, "tls")
        client.send(b"GET / HTTP/1.1\r\n\r\n")
        client.pump(conn, transport, self.h.clock)
        self.assertEqual(client.data(), b"GET / HTTP/1.1\r\n\r\n")
        self.assertEqual(len(self.echoes[0].built), 1)
        self.assertEqual(self.echoes[1].built, [])
        self.assertEqual(self.h.counter("tls_inspector.sni_found"), 1)
        self.assertEqual(self.h.counter(PREFIX + "ssl.handshake"), 1)

    def test_domain2(self):
        conn, transport, client = self.connectTls(b"domain2.example.com")
        cert = client.tls.get_peer_certificate(as_cryptography=True)
        self.assertEqual(cert.subject.rfc4514_string(), "CN=domain2.example.com")
        self.assertEqual(len(self.echoes[1].built), 1)

    def test_passthrough(self):
        """domain3: no transport socket; tcp_proxy's place gets the raw TLS bytes."""
        conn, transport = self.h.connect(self.config)
        client = TlsClient(clientContext(), b"domain3.example.com")
        client.pump(conn, transport, self.h.clock)
        passthrough = self.echoes[2].built[0]
        self.assertEqual(passthrough.received()[:1], b"\x16")
        self.assertEqual(self.h.counter(PREFIX + "ssl.handshake"), 0)

    def test_noServerName(self):
        """No SNI matches no chain (the example has no catch-all)."""
        conn, transport, client = self.connectTls(None)
        self.assertTrue(transport.disconnected)
        self.assertEqual(self.h.counter(PREFIX + "no_filter_chain_match"), 1)
        self.assertEqual(self.h.counter("tls_inspector.sni_not_found"), 1)

    def test_plaintext(self):
        conn, transport = self.h.connect(self.config)
        conn.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
        self.assertTrue(transport.disconnected)
        self.assertEqual(self.h.counter("tls_inspector.tls_not_found"), 1)
        self.assertEqual(self.h.counter(PREFIX + "no_filter_chain_match"), 1)


class MtlsExampleTests(SynchronousTestCase):
    """C{13-tls-mtls-upstream-tls.yaml}: an mTLS chain by SNI, a TLS fallback."""

    def setUp(self):
        self.h = Harness()
        self.config, self.echoes = compileListener(loadListener("13-tls-mtls-upstream-tls.yaml"))

    def connect(self, context, serverName):
        conn, transport = self.h.connect(self.config)
        client = TlsClient(context, serverName)
        client.pump(conn, transport, self.h.clock)
        return conn, transport, client

    def test_mtlsWithCertificate(self):
        conn, transport, client = self.connect(
            clientContext(cert="client.crt.pem", key="client.key.pem", alpn=[b"http/1.1"]),
            b"mtls.example.com")
        self.assertIsNone(client.error)
        self.assertEqual(conn.filterChain.name, "mtls_chain")
        self.assertEqual(conn.negotiatedProtocol, "http/1.1")
        self.assertEqual(conn.ssl.subjectPeerCertificate, "CN=client.example.com")
        self.assertTrue(conn.ssl.peerCertificateValidated)

    def test_mtlsWithoutCertificate(self):
        conn, transport, client = self.connect(clientContext(), b"mtls.example.com")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.h.counter(PREFIX + "ssl.fail_verify_no_cert"), 1)

    def test_fallbackChain(self):
        """Any other name: the default TLS chain, which offers h2."""
        conn, transport, client = self.connect(clientContext(alpn=[b"h2", b"http/1.1"]),
                                               b"www.example.com")
        self.assertIsNone(client.error)
        self.assertEqual(conn.filterChain.name, "default_tls_chain")
        self.assertEqual(conn.negotiatedProtocol, "h2")
        self.assertFalse(conn.ssl.peerCertificatePresented)


class InlineCertificateExampleTests(SynchronousTestCase):
    """C{02-front-proxy.yaml} keeps its certificate and key inline."""

    def test_compiles(self):
        proto = loadListener("02-front-proxy.yaml", 1)
        context = FactoryContext(None, StatsStore())
        fc = proto.filter_chains[0]
        socket = context.createExtension(Category.TRANSPORT_SOCKET_DOWNSTREAM,
                                         fc.transport_socket, "l.transport_socket")
        self.assertEqual(len(socket.options.certificates), 1)
