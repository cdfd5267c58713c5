"""Tests for L{txenvoy.server.worker_process}: what a worker process keeps of its channel."""

import os
import socket

from twisted.trial.unittest import SynchronousTestCase

from txenvoy.server.worker_process import _keep, _take


class ListenSocketTests(SynchronousTestCase):

    def test_sameAddressTakenInOrder(self):
        """
        Two listeners on port 0 share their configured address: each takes
        the socket the main process bound for it, in the order it bound
        them (the config's).
        """
        sockets = {}
        made = []
        for _ in range(2):
            s = socket.socket()
            self.addCleanup(s.close)
            s.bind(("127.0.0.1", 0))
            made.append(s.getsockname()[1])
            _keep(sockets, {"address": "tcp://127.0.0.1:0", "worker_index": 0},
                  os.dup(s.fileno()))
        taken = [_take(sockets, "tcp://127.0.0.1:0", 0) for _ in range(2)]
        for s in taken:
            self.addCleanup(s.close)
        self.assertEqual([s.getsockname()[1] for s in taken], made)
        self.assertIsNone(_take(sockets, "tcp://127.0.0.1:0", 0))
        self.assertEqual(sockets, {})
