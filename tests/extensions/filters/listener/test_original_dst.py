"""
Tests for L{txenvoy.extensions.filters.listener.original_dst}, with fake
sockets standing in for the kernel's C{SO_ORIGINAL_DST} answer.
"""

import socket
import struct

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.extensions.filters.listener.fakes import Harness, RecorderFactory, singleChain
from txenvoy.extensions.filters.listener.original_dst import (
    IP6T_SO_ORIGINAL_DST,
    SO_ORIGINAL_DST,
    SOL_IP,
    SOL_IPV6,
    OriginalDstConfig,
    originalDestination,
)
from txenvoy.interfaces import IListenerFilter, IListenerFilterFactory


class FakeSocket:
    """Answers C{getsockopt} like a redirected (or not) accepted socket."""

    def __init__(self, family, answer=None):
        self.family = family
        self.answer = answer
        self.asked = []

    def getsockopt(self, level, option, size):
        self.asked.append((level, option, size))
        if self.answer is None:
            raise OSError(2, "No such file or directory")
        return self.answer


def sockaddrIn(host, port):
    return struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton(host) \
        + b"\x00" * 8


def sockaddrIn6(host, port):
    return (struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", port, 0)
            + socket.inet_pton(socket.AF_INET6, host) + b"\x00" * 4)


class OriginalDestinationTests(SynchronousTestCase):

    def test_ipv4(self):
        sock = FakeSocket(socket.AF_INET, sockaddrIn("10.1.2.3", 8080))
        self.assertEqual(originalDestination(sock), ("10.1.2.3", 8080))
        self.assertEqual(sock.asked, [(SOL_IP, SO_ORIGINAL_DST, 16)])

    def test_ipv6(self):
        sock = FakeSocket(socket.AF_INET6, sockaddrIn6("2001:db8::5", 443))
        self.assertEqual(originalDestination(sock), ("2001:db8::5", 443))
        self.assertEqual(sock.asked, [(SOL_IPV6, IP6T_SO_ORIGINAL_DST, 28)])

    def test_notRedirected(self):
        self.assertIsNone(originalDestination(FakeSocket(socket.AF_INET)))

    def test_notIp(self):
        self.assertIsNone(originalDestination(FakeSocket(socket.AF_UNIX, b"x" * 16)))

    def test_realSocket(self):
        """A plain socket has no original destination (ENOENT, or not Linux)."""
        server = socket.socket()
        self.addCleanup(server.close)
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        client = socket.create_connection(server.getsockname())
        self.addCleanup(client.close)
        accepted, _ = server.accept()
        self.addCleanup(accepted.close)
        self.assertIsNone(originalDestination(accepted))


class FilterTests(SynchronousTestCase):

    def connect(self, sock=None):
        self.h = Harness()
        self.config = OriginalDstConfig()
        self.recorder = RecorderFactory()
        listener = singleChain(self.recorder)
        listener.listenerFilters = [self.config]
        conn, transport = self.h.connect(listener, handle=sock)
        return conn

    def test_interfaces(self):
        conn = self.connect()
        self.assertTrue(verifyObject(IListenerFilterFactory, self.config))
        self.assertTrue(verifyObject(IListenerFilter, self.config.buildListenerFilter(conn)))

    def test_restoresOriginalDestination(self):
        """Decided on accept: the chain is built at once, with the restored address."""
        conn = self.connect(FakeSocket(socket.AF_INET, sockaddrIn("10.9.8.7", 80)))
        self.assertEqual(conn.localAddress, ("10.9.8.7", 80))
        self.assertEqual(conn.streamInfo.downstreamLocalAddress, ("10.9.8.7", 80))
        self.assertEqual(conn.matchInfo().destinationPort, 80)
        self.assertEqual(len(self.recorder.built), 1)

    def test_notRedirectedKeepsAddress(self):
        conn = self.connect(FakeSocket(socket.AF_INET))
        self.assertEqual(conn.localAddress, ("127.0.0.1", 10000))
        self.assertEqual(len(self.recorder.built), 1)

    def test_noHandle(self):
        """A transport without a socket (a test double): nothing to read."""
        conn = self.connect()
        self.assertEqual(conn.localAddress, ("127.0.0.1", 10000))
