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

C{RedirectPolicy} (an internal redirect to another URI) needs the
connection manager to recreate a stream, which txenvoy does not do; it is
refused with its path.
"""

from zope.interface import implementer

from envoy.extensions.filters.http.custom_response.v3 import custom_response_pb2  # noqa: F401
from envoy.extensions.http.custom_response.local_response_policy.v3 import (  # noqa: F401
    local_response_policy_pb2,
)

from txenvoy.config.datasource import readDataSource
from txenvoy.config.errors import ConfigError, UnsupportedExtension
from txenvoy.config.fields import checkFields
from txenvoy.config.registry import Category, extension, typeNameOf, unpackAny
from txenvoy.http.filter import ConfiguredFilter, FilterHeadersStatus
from txenvoy.http.filter_config import RouteSpecificConfigs
from txenvoy.http.header_mutation import FormatContext, compileHeaderMutation
from txenvoy.http.headers import HeaderMap
from txenvoy.http.local_reply import compileBodyFormat, headerView
from txenvoy.interfaces import IHttpFilterFactory, IStreamDecoderFilter, IStreamEncoderFilter
from txenvoy.rbac.matcher import compileMatcher, headerInput

__all__ = ["CustomResponseConfig", "CustomResponseFilter", "LocalResponsePolicy",
           "createCustomResponse"]

_NAME = "envoy.filters.http.custom_response"
_CONFIG = "envoy.extensions.filters.http.custom_response.v3.CustomResponse"
_LOCAL = ("envoy.extensions.http.custom_response.local_response_policy.v3."
          "LocalResponsePolicy")
_INPUTS = "envoy.type.matcher.v3."


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


def _compileAction(typed, path):
    typeName = typeNameOf(typed.typed_config)
    if typeName == _LOCAL:
        return LocalResponsePolicy(unpackAny(typed.typed_config, path + ".typed_config"),
                                   path + ".typed_config")
    raise UnsupportedExtension(path + ".typed_config", typeName, typed.name)


def compileCustomResponse(message, path):
    """The matcher of a C{CustomResponse}: C{_Response -> policy or None}."""
    checkFields(message, ("custom_response_matcher",), path)
    if not message.HasField("custom_response_matcher"):
        return lambda input: None
    return compileMatcher(message.custom_response_matcher, path + ".custom_response_matcher",
                          _compileInput, _compileAction)


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
        self.requestHeaders = headers
        return FilterHeadersStatus.Continue

    def encodeHeaders(self, headers, endStream):
        if self.replied:
            # Our own reply, on its way out.
            return FilterHeadersStatus.Continue
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
    return CustomResponseConfig(compileCustomResponse(message, context.path + ".typed_config"))
