# -*- test-case-name: tests.extensions.filters.http.test_ext_authz -*-
"""
C{envoy.filters.http.ext_authz} with an HTTP authorization service
(C{http_service}): every request is first shown to the service, whose
answer lets it through, refuses it, or fails.

Behaviour copied from Envoy 1.40 (C{ext_authz} filter and its raw HTTP
client; checked against the binary, pinned in
C{tests/extensions/filters/http/test_ext_authz.py} and
C{tests/e2e/test_ext_authz.py}):

 - the check request has the request's method, C{path_prefix} plus its
   path and query, its C{host}, C{content-length} (of the body sent, or
   0), the request headers C{authorization_request.allowed_headers} match
   (case-insensitively; C{authorization} always), with
   C{with_request_body} the buffered body and
   C{x-envoy-auth-partial-body}, then C{headers_to_add},
   C{x-envoy-internal: true} and C{x-envoy-expected-rq-timeout-ms} of
   C{server_uri.timeout};
 - a 200 lets the request through: the answer's headers that
   C{allowed_upstream_headers} match replace the request's (removed, then
   added at the end), C{allowed_upstream_headers_to_append} ones are
   appended, and C{allowed_client_headers_on_success} ones are added to
   the response;
 - a 5xx, a timeout, a failed connection or a missing cluster is an
   error: C{failure_mode_allow} lets the request through (counted in
   C{failure_mode_allowed}), otherwise the reply is C{status_on_error}
   (403 by default) with no body, details C{ext_authz_error};
 - any other status is a denial, answered with that status, the answer's
   body and the headers C{allowed_client_headers} match (with C{status},
   C{content-length}, C{www-authenticate} and C{location}; every header
   but C{host} when the list is empty), details C{ext_authz_denied};
   denials and errors carry the flag C{UAEX};
 - with C{with_request_body} the body is held up to C{max_request_bytes}:
   past it the reply is 413 unless C{allow_partial_message}, which sends
   the first C{max_request_bytes};
 - C{ExtAuthzPerRoute}: C{disabled} skips the check for the route;
   C{check_settings.disable_request_body_buffering} and
   C{with_request_body} change the buffering; C{context_extensions} are
   accepted and, as in Envoy, not sent by the HTTP service.

Stats: C{http.<prefix>.ext_authz.[<stat_prefix>.]} C{ok}, C{denied},
C{error}, C{failure_mode_allowed} and Envoy's other counters (at zero),
and C{cluster.<route's cluster>.ext_authz.*}.

With C{grpc_service} the check is C{envoy.service.auth.v3.Authorization/Check}
(L{txenvoy.extensions.filters.common.ext_authz_grpc}): the C{CheckRequest}
carries every request header, the route's C{context_extensions} and the
body; an OK answer's header mutations apply to the request and the
response, a denial is answered with its status (403 when unset), body and
headers, and a failed call is an error as above. The fields listed as
unread in the table of supported extensions are refused with their path.
"""

from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from zope.interface import implementer

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2  # noqa: F401

from txenvoy.config.errors import ConfigError
from txenvoy.config.fields import checkFields
from txenvoy.config.registry import Category, extension
from txenvoy.extensions.filters.common.ext_authz_grpc import (
    GrpcAuthorizationService,
    checkRequest,
)
from txenvoy.grpc.async_client import compileEnvoyGrpc
from txenvoy.http.async_client import AsyncHttpClient
from txenvoy.http.filter import (
    ConfiguredFilter,
    FilterDataStatus,
    FilterHeadersStatus,
    FilterTrailersStatus,
)
from txenvoy.http.filter_config import RouteSpecificConfigs, WorkerStats, httpStatPrefix
from txenvoy.http.header_mutation import compileHeaderMutation
from txenvoy.http.headers import HeaderMap, RequestHeaders
from txenvoy.router.matcher import compileStringMatcher
from txenvoy.interfaces import IHttpFilterFactory, IStreamDecoderFilter, IStreamEncoderFilter
from txenvoy.network.stream_info import ResponseFlag
from txenvoy.stats.per_worker import PerWorker

__all__ = ["ExtAuthzConfig", "ExtAuthzFilter", "createExtAuthz"]

log = Logger(namespace="ext_authz")

_NAME = "envoy.filters.http.ext_authz"
_EXT_AUTHZ = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
_PER_ROUTE = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"

_COUNTERS = ("ok", "denied", "error", "failure_mode_allowed", "disabled",
             "filter_state_name_collision", "ignored_dynamic_metadata", "invalid",
             "omitted_response_headers", "request_header_limits_reached",
             "response_header_limits_reached", "shadow_denied", "shadow_error")

_PARTIAL_BODY = b"x-envoy-auth-partial-body"
_FAILURE_MODE_ALLOWED = b"x-envoy-auth-failure-mode-allowed"

#: Headers every check request may carry (Envoy's toRequestMatchers).
_ALWAYS_SENT = frozenset([b"authorization"])
#: Headers a denial always passes on when allowed_client_headers is set.
_ALWAYS_TO_CLIENT = frozenset([b":status", b"content-length", b"www-authenticate", b"location"])

_NOT_SENT = frozenset([b"host", b"content-length"])


def _keyMatcher(listMatcher, path, ignoreCase=True):
    """
    A C{ListStringMatcher} of header names as C{match(name) -> bool};
    Envoy matches them ignoring case (names are lower case already).
    """
    matchers = []
    for i, pattern in enumerate(listMatcher.patterns):
        if ignoreCase and pattern.WhichOneof("match_pattern") != "safe_regex":
            copy = type(pattern)()
            copy.CopyFrom(pattern)
            copy.ignore_case = True
            pattern = copy
        matchers.append(compileStringMatcher(pattern, "%s.patterns[%d]" % (path, i)))
    return matchers


def _anyMatch(matchers, name):
    for match in matchers:
        if match(name):
            return True
    return False


class _BodySettings:
    """A compiled C{BufferSettings} (C{with_request_body})."""

    __slots__ = ("maxBytes", "allowPartial")

    def __init__(self, message, path):
        checkFields(message, ("max_request_bytes", "allow_partial_message"), path)
        if message.max_request_bytes <= 0:
            raise ConfigError("%s.max_request_bytes: Proto constraint validation failed "
                              "(BufferSettingsValidationError.MaxRequestBytes: value must be "
                              "greater than 0)" % (path,))
        self.maxBytes = message.max_request_bytes
        self.allowPartial = message.allow_partial_message


class _PerRoute:
    """A compiled C{ExtAuthzPerRoute}."""

    __slots__ = ("disabled", "noBuffering", "body", "contextExtensions")

    def __init__(self, disabled=False, noBuffering=False, body=None, contextExtensions=None):
        self.disabled = disabled
        self.noBuffering = noBuffering
        self.body = body
        self.contextExtensions = contextExtensions


def compilePerRoute(message):
    """Compile an C{ExtAuthzPerRoute}."""
    path = "typed_per_filter_config[%s]" % (_NAME,)
    which = message.WhichOneof("override")
    if which == "disabled":
        if not message.disabled:
            raise ConfigError("%s.disabled: Proto constraint validation failed "
                              "(ExtAuthzPerRouteValidationError.Disabled: value must equal "
                              "true)" % (path,))
        return _PerRoute(disabled=True)
    if which == "check_settings":
        settings = message.check_settings
        checkFields(settings, ("context_extensions", "disable_request_body_buffering",
                               "with_request_body"), path + ".check_settings")
        body = None
        if settings.HasField("with_request_body"):
            body = _BodySettings(settings.with_request_body,
                                 path + ".check_settings.with_request_body")
        return _PerRoute(noBuffering=settings.disable_request_body_buffering, body=body,
                         contextExtensions=dict(settings.context_extensions))
    raise ConfigError("%s: Proto constraint validation failed (ExtAuthzPerRouteValidationError."
                      "Override: value is required)" % (path,))


@implementer(IHttpFilterFactory)
class ExtAuthzConfig:
    """
    A compiled C{ExtAuthz} with an C{http_service}; the filter factory.

    @ivar cluster: the authorization service's cluster.
    @ivar timeout: seconds.
    @ivar tooLargeStat: the connection manager's C{downstream_rq_too_large}.
    """

    terminal = False
    chargeCluster = True
    #: The L{GrpcAuthorizationService} of a C{grpc_service}, else C{None}.
    grpcService = None
    packAsBytes = False

    def __init__(self, cluster, timeout, pathPrefix, requestMatchers, headersToAdd,
                 upstreamMatchers, appendMatchers, clientMatchers, successMatchers, body,
                 failureModeAllow, failureModeHeader, statusOnError, clearRouteCache, statPrefix,
                 tooLargeStat):
        self.cluster = cluster
        self.timeout = timeout
        self.pathPrefix = pathPrefix
        self.requestMatchers = requestMatchers
        self.headersToAdd = headersToAdd
        self.upstreamMatchers = upstreamMatchers
        self.appendMatchers = appendMatchers
        self.clientMatchers = clientMatchers
        self.successMatchers = successMatchers
        self.body = body
        self.failureModeAllow = failureModeAllow
        self.failureModeHeader = failureModeHeader
        self.statusOnError = statusOnError
        self.clearRouteCache = clearRouteCache
        self.tooLargeStat = tooLargeStat
        self.stats = WorkerStats({name: statPrefix + name for name in _COUNTERS})
        self.routeConfigs = RouteSpecificConfigs(_NAME, (_PER_ROUTE,), compilePerRoute)
        self.clients = PerWorker(AsyncHttpClient)

    def createFilter(self, callbacks):
        """@return: an L{ExtAuthzFilter} for one request."""
        return ExtAuthzFilter(self, callbacks)

    def sendsHeader(self, name):
        """Whether a request header goes to the service."""
        return name in _ALWAYS_SENT or _anyMatch(self.requestMatchers, name)

    def toClient(self, name):
        """Whether a header of a denial goes to the client."""
        if self.clientMatchers is None:
            return name != b"host"
        return name in _ALWAYS_TO_CLIENT or _anyMatch(self.clientMatchers, name)


@implementer(IStreamDecoderFilter, IStreamEncoderFilter)
class ExtAuthzFilter(ConfiguredFilter):
    """The ext_authz filter of one request."""

    _headers = None
    _pending = None         # the check in flight
    _buffering = None       # the _BodySettings while the body is held
    _size = 0
    _inCall = False         # the check is being started (an answer may come at once)
    _answered = None        # what to return when it did
    _clientHeaders = ()
    _okAnswer = None        # a gRPC OkAnswer with response mutations
    _perRoute = None

    # The request.

    def decodeHeaders(self, headers, endStream):
        config = self.config
        perRoute = self._perRoute = config.routeConfigs.mostSpecific(self.callbacks)
        if perRoute is not None and perRoute.disabled:
            return FilterHeadersStatus.Continue
        self._headers = headers
        body = config.body
        if perRoute is not None and perRoute.body is not None:
            body = perRoute.body
        if (body is not None and not endStream
                and not (perRoute is not None and perRoute.noBuffering)):
            self._buffering = body
            return FilterHeadersStatus.StopIteration
        return self._check(None, False, FilterHeadersStatus.StopAllIterationAndWatermark,
                           FilterHeadersStatus.Continue)

    def decodeData(self, data, endStream):
        body = self._buffering
        if body is None:
            return FilterDataStatus.Continue
        size = self._size = self._size + len(data)
        if size > body.maxBytes and not body.allowPartial:
            self._buffering = None
            self._tooLarge()
            return FilterDataStatus.StopIterationNoBuffer
        if endStream or size >= body.maxBytes:
            self._buffering = None
            held = self.callbacks.decodingBuffer() or b""
            whole = held + data
            partial = len(whole) > body.maxBytes
            return self._check(whole[:body.maxBytes], partial,
                               FilterDataStatus.StopIterationAndBuffer,
                               FilterDataStatus.Continue)
        return FilterDataStatus.StopIterationAndBuffer

    def decodeTrailers(self, trailers):
        body = self._buffering
        if body is not None:
            self._buffering = None
            whole = self.callbacks.decodingBuffer() or b""
            return self._check(whole[:body.maxBytes], False, FilterTrailersStatus.StopIteration,
                               FilterTrailersStatus.Continue)
        if self._pending is not None:
            return FilterTrailersStatus.StopIteration
        return FilterTrailersStatus.Continue

    def encodeHeaders(self, headers, endStream):
        for name, value in self._clientHeaders:
            headers.headers.add(name, value)
        if self._okAnswer is not None:
            self._okAnswer.applyToResponse(headers.headers)
        return FilterHeadersStatus.Continue

    def onDestroy(self):
        pending = self._pending
        if pending is not None:
            self._pending = None
            pending.cancel()

    def _tooLarge(self):
        # Envoy: the stream's buffer limit was lowered to max_request_bytes;
        # going past it is the connection manager's 413.
        callbacks = self.callbacks
        callbacks.dispatcher.stats.counter(self.config.tooLargeStat).inc()
        callbacks.sendLocalReply(413, b"Payload Too Large", None, "request_payload_too_large")

    # The check.

    def _check(self, body, partial, stopped, done):
        """
        Send the check request; C{stopped} is what to return while it is
        in flight, C{done} when the answer came at once and let the
        request through.
        """
        config = self.config
        if config.grpcService is not None:
            return self._checkGrpc(body, partial, stopped, done)
        callbacks = self.callbacks
        head = self._headers
        entries = HeaderMap()
        entries.add(b"content-length", b"%d" % (len(body),) if body else b"0")
        for name, value in head.headers.items():
            if name not in _NOT_SENT and config.sendsHeader(name):
                entries.add(name, value)
        if body is not None:
            entries.add(_PARTIAL_BODY, b"true" if partial else b"false")
        config.headersToAdd.apply(entries)
        path = config.pathPrefix + (head.path or b"/")
        check = RequestHeaders(head.method, path, head.authority, headers=entries)
        client = config.clients.get(callbacks.dispatcher)
        self._inCall = True
        self._answered = None
        self._pending = client.send(config.cluster, check, body, config.timeout, self)
        self._inCall = False
        answered = self._answered
        if answered is None:
            return stopped
        self._pending = None
        return done if answered else stopped

    def _checkGrpc(self, body, partial, stopped, done):
        config = self.config
        callbacks = self.callbacks
        head = self._headers
        perRoute = self._perRoute

        def fillHttp(http):
            http.id = "%d" % (callbacks.streamId,)
            http.method = head.method.decode("latin-1")
            headers = http.headers
            for name, value in head.headers.items():
                name = name.decode("latin-1")
                value = value.decode("latin-1")
                headers[name] = headers[name] + "," + value if name in headers else value
            if body is not None:
                headers[_PARTIAL_BODY.decode()] = "true" if partial else "false"
            scheme = (head.scheme or head.headers.get(b"x-forwarded-proto") or b"http")
            scheme = scheme.decode("latin-1")
            headers[":scheme"] = http.scheme = scheme
            if head.path is not None:
                headers[":path"] = http.path = head.path.decode("latin-1")
            headers[":method"] = http.method
            if head.authority is not None:
                headers[":authority"] = http.host = head.authority.decode("latin-1")
            http.protocol = head.version
            if body:
                # Envoy: the size of the body buffered, not the header's.
                http.size = len(body)
            if body:
                if config.packAsBytes:
                    http.raw_body = body
                else:
                    http.body = body.decode("utf-8", "replace")

        request = checkRequest(callbacks.streamInfo, callbacks.dispatcher.reactor.seconds(),
                               perRoute.contextExtensions if perRoute is not None else None,
                               fillHttp)
        self._inCall = True
        self._answered = None
        d = self._pending = config.grpcService.check(callbacks.dispatcher, request)
        d.addCallbacks(self._onGrpcAnswer, self._onGrpcFailure).addErrback(self._onBug)
        self._inCall = False
        answered = self._answered
        if answered is None:
            return stopped
        self._pending = None
        return done if answered else stopped

    def _onGrpcAnswer(self, answer):
        self._pending = None
        if not answer.allowed:
            self._deny(answer.status, answer.body, answer.applyToReply)
            return
        self._count("ok")
        answer.applyToRequest(self._headers.headers)
        if answer.mutatesResponse():
            self._okAnswer = answer
        if self.config.clearRouteCache and answer.mutatesRequest():
            self.callbacks.clearRouteCache()
        self._proceed()

    def _onBug(self, reason):
        # A bug while applying the answer: the request must not hang.
        log.failure("applying an authorization answer", reason)
        self.callbacks.resetStream()

    def _onGrpcFailure(self, reason):
        if reason.check(CancelledError):
            return
        self._pending = None
        self._onError()

    # IAsyncRequestCallbacks.

    def onSuccess(self, response, body):
        """The service answered."""
        self._pending = None
        status = response.status
        if 500 <= status < 600:
            self._onError()
        elif status == 200:
            self._onOk(response)
        else:
            self._onDenied(response, body)

    def onFailure(self, reason):
        """No answer (timeout, reset, no host, no cluster): an error."""
        self._pending = None
        self._onError()

    def _count(self, name):
        callbacks = self.callbacks
        getattr(self.config.stats.forDispatcher(callbacks.dispatcher), name).inc()
        route = callbacks.route()
        cluster = getattr(route, "clusterName", None) if route is not None else None
        if cluster:
            callbacks.dispatcher.stats.counter("cluster.%s.ext_authz.%s" % (cluster, name)).inc()

    def _chargeRouteCluster(self, status):
        # Envoy's charge_cluster_response_stats (on by default): a denial
        # counts as a response of the route's cluster.
        callbacks = self.callbacks
        route = callbacks.route()
        name = getattr(route, "clusterName", None) if route is not None else None
        cluster = (callbacks.dispatcher.clusterManager.getThreadLocalCluster(name)
                   if name else None)
        if cluster is not None:
            stats = cluster.stats
            code, klass = stats.rqCode(status)
            code.inc()
            klass.inc()
            stats.upstream_rq_completed.inc()

    def _proceed(self):
        if self._inCall:
            self._answered = True
        else:
            self.callbacks.continueDecoding()

    def _stopped(self):
        if self._inCall:
            self._answered = False

    def _onOk(self, response):
        config = self.config
        self._count("ok")
        request = self._headers.headers
        toSet = []
        client = []
        for name, value in response.headers.items():
            if _anyMatch(config.upstreamMatchers, name):
                toSet.append((name, value))
            elif _anyMatch(config.appendMatchers, name):
                request.add(name, value)
            if _anyMatch(config.successMatchers, name):
                client.append((name, value))
        for name, _ in toSet:
            request.remove(name)
        for name, value in toSet:
            request.add(name, value)
        self._clientHeaders = client
        if config.clearRouteCache and (toSet or config.appendMatchers):
            self.callbacks.clearRouteCache()
        self._proceed()

    def _onDenied(self, response, body):
        config = self.config
        passed = [(name, value) for name, value in response.headers.items()
                  if config.toClient(name)]

        def addHeaders(headers):
            # Envoy: the local reply sets content-length where the service
            # put it, or (no body) leaves it to the codec, at the end.
            for name, value in passed:
                if body or name != b"content-length":
                    headers.add(name, value)

        self._deny(response.status, body, addHeaders)

    def _deny(self, status, body, addHeaders):
        """Answer with the denial: C{addHeaders(HeaderMap)} adds its headers."""
        self._count("denied")
        if self.config.chargeCluster:
            self._chargeRouteCluster(status)
        self._stopped()
        callbacks = self.callbacks
        callbacks.streamInfo.setResponseFlag(ResponseFlag.UNAUTHORIZED_EXTERNAL_SERVICE)
        callbacks.sendLocalReply(status, body, lambda head: addHeaders(head.headers),
                                 "ext_authz_denied")

    def _onError(self):
        config = self.config
        self._count("error")
        if config.failureModeAllow:
            self._count("failure_mode_allowed")
            if config.failureModeHeader:
                self._headers.headers.set(_FAILURE_MODE_ALLOWED, b"true")
            self._proceed()
            return
        self._stopped()
        callbacks = self.callbacks
        callbacks.streamInfo.setResponseFlag(ResponseFlag.UNAUTHORIZED_EXTERNAL_SERVICE)
        callbacks.sendLocalReply(config.statusOnError, b"", None, "ext_authz_error")


_FIELDS = ("http_service", "grpc_service", "transport_api_version", "failure_mode_allow",
           "failure_mode_allow_header_add", "with_request_body", "clear_route_cache",
           "status_on_error", "stat_prefix", "include_peer_certificate",
           "charge_cluster_response_stats")


def _timeout(serverUri, path):
    if not serverUri.HasField("timeout"):
        raise ConfigError("%s.timeout: Proto constraint validation failed (HttpUriValidationError."
                          "Timeout: value is required)" % (path,))
    seconds = serverUri.timeout.seconds + serverUri.timeout.nanos / 1e9
    return seconds or None


@extension(Category.HTTP_FILTER, _EXT_AUTHZ, _NAME, fields=_FIELDS)
def createExtAuthz(message, context):
    """Compile an C{ExtAuthz} message (HTTP service)."""
    path = context.path + ".typed_config"
    if message.HasField("grpc_service"):
        return _createGrpc(message, context, path)
    if not message.HasField("http_service"):
        raise ConfigError("%s: one of http_service or grpc_service is required" % (path,))
    service = message.http_service
    servicePath = path + ".http_service"
    checkFields(service, ("server_uri", "path_prefix", "authorization_request",
                          "authorization_response"), servicePath)
    serverUri = service.server_uri
    checkFields(serverUri, ("uri", "cluster", "timeout"), servicePath + ".server_uri")
    if not serverUri.cluster:
        raise ConfigError("%s.server_uri.cluster: Proto constraint validation failed "
                          "(HttpUriValidationError.Cluster: value length must be at least 1 "
                          "characters)" % (servicePath,))
    request = service.authorization_request
    requestPath = servicePath + ".authorization_request"
    checkFields(request, ("allowed_headers", "headers_to_add"), requestPath)
    options = []
    for header in request.headers_to_add:
        option = base_pb2.HeaderValueOption(
            append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD)
        option.header.CopyFrom(header)
        options.append(option)
    headersToAdd = compileHeaderMutation(options, addPath=requestPath + ".headers_to_add")
    answer = service.authorization_response
    answerPath = servicePath + ".authorization_response"
    checkFields(answer, ("allowed_upstream_headers", "allowed_upstream_headers_to_append",
                         "allowed_client_headers", "allowed_client_headers_on_success"),
                answerPath)
    clientMatchers = None
    if answer.allowed_client_headers.patterns:
        clientMatchers = _keyMatcher(answer.allowed_client_headers,
                                     answerPath + ".allowed_client_headers")
    body = None
    if message.HasField("with_request_body"):
        body = _BodySettings(message.with_request_body, path + ".with_request_body")
    statusOnError = message.status_on_error.code or 403
    prefix = httpStatPrefix(context) + "ext_authz."
    if message.stat_prefix:
        prefix += message.stat_prefix + "."
    config = ExtAuthzConfig(
        cluster=serverUri.cluster, timeout=_timeout(serverUri, servicePath + ".server_uri"),
        pathPrefix=service.path_prefix.encode("utf-8"),
        requestMatchers=_keyMatcher(request.allowed_headers, requestPath + ".allowed_headers"),
        headersToAdd=headersToAdd,
        upstreamMatchers=_keyMatcher(answer.allowed_upstream_headers,
                                     answerPath + ".allowed_upstream_headers"),
        appendMatchers=_keyMatcher(answer.allowed_upstream_headers_to_append,
                                   answerPath + ".allowed_upstream_headers_to_append"),
        clientMatchers=clientMatchers,
        successMatchers=_keyMatcher(answer.allowed_client_headers_on_success,
                                    answerPath + ".allowed_client_headers_on_success"),
        body=body, failureModeAllow=message.failure_mode_allow,
        failureModeHeader=message.failure_mode_allow_header_add,
        statusOnError=statusOnError, clearRouteCache=message.clear_route_cache,
        statPrefix=prefix, tooLargeStat=httpStatPrefix(context) + "downstream_rq_too_large")
    return _finish(config, message, context)


def _finish(config, message, context):
    config.chargeCluster = (message.charge_cluster_response_stats.value
                            if message.HasField("charge_cluster_response_stats") else True)
    config.stats.declare(context)
    return config


def _createGrpc(message, context, path):
    """Compile an C{ExtAuthz} with a C{grpc_service}."""
    target = compileEnvoyGrpc(message.grpc_service, path + ".grpc_service", context.bootstrap)
    body = None
    if message.HasField("with_request_body"):
        checkFields(message.with_request_body,
                    ("max_request_bytes", "allow_partial_message", "pack_as_bytes"),
                    path + ".with_request_body")
        copy = type(message.with_request_body)()
        copy.CopyFrom(message.with_request_body)
        copy.ClearField("pack_as_bytes")
        body = _BodySettings(copy, path + ".with_request_body")
    prefix = httpStatPrefix(context) + "ext_authz."
    if message.stat_prefix:
        prefix += message.stat_prefix + "."
    config = ExtAuthzConfig(
        cluster=target.clusterName, timeout=target.timeout, pathPrefix=b"", requestMatchers=(),
        headersToAdd=None, upstreamMatchers=(), appendMatchers=(), clientMatchers=None,
        successMatchers=(), body=body, failureModeAllow=message.failure_mode_allow,
        failureModeHeader=message.failure_mode_allow_header_add,
        statusOnError=message.status_on_error.code or 403,
        clearRouteCache=message.clear_route_cache, statPrefix=prefix,
        tooLargeStat=httpStatPrefix(context) + "downstream_rq_too_large")
    config.grpcService = GrpcAuthorizationService(target)
    config.packAsBytes = message.with_request_body.pack_as_bytes
    return _finish(config, message, context)
