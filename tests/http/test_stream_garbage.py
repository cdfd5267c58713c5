"""
A proxied request leaves no reference cycles behind: reference counting
frees each finished stream, so the cyclic garbage collector has nothing
to find on the hot path (its collections cost about a tenth of the CPU
of small requests before this held).
"""

import gc

from twisted.trial.unittest import TestCase

from txenvoy.testing.proxy import HttpProxyHarness

REQUEST = b"GET /o/x HTTP/1.1\r\nhost: a\r\nuser-agent: t\r\naccept: */*\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


class StreamGarbageTests(TestCase):

    def test_keepAliveRequestsLeaveNoCycles(self):
        """
        A hundred keep-alive requests through the connection manager, the
        router and a pooled upstream connection leave no object for the
        cyclic collector.
        """
        h = HttpProxyHarness()
        down = h.connect()
        down.send(REQUEST)
        up = h.upstream()
        up.respond(RESPONSE)
        enabled = gc.isenabled()
        gc.collect()
        gc.disable()
        self.addCleanup(lambda: gc.enable() if enabled else None)
        for _ in range(100):
            down.transport.clear()
            up.transport.clear()
            down.send(REQUEST)
            up.respond(RESPONSE)
            self.assertIn(b"200 OK", down.transport.value())
        self.assertEqual(gc.collect(), 0)

    def test_closedConnectionsLeaveNoCycles(self):
        """
        Connections that each carry one request with C{connection: close}
        and are then closed leave no object for the cyclic collector: the
        connection manager, its codec, timers and last stream are freed by
        reference counting when the connection goes.
        """
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        h = HttpProxyHarness()
        closing = REQUEST.replace(b"accept: */*\r\n", b"accept: */*\r\nconnection: close\r\n")

        upstream = []

        def once():
            down = h.connect()
            down.send(closing)
            if not upstream:
                # The pool keeps this one connection to the upstream alive.
                upstream.append(h.upstream())
            upstream[0].transport.clear()
            upstream[0].respond(RESPONSE)
            self.assertIn(b"200 OK", down.transport.value())
            self.assertTrue(down.transport.disconnecting)
            down.cm.connectionLost(Failure(ConnectionDone()))

        once()
        enabled = gc.isenabled()
        gc.collect()
        gc.disable()
        self.addCleanup(lambda: gc.enable() if enabled else None)
        for _ in range(20):
            once()
        self.assertEqual(gc.collect(), 0)

    def test_directResponsesLeaveNoCycles(self):
        """
        A request the router answers at once (a direct response, so the
        stream ends inside its own C{decodeHeaders}) leaves no object for
        the cyclic collector either.
        """
        h = HttpProxyHarness(routes=[{"match": {"prefix": "/"}, "direct_response": {
            "status": 200, "body": {"inline_string": "one"}}}])
        down = h.connect()
        down.send(REQUEST)
        enabled = gc.isenabled()
        gc.collect()
        gc.disable()
        self.addCleanup(lambda: gc.enable() if enabled else None)
        for _ in range(20):
            down.transport.clear()
            down.send(REQUEST)
            self.assertIn(b"200 OK", down.transport.value())
        self.assertEqual(gc.collect(), 0)
