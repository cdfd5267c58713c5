"""
The in-memory HTTP connection manager of the HCM, router and HTTP filter
tests: L{txenvoy.testing.HttpProxyHarness} with the routes these tests
share.

    h = Harness(self, routes=..., hcm={...})
    down = h.connect()
    down.send(b"GET / HTTP/1.1\\r\\nhost: a\\r\\n\\r\\n")
    up = h.upstream()                 # the connection the pool opened
    up.respond(b"HTTP/1.1 200 OK\\r\\ncontent-length: 2\\r\\n\\r\\nok")
    response = down.response()
"""

from txenvoy.testing.proxy import ROUTER, HttpProxyHarness

__all__ = ["DEFAULT_ROUTES", "ROUTER", "Harness"]

DEFAULT_ROUTES = """
- match: {prefix: "/direct"}
  direct_response: {status: 200, body: {inline_string: "hello"}}
- match: {path: "/old"}
  redirect: {path_redirect: "/new"}
- match: {prefix: "/dead/"}
  route: {cluster: dead}
- match: {prefix: "/empty/"}
  route: {cluster: empty}
- match: {prefix: "/byheader/"}
  route: {cluster_header: x-cluster}
- match: {prefix: "/timeout/"}
  route: {cluster: origin, timeout: 2s}
- match: {prefix: "/retry/"}
  route:
    cluster: origin
    retry_policy: {retry_on: "5xx,connect-failure", num_retries: 2}
- match: {prefix: "/pertry/"}
  route:
    cluster: origin
    timeout: 10s
    retry_policy: {retry_on: 5xx, num_retries: 1, per_try_timeout: 1s}
- match: {prefix: "/rewrite/"}
  route: {cluster: origin, prefix_rewrite: "/x/", host_rewrite_literal: up.internal}
- match: {prefix: "/o/"}
  route: {cluster: origin}
"""


class Harness(HttpProxyHarness):
    """
    An L{HttpProxyHarness} with the shared routes, stopped at the test's
    cleanup; C{extraFilters} go before the router, C{logger} records the
    access log.
    """

    def __init__(self, testCase, routes=DEFAULT_ROUTES, hcm=None, filters=None,
                 accessLog=True, server=None, clusters=None, extraFilters=()):
        HttpProxyHarness.__init__(self, routes=routes, httpFilters=extraFilters, hcm=hcm,
                                  filters=filters, clusters=clusters, server=server,
                                  accessLog=accessLog, testCase=testCase)
        self.logger = self.accessLog
