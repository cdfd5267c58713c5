"""
Tests for L{txenvoy.extensions.common.dns_cache} with a fake resolver and
clock: loading, waiting workers, failures, the family filter, overflow,
refresh and expiry
(the side-by-side run is C{tests/e2e/test_dynamic_forward_proxy.py}).
"""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.config.errors import ConfigError
from txenvoy.extensions.common.dns_cache import (
    DnsCache,
    DnsCacheSettings,
    compileDnsCacheConfig,
    getDnsCache,
    splitHost,
)
from txenvoy.stats.store import StatsStore


class _Reactor(Clock):
    """callFromThread runs at once (one thread here)."""

    def callFromThread(self, f, *args):
        f(*args)


class _Dispatcher:
    def __init__(self):
        self.posted = []

    def post(self, f, *args):
        self.posted.append((f, args))

    def run(self):
        posted, self.posted = self.posted, []
        for f, args in posted:
            f(*args)


class _Resolver:
    def __init__(self):
        self.asked = []

    def resolve(self, name, family):
        d = defer.Deferred()
        self.asked.append((name, family, d))
        return d


class DnsCacheTests(SynchronousTestCase):

    def setUp(self):
        self.shard = StatsStore().shard("main_thread")
        self.resolver = _Resolver()
        self.cache = DnsCache(_Reactor(), self.shard, DnsCacheSettings("c", "V4_ONLY", 2),
                              self.resolver)
        self.dispatcher = _Dispatcher()

    def stat(self, name):
        return getattr(self.cache.stats, name).value

    def test_loadThenCached(self):
        """
        A new host is resolved once however many ask; each is told on its
        dispatcher; then it is in the cache. The first address counts as a
        change, as in Envoy.
        """
        got = []
        self.assertIsNone(self.cache.load("example", 80, self.dispatcher, got.append))
        self.assertIsNone(self.cache.load("example", 80, self.dispatcher, got.append))
        [(name, family, d)] = self.resolver.asked
        self.assertEqual((name, family), ("example", "V4_ONLY"))
        d.callback(["::1", "10.0.0.1"])
        self.dispatcher.run()
        self.assertEqual([e.address for e in got], [("10.0.0.1", 80)] * 2)
        self.assertEqual(self.cache.load("example", 80, self.dispatcher, got.append).address,
                         ("10.0.0.1", 80))
        self.assertEqual([self.stat(n) for n in ("host_added", "dns_query_attempt",
                                                 "dns_query_success", "host_address_changed",
                                                 "num_hosts")], [1, 1, 1, 1, 1])

    def test_failure(self):
        """A failed resolution leaves the entry without an address."""
        got = []
        self.cache.load("nowhere", 80, self.dispatcher, got.append)
        self.resolver.asked[0][2].errback(Exception("NXDOMAIN"))
        self.dispatcher.run()
        self.assertIsNone(got[0].address)
        self.assertEqual(self.stat("dns_query_failure"), 1)

    def test_overflow(self):
        """Past C{max_hosts} the caller gets C{None} and C{host_overflow}."""
        got = []
        for name in ("a", "b", "c"):
            self.cache.load(name, 80, self.dispatcher, got.append)
        self.dispatcher.run()
        self.assertEqual(got, [None])
        self.assertEqual(self.stat("host_overflow"), 1)

    def test_sameNameSameConfig(self):
        """Two configs naming one cache must agree (Envoy's check)."""
        reactor = _Reactor()
        first = getDnsCache(reactor, self.shard, DnsCacheSettings("x", "AUTO", 1024))
        self.assertIs(getDnsCache(reactor, self.shard, DnsCacheSettings("x", "AUTO", 1024)),
                      first)
        self.assertRaises(ConfigError, getDnsCache, reactor, self.shard,
                          DnsCacheSettings("x", "V4_ONLY", 1024))


class RefreshTests(SynchronousTestCase):
    """Envoy's re-resolution every C{dns_refresh_rate} and expiry after C{host_ttl}."""

    def setUp(self):
        self.shard = StatsStore().shard("main_thread")
        self.resolver = _Resolver()
        self.clock = _Reactor()
        self.cache = DnsCache(self.clock, self.shard,
                              DnsCacheSettings("c", "V4_ONLY", 2, refreshRate=10.0, hostTtl=25.0),
                              self.resolver)
        self.dispatcher = _Dispatcher()

    def stat(self, name):
        return getattr(self.cache.stats, name).value

    def test_refreshedWhileUsedThenDropped(self):
        """
        A host in use is resolved again each refresh (a new address counts
        C{host_address_changed}); the first refresh that finds it unused
        for C{host_ttl} drops it (C{host_removed}, C{num_hosts} 0).
        """
        self.cache.load("h", 80, self.dispatcher, lambda entry: None)
        self.resolver.asked.pop()[2].callback(["10.0.0.1"])
        self.clock.advance(5)
        self.assertEqual(self.cache.lookup("h", 80).address, ("10.0.0.1", 80))
        self.clock.advance(5)
        self.assertEqual(self.stat("dns_query_attempt"), 2)
        self.resolver.asked.pop()[2].callback(["10.0.0.2"])
        self.assertEqual(self.cache.lookup("h", 80).address, ("10.0.0.2", 80))
        self.assertEqual(self.stat("host_address_changed"), 2)
        # Unused since t=10: still kept at the refresh of t=20 and t=30
        # (a failed answer keeps the address), dropped at t=40.
        self.clock.advance(10)
        self.resolver.asked.pop()[2].errback(Exception("SERVFAIL"))
        self.clock.advance(10)
        self.resolver.asked.pop()[2].callback(["10.0.0.2"])
        self.assertEqual(self.stat("host_removed"), 0)
        self.clock.advance(10)
        self.assertEqual((self.stat("host_removed"), self.stat("num_hosts")), (1, 0))
        self.assertIsNone(self.cache.lookup("h", 80))
        self.assertEqual(self.resolver.asked, [])

    def test_settingsFromConfig(self):
        """C{dns_refresh_rate} and C{host_ttl} are read; bad values named by path."""
        from envoy.extensions.common.dynamic_forward_proxy.v3 import dns_cache_pb2

        message = dns_cache_pb2.DnsCacheConfig(name="c")
        message.dns_refresh_rate.FromSeconds(5)
        message.host_ttl.FromSeconds(30)
        settings = compileDnsCacheConfig(message, "p")
        self.assertEqual((settings.refreshRate, settings.hostTtl), (5.0, 30.0))
        message.host_ttl.FromSeconds(0)
        e = self.assertRaises(ConfigError, compileDnsCacheConfig, message, "p")
        self.assertIn("p.host_ttl: value must be greater than 0s", str(e))


class SplitHostTests(SynchronousTestCase):

    def test_split(self):
        self.assertEqual(splitHost("a.example:8080", 80), ("a.example", 8080))
        self.assertEqual(splitHost("a.example", 443), ("a.example", 443))
        self.assertEqual(splitHost("[::1]:81", 80), ("::1", 81))
        self.assertEqual(splitHost("[::1]", 80), ("::1", 80))
