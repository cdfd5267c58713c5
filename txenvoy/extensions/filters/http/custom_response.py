# -*- test-case-name: tests.extensions.filters.http.test_custom_response -*-
"""
C{envoy.filters.http.custom_response}: a matcher on the response (its
status, its status class, its headers, the request's headers) picks a
policy that replaces it.

Behaviour copied from Envoy 1.40 (checked against the binary, pinned in
C{tests/e2e/test_custom_response.py}):

 - C{LocalResponsePolicy}: the response is replaced by a local reply with
   C{status_code} (or the response's own status), C{body} (formatted by
   C{body_format}, C{%LOCAL_REPLY_BODY%} being C{body}; none is an empty
   body) and C{response_headers_to_add}, evaluated against the upstream's
   response (C{%RESPONSE_CODE%} is its status); the body is C{text/plain}
   whatever the format (a C{json_format} too);
 - a C{CustomResponse} in C{typed_per_filter_config} is tried first for
   its route; when it finds no policy the filter's own matcher is tried;
 - the filter's own reply is not matched again.

C{RedirectPolicy} (pinned in C{tests/e2e/test_custom_response.py}):
the request is sent again, as a GET without its body, to C{uri} (or to
the URL C{redirect_action} makes of it: C{host_redirect},
C{path_redirect}, C{port_redirect}, C{scheme_redirect},
C{https_redirect}, C{strip_query}) with C{request_headers_to_add}, on a
new stream that runs route selection and the whole filter chain again
(L{txenvoy.interfaces.IStreamFilterCallbacks.recreateStream}); the first
pass is logged with the details C{internal_redirect}. The answer to the
redirected request, whatever it is, gets C{response_headers_to_add} and
C{status_code} (or the status of the response that was redirected). A URL no route
matches counts C{http.<stat_prefix>.custom_response_redirect_no_route} and
the original response is sent. C{modify_request_headers_action} is refused
with its path.
"""

from zope.interface import implementer

from envoy.extensions.filters.http.custom_response.v3 import custom_response_pb2  # noqa: F401
from envoy.extensions.http.custom_response.local_response_policy.v3 import (  # noqa: F401
    local_response_policy_pb2,
)
from envoy.extensions.http.custom_response.redirect_policy.v3 import (  # noqa: F401
    redirect_policy_pb2,
)

from txenvoy.config.datasource import readDataSource
from txenvoy.config.errors import ConfigError, UnsupportedExtension
from txenvoy.config.fields import checkFields
from txenvoy.config.registry import Category, extension, typeNameOf, unpackAny
from txenvoy.http.filter import ConfiguredFilter, FilterHeadersStatus
from txenvoy.http.filter_config import RouteSpecificConfigs, WorkerStats, httpStatPrefix
from txenvoy.http.header_mutation import FormatContext, compileHeaderMutation
from txenvoy.http.headers import HeaderMap
from txenvoy.http.local_reply import compileBodyFormat, headerView
from txenvoy.interfaces import IHttpFilterFactory, IStreamDecoderFilter, IStreamEncoderFilter
from txenvoy.rbac.matcher import compileMatcher, headerInput
from txenvoy.router.config import compileRedirectAction, newUri
from txenvoy.router.internal_redirect import parseAbsoluteUrl

__all__ = ["CustomResponseConfig", "CustomResponseFilter", "LocalResponsePolicy",
           "RedirectPolicy", "createCustomResponse"]

_NAME = "envoy.filters.http.custom_response"
_CONFIG = "envoy.extensions.filters.http.custom_response.v3.CustomResponse"
_LOCAL = ("envoy.extensions.http.custom_response.local_response_policy.v3."
          "LocalResponsePolicy")
_REDIRECT = "envoy.extensions.http.custom_response.redirect_policy.v3.RedirectPolicy"
_INPUTS = "envoy.type.matcher.v3."
#: Envoy's filter state name of the policy that redirected the request.
_FILTER_STATE = "envoy.filters.http.custom_response"


class _Response:
    """What the matcher reads: the response head and the request head."""

    __slots__ = ("response", "request")

    def __init__(self, response, request):
        self.response = response
        self.request = request


def _requestHeader(name):
    read = headerInput(name)

    class _View:
        __slots__ = ("headers", "authority", "path", "method")

    def get(input):
        request = input.request
        if request is None:
            return None
        view = _View()
        view.headers = request.headers
        view.authority = request.authority
        view.path = request.path
        view.method = request.method
        return read(view)

    return get


def _responseHeader(name):
    def get(input):
        values = input.response.headers.getAll(name)
        return b",".join(values) if values else None
    return get


def _status(input):
    return b"%d" % (input.response.status,)


def _statusClass(input):
    return b"%dxx" % (input.response.status // 100,)


def _compileInput(typed, path):
    typeName = typeNameOf(typed.typed_config)
    if typeName == _INPUTS + "HttpResponseStatusCodeMatchInput":
        return _status
    if typeName == _INPUTS + "HttpResponseStatusCodeClassMatchInput":
        return _statusClass
    if typeName in (_INPUTS + "HttpResponseHeaderMatchInput",
                    _INPUTS + "HttpRequestHeaderMatchInput"):
        config = unpackAny(typed.typed_config, path + ".typed_config")
        name = config.header_name.lower().encode("utf-8")
        if typeName.endswith("ResponseHeaderMatchInput"):
            return _responseHeader(name)
        return _requestHeader(name)
    raise UnsupportedExtension(path + ".typed_config", typeName, typed.name)


class LocalResponsePolicy:
    """A compiled C{LocalResponsePolicy}."""

    def __init__(self, message, path):
        checkFields(message, ("body", "body_format", "status_code", "response_headers_to_add"),
                    path)
        self.body = (readDataSource(message.body, path + ".body")
                     if message.HasField("body") else None)
        self.bodyFormat = (compileBodyFormat(message.body_format, path + ".body_format")
                           if message.HasField("body_format") else None)
        self.statusCode = message.status_code.value if message.HasField("status_code") else None
        if self.statusCode is not None and not 100 <= self.statusCode < 1000:
            raise ConfigError("%s.status_code: Proto constraint validation failed "
                              "(LocalResponsePolicyValidationError.StatusCode: value must be "
                              "inside range [100, 999])" % (path,))
        self.headers = compileHeaderMutation(message.response_headers_to_add,
                                             addPath=path + ".response_headers_to_add")

    def encodeHeaders(self, filt, headers):
        """
        Replace the response with a local reply (Envoy's C{encodeHeaders}):
        its headers are evaluated against the upstream's response.
        """
        callbacks = filt.callbacks
        info = callbacks.streamInfo
        request = filt.requestHeaders
        code = self.statusCode if self.statusCode is not None else headers.status
        body = self.body or b""
        added = HeaderMap()
        saved = info.responseCode
        info.responseCode = headers.status
        try:
            if self.bodyFormat is not None:
                info.localReplyBody = body.decode("utf-8", "surrogateescape")
                body = self.bodyFormat.formatter.format(
                    info, headerView(request), headerView(headers)).encode(
                        "utf-8", "surrogateescape")
            self.headers.apply(added, FormatContext(info, request, headers))
        finally:
            info.responseCode = saved
            info.localReplyBody = None

        def modify(reply):
            for name, value in added.items():
                reply.headers.add(name, value)

        filt.replied = True
        callbacks.sendLocalReply(code, body, modify, "")
        return FilterHeadersStatus.StopIteration


class RedirectPolicy:
    """A compiled C{RedirectPolicy}: the request goes again, elsewhere."""

    def __init__(self, message, path, stats):
        checkFields(message, ("uri", "redirect_action", "status_code",
                              "response_headers_to_add", "request_headers_to_add"), path)
        self.stats = stats
        self.uri = self.redirect = None
        if message.HasField("redirect_action"):
            action = message.redirect_action
            actionPath = path + ".redirect_action"
            which = action.WhichOneof("path_rewrite_specifier")
            if which in ("regex_rewrite", "prefix_rewrite"):
                raise ConfigError("%s is not supported for Custom Response @ %s.%s"
                                  % (which, actionPath, which))
            if "#" in action.path_redirect:
                raise ConfigError("#fragment is not supported for custom response. Specified "
                                  "path_redirect is %s @ %s.path_redirect"
                                  % (action.path_redirect, actionPath))
            if not action.host_redirect and not action.path_redirect:
                raise ConfigError("At least one of host_redirect and path_redirect needs to be "
                                  "specified @ %s" % (actionPath,))
            self.redirect = compileRedirectAction(action, actionPath)
        else:
            self.uri = message.uri.encode("utf-8")
            if parseAbsoluteUrl(self.uri) is None:
                raise ConfigError("Invalid uri specified for redirection for custom response: "
                                  "%s @ %s.uri" % (message.uri, path))
        self.statusCode = message.status_code.value if message.HasField("status_code") else None
        self.responseHeaders = compileHeaderMutation(
            message.response_headers_to_add, addPath=path + ".response_headers_to_add")
        self.requestHeaders = compileHeaderMutation(
            message.request_headers_to_add, addPath=path + ".request_headers_to_add")

    def encodeHeaders(self, filt, headers):
        """
        Envoy's C{RedirectPolicy::encodeHeaders} on the original response:
        send the request again elsewhere on a new stream.
        """
        request = filt.requestHeaders
        if request is None:
            return FilterHeadersStatus.Continue
        callbacks = filt.callbacks
        connection = callbacks.connection
        secure = getattr(connection, "ssl", None) is not None
        scheme = request.scheme or (b"https" if secure else b"http")
        saved = (request.scheme, request.authority, request.path)
        uri = self.uri
        if uri is None:
            forwarded = request.headers.get(b"x-forwarded-proto")
            uri = newUri(self.redirect, scheme, request.authority, request.path or b"/",
                         forwarded or scheme)
        url = parseAbsoluteUrl(uri)
        if url is None:
            self.stats.forDispatcher(callbacks.dispatcher).invalid_uri.inc()
            return FilterHeadersStatus.Continue
        request.scheme, request.authority, path = url
        fragment = path.find(b"#")
        request.path = path if fragment < 0 else path[:fragment]
        callbacks.clearRouteCache()
        info = callbacks.streamInfo
        # Envoy adds these before it looks for the route, and keeps them
        # when there is none.
        self.requestHeaders.apply(request.headers, FormatContext(info, request, None))
        if callbacks.route() is None:
            self.stats.forDispatcher(callbacks.dispatcher).redirect_no_route.inc()
            request.scheme, request.authority, request.path = saved
            return FilterHeadersStatus.Continue
        request.method = b"GET"
        request.contentLength = None
        request.chunked = False
        request.headers.remove(b"content-length")
        info.filterState[_FILTER_STATE] = (self, headers.status)
        # Envoy logs the first pass with the response's code, and no
        # response headers.
        info.responseCode = headers.status
        callbacks.recreateStream(None, b"")
        return FilterHeadersStatus.StopIteration

    def encodeRedirectedHeaders(self, filt, headers, originalStatus):
        """
        The answer to the redirected request, whatever its status, gets the
        policy's headers, and its C{status_code} or else the status of the
        response that was redirected (Envoy 1.40).
        """
        info = filt.callbacks.streamInfo
        info.responseCode = headers.status
        self.responseHeaders.apply(headers.headers, FormatContext(
            info, filt.callbacks.requestHeaders, headers))
        status = self.statusCode if self.statusCode is not None else originalStatus
        headers.status = status
        info.responseCode = status
        return FilterHeadersStatus.Continue


def _compileAction(stats):
    def compileAction(typed, path):
        typeName = typeNameOf(typed.typed_config)
        if typeName == _LOCAL:
            return LocalResponsePolicy(unpackAny(typed.typed_config, path + ".typed_config"),
                                       path + ".typed_config")
        if typeName == _REDIRECT:
            return RedirectPolicy(unpackAny(typed.typed_config, path + ".typed_config"),
                                  path + ".typed_config", stats)
        raise UnsupportedExtension(path + ".typed_config", typeName, typed.name)
    return compileAction


def _policyStats(prefix):
    return WorkerStats({"redirect_no_route": prefix + "custom_response_redirect_no_route",
                        "invalid_uri": prefix + "custom_response_invalid_uri"})


#: The stats of the redirect policies of routes' configs (which know no
#: connection manager).
_ROUTE_STATS = _policyStats("")


def compileCustomResponse(message, path, stats=_ROUTE_STATS):
    """The matcher of a C{CustomResponse}: C{_Response -> policy or None}."""
    checkFields(message, ("custom_response_matcher",), path)
    if not message.HasField("custom_response_matcher"):
        return lambda input: None
    return compileMatcher(message.custom_response_matcher, path + ".custom_response_matcher",
                          _compileInput, _compileAction(stats))


compileCustomResponse.takesPath = True


@implementer(IHttpFilterFactory)
class CustomResponseConfig:
    """The filter factory: the filter's matcher and the routes' ones."""

    terminal = False

    def __init__(self, matcher):
        self.matcher = matcher
        self.routeConfigs = RouteSpecificConfigs(_NAME, (_CONFIG,), compileCustomResponse)

    def createFilter(self, callbacks):
        """@return: a L{CustomResponseFilter}."""
        return CustomResponseFilter(self, callbacks)


@implementer(IStreamDecoderFilter, IStreamEncoderFilter)
class CustomResponseFilter(ConfiguredFilter):
    """The custom response filter of one stream."""

    requestHeaders = None
    replied = False

    def decodeHeaders(self, headers, endStream):
        # A request a redirect policy sent again takes no part in custom
        # responses (Envoy keeps no request headers for it).
        if self.callbacks.streamInfo.filterState.get(_FILTER_STATE) is None:
            self.requestHeaders = headers
        return FilterHeadersStatus.Continue

    def encodeHeaders(self, headers, endStream):
        if self.replied:
            # Our own reply, on its way out.
            return FilterHeadersStatus.Continue
        redirected = self.callbacks.streamInfo.filterState.get(_FILTER_STATE)
        if redirected is not None:
            policy, originalStatus = redirected
            return policy.encodeRedirectedHeaders(self, headers, originalStatus)
        input = _Response(headers, self.requestHeaders)
        policy = None
        routeMatcher = self.config.routeConfigs.mostSpecific(self.callbacks)
        if routeMatcher is not None:
            policy = routeMatcher(input)
        if policy is None:
            policy = self.config.matcher(input)
        if policy is None:
            return FilterHeadersStatus.Continue
        return policy.encodeHeaders(self, headers)


@extension(Category.HTTP_FILTER, _CONFIG, _NAME, fields=("custom_response_matcher",))
def createCustomResponse(message, context):
    """Compile a C{CustomResponse}."""
    stats = _policyStats(httpStatPrefix(context)).declare(context)
    return CustomResponseConfig(compileCustomResponse(message, context.path + ".typed_config",
                                                      stats))
