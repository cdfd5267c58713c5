"""
The connection manager under overload actions
(L{txenvoy.http.conn_manager} reading its worker's
L{txenvoy.server.overload_manager.ThreadLocalOverloadState}).
"""

from twisted.trial.unittest import SynchronousTestCase

from tests.http.hcm_harness import Harness
from txenvoy.server.overload_manager import (
    DISABLE_HTTP_KEEPALIVE,
    HTTP_DOWNSTREAM_CONNECTION_IDLE,
    REDUCE_TIMEOUTS,
    STOP_ACCEPTING_REQUESTS,
    OverloadState,
    ThreadLocalOverloadState,
)

GET = b"GET /o/x HTTP/1.1\r\nhost: example.com\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


def overloaded(harness, scaledTimers=None, **values):
    tls = ThreadLocalOverloadState(scaledTimers=scaledTimers)
    tls.setState(OverloadState(values))
    harness.dispatcher.overloadState = tls
    return tls


class OverloadActionTests(SynchronousTestCase):

    def test_stopAcceptingRequests(self):
        """
        Envoy's C{stop_accepting_requests}: 503 C{envoy overloaded} before
        any filter runs (nothing goes upstream), flag C{OM}, details
        C{overload}, counted in C{downstream_rq_overload_close}; the
        connection stays open.
        """
        h = Harness(self)
        overloaded(h, **{STOP_ACCEPTING_REQUESTS: 1.0})
        down = h.connect()
        down.send(GET)
        response = down.response()
        self.assertEqual((response.status, response.body), (503, b"envoy overloaded"))
        self.assertEqual(response.names(), ["content-length", "content-type", "date",
                                            "server"])
        self.assertEqual(h.upstreams(), [])
        self.assertFalse(down.closed)
        self.assertEqual(h.stat("http.ingress.downstream_rq_overload_close"), 1)
        info = h.logger.entries[-1][0]
        self.assertEqual(info.responseCodeDetails, "overload")
        self.assertEqual(info.responseFlags(), "OM")

    def test_disableKeepalive(self):
        """
        C{disable_http_keepalive}: C{connection: close}, counted once in
        C{downstream_cx_overload_disable_keepalive} and (as Envoy 1.40
        does) in C{downstream_cx_drain_close}; the connection closes after
        C{drain_timeout} and the delayed close.
        """
        h = Harness(self, hcm={"drain_timeout": "0.5s", "delayed_close_timeout": "0.3s"})
        overloaded(h, **{DISABLE_HTTP_KEEPALIVE: 1.0})
        down = h.connect()
        down.send(GET)
        h.upstream().respond(OK)
        self.assertEqual(down.response().header("connection"), "close")
        h.advance(0.5)
        h.advance(0.29)
        self.assertFalse(down.closed)
        h.advance(0.02)
        self.assertTrue(down.closed)
        self.assertEqual(h.stat("http.ingress.downstream_cx_overload_disable_keepalive"), 1)
        self.assertEqual(h.stat("http.ingress.downstream_cx_drain_close"), 1)
        self.assertEqual(h.stat("http.ingress.downstream_cx_delayed_close_timeout"), 1)

    def test_notOverloaded(self):
        h = Harness(self)
        overloaded(h)
        down = h.connect()
        down.send(GET)
        h.upstream().respond(OK)
        response = down.response()
        self.assertEqual(response.status, 200)
        self.assertIsNone(response.header("connection"))
        self.assertFalse(down.closed)

    def test_reduceTimeoutsShortensIdleConnections(self):
        """
        C{reduce_timeouts} with C{HTTP_DOWNSTREAM_CONNECTION_IDLE}: when it
        saturates, an idle connection's timeout drops to C{min_timeout},
        counted from when the connection went idle.
        """
        h = Harness(self, hcm={"common_http_protocol_options": {"idle_timeout": "10s"}})
        tls = overloaded(h, scaledTimers={HTTP_DOWNSTREAM_CONNECTION_IDLE: (2.0, None)})
        down = h.connect()
        h.advance(1)
        self.assertFalse(down.closed)
        tls.setState(OverloadState({REDUCE_TIMEOUTS: 0.5}))
        h.advance(4.9)
        self.assertFalse(down.closed)
        h.advance(0.2)
        self.assertTrue(down.closed)
        self.assertEqual(h.stat("http.ingress.downstream_cx_idle_timeout"), 1)

    def test_reduceTimeoutsAlreadySaturatedAtConnect(self):
        """A connection made while C{reduce_timeouts} is saturated gets the short timeout."""
        h = Harness(self, hcm={"common_http_protocol_options": {"idle_timeout": "10s"}})
        overloaded(h, scaledTimers={HTTP_DOWNSTREAM_CONNECTION_IDLE: (2.0, None)},
                   **{REDUCE_TIMEOUTS: 1.0})
        down = h.connect()
        h.advance(1.9)
        self.assertFalse(down.closed)
        h.advance(0.2)
        self.assertTrue(down.closed)
