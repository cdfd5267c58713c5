"""
Tests for L{txenvoy.extensions.filters.network.local_ratelimit} on a fake
clock and fake transports.

Behaviours were observed on Envoy 1.40 with C{10-network-filters.yaml}
(C{max_tokens: 5, tokens_per_fill: 5, fill_interval: 1s}) at
C{--concurrency 2}, and with C{max_tokens: 2, tokens_per_fill: 1,
fill_interval: 0.5s}.
"""

from envoy.extensions.filters.network.local_ratelimit.v3 import local_rate_limit_pb2
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from txenvoy.config import registry
from txenvoy.config.context import FactoryContext
from txenvoy.config.errors import ConfigError
from txenvoy.config.loader import parseDict, parseYaml
from txenvoy.extensions.filters.network.local_ratelimit import (
    LocalRateLimitConfig, TokenBucket, createLocalRateLimit)
from txenvoy.interfaces import INetworkFilterFactory
from txenvoy.server.dispatcher import Dispatcher
from txenvoy.stats.store import StatsStore
from txenvoy.testing import FakeNetworkConnection, FakeServer
from txenvoy.testing import RecordingProtocol as Recorder

PATH = "static_resources.listeners[2].filter_chains[0].filters[0]"

EXAMPLE = """
stat_prefix: tcp_rl
token_bucket: {max_tokens: 5, tokens_per_fill: 5, fill_interval: 1s}
"""


def compile(text, context=None):
    message = parseDict(parseYaml(text), local_rate_limit_pb2.LocalRateLimit())
    if context is None:
        context = FactoryContext(Clock(), StatsStore(), path=PATH)
    return createLocalRateLimit(message, context)


class TokenBucketTests(SynchronousTestCase):

    def test_startsFull(self):
        bucket = TokenBucket(3, 1, 1.0)
        self.assertEqual([bucket.consume(0.0) for _ in range(4)], [True, True, True, False])

    def test_fillsByInterval(self):
        """Whole intervals only, like Envoy's fill timer."""
        bucket = TokenBucket(2, 1, 0.5)
        bucket.consume(10.0)
        bucket.consume(10.0)
        self.assertFalse(bucket.consume(10.4))
        self.assertTrue(bucket.consume(10.5))
        self.assertFalse(bucket.consume(10.9))
        self.assertTrue(bucket.consume(11.0))

    def test_capped(self):
        bucket = TokenBucket(2, 5, 1.0)
        bucket.consume(0.0)
        self.assertEqual([bucket.consume(100.0) for _ in range(3)], [True, True, False])

    def test_clockBackwards(self):
        bucket = TokenBucket(1, 1, 1.0)
        bucket.consume(100.0)
        self.assertFalse(bucket.consume(50.0))
        self.assertTrue(bucket.consume(51.0))


class LocalRateLimitTests(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.store = StatsStore()
        self.dispatchers = [
            Dispatcher(self.clock, "worker_%d" % i, self.store.shard("worker_%d" % i))
            for i in range(2)]

    def connect(self, config, worker=0):
        nextProtocol = Recorder()
        f = config.buildFilter(FakeNetworkConnection(self.dispatchers[worker]), nextProtocol)
        transport = StringTransport()
        f.makeConnection(transport)
        return f, nextProtocol, transport

    def test_registered(self):
        self.assertIsNotNone(registry.lookup(
            registry.Category.NETWORK_FILTER,
            "envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit"))
        config = compile(EXAMPLE)
        self.assertTrue(verifyObject(INetworkFilterFactory, config))
        self.assertFalse(config.terminal)

    def test_overLimitClosedBeforeNextFilter(self):
        """
        Envoy stops the chain in this filter's C{onNewConnection}: the
        limited connection is closed and the next filter never runs.
        """
        config = compile(EXAMPLE)
        results = [self.connect(config) for _ in range(6)]
        self.assertEqual([n.made for _, n, _ in results], [True] * 5 + [False])
        self.assertEqual([t.disconnecting for _, _, t in results], [False] * 5 + [True])
        self.assertEqual(self.store.counterValue("local_rate_limit.tcp_rl.rate_limited"), 1)

    def test_limitedConnectionIsInert(self):
        config = compile(EXAMPLE.replace("max_tokens: 5", "max_tokens: 0"))
        f, nextProtocol, transport = self.connect(config)
        f.dataReceived(b"x")
        f.readConnectionLost()
        f.connectionLost(None)
        self.assertEqual(nextProtocol.data, [])
        self.assertFalse(nextProtocol.readClosed)
        self.assertFalse(nextProtocol.lost)

    def test_allowedConnectionPassesEverything(self):
        f, nextProtocol, transport = self.connect(compile(EXAMPLE))
        self.assertTrue(IHalfCloseableProtocol.providedBy(f))
        f.dataReceived(b"x")
        f.readConnectionLost()
        nextProtocol.transport.write(b"reply")
        f.connectionLost(None)
        self.assertEqual(nextProtocol.data, [b"x"])
        self.assertTrue(nextProtocol.readClosed)
        self.assertEqual(transport.value(), b"reply")
        self.assertTrue(nextProtocol.lost)

    def test_bucketSharedByWorkers(self):
        """
        Envoy 1.40, C{--concurrency 2}, 8 connections at once: 5 went
        through in all (2 on worker_0, 3 on worker_1), 3 were limited.
        """
        config = compile(EXAMPLE)
        made = [self.connect(config, worker=i % 2)[1].made for i in range(8)]
        self.assertEqual(made.count(True), 5)
        self.assertEqual(self.store.counterValue("local_rate_limit.tcp_rl.rate_limited"), 3)

    def test_refill(self):
        """Envoy 1.40, 2 tokens, 1 per 0.5 s: 2 pass, then 1 more after 0.55 s."""
        config = compile("""
stat_prefix: rl_echo
token_bucket: {max_tokens: 2, tokens_per_fill: 1, fill_interval: 0.5s}
""")
        first = [self.connect(config)[1].made for _ in range(4)]
        self.clock.advance(0.55)
        second = [self.connect(config)[1].made for _ in range(3)]
        self.assertEqual(first, [True, True, False, False])
        self.assertEqual(second, [True, False, False])

    def test_tokensPerFillDefaultsToOne(self):
        config = compile("stat_prefix: a\ntoken_bucket: {max_tokens: 3, fill_interval: 1s}\n")
        self.assertEqual(config.bucket.tokensPerFill, 1)

    def test_runtimeDisabled(self):
        """Envoy 1.40 with C{runtime_enabled.default_value: false}: nothing limited."""
        config = compile("""
stat_prefix: rl_off
token_bucket: {max_tokens: 1, fill_interval: 10s}
runtime_enabled: {default_value: false, runtime_key: foo.bar}
""")
        self.assertEqual([self.connect(config)[1].made for _ in range(3)], [True] * 3)
        self.assertEqual(self.store.counterValue("local_rate_limit.rl_off.rate_limited"), 0)

    def test_shareKey(self):
        """Configs with the same C{share_key} and bucket share the tokens."""
        text = EXAMPLE + "share_key: k\n"
        a, b = compile(text), compile(text)
        c = compile(EXAMPLE + "share_key: other\n")
        self.assertIs(a.bucket, b.bucket)
        self.assertIsNot(a.bucket, c.bucket)
        self.assertIsNot(compile(EXAMPLE).bucket, compile(EXAMPLE).bucket)

    def test_fillIntervalAtLeast50ms(self):
        """Envoy 1.40: "local rate limit token bucket fill timer must be >= 50ms"."""
        e = self.assertRaises(
            ConfigError, compile,
            "stat_prefix: a\ntoken_bucket: {max_tokens: 2, fill_interval: 0.01s}")
        self.assertIn("local rate limit token bucket fill timer must be >= 50ms", str(e))
        self.assertIn(PATH, str(e))
        compile("stat_prefix: a\ntoken_bucket: {max_tokens: 2, fill_interval: 0.05s}")

    def test_tokenBucketRequired(self):
        e = self.assertRaises(ConfigError, compile, "stat_prefix: a")
        self.assertIn("LocalRateLimitValidationError.TokenBucket: value is required", str(e))

    def test_statShownFromStart(self):
        store = StatsStore()
        compile(EXAMPLE, FactoryContext(Clock(), store, server=FakeServer(store), path=PATH))
        self.assertEqual(store.snapshot().counters["local_rate_limit.tcp_rl.rate_limited"], 0)

    def test_config(self):
        config = LocalRateLimitConfig("p", TokenBucket(1, 1, 1.0))
        self.assertEqual(config.statPrefix, "local_rate_limit.p.")
        self.assertTrue(config.enabled)
