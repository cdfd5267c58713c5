"""
Fakes shared by the listener filter and transport socket tests: a listener
with hand-built filter chains, a recording terminal filter, and TLS bytes
made in memory (a pyOpenSSL client on a memory BIO, and hand-built
ClientHellos for shapes OpenSSL will not send).
"""

import os
import struct

from OpenSSL import SSL
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from txenvoy.network.filter_chain import FilterChain, FilterChainManager
from txenvoy.network.listener import ActiveListener
from txenvoy.server.dispatcher import Dispatcher
from txenvoy.stats.store import StatsStore
from txenvoy.testing import RecordingProtocol

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))))
EXAMPLES = os.path.join(REPO, "..", "shared", "envoy-examples")
CERTS = os.path.join(EXAMPLES, "certs")


def certPath(name):
    """
    The path of one of the example certificates; fails (never skips) when
    the examples are not where the project keeps them.
    """
    path = os.path.join(CERTS, name)
    if not os.path.exists(path):
        raise AssertionError("missing test certificate %s (expected the shared envoy-examples "
                             "next to the repository)" % (path,))
    return path


class Recorder(RecordingProtocol):
    """A terminal protocol that records what it sees."""

    def received(self):
        return b"".join(self.data)


class Echo(Recorder):
    """A recorder that writes back what it reads and half-closes back."""

    def dataReceived(self, data):
        Recorder.dataReceived(self, data)
        self.transport.write(data)

    def readConnectionLost(self):
        Recorder.readConnectionLost(self)
        self.transport.loseWriteConnection()


class RecorderFactory:
    """A terminal network filter factory building one protocol per connection."""

    terminal = True

    def __init__(self, cls=Recorder):
        self.cls = cls
        self.built = []

    def buildFilter(self, connection, nextProtocol):
        p = self.cls()
        self.built.append(p)
        return p


class EmptyMatch:
    """The filter chain match of a chain that matches everything."""

    key = (None, (), (), "", (), (), 0, (), ())


class FakeListenerConfig:
    """What an ActiveListener reads from its ListenerConfig."""

    perConnectionBufferLimitBytes = 1024 * 1024
    listenerFiltersTimeout = 15.0
    continueOnListenerFiltersTimeout = False
    statPrefix = "listener.127.0.0.1_10000."
    accessLogs = ()
    ignoreGlobalConnLimit = False
    connectionLimit = staticmethod(lambda: None)

    def __init__(self, chains, listenerFilters=(), default=None):
        self.listenerFilters = list(listenerFilters)
        self.filterChainManager = FilterChainManager(chains, default, "l")


def singleChain(factory, transportSocket=None):
    """A listener config with one chain matching everything."""
    return FakeListenerConfig([FilterChain("c", [factory], transportSocket, EmptyMatch())])


class HalfCloseStringTransport(StringTransport):
    """A StringTransport that also records a write half-close (FIN)."""

    writeClosed = False

    def loseWriteConnection(self):
        self.writeClosed = True


class Harness:
    """One worker (dispatcher on a fake clock) and its stats."""

    def __init__(self):
        self.clock = Clock()
        self.store = StatsStore()
        self.dispatcher = Dispatcher(self.clock, "worker_0", self.store.shard("worker_0"))

    def connect(self, config, peer=("10.0.0.1", 5555), host=("127.0.0.1", 10000), handle=None):
        """
        Accept one connection on a StringTransport.

        @param handle: what the transport's C{getHandle} returns (a socket).
        @return: C{(connection, transport)}.
        """
        listener = ActiveListener(self.dispatcher, config)
        make = IPv6Address if ":" in peer[0] else IPv4Address
        conn = listener.buildProtocol(make("TCP", *peer))
        transport = HalfCloseStringTransport(hostAddress=make("TCP", *host),
                                             peerAddress=make("TCP", *peer))
        if handle is not None:
            transport.getHandle = lambda: handle
        conn.makeConnection(transport)
        return conn, transport

    def counter(self, name):
        return self.store.counterValue(name)

    def gauge(self, name):
        return self.store.gaugeValue(name)

    def histogram(self, name):
        return self.store.snapshot().histograms.get(name)


# -- TLS bytes --------------------------------------------------------------------


def clientContext(trust=True, cert=None, key=None, alpn=None, minimum=None, maximum=None):
    """A pyOpenSSL client context trusting the example CA."""
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    if trust:
        ctx.load_verify_locations(certPath("ca.crt.pem"))
        ctx.set_verify(SSL.VERIFY_PEER, lambda *a: a[-1])
    if cert:
        ctx.use_certificate_file(certPath(cert) if not os.path.isabs(cert) else cert)
        ctx.use_privatekey_file(certPath(key) if not os.path.isabs(key) else key)
    if alpn:
        ctx.set_alpn_protos(alpn)
    if minimum:
        ctx.set_min_proto_version(minimum)
    if maximum:
        ctx.set_max_proto_version(maximum)
    return ctx


def clientHelloBytes(serverName=None, alpn=None):
    """The first flight of a real OpenSSL client: its ClientHello records."""
    client = SSL.Connection(clientContext(trust=False, alpn=alpn), None)
    client.set_connect_state()
    if serverName:
        client.set_tlsext_host_name(serverName)
    try:
        client.do_handshake()
    except SSL.WantReadError:
        pass
    return client.bio_read(65536)


class TlsClient:
    """
    A TLS client on a memory BIO, talking to a server connection on a
    StringTransport: L{pump} moves bytes both ways until nothing moves.
    """

    def __init__(self, context, serverName=None):
        self.tls = SSL.Connection(context, None)
        self.tls.set_connect_state()
        if serverName:
            self.tls.set_tlsext_host_name(serverName)
        self.received = []
        self.closedByPeer = False
        self.error = None
        self.handshakeDone = False

    def pump(self, server, transport, clock, rounds=20):
        """
        Exchange bytes with C{server} (the ServerConnection) over
        C{transport}; C{clock.advance(0)} lets the server flush its TLS
        writes.
        """
        for _ in range(rounds):
            moved = False
            self._drive()
            try:
                out = self.tls.bio_read(65536)
            except SSL.WantReadError:
                out = b""
            if out and not transport.disconnecting:
                server.dataReceived(out)
                moved = True
            clock.advance(0)
            back = transport.value()
            if back:
                transport.clear()
                self.tls.bio_write(back)
                moved = True
            self._drive()
            if not moved:
                break

    def _drive(self):
        if self.error is not None:
            return
        try:
            if not self.handshakeDone:
                self.tls.do_handshake()
                self.handshakeDone = True
            while True:
                self.received.append(self.tls.recv(65536))
        except SSL.WantReadError:
            pass
        except SSL.ZeroReturnError:
            self.closedByPeer = True
        except SSL.Error as e:
            self.error = e

    def send(self, data):
        self.tls.sendall(data)

    def closeNotify(self):
        """Send close_notify (our write side is done)."""
        try:
            self.tls.shutdown()
        except SSL.Error:
            pass

    def data(self):
        return b"".join(self.received)


def _ext(extType, body):
    return struct.pack("!HH", extType, len(body)) + body


def sniExtension(name):
    raw = name.encode("ascii")
    entry = b"\x00" + struct.pack("!H", len(raw)) + raw
    return _ext(0, struct.pack("!H", len(entry)) + entry)


def alpnExtension(protocols):
    body = b"".join(bytes([len(p)]) + p for p in protocols)
    return _ext(16, struct.pack("!H", len(body)) + body)


def paddingExtension(size):
    return _ext(21, b"\x00" * size)


def handBuiltClientHello(extensions=b"", version=0x0303, ciphers=(0x1301, 0xC02F),
                         messageType=1):
    """A ClientHello handshake message built by hand."""
    body = struct.pack("!H", version) + b"\x11" * 32 + b"\x00"
    suites = b"".join(struct.pack("!H", c) for c in ciphers)
    body += struct.pack("!H", len(suites)) + suites + b"\x01\x00"
    if extensions is not None:
        body += struct.pack("!H", len(extensions)) + extensions
    return bytes([messageType]) + struct.pack("!I", len(body))[1:] + body


def records(message, size=16384, contentType=22, version=0x0301):
    """Split a handshake message into TLS records of at most C{size} bytes."""
    out = b""
    for i in range(0, len(message), size):
        fragment = message[i:i + size]
        out += bytes([contentType]) + struct.pack("!HH", version, len(fragment)) + fragment
    return out
