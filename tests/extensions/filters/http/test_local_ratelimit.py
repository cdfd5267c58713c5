"""
Tests for L{txenvoy.extensions.filters.http.local_ratelimit}.

Replies and stats were observed on Envoy 1.40 with
C{04-local-ratelimit.yaml} (2 tokens per 5 s on the connection manager),
C{11-http-filters.yaml} (an empty filter, enabled on C{/limited} through
C{typed_per_filter_config}) and a route config that is enabled but not
enforced, with C{request_headers_to_add_when_not_enforced}.
"""

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from txenvoy.config.errors import ConfigError, UnsupportedField
from txenvoy.extensions.filters.http.local_ratelimit import (
    AtomicTokenBucket,
    LocalRateLimitConfig,
)
from txenvoy.http.filter import FilterHeadersStatus
from txenvoy.interfaces import IHttpFilterFactory
from txenvoy.stats.store import StatsStore

from tests.extensions.filters.http.fakes import (
    LOCAL_RATELIMIT,
    FakeCallbacks,
    FakeServer,
    compileFilter,
    makeContext,
    request,
    roles,
    routeFor,
    routeTable,
    runtimeWith,
)
from tests.http.hcm_harness import ROUTER, Harness

EXAMPLE_04 = """
stat_prefix: http_local_rate_limiter
token_bucket: {max_tokens: 2, tokens_per_fill: 2, fill_interval: 5s}
filter_enabled:
  runtime_key: local_rate_limit_enabled
  default_value: {numerator: 100, denominator: HUNDRED}
filter_enforced:
  runtime_key: local_rate_limit_enforced
  default_value: {numerator: 100, denominator: HUNDRED}
response_headers_to_add:
- append_action: OVERWRITE_IF_EXISTS_OR_ADD
  header: {key: x-local-rate-limit, value: 'true'}
local_rate_limit_per_downstream_connection: false
"""

LR_TYPE = "type.googleapis.com/" + LOCAL_RATELIMIT
ROUTES_11 = """
virtual_hosts:
- name: all
  domains: ["*"]
  routes:
  - match: {prefix: "/limited"}
    route: {cluster: backend}
    typed_per_filter_config:
      envoy.filters.http.local_ratelimit:
        "@type": %s
        stat_prefix: route_rl
        token_bucket: {max_tokens: 10, tokens_per_fill: 10, fill_interval: 1s}
        filter_enabled: {default_value: {numerator: 100, denominator: HUNDRED}}
        filter_enforced: {default_value: {numerator: 100, denominator: HUNDRED}}
        response_headers_to_add:
        - header: {key: x-local-rate-limit, value: "true"}
          append_action: OVERWRITE_IF_EXISTS_OR_ADD
  - match: {prefix: "/shadow"}
    route: {cluster: backend}
    typed_per_filter_config:
      envoy.filters.http.local_ratelimit:
        "@type": %s
        stat_prefix: rl4
        status: {code: OK}
        token_bucket: {max_tokens: 1, tokens_per_fill: 1, fill_interval: 60s}
        filter_enabled: {default_value: {numerator: 100}}
        filter_enforced: {default_value: {numerator: 0}}
        request_headers_to_add_when_not_enforced:
        - header: {key: x-shadow-rl, value: "yes"}
  - match: {prefix: "/broken"}
    route: {cluster: backend}
    typed_per_filter_config:
      envoy.filters.http.local_ratelimit:
        "@type": %s
        stat_prefix: broken
        filter_enabled: {default_value: {numerator: 100}}
  - match: {prefix: "/"}
    route: {cluster: backend}
""" % (LR_TYPE, LR_TYPE, LR_TYPE)


class Setup:
    def build(self, text, runtime=None):
        self.store = StatsStore()
        return compileFilter(LOCAL_RATELIMIT, text, makeContext(
            store=self.store, server=FakeServer(self.store), runtime=runtime))

    def go(self, config, path="/", route=None, headers=(), connection=None):
        callbacks = FakeCallbacks(store=self.store, clock=self.clock, route=route,
                                  filterConfigName="envoy.filters.http.local_ratelimit",
                                  connection=connection)
        f = config.createFilter(callbacks)
        head = request("GET", path, headers)
        status = f.decodeHeaders(head, True)
        return callbacks, status, head

    def stats(self, prefix):
        counters = self.store.snapshot().counters
        p = prefix + ".http_local_rate_limit."
        return {n[len(p):]: v for n, v in counters.items() if n.startswith(p)}

    def used(self, prefix):
        return {n: v for n, v in self.stats(prefix).items() if v}

    def setUp(self):
        from twisted.internet.task import Clock
        self.clock = Clock()
        self.clock.advance(1000)


class FilterTests(Setup, SynchronousTestCase):

    def test_factory(self):
        config = self.build(EXAMPLE_04)
        self.assertIsInstance(config, LocalRateLimitConfig)
        self.assertTrue(verifyObject(IHttpFilterFactory, config))
        self.assertEqual(roles(config.createFilter(FakeCallbacks())), (True, False))

    def test_statsAtZero(self):
        """Envoy's five counters, not under C{http.}, at zero from the start."""
        self.build(EXAMPLE_04)
        self.assertEqual(self.stats("http_local_rate_limiter"),
                         {"enabled": 0, "enforced": 0, "ok": 0, "rate_limited": 0,
                          "shadow_mode": 0})

    def test_example04(self):
        """
        04-local-ratelimit.yaml: two requests pass, the third gets Envoy's
        429 C{local_rate_limited} with C{x-local-rate-limit: true}, details
        C{local_rate_limited}, flag C{RL}.
        """
        config = self.build(EXAMPLE_04)
        for _ in range(2):
            callbacks, status, _ = self.go(config)
            self.assertEqual(status, FilterHeadersStatus.Continue)
        callbacks, status, _ = self.go(config)
        self.assertEqual(status, FilterHeadersStatus.StopIteration)
        [reply] = callbacks.localReplies
        self.assertEqual((reply.code, reply.body, reply.details, reply.flags),
                         (429, b"local_rate_limited", "local_rate_limited", "RL"))
        self.assertEqual(reply.headers.headers.items(), [(b"x-local-rate-limit", b"true")])
        self.assertEqual(self.stats("http_local_rate_limiter"),
                         {"enabled": 3, "enforced": 1, "ok": 2, "rate_limited": 1,
                          "shadow_mode": 0})

    def test_refillsContinuously(self):
        """
        Envoy 1.40's bucket refills continuously: 2 tokens per 5 s is one
        token every 2.5 s, not two at once every 5 s.
        """
        config = self.build(EXAMPLE_04)
        self.go(config)
        self.go(config)
        self.clock.advance(2.4)
        self.assertEqual(self.go(config)[1], FilterHeadersStatus.StopIteration)
        self.clock.advance(0.1)
        self.assertEqual(self.go(config)[1], FilterHeadersStatus.Continue)
        self.assertEqual(self.go(config)[1], FilterHeadersStatus.StopIteration)

    def test_offByDefault(self):
        """Without C{filter_enabled} the filter does nothing (Envoy's default 0%)."""
        config = self.build("stat_prefix: x\ntoken_bucket: {max_tokens: 1, fill_interval: 1s}")
        for _ in range(5):
            self.assertEqual(self.go(config)[1], FilterHeadersStatus.Continue)
        self.assertEqual(self.stats("x")["enabled"], 0)

    def test_runtimeKeys(self):
        """C{filter_enabled.runtime_key} is read per request."""
        runtime = runtimeWith({"local_rate_limit_enabled": 0})
        config = self.build(EXAMPLE_04, runtime=runtime)
        for _ in range(3):
            self.assertEqual(self.go(config)[1], FilterHeadersStatus.Continue)
        runtime.mergeValues({"local_rate_limit_enabled": "100",
                             "local_rate_limit_enforced": "0"})
        for _ in range(3):
            self.assertEqual(self.go(config)[1], FilterHeadersStatus.Continue)
        self.assertEqual(self.stats("http_local_rate_limiter")["rate_limited"], 1)

    def test_noTokenBucket(self):
        """Enabled without a token bucket: everything is allowed (and counted ok)."""
        config = self.build("stat_prefix: x\nfilter_enabled: {default_value: {numerator: 100}}")
        self.go(config)
        self.assertEqual(self.stats("x")["ok"], 1)

    def test_status(self):
        """C{status} below 400 gives 429, as Envoy's C{toErrorCode}."""
        text = EXAMPLE_04.replace("max_tokens: 2", "max_tokens: 1")
        config = self.build(text + "status: {code: ServiceUnavailable}")
        self.go(config)
        self.assertEqual(self.go(config)[0].localReplies[0].code, 503)
        config = self.build(text + "status: {code: OK}")
        self.go(config)
        self.assertEqual(self.go(config)[0].localReplies[0].code, 429)

    def test_perConnection(self):
        """C{local_rate_limit_per_downstream_connection}: a bucket per connection."""
        config = self.build(EXAMPLE_04.replace("per_downstream_connection: false",
                                               "per_downstream_connection: true"))
        first = FakeCallbacks(clock=self.clock).connection
        second = FakeCallbacks(clock=self.clock).connection
        for connection in (first, first, second, second):
            self.assertEqual(self.go(config, connection=connection)[1],
                             FilterHeadersStatus.Continue)
        self.assertEqual(self.go(config, connection=first)[1], FilterHeadersStatus.StopIteration)
        self.assertIsInstance(first.streamInfo.filterState["per_connection_local_rate_limiter"],
                              AtomicTokenBucket)

    def test_validation(self):
        e = self.assertRaises(ConfigError, self.build, "token_bucket: {max_tokens: 1}")
        self.assertIn("StatPrefix", str(e))
        e = self.assertRaises(ConfigError, self.build,
                              "stat_prefix: x\ntoken_bucket: {max_tokens: 1, fill_interval: 0.01s}")
        self.assertIn("fill timer must be >= 50ms", str(e))
        e = self.assertRaises(UnsupportedField, self.build,
                              "stat_prefix: x\ndescriptors: [{entries: [{key: a, value: b}], "
                              "token_bucket: {max_tokens: 1, fill_interval: 1s}}]")
        self.assertIn("typed_config.descriptors", str(e))
        self.assertRaises(UnsupportedField, self.build,
                          "stat_prefix: x\nenable_x_ratelimit_headers: DRAFT_VERSION_03")


class PerRouteTests(Setup, SynchronousTestCase):

    def setUp(self):
        Setup.setUp(self)
        self.table = routeTable(ROUTES_11)
        self.config = self.build("stat_prefix: http_local_rate_limiter")

    def route(self, path):
        return routeFor(self.table, path.encode("ascii"))

    def test_example11(self):
        """
        11-http-filters.yaml: the empty filter leaves C{/} alone; C{/limited}
        uses the route's config, bucket and stats (C{route_rl.*}).
        """
        for _ in range(20):
            self.assertEqual(self.go(self.config, "/", self.route("/"))[1],
                             FilterHeadersStatus.Continue)
        results = [self.go(self.config, "/limited", self.route("/limited"))[1]
                   for _ in range(11)]
        self.assertEqual(results.count(FilterHeadersStatus.StopIteration), 1)
        self.assertEqual(self.used("route_rl"), {"enabled": 11, "enforced": 1, "ok": 10,
                                                 "rate_limited": 1})
        self.assertEqual(self.stats("http_local_rate_limiter")["enabled"], 0)

    def test_routeBucketShared(self):
        """Every request of the route (every route match) shares one bucket."""
        for _ in range(10):
            self.go(self.config, "/limited", self.route("/limited"))
        self.assertEqual(self.go(self.config, "/limited", self.route("/limited"))[1],
                         FilterHeadersStatus.StopIteration)

    def test_notEnforced(self):
        """
        Limited but not enforced: the request goes on with
        C{request_headers_to_add_when_not_enforced} (Envoy appended them).
        """
        callbacks, status, head = self.go(self.config, "/shadow", self.route("/shadow"))
        self.assertIsNone(head.headers.get(b"x-shadow-rl"))
        callbacks, status, head = self.go(self.config, "/shadow", self.route("/shadow"),
                                          headers=[("x-request-id", "1")])
        self.assertEqual(status, FilterHeadersStatus.Continue)
        self.assertEqual(head.headers.items(), [(b"x-request-id", b"1"),
                                                (b"x-shadow-rl", b"yes")])
        self.assertEqual(self.used("rl4"), {"enabled": 2, "ok": 1, "rate_limited": 1})

    def test_routeWithoutBucketIgnored(self):
        """
        Envoy refuses a route config without a token bucket; here it is
        logged and the filter's own config applies.
        """
        callbacks, status, _ = self.go(self.config, "/broken", self.route("/broken"))
        self.assertEqual(status, FilterHeadersStatus.Continue)
        self.assertEqual(self.stats("broken"), {})


class AtomicTokenBucketTests(SynchronousTestCase):

    def test_startsFull(self):
        bucket = AtomicTokenBucket(3, 1.0)
        self.assertEqual([bucket.consume(10.0) for _ in range(4)], [True, True, True, False])

    def test_fractionalRefill(self):
        bucket = AtomicTokenBucket(1, 2.0)
        self.assertTrue(bucket.consume(10.0))
        self.assertFalse(bucket.consume(10.4))
        self.assertTrue(bucket.consume(10.5))

    def test_capped(self):
        bucket = AtomicTokenBucket(2, 100.0)
        bucket.consume(0.0)
        self.assertEqual(bucket.remaining(1000.0), 2)


class ThroughConnectionManagerTests(SynchronousTestCase):

    def test_429Wire(self):
        """Envoy 1.40's 429 with 04-local-ratelimit.yaml, header for header."""
        import yaml
        typed = yaml.safe_load(EXAMPLE_04)
        typed["@type"] = LR_TYPE
        h = Harness(self, routes='[{match: {prefix: "/"}, route: {cluster: origin}}]',
                    filters=[{"name": "envoy.filters.http.local_ratelimit",
                              "typed_config": typed}, ROUTER])
        h.advance(100)
        down = h.connect()
        up = None
        for _ in range(2):
            down.send(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            up = up or h.upstream()
            up.respond(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            self.assertEqual(down.response().status, 200)
        down.send(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        r = down.response()
        self.assertEqual((r.status, r.body), (429, b"local_rate_limited"))
        self.assertEqual(r.names(), ["x-local-rate-limit", "content-length", "content-type",
                                     "date", "server"])
        self.assertTrue(r.raw.startswith(b"HTTP/1.1 429 Too Many Requests\r\n"))
        self.assertEqual(h.stat("http_local_rate_limiter.http_local_rate_limit.enforced"), 1)
