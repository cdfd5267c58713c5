# -*- test-case-name: tests.test_interfaces -*-
"""
The seams of txenvoy, as zope interfaces.

Each pluggable piece (listener filter, network filter, HTTP filter, cluster,
load balancer, access logger, stats sink) is found through the extension
registry (L{txenvoy.config.registry}) by its C{typed_config} C{@type}, and
provides one of these interfaces. Third parties add their own through
C{twisted.plugin} without touching txenvoy.
"""

from zope.interface import Attribute, Interface


class IDispatcher(Interface):
    """
    One event loop (Envoy's C{Dispatcher}): a reactor plus the thread that
    runs it. Objects owned by a dispatcher are touched only from its thread;
    other threads L{post} work to it.
    """

    name = Attribute("C{'main_thread'} or C{'worker_N'}.")
    reactor = Attribute("The reactor this dispatcher runs.")
    stats = Attribute("The L{txenvoy.stats.store.StatsShard} owned by this thread.")

    def post(f, *args, **kwargs):
        """
        Run C{f(*args, **kwargs)} on this dispatcher's thread, soon. Safe to
        call from any thread.
        """


class IExtensionFactory(Interface):
    """
    Turns one extension's typed config (a protobuf message) into a compiled,
    plain Python object, once, when the config loads.
    """

    category = Attribute("One of L{txenvoy.config.registry.Category}.")
    typeNames = Attribute("Full protobuf message names this factory accepts.")
    names = Attribute("Envoy's well-known extension names (informational).")

    def create(message, context):
        """
        @param message: the unpacked protobuf message of the typed config.
        @param context: a L{txenvoy.config.context.FactoryContext}.
        @return: the compiled object (for a network filter, an
            L{INetworkFilterFactory}).
        @raise txenvoy.config.errors.ConfigError: for a bad value.
        """


class IListenerFilter(Interface):
    """
    Runs on an accepted socket before a filter chain is chosen (Envoy's
    C{Network::ListenerFilter}). It may read ahead, stop iteration until
    enough bytes arrived, consume bytes (PROXY protocol) and set what filter
    chain matching sees (server name, transport and application protocols,
    restored addresses).
    """

    maxReadBytes = Attribute(
        "How many bytes the filter wants to see; 0 when it decides on accept."
    )

    def onAccept(callbacks):
        """
        @param callbacks: the L{txenvoy.network.connection.ServerConnection}.
        @return: C{True} to continue, C{False} to wait for L{onData}.
        """

    def onData(data):
        """
        Called with every byte read so far (not yet consumed).

        @return: C{True} to continue, C{False} to wait for more bytes.
        """


class IListenerFilterFactory(Interface):
    """Compiled listener filter config; one filter per accepted socket."""

    def buildListenerFilter(connection):
        """@return: an L{IListenerFilter} for this connection."""


class INetworkFilterFactory(Interface):
    """
    Compiled config of one network filter. The filter chain is built per
    connection from the last filter to the first: each factory builds a
    Protocol that receives the connection's bytes (C{dataReceived},
    half-close through C{readConnectionLost}) and, for a non-terminal filter,
    passes them on to the next Protocol, acting as that Protocol's transport.
    """

    terminal = Attribute(
        "True for filters that end a chain (tcp_proxy, http_connection_manager, "
        "echo, direct_response)."
    )

    def buildFilter(connection, nextProtocol):
        """
        @param connection: the L{txenvoy.network.connection.ServerConnection}
            (its dispatcher, stream info, listener stats).
        @param nextProtocol: the Protocol built for the next filter, or
            C{None} for a terminal filter.
        @return: an C{IProtocol}.
        """


class IHttpFilterFactory(Interface):
    """Compiled config of one HTTP filter; builds one filter per stream."""

    def createFilter(stream):
        """@return: an L{IStreamDecoderFilter} and/or L{IStreamEncoderFilter}."""


class IStreamDecoderFilter(Interface):
    """The request side of an HTTP filter (Envoy's C{StreamDecoderFilter})."""

    def decodeHeaders(headers, endStream):
        """@return: a L{txenvoy.http.filter.FilterHeadersStatus}."""

    def decodeData(data, endStream):
        """@return: a L{txenvoy.http.filter.FilterDataStatus}."""


class IStreamEncoderFilter(Interface):
    """The response side of an HTTP filter (Envoy's C{StreamEncoderFilter})."""

    def encodeHeaders(headers, endStream):
        """@return: a L{txenvoy.http.filter.FilterHeadersStatus}."""

    def encodeData(data, endStream):
        """@return: a L{txenvoy.http.filter.FilterDataStatus}."""


class ILoadBalancer(Interface):
    """Picks a host of a cluster for one connection or request."""

    def chooseHost(context):
        """
        @param context: C{None} or an object with a C{hashKey} for hashing
            load balancers.
        @return: a L{txenvoy.upstream.host.Host} or C{None} when none is
            healthy.
        """


class IAccessLogger(Interface):
    """Writes one line (or record) per finished connection or request."""

    def log(streamInfo, requestHeaders, responseHeaders):
        """
        @param streamInfo: a L{txenvoy.network.stream_info.StreamInfo}.
        @param requestHeaders: the request headers (HTTP) or C{None}.
        @param responseHeaders: the response headers (HTTP) or C{None}.
        """


class IStatsSink(Interface):
    """Receives the stats store's values every C{stats_flush_interval}."""

    def flush(snapshot):
        """@param snapshot: a L{txenvoy.stats.store.Snapshot}."""
