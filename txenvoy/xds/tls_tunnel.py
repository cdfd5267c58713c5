# -*- test-case-name: tests.xds.test_tls_tunnel,tests.e2e.test_grpc_xds -*-
"""
TLS to a control plane as Envoy does it, under grpcio: a plaintext port
on 127.0.0.1 that the xDS channel connects to, each connection carried on
to one host of the control plane's cluster through that cluster's own
compiled TLS transport socket (L{txenvoy.extensions.transport_sockets.upstream_tls}).

grpcio always verifies the server's certificate; Envoy does not when the
C{UpstreamTlsContext} has no validation context, which is how many
deployments reach a control plane with a self-signed certificate. Going
through the cluster's transport socket gives the xDS stream exactly the
TLS of any other connection to that cluster: no verification without a
validation context, its C{sni}, its client certificate (SDS included),
its TLS versions, and C{h2} offered by ALPN as Envoy's HTTP/2 pool offers
it. The bytes are relayed on the main reactor, with flow control both
ways (Twisted's port forwarder).
"""

from twisted.protocols.portforward import ProxyClientFactory, ProxyServer
from twisted.internet.protocol import Factory

from txenvoy.upstream.http_protocol_options import TransportSocketOptions

#: What Envoy's HTTP/2 pool offers when the context configures no ALPN.
_H2 = TransportSocketOptions(alpnFallback=(b"h2",))


class _TunnelServer(ProxyServer):
    """One grpcio connection, relayed over TLS once the handshake is done."""

    def connectionMade(self):
        tunnel = self.factory.tunnel
        tunnel.connections.add(self)
        # Nothing is read from grpcio until there is somewhere to send it.
        self.transport.pauseProducing()
        client = ProxyClientFactory()
        client.setServer(self)
        wrapped = tunnel.transportSocket.wrapProtocolFactory(client, tunnel.reactor, tunnel.host,
                                                             None, _H2)
        ip, port = tunnel.host.address
        tunnel.reactor.connectTCP(ip, port, wrapped, timeout=tunnel.connectTimeout)

    def connectionLost(self, reason):
        self.factory.tunnel.connections.discard(self)
        ProxyServer.connectionLost(self, reason)


class TlsTunnel:
    """
    The relay to one control-plane host.

    @ivar connections: the grpcio connections relayed now.
    """

    def __init__(self, reactor, transportSocket, host, connectTimeout=5.0):
        """
        @param transportSocket: the cluster's compiled upstream transport
            socket (an L{txenvoy.interfaces.IUpstreamTransportSocketFactory}).
        @param host: the L{txenvoy.upstream.host.Host} relayed to.
        """
        self.reactor = reactor
        self.transportSocket = transportSocket
        self.host = host
        self.connectTimeout = connectTimeout
        self.connections = set()
        self._port = None

    def listen(self):
        """Open the plaintext side; return its C{(ip, port)} for grpcio."""
        factory = Factory.forProtocol(_TunnelServer)
        factory.tunnel = self
        factory.noisy = False
        self._port = self.reactor.listenTCP(0, factory, interface="127.0.0.1")
        return ("127.0.0.1", self._port.getHost().port)

    def close(self):
        port, self._port = self._port, None
        if port is not None:
            port.stopListening()
        for connection in list(self.connections):
            connection.transport.loseConnection()
