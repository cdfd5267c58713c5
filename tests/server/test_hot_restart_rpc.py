"""
Tests for L{txenvoy.server.hot_restart_rpc}: Envoy's socket names, its
length-prefixed chunking and descriptor passing, over real Unix sockets.
"""

import os
import socket

from twisted.trial.unittest import SynchronousTestCase

from txenvoy.server.hot_restart_rpc import (MAX_SENDMSG_SIZE, DomainSocketInUse,
                                            HotRestartError, MessageAssembler, PeerClosed,
                                            RpcStream,
                                            domainSocketAddress, encode)


def _baseId():
    return 900000 + os.getpid() % 90000


class NameTests(SynchronousTestCase):

    def test_envoyNames(self):
        """
        Envoy's C{createDomainSocketAddress}: C{<path>_<role>_<10*base_id +
        epoch % 3>}, C{@} being the abstract namespace.
        """
        self.assertEqual(domainSocketAddress(0, 0, "parent"), "\0envoy_domain_socket_parent_0")
        self.assertEqual(domainSocketAddress(7, 1, "child"), "\0envoy_domain_socket_child_71")
        self.assertEqual(domainSocketAddress(7, 4, "child"), "\0envoy_domain_socket_child_71")
        self.assertEqual(domainSocketAddress(2, 2, "parent", "/tmp/x"), "/tmp/x_parent_22")


class ChunkingTests(SynchronousTestCase):

    def test_roundTripInChunks(self):
        """A message longer than one datagram is split at 4096 bytes and joined back."""
        message = {"reply": {"stats": {"counters": {"c%d" % i: i for i in range(1000)}}}}
        chunks = encode(message)
        self.assertGreater(len(chunks), 1)
        self.assertTrue(all(len(c) <= MAX_SENDMSG_SIZE for c in chunks))
        assembler = MessageAssembler()
        results = [assembler.feed(c) for c in chunks]
        self.assertEqual(results[:-1], [None] * (len(chunks) - 1))
        self.assertEqual(results[-1], (message, []))

    def test_tinyFragment(self):
        """Envoy's check: a message's length comes in one piece."""
        self.assertRaises(HotRestartError, MessageAssembler().feed, b"\0\0")

    def test_misaligned(self):
        """A datagram running past its message's end is refused."""
        data = encode({"a": 1})[0]
        self.assertRaises(HotRestartError, MessageAssembler().feed, data + b"x")


class StreamTests(SynchronousTestCase):

    def setUp(self):
        base = _baseId()
        self.parent = RpcStream.bound(base, 0, "parent")
        self.addCleanup(self.parent.close)
        self.child = RpcStream.bound(base, 1, "child")
        self.addCleanup(self.child.close)
        self.parentAddress = domainSocketAddress(base, 0, "parent")
        self.childAddress = domainSocketAddress(base, 1, "child")

    def test_requestReply(self):
        self.assertIsNone(self.parent.receive())
        self.child.send(self.parentAddress, {"request": {"stats": {}}})
        self.assertEqual(self.parent.receive(timeout=5), ({"request": {"stats": {}}}, []))

    def test_passListenSocket(self):
        """A listening socket passed with C{SCM_RIGHTS} accepts in the receiver."""
        listening = socket.socket()
        self.addCleanup(listening.close)
        listening.bind(("127.0.0.1", 0))
        listening.listen(5)
        self.parent.send(self.childAddress, {"reply": {"pass_listen_socket": {"fd": 3}}},
                         listening.fileno())
        message, fds = self.child.receive(timeout=5)
        self.assertEqual(len(fds), 1)
        passed = socket.socket(fileno=fds[0])
        self.addCleanup(passed.close)
        self.assertEqual(passed.getsockname(), listening.getsockname())
        client = socket.create_connection(listening.getsockname(), timeout=5)
        self.addCleanup(client.close)
        accepted, _ = passed.accept()
        accepted.close()

    def test_inUse(self):
        """A second process on the same base id and epoch gets Envoy's message."""
        e = self.assertRaises(DomainSocketInUse, RpcStream.bound, self.parent.baseId, 0, "parent")
        self.assertIn("unable to bind domain socket with base_id=%d, id=0"
                      % (self.parent.baseId * 10,), str(e))
        self.assertIn("(see --base-id option)", str(e))

    def test_noPeer(self):
        """Nobody on the other end: retried as Envoy does, then an error that says so."""
        slept = []
        lonely = RpcStream.bound(self.parent.baseId + 1, 1, "child", sleep=slept.append)
        self.addCleanup(lonely.close)
        e = self.assertRaises(HotRestartError, lonely.send,
                              domainSocketAddress(self.parent.baseId + 1, 0, "parent"), {})
        self.assertEqual(len(slept), 9)
        self.assertIn("previous epoch", str(e))

    def test_receiveTimeout(self):
        self.assertRaises(HotRestartError, self.parent.receive, 0.05)

    def test_connectedPair(self):
        """
        One end of a sequenced-packet pair (the worker processes' channel):
        sends need no address, and the peer's close is seen.
        """
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        left, right = RpcStream(a), RpcStream(b)
        self.addCleanup(left.close)
        left.send(None, {"stats": {"counters": {"x": 1}}})
        self.assertEqual(right.receive(timeout=5), ({"stats": {"counters": {"x": 1}}}, []))
        left.close()
        self.assertRaises(PeerClosed, right.receive, 5)
        right.close()
