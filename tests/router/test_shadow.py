"""
Tests for L{txenvoy.router.shadow} (a route's C{request_mirror_policies}),
in a real connection manager on a fake reactor; compared with Envoy 1.40
in C{tests/e2e/test_mirror.py}.
"""

from twisted.trial.unittest import SynchronousTestCase

from txenvoy.config.errors import ConfigError
from txenvoy.router.shadow import shadowHost

from tests.extensions.filters.http.fakes import routeTable
from tests.http.hcm_harness import Harness

ROUTES = """
- match: {prefix: "/never/"}
  route:
    cluster: origin
    request_mirror_policies:
    - {cluster: dead, runtime_fraction: {default_value: {numerator: 0}}}
- match: {prefix: "/"}
  route:
    cluster: origin
    request_mirror_policies: [{cluster: dead}]
"""


class ShadowHostTests(SynchronousTestCase):

    def test_suffix(self):
        """Envoy's shadowAppendedHost: the suffix goes before the port."""
        self.assertEqual(shadowHost(b"a.example"), b"a.example-shadow")
        self.assertEqual(shadowHost(b"a.example:8080"), b"a.example-shadow:8080")
        self.assertEqual(shadowHost(b"[::1]:80"), b"[::1]-shadow:80")

    def test_clusterRequired(self):
        e = self.assertRaises(ConfigError, routeTable, """
virtual_hosts:
- name: v
  domains: ["*"]
  routes:
  - match: {prefix: "/"}
    route: {cluster: origin, request_mirror_policies: [{runtime_fraction: {}}]}
""")
        self.assertIn("request_mirror_policies[0]", str(e))


class ShadowTests(SynchronousTestCase):

    def test_copySentAtTheEnd(self):
        """
        The copy (host suffixed, body included) leaves when the request is
        complete; the client's answer does not wait for it.
        """
        h = Harness(self, routes=ROUTES)
        down = h.connect()
        down.send(b"POST /x HTTP/1.1\r\nhost: app:81\r\ncontent-length: 5\r\n\r\nhel")
        origin = h.upstream()
        self.assertEqual(origin.port, 8080)
        self.assertEqual(len(h.upstreams()), 1)
        down.send(b"lo")
        shadow = h.upstream()
        self.assertEqual(shadow.port, 8081)
        line, headers = shadow.request()
        self.assertEqual(headers[0], ("host", "app-shadow:81"))
        self.assertIn(("x-forwarded-for", "192.0.2.2"), headers)
        self.assertTrue(shadow.received().endswith(b"\r\n\r\nhello"))
        origin.respond(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        self.assertEqual(down.responses()[0].body, b"ok")
        self.assertEqual(h.stat("cluster.dead.upstream_rq_total"), 1)

    def test_runtimeFractionZero(self):
        h = Harness(self, routes=ROUTES)
        down = h.connect()
        down.send(b"GET /never/x HTTP/1.1\r\nhost: a\r\n\r\n")
        self.assertEqual([port for _, port, _ in h.upstreams()], [8080])
