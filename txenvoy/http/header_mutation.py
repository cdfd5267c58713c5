# -*- test-case-name: tests.http.test_header_mutation -*-
"""
Envoy's C{request_headers_to_add} / C{request_headers_to_remove} /
C{response_headers_to_add} / C{response_headers_to_remove} (its
C{HeaderParser}), compiled once when the config loads.

One L{HeaderMutation} is one level of a route table (route configuration,
virtual host, route or weighted cluster). Applying it copies Envoy 1.40's
C{HeaderParser::evaluateHeaders}:
 1. every name in C{headers_to_remove} is removed;
 2. every value is evaluated against the headers as they are now (so a
    later entry does not see an earlier one), and entries whose value is
    empty are skipped unless C{keep_empty_value};
 3. overwrites are applied (C{OVERWRITE_IF_EXISTS_OR_ADD}, and
    C{OVERWRITE_IF_EXISTS} when the header was there), then appends
    (C{APPEND_IF_EXISTS_OR_ADD}, the default, and C{ADD_IF_ABSENT} when the
    header was not there).

A value without C{%} is plain bytes, ready at config time: applying it costs
a dict-free loop step and nothing else. A value with format operators
(C{%REQ(x)%}, C{%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%}, C{%START_TIME%},
...) is compiled by the access log formatter with C{omit_empty_values}, as
Envoy does, so an unknown value is an empty string (and the header is then
skipped). It is evaluated per request through C{context.format(compiled)};
L{FormatContext} is the usual context. Without a context, the value's text
is used as is, as Envoy does when it has no stream info.

Envoy refuses to add or remove C{:}-prefixed headers and C{host}; so does
this module, with Envoy's messages.
"""

from txenvoy.config.errors import ConfigError
from txenvoy.config.fields import checkFields
from txenvoy.formatter.substitution import compileFormat, parseFormat

__all__ = [
    "APPEND_IF_EXISTS_OR_ADD",
    "ADD_IF_ABSENT",
    "OVERWRITE_IF_EXISTS_OR_ADD",
    "OVERWRITE_IF_EXISTS",
    "FormatContext",
    "HeaderMutation",
    "HeaderMutations",
    "EMPTY",
    "compileHeaderMutation",
]

#: C{HeaderValueOption.HeaderAppendAction}, with Envoy's numbering.
APPEND_IF_EXISTS_OR_ADD = 0
ADD_IF_ABSENT = 1
OVERWRITE_IF_EXISTS_OR_ADD = 2
OVERWRITE_IF_EXISTS = 3

_OPTION_FIELDS = frozenset(("header", "append", "append_action", "keep_empty_value"))
_VALUE_FIELDS = frozenset(("key", "value", "raw_value"))


class FormatContext:
    """
    What a formatted header value is evaluated against: one request's
    stream info and header maps.

    @ivar streamInfo: the request's L{txenvoy.network.stream_info.StreamInfo}.
    @ivar requestHeaders: the request head (pseudo-headers readable as
        attributes C{method}, C{path}, C{authority}, ...), or C{None}.
    @ivar responseHeaders: the response head, or C{None}.
    """

    __slots__ = ("streamInfo", "requestHeaders", "responseHeaders", "_views")

    def __init__(self, streamInfo, requestHeaders=None, responseHeaders=None):
        self.streamInfo = streamInfo
        self.requestHeaders = requestHeaders
        self.responseHeaders = responseHeaders
        self._views = None

    def format(self, compiled):
        """
        @param compiled: a compiled value (from the access log formatter).
        @return: the value, C{bytes}.
        """
        views = self._views
        if views is None:
            views = self._views = (_FormatterView.of(self.requestHeaders),
                                   _FormatterView.of(self.responseHeaders))
        text = compiled.format(self.streamInfo, views[0], views[1])
        return text.encode("utf-8", "surrogateescape")


class _FormatterView:
    """
    A header map as the access log formatter reads it: it asks for header
    names as text, and for pseudo-headers as attributes (C{method},
    C{path}, C{authority}...). Header maps here are keyed by bytes, and a
    request head keeps its map in C{.headers}.
    """

    __slots__ = ("_head", "_map")

    def __init__(self, head):
        self._head = head
        inner = getattr(head, "headers", None)
        self._map = inner if inner is not None and hasattr(inner, "get") else head

    @classmethod
    def of(cls, head):
        return None if head is None else cls(head)

    def get(self, name):
        if name.__class__ is str:
            name = name.encode("latin-1")
        return self._map.get(name)

    def __getattr__(self, name):
        return getattr(self._head, name)


def _isProtected(name):
    # Envoy's HeaderUtility::isModifiableHeader / isRemovableHeader.
    return not name or name[:1] == ":" or name.lower() == "host"


class _HeaderToAdd:
    """One compiled C{HeaderValueOption}."""

    __slots__ = ("name", "value", "formatter", "action", "keepEmpty")

    def __init__(self, name, value, formatter, action, keepEmpty):
        self.name = name
        self.value = value
        self.formatter = formatter
        self.action = action
        self.keepEmpty = keepEmpty

    def __repr__(self):
        return "<header %r: %r action=%d>" % (self.name, self.value, self.action)


class HeaderMutation:
    """
    One level of header mutations: removals, then additions.

    @ivar removes: lower-cased names to remove, C{bytes}.
    @ivar adds: the compiled additions, in config order.
    """

    __slots__ = ("removes", "adds", "_entries")

    def __init__(self, removes=(), adds=()):
        self.removes = tuple(removes)
        self.adds = tuple(adds)
        # Flat tuples make the per-request loop a plain unpack.
        self._entries = tuple(
            (a.name, a.value, a.formatter, a.action, a.keepEmpty) for a in self.adds)

    def __bool__(self):
        return bool(self.removes or self.adds)

    def apply(self, headers, context=None):
        """
        Mutate C{headers} in place.

        @param headers: a header map with C{get}, C{add}, C{set} and
            C{remove} taking lower-case C{bytes} names.
        @param context: an object with C{format(compiled) -> bytes} (see
            L{FormatContext}), or C{None}.
        """
        for name in self.removes:
            headers.remove(name)
        entries = self._entries
        if not entries:
            return
        toSet = []
        toAdd = []
        for name, value, formatter, action, keepEmpty in entries:
            if formatter is not None and context is not None:
                value = context.format(formatter)
                if value.__class__ is str:
                    value = value.encode("utf-8", "surrogateescape")
                if not value and not keepEmpty:
                    continue
            if action == APPEND_IF_EXISTS_OR_ADD:
                toAdd.append((name, value))
            elif action == OVERWRITE_IF_EXISTS_OR_ADD:
                toSet.append((name, value))
            elif action == ADD_IF_ABSENT:
                if headers.get(name) is None:
                    toAdd.append((name, value))
            elif headers.get(name) is not None:
                toSet.append((name, value))
        for name, value in toSet:
            headers.set(name, value)
        for name, value in toAdd:
            headers.add(name, value)

    def __repr__(self):
        return "<HeaderMutation remove=%r add=%r>" % (self.removes, self.adds)


class HeaderMutations:
    """
    Several levels of L{HeaderMutation}, applied in order (the order
    decides which level wins an overwrite: the last one).

    False when there is nothing to do, so callers can skip it at no cost.

    @ivar levels: the non-empty levels, in the order they are applied.
    """

    __slots__ = ("levels",)

    def __init__(self, levels=()):
        self.levels = tuple(level for level in levels if level)

    def __bool__(self):
        return bool(self.levels)

    def apply(self, headers, context=None):
        """Apply every level in order; see L{HeaderMutation.apply}."""
        for level in self.levels:
            level.apply(headers, context)

    def then(self, other):
        """
        @return: a L{HeaderMutations} applying C{self}, then C{other} (a
            L{HeaderMutation} or L{HeaderMutations}).
        """
        if isinstance(other, HeaderMutations):
            return HeaderMutations(self.levels + other.levels)
        return HeaderMutations(self.levels + (other,))

    def __repr__(self):
        return "<HeaderMutations %r>" % (self.levels,)


#: Nothing to do.
EMPTY = HeaderMutations()


def _compileValue(text, path):
    """
    @return: C{(plainBytes, None)} for a value without format operators,
        else C{(textBytes, compiledFormatter)}.
    """
    if "%" not in text:
        return text.encode("utf-8"), None
    pairs, tail = parseFormat(text, path)
    if not pairs:
        # Only "%%" escapes: still a constant.
        return tail.encode("utf-8"), None
    return text.encode("utf-8"), compileFormat(text, omitEmptyValues=True, path=path)


def _compileAdd(option, path):
    checkFields(option, _OPTION_FIELDS, path)
    header = option.header
    checkFields(header, _VALUE_FIELDS, path + ".header")
    key = header.key
    if _isProtected(key):
        raise ConfigError(":-prefixed or host headers may not be modified @ %s.header.key"
                          % (path,))
    if option.HasField("append"):
        if option.append_action != APPEND_IF_EXISTS_OR_ADD:
            raise ConfigError("Both append and append_action are set and it's not allowed @ %s"
                              % (path,))
        action = APPEND_IF_EXISTS_OR_ADD if option.append.value else OVERWRITE_IF_EXISTS_OR_ADD
    else:
        action = option.append_action
    if header.raw_value and not header.value:
        text = header.raw_value.decode("utf-8", "surrogateescape")
        valuePath = path + ".header.raw_value"
    else:
        text = header.value
        valuePath = path + ".header.value"
    value, formatter = _compileValue(text, valuePath)
    return _HeaderToAdd(key.lower().encode("utf-8"), value, formatter, action,
                        option.keep_empty_value)


def compileHeaderMutation(headersToAdd=(), headersToRemove=(), addPath="", removePath=""):
    """
    Compile one level's C{*_headers_to_add} and C{*_headers_to_remove}.

    @param headersToAdd: a repeated C{envoy.config.core.v3.HeaderValueOption}.
    @param headersToRemove: a repeated string of header names.
    @param addPath: the field path of C{headersToAdd}, for messages.
    @param removePath: the field path of C{headersToRemove}.
    @rtype: L{HeaderMutation}
    @raise ConfigError: with Envoy's message for a C{:}-prefixed or C{host}
        header, C{append} together with C{append_action}, or a bad format
        string.
    """
    adds = []
    for i, option in enumerate(headersToAdd):
        add = _compileAdd(option, "%s[%d]" % (addPath, i))
        if add.formatter is None and not add.value and not add.keepEmpty:
            # Envoy skips an empty value at request time; skip it now.
            continue
        adds.append(add)
    removes = []
    for i, name in enumerate(headersToRemove):
        if _isProtected(name):
            raise ConfigError(":-prefixed or host headers may not be removed @ %s[%d]"
                              % (removePath, i))
        removes.append(name.lower().encode("utf-8"))
    return HeaderMutation(removes, adds)
