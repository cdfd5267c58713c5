"""Tests for L{txenvoy.network.stream_info}."""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.network.stream_info import ResponseFlag, StreamInfo, requestStreamInfo


class ResponseFlagTests(SynchronousTestCase):

    def test_none(self):
        """Envoy prints C{-} when no flag is set."""
        info = StreamInfo(Clock())
        self.assertEqual(info.responseFlags(), "-")
        self.assertFalse(info.hasResponseFlag(ResponseFlag.NO_ROUTE_FOUND))

    def test_inTheOrderSet(self):
        """
        Envoy 1.40 prints flags in the order they were set: a retry limit
        hit before the failure that ends the request gives C{URX,UF}; a
        flag set twice prints once.
        """
        info = StreamInfo(Clock())
        info.setResponseFlag(ResponseFlag.UPSTREAM_RETRY_LIMIT_EXCEEDED)
        info.setResponseFlag(ResponseFlag.UPSTREAM_CONNECTION_FAILURE)
        info.setResponseFlag(ResponseFlag.UPSTREAM_RETRY_LIMIT_EXCEEDED)
        self.assertEqual(info.responseFlags(), "URX,UF")
        self.assertTrue(info.hasResponseFlag(ResponseFlag.UPSTREAM_CONNECTION_FAILURE))


class TimingTests(SynchronousTestCase):

    def test_durationRunsUntilComplete(self):
        """Durations come from the monotonic clock; C{onComplete} fixes them once."""
        clock = Clock()
        clock.advance(100)
        info = StreamInfo(clock, wallTime=lambda: 1700000000.0)
        self.assertEqual(info.startTime, 1700000000.0)
        clock.advance(1.5)
        self.assertEqual(info.duration(), 1.5)
        info.onComplete()
        clock.advance(3)
        info.onComplete()
        self.assertEqual(info.duration(), 1.5)

    def test_elapsed(self):
        clock = Clock()
        info = StreamInfo(clock)
        clock.advance(2)
        self.assertEqual(info.elapsed(clock.seconds()), 2)
        self.assertIsNone(info.elapsed(None))


class FilterStateTests(SynchronousTestCase):

    def test_readWithoutCreating(self):
        """
        C{filterStateValue} and C{hasFilterState} (read on every proxied
        request) answer without creating the state; C{filterState} makes it.
        """
        info = StreamInfo(Clock())
        self.assertIsNone(info.filterStateValue("envoy.internal_request"))
        self.assertFalse(info.hasFilterState())
        self.assertIsNone(info._filterState)
        info.filterState["envoy.internal_request"] = True
        self.assertTrue(info.hasFilterState())
        self.assertIs(info.filterStateValue("envoy.internal_request"), True)


class ConnectionTests(SynchronousTestCase):

    def test_requestTakesItsConnectionsFacts(self):
        """
        A request's stream info made with its connection's has the
        connection's addresses, id and SNI, and nothing else of it.
        """
        clock = Clock()
        connection = StreamInfo(clock)
        connection.downstreamRemoteAddress = ("10.0.0.1", 4000)
        connection.downstreamDirectRemoteAddress = ("10.0.0.2", 4001)
        connection.downstreamLocalAddress = ("127.0.0.1", 10000)
        connection.connectionId = 7
        connection.requestedServerName = "a.example"
        connection.bytesReceived = 99
        connection.protocol = "HTTP/1.1"
        request = StreamInfo(clock, connection=connection)
        self.assertEqual(
            (request.downstreamRemoteAddress, request.downstreamDirectRemoteAddress,
             request.downstreamLocalAddress, request.connectionId, request.requestedServerName),
            (("10.0.0.1", 4000), ("10.0.0.2", 4001), ("127.0.0.1", 10000), 7, "a.example"))
        self.assertEqual((request.bytesReceived, request.protocol), (0, None))
        plain = StreamInfo(clock)
        self.assertEqual(
            (plain.downstreamRemoteAddress, plain.downstreamDirectRemoteAddress,
             plain.downstreamLocalAddress, plain.connectionId, plain.requestedServerName),
            (None, None, None, 0, ""))

    def test_requestStreamInfoIsTheClassCall(self):
        """
        requestStreamInfo, made without the class call, is what
        C{StreamInfo(clock, connection=...)} makes: every field alike.
        """
        clock = Clock()
        clock.advance(5)
        connection = StreamInfo(clock)
        connection.connectionId = 3
        connection.downstreamRemoteAddress = ("10.0.0.1", 4000)
        made = requestStreamInfo(clock, connection)
        called = StreamInfo(clock, connection=connection)
        self.assertIs(type(made), StreamInfo)
        for name in StreamInfo.__slots__:
            if name in ("__dict__", "__weakref__", "startTime"):
                continue
            self.assertEqual(getattr(made, name), getattr(called, name), name)
