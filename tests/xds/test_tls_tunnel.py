"""
Tests for L{txenvoy.xds.tls_tunnel} on a memory reactor: grpcio's
plaintext connection waits until the control-plane connection made through
the cluster's transport socket is up, bytes flow both ways, and closing the
tunnel drops what it relays. (Against a self-signed control plane beside
real Envoy: L{tests.e2e.test_grpc_xds}.)
"""

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.xds.tls_tunnel import TlsTunnel


class _Host:
    address = ("192.0.2.1", 18000)


class _RecordingSocket:
    """A transport socket that records how it was asked to wrap."""

    def __init__(self):
        self.calls = []

    def wrapProtocolFactory(self, factory, reactor, host, cluster=None, socketOptions=None):
        self.calls.append((host, cluster, socketOptions))
        return factory


class TlsTunnelTests(SynchronousTestCase):

    def test_relay(self):
        reactor = MemoryReactorClock()
        socket = _RecordingSocket()
        tunnel = TlsTunnel(reactor, socket, _Host(), connectTimeout=2.0)
        self.assertEqual(tunnel.listen()[0], "127.0.0.1")
        port, factory, _, interface = reactor.tcpServers[0]
        self.assertEqual((port, interface), (0, "127.0.0.1"))
        server = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5000))
        serverTransport = StringTransport()
        server.makeConnection(serverTransport)
        # Nothing is read from grpcio before the TLS connection is up.
        self.assertEqual(serverTransport.producerState, "paused")
        host, port, clientFactory, timeout, _ = reactor.tcpClients[0]
        self.assertEqual((host, port, timeout), ("192.0.2.1", 18000, 2.0))
        [(_, cluster, options)] = socket.calls
        self.assertEqual(options.alpnFallback, (b"h2",))
        self.assertIsNone(cluster)
        client = clientFactory.buildProtocol(None)
        clientTransport = StringTransport()
        client.makeConnection(clientTransport)
        self.assertEqual(serverTransport.producerState, "producing")
        server.dataReceived(b"PRI * HTTP/2.0")
        client.dataReceived(b"settings")
        self.assertEqual((clientTransport.value(), serverTransport.value()),
                         (b"PRI * HTTP/2.0", b"settings"))
        tunnel.close()
        self.assertTrue(serverTransport.disconnecting)

    def test_handshakeFailureClosesGrpcSide(self):
        """A TLS connection that fails closes grpcio's, which retries as it does."""
        reactor = MemoryReactorClock()
        tunnel = TlsTunnel(reactor, _RecordingSocket(), _Host())
        tunnel.listen()
        server = reactor.tcpServers[0][1].buildProtocol(None)
        serverTransport = StringTransport()
        server.makeConnection(serverTransport)
        reactor.tcpClients[0][2].clientConnectionFailed(None, None)
        self.assertTrue(serverTransport.disconnecting)
