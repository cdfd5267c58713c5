"""
Tests for L{txenvoy.extensions.filters.http.health_check}.

Replies, headers and stats were observed on Envoy 1.40 with
C{11-http-filters.yaml} (non pass-through, C{:path} exact C{/healthz}) and
a pass-through config with C{cache_time: 2s} and C{node.cluster:
mycluster}, before and after C{POST /healthcheck/fail}.
"""

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from txenvoy.config.errors import ConfigError, UnsupportedField
from txenvoy.extensions.filters.http.health_check import HealthCheckCache, HealthCheckConfig
from txenvoy.http.filter import FilterDataStatus, FilterHeadersStatus, FilterTrailersStatus
from txenvoy.interfaces import IHttpFilterFactory, IStreamDecoderFilter, IStreamEncoderFilter
from txenvoy.stats.store import StatsStore

from tests.extensions.filters.http.fakes import (
    HEALTH_CHECK,
    FakeCallbacks,
    FakeServer,
    compileFilter,
    makeContext,
    request,
    response,
    roles,
)
from tests.http.hcm_harness import ROUTER, Harness

EXAMPLE_11 = """
pass_through_mode: false
headers:
- name: ":path"
  string_match: {exact: "/healthz"}
"""
PASS_THROUGH = """
pass_through_mode: true
cache_time: 2s
headers:
- name: ":path"
  string_match: {prefix: "/hc"}
"""
P = "http.ingress_http.health_check."


class Setup:
    def build(self, text, cluster=""):
        self.store = StatsStore()
        self.server = FakeServer(self.store, cluster)
        return compileFilter(HEALTH_CHECK, text, makeContext(store=self.store,
                                                             server=self.server))

    def go(self, config, path="/healthz", endStream=True, method="GET"):
        callbacks = FakeCallbacks(store=self.store, clock=getattr(self, "clock", None))
        f = config.createFilter(callbacks)
        status = f.decodeHeaders(request(method, path), endStream)
        return f, callbacks, status

    def stats(self):
        counters = self.store.snapshot().counters
        return {name[len(P):]: value for name, value in counters.items()
                if name.startswith(P) and value}


class CompileTests(Setup, SynchronousTestCase):

    def test_factory(self):
        config = self.build(EXAMPLE_11)
        self.assertIsInstance(config, HealthCheckConfig)
        self.assertTrue(verifyObject(IHttpFilterFactory, config))
        f, _, _ = self.go(config)
        self.assertTrue(verifyObject(IStreamDecoderFilter, f))
        self.assertTrue(verifyObject(IStreamEncoderFilter, f))
        # It marks every response while the server fails its health check.
        self.assertEqual(roles(f), (True, True))

    def test_passThroughRequired(self):
        e = self.assertRaises(ConfigError, self.build, "headers: []")
        self.assertIn("HealthCheckValidationError.PassThroughMode: value is required", str(e))

    def test_cacheTimeNeedsPassThrough(self):
        e = self.assertRaises(ConfigError, self.build,
                              "pass_through_mode: false\ncache_time: 1s")
        self.assertIn("cache_time_ms must not be set when path_through_mode is disabled", str(e))

    def test_clusterPercentages(self):
        """Honoured by Envoy only without pass-through; not implemented here."""
        self.assertRaises(UnsupportedField, self.build,
                          "pass_through_mode: false\n"
                          "cluster_min_healthy_percentages: {backend: {value: 50}}")
        self.build("pass_through_mode: true\n"
                   "cluster_min_healthy_percentages: {backend: {value: 50}}")

    def test_statsAtZero(self):
        """Envoy shows every C{http.<prefix>.health_check.*} counter from the start."""
        self.build(EXAMPLE_11)
        names = sorted(n[len(P):] for n in self.store.snapshot().counters if n.startswith(P))
        self.assertEqual(names, ["cached_response", "degraded", "failed", "failed_cluster_empty",
                                 "failed_cluster_not_found", "failed_cluster_unhealthy", "ok",
                                 "request_total"])


class AnswerTests(Setup, SynchronousTestCase):

    def test_answered(self):
        """
        Envoy's answer: 200, empty body, details C{health_check_ok}, and
        C{x-envoy-upstream-healthchecked-cluster: <node.cluster>} (empty
        without one).
        """
        config = self.build(EXAMPLE_11)
        f, callbacks, status = self.go(config)
        self.assertEqual(status, FilterHeadersStatus.StopIteration)
        [reply] = callbacks.localReplies
        self.assertEqual((reply.code, reply.body, reply.details, reply.flags),
                         (200, b"", "health_check_ok", "-"))
        self.assertTrue(callbacks.streamInfo.healthCheck)
        head = response(200)
        f.encodeHeaders(head, True)
        self.assertEqual(head.headers.items(),
                         [(b"x-envoy-upstream-healthchecked-cluster", b"")])
        self.assertEqual(self.stats(), {"request_total": 1, "ok": 1})

    def test_clusterName(self):
        config = self.build(EXAMPLE_11, cluster="mycluster")
        f, _, _ = self.go(config)
        head = response(200)
        f.encodeHeaders(head, True)
        self.assertEqual(head.headers.get(b"x-envoy-upstream-healthchecked-cluster"),
                         b"mycluster")

    def test_otherRequests(self):
        config = self.build(EXAMPLE_11)
        f, callbacks, status = self.go(config, "/healthz/x")
        self.assertEqual(status, FilterHeadersStatus.Continue)
        self.assertEqual(f.decodeData(b"x", True), FilterDataStatus.Continue)
        head = response(200)
        f.encodeHeaders(head, False)
        self.assertEqual(head.headers.items(), [])
        self.assertFalse(getattr(callbacks.streamInfo, "healthCheck", False))
        self.assertEqual(self.stats(), {})

    def test_bodyFirst(self):
        """With a body, the answer comes at the end of the request."""
        config = self.build(EXAMPLE_11)
        f, callbacks, status = self.go(config, endStream=False)
        self.assertEqual(status, FilterHeadersStatus.StopIteration)
        self.assertEqual(callbacks.localReplies, [])
        self.assertEqual(f.decodeData(b"x", False), FilterDataStatus.StopIterationNoBuffer)
        self.assertEqual(f.decodeTrailers(object()), FilterTrailersStatus.StopIteration)
        self.assertEqual(callbacks.localReplies[0].code, 200)

    def test_failed(self):
        """
        After C{POST /healthcheck/fail}: 503, details C{health_check_failed},
        flag C{LH}; every response gets
        C{x-envoy-immediate-health-check-fail: true}, after the cluster header.
        """
        config = self.build(EXAMPLE_11)
        self.server.healthCheckFailed = True
        f, callbacks, _ = self.go(config)
        [reply] = callbacks.localReplies
        self.assertEqual((reply.code, reply.details, reply.flags),
                         (503, "health_check_failed", "LH"))
        head = response(503)
        f.encodeHeaders(head, True)
        self.assertEqual(head.headers.items(),
                         [(b"x-envoy-upstream-healthchecked-cluster", b""),
                          (b"x-envoy-immediate-health-check-fail", b"true")])
        other, _, _ = self.go(config, "/")
        head = response(200, [("content-type", "text/plain")])
        other.encodeHeaders(head, False)
        self.assertEqual(head.headers.items(),
                         [(b"content-type", b"text/plain"),
                          (b"x-envoy-immediate-health-check-fail", b"true")])
        self.assertEqual(self.stats(), {"request_total": 1, "failed": 1})


class PassThroughTests(Setup, SynchronousTestCase):

    def setUp(self):
        from twisted.internet.task import Clock
        self.clock = Clock()

    def test_forwarded(self):
        """A health check goes on; its response is marked; nothing is counted."""
        config = self.build(PASS_THROUGH, cluster="mycluster")
        f, callbacks, status = self.go(config, "/hc")
        self.assertEqual(status, FilterHeadersStatus.Continue)
        head = response(200, [("content-type", "application/json")])
        f.encodeHeaders(head, False)
        self.assertEqual(head.headers.items()[-1],
                         (b"x-envoy-upstream-healthchecked-cluster", b"mycluster"))
        self.assertEqual(self.stats(), {})

    def test_cached(self):
        """
        Within C{cache_time} the upstream's answer is given here: Envoy
        counted C{request_total}, C{ok} and C{cached_response} once.
        """
        config = self.build(PASS_THROUGH)
        f, _, _ = self.go(config, "/hc")
        f.encodeHeaders(response(200), False)
        f, callbacks, status = self.go(config, "/hc2")
        self.assertEqual(status, FilterHeadersStatus.StopIteration)
        [reply] = callbacks.localReplies
        self.assertEqual((reply.code, reply.details), (200, "health_check_cached"))
        self.assertEqual(self.stats(), {"request_total": 1, "ok": 1, "cached_response": 1})

    def test_cachedFailure(self):
        config = self.build(PASS_THROUGH)
        f, _, _ = self.go(config, "/hc")
        f.encodeHeaders(response(503, [("x-envoy-degraded", "")]), False)
        f, callbacks, _ = self.go(config, "/hc")
        [reply] = callbacks.localReplies
        self.assertEqual((reply.code, reply.flags), (503, "LH"))
        self.assertEqual(reply.header("x-envoy-degraded"), b"")
        self.assertEqual(self.stats(), {"request_total": 1, "failed": 1,
                                        "cached_response": 1, "degraded": 1})

    def test_cacheExpires(self):
        """Envoy forgets the answer every C{cache_time}."""
        config = self.build(PASS_THROUGH)
        f, _, _ = self.go(config, "/hc")
        f.encodeHeaders(response(200), False)
        self.clock.advance(2.0)
        _, _, status = self.go(config, "/hc")
        self.assertEqual(status, FilterHeadersStatus.Continue)

    def test_failedIsAnswered(self):
        """In pass-through mode a failed server still answers 503 itself."""
        config = self.build(PASS_THROUGH)
        self.server.healthCheckFailed = True
        _, callbacks, status = self.go(config, "/hc")
        self.assertEqual(status, FilterHeadersStatus.StopIteration)
        self.assertEqual(callbacks.localReplies[0].code, 503)


class CacheTests(SynchronousTestCase):

    def test_windows(self):
        cache = HealthCheckCache(2.0)
        self.assertFalse(cache.useCachedResponse(100.0))
        cache.setCachedResponse(200, False, 100.5)
        self.assertTrue(cache.useCachedResponse(101.9))
        self.assertFalse(cache.useCachedResponse(102.0))


class ThroughConnectionManagerTests(SynchronousTestCase):
    """Envoy 1.40's bytes for C{GET /healthz} with 11-http-filters.yaml."""

    def test_wire(self):
        h = Harness(self, routes='[{match: {prefix: "/"}, route: {cluster: origin}}]',
                    filters=[{"name": "envoy.filters.http.health_check", "typed_config": {
                        "@type": "type.googleapis.com/" + HEALTH_CHECK,
                        "pass_through_mode": False,
                        "headers": [{"name": ":path", "string_match": {"exact": "/healthz"}}]}},
                        ROUTER])
        down = h.connect()
        down.send(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        r = down.response()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.names(), ["x-envoy-upstream-healthchecked-cluster", "date", "server",
                                     "content-length"])
        self.assertEqual(r.header("content-length"), "0")
        self.assertEqual(h.upstreams(), [])
