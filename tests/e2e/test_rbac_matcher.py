"""
RBAC with the unified matcher (C{matcher} and C{shadow_matcher}, actions
C{envoy.config.rbac.v3.Action}), compared with Envoy 1.40 on the same
YAML, in the network and the HTTP RBAC filters: a C{matcher_tree} on the
source IP with Envoy's C{envoy.matching.custom_matchers.ip_range_matcher}
(C{xds.type.matcher.v3.IPMatcher}) nesting a C{matcher_list} on the
destination port or a request header, the C{envoy.matching.matchers.ip}
input matcher, and a shadow matcher whose decision is only counted and
written to the dynamic metadata. Which connections and requests pass,
the stats and the shadow decision in the access log are Envoy's.
"""

import json
import os
import shutil
import socket
import tempfile
import time

import yaml
from twisted.trial.unittest import TestCase

from tests.e2e.harness import (
    Envoy,
    RealEnvoy,
    SharedFixture,
    adminStats,
    exchangeOne,
    freePort,
    statusOf,
)

ACTION = "type.googleapis.com/envoy.config.rbac.v3.Action"
NET = "type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3."
IP_MATCHER = "type.googleapis.com/xds.type.matcher.v3.IPMatcher"
IP_INPUT_MATCHER = "type.googleapis.com/envoy.extensions.matching.input_matchers.ip.v3.Ip"
HEADER = "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput"

CONFIG = """
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: %(admin)d}}
static_resources:
  listeners:
  - name: net_allowed
    address: {socket_address: {address: 127.0.0.1, port_value: %(netAllowed)d}}
    filter_chains: [{filters: [%(netRbac)s, %(echo)s]}]
  - name: net_denied
    address: {socket_address: {address: 127.0.0.1, port_value: %(netDenied)d}}
    filter_chains: [{filters: [%(netRbac)s, %(echo)s]}]
  - name: http
    address: {socket_address: {address: 127.0.0.1, port_value: %(http)d}}
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: h
          access_log:
          - name: f
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: %(dir)s/http.log
              log_format:
                text_format: "%%REQ(X-USER)%% %%RESPONSE_CODE%% %%DYNAMIC_METADATA(envoy.filters.http.rbac)%%\\n"
          route_config:
            virtual_hosts:
            - name: v
              domains: ["*"]
              routes: [{match: {prefix: /}, direct_response: {status: 200, body: {inline_string: ok}}}]
          http_filters:
          - name: rbac
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
              shadow_rules_stat_prefix: "sh_"
              matcher:
                matcher_list:
                  matchers:
                  - predicate:
                      and_matcher:
                        predicate:
                        - single_predicate:
                            input: {name: ip, typed_config: {"@type": "%(NET)sSourceIPInput"}}
                            custom_match:
                              name: envoy.matching.matchers.ip
                              typed_config: {"@type": "%(IP_INPUT_MATCHER)s", stat_prefix: ipm, cidr_ranges: [{address_prefix: 127.0.0.0, prefix_len: 8}]}
                        - single_predicate:
                            input: {name: h, typed_config: {"@type": "%(HEADER)s", header_name: x-user}}
                            value_match: {exact: admin}
                    on_match: {action: {name: a, typed_config: {"@type": "%(ACTION)s", name: admins, action: ALLOW}}}
                on_no_match: {action: {name: a, typed_config: {"@type": "%(ACTION)s", name: others, action: DENY}}}
              shadow_matcher:
                matcher_tree:
                  input: {name: h, typed_config: {"@type": "%(HEADER)s", header_name: x-user}}
                  exact_match_map:
                    map:
                      guest: {action: {name: a, typed_config: {"@type": "%(ACTION)s", name: shadow-guests, action: DENY}}}
                on_no_match: {action: {name: a, typed_config: {"@type": "%(ACTION)s", name: shadow-rest, action: ALLOW}}}
          - {name: router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
"""

NET_RBAC = """
name: rbac
typed_config:
  "@type": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC
  stat_prefix: n.
  matcher:
    matcher_tree:
      input: {name: ip, typed_config: {"@type": "%(NET)sSourceIPInput"}}
      custom_match:
        name: envoy.matching.custom_matchers.ip_range_matcher
        typed_config:
          "@type": "%(IP_MATCHER)s"
          range_matchers:
          - ranges: [{address_prefix: 10.0.0.0, prefix_len: 8}]
            on_match: {action: {name: a, typed_config: {"@type": "%(ACTION)s", name: tens, action: ALLOW}}}
          - ranges: [{address_prefix: 127.0.0.0, prefix_len: 8}]
            on_match:
              matcher:
                matcher_tree:
                  input: {name: port, typed_config: {"@type": "%(NET)sDestinationPortInput"}}
                  exact_match_map:
                    map:
                      "%(netAllowed)d": {action: {name: a, typed_config: {"@type": "%(ACTION)s", name: loopback-port, action: ALLOW}}}
    on_no_match: {action: {name: a, typed_config: {"@type": "%(ACTION)s", name: deny-rest, action: DENY}}}
  shadow_matcher:
    matcher_list:
      matchers:
      - predicate:
          single_predicate:
            input: {name: port, typed_config: {"@type": "%(NET)sDestinationPortInput"}}
            value_match: {exact: "%(netDenied)d"}
        on_match: {action: {name: a, typed_config: {"@type": "%(ACTION)s", name: shadow-deny, action: DENY}}}
    on_no_match: {action: {name: a, typed_config: {"@type": "%(ACTION)s", name: shadow-allow, action: ALLOW}}}
"""

ECHO = ('{name: echo, typed_config: {"@type": '
        'type.googleapis.com/envoy.extensions.filters.network.echo.v3.Echo}}')

USERS = ("admin", "guest", "")


def _request(port, user):
    response = exchangeOne(port, ("GET / HTTP/1.1\r\nhost: a\r\nx-user: %s\r\n\r\n"
                                  % (user,)).encode())
    return statusOf(response), response.partition(b"\r\n\r\n")[2]


def _connect(port):
    """
    What a connection sending C{hello} gets back: its echo, or nothing when
    RBAC (deciding on the first bytes, as Envoy's does) closes it.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"hello")
        received = b""
        try:
            while len(received) < 5:
                data = s.recv(5 - len(received))
                if not data:
                    break
                received += data
        except ConnectionResetError:
            pass
        return received


class _Side:
    def __init__(self, real):
        self.dir = tempfile.mkdtemp(prefix="txenvoy-rbac-")
        self.ports = {name: freePort() for name in ("admin", "netAllowed", "netDenied", "http")}
        values = dict(self.ports, dir=self.dir, NET=NET, ACTION=ACTION, IP_MATCHER=IP_MATCHER,
                      IP_INPUT_MATCHER=IP_INPUT_MATCHER, HEADER=HEADER)
        # One line of JSON (a YAML flow mapping) in the filter list.
        values["netRbac"] = json.dumps(yaml.safe_load(NET_RBAC % values))
        values["echo"] = ECHO
        config = CONFIG % values
        flush = ("--file-flush-interval-msec", "100")
        self.proxy = (RealEnvoy(config, args=flush) if real
                      else Envoy(config, args=("--concurrency", "1") + flush,
                                 adminPort=self.ports["admin"]))

    def waitReady(self):
        self.proxy.waitPort(self.ports["http"])

    def exercise(self):
        self.net = (_connect(self.ports["netAllowed"]), _connect(self.ports["netDenied"]))
        self.http = [_request(self.ports["http"], user) for user in USERS]

    def rbacStats(self):
        deadline = time.time() + 10
        while True:
            stats = adminStats(self.ports["admin"])
            if stats.get("n.rbac.denied") or time.time() > deadline:
                return {k: v for k, v in stats.items() if ".rbac." in k}
            time.sleep(0.05)

    def log(self):
        path = os.path.join(self.dir, "http.log")
        deadline = time.time() + 10
        while time.time() < deadline:
            if os.path.exists(path):
                with open(path) as f:
                    lines = f.read().splitlines(True)
                if len(lines) == len(USERS) and lines[-1].endswith("\n"):
                    return [line.rstrip("\n") for line in lines]
            time.sleep(0.05)
        raise AssertionError("no access log at %s" % (path,))

    def stop(self):
        self.proxy.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class RbacMatcherComparisonTests(SharedFixture, TestCase):

    @classmethod
    def startFixture(cls):
        cls.sides = []
        try:
            # Both start at once; then each is asked the same.
            for real in (True, False):
                cls.sides.append(_Side(real))
            for side in cls.sides:
                side.waitReady()
                side.exercise()
        except BaseException:
            cls.stopFixture()
            raise

    @classmethod
    def stopFixture(cls):
        for side in cls.sides:
            side.stop()
        cls.sides = []

    def test_network(self):
        """
        The network RBAC matcher: the loopback range's nested port map
        allows one listener's connections and denies the other's (closed
        unanswered).
        """
        envoy, txenvoy = self.sides
        self.assertEqual(envoy.net, (b"hello", b""))
        self.assertEqual(txenvoy.net, envoy.net)

    def test_http(self):
        """The HTTP RBAC matcher: only C{x-user: admin} from 127/8 passes."""
        envoy, txenvoy = self.sides
        self.assertEqual(envoy.http, [(200, b"ok"), (403, b"RBAC: access denied"),
                                      (403, b"RBAC: access denied")])
        self.assertEqual(txenvoy.http, envoy.http)

    def test_shadowMetadata(self):
        """The shadow matcher's result and action name are the dynamic metadata Envoy writes."""
        envoy, txenvoy = (side.log() for side in self.sides)
        self.assertEqual(txenvoy, envoy)

    def test_stats(self):
        """C{allowed}, C{denied}, C{shadow_allowed}, C{shadow_denied}, with their prefixes."""
        envoy, txenvoy = (side.rbacStats() for side in self.sides)
        self.assertEqual(txenvoy, envoy)
