# -*- test-case-name: tests.admin.test_admin -*-
"""
Envoy's admin interface on C{twisted.web}, served by the main reactor.

Paths, methods, bodies, status codes and headers are Envoy 1.40's (see
L{txenvoy.admin._handlers}); the connections and requests are counted in
Envoy's C{listener.admin.*} and C{http.admin.*} stats, and each request is
given to the admin's access loggers.
"""

import random as _random
import socket
import re
from urllib.parse import unquote

from twisted.application import service
from twisted.internet import defer, error, interfaces
from twisted.logger import Logger
from twisted.web import http
from twisted.web import server as webserver
from twisted.web.resource import Resource
from zope.interface import implementer

from txenvoy.admin import _handlers
from txenvoy.admin._help import ENDPOINTS_BY_PATH
from txenvoy.config.errors import ConfigError, UnsupportedField
from txenvoy.config.fields import checkFields
from txenvoy.network.accept import UnixListenerPort
from txenvoy.network.pipe import bindPipe, pipeAddress
from txenvoy.network.stream_info import StreamInfo
from txenvoy.server.logging import componentLogger, connTag, streamTag
from txenvoy.stats.tags import defaultTagProducer

log = Logger(namespace="admin")
debugLog = componentLogger("admin")
handlerLog = componentLogger("conn_handler")
connectionLog = componentLogger("connection")

_SLASHES = re.compile(rb"/+")


def checkAdminConfig(adminProto, path="admin"):
    """
    Reject the C{admin} fields txenvoy does not implement; run it in
    C{--mode validate} too.

    @raise ConfigError: naming the field.
    """
    # profile_path is where /cpuprofiler writes, an endpoint txenvoy does
    # not have; the admin is never counted against the global connection
    # limit, so ignore_global_conn_limit is what txenvoy does anyway.
    checkFields(adminProto, ("access_log", "access_log_path", "address", "socket_options"),
                path, ("profile_path", "ignore_global_conn_limit"))
    if adminProto.access_log_path:
        raise UnsupportedField(path + ".access_log_path",
                               "deprecated in Envoy; use admin.access_log")
    if len(adminProto.socket_options):
        raise UnsupportedField(path + ".socket_options")
    if adminProto.HasField("address"):
        which = adminProto.address.WhichOneof("address")
        if which == "pipe":
            pipeAddress(adminProto.address.pipe, path + ".address.pipe")
            return
        if which != "socket_address":
            raise UnsupportedField("%s.address.%s" % (path, which),
                                   "the admin listens on a socket_address or a pipe")
        sa = adminProto.address.socket_address
        if sa.WhichOneof("port_specifier") != "port_value":
            raise UnsupportedField(path + ".address.socket_address.named_port")


def _flatten(mapping, prefix=""):
    out = {}
    for k, v in (mapping or {}).items():
        key = prefix + str(k)
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _runtimeValue(text):
    # Runtime lookups read numbers and booleans; keep overrides typed.
    if text in ("true", "false"):
        return text == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


_MISSING = object()


class AdminServer(service.Service):
    """
    The admin HTTP server, a service of the server: it binds in
    C{privilegedStartService}, as Twisted's C{StreamServerEndpointService}
    does, so a port in use is a start-up error.

    @ivar port: the bound port number after L{start}, else C{None}.
    @ivar statsFlusher: the L{txenvoy.stats.flush.StatsFlusher} whose last
        completed interval gives the "interval" histogram values, or
        C{None} (then they print as C{nan}).
    @ivar tagProducer: the L{txenvoy.stats.tags.TagProducer} for
        C{/stats/prometheus}.
    """

    def __init__(self, reactor, server, adminProto, accessLogs=(), statsFlusher=None,
                 tagProducer=None):
        """
        @param reactor: the main reactor.
        @param server: the server (see the attributes used in
            L{txenvoy.admin._handlers}).
        @param adminProto: C{envoy.config.bootstrap.v3.Admin}.
        @param accessLogs: built access loggers (C{.log(streamInfo,
            requestHeaders, responseHeaders)}).
        @raise ConfigError: for unsupported admin fields or no address.
        """
        checkAdminConfig(adminProto)
        if not adminProto.HasField("address"):
            raise ConfigError("admin: no address: the admin interface is disabled")
        self.reactor = reactor
        self.server = server
        self.proto = adminProto
        self.accessLogs = list(accessLogs)
        self._statsFlusher = statsFlusher
        self.tagProducer = tagProducer or getattr(server, "tagProducer", None) \
            or defaultTagProducer()
        self.log = log
        #: The L{PipeAddress} of an admin on a Unix socket, else C{None}.
        self.pipe = None
        if adminProto.address.HasField("pipe"):
            self.pipe = pipeAddress(adminProto.address.pipe, "admin.address.pipe")
            self.host, self.configuredPort = self.pipe.path, None
        else:
            sa = adminProto.address.socket_address
            self.host = sa.address
            self.configuredPort = sa.port_value
        self.port = None
        self.recentLookupsEnabled = False
        self.runtimeOverrides = {}
        self._runtimeOriginals = {}
        self._listeningPort = None
        self._channels = set()
        self._stats()
        self.resource = AdminResource(self)
        self.site = AdminSite(self)

    @property
    def statsFlusher(self):
        """The flusher given at construction, else C{server.statsFlusher}, else C{None}."""
        if self._statsFlusher is not None:
            return self._statsFlusher
        return getattr(self.server, "statsFlusher", None)

    def wallTime(self):
        """Wall-clock seconds (for C{/server_info} uptimes)."""
        return _handlers.wallTime()

    # Stats (Envoy's listener.admin.* and http.admin.*).

    def _stats(self):
        shard = self.server.mainStats
        listener = shard.scope("listener.admin.")
        hcm = shard.scope("http.admin.")
        self._cxTotal = [listener.counter("downstream_cx_total"),
                         listener.counter("main_thread.downstream_cx_total"),
                         hcm.counter("downstream_cx_total"),
                         hcm.counter("downstream_cx_http1_total")]
        self._cxActive = [listener.gauge("downstream_cx_active"),
                          listener.gauge("main_thread.downstream_cx_active"),
                          hcm.gauge("downstream_cx_active"),
                          hcm.gauge("downstream_cx_http1_active")]
        self._cxDestroy = [listener.counter("downstream_cx_destroy"),
                           hcm.counter("downstream_cx_destroy")]
        self._cxDestroyRemote = hcm.counter("downstream_cx_destroy_remote")
        self._cxDestroyLocal = hcm.counter("downstream_cx_destroy_local")
        self._cxLength = [listener.histogram("downstream_cx_length_ms"),
                          hcm.histogram("downstream_cx_length_ms")]
        self._acceptedPerEvent = listener.histogram("connections_accepted_per_socket_event",
                                                    unit="unspecified")
        self.rxBytes = hcm.counter("downstream_cx_rx_bytes_total")
        self.txBytes = hcm.counter("downstream_cx_tx_bytes_total")
        self._rqTotal = [hcm.counter("downstream_rq_total"),
                         hcm.counter("downstream_rq_http1_total")]
        self._rqActive = hcm.gauge("downstream_rq_active")
        self._rqCompleted = [hcm.counter("downstream_rq_completed"),
                             listener.counter("http.admin.downstream_rq_completed")]
        self._rqClass = {}
        for c in "12345":
            self._rqClass[c] = [hcm.counter("downstream_rq_%sxx" % c),
                                listener.counter("http.admin.downstream_rq_%sxx" % c)]
        self._rqTime = hcm.histogram("downstream_rq_time")
        # Overload and connection-limit stats Envoy shows for the admin too.
        for name in ("downstream_cx_overflow", "downstream_cx_overload_reject",
                     "downstream_global_cx_overflow"):
            listener.counter(name)
        for name in ("downstream_cx_overload_disable_keepalive", "downstream_rq_overload_close"):
            hcm.counter(name)
        self._rqRxReset = hcm.counter("downstream_rq_rx_reset")

    def _connectionOpened(self, channel):
        channel.connectionId = self.server.mainDispatcher.nextConnectionId()
        if handlerLog.debugEnabled:
            peer = channel.transport.getPeer()
            handlerLog.debug("%snew connection from %s:%s", connTag(channel.connectionId),
                             getattr(peer, "host", "?"), getattr(peer, "port", "?"))
        self._channels.add(channel)
        channel._openedAt = self.reactor.seconds()
        for c in self._cxTotal:
            c.inc()
        for g in self._cxActive:
            g.inc()
        self._acceptedPerEvent.recordValue(1)

    def _connectionClosed(self, channel, reason):
        if connectionLog.debugEnabled:
            local = getattr(channel, "_closedLocally", False)
            tag = connTag(getattr(channel, "connectionId", 0))
            if not local:
                connectionLog.debug("%sremote close", tag)
            connectionLog.debug("%sclosing socket: %d", tag, 1 if local else 0)
        self._channels.discard(channel)
        for g in self._cxActive:
            g.dec()
        for c in self._cxDestroy:
            c.inc()
        if reason is not None and reason.check(error.ConnectionDone) and \
                not getattr(channel, "_closedLocally", False):
            self._cxDestroyRemote.inc()
        else:
            self._cxDestroyLocal.inc()
        ms = (self.reactor.seconds() - getattr(channel, "_openedAt", self.reactor.seconds())) \
            * 1000.0
        for h in self._cxLength:
            h.recordValue(ms)

    def _requestStarted(self, request):
        for c in self._rqTotal:
            c.inc()
        self._rqActive.inc()
        request.streamInfo = si = StreamInfo(self.reactor)
        peer = request.getClientAddress()
        host = request.getHost()
        si.downstreamRemoteAddress = (getattr(peer, "host", None), getattr(peer, "port", None))
        si.downstreamDirectRemoteAddress = si.downstreamRemoteAddress
        si.downstreamLocalAddress = (getattr(host, "host", None), getattr(host, "port", None))
        si.protocol = request.clientproto.decode("ascii", "replace")
        content = request.content
        if content is not None:
            try:
                si.bytesReceived = len(content.getvalue())
            except AttributeError:
                pass
        if debugLog.debugEnabled:
            # Envoy's admin filter says so once the request is in.
            debugLog.debug("%srequest complete: path: %s",
                           streamTag(getattr(request.channel, "connectionId", 0),
                                     _random.getrandbits(64)),
                           request.uri.decode("latin-1"))

    def _requestDone(self, request, result):
        self._rqActive.dec()
        si = request.streamInfo
        si.onComplete()
        if result is not None and getattr(result, "check", None) is not None:
            # The connection went away before the response was finished.
            self._rqRxReset.inc()
            si.responseCode = 0
        else:
            code = request.code
            si.responseCode = code
            si.responseCodeDetails = "admin_filter_response"
            for c in self._rqCompleted:
                c.inc()
            counters = self._rqClass.get(str(code)[:1])
            if counters:
                for c in counters:
                    c.inc()
            self._rqTime.recordValue(si.duration() * 1000.0)
        si.bytesSent = request.sentLength
        if self.accessLogs:
            requestHeaders = _HeaderMap(request.requestHeaders,
                                        method=request.method, path=request.uri,
                                        authority=request.getHeader(b"host"),
                                        scheme=b"https" if request.isSecure() else b"http")
            responseHeaders = _HeaderMap(request.responseHeaders,
                                         status=str(request.code).encode("ascii"))
            for logger in self.accessLogs:
                try:
                    logger.log(si, requestHeaders, responseHeaders)
                except Exception:
                    log.failure("admin access log failed")

    # Runtime (the admin layer).

    def runtimeLayers(self):
        """C{[(name, kind)]} of C{layered_runtime}; kind is C{static}, C{admin}..."""
        bootstrap = getattr(self.server, "bootstrap", None)
        if bootstrap is None or not bootstrap.HasField("layered_runtime"):
            return []
        out = []
        for layer in bootstrap.layered_runtime.layers:
            kind = layer.WhichOneof("layer_specifier") or ""
            out.append((layer.name, kind.replace("_layer", "")))
        return out

    @property
    def staticRuntime(self):
        """The runtime values without the admin overrides (flattened keys)."""
        values = _flatten(getattr(self.server, "runtime", None) or {})
        for key, original in self._runtimeOriginals.items():
            if original is _MISSING:
                values.pop(key, None)
            else:
                values[key] = original
        return values

    def modifyRuntime(self, items):
        """
        C{POST /runtime_modify}: set admin overrides; an empty value removes
        an override. The server's runtime dict sees the result.
        """
        runtime = self.server.runtime
        for key, value in items.items():
            if value == "":
                if key in self.runtimeOverrides:
                    del self.runtimeOverrides[key]
                    original = self._runtimeOriginals.pop(key)
                    if original is _MISSING:
                        runtime.pop(key, None)
                    else:
                        runtime[key] = original
                continue
            if key not in self._runtimeOriginals:
                self._runtimeOriginals[key] = runtime.get(key, _MISSING)
            self.runtimeOverrides[key] = value
            runtime[key] = _runtimeValue(value)

    # Lifecycle.

    def start(self):
        """
        Listen on the configured address (port 0 picks one; see L{port}).

        @raise ConfigError: when the address cannot be bound, in Envoy's
            words (C{cannot bind '127.0.0.1:9901': Address already in use}).
        """
        if self.pipe is not None:
            self._startPipe()
            return
        try:
            self._listeningPort = self.reactor.listenTCP(
                self.configuredPort, self.site, interface=self.host)
        except error.CannotListenError as e:
            reason = getattr(e.socketError, "strerror", None) or e.socketError
            raise ConfigError("admin.address: cannot bind '%s:%d': %s" % (
                self.host, self.configuredPort, reason))
        self.port = self._listeningPort.getHost().port
        log.info("Starting admin HTTP server at {host}:{port}", host=self.host, port=self.port)

    def _startPipe(self):
        """Listen on a Unix socket, with Envoy's message when it cannot."""
        try:
            sock = bindPipe(self.pipe, 128)
        except OSError as e:
            raise ConfigError("admin.address: cannot bind '%s': %s" % (
                self.pipe.path, e.strerror or e))
        try:
            self._listeningPort = UnixListenerPort.adopt(
                self.reactor, sock.fileno(), socket.AF_UNIX, self.site)
        finally:
            sock.close()
        log.info("Starting admin HTTP server at {path}", path=self.pipe.path)

    def stop(self):
        """Stop listening and close open admin connections.

        @return: a C{Deferred} that fires when the port is closed.
        """
        port, self._listeningPort = self._listeningPort, None
        for channel in list(self._channels):
            channel._closedLocally = True
            channel.transport.loseConnection()
        if port is None:
            return defer.succeed(None)
        return defer.maybeDeferred(port.stopListening)

    def privilegedStartService(self):
        service.Service.privilegedStartService(self)
        self.start()

    def startService(self):
        service.Service.startService(self)
        if self._listeningPort is None:
            # Started by a parent that was already running: no privileged step.
            self.start()

    def stopService(self):
        service.Service.stopService(self)
        return self.stop()


class _HeaderMap:
    """
    Request or response headers as access log formatters read them:
    C{get(lowercaseName)} and the pseudo-header attributes.
    """

    def __init__(self, headers, **pseudo):
        self._headers = headers
        for name in ("method", "path", "authority", "scheme", "status"):
            setattr(self, name, pseudo.get(name))

    def get(self, name):
        """The first value of a header, as bytes, or C{None}."""
        values = self._headers.getRawHeaders(name)
        return values[0] if values else None


@implementer(interfaces.ITransport, interfaces.IPushProducer)
class _CountingTransport:
    """A transport proxy counting the bytes written (C{downstream_cx_tx_bytes_total})."""

    def __init__(self, transport, counter):
        self._transport = transport
        self._counter = counter

    def write(self, data):
        self._counter.inc(len(data))
        self._transport.write(data)

    def writeSequence(self, seq):
        seq = list(seq)
        self._counter.inc(sum(len(x) for x in seq))
        self._transport.writeSequence(seq)

    def __getattr__(self, name):
        return getattr(self._transport, name)


class _AdminChannel(http.HTTPChannel):
    """An HTTP/1.1 connection to the admin, counted in the admin stats."""

    def connectionMade(self):
        admin = self.site.admin
        self.transport = _CountingTransport(self.transport, admin.txBytes)
        admin._connectionOpened(self)
        http.HTTPChannel.connectionMade(self)

    def dataReceived(self, data):
        self.site.admin.rxBytes.inc(len(data))
        http.HTTPChannel.dataReceived(self, data)

    def connectionLost(self, reason):
        http.HTTPChannel.connectionLost(self, reason)
        self.site.admin._connectionClosed(self, reason)


class _AdminRequest(webserver.Request):
    """A request counted in the admin stats and given to the access loggers."""

    def process(self):
        admin = self.channel.site.admin
        admin._requestStarted(self)
        self.notifyFinish().addBoth(lambda result: admin._requestDone(self, result))
        webserver.Request.process(self)


class AdminSite(webserver.Site):
    """The admin's C{Site}: Envoy's admin stats instead of Twisted's request log."""

    protocol = _AdminChannel
    requestFactory = _AdminRequest
    noisy = False

    def __init__(self, admin):
        webserver.Site.__init__(self, admin.resource, reactor=admin.reactor)
        self.admin = admin
        self.displayTracebacks = False

    def log(self, request):
        pass


def _parseQuery(raw):
    items = []
    for part in raw.split(b"&"):
        if not part:
            continue
        key, sep, value = part.partition(b"=")
        # Envoy decodes %XX but leaves "+" alone (a regex needs it).
        items.append((unquote(key.decode("latin-1"), errors="replace"),
                      unquote(value.decode("latin-1"), errors="replace")))
    return items


class AdminResource(Resource):
    """Every admin path, dispatched by exact path as Envoy does."""

    isLeaf = True

    def __init__(self, admin):
        Resource.__init__(self)
        self.admin = admin

    def render(self, request):
        method = request.method.decode("ascii", "replace")
        rawPath, _, rawQuery = request.uri.partition(b"?")
        path = _SLASHES.sub(b"/", rawPath).decode("utf-8", "replace")
        items = _parseQuery(rawQuery)
        if method == "POST":
            contentType = request.getHeader(b"content-type") or b""
            if contentType.split(b";")[0].strip().lower() == \
                    b"application/x-www-form-urlencoded" and request.content is not None:
                request.content.seek(0)
                items += _parseQuery(request.content.read())
        call = _handlers.AdminCall(self.admin, method, path, items)
        endpoint = ENDPOINTS_BY_PATH.get(path)
        if endpoint is None:
            response = _handlers.notFound(call)
        elif endpoint.mutatesState and method != "POST":
            log.error('admin path "{path}" mutates state, method={method} rather than POST',
                      path=path, method=method)
            response = _handlers.AdminResponse(
                405, "Method %s not allowed, POST required." % (method,))
        else:
            try:
                response = _handlers.HANDLERS[path](call)
            except Exception:
                log.failure("admin handler for {path} failed", path=path)
                response = _handlers.AdminResponse(500, "internal error\n")
        request.setResponseCode(response.code)
        request.setHeader(b"content-type", response.contentType.encode("ascii"))
        request.setHeader(b"cache-control", b"no-cache, max-age=0")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"server", b"envoy")
        body = response.bodyBytes()
        if method == "HEAD":
            request.setHeader(b"content-length", b"%d" % (len(body),))
            return b""
        return body
