"""
Tests for L{txenvoy.extensions.filters.network.rbac} on a fake clock and
fake transports.

Stat names and behaviours were observed on Envoy 1.40 with
C{10-network-filters.yaml} plus listeners with C{DENY} rules, shadow rules,
a unified matcher, C{shadow_rules_stat_prefix}, C{CONTINUOUS} and
C{delay_deny}, at C{--concurrency 2}.
"""

from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from envoy.extensions.filters.network.rbac.v3 import rbac_pb2

from txenvoy.config import registry
from txenvoy.config.context import FactoryContext
from txenvoy.config.errors import ConfigError
from txenvoy.config.loader import parseDict, parseYaml
from txenvoy.extensions.filters.network.rbac import RbacConfig, createRbac, rbacStatNames
from txenvoy.interfaces import INetworkFilterFactory
from txenvoy.network.filter_chain import FilterChain, FilterChainManager
from txenvoy.network.listener import ActiveListener
from txenvoy.server.dispatcher import Dispatcher
from txenvoy.stats.store import StatsStore
from txenvoy.testing import FakeNetworkConnection, FakeServer
from txenvoy.testing import RecordingProtocol as Recorder

PATH = "static_resources.listeners[4].filter_chains[0].filters[0]"

LOOPBACK_ONLY = """
stat_prefix: tcp_rbac
rules:
  action: ALLOW
  policies:
    loopback_only:
      permissions: [{any: true}]
      principals: [{direct_remote_ip: {address_prefix: 127.0.0.0, prefix_len: 8}}]
"""


def compile(text, context=None):
    message = parseDict(parseYaml(text), rbac_pb2.RBAC())
    if context is None:
        context = FactoryContext(Clock(), StatsStore(), path=PATH)
    return createRbac(message, context)


class RbacFilterTests(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.store = StatsStore()
        self.dispatcher = Dispatcher(self.clock, "worker_0", self.store.shard("worker_0"))

    def connect(self, text, remote="127.0.0.1", nextProtocol=None):
        config = compile(text)
        self.next = Recorder() if nextProtocol is None else nextProtocol
        self.connection = FakeNetworkConnection(self.dispatcher, (remote, 40000), ("127.0.0.1", 10021))
        f = config.buildFilter(self.connection, self.next)
        self.transport = StringTransport()
        f.makeConnection(self.transport)
        return f

    def counter(self, name):
        return self.store.counterValue(name)

    def test_registered(self):
        factory = registry.lookup(registry.Category.NETWORK_FILTER,
                                  "envoy.extensions.filters.network.rbac.v3.RBAC")
        self.assertIsNotNone(factory)
        config = compile(LOOPBACK_ONLY)
        self.assertTrue(verifyObject(INetworkFilterFactory, config))
        self.assertFalse(config.terminal)

    def test_nextConnectedBeforeFirstByte(self):
        """
        Envoy decides in C{onData}: tcp_proxy behind RBAC is connected (and
        counted) as soon as the connection is, denied or not.
        """
        self.connect(LOOPBACK_ONLY, remote="10.0.0.1")
        self.assertTrue(self.next.made)
        self.assertEqual(self.counter("tcp_rbac.rbac.denied"), 0)

    def test_allowedPassesBytesAndCountsOnce(self):
        f = self.connect(LOOPBACK_ONLY)
        f.dataReceived(b"one")
        f.dataReceived(b"two")
        self.assertEqual(self.next.data, [b"one", b"two"])
        self.assertEqual(self.counter("tcp_rbac.rbac.allowed"), 1)
        self.assertEqual(self.counter("tcp_rbac.rbac.denied"), 0)
        self.assertFalse(self.transport.disconnecting)

    def test_deniedClosesWithoutPassingBytes(self):
        """Envoy closes a denied connection (the client sees a FIN)."""
        f = self.connect(LOOPBACK_ONLY, remote="10.0.0.1")
        f.dataReceived(b"secret")
        f.dataReceived(b"more")
        self.assertEqual(self.next.data, [])
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.counter("tcp_rbac.rbac.denied"), 1)
        self.assertEqual(self.connection.streamInfo.connectionTerminationDetails,
                         "rbac_access_denied_matched_policy[none]")

    def test_denyPolicyNamed(self):
        f = self.connect("""
stat_prefix: p
rules:
  action: DENY
  policies:
    loopback:
      permissions: [{any: true}]
      principals: [{remote_ip: {address_prefix: 127.0.0.1}}]
""")
        f.dataReceived(b"x")
        self.assertEqual(self.connection.streamInfo.connectionTerminationDetails,
                         "rbac_access_denied_matched_policy[loopback]")

    def test_shadowCountedOnce(self):
        """
        Envoy 1.40: DENY rules on loopback plus ALLOW shadow rules on the
        port gave C{denied} and C{shadow_allowed} per connection.
        """
        f = self.connect("""
stat_prefix: deny_rbac.
rules:
  action: DENY
  policies:
    loopback:
      permissions: [{any: true}]
      principals: [{remote_ip: {address_prefix: 127.0.0.0, prefix_len: 8}}]
shadow_rules:
  action: ALLOW
  policies:
    port: {permissions: [{destination_port: 10021}], principals: [{any: true}]}
""")
        f.dataReceived(b"a")
        f.dataReceived(b"b")
        self.assertEqual(self.counter("deny_rbac.rbac.denied"), 1)
        self.assertEqual(self.counter("deny_rbac.rbac.shadow_allowed"), 1)
        self.assertEqual(self.counter("deny_rbac.rbac.shadow_denied"), 0)

    def test_shadowOnlyEnforcesNothing(self):
        f = self.connect("""
stat_prefix: s
shadow_rules: {action: ALLOW}
""", remote="10.0.0.1")
        f.dataReceived(b"a")
        self.assertEqual(self.next.data, [b"a"])
        self.assertEqual(self.counter("s.rbac.shadow_denied"), 1)
        self.assertEqual(self.counter("s.rbac.allowed"), 0)

    def test_continuousChecksEveryRead(self):
        """Envoy 1.40 with CONTINUOUS: three reads, C{allowed} went up by 3."""
        f = self.connect(LOOPBACK_ONLY + "enforcement_type: CONTINUOUS\n")
        for chunk in (b"1", b"2", b"3"):
            f.dataReceived(chunk)
        self.assertEqual(self.counter("tcp_rbac.rbac.allowed"), 3)
        self.assertEqual(self.next.data, [b"1", b"2", b"3"])

    def test_delayDeny(self):
        """Envoy 1.40 with C{delay_deny: 0.3s}: the FIN came 0.3 s later."""
        f = self.connect(LOOPBACK_ONLY + "delay_deny: 0.3s\n", remote="10.0.0.1")
        f.dataReceived(b"x")
        self.assertFalse(self.transport.disconnecting)
        self.assertEqual(self.transport.producerState, "paused")
        self.assertEqual(self.counter("tcp_rbac.rbac.denied"), 1)
        self.clock.advance(0.3)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.next.data, [])

    def test_delayDenyTimerCancelledOnClose(self):
        f = self.connect(LOOPBACK_ONLY + "delay_deny: 1s\n", remote="10.0.0.1")
        f.dataReceived(b"x")
        f.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertTrue(self.next.lost)

    def test_finBeforeDataIsChecked(self):
        """
        Envoy 1.40: a FIN with no byte through RBAC to tcp_proxy (which
        half-closes) counted one more C{allowed}.
        """
        f = self.connect(LOOPBACK_ONLY)
        f.readConnectionLost()
        self.assertTrue(self.next.readClosed)
        self.assertEqual(self.counter("tcp_rbac.rbac.allowed"), 1)

    def test_finBeforeDataDenied(self):
        f = self.connect(LOOPBACK_ONLY, remote="10.0.0.1")
        f.readConnectionLost()
        self.assertFalse(self.next.readClosed)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.counter("tcp_rbac.rbac.denied"), 1)

    def test_finWithoutHalfCloseIsNotChecked(self):
        """
        Envoy 1.40: RBAC in front of echo (no half-close), a FIN with no
        byte closed the connection and counted nothing.
        """
        f = self.connect(LOOPBACK_ONLY, remote="10.0.0.1", nextProtocol=Protocol())
        f.readConnectionLost()
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.counter("tcp_rbac.rbac.denied"), 0)

    def test_noRulesAllowsWithoutCounting(self):
        f = self.connect("stat_prefix: open\n", remote="10.0.0.1")
        f.dataReceived(b"x")
        self.assertEqual(self.next.data, [b"x"])
        self.assertEqual(self.counter("open.rbac.allowed"), 0)

    def test_matcher(self):
        """The unified matcher on C{DestinationPortInput}, as run on Envoy 1.40."""
        f = self.connect("""
stat_prefix: m
shadow_rules_stat_prefix: sh_
matcher:
  matcher_list:
    matchers:
    - predicate:
        single_predicate:
          input:
            name: envoy.matching.inputs.destination_port
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.DestinationPortInput
          value_match: {exact: "10021"}
      on_match:
        action:
          name: action
          typed_config:
            "@type": type.googleapis.com/envoy.config.rbac.v3.Action
            name: port-deny
            action: DENY
shadow_rules:
  action: DENY
  policies:
    any: {permissions: [{any: true}], principals: [{any: true}]}
""")
        f.dataReceived(b"x")
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.counter("m.rbac.denied"), 1)
        self.assertEqual(self.counter("m.rbac.sh_.shadow_denied"), 1)
        self.assertEqual(self.connection.streamInfo.connectionTerminationDetails,
                         "rbac_access_denied_matched_policy[port-deny]")

    def test_statNames(self):
        """
        Names read from Envoy 1.40's /stats: C{tcp_rbac.rbac.allowed} (a dot
        is added), C{deny_rbac.rbac.denied} (not doubled), and
        C{m.rbac.sh_.shadow_allowed} for a shadow prefix.
        """
        self.assertEqual(rbacStatNames("tcp_rbac"), {
            "allowed": "tcp_rbac.rbac.allowed", "denied": "tcp_rbac.rbac.denied",
            "shadow_allowed": "tcp_rbac.rbac.shadow_allowed",
            "shadow_denied": "tcp_rbac.rbac.shadow_denied"})
        self.assertEqual(rbacStatNames("deny_rbac.")["denied"], "deny_rbac.rbac.denied")
        self.assertEqual(rbacStatNames("m", "sh_")["shadow_allowed"],
                         "m.rbac.sh_.shadow_allowed")
        self.assertEqual(rbacStatNames("m", "sh_")["allowed"], "m.rbac.allowed")

    def test_statsShownFromStart(self):
        """Envoy lists the four counters at zero before any connection."""
        store = StatsStore()
        context = FactoryContext(Clock(), store, server=FakeServer(store), path=PATH)
        compile(LOOPBACK_ONLY, context)
        counters = store.snapshot().counters
        for name in rbacStatNames("tcp_rbac").values():
            self.assertEqual(counters[name], 0)

    def test_statsPerWorker(self):
        config = compile(LOOPBACK_ONLY)
        other = Dispatcher(self.clock, "worker_1", self.store.shard("worker_1"))
        for dispatcher in (self.dispatcher, other):
            f = config.buildFilter(FakeNetworkConnection(dispatcher), Recorder())
            f.makeConnection(StringTransport())
            f.dataReceived(b"x")
        self.assertEqual(self.counter("tcp_rbac.rbac.allowed"), 2)
        self.assertIsNot(config.statsFor(self.dispatcher), config.statsFor(other))

    def test_headerRuleRejected(self):
        e = self.assertRaises(ConfigError, compile, """
stat_prefix: a
rules:
  policies:
    p: {permissions: [{header: {name: foo, present_match: true}}], principals: [{any: true}]}
""")
        self.assertIn("rule,not supported by RBAC network filter", str(e))

    def test_statPrefixRequired(self):
        e = self.assertRaises(ConfigError, compile, "rules: {}")
        self.assertIn("RBACValidationError.StatPrefix", str(e))

    def test_config(self):
        config = compile(LOOPBACK_ONLY + "enforcement_type: CONTINUOUS\ndelay_deny: 2s\n")
        self.assertIsInstance(config, RbacConfig)
        self.assertTrue(config.continuous)
        self.assertEqual(config.delayDeny, 2.0)
        self.assertIsNone(config.shadowEngine)


class FakeMatch:
    key = (None, (), (), "", (), (), 0, (), ())


class FakeListenerConfig:
    perConnectionBufferLimitBytes = 1024
    listenerFiltersTimeout = 15.0
    continueOnListenerFiltersTimeout = False
    statPrefix = "listener.127.0.0.1_10021."
    accessLogs = ()
    ignoreGlobalConnLimit = False
    connectionLimit = staticmethod(lambda: None)
    listenerFilters = ()

    def __init__(self, factories):
        self.filterChainManager = FilterChainManager(
            [FilterChain("c", factories, None, FakeMatch())], None, "l")


class TerminalFactory:
    terminal = True

    def __init__(self):
        self.built = []

    def buildFilter(self, connection, nextProtocol):
        p = Recorder()
        self.built.append(p)
        return p


class ChainTests(SynchronousTestCase):
    """RBAC in a real filter chain, from the accepted socket."""

    def test_throughServerConnection(self):
        clock = Clock()
        store = StatsStore()
        dispatcher = Dispatcher(clock, "worker_0", store.shard("worker_0"))
        terminal = TerminalFactory()
        listener = ActiveListener(dispatcher, FakeListenerConfig([compile(LOOPBACK_ONLY),
                                                                  terminal]))
        results = []
        for peer in ("127.0.0.1", "192.0.2.9"):
            conn = listener.buildProtocol(IPv4Address("TCP", peer, 5555))
            transport = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 10021),
                                        peerAddress=IPv4Address("TCP", peer, 5555))
            conn.makeConnection(transport)
            conn.dataReceived(b"hello")
            results.append((terminal.built[-1].data, transport.disconnecting))
        self.assertEqual(results, [([b"hello"], False), ([], True)])
        self.assertEqual(store.counterValue("tcp_rbac.rbac.allowed"), 1)
        self.assertEqual(store.counterValue("tcp_rbac.rbac.denied"), 1)

    def test_finThroughServerConnection(self):
        """
        The FIN of the socket reaches RBAC as a half-close once the filter
        has its transport (its interfaces are not the transport's).
        """
        store = StatsStore()
        dispatcher = Dispatcher(Clock(), "worker_0", store.shard("worker_0"))
        terminal = TerminalFactory()
        listener = ActiveListener(dispatcher, FakeListenerConfig([compile(LOOPBACK_ONLY),
                                                                  terminal]))
        conn = listener.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
        conn.makeConnection(StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 10021),
                                            peerAddress=IPv4Address("TCP", "127.0.0.1", 5555)))
        self.assertTrue(IHalfCloseableProtocol.providedBy(conn.head))
        conn.readConnectionLost()
        self.assertTrue(terminal.built[-1].readClosed)
        self.assertEqual(store.counterValue("tcp_rbac.rbac.allowed"), 1)
