"""
Tests for L{txenvoy.testing.network_filter}.
"""

from twisted.trial.unittest import SynchronousTestCase

from txenvoy.testing import NetworkFilterHarness

RBAC = {
    "@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
    "stat_prefix": "tcp",
    "rules": {"action": "ALLOW", "policies": {"loopback": {
        "permissions": [{"any": True}],
        "principals": [{"direct_remote_ip": {"address_prefix": "127.0.0.0", "prefix_len": 8}}],
    }}},
}


class NetworkFilterHarnessTests(SynchronousTestCase):
    """One network filter on fake connections."""

    def setUp(self):
        self.harness = NetworkFilterHarness(RBAC)

    def test_allowed(self):
        """
        Bytes of an allowed connection reach the next filter.
        """
        conn = self.harness.connect(remote="127.0.0.1")
        conn.send(b"hello")
        self.assertEqual(conn.next.data, [b"hello"])
        self.assertFalse(conn.closed)
        self.assertEqual(self.harness.counter("tcp.rbac.allowed"), 1)

    def test_denied(self):
        """
        A denied connection is closed and its bytes go nowhere.
        """
        conn = self.harness.connect(remote="10.0.0.1")
        conn.send(b"secret")
        self.assertEqual(conn.next.data, [])
        self.assertTrue(conn.closed)
        self.assertEqual(self.harness.counter("tcp.rbac.denied"), 1)

    def test_workers(self):
        """
        Connections on several workers count into one store.
        """
        harness = NetworkFilterHarness(RBAC, workers=2)
        for worker in (0, 1):
            harness.connect(worker=worker).send(b"x")
        self.assertEqual(harness.counter("tcp.rbac.allowed"), 2)
