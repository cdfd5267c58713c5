"""
Tests for L{txenvoy.upstream.dns}.
"""

import socket

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from txenvoy.stats.store import StatsStore
from txenvoy.upstream.cluster_manager import ClusterManager
from txenvoy.upstream.dns import GetAddrInfoResolver, selectAddresses

from tests.upstream.test_fakes import clusterProto, endpoint, stat

V4 = socket.AF_INET
V6 = socket.AF_INET6


class SelectAddressesTests(SynchronousTestCase):
    """C{dns_lookup_family} applied to an answer."""

    answer = [(V6, "::1"), (V4, "127.0.0.1"), (V4, "127.0.0.2"), (V4, "127.0.0.1")]

    def test_families(self):
        self.assertEqual(selectAddresses(self.answer, "V4_ONLY"), ["127.0.0.1", "127.0.0.2"])
        self.assertEqual(selectAddresses(self.answer, "V6_ONLY"), ["::1"])
        self.assertEqual(selectAddresses(self.answer, "AUTO"), ["::1"])
        self.assertEqual(selectAddresses(self.answer, "V4_PREFERRED"),
                         ["127.0.0.1", "127.0.0.2"])
        self.assertEqual(selectAddresses(self.answer, "ALL"), ["::1", "127.0.0.1", "127.0.0.2"])

    def test_fallbacks(self):
        v4only = [(V4, "10.0.0.1")]
        v6only = [(V6, "fd00::1")]
        self.assertEqual(selectAddresses(v4only, "AUTO"), ["10.0.0.1"])
        self.assertEqual(selectAddresses(v6only, "V4_PREFERRED"), ["fd00::1"])

    def test_ipLiteralNeedsNoLookup(self):
        """An IP literal is answered at once, without a thread."""
        resolver = GetAddrInfoResolver(Clock())
        self.assertEqual(self.successResultOf(resolver.resolve("10.2.3.4", "AUTO")),
                         ["10.2.3.4"])
        self.assertEqual(self.successResultOf(resolver.resolve("::1", "V4_ONLY")), ["::1"])


class RealResolverTests(TestCase):
    """getaddrinfo in the real reactor's thread pool."""

    def test_strictDnsLocalhost(self):
        """A STRICT_DNS cluster for C{localhost} (V4_ONLY) has host 127.0.0.1."""
        from twisted.internet import reactor

        store = StatsStore()
        cm = ClusterManager(reactor, store, store.shard("main_thread"), [clusterProto(
            "c1", [endpoint("localhost", 8080)], type="STRICT_DNS",
            dns_lookup_family="V4_ONLY")])
        self.addCleanup(cm.stop)

        def check(_):
            self.assertEqual([h.addressString for h in cm.clusters["c1"].hosts],
                             ["127.0.0.1:8080"])
            self.assertEqual(cm.clusters["c1"].hosts[0].hostname, "localhost")
            self.assertEqual(stat(store, "cluster.c1.update_success"), 1)

        return cm.initialize().addCallback(check)

    def test_unknownName(self):
        from twisted.internet import reactor

        store = StatsStore()
        cm = ClusterManager(reactor, store, store.shard("main_thread"), [clusterProto(
            "c1", [endpoint("no-such-host.invalid", 80)], type="STRICT_DNS")])
        self.addCleanup(cm.stop)

        def check(_):
            self.assertEqual(cm.clusters["c1"].hosts, ())
            self.assertEqual(stat(store, "cluster.c1.update_failure"), 1)

        return cm.initialize().addCallback(check)
