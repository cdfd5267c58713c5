"""
Tests for the cluster circuit breakers as the HTTP pool and router enforce
them (L{txenvoy.http.conn_pool}, L{txenvoy.router.router},
L{txenvoy.upstream.resource_manager}), in memory. What the client sees and
the stat names were checked against Envoy 1.40 (tests.e2e.test_circuit_breakers).
"""

from twisted.trial.unittest import SynchronousTestCase

from txenvoy.http.conn_pool import poolsFor
from txenvoy.testing import FakeDispatcher, clusterProto, endpoint

from tests.http.hcm_harness import Harness

ROUTES = """
- match: {prefix: "/high/"}
  route: {cluster: origin, priority: HIGH}
- match: {prefix: "/retry/"}
  route:
    cluster: origin
    retry_policy: {retry_on: 5xx, num_retries: 3}
- match: {prefix: "/"}
  route: {cluster: origin}
"""
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy"
OVERFLOW_BODY = (b"upstream connect error or disconnect/reset before headers. "
                 b"reset reason: overflow")
CB = "cluster.origin.circuit_breakers."


def get(path):
    return b"GET %s HTTP/1.1\r\nhost: example.com\r\n\r\n" % (path,)


class CircuitBreakerTests(SynchronousTestCase):

    def harness(self, *thresholds, hosts=1, perHost=()):
        breakers = {"thresholds": list(thresholds)}
        if perHost:
            breakers["per_host_thresholds"] = list(perHost)
        cluster = clusterProto(
            "origin", [endpoint("127.0.0.1", 8080 + i) for i in range(hosts)],
            connect_timeout="1s", circuit_breakers=breakers)
        self.h = Harness(self, routes=ROUTES, clusters=[cluster])
        return self.h

    def send(self, path=b"/x"):
        down = self.h.connect()
        down.send(get(path))
        return down

    def assertOverflow(self, down):
        """Envoy 1.40's answer to a request the breakers turn away."""
        r = down.response()
        self.assertEqual((r.status, r.body), (503, OVERFLOW_BODY))
        self.assertEqual(r.header("x-envoy-overloaded"), "true")

    def test_maxConnections(self):
        """
        Past max_connections no connection is opened
        (C{upstream_cx_overflow}, C{cx_open} 1): the second request waits
        and is served on the first connection once it is free.
        """
        h = self.harness({"max_connections": 1})
        a = self.send()
        up = h.upstream()
        b = self.send()
        self.assertEqual(len(h.upstreams()), 1)
        self.assertEqual(h.stat("cluster.origin.upstream_cx_overflow"), 1)
        self.assertEqual(h.stat(CB + "default.cx_open"), 1)
        up.respond(OK)
        self.assertEqual(a.response().status, 200)
        up.respond(OK)
        self.assertEqual(b.response().status, 200)
        self.assertEqual(len(h.upstreams()), 1)

    def test_perHostMaxConnections(self):
        """
        Envoy's canCreateConnection: past a host's per_host_thresholds
        max_connections no connection is opened to it
        (C{upstream_cx_overflow}) while the cluster's limit still allows
        one; the waiting request is served on the host's connection. The
        HIGH priority's per-host limit is its own.
        """
        h = self.harness(perHost=[{"max_connections": 1},
                                  {"priority": "HIGH", "max_connections": 2}])
        a = self.send()
        up = h.upstream()
        b = self.send()
        self.assertEqual(len(h.upstreams()), 1)
        self.assertEqual(h.stat("cluster.origin.upstream_cx_overflow"), 1)
        self.assertEqual(h.stat(CB + "default.cx_open"), 0)
        up.respond(OK)
        self.assertEqual(a.response().status, 200)
        up.respond(OK)
        self.assertEqual(b.response().status, 200)
        self.send(b"/high/x")
        self.send(b"/high/y")
        self.assertEqual(len(h.upstreams()), 2)
        self.assertEqual(h.stat("cluster.origin.upstream_cx_overflow"), 2)

    def test_maxPendingRequests(self):
        """
        Envoy 1.40: past max_pending_requests, 503 with
        C{x-envoy-overloaded: true}, the overflow body and flag C{UO};
        C{upstream_rq_pending_overflow} and C{rq_pending_open} count it.
        """
        h = self.harness({"max_connections": 1, "max_pending_requests": 1})
        a = self.send()
        self.assertEqual(h.stat(CB + "default.rq_pending_open"), 1)
        b = self.send()
        self.assertOverflow(b)
        self.assertEqual(h.logger.entries[0][0].responseFlags(), "UO")
        self.assertEqual(h.stat("cluster.origin.upstream_rq_pending_overflow"), 1)
        h.upstream().respond(OK)
        self.assertEqual(a.response().status, 200)
        self.assertEqual(h.stat(CB + "default.rq_pending_open"), 0)

    def test_maxRequests(self):
        """
        Envoy 1.40: past max_requests a request handed a connection fails
        as an overflow, counted as C{upstream_rq_active_overflow}; the
        connection it was given stays in the pool.
        """
        h = self.harness({"max_requests": 1})
        a = self.send()
        first = h.upstream()
        self.assertEqual(h.stat(CB + "default.rq_open"), 1)
        b = self.send()
        h.upstream()
        self.assertOverflow(b)
        self.assertEqual(h.stat("cluster.origin.upstream_rq_active_overflow"), 1)
        self.assertEqual(h.stat("cluster.origin.upstream_rq_pending_overflow"), 0)
        first.respond(OK)
        self.assertEqual(a.response().status, 200)
        self.assertEqual(h.stat(CB + "default.rq_open"), 0)
        c = self.send()
        self.assertEqual(len(h.upstreams()), 2)
        first.respond(OK)
        self.assertEqual(c.response().status, 200)

    def test_maxRetries(self):
        """
        Envoy 1.40: past max_retries the retry is not made
        (C{upstream_rq_retry_overflow}, flag C{UO}) and the client gets the
        upstream's own answer; the retry in progress holds
        C{rq_retry_open}.
        """
        h = self.harness({"max_retries": 1})
        h.config.filterFactories[-1][1].rng = lambda: 0.5
        a = self.send(b"/retry/a")
        upA = h.upstream()
        b = self.send(b"/retry/b")
        upB = h.upstream()
        upA.respond(UNAVAILABLE)
        self.assertEqual(h.stat(CB + "default.rq_retry_open"), 1)
        upB.respond(UNAVAILABLE)
        r = b.response()
        self.assertEqual((r.status, r.body), (503, b"busy"))
        self.assertIsNone(r.header("x-envoy-overloaded"))
        self.assertEqual(h.stat("cluster.origin.upstream_rq_retry_overflow"), 1)
        self.assertIn("UO", h.logger.entries[0][0].responseFlags())
        h.advance(1)
        # The retry goes out on the most recently freed connection.
        self.assertIn(b"GET /retry/a", upB.received())
        upB.respond(OK)
        self.assertEqual(a.response().status, 200)
        self.assertEqual(h.stat(CB + "default.rq_retry_open"), 0)
        self.assertEqual(poolsFor(h.dispatcher.clusterManager.getThreadLocalCluster(
            "origin")).retries.current, 0)

    def test_maxConnectionPools(self):
        """
        Past max_connection_pools a host without a pool gets none
        (C{upstream_cx_pool_overflow}, C{cx_pool_open}) and the client
        Envoy's C{no healthy upstream} 503.
        """
        h = self.harness({"max_connection_pools": 1}, hosts=2)
        a = self.send()
        b = self.send()
        r = b.response()
        self.assertEqual((r.status, r.body), (503, b"no healthy upstream"))
        self.assertEqual(h.stat("cluster.origin.upstream_cx_pool_overflow"), 1)
        self.assertEqual(h.stat(CB + "default.cx_pool_open"), 1)
        up = h.upstream()
        up.respond(OK)
        self.assertEqual(a.response().status, 200)
        self.assertEqual(h.stat(CB + "default.cx_pool_open"), 1)
        # Envoy drops a pool left with no connection, and its slot with it.
        up.close()
        self.assertEqual(h.stat(CB + "default.cx_pool_open"), 0)
        c = self.send()
        h.upstream().respond(OK)
        self.assertEqual(c.response().status, 200)

    def test_priorities(self):
        """A HIGH route counts against the HIGH thresholds only."""
        h = self.harness({"max_connections": 1},
                         {"priority": "HIGH", "max_connections": 1, "max_pending_requests": 1})
        self.send()
        self.send(b"/high/x")
        self.assertEqual(len(h.upstreams()), 2)
        self.assertEqual(h.stat(CB + "default.cx_open"), 1)
        self.assertEqual(h.stat(CB + "high.cx_open"), 1)
        self.assertEqual(h.stat("cluster.origin.upstream_cx_overflow"), 0)
        self.assertOverflow(self.send(b"/high/y"))
        self.assertEqual(h.stat(CB + "high.rq_pending_open"), 1)
        self.assertEqual(h.stat(CB + "default.rq_pending_open"), 0)

    def test_trackRemaining(self):
        """With track_remaining, C{remaining_*} gauges; without, none."""
        h = self.harness({"max_connections": 3, "max_pending_requests": 5, "max_requests": 7,
                          "max_retries": 2, "max_connection_pools": 4,
                          "track_remaining": True})
        self.send()
        gauges = h.store.snapshot().gauges
        self.assertEqual(
            {k[len(CB):]: v for k, v in gauges.items() if k.startswith(CB + "default.rem")},
            {"default.remaining_cx": 2, "default.remaining_pending": 4,
             "default.remaining_rq": 7, "default.remaining_retries": 2,
             "default.remaining_cx_pools": 3})
        self.assertNotIn(CB + "high.remaining_cx", gauges)
        self.assertEqual(gauges[CB + "high.cx_open"], 0)

    def test_sharedAcrossWorkers(self):
        """
        One count per cluster, not per worker: a connection opened by one
        worker leaves none for another under C{max_connections: 1}.
        """
        h = self.harness({"max_connections": 1, "max_pending_requests": 1})
        self.send()
        other = FakeDispatcher(h.reactor, "worker_1", h.store)
        tlc = h.clusterManager.createThreadLocal(other).getThreadLocalCluster("origin")
        pools = poolsFor(tlc)
        self.assertIs(pools.connections, poolsFor(
            h.dispatcher.clusterManager.getThreadLocalCluster("origin")).connections)
        events = []

        class Callbacks:
            def onPoolReady(self, client):
                events.append("ready")

            def onPoolFailure(self, reason):
                events.append(reason)

        pool = pools.poolFor(tlc.chooseHost())
        pool.newStream(Callbacks())
        self.assertEqual(events, ["overflow"])
        self.assertEqual(h.stat("cluster.origin.upstream_rq_pending_overflow"), 1)
