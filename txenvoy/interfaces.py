# -*- test-case-name: tests.test_interfaces -*-
"""
The seams of txenvoy, as zope interfaces (Envoy's C{envoy/} headers).

Each pluggable piece (listener filter, network filter, HTTP filter,
transport socket, access logger, stats sink) is found through the
extension registry (L{txenvoy.config.registry}) by its C{typed_config}
C{@type}, and what its factory returns provides the interface of its
category (L{txenvoy.config.registry.CATEGORY_INTERFACES}). Third parties
add their own through C{twisted.plugin} without touching txenvoy.

The seams between core parts are declared here too, as Envoy declares a
callbacks interface for each: what a listener filter may do to its socket
(L{IListenerFilterCallbacks}), what an HTTP filter is given
(L{IStreamFilterCallbacks}), what an upstream connection and a connection
pool tell their owners (L{IUpstreamConnectionCallbacks},
L{IConnectionPoolCallbacks}, L{IResponseDecoder}), and what a cluster is
(L{ICluster}).
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
    internalListeners = Attribute(
        "This thread's internal listeners by name (Envoy's internal listener registry): "
        "the C{ActiveListener}s that C{envoy_internal_address} endpoints reach.")

    def post(f, *args, **kwargs):
        """
        Run C{f(*args, **kwargs)} on this dispatcher's thread, soon. Safe to
        call from any thread.
        """

    def nextConnectionId():
        """
        A new connection id (the C{ConnectionId} of log lines,
        C{%CONNECTION_ID%}), unique in the process; call it on this
        dispatcher's thread only.
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


class ICompressorFactory(Interface):
    """
    A compression library of the compressor filter (Envoy's
    C{envoy.compression.*.compressor} extensions).
    """

    contentEncoding = Attribute("The C{content-encoding} it makes, C{bytes} (C{b'gzip'}).")
    statsPrefix = Attribute("Its part of the filter's stat names (C{'gzip'}).")

    def createCompressor():
        """
        @return: a compressor for one body: C{compress(data, finish)}
            returns the compressed bytes so far (all of them when
            C{finish}).
        """


class IDecompressorFactory(Interface):
    """
    A decompression library of the decompressor filter (Envoy's
    C{envoy.compression.*.decompressor} extensions).
    """

    contentEncoding = Attribute("The C{content-encoding} it reads, C{bytes}.")
    statsPrefix = Attribute("Its part of the filter's stat names (C{'gzip'}).")
    errorStats = Attribute("The names of its error counters, under "
                           "C{decompressor_library.}.")

    def createDecompressor():
        """
        @return: a decompressor for one body: C{decompress(data)} returns
            C{(bytes, errorStat)}, C{errorStat} C{None} or the counter to
            count (the body is corrupt: what follows is dropped).
        """


class IClusterSpecifierPlugin(Interface):
    """
    What picks a route's cluster per request (Envoy's
    C{Router::ClusterSpecifierPlugin}, the C{envoy.router.cluster_specifier_plugin.*}
    extensions of C{inline_cluster_specifier_plugin} and
    C{cluster_specifier_plugins}).
    """

    def clusterName(headers):
        """
        @param headers: the request's headers, a
            L{txenvoy.http.headers.HeaderMap} (without the pseudo-headers).
        @return: the cluster name (C{str}), or C{None} for none.
        """


class IConfigValidator(Interface):
    """
    A check of an xDS update before it applies (Envoy's
    C{Config::ConfigValidator}, the C{envoy.config.validators.*}
    extensions of an C{ApiConfigSource}'s C{config_validators}).
    """

    typeUrl = Attribute("The resource type URL it checks.")

    def validate(names):
        """
        @param names: the names of every resource of its type the update
            would leave (the whole set, for a delta update once folded).
        @raise ValueError: the update is refused; the message is the
            NACK's error detail.
        """


class IInternalRedirectPredicate(Interface):
    """
    What may refuse an internal redirect's target route (Envoy's
    C{Router::InternalRedirectPredicate}, the
    C{envoy.internal_redirect_predicates} extensions of a route's
    C{internal_redirect_policy.predicates}).
    """

    name = Attribute("The predicate's extension name, for log lines.")

    def acceptTargetRoute(filterState, currentRouteName, targetRouteName, downstreamIsHttps,
                          targetIsHttps):
        """
        @param filterState: the request's C{filterState} dict, kept across
            its internal redirects.
        @param currentRouteName: the name of the route whose policy this
            predicate belongs to.
        @param targetRouteName: the name of the route the redirect would take.
        @return: whether the redirect may go on.
        """


class IStreamFilterBase(Interface):
    """What every HTTP filter has (Envoy's C{StreamFilterBase})."""

    def onDestroy():
        """
        The stream ended (completed or reset): release timers and state.
        Called once, after which no other method is called.
        """


class IStreamDecoderFilter(IStreamFilterBase):
    """The request side of an HTTP filter (Envoy's C{StreamDecoderFilter})."""

    def decodeHeaders(headers, endStream):
        """@return: a L{txenvoy.http.filter.FilterHeadersStatus}."""

    def decodeData(data, endStream):
        """@return: a L{txenvoy.http.filter.FilterDataStatus}."""

    def decodeTrailers(trailers):
        """@return: a L{txenvoy.http.filter.FilterTrailersStatus}."""


class IStreamEncoderFilter(IStreamFilterBase):
    """The response side of an HTTP filter (Envoy's C{StreamEncoderFilter})."""

    def encodeHeaders(headers, endStream):
        """@return: a L{txenvoy.http.filter.FilterHeadersStatus}."""

    def encodeData(data, endStream):
        """@return: a L{txenvoy.http.filter.FilterDataStatus}."""

    def encodeTrailers(trailers):
        """@return: a L{txenvoy.http.filter.FilterTrailersStatus}."""


class IStreamFilterCallbacks(Interface):
    """
    What the connection manager gives each HTTP filter of a stream (Envoy's
    C{StreamDecoderFilterCallbacks} and C{StreamEncoderFilterCallbacks} in
    one object). Only use it on the worker thread that runs the stream.
    """

    streamInfo = Attribute(
        "The request's L{txenvoy.network.stream_info.StreamInfo} (response "
        "flags, addresses, filterState for data shared between filters).")
    connection = Attribute("The L{txenvoy.network.connection.ServerConnection}.")
    dispatcher = Attribute("The worker's dispatcher (C{.reactor}, C{.stats}, "
                           "C{.clusterManager}).")
    streamId = Attribute("An integer unique on this worker.")
    filterConfigName = Attribute(
        "The filter's C{name} in C{http_filters}, the key of its "
        "C{typed_per_filter_config} entries.")
    requestHeaders = Attribute("The request head, or C{None} before it.")
    responseHeaders = Attribute("The response head, or C{None} before it.")
    activeSpan = Attribute("The connection manager's L{ISpan} of the request, or C{None} "
                           "when it is not traced.")
    tracingConfig = Attribute("The connection manager's "
                              "L{txenvoy.tracing.http_tracer.TracingConfig}, or C{None}.")

    def route():
        """
        @return: the L{txenvoy.router.config.RouteMatch} of the request,
            resolved once and cached, or C{None} when nothing matches.
        """

    def clearRouteCache():
        """Forget the cached route (after changing what routing reads)."""

    def recreateStream(responseHeaders, body=b""):
        """
        Envoy's C{recreateStream}, for an internal redirect: end this
        stream (its access log shows C{responseHeaders}, when given, with
        the details C{internal_redirect}) and start a new one on the same downstream
        stream with the request headers as they are now, followed by
        C{body}; the new one runs route selection and the whole filter
        chain again. Every filter of this stream is destroyed.

        @return: False (nothing done) unless the request was read in full.
        """

    def continueDecoding():
        """Resume the request direction after this filter stopped it."""

    def continueEncoding():
        """Resume the response direction after this filter stopped it."""

    def sendLocalReply(code, body=b"", modifyHeaders=None, details=""):
        """
        Answer the request from here, as Envoy's C{sendLocalReply}: the
        C{local_reply_config} mappers and body format apply, the reply goes
        through every encoder filter, and the request direction stops.
        After the response started this resets the stream instead.

        @param code: the HTTP status (int).
        @param body: C{bytes}; a non-empty body gets
            C{content-type: text/plain}.
        @param modifyHeaders: C{None} or C{f(responseHeaders)}, called
            before the body headers are added.
        @param details: Envoy's response code details.
        """

    def encodeHeaders(headers, endStream):
        """
        Send a response head from a decoder filter (the router does): it
        goes through every encoder filter.
        """

    def encodeData(data, endStream):
        """Send response body bytes from a decoder filter."""

    def encodeTrailers(trailers):
        """End the response with trailers from a decoder filter."""

    def addDecodedData(data):
        """
        From C{decodeTrailers}: pass C{data} to the filters after this one,
        before the trailers (Envoy's C{addDecodedData}; a compressor ends
        its stream there).
        """

    def addEncodedData(data):
        """From C{encodeTrailers}: the same in the response direction."""

    def resetStream():
        """Abandon the stream (HTTP/1: the connection is closed)."""

    def decodingBuffer():
        """The request body this filter holds buffered, C{bytes} or C{None}."""

    def encodingBuffer():
        """The response body this filter holds buffered, C{bytes} or C{None}."""

    def modifyDecodingBuffer(data):
        """
        Replace the request body this filter holds buffered (it stopped
        iteration) with C{data} (Envoy's C{modifyDecodingBuffer}).
        """

    def modifyEncodingBuffer(data):
        """The same for the response body."""

    def bufferLimit():
        """The stream's buffer limit in bytes (the listener's
        C{per_connection_buffer_limit_bytes})."""

    def callLater(delay, f):
        """
        A cheap timer tied to the stream's connection.

        @return: an object with C{cancel()}.
        """

    def onDecoderFilterAboveWriteBufferHighWatermark():
        """The filter cannot take more request data: stop reading downstream."""

    def onDecoderFilterBelowWriteBufferLowWatermark():
        """Read downstream again (each call matches one of the above)."""

    def addDownstreamWatermarkCallbacks(callbacks):
        """
        Be told when the downstream connection cannot take more response
        bytes: C{callbacks.onAboveWriteBufferHighWatermark()} and
        C{onBelowWriteBufferLowWatermark()}. Removed when the stream ends.
        """

    def removeDownstreamWatermarkCallbacks(callbacks):
        """Undo L{addDownstreamWatermarkCallbacks}."""


class IRouterFilterCallbacks(IStreamFilterCallbacks):
    """
    What the router filter reaches beyond L{IStreamFilterCallbacks}, on
    the same object.
    """

    def setRouteIdleTimeout(timeout):
        """
        Apply the route's C{idle_timeout} in place of C{stream_idle_timeout}
        for the rest of the stream (0 disables it), as Envoy does.
        """

    def setMaxStreamDuration(timeout):
        """
        The route's stream duration (C{max_stream_duration}, or a gRPC
        request's C{grpc-timeout} under C{grpc_timeout_header_max}), from
        the stream's start; 0 disables it.
        """

    def writeBatcher():
        """
        @return: an object with C{cork()} and C{uncork()}: downstream
            writes made between them leave in one write (the router wraps
            each upstream read in them).
        """


class IFilterManagerStream(Interface):
    """
    The connection manager's stream as its filter chain reaches it (Envoy's
    C{FilterManager}): the filter callbacks and the chain's iterations call
    only these.
    """

    streamInfo = Attribute("The request's L{txenvoy.network.stream_info.StreamInfo}.")
    requestHeaders = Attribute("The request head, or C{None} before it.")
    responseHeaders = Attribute("The response head, or C{None} before it.")
    streamId = Attribute("An integer unique on this worker.")
    connection = Attribute("The downstream L{txenvoy.network.connection.ServerConnection}.")
    dispatcher = Attribute("The worker's dispatcher.")

    def route():
        """See L{IStreamFilterCallbacks.route}."""

    def clearRouteCache():
        """See L{IStreamFilterCallbacks.clearRouteCache}."""

    def continueDecoding(index):
        """The decoder filter at C{index} resumes the request direction."""

    def continueEncoding(index):
        """The encoder filter at C{index} resumes the response direction."""

    def decodingBuffer(index):
        """The request body held by the decoder filter at C{index}, or C{None}."""

    def iterationStopped(iteration):
        """
        Whether a filter iteration must stop now: its direction was stopped
        (a local reply) or the stream is gone.
        """

    def sendLocalReply(code, body=b"", modifyHeaders=None, details=""):
        """See L{IStreamFilterCallbacks.sendLocalReply}."""

    def encodeHeaders(headers, endStream):
        """A response head from a decoder filter, through the encoder filters."""

    def encodeData(data, endStream):
        """Response body bytes from a decoder filter."""

    def encodeTrailers(trailers):
        """Response trailers from a decoder filter."""

    def resetStream():
        """Abandon the stream."""

    def bufferLimit():
        """The stream's buffer limit in bytes."""

    def readDisable(disable):
        """Stop (C{True}) or resume (C{False}) reading the request, counted."""

    def setIdleTimeout(timeout):
        """Replace the stream's idle timeout from now on (0 disables it)."""

    def setMaxStreamDuration(timeout):
        """See L{IRouterFilterCallbacks.setMaxStreamDuration}."""

    def callLater(delay, f):
        """A timer on the stream's connection: @return: an object with C{cancel()}."""

    def addWatermarkCallbacks(callbacks):
        """See L{IStreamFilterCallbacks.addDownstreamWatermarkCallbacks}."""

    def removeWatermarkCallbacks(callbacks):
        """See L{IStreamFilterCallbacks.removeDownstreamWatermarkCallbacks}."""

    def writeBatcher():
        """See L{IRouterFilterCallbacks.writeBatcher}."""

    def recreateStream(responseHeaders, body=b""):
        """See L{IStreamFilterCallbacks.recreateStream}."""


class IRequestDecoder(Interface):
    """
    Where a server codec delivers one request (Envoy's
    C{RequestDecoder}): the connection manager's stream.
    """

    def decodeHeaders(headers, endStream):
        """A L{txenvoy.http.headers.RequestHeaders}."""

    def decodeData(data, endStream):
        """Request body bytes (after an upgrade: the raw bytes)."""

    def decodeTrailers(trailers):
        """The request trailers, a L{txenvoy.http.headers.HeaderMap}; the request ends."""

    def onStreamReset():
        """The client reset the stream, or its connection went (HTTP/2)."""

    def onAboveWriteBufferHighWatermark():
        """The stream's send buffer is full (HTTP/2): its upstream pauses."""

    def onBelowWriteBufferLowWatermark():
        """The stream's send buffer drained."""


class IResponseEncoder(Interface):
    """
    How the connection manager answers one request, whatever the protocol
    (Envoy's C{ResponseEncoder}): handed to
    L{IServerConnectionCallbacks.newStream}.
    """

    responseStarted = Attribute("Whether the response head was written.")
    responseComplete = Attribute("Whether the response was written in full.")

    def encode100ContinueHeaders():
        """Write a 100 Continue, unless the response started."""

    def setDecoder(decoder):
        """
        Deliver what is left of this stream (resets, watermarks) to
        C{decoder} from now on: the stream an internal redirect made.
        """

    def encodeHeaders(headers, endStream):
        """Write the response head (a L{txenvoy.http.headers.ResponseHeaders})."""

    def encodeData(data, endStream):
        """Write response body bytes."""

    def encodeTrailers(trailers):
        """End the response with trailers."""

    def resetStream():
        """Abandon the stream (HTTP/1: close the connection; HTTP/2: RST_STREAM)."""

    def readDisable(disable):
        """
        Stop (C{True}) or resume (C{False}) reading this stream's request,
        counted (HTTP/1: the connection; HTTP/2: the stream's window).
        """


class IServerConnectionCallbacks(Interface):
    """
    What a server codec calls on its owner, the connection manager (Envoy's
    C{ServerConnectionCallbacks}).
    """

    def newStream(encoder):
        """
        A request starts.

        @param encoder: its L{IResponseEncoder}.
        @return: its L{IRequestDecoder}.
        """

    def onCodecError(status, details):
        """
        The codec refused input, answered it if it could, and closes (or
        resets) as Envoy does; C{details} are Envoy's response code details.
        """

    def onStreamError(details):
        """
        The codec reset one stream whose request head it refused, the
        connection going on (HTTP/2 with C{stream_error_on_invalid_http_message});
        no decoder was made for it. C{details} are Envoy's response code
        details.
        """


class IServerCodec(Interface):
    """
    A downstream codec (Envoy's C{ServerConnection}): the bytes of one
    connection in, requests out through L{IServerConnectionCallbacks}.
    """

    protocol = Attribute("C{\"HTTP/1.1\"} or C{\"HTTP/2\"}: what the stats and logs say.")
    dateCache = Attribute("The L{txenvoy.http.http1.codec.DateCache} of the C{date} header.")

    def dataReceived(data):
        """Bytes from the connection."""

    def connectionLost(reason=None):
        """The connection is gone: every stream ends."""

    def readDisable(disable):
        """Stop (C{True}) or resume (C{False}) reading, counted."""


class IClientCodec(Interface):
    """
    An upstream codec (Envoy's C{ClientConnection}): requests out, responses
    in through an L{IResponseDecoder}.
    """

    keepAlive = Attribute("Whether the connection may carry another request.")
    responseInProgress = Attribute("Whether a response is still due.")
    wireBytesSent = Attribute(
        "Bytes of the current request on the wire (Envoy's upstream_wire_bytes_sent);"
        " 0 for a codec that does not count them.")
    wireBytesReceived = Attribute("Bytes of the current response on the wire, or 0.")
    headerBytesSent = Attribute("Bytes of the current request's head, or 0.")
    headerBytesReceived = Attribute("Bytes of the current response's head, or 0.")

    def encodeRequest(request, endStream):
        """Write a request head (a L{txenvoy.http.headers.RequestHeaders})."""

    def encodeData(data, endStream):
        """Write request body bytes."""

    def encodeTrailers(trailers):
        """End the request with trailers."""


class IClientConnectionCodec(IClientCodec):
    """
    An upstream codec that is its connection's reader too (HTTP/1.1: one
    request at a time on the connection). An HTTP/2 stream's codec is not:
    its connection reads for all of its streams.
    """

    def dataReceived(data):
        """Response bytes from the connection."""

    def connectionLost(reason=None):
        """The connection is gone."""


class IHttpConnPool(Interface):
    """
    A connection pool to one host (Envoy's C{ConnectionPool::Instance}),
    whichever protocol its connections speak: the HTTP/1.1 pool and the
    multiplexing HTTP/2 pool.
    """

    def newStream(callbacks):
        """
        Ask for a stream: C{callbacks} (an L{IConnectionPoolCallbacks}) are
        told C{onPoolReady(client)} or C{onPoolFailure(reason)}.

        @return: an object with C{cancel()} while the request waits, else
            C{None}.
        """

    def releaseClient(client):
        """A stream gave its client back without a complete response."""

    def cancelPending(pending):
        """A stream waiting for a connection gave up (its handle's C{cancel()})."""

    def closeIdle():
        """Close the connections that carry nothing."""


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


# -- Seams between core parts ----------------------------------------------------


class IListenerFilterCallbacks(Interface):
    """
    What a listener filter may do to the accepted socket it runs on
    (Envoy's C{ListenerFilterCallbacks}); provided by
    L{txenvoy.network.connection.ServerConnection}.
    """

    dispatcher = Attribute("The worker's L{IDispatcher}.")
    streamInfo = Attribute("The connection's L{txenvoy.network.stream_info.StreamInfo}.")
    transport = Attribute("The accepted socket's transport.")
    localAddress = Attribute("C{(host, port)} the client connected to.")
    remoteAddress = Attribute("C{(host, port)} of the client (or what PROXY said).")
    transportProtocol = Attribute("C{'raw_buffer'}, or what a filter detected.")

    def continueFilterChain(success):
        """Resume with the next filter, or close the socket if not C{success}."""

    def consume(n):
        """Drop the first C{n} bytes read so far (a PROXY protocol header)."""

    def setRequestedServerName(name):
        """The SNI, for filter chain matching and C{%REQUESTED_SERVER_NAME%}."""

    def setDetectedTransportProtocol(protocol):
        """C{'tls'} or C{'raw_buffer'}, for filter chain matching."""

    def setRequestedApplicationProtocols(protocols):
        """ALPN values (or C{http/1.1}, C{h2c}) for filter chain matching."""

    def restoreRemoteAddress(address):
        """The client's C{(host, port)} as a PROXY header gives it."""

    def restoreLocalAddress(address):
        """The original destination C{(host, port)}."""

    def closeSocket():
        """Reject the connection (reset)."""


class IDownstreamTransportSocketFactory(Interface):
    """
    A compiled downstream C{transport_socket} (Envoy's
    C{DownstreamTransportSocketFactory}), built once per filter chain.
    """

    def wrap(connection, headProtocol):
        """
        Put the transport socket under a connection's network filter chain.

        @param connection: the L{IListenerFilterCallbacks} provider.
        @param headProtocol: the head of the network filter chain.
        @return: the protocol that gets the socket's C{makeConnection} and
            bytes.
        """


class IUpstreamTransportSocketFactory(Interface):
    """
    A compiled cluster C{transport_socket} (Envoy's
    C{UpstreamTransportSocketFactory}), built once per cluster.
    """

    def wrapProtocolFactory(factory, reactor, host, cluster=None, socketOptions=None):
        """
        @param factory: the client factory of the plain connection.
        @param reactor: the worker's reactor.
        @param host: the L{txenvoy.upstream.host.Host} connected to.
        @param cluster: the worker's L{txenvoy.upstream.cluster_manager.ThreadLocalCluster}.
        @param socketOptions: the request's
            L{txenvoy.upstream.http_protocol_options.TransportSocketOptions}
            (Envoy's C{TransportSocketOptions}: a server name and SANs to
            verify), or C{None}.
        @return: a client factory whose protocols speak through it.
        """


class IUpstreamConnectionCallbacks(Interface):
    """
    What an L{txenvoy.upstream.connection.UpstreamConnection} tells its
    owner (tcp_proxy's upstream side, an HTTP connection pool client):
    Envoy's C{ConnectionCallbacks} and C{ReadFilter} for one upstream
    connection.
    """

    def onUpstreamConnected(upstreamConnection):
        """The connection (and its transport socket's handshake) is up."""

    def onUpstreamConnectFailed(upstreamConnection, reason):
        """
        @param reason: Envoy's text (C{connection timeout}, C{remote
            connection failure}, C{local connection failure}).
        """

    def onUpstreamData(data):
        """Bytes from the host."""

    def onUpstreamReadClosed():
        """The host half-closed (FIN); writing may go on."""

    def onUpstreamClosed(reason):
        """Fully closed; C{reason} is Twisted's C{Failure}."""


class IConnectionPoolCallbacks(Interface):
    """What asks an HTTP connection pool for a stream (Envoy's C{ConnectionPool::Callbacks})."""

    def onPoolReady(client):
        """@param client: the L{txenvoy.http.conn_pool.ActiveClient} carrying the request."""

    def onPoolFailure(reason):
        """@param reason: Envoy's reset reason text (C{overflow}, ...)."""


class IResponseDecoder(Interface):
    """
    Where a pool client delivers its response (Envoy's C{ResponseDecoder}
    and C{StreamCallbacks}).
    """

    def onResponseHeaders(headers, endStream):
        """A L{txenvoy.http.headers.ResponseHeaders} (1xx ones included)."""

    def onResponseData(data, endStream):
        """Body bytes."""

    def onResponseTrailers(trailers):
        """The trailers; the response ends."""

    def onResponseComplete():
        """The response ended; the client is already back in its pool."""

    def onUpstreamReset(reason):
        """The stream was reset, with Envoy's reset reason text."""


class ICluster(Interface):
    """
    The main thread's side of one cluster (Envoy's C{Upstream::Cluster}):
    it owns membership and posts each new host list to the workers.
    """

    info = Attribute("The L{txenvoy.upstream.cluster.ClusterInfo}.")
    hosts = Attribute("The current membership, a tuple of hosts.")
    initialized = Attribute("Whether the first membership is known.")

    def start():
        """Begin discovering membership (main thread)."""

    def stop():
        """Cancel timers; later results are dropped."""

    def whenInitialized():
        """@return: a Deferred fired once the first membership is known."""

    def setHosts(hosts, membershipChanged=True):
        """Install a new membership and post it to every worker."""


# -- Tracing (Envoy's envoy/tracing/) --------------------------------------------


class ISpan(Interface):
    """
    One span of a trace (Envoy's C{Tracing::Span}). Used on the worker
    thread that started it; a finished span is handed to its driver's
    reporter, which sends it off the data path.
    """

    sampled = Attribute("Whether the span is reported when it finishes.")

    def setOperation(name):
        """Rename the span (a route's C{decorator})."""

    def setTag(name, value):
        """Set a tag (C{str} name and value), replacing one of the same name."""

    def log(timestamp, event):
        """Record an event at a wall-clock time in seconds (C{verbose})."""

    def finishSpan(timestamp):
        """End the span at a wall-clock time in seconds and report it if sampled."""

    def injectContext(requestHeaders, upstreamHost):
        """
        Write this span's context into an upstream request's headers (B3,
        W3C C{traceparent}, ...).

        @param requestHeaders: a L{txenvoy.http.headers.RequestHeaders}.
        @param upstreamHost: the chosen upstream host, or C{None}.
        """

    def spawnChild(operationName, timestamp):
        """
        @return: a new L{ISpan}, child of this one, of kind CLIENT (the
            router's upstream span).
        """

    def setSampled(sampled):
        """Override the sampling decision."""


class ITracerDriver(Interface):
    """
    A tracing provider (Envoy's C{Tracing::Driver}): what an
    C{envoy.tracers.*} extension's factory makes, once per config.
    """

    def startSpan(dispatcher, requestHeaders, streamInfo, operationName, traced, egress,
                  timestamp):
        """
        Begin the connection manager's span of one request, continuing the
        context the request carries, if any.

        @param dispatcher: the worker's dispatcher (its reporter, its reactor).
        @param requestHeaders: the L{txenvoy.http.headers.RequestHeaders}.
        @param streamInfo: the request's L{txenvoy.network.stream_info.StreamInfo}.
        @param operationName: the span's name.
        @param traced: the sampling decision, C{bool}.
        @param egress: True for an C{OUTBOUND} listener (a CLIENT span).
        @param timestamp: wall-clock start in seconds.
        @return: an L{ISpan}.
        """
