"""
Tests for L{txenvoy.network.listener}: compiling a C{Listener} (the
accept path itself is in C{tests.network.test_connection}).
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from envoy.config.listener.v3 import listener_pb2
from txenvoy.config.context import FactoryContext
from txenvoy.config.errors import ConfigError, UnsupportedField
from txenvoy.config.loader import parseDict
from txenvoy.config.registry import loadPlugins
from txenvoy.network.listener import ListenerConfig, listenerStatPrefix
from txenvoy.network.pipe import PipeAddress
from txenvoy.stats.store import StatsStore

ECHO = {"name": "echo", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.network.echo.v3.Echo"}}
PROXY = {"name": "tcp", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
    "stat_prefix": "t", "cluster": "c"}}
PATH = "static_resources.listeners[0]"


def compile_(**fields):
    loadPlugins()
    listener = {"name": "l", "address": {"socket_address": {"address": "127.0.0.1",
                                                            "port_value": 10000}},
                "filter_chains": [{"filters": [ECHO]}]}
    listener.update(fields)
    return ListenerConfig(parseDict(listener, listener_pb2.Listener()),
                          FactoryContext(Clock(), StatsStore(), path=PATH), PATH)


class ListenerConfigTests(SynchronousTestCase):

    def test_envoyDefaults(self):
        """Envoy's defaults: 1 MiB buffers, reuse_port on, 15 s listener filter timeout."""
        config = compile_()
        self.assertEqual(config.address, ("127.0.0.1", 10000))
        self.assertEqual(config.statPrefix, "listener.127.0.0.1_10000.")
        self.assertEqual(config.perConnectionBufferLimitBytes, 1024 * 1024)
        self.assertTrue(config.enableReusePort)
        self.assertEqual(config.listenerFiltersTimeout, 15.0)
        self.assertEqual(config.listenerFilters, [])

    def test_values(self):
        config = compile_(per_connection_buffer_limit_bytes=4096,
                          listener_filters_timeout="0.5s", enable_reuse_port=False)
        self.assertEqual((config.perConnectionBufferLimitBytes, config.listenerFiltersTimeout,
                          config.enableReusePort), (4096, 0.5, False))

    def test_statPrefixIpv6(self):
        """Envoy keeps the brackets of an IPv6 listener's stat name."""
        self.assertEqual(listenerStatPrefix("::1", 80), "listener.[::1]_80.")

    def test_noFilterChains(self):
        """Envoy 1.40's message, with the address."""
        e = self.assertRaises(ConfigError, compile_, filter_chains=[])
        self.assertIn("error adding listener '127.0.0.1:10000': no filter chains specified",
                      str(e))

    def test_terminalNotLast(self):
        e = self.assertRaises(ConfigError, compile_, filter_chains=[{"filters": [ECHO, PROXY]}])
        self.assertIn("filter_chains[0].filters[0]: terminal filter named echo of type "
                      "envoy.extensions.filters.network.echo.v3.Echo must be the last filter "
                      "in a network filter chain.", str(e))

    def test_unsupportedField(self):
        e = self.assertRaises(UnsupportedField, compile_, udp_listener_config={})
        self.assertIn(PATH + ".udp_listener_config", str(e))

    def test_pipeAddress(self):
        """
        A pipe listener is named by its path, as Envoy names it
        (C{listener./tmp/x.sock.}), and shares one socket: no reuse_port.
        """
        config = compile_(address={"pipe": {"path": "/tmp/x.sock", "mode": 0o600}})
        self.assertEqual(config.address, PipeAddress("/tmp/x.sock", 0o600))
        self.assertEqual(config.statPrefix, "listener./tmp/x.sock.")
        self.assertFalse(config.enableReusePort)

    def test_abstractPipeAddress(self):
        config = compile_(address={"pipe": {"path": "@name"}})
        self.assertEqual(config.statPrefix, "listener.@name.")

    def test_envoyInternalAddressUnsupported(self):
        e = self.assertRaises(UnsupportedField, compile_,
                              address={"envoy_internal_address": {"server_listener_name": "x"}})
        self.assertIn(PATH + ".address.envoy_internal_address", str(e))

    def test_socketAddressFieldsRefused(self):
        """A listener socket_address field txenvoy does not implement is refused."""
        e = self.assertRaises(UnsupportedField, compile_, address={"socket_address": {
            "address": "::", "port_value": 1, "ipv4_compat": True}})
        self.assertIn(PATH + ".address.socket_address.ipv4_compat", str(e))

    def test_filterChainMatcherChainsMayShareMatches(self):
        """
        Chains picked by a C{filter_chain_matcher} may share their
        C{filter_chain_match}: Envoy ignores it, so it is not reported as
        chains with the same matching rules.
        """
        import json

        from txenvoy.config.loader import loadBootstrap
        from txenvoy.server.server import Server

        config = {"static_resources": {"listeners": [{
            "name": "l", "address": {"socket_address": {"address": "127.0.0.1",
                                                        "port_value": 10000}},
            "filter_chain_matcher": {"on_no_match": {"action": {"name": "a", "typed_config": {
                "@type": "type.googleapis.com/google.protobuf.StringValue", "value": "b"}}}},
            "filter_chains": [{"name": "a", "filters": [ECHO]},
                              {"name": "b", "filters": [ECHO]}]}]}}
        server = Server(Clock(), loadBootstrap(None, json.dumps(config)), validateOnly=True)
        manager = server.listenerManager.listeners[0].filterChainManager
        self.assertEqual(manager.findFilterChain(None).name, "b")


INTERNAL_LISTENER = {
    "name": "envoy.bootstrap.internal_listener",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.bootstrap."
                              "internal_listener.v3.InternalListener",
                     "buffer_size_kb": 8}}


def compileInternal(extensions=(INTERNAL_LISTENER,), **fields):
    """Compile listener C{b} as an internal listener under a bootstrap."""
    from envoy.config.bootstrap.v3 import bootstrap_pb2

    loadPlugins()
    bootstrap = parseDict({"bootstrap_extensions": list(extensions)},
                          bootstrap_pb2.Bootstrap())
    listener = {"name": "b", "internal_listener": {}, "filter_chains": [{"filters": [ECHO]}]}
    listener.update(fields)
    return ListenerConfig(parseDict(listener, listener_pb2.Listener()),
                          FactoryContext(Clock(), StatsStore(), path=PATH, bootstrap=bootstrap),
                          PATH)


class InternalListenerConfigTests(SynchronousTestCase):
    """C{internal_listener}: a listener with no socket, named by its name."""

    def test_addressAndStats(self):
        """
        Envoy names an internal listener C{envoy://b/} and its stats
        C{listener.envoy_internal_b.*}; its buffer is the bootstrap
        extension's C{buffer_size_kb}.
        """
        config = compileInternal()
        self.assertEqual(str(config.address), "envoy://b/")
        self.assertEqual(config.statPrefix, "listener.envoy_internal_b.")
        self.assertEqual(config.internalBufferSize, 8 * 1024)
        self.assertTrue(config.isInternal)
        self.assertFalse(config.enableReusePort)

    def test_defaultBufferSize(self):
        """Without C{buffer_size_kb}, Envoy's 64 KiB."""
        extension = {"name": "il", "typed_config": {"@type": INTERNAL_LISTENER["typed_config"][
            "@type"]}}
        self.assertEqual(compileInternal([extension]).internalBufferSize, 64 * 1024)

    def test_bootstrapExtensionMandatory(self):
        """Envoy 1.40: C{InternalListener bootstrap extension is mandatory}."""
        e = self.assertRaises(ConfigError, compileInternal, [])
        self.assertIn("error adding listener named 'b': InternalListener bootstrap extension "
                      "is mandatory", str(e))
        self.assertIn(PATH + ".internal_listener", str(e))

    def test_noAddress(self):
        """
        Envoy 1.40: C{address should not be used when an internal listener
        config is provided}.
        """
        e = self.assertRaises(ConfigError, compileInternal, address={
            "socket_address": {"address": "127.0.0.1", "port_value": 1}})
        self.assertIn("error adding listener 'b': address should not be used when an internal "
                      "listener config is provided", str(e))
