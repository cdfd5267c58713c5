"""
L{txenvoy.server.channel_outbox}: the main process never blocks on a
worker process's full channel.
"""

import os
import socket

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.server import channel_outbox
from txenvoy.server.hot_restart_rpc import MessageAssembler


class ChannelOutboxTests(SynchronousTestCase):
    """
    Messages to a worker process that reads nothing (still starting,
    stopped, stuck) queue in order; the main process goes on.
    """

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.ours, self.theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.ours.setblocking(False)
        self.theirs.setblocking(False)
        self.addCleanup(self.ours.close)
        self.addCleanup(self.theirs.close)
        self.stalls = []
        self.outbox = channel_outbox.ChannelOutbox(self.reactor, self.ours, self.stalls.append)
        self.addCleanup(self.outbox.close)

    def _readAll(self):
        assembler = MessageAssembler()
        messages = []
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self.theirs, 1 << 17, 4)
            except BlockingIOError:
                return messages
            whole = assembler.feed(data, fds)
            if whole is not None:
                messages.append(whole)

    def _fill(self):
        """Send until the channel is full; the messages sent."""
        sent = []
        while not len(self.outbox):
            message = {"n": len(sent), "pad": "x" * 4000}
            self.outbox.send(message)
            sent.append(message)
        return sent

    def test_sentAtOnceWhileTheChannelTakesThem(self):
        """With room in the channel, a message leaves at once; nothing waits."""
        self.outbox.send({"admin": {"action": "ok"}})
        self.assertEqual(len(self.outbox), 0)
        self.assertEqual(self.reactor.getWriters(), [])
        self.assertEqual(self._readAll(), [({"admin": {"action": "ok"}}, [])])

    def test_fullChannelQueuesInOrder(self):
        """
        A full channel does not block the sender: the rest waits, the
        outbox waits for the channel to be writable, and once the worker
        process reads, every message arrives in the order sent, a passed
        descriptor with its own message.
        """
        sent = self._fill()
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        self.outbox.send({"listen_socket": {}}, w)
        sent.append({"listen_socket": {}})
        self.assertIn(self.outbox, self.reactor.getWriters())
        received = []
        while len(received) < len(sent):
            received += self._readAll()
            self.outbox.doWrite()
        self.assertEqual([m for m, _ in received], sent)
        fds = received[-1][1]
        self.assertEqual(len(fds), 1)
        os.close(fds[0])
        self.assertTrue(all(not f for _, f in received[:-1]))
        self.assertEqual(self.reactor.getWriters(), [])

    def test_stalledChannelReported(self):
        """
        A channel that takes nothing for STALL_KILL_S while messages wait
        is reported once, with how many packets wait; one that moves in
        time is not.
        """
        self._fill()
        self.reactor.advance(channel_outbox.STALL_KILL_S - 1)
        self._readAll()
        self.outbox.doWrite()
        self.reactor.advance(2)
        self.assertEqual(self.stalls, [])
        self._fill()
        self.reactor.advance(channel_outbox.STALL_KILL_S)
        self.assertEqual(len(self.stalls), 1)
        self.assertGreater(self.stalls[0], 0)

    def test_peerGoneDropsTheQueue(self):
        """A worker process whose end closed gets nothing more; no error reaches the sender."""
        self._fill()
        self.theirs.close()
        self.outbox.doWrite()
        self.assertEqual(len(self.outbox), 0)
        self.assertEqual(self.reactor.getWriters(), [])
        self.outbox.send({"admin": {"action": "ok"}})
        self.assertEqual(len(self.outbox), 0)


class ChannelOutboxOnARealReactorTests(SynchronousTestCase):
    """
    The outbox waits to write on the real epoll reactor while the channel's
    reader (the main process's L{MessageReader}) stays registered for the
    same socket.
    """

    def test_waitingToWriteKeepsTheReader(self):
        """
        A message arriving while the outbox waits for room reaches the
        reader, and the outbox keeps everything it holds: a reactor keeps
        one selectable per descriptor number, and the outbox once took the
        reader's, so the message went to the outbox, which closed and
        dropped its queue (a worker process that had been stopped never got
        the admin actions sent meanwhile).
        """
        from txenvoy.privates import EPollReactor
        from txenvoy.server.hot_restart import MessageReader
        from txenvoy.server.hot_restart_rpc import RpcStream

        # The main process's reactor (its epoll descriptor closes with it).
        reactor = EPollReactor()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        theirs.setblocking(False)
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        received = []
        reader = MessageReader(RpcStream(ours), lambda m, fds: received.append(m))
        reactor.addReader(reader)
        self.addCleanup(reactor.removeAll)
        outbox = channel_outbox.ChannelOutbox(reactor, ours, [].append)
        self.addCleanup(outbox.close)
        sent = 0
        while not len(outbox):
            outbox.send({"n": sent, "pad": "x" * 4000})
            sent += 1
        waiting = len(outbox)
        RpcStream(theirs).send(None, {"stats": 1})
        theirs.setblocking(False)
        reactor.doIteration(0)
        self.assertEqual(received, [{"stats": 1}])
        self.assertEqual(len(outbox), waiting)
        self.assertIn(outbox, reactor.getWriters())
        self.assertIn(reader, reactor.getReaders())
