# -*- test-case-name: tests.test_bench_bulk -*-
"""
The bulk TCP rig of bench (d): the sink origin drops what it reads
(C{MSG_TRUNC}) yet answers the exact byte count, and L{bulkTransfer}
checks that count.
"""

import os
import socket
import sys

from twisted.trial import unittest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from bench import loadgen  # noqa: E402
from bench.origin import startTcpOrigin  # noqa: E402


class BulkSinkTests(unittest.TestCase):
    """A real sink process on 127.0.0.1, fed by L{loadgen.bulkTransfer}."""

    def setUp(self):
        self.origin = startTcpOrigin()
        self.addCleanup(self.origin.stop)

    def test_countsTruncatedReads(self):
        """
        Bytes the kernel dropped for the sink are counted: a transfer of
        several chunks plus an odd tail gets back its exact size.
        """
        total = (3 << 20) + 12345
        gbps = loadgen.bulkTransfer(self.origin.port, total, timeout=30.0)
        self.assertGreater(gbps, 0)

    def test_answersByteCount(self):
        """
        A client that sends a few bytes and half-closes reads back their
        count, then EOF: the half-close is what ends a transfer.
        """
        s = socket.create_connection(("127.0.0.1", self.origin.port), timeout=30)
        self.addCleanup(s.close)
        s.sendall(b"x" * 1000)
        s.shutdown(socket.SHUT_WR)
        with s.makefile("rb") as answer:
            self.assertEqual(answer.read(), b"1000\n")
