# -*- test-case-name: tests.network.test_listener -*-
"""
Listeners: the compiled C{Listener} config, and the per-worker
C{ActiveListener} that accepts its connections.
"""

import uuid

from twisted.internet.protocol import ServerFactory

from txenvoy.config import messages, registry
from txenvoy.config.errors import FAILED, ConfigError, UnsupportedField, attempt
from txenvoy.config.fields import checkFields
from txenvoy.config.registry import Category
from txenvoy.network.accept import OverflowLog
from txenvoy.network.address import formatAddress
from txenvoy.network.pipe import PipeAddress, pipeAddress
from txenvoy.network.user_space import InternalAddress, internalBufferSize
from txenvoy.network.filter_chain import FilterChain, FilterChainManager, FilterChainMatch
from txenvoy.network.filter_chain_matcher import FilterChainMatcher, MatcherFilterChainManager
from txenvoy.server.logging import componentLogger
from txenvoy.server.overload_manager import (
    GLOBAL_DOWNSTREAM_MAX_CONNECTIONS,
    REJECT_INCOMING_CONNECTIONS,
    STOP_ACCEPTING_CONNECTIONS,
    SharedCount,
    overloadStateOf,
)
from txenvoy.stats.per_worker import StatsStruct

DEFAULT_BUFFER_LIMIT = 1024 * 1024

_handlerLog = componentLogger("conn_handler")


def _refused(addr, why):
    # Envoy's "closing connection from 127.0.0.1:5555: listener connection
    # limit reached".
    _handlerLog.debug("closing connection from %s:%s: %s", getattr(addr, "host", "?"),
                      getattr(addr, "port", "?"), why)


def listenerStatPrefix(host, port=None):
    """
    Envoy's stat name for a listener address: C{listener.127.0.0.1_10000.}
    (dots kept, the last C{:} becomes C{_}); for a pipe, its path as
    written (C{listener./run/envoy.sock.}, C{listener.@name.}).
    """
    if isinstance(host, PipeAddress):
        return "listener.%s." % (host.path,)
    if isinstance(host, InternalAddress):
        return "listener.envoy_internal_%s." % (host.listenerName,)
    return "listener.%s_%d." % (("[%s]" % host) if ":" in host else host, port)


#: envoy.config.core.v3.SocketAddress.Protocol.UDP
UDP = 1


def socketAddress(address, path, allowUdp=False):
    """
    The C{(host, port)} of an C{envoy.config.core.v3.Address}, or the
    L{PipeAddress} of a C{pipe}.
    """
    which = address.WhichOneof("address")
    if which == "pipe":
        return pipeAddress(address.pipe, path + ".pipe")
    if which != "socket_address":
        raise UnsupportedField(path + "." + (which or "address"),
                               "only socket_address and pipe")
    sa = address.socket_address
    # ipv4_compat (a dual-stack "::" socket), resolver_name and
    # network_namespace_filepath are not implemented for listeners.
    checkFields(sa, ("address", "port_value", "named_port", "protocol"),
                path + ".socket_address")
    if sa.protocol != 0 and not (allowUdp and sa.protocol == UDP):
        raise UnsupportedField(path + ".socket_address.protocol", "only TCP")
    if sa.WhichOneof("port_specifier") == "named_port":
        raise UnsupportedField(path + ".socket_address.named_port")
    return sa.address, sa.port_value


# Listener fields that change nothing txenvoy does, accepted as they are.
_IGNORED_FIELDS = {
    "name", "address", "filter_chains", "default_filter_chain", "listener_filters",
    "listener_filters_timeout", "continue_on_listener_filters_timeout",
    "per_connection_buffer_limit_bytes", "access_log", "enable_reuse_port",
    "tcp_backlog_size", "drain_type", "traffic_direction", "stat_prefix",
    # Kernel-level tuning txenvoy leaves to the kernel's defaults.
    "max_connections_to_accept_per_socket_event", "connection_balance_config",
    "reuse_port", "metadata", "bind_to_port", "socket_options",
    "ignore_global_conn_limit", "enable_mptcp", "freebind", "transparent",
    "tcp_fast_open_queue_length",
}


class ListenerConfig:
    """
    One compiled listener.

    @ivar name: its name (a UUID when the config gives none, as Envoy does).
    @ivar address: C{(host, port)}, a L{PipeAddress}, or for an internal
        listener (C{internal_listener}) its L{InternalAddress}.
    @ivar internalBufferSize: an internal listener's buffer size in bytes
        (the bootstrap extension's C{buffer_size_kb}), else C{None}.
    @ivar statPrefix: C{listener.<address>.}.
    @ivar filterChainManager: the L{FilterChainManager}.
    @ivar listenerFilters: L{txenvoy.interfaces.IListenerFilterFactory}s.
    @ivar accessLogs: loggers called when each connection closes.
    @ivar proto: the C{Listener} message (for the admin).
    """

    def __init__(self, proto, context, path):
        self.proto = proto
        self.name = proto.name or str(uuid.uuid4())
        self.internalBufferSize = None
        if proto.HasField("internal_listener"):
            # Reached only through cluster endpoints' envoy_internal_address
            # (txenvoy.network.user_space); no socket.
            if proto.HasField("address"):
                raise messages.internalListenerWithAddress(self.name, path + ".address")
            checkFields(proto.internal_listener, (), path + ".internal_listener")
            self.internalBufferSize = internalBufferSize(getattr(context, "bootstrap", None))
            if self.internalBufferSize is None:
                raise messages.internalListenerNeedsBootstrap(self.name,
                                                              path + ".internal_listener")
            self.address = InternalAddress(self.name)
        elif not proto.HasField("address"):
            raise messages.listenerAddressMissing(self.name, path)
        else:
            self.address = socketAddress(proto.address, path + ".address", allowUdp=True)
        checkFields(proto, _IGNORED_FIELDS | {"filter_chain_matcher", "internal_listener",
                                              "udp_listener_config"}, path)
        #: A UDP listener: its C{listener_filters} are UDP listener filters
        #: (C{udp_proxy}), it has no filter chains.
        self.isUdp = (proto.HasField("address")
                      and proto.address.WhichOneof("address") == "socket_address"
                      and proto.address.socket_address.protocol == UDP)
        self.udpListenerFilters = []
        if proto.HasField("udp_listener_config"):
            upath = path + ".udp_listener_config"
            if not self.isUdp:
                raise UnsupportedField(upath, "only on a UDP listener")
            # Socket and QUIC tuning is not implemented.
            checkFields(proto.udp_listener_config, (), upath)
        self.isPipe = isinstance(self.address, PipeAddress)
        self.isInternal = self.internalBufferSize is not None
        self.statPrefix = (listenerStatPrefix(self.address) if self.isPipe or self.isInternal
                           else listenerStatPrefix(*self.address))
        self.perConnectionBufferLimitBytes = (
            proto.per_connection_buffer_limit_bytes.value
            if proto.HasField("per_connection_buffer_limit_bytes") else DEFAULT_BUFFER_LIMIT)
        # A Unix socket has no SO_REUSEPORT: its one socket is shared.
        self.enableReusePort = not (self.isPipe or self.isInternal) and (
            proto.enable_reuse_port.value if proto.HasField("enable_reuse_port") else True)
        self.backlog = proto.tcp_backlog_size.value if proto.HasField("tcp_backlog_size") else 128
        self.listenerFiltersTimeout = (
            proto.listener_filters_timeout.ToTimedelta().total_seconds()
            if proto.HasField("listener_filters_timeout") else 15.0)
        self.continueOnListenerFiltersTimeout = proto.continue_on_listener_filters_timeout
        if self.isUdp:
            self._compileUdp(proto, context, path)
            return
        # Inside a collection of errors (txenvoy.config.errors) a failing
        # filter or chain is reported and left out, and the others checked.
        # Transport sockets name their stats after the listener.
        context = context.child(context.path, context.configPath)
        context.listenerStatPrefix = self.statPrefix
        # What the listener warms on (an RDS subscription to a control
        # plane): each has whenReady(), a Deferred.
        context.initTargets = self.initTargets = []
        self.listenerFilters = [
            attempt(context.createExtension, Category.LISTENER_FILTER, lf,
                    "%s.listener_filters[%d]" % (path, i))
            for i, lf in enumerate(proto.listener_filters)
        ]
        chains = [attempt(self._compileChain, fc, context, "%s.filter_chains[%d]" % (path, i))
                  for i, fc in enumerate(proto.filter_chains)]
        default = (attempt(self._compileChain, proto.default_filter_chain, context,
                           path + ".default_filter_chain")
                   if proto.HasField("default_filter_chain") else None)
        if any(c is FAILED for c in chains) or default is FAILED:
            chains = [c for c in chains if c is not FAILED]
            default = None if default is FAILED else default
        elif not chains and default is None:
            raise messages.noFilterChains(formatAddress(self.address), path)
        if proto.HasField("filter_chain_matcher"):
            # Chains picked by a matcher may share their (ignored) matches.
            matcher = FilterChainMatcher(proto.filter_chain_matcher,
                                         path + ".filter_chain_matcher")
            self.filterChainManager = MatcherFilterChainManager(chains, default, matcher)
        else:
            self.filterChainManager = FilterChainManager(chains, default, path)
        from txenvoy.accesslog.filters import createAccessLog
        self.accessLogs = [attempt(createAccessLog, al, context, "%s.access_log[%d]" % (path, i))
                           for i, al in enumerate(proto.access_log)]
        self.ignoreGlobalConnLimit = proto.ignore_global_conn_limit
        # Envoy's per-listener limit: a runtime key, counted over all workers.
        self.connectionLimitKey = "envoy.resource_limits.listener.%s.connection_limit" % (
            self.name,)
        self.runtime = getattr(context, "runtime", None)
        self.openConnections = SharedCount()

    def _compileUdp(self, proto, context, path):
        """A UDP listener: its UDP listener filters, no filter chains."""
        self.listenerFilters = []
        self.udpListenerFilters = [
            attempt(context.createExtension, Category.UDP_LISTENER_FILTER, lf,
                    "%s.listener_filters[%d]" % (path, i))
            for i, lf in enumerate(proto.listener_filters)]
        if proto.filter_chains:
            raise UnsupportedField(path + ".filter_chains", "a UDP listener's filter chains "
                                   "(QUIC)")
        self.filterChainManager = FilterChainManager([], None, path)
        self.accessLogs = []
        self.ignoreGlobalConnLimit = True
        self.connectionLimitKey = None
        self.runtime = None
        self.openConnections = SharedCount()

    def connectionLimit(self):
        """The runtime's limit on this listener's open connections, or C{None}."""
        runtime = self.runtime
        if runtime is None:
            return None
        return runtime.snapshot().getInteger(self.connectionLimitKey, None)

    @staticmethod
    def _compileChain(fc, context, path):
        checkFields(fc, ("filter_chain_match", "filters", "transport_socket", "name"), path,
                    ("metadata",))
        if fc.HasField("transport_socket"):
            transport = context.createExtension(
                Category.TRANSPORT_SOCKET_DOWNSTREAM, fc.transport_socket, path + ".transport_socket")
        else:
            transport = None
        factories = []
        for i, f in enumerate(fc.filters):
            factories.append(attempt(context.createExtension,
                                     Category.NETWORK_FILTER, f, "%s.filters[%d]" % (path, i)))
        if any(f is FAILED for f in factories):
            # Reported; which filter is terminal is unknown now.
            return FAILED
        for i, factory in enumerate(factories[:-1]):
            if factory.terminal:
                raise ConfigError(
                    "%s.filters[%d]: terminal filter named %s of type %s must be the last filter "
                    "in a network filter chain." % (path, i, fc.filters[i].name,
                                                     registry.typeNameOf(fc.filters[i].typed_config)))
        if factories and not factories[-1].terminal:
            last = fc.filters[len(factories) - 1]
            raise ConfigError(
                "%s.filters[%d]: non-terminal filter named %s of type %s is the last filter in a "
                "network filter chain." % (path, len(factories) - 1, last.name,
                                            registry.typeNameOf(last.typed_config)))
        return FilterChain(fc.name, factories, transport,
                           FilterChainMatch(fc.filter_chain_match, path + ".filter_chain_match"))


_LISTENER_COUNTERS = (
    "downstream_cx_total", "downstream_cx_destroy", "no_filter_chain_match",
    "network_extension_config_missing", "downstream_pre_cx_timeout",
    "downstream_listener_filter_error", "downstream_listener_filter_remote_close",
    "downstream_cx_overflow", "downstream_cx_overload_reject", "downstream_global_cx_overflow")
_LISTENER_GAUGES = ("downstream_cx_active", "downstream_pre_cx_active")


class _ListenerStats(StatsStruct):
    """The per-worker stat objects of one listener."""

    def __init__(self, shard, prefix, workerName):
        StatsStruct.__init__(self, shard, prefix, _LISTENER_COUNTERS, _LISTENER_GAUGES,
                             ("downstream_cx_length_ms",))
        worker = shard.scope(prefix + workerName + ".")
        self.worker_downstream_cx_total = worker.counter("downstream_cx_total")
        self.worker_downstream_cx_active = worker.gauge("downstream_cx_active")


class ActiveListener(ServerFactory):
    """
    One listener on one worker (Envoy's C{ActiveTcpListener}): builds a
    L{txenvoy.network.connection.ServerConnection} per accepted socket and
    keeps the worker's count of them.

    Before a connection is built, the accept path applies Envoy's limits in
    Envoy's order: the global connection limit
    (C{downstream_global_cx_overflow}), C{reject_incoming_connections}
    (C{downstream_cx_overload_reject}), then this listener's own runtime
    limit (C{downstream_cx_overflow}); a refused socket is closed at once.
    While C{stop_accepting_connections} is saturated the port is not read.

    @ivar connections: the live connections, for draining and shutdown.
    """

    def __init__(self, dispatcher, config):
        from txenvoy.network.connection import ServerConnection

        self.dispatcher = dispatcher
        self.config = config
        self.stats = _ListenerStats(dispatcher.stats, config.statPrefix, dispatcher.name)
        self.connections = set()
        self._port = None
        self._connectionClass = ServerConnection
        self._clock = dispatcher.reactor
        self.overload = overload = overloadStateOf(dispatcher)
        self._global = (not config.ignoreGlobalConnLimit
                        and overload.hasProactiveResource(GLOBAL_DOWNSTREAM_MAX_CONNECTIONS))
        overload.addCallback(STOP_ACCEPTING_CONNECTIONS, self._onStopAcceptingConnections)

    @property
    def port(self):
        return self._port

    @port.setter
    def port(self, port):
        self._port = port
        if port is None:
            self.overload.removeCallback(STOP_ACCEPTING_CONNECTIONS,
                                         self._onStopAcceptingConnections)
        elif self.overload.isSaturated(STOP_ACCEPTING_CONNECTIONS):
            port.stopReading()

    def _onStopAcceptingConnections(self, value):
        port = self._port
        if port is None:
            return
        if value >= 1.0:
            port.stopReading()
        else:
            port.startReading()

    @property
    def acceptPaused(self):
        """Whether C{stop_accepting_connections} keeps this port unread."""
        return self.overload.isSaturated(STOP_ACCEPTING_CONNECTIONS)

    def onAcceptError(self, dropped, err):
        """
        The port could not accept (descriptors or buffers ran out) and
        closed C{dropped} waiting connections: counted as the global
        connection limit they hit, and logged at a bounded rate.
        """
        self.stats.downstream_global_cx_overflow.inc(dropped)
        if self._overflowLog is None:
            self._overflowLog = OverflowLog(self._clock, self.config.name)
        self._overflowLog.record(dropped, err)

    _overflowLog = None

    def buildProtocol(self, addr):
        s = self.stats
        if self._global and not self.overload.tryAllocateResource(
                GLOBAL_DOWNSTREAM_MAX_CONNECTIONS):
            s.downstream_global_cx_overflow.inc()
            if _handlerLog.debugEnabled:
                _refused(addr, "global connection limit reached")
            return None
        if self.overload.shouldApply(REJECT_INCOMING_CONNECTIONS):
            s.downstream_cx_overload_reject.inc()
            if _handlerLog.debugEnabled:
                _refused(addr, "overload action reject_incoming_connections")
            self._releaseGlobal()
            return None
        limit = self.config.connectionLimit()
        if limit is not None and not self.config.openConnections.tryAllocate(limit):
            s.downstream_cx_overflow.inc()
            if _handlerLog.debugEnabled:
                _refused(addr, "listener connection limit reached")
            self._releaseGlobal()
            return None
        connection = self._connectionClass(self, addr)
        connection.limited = limit is not None
        return connection

    def _releaseGlobal(self):
        if self._global:
            self.overload.tryDeallocateResource(GLOBAL_DOWNSTREAM_MAX_CONNECTIONS)

    def onSocketClosed(self, connection):
        """
        Any connection this listener built closed: give back what
        L{buildProtocol} took from the connection limits.
        """
        self._releaseGlobal()
        if connection.limited:
            self.config.openConnections.deallocate()

    def onConnectionCreated(self, connection):
        s = self.stats
        s.downstream_cx_total.inc()
        s.downstream_cx_active.inc()
        s.worker_downstream_cx_total.inc()
        s.worker_downstream_cx_active.inc()
        self.connections.add(connection)

    def onConnectionDestroyed(self, connection):
        s = self.stats
        s.downstream_cx_destroy.inc()
        s.downstream_cx_active.dec()
        s.worker_downstream_cx_active.dec()
        self.connections.discard(connection)
        info = connection.streamInfo
        info.onComplete()
        s.downstream_cx_length_ms.recordValue(info.duration() * 1000.0)
        for logger in self.config.accessLogs:
            logger.log(info, None, None)
