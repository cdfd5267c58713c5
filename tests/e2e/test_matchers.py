"""
The unified matcher API (C{xds.type.matcher.v3.Matcher}), compared with
Envoy 1.40 on the same YAML: a listener's C{filter_chain_matcher} answers
each connection with the chain it names (a C{direct_response} saying the
chain's name) through a C{matcher_list} with single, or, and and not
predicates and a nested C{matcher_tree}, with the C{default_filter_chain}
when nothing matches and no chain for a name the listener lacks; a virtual
host's C{matcher} picks its routes by a request header.
"""

import socket
import ssl

from twisted.trial.unittest import TestCase

from tests.e2e.harness import Envoy, RealEnvoy, SharedFixture, adminStats, freePort

_NET = "type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3."


def _input(name):
    return '{name: %s, typed_config: {"@type": %s%s}}' % (name, _NET, name)


def _action(chain):
    return ('{action: {name: chain, typed_config: {"@type": '
            'type.googleapis.com/google.protobuf.StringValue, value: %s}}}' % (chain,))


def _exact(inputName, value):
    return ('{single_predicate: {input: %s, value_match: {exact: "%s"}}}'
            % (_input(inputName), value))


def _chain(name):
    return """
    - name: %s
      filters:
      - name: direct
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.direct_response.v3.Config
          response: {inline_string: %s}""" % (name, name)


CONFIG = """
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: %(admin)d}}
static_resources:
  listeners:
  - name: matched
    address: {socket_address: {address: 127.0.0.1, port_value: %(port)d}}
    listener_filters:
    - name: tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector
    filter_chain_matcher:
      matcher_list:
        matchers:
        - predicate: %(byPort)s
          on_match: %(byPortAction)s
        - predicate: %(alpn)s
          on_match: %(missingAction)s
        - predicate: {or_matcher: {predicate: [%(sniA)s, %(sniZ)s]}}
          on_match: %(sniAction)s
        - predicate:
            and_matcher:
              predicate:
              - %(tls)s
              - {not_matcher: %(sniT)s}
          on_match: %(tlsOtherAction)s
      on_no_match:
        matcher:
          matcher_tree:
            input: %(transport)s
            exact_match_map:
              map:
                "tls": %(treeAction)s
    filter_chains: %(chains)s
    default_filter_chain: %(default)s
"""


def _config(port, admin, sourcePort):
    chains = "".join(_chain(n) for n in ("by_port", "sni", "tls_other", "tree"))
    return CONFIG % {
        "admin": admin, "port": port,
        "byPort": _exact("SourcePortInput", sourcePort),
        "byPortAction": _action("by_port"),
        "alpn": _exact("ApplicationProtocolInput", "'h2'"),
        "missingAction": _action("no_such_chain"),
        "sniA": _exact("ServerNameInput", "a.example"),
        "sniZ": _exact("ServerNameInput", "z.example"),
        "sniAction": _action("sni"),
        "tls": _exact("TransportProtocolInput", "tls"),
        "tlsOtherAction": _action("tls_other"),
        "sniT": _exact("ServerNameInput", "t.example"),
        "transport": _input("TransportProtocolInput"),
        "treeAction": _action("tree"),
        "chains": chains,
        "default": ('{name: default, filters: [{name: direct, typed_config: {"@type": '
                    'type.googleapis.com/envoy.extensions.filters.network.direct_response.v3.'
                    'Config, response: {inline_string: default}}}]}'),
    }


def _clientHello(serverName, alpn=()):
    """The first bytes of a TLS handshake naming C{serverName}."""
    context = ssl.create_default_context()
    if alpn:
        context.set_alpn_protocols(list(alpn))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=serverName)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def _answer(port, data, sourcePort=None):
    """The bytes a connection gets back after sending C{data}."""
    sock = socket.socket()
    sock.settimeout(10)
    if sourcePort is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", sourcePort))
    sock.connect(("127.0.0.1", port))
    sock.sendall(data)
    chunks = []
    while True:
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    sock.close()
    return b"".join(chunks)


class FilterChainMatcherTests(SharedFixture, TestCase):

    @classmethod
    def startFixture(cls):
        cls.sides = []
        try:
            for real in (True, False):
                port, admin, sourcePort = freePort(), freePort(), freePort()
                config = _config(port, admin, sourcePort)
                proxy = RealEnvoy(config) if real else Envoy(
                    config, args=("--concurrency", "1"), adminPort=admin)
                cls.sides.append((proxy, port, admin, sourcePort))
                proxy.waitPort(port)
        except BaseException:
            cls.stopFixture()
            raise

    @classmethod
    def stopFixture(cls):
        for side in cls.sides:
            side[0].stop()
        cls.sides = []

    def answers(self, data, bySourcePort=False):
        """What Envoy and txenvoy answer, in that order."""
        return [_answer(port, data, sourcePort if bySourcePort else None)
                for _, port, _, sourcePort in self.sides]

    def test_singlePredicate(self):
        """C{SourcePortInput} in a single predicate picks C{by_port}."""
        self.assertEqual(self.answers(b"hello", bySourcePort=True), [b"by_port"] * 2)

    def test_orPredicate(self):
        """An C{or_matcher} of server names picks C{sni}."""
        self.assertEqual(self.answers(_clientHello("z.example")), [b"sni"] * 2)

    def test_andNotPredicate(self):
        """TLS and not C{t.example}: C{tls_other}."""
        self.assertEqual(self.answers(_clientHello("b.example")), [b"tls_other"] * 2)

    def test_nestedTree(self):
        """
        Nothing in the list matches TLS for C{t.example}: C{on_no_match}'s
        nested C{matcher_tree} on the transport protocol picks C{tree}.
        """
        self.assertEqual(self.answers(_clientHello("t.example")), [b"tree"] * 2)

    def test_noMatchDefaultChain(self):
        """Nothing matches plain text: the C{default_filter_chain} answers."""
        self.assertEqual(self.answers(b"hello"), [b"default"] * 2)

    def test_unknownChainName(self):
        """
        Envoy's C{FilterChainNameAction}: a chain name the listener does
        not have (here for ALPN C{h2}) is no chain at all, not the default:
        the connection is closed and counted in C{no_filter_chain_match}.
        """
        def unmatched():
            return [adminStats(admin).get("listener.127.0.0.1_%d.no_filter_chain_match"
                                          % (port,)) for _, port, admin, _ in self.sides]

        before = unmatched()
        self.assertEqual(self.answers(_clientHello("a.example", alpn=("h2",))), [b""] * 2)
        self.assertEqual([n - b for n, b in zip(unmatched(), before)], [1, 1])


VHOST_CONFIG = """
static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: %(port)d}}
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: h
          route_config:
            virtual_hosts:
            - name: v
              domains: ["*"]
              matcher:
                matcher_tree:
                  input: {name: p, typed_config: {"@type": type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput, header_name: x-tenant}}
                  exact_match_map:
                    map:
                      a:
                        action: {name: r, typed_config: {"@type": type.googleapis.com/envoy.config.route.v3.Route, match: {prefix: /never}, direct_response: {status: 201, body: {inline_string: a}}}}
                      b:
                        action: {name: r, typed_config: {"@type": type.googleapis.com/envoy.config.route.v3.RouteList, routes: [{match: {prefix: /x}, direct_response: {status: 202, body: {inline_string: bx}}}, {match: {prefix: /}, direct_response: {status: 203, body: {inline_string: b}}}]}}
                on_no_match:
                  action: {name: r, typed_config: {"@type": type.googleapis.com/envoy.config.route.v3.Route, match: {prefix: /}, direct_response: {status: 204}}}
          http_filters: [{name: r, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
"""


def _get(port, tenant, path, responseHeader=None):
    """C{(status, body)}, and the value of C{responseHeader} if named."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers={"x-tenant": tenant})
    response = conn.getresponse()
    result = (response.status, response.read())
    if responseHeader is not None:
        result += (response.getheader(responseHeader),)
    conn.close()
    return result


class VirtualHostMatcherTests(SharedFixture, TestCase):
    """
    A virtual host's C{matcher} (sublinear routing) compared with Envoy:
    an exact map on a request header gives a C{Route} (whose own C{match}
    still applies) or a C{RouteList}; C{on_no_match} gives the rest.
    """

    CONFIG = VHOST_CONFIG

    @classmethod
    def startFixture(cls):
        cls.ports = []
        cls.proxies = []
        cls.admins = []
        cls.ports2 = []
        try:
            for real in (True, False):
                port, admin, port2 = freePort(), freePort(), freePort()
                config = cls.CONFIG % {"port": port, "admin": admin, "port2": port2}
                proxy = RealEnvoy(config) if real else Envoy(config, args=("--concurrency", "1"))
                cls.proxies.append(proxy)
                cls.ports.append(port)
                cls.admins.append(admin)
                cls.ports2.append(port2)
                proxy.waitPort(port)
        except BaseException:
            cls.stopFixture()
            raise

    @classmethod
    def stopFixture(cls):
        for proxy in cls.proxies:
            proxy.stop()
        cls.proxies = []

    def test_routes(self):
        """Each tenant and path gets Envoy's status and body."""
        for tenant in ("a", "b", "c"):
            for path in ("/", "/x", "/never"):
                envoy, txenvoy = (_get(port, tenant, path) for port in self.ports)
                self.assertEqual(txenvoy, envoy, (tenant, path))
        self.assertEqual(_get(self.ports[0], "b", "/x"), (202, b"bx"))
        self.assertEqual(_get(self.ports[0], "a", "/"), (404, b""))


SKIP_CONFIG = """
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: %(admin)d}}
static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: %(port)d}}
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: h
          route_config: {virtual_hosts: [{name: v, domains: ["*"], routes: [{match: {prefix: /}, direct_response: {status: 200, body: {inline_string: ok}}}]}]}
          http_filters:
          - name: envoy.filters.http.fault
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher
              xds_matcher:
                matcher_tree:
                  input: {name: h, typed_config: {"@type": type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput, header_name: x-tenant}}
                  exact_match_map:
                    map:
                      "trusted": {action: {name: skip, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.common.matcher.action.v3.SkipFilter}}}
              extension_config:
                name: envoy.filters.http.fault
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
                  abort: {http_status: 418, percentage: {numerator: 100}}
          - {name: r, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  - name: composite
    address: {socket_address: {address: 127.0.0.1, port_value: %(port2)d}}
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: c
          route_config: {virtual_hosts: [{name: v, domains: ["*"], routes: [{match: {prefix: /}, direct_response: {status: 200, body: {inline_string: ok}}}]}]}
          http_filters:
          - name: composite
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher
              extension_config:
                name: composite
                typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.composite.v3.Composite}
              xds_matcher:
                matcher_tree:
                  input: {name: h, typed_config: {"@type": type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput, header_name: x-tenant}}
                  exact_match_map:
                    map:
                      fault:
                        action:
                          name: f
                          typed_config:
                            "@type": type.googleapis.com/envoy.extensions.filters.http.composite.v3.ExecuteFilterAction
                            typed_config:
                              name: fault
                              typed_config:
                                "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
                                abort: {http_status: 418, percentage: {numerator: 100}}
                      sampled_out:
                        action:
                          name: f
                          typed_config:
                            "@type": type.googleapis.com/envoy.extensions.filters.http.composite.v3.ExecuteFilterAction
                            sample_percent: {default_value: {numerator: 0}}
                            typed_config:
                              name: fault
                              typed_config:
                                "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
                                abort: {http_status: 418, percentage: {numerator: 100}}
                      mutate:
                        action:
                          name: m
                          typed_config:
                            "@type": type.googleapis.com/envoy.extensions.filters.http.composite.v3.ExecuteFilterAction
                            typed_config:
                              name: hm
                              typed_config:
                                "@type": type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation
                                mutations:
                                  response_mutations:
                                  - append: {header: {key: x-composite, value: mutated}}
                      skip:
                        action: {name: s, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.common.matcher.action.v3.SkipFilter}}
          - {name: r, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
"""


class ExtensionWithMatcherTests(VirtualHostMatcherTests):
    """
    C{ExtensionWithMatcher} compared with Envoy: the wrapped fault filter
    aborts every request but those its matcher skips (C{SkipFilter}).
    """

    CONFIG = SKIP_CONFIG

    def test_routes(self):
        for tenant in ("trusted", "other", ""):
            envoy, txenvoy = (_get(port, tenant, "/") for port in self.ports)
            self.assertEqual(txenvoy, envoy, tenant)
        self.assertEqual(_get(self.ports[0], "trusted", "/"), (200, b"ok"))
        self.assertEqual(_get(self.ports[0], "other", "/"), (418, b"fault filter abort"))

    def test_composite(self):
        """
        The C{composite} filter, compared with Envoy: the matcher's
        C{ExecuteFilterAction} runs the fault filter (an abort) or the
        header mutation filter (a response header) in its place; a request
        left out by C{sample_percent}, skipped or unmatched passes; each
        delegation counts C{composite.filter_delegation_success}.
        """
        responses = {}
        for tenant in ("fault", "sampled_out", "mutate", "skip", "none"):
            envoy, txenvoy = (_get(port, tenant, "/", "x-composite") for port in self.ports2)
            self.assertEqual(txenvoy, envoy, tenant)
            responses[tenant] = envoy
        self.assertEqual(responses["fault"][:2], (418, b"fault filter abort"))
        self.assertEqual(responses["mutate"], (200, b"ok", "mutated"))
        self.assertEqual(responses["sampled_out"], (200, b"ok", None))
        names = ["http.c.composite.filter_delegation_success",
                 "http.c.composite.filter_delegation_error", "http.c.fault.aborts_injected",
                 "http.c.downstream_rq_2xx", "http.c.downstream_rq_4xx"]
        envoy, txenvoy = (adminStats(admin) for admin in self.admins)
        self.assertEqual([txenvoy.get(n) for n in names], [envoy.get(n) for n in names])
        self.assertEqual(envoy["http.c.composite.filter_delegation_success"], 2)

