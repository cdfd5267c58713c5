"""
End-to-end: the router's cluster stats by origin and for retries
(C{external.*}, C{internal.*}, C{retry.*}, C{upstream_rq_retry*}) and its
direct-response counters, compared with Envoy 1.40's C{/stats} after the
same requests on the same YAML.
"""

import time
from http.server import BaseHTTPRequestHandler

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.configs import block, bootstrap, cluster, httpListener
from tests.e2e.harness import (
    SharedFixture,
    adminStats,
    closingGet,
    forBoth,
    freePort,
    httpOrigin,
    startProxy,
    statusOf,
)

#: The routes of both listeners' virtual host.
ROUTES = """
    - match: {prefix: "/redir"}
      redirect: {path_redirect: "/elsewhere"}
    - match: {prefix: "/direct"}
      direct_response: {status: 200, body: {inline_string: "hi"}}
    - match: {prefix: "/r/"}
      route:
        cluster: o
        retry_policy:
          retry_on: retriable-headers,envoy-ratelimited
          num_retries: 2
          retry_back_off: {base_interval: 0.001s, max_interval: 0.002s}
          retriable_headers: [{name: x-upstream-retry, string_match: {exact: "yes"}}]
          retriable_request_headers: [{name: x-can-retry, present_match: true}]
          rate_limited_retry_back_off:
            reset_headers: [{name: x-reset-after}, {name: retry-after}]
            max_interval: 10s
    - match: {prefix: "/"}
      route:
        cluster: o
        retry_policy: {retry_on: 5xx, num_retries: 2,
                       retry_back_off: {base_interval: 0.001s, max_interval: 0.002s}}
    """


def routerConfig(admin, origin, external, internal):
    """Listeners C{external} and C{internal} (with INTERNAL) before the origin."""
    return bootstrap(
        [httpListener(None, port, statPrefix=prefix, hcm=extra, virtualHosts=[
            '- name: a\n  domains: ["*"]\n  routes:\n' + block(ROUTES, 2)])
         for port, prefix, extra in ((external, "ext", ""), (internal, "int", INTERNAL))],
        [cluster("o", origin, connectTimeout="2s")], admin=admin)


INTERNAL = """          use_remote_address: true
          internal_address_config: {cidr_ranges: [{address_prefix: 127.0.0.1, prefix_len: 32}]}"""

#: (listener, path, extra header) in order.
REQUESTS = [
    ("external", "/redir", ""),
    ("external", "/direct", ""),
    ("external", "/flaky-a", ""),
    ("external", "/always503", ""),
    ("external", "/404", ""),
    ("external", "/ok", ""),
    ("external", "/flaky-b", "x-envoy-internal: true\r\n"),
    ("internal", "/flaky-c", ""),
    ("internal", "/404", ""),
    ("external", "/r/hdr-a", "x-can-retry: 1\r\n"),
    ("external", "/r/hdr-b", ""),
    ("external", "/r/rl", "x-can-retry: 1\r\n"),
]


class _Origin(BaseHTTPRequestHandler):
    """
    503 on every other request to /flaky-*, always on /always503, 404 on
    /404; every other response to /r/hdr-* asks for a retry by header, and
    to /r/rl is a 429 rate limit with a reset of 1 s (x-reset-after is over
    max_interval, so retry-after is the one used).
    """

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        counts = self.server.counts
        n = counts.get(self.path, 0)
        counts[self.path] = n + 1
        status = 200
        extra = []
        if self.path.startswith("/r/hdr") and n % 2 == 0:
            extra = [("x-upstream-retry", "yes")]
        elif self.path == "/r/rl" and n % 2 == 0:
            status = 429
            extra = [("x-envoy-ratelimited", "true"), ("x-reset-after", "60"),
                     ("retry-after", "1")]
        elif self.path.startswith("/flaky"):
            status = 503 if n % 2 == 0 else 200
        elif self.path == "/always503":
            status = 503
        elif self.path == "/404":
            status = 404
        self.send_response(status)
        for name, value in extra:
            self.send_header(name, value)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def get(port, path, extra):
    return statusOf(closingGet(port, path, extra=extra))


def watched(name):
    """The stats this comparison is about."""
    if name.startswith("cluster.o."):
        rest = name[len("cluster.o."):]
        return rest.startswith(("external.", "internal.", "retry.", "upstream_rq_"))
    return name.startswith(("http.ext.rq_", "http.int.rq_"))


class RouterStatsComparisonTests(SharedFixture, SynchronousTestCase):
    """Envoy 1.40 and txenvoy, the same requests, one origin each."""

    @classmethod
    def startFixture(cls):
        # Both proxies at once (each with its own origin and ports): the
        # rate-limited retry waits a second in each.
        cls.results = forBoth(cls._runProxy)

    @classmethod
    def _runProxy(cls, real):
        origin = httpOrigin(_Origin)
        origin.counts = {}
        ports = {"external": freePort(), "internal": freePort()}
        admin = freePort()
        config = routerConfig(admin, origin.server_address[1], ports["external"], ports["internal"])
        try:
            proxy = startProxy(real, config, ports["internal"], admin)
            try:
                statuses = []
                for which, path, extra in REQUESTS:
                    started = time.monotonic()
                    statuses.append(get(ports[which], path, extra))
                    if path == "/r/rl":
                        waited = time.monotonic() - started
                stats = {name: value for name, value in adminStats(admin).items()
                         if watched(name) and value}
            finally:
                proxy.stop()
        finally:
            origin.shutdown()
            origin.server_close()
        return (statuses, stats, waited)

    @classmethod
    def stopFixture(cls):
        pass

    def test_statuses(self):
        self.assertEqual(self.results[False][0], self.results[True][0])

    def test_rateLimitedBackOff(self):
        """
        The rate-limited retry waited the reset header's second (Envoy's
        lower-bound jitter: [1 s, 1.5 s)) and was counted apart from the
        exponential back-offs; retriable_request_headers gates retries.
        """
        stats = self.results[False][1]
        self.assertEqual(stats["cluster.o.upstream_rq_retry_backoff_ratelimited"], 1)
        self.assertGreaterEqual(self.results[False][2], 1.0)
        self.assertLess(self.results[False][2], 1.6)

    def test_stats(self):
        """
        Every non-zero counter Envoy shows for these requests, and no other:
        retry.* for each retried response, external.* / internal.* by the
        forwarded x-envoy-internal (a client's own is not trusted), a
        redirect counted as rq_direct_response.
        """
        self.assertEqual(self.results[False][1], self.results[True][1])
        self.assertIn("cluster.o.retry.upstream_rq_503", self.results[True][1])
        self.assertIn("cluster.o.internal.upstream_rq_404", self.results[True][1])
