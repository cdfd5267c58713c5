"""
The accept path's debug lines (Envoy 1.40's conn_handler and connection
loggers), on fake transports.
"""

import io
import re

from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.server.logging import LogLevels, makeObserver

from tests.network import test_connection
from tests.network.test_connection import (
    Factory,
    FakeListenerConfig,
    ListenerFilterFactory,
    PeekFilter,
    Recorder,
)


class AcceptPathLogTests(SynchronousTestCase):

    setUp = test_connection.ConnectionTests.setUp
    connect = test_connection.ConnectionTests.connect

    def log(self, level="debug"):
        out = io.StringIO()
        levels = LogLevels(level)
        levels.bindLoggers()
        self.addCleanup(levels.unbindLoggers)
        observer = makeObserver(out, levels)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        return out

    def test_story(self):
        """
        A listener filter waits for bytes, then continues; the chain is
        chosen, the connection counted; the client closes.
        """
        out = self.log()
        config = FakeListenerConfig([Factory(lambda c, n: Recorder())],
                                    [ListenerFilterFactory(PeekFilter)])
        _, conn, _ = self.connect(config)
        conn.dataReceived(b"abcd")
        conn.connectionLost(Failure(ConnectionDone()))
        tag = '[Tags: "ConnectionId":"%d"] ' % (conn.streamInfo.connectionId,)
        messages = [re.sub(r"^.*?\] \[[\w/.]+:\d+\] ", "", line)
                    for line in out.getvalue().splitlines()]
        self.assertEqual(messages, [
            tag + "listener filter PeekFilter: waiting for data",
            tag + "listener filter PeekFilter: continue after 4 bytes",
            tag + "new connection from 10.0.0.1:5555",
            tag + "filter chain 'c' matched",
            tag + "remote close",
            tag + "closing socket: 0",
            tag + "adding to cleanup list",
        ])

    def test_readError(self):
        """A connection lost uncleanly says why before it says remote close."""
        out = self.log()
        _, conn, _ = self.connect(FakeListenerConfig([Factory(lambda c, n: Recorder())]))
        conn.connectionLost(Failure(ConnectionLost("Connection reset by peer")))
        self.assertIn("] read error: Connection to the other side was lost in a non-clean "
                      "fashion: Connection reset by peer.\n", out.getvalue())

    def test_info(self):
        """At info nothing of it is printed."""
        out = self.log("info")
        _, conn, _ = self.connect(FakeListenerConfig([Factory(lambda c, n: Recorder())]))
        conn.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(out.getvalue(), "")
