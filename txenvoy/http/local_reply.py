# -*- test-case-name: tests.http.test_local_reply -*-
"""
Envoy's local replies: the responses the connection manager and its
filters make up themselves (404 for no route, 503 C{no healthy upstream},
504 C{upstream request timeout}, a C{direct_response}...), and the
C{local_reply_config} that rewrites them.

Behaviour copied from Envoy 1.40 (C{Utility::sendLocalReply} and
C{LocalReplyImpl}, checked against the binary):

 - the head starts with what C{modifyHeaders} adds (a redirect's
   C{location}), then, for a non-empty body, C{content-length} and
   C{content-type: text/plain}; an empty body gets no C{content-type}, and
   the codec adds C{content-length: 0} at the end;
 - mappers are tried in order and the first whose C{filter} matches
   rewrites the status, the body and the headers; its
   C{body_format_override} wins over C{body_format};
 - a C{body_format} formats every local reply, an empty body included,
   with C{%LOCAL_REPLY_BODY%} standing for the body; its content type is
   C{text/plain} for text and C{application/json} for JSON unless
   C{content_type} says otherwise.
"""

from txenvoy.accesslog.filters import compileFilter
from txenvoy.config.datasource import readDataSource
from txenvoy.config.errors import ConfigError
from txenvoy.config.fields import checkFields
from txenvoy.formatter.substitution import formatterFromProto
from txenvoy.http.header_mutation import FormatContext, compileHeaderMutation
from txenvoy.http.headers import HeaderMap, ResponseHeaders

__all__ = ["LocalReplyConfig", "DEFAULT_LOCAL_REPLY", "compileLocalReplyConfig",
           "makeLocalReply", "headerView"]

TEXT_PLAIN = b"text/plain"
APPLICATION_JSON = b"application/json"

_MAPPER_FIELDS = frozenset(("filter", "status_code", "body", "body_format_override",
                            "headers_to_add"))
_FORMAT_FIELDS = frozenset(("text_format", "text_format_source", "json_format",
                            "omit_empty_values", "content_type", "formatters"))


class _BodyFormat:
    """A compiled C{SubstitutionFormatString} used as a reply body format."""

    __slots__ = ("formatter", "contentType")

    def __init__(self, formatter, contentType):
        self.formatter = formatter
        self.contentType = contentType


class _Mapper:
    """One compiled C{ResponseMapper}."""

    __slots__ = ("predicate", "statusCode", "body", "bodyFormat", "headers")

    def __init__(self, predicate, statusCode, body, bodyFormat, headers):
        self.predicate = predicate
        self.statusCode = statusCode
        self.body = body
        self.bodyFormat = bodyFormat
        self.headers = headers


class LocalReplyConfig:
    """
    A compiled C{local_reply_config}.

    @ivar mappers: the compiled mappers, in order.
    @ivar bodyFormat: the C{body_format}, or C{None}.
    """

    def __init__(self, mappers=(), bodyFormat=None):
        self.mappers = tuple(mappers)
        self.bodyFormat = bodyFormat
        self.active = bool(self.mappers) or bodyFormat is not None

    def rewrite(self, streamInfo, requestHeaders, responseHeaders, code, body):
        """
        Apply the mappers and the body format.

        @param responseHeaders: the L{ResponseHeaders} being built (mapper
            headers are added to it).
        @param body: C{bytes}.
        @return: C{(code, body, contentType)}; C{contentType} is C{None}
            when no format applied (then C{text/plain} is used).
        """
        bodyFormat = self.bodyFormat
        streamInfo.responseCode = code
        for mapper in self.mappers:
            if not mapper.predicate(streamInfo, requestHeaders, responseHeaders):
                continue
            if mapper.statusCode is not None:
                code = mapper.statusCode
                responseHeaders.status = code
                streamInfo.responseCode = code
            if mapper.body is not None:
                body = mapper.body
            if mapper.headers:
                mapper.headers.apply(responseHeaders.headers,
                                     FormatContext(streamInfo, requestHeaders, responseHeaders))
            if mapper.bodyFormat is not None:
                bodyFormat = mapper.bodyFormat
            break
        if bodyFormat is None:
            return code, body, None
        streamInfo.localReplyBody = body.decode("utf-8", "surrogateescape")
        try:
            text = bodyFormat.formatter.format(streamInfo, headerView(requestHeaders),
                                               headerView(responseHeaders))
        finally:
            streamInfo.localReplyBody = None
        return code, text.encode("utf-8", "surrogateescape"), bodyFormat.contentType


#: No mappers, no format: Envoy's replies as they are.
DEFAULT_LOCAL_REPLY = LocalReplyConfig()


def makeLocalReply(config, streamInfo, requestHeaders, code, body, modifyHeaders=None):
    """
    Build a local reply's head and body, in Envoy's header order.

    @param config: a L{LocalReplyConfig}.
    @param requestHeaders: the request head, or C{None}.
    @param code: the HTTP status.
    @param body: C{bytes}.
    @param modifyHeaders: C{None} or C{f(responseHeaders)}, run first.
    @return: C{(ResponseHeaders, body)}.
    """
    headers = ResponseHeaders(code, HeaderMap._fromList([]))
    if modifyHeaders is not None:
        modifyHeaders(headers)
    contentType = None
    if config.active:
        code, body, contentType = config.rewrite(
            streamInfo, requestHeaders, headers, code, body)
        headers.status = code
    if body:
        entries = headers.headers._entries
        length = b"%d" % (len(body),)
        # Envoy's setContentLength: one set by modifyHeaders keeps its place.
        for i, (name, _) in enumerate(entries):
            if name == b"content-length":
                entries[i] = (name, length)
                break
        else:
            entries.append((b"content-length", length))
        if contentType is None:
            contentType = TEXT_PLAIN
        for name, _ in entries:
            if name == b"content-type":
                break
        else:
            entries.append((b"content-type", contentType))
    return headers, body


def compileBodyFormat(message, path):
    """
    Compile a C{SubstitutionFormatString} used as a reply's body format:
    its formatter and content type (C{text/plain} for text, or
    C{application/json}, unless C{content_type} says otherwise).
    """
    checkFields(message, _FORMAT_FIELDS, path)
    formatter = formatterFromProto(message, path)
    if message.content_type:
        contentType = message.content_type.encode("utf-8")
    elif message.WhichOneof("format") == "json_format":
        contentType = APPLICATION_JSON
    else:
        contentType = TEXT_PLAIN
    return _BodyFormat(formatter, contentType)


def compileLocalReplyConfig(message, path):
    """
    Compile an HCM C{local_reply_config}.

    @param message: an C{HttpConnectionManager.LocalReplyConfig}.
    @param path: its field path, for messages.
    @rtype: L{LocalReplyConfig}
    @raise ConfigError: for a bad or unsupported setting.
    """
    mappers = []
    for i, m in enumerate(message.mappers):
        mpath = "%s.mappers[%d]" % (path, i)
        checkFields(m, _MAPPER_FIELDS, mpath)
        if not m.HasField("filter"):
            raise ConfigError("%s.filter: value is required" % (mpath,))
        predicate = compileFilter(m.filter, mpath + ".filter")
        status = None
        if m.HasField("status_code"):
            status = m.status_code.value
            if not 200 <= status < 600:
                raise ConfigError("%s.status_code: value must be inside range [200, 600)"
                                  % (mpath,))
        body = readDataSource(m.body, mpath + ".body") if m.HasField("body") else None
        bodyFormat = None
        if m.HasField("body_format_override"):
            bodyFormat = compileBodyFormat(m.body_format_override,
                                            mpath + ".body_format_override")
        headers = None
        if len(m.headers_to_add):
            headers = compileHeaderMutation(m.headers_to_add, (), mpath + ".headers_to_add", "")
        mappers.append(_Mapper(predicate, status, body, bodyFormat, headers))
    bodyFormat = None
    if message.HasField("body_format"):
        bodyFormat = compileBodyFormat(message.body_format, path + ".body_format")
    return LocalReplyConfig(mappers, bodyFormat)


class _HeaderView:
    """
    A request or response head as the access log formatter reads it:
    header names as text, pseudo-headers as attributes.
    """

    __slots__ = ("_head",)

    _names = {}

    def __init__(self, head):
        self._head = head

    def get(self, name):
        """The value of header C{name} (text), or C{None}."""
        key = self._names.get(name)
        if key is None:
            key = self._names[name] = name.lower().encode("latin-1")
        for n, v in self._head.headers._entries:
            if n == key:
                return v
        return None

    def __getattr__(self, name):
        return getattr(self._head, name)


def headerView(head):
    """
    @param head: a request or response head, or C{None}.
    @return: what access log formatters read: a L{_HeaderView}, or C{None}.
    """
    if head is None or head.__class__ is _HeaderView:
        return head
    return _HeaderView(head)
