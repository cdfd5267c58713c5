"""
End-to-end comparison of C{envoy.filters.http.ratelimit} and
C{envoy.filters.network.ratelimit} with the gRPC rate limit service
(C{envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit}): a real
C{twistd -n envoy} and a real Envoy 1.40 with the same config, in front of
the same origin, echo server and grpcio rate limit service.

Compared for every request: the client's reply, the descriptors the
service received (route and virtual host C{rate_limits}: generic_key,
request_headers with and without skip_if_absent, remote_address,
header_value_match, destination and source cluster, masked_remote_address,
query_parameters, query_parameter_value_match, metadata from the route and
from dynamic metadata, disable_key read in the runtime), what the origin
received; then the C{ratelimit} stats and the 429s charged to the
cluster. The service allows (with headers both ways and statuses for
C{x-ratelimit-*}), limits, fails, and is down (C{failure_mode_deny} or
not); C{filter_enforced} at 0% lets a limited request through, C{filter_enabled}
at 0% makes no call.
"""

import re

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.configs import httpFilter, httpListener
from tests.e2e.grpc_services import ServiceSideBySide, rateLimitService
from tests.e2e.harness import SharedFixture, exchangeToClose, rawRequest
from tests.e2e.test_ext_authz import _masked, _originHandler, _seen
from tests.e2e.test_ext_authz_grpc import _tcpExchange, serviceConfig


def _hcm(name, port, cluster, extra=""):
    return httpListener(name, port, virtualHost="""
            rate_limits:
            - actions: [{ generic_key: { descriptor_value: vh } }]
            """, routes="""
            - match: { prefix: "/over" }
              route:
                cluster: origin
                rate_limits:
                - actions: [{ generic_key: { descriptor_value: over, descriptor_key: k } }]
            - match: { prefix: "/err" }
              route:
                cluster: origin
                rate_limits:
                - actions: [{ generic_key: { descriptor_value: err } }]
            - match: { prefix: "/hdr" }
              route:
                cluster: origin
                rate_limits:
                - actions:
                  - request_headers: { header_name: x-user, descriptor_key: user }
                  - remote_address: {}
                - actions:
                  - request_headers: { header_name: x-absent, descriptor_key: a, skip_if_absent: true }
                  - header_value_match:
                      descriptor_value: bob
                      headers: [{ name: x-user, string_match: { exact: bob } }]
                - actions:
                  - header_value_match:
                      descriptor_key: not-bob
                      descriptor_value: "yes"
                      expect_match: false
                      headers: [{ name: x-user, string_match: { exact: bob } }]
                - actions:
                  - request_headers: { header_name: x-absent, descriptor_key: a }
                - actions: [{ destination_cluster: {} }, { source_cluster: {} }]
                - stage: 1
                  actions: [{ generic_key: { descriptor_value: stage1 } }]
            - match: { prefix: "/more" }
              metadata:
                filter_metadata:
                  rl: { tier: gold, nested: { level: "2" } }
              route:
                cluster: origin
                rate_limits:
                - actions:
                  - masked_remote_address: {}
                  - masked_remote_address: { v4_prefix_mask_len: 24 }
                - actions:
                  - query_parameters: { query_parameter_name: user, descriptor_key: qu }
                  - query_parameters: { query_parameter_name: absent, descriptor_key: qa, skip_if_absent: true }
                - actions:
                  - query_parameters: { query_parameter_name: absent, descriptor_key: qa }
                - actions:
                  - query_parameter_value_match:
                      descriptor_value: is-bob
                      query_parameters: [{ name: user, string_match: { exact: bob } }]
                - actions:
                  - query_parameter_value_match:
                      descriptor_key: not-bob
                      descriptor_value: "yes"
                      expect_match: false
                      query_parameters: [{ name: user, string_match: { exact: bob } }]
                - actions:
                  - metadata:
                      descriptor_key: tier
                      source: ROUTE_ENTRY
                      metadata_key: { key: rl, path: [{ key: tier }] }
                  - metadata:
                      descriptor_key: level
                      source: ROUTE_ENTRY
                      metadata_key: { key: rl, path: [{ key: nested }, { key: level }] }
                  - metadata:
                      descriptor_key: dyn
                      metadata_key: { key: set, path: [{ key: plan }] }
                  - metadata:
                      descriptor_key: missing
                      default_value: fallback
                      metadata_key: { key: set, path: [{ key: nothing }] }
                  - metadata:
                      descriptor_key: skipped
                      skip_if_absent: true
                      metadata_key: { key: set, path: [{ key: nothing }] }
                - actions:
                  - metadata:
                      descriptor_key: dropped
                      metadata_key: { key: set, path: [{ key: nothing }] }
                - disable_key: "off"
                  actions: [{ generic_key: { descriptor_value: disabled-by-runtime } }]
                - disable_key: "on"
                  actions: [{ generic_key: { descriptor_value: enabled-by-runtime } }]
            - match: { prefix: "/incl" }
              route:
                cluster: origin
                include_vh_rate_limits: true
                rate_limits:
                - actions: [{ generic_key: { descriptor_value: route } }]
            - match: { prefix: "/" }
              route: { cluster: origin }
            """, httpFilters=[httpFilter(
        "envoy.filters.http.set_metadata", "envoy.extensions.filters.http.set_metadata.v3.Config",
        """
            metadata: [{ metadata_namespace: set, value: { plan: pro } }]
            """), httpFilter(
        "envoy.filters.http.ratelimit", "envoy.extensions.filters.http.ratelimit.v3.RateLimit", """
            domain: web
            timeout: 1s
            %s
            rate_limit_service:
              transport_api_version: V3
              grpc_service: { envoy_grpc: { cluster_name: %s } }
            """ % (extra, cluster))])


def _tcp(name, port, cluster, value, extra=""):
    return """
  - name: %(name)s
    address:
      socket_address: { address: 127.0.0.1, port_value: %(port)d }
    filter_chains:
    - filters:
      - name: envoy.filters.network.ratelimit
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.ratelimit.v3.RateLimit
          stat_prefix: %(name)s
          domain: tcp
          timeout: 1s%(extra)s
          descriptors:
          - entries: [{ key: conn, value: %(value)s }, { key: b, value: c }]
          rate_limit_service:
            transport_api_version: V3
            grpc_service: { envoy_grpc: { cluster_name: %(cluster)s } }
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: %(name)s
          cluster: echo
""" % dict(name=name, port=port, cluster=cluster, value=value, extra=extra)


_PORTS = ("admin", "main", "deny", "allow", "tcpok", "tcpover", "tcpdeny", "tcpopen",
          "notenforced", "disabled")


def _config(ports, origin, echo, rls, dead):
    listeners = [
        _hcm("main", ports["main"], "rls", "enable_x_ratelimit_headers: DRAFT_VERSION_03"),
        _hcm("deny", ports["deny"], "dead", "failure_mode_deny: true"),
        _hcm("allow", ports["allow"], "dead"),
        _hcm("notenforced", ports["notenforced"], "rls", """
            enable_x_ratelimit_headers: DRAFT_VERSION_03
            filter_enforced:
              runtime_key: rl.enforced
              default_value: { numerator: 0 }"""),
        _hcm("disabled", ports["disabled"], "rls", """
            filter_enabled:
              runtime_key: rl.enabled
              default_value: { numerator: 0 }"""),
        _tcp("tcpok", ports["tcpok"], "rls", "ok"),
        _tcp("tcpover", ports["tcpover"], "rls", "over"),
        _tcp("tcpdeny", ports["tcpdeny"], "dead", "x", """
          failure_mode_deny: true"""),
        _tcp("tcpopen", ports["tcpopen"], "dead", "x")]
    return serviceConfig(ports["admin"], listeners, origin, echo, "rls", rls, dead, """
        node: { id: n1, cluster: frontend }
        layered_runtime:
          layers:
          - name: static
            static_layer: { ratelimit.off.http_filter_enabled: 0 }
        """)


def _answer(request, context):
    from envoy.service.ratelimit.v3 import rls_pb2
    import grpc

    values = {entry.value for d in request.descriptors for entry in d.entries}
    if "err" in values:
        context.abort(grpc.StatusCode.UNAVAILABLE, "rls down")
    response = rls_pb2.RateLimitResponse()
    over = "over" in values
    response.overall_code = (rls_pb2.RateLimitResponse.OVER_LIMIT if over
                             else rls_pb2.RateLimitResponse.OK)
    for i, descriptor in enumerate(request.descriptors):
        status = response.statuses.add()
        status.code = response.overall_code
        if i < 2:
            status.current_limit.requests_per_unit = 10 * (i + 1)
            status.current_limit.unit = (rls_pb2.RateLimitResponse.RateLimit.MINUTE if i
                                         else rls_pb2.RateLimitResponse.RateLimit.SECOND)
            if i:
                status.current_limit.name = "second-rule"
            status.limit_remaining = 7 - i
            status.duration_until_reset.seconds = 30 + i
    header = response.response_headers_to_add.add()
    header.key, header.value = "x-rls", "over" if over else "ok"
    header = response.request_headers_to_add.add()
    header.key, header.value = "x-rls-request", "1"
    return response


def _descriptors(records):
    out = []
    for request, metadata in records:
        out.append((request.domain, [
            ([(e.key, "IP" if e.key == "remote_address" else e.value) for e in d.entries],
             d.hits_addend.value) for d in request.descriptors],
            sorted((k, v) for k, v in metadata.items() if k.startswith("x-envoy"))))
    return out


HTTP_CASES = [("main", rawRequest(path, "x-user: bob")) for path in (
    "/plain", "/over", "/err", "/hdr", "/incl")] + [
    ("main", rawRequest("/hdr", "x-user: eve")),
    ("main", rawRequest("/hdr")),
    ("deny", rawRequest("/plain")),
    ("allow", rawRequest("/plain")),
    ("main", rawRequest("/more?user=bob&x=1")),
    ("main", rawRequest("/more?user=eve")),
    ("main", rawRequest("/more")),
    ("notenforced", rawRequest("/over")),
    ("notenforced", rawRequest("/plain")),
    ("disabled", rawRequest("/over"))]

TCP_CASES = ("tcpok", "tcpover", "tcpdeny", "tcpopen")


class RateLimitSideBySideTests(ServiceSideBySide, SharedFixture, SynchronousTestCase):
    """Envoy 1.40 and txenvoy, the same ratelimit config, the same requests."""

    portNames = _PORTS
    makeService = staticmethod(lambda: rateLimitService(_answer))
    makeConfig = staticmethod(_config)
    originHandler = staticmethod(_originHandler)
    summarize = staticmethod(lambda records, ports: _descriptors(records))

    @staticmethod
    def statsFilter(name):
        return "ratelimit." in name or re.match(
            r"cluster\.origin\.upstream_rq_([0-9]+|[0-9]xx|completed)$", name)

    def run_(self, deployment, listener, raw):
        reply = _masked(exchangeToClose(deployment.ports[listener], raw))
        return (reply, self.serviceSeen(deployment), _seen(self.originSeen.take()))

    def test_http(self):
        """
        Every HTTP request: the same reply, the same descriptors, the same
        request at the origin.
        """
        for listener, raw in HTTP_CASES:
            expected = self.run_(self.envoy, listener, raw)
            got = self.run_(self.txenvoy, listener, raw)
            self.assertEqual(got, expected, raw)

    def test_network(self):
        """
        Every TCP listener: the same bytes back (echoed when allowed, a
        reset when limited) and the same descriptors.
        """
        self.assertSameTcp(TCP_CASES, _tcpExchange)

    def test_stats(self):
        """After the same traffic, the same C{ratelimit} stats."""
        for listener, raw in HTTP_CASES:
            for deployment in (self.envoy, self.txenvoy):
                self.run_(deployment, listener, raw)
        for listener in TCP_CASES:
            for deployment in (self.envoy, self.txenvoy):
                _tcpExchange(deployment.ports[listener])
        self.assertSameStats()
