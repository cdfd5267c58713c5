# -*- test-case-name: tests.router.test_config -*-
"""
Envoy's value matchers, compiled once when the config loads: C{StringMatcher}
(exact / prefix / suffix / contains / safe_regex, with C{ignore_case}),
C{RegexMatcher}, route C{HeaderMatcher} and C{QueryParameterMatcher}.

Everything here works on C{bytes}, as the HTTP/1 codec hands them over, and
is usable by any filter that matches headers (router, RBAC, health check,
fault...).

Regular expressions are Envoy's C{safe_regex}, compiled once with RE2 by
L{txenvoy.regex}; the whole value must match (RE2 C{FullMatch}).

Header matching copies Envoy 1.40 as observed on the binary:
 - a header sent on several lines matches when any one of its values
   matches (C{exact: a} matches C{x: a} + C{x: b}; C{exact: "a,b"} does
   not); C{invert_match} inverts that overall result;
 - a missing header never matches, even inverted, unless
   C{treat_missing_header_as_empty}; C{present_match: false} and an
   inverted C{present_match: true} match a missing header;
 - C{:authority} (and C{host}), C{:path} (with the query), C{:method} and
   C{:scheme} read the request line, not the header map.
"""

import re

from txenvoy.config.errors import ConfigError
from txenvoy.config.fields import checkFields
from txenvoy.regex import compileRegexMatcher

__all__ = [
    "compileStringMatcher",
    "HeaderMatcher",
    "compileHeaderMatcher",
    "compileHeaderMatchers",
    "matchHeaders",
    "QueryParameterMatcher",
    "compileQueryParameterMatcher",
    "parseQueryParameters",
    "queryOf",
]


# -- StringMatcher -------------------------------------------------------------


_STRING_MATCHER_FIELDS = frozenset(
    ("exact", "prefix", "suffix", "safe_regex", "contains", "ignore_case"))
_REGEX_MATCHER_FIELDS = frozenset(("regex", "google_re2"))


def _lowerPattern(text):
    return text.encode("utf-8").lower()


def compileStringMatcher(stringMatcher, path):
    """
    Compile an Envoy C{StringMatcher} into C{match(value: bytes) -> bool}.

    C{ignore_case} compares ASCII letters case-insensitively, as Envoy does;
    it is an error with C{safe_regex} (Envoy's message).
    """
    checkFields(stringMatcher, _STRING_MATCHER_FIELDS, path)
    which = stringMatcher.WhichOneof("match_pattern")
    ignoreCase = stringMatcher.ignore_case
    if which == "safe_regex":
        if ignoreCase:
            raise ConfigError("ignore_case has no effect for safe_regex. @ %s" % (path,))
        checkFields(stringMatcher.safe_regex, _REGEX_MATCHER_FIELDS, path + ".safe_regex")
        return compileRegexMatcher(stringMatcher.safe_regex, path + ".safe_regex")
    if which is None:
        raise ConfigError("%s: one of exact, prefix, suffix, safe_regex or contains "
                          "is required" % (path,))
    text = getattr(stringMatcher, which)
    if not ignoreCase:
        pattern = text.encode("utf-8")
        if which == "exact":
            return pattern.__eq__
        if which == "prefix":
            return lambda value: value.startswith(pattern)
        if which == "suffix":
            return lambda value: value.endswith(pattern)
        return lambda value: pattern in value
    lowered = _lowerPattern(text)
    size = len(lowered)
    if which == "exact":
        return lambda value: len(value) == size and value.lower() == lowered
    if which == "prefix":
        return lambda value: value[:size].lower() == lowered
    if which == "suffix":
        if size == 0:
            return lambda value: True
        return lambda value: value[-size:].lower() == lowered
    return lambda value: lowered in value.lower()


# -- HeaderMatcher -------------------------------------------------------------

_INT = re.compile(rb"\s*[+-]?[0-9]+\s*\Z")


def _pseudoReader(name):
    """
    C{read(headers, authority, path, method) -> list of values} for one
    header name, or C{None} for an ordinary header. Pseudo-headers come
    from the request line; C{host} is the authority too, since the codec
    moves it out of the map as Envoy does.
    """
    if name == b":method":
        return lambda headers, authority, path, method: (method,) if method is not None else ()
    if name == b":path":
        return lambda headers, authority, path, method: (path,) if path is not None else ()
    if name in (b":authority", b"host"):
        return lambda headers, authority, path, method: (
            (authority,) if authority is not None else ())
    if name == b":scheme":
        def readScheme(headers, authority, path, method):
            return (headers.get(b"x-forwarded-proto") or b"http",)

        return readScheme
    return None


class HeaderMatcher:
    """
    One compiled route C{HeaderMatcher}.

    Filters with their own view of a request can read the values
    themselves and call L{matchValues}; L{matches} reads a request given as
    a header map plus the request line.

    @ivar name: the lower-cased header name, C{bytes}.
    """

    __slots__ = ("name", "_pseudo", "_match", "_invert", "_missing", "_present")

    def __init__(self, name, match, invert=False, treatMissingAsEmpty=False, present=None):
        """
        @param match: C{match(value: bytes) -> bool} for one value, or
            C{None} for a presence match.
        @param present: for a presence match, whether the header must be
            present (C{True}) or absent (C{False}).
        """
        self.name = name
        self._pseudo = _pseudoReader(name)
        self._match = match
        self._invert = invert
        self._present = present
        if treatMissingAsEmpty:
            self._missing = None
        elif match is None:
            # Envoy: a missing header matches "present: false", and an
            # inverted "present: true".
            self._missing = present if invert else not present
        else:
            self._missing = False

    def matchValues(self, values):
        """
        @param values: every value of the header, in order (empty when the
            header is missing).
        @return: whether the matcher holds.
        """
        if not values:
            if self._missing is not None:
                return self._missing
            values = (b"",)
        match = self._match
        if match is None:
            return self._present != self._invert
        for value in values:
            if match(value):
                return not self._invert
        return self._invert

    def read(self, headers, authority=None, path=None, method=None):
        """
        @return: every value of the header in this request (pseudo-headers
            from the request line).
        """
        pseudo = self._pseudo
        if pseudo is not None:
            return pseudo(headers, authority, path, method)
        return headers.getAll(self.name)

    def matches(self, headers, authority=None, path=None, method=None):
        """
        Match against a request.

        @param headers: a header map with C{get(lowercaseName)} (the first
            value or C{None}) and C{getAll(lowercaseName)}.
        """
        pseudo = self._pseudo
        if pseudo is not None:
            return self.matchValues(pseudo(headers, authority, path, method))
        name = self.name
        # Most headers are sent once: look at the first value, and fetch
        # the others only when it does not match.
        first = headers.get(name)
        if first is None:
            missing = self._missing
            if missing is not None:
                return missing
            match = self._match
            if match is None:
                return self._present != self._invert
            return match(b"") != self._invert
        match = self._match
        if match is None:
            return self._present != self._invert
        if match(first):
            return not self._invert
        values = headers.getAll(name)
        for value in values[1:]:
            if match(value):
                return not self._invert
        return self._invert

    def __repr__(self):
        return "<HeaderMatcher %r>" % (self.name,)


_HEADER_MATCHER_FIELDS = frozenset((
    "name", "exact_match", "safe_regex_match", "range_match", "present_match",
    "prefix_match", "suffix_match", "contains_match", "string_match",
    "invert_match", "treat_missing_header_as_empty",
))


def _rangeMatcher(start, end):
    def matchRange(value):
        if _INT.match(value) is None:
            return False
        number = int(value)
        return start <= number < end

    return matchRange


def compileHeaderMatcher(headerMatcher, path):
    """
    Compile an C{envoy.config.route.v3.HeaderMatcher}.

    @rtype: L{HeaderMatcher}
    """
    checkFields(headerMatcher, _HEADER_MATCHER_FIELDS, path)
    name = headerMatcher.name.lower().encode("utf-8")
    which = headerMatcher.WhichOneof("header_match_specifier")
    invert = headerMatcher.invert_match
    missing = headerMatcher.treat_missing_header_as_empty
    if which is None:
        # No specifier: Envoy matches on presence alone.
        return HeaderMatcher(name, None, invert, missing, present=True)
    if which == "present_match":
        return HeaderMatcher(name, None, invert, missing, present=headerMatcher.present_match)
    if which == "exact_match":
        expected = headerMatcher.exact_match.encode("utf-8")
        # Envoy's deprecated exact_match: an empty value matches any value.
        match = (lambda value: True) if not expected else expected.__eq__
    elif which == "safe_regex_match":
        checkFields(headerMatcher.safe_regex_match, _REGEX_MATCHER_FIELDS,
                     path + ".safe_regex_match")
        match = compileRegexMatcher(headerMatcher.safe_regex_match, path + ".safe_regex_match")
    elif which == "range_match":
        match = _rangeMatcher(headerMatcher.range_match.start, headerMatcher.range_match.end)
    elif which == "prefix_match":
        prefix = headerMatcher.prefix_match.encode("utf-8")
        match = lambda value: value.startswith(prefix)  # noqa: E731
    elif which == "suffix_match":
        suffix = headerMatcher.suffix_match.encode("utf-8")
        match = lambda value: value.endswith(suffix)  # noqa: E731
    elif which == "contains_match":
        contained = headerMatcher.contains_match.encode("utf-8")
        match = lambda value: contained in value  # noqa: E731
    else:
        match = compileStringMatcher(headerMatcher.string_match, path + ".string_match")
    return HeaderMatcher(name, match, invert, missing)


def compileHeaderMatchers(headerMatchers, path):
    """
    Compile a repeated C{HeaderMatcher} field.

    @param path: the path of the repeated field (C{...match.headers}).
    @return: a tuple of L{HeaderMatcher}.
    """
    return tuple(compileHeaderMatcher(h, "%s[%d]" % (path, i))
                 for i, h in enumerate(headerMatchers))


def matchHeaders(matchers, headers, authority=None, path=None, method=None):
    """
    @return: whether every one of C{matchers} holds (Envoy's
        C{HeaderUtility::matchHeaders}; true for none).
    """
    for matcher in matchers:
        if not matcher.matches(headers, authority, path, method):
            return False
    return True


# -- QueryParameterMatcher ------------------------------------------------------


def parseQueryParameters(path):
    """
    The query parameters of a request path as Envoy's route matching reads
    them: split on C{&} and the first C{=}, nothing percent-decoded, and
    the first value of a repeated name kept.

    @return: C{{name: value}} of C{bytes}.
    """
    start = path.find(b"?")
    if start < 0:
        return {}
    params = {}
    for part in path[start + 1:].split(b"&"):
        eq = part.find(b"=")
        if eq < 0:
            name, value = part, b""
        else:
            name, value = part[:eq], part[eq + 1:]
        if name not in params:
            params[name] = value
    return params


def queryOf(path):
    """
    The query of a request path in the form L{QueryParameterMatcher.matchesQuery}
    takes: C{b"&"} followed by everything after the first C{?} (C{None}
    when there is no query).
    """
    start = path.find(b"?")
    if start < 0:
        return None
    return b"&" + path[start + 1:]


class QueryParameterMatcher:
    """
    One compiled route C{QueryParameterMatcher}.

    @ivar name: the parameter name, C{bytes}.
    """

    __slots__ = ("name", "_match", "_key", "_size")

    def __init__(self, name, match):
        """
        @param match: C{match(value: bytes) -> bool}, or C{None} for a
            presence match.
        """
        self.name = name
        self._match = match
        # A name holding "=" or "&" can never be split out of a query.
        self._key = None if (b"=" in name or b"&" in name) else b"&" + name
        self._size = len(name) + 1

    def matches(self, params):
        """
        @param params: the result of L{parseQueryParameters}.
        """
        value = params.get(self.name)
        if value is None:
            return False
        match = self._match
        return match is None or match(value)

    def matchesQuery(self, query):
        """
        Match against a query without parsing all of it.

        @param query: the result of L{queryOf} for the request path.
        """
        key = self._key
        if query is None or key is None:
            return False
        size = self._size
        end = len(query)
        at = query.find(key)
        while at >= 0:
            after = at + size
            if after == end or query[after] == 38:  # "&": no value
                value = b""
                break
            if query[after] == 61:  # "="
                stop = query.find(b"&", after + 1)
                value = query[after + 1:] if stop < 0 else query[after + 1:stop]
                break
            at = query.find(key, at + 1)
        else:
            return False
        match = self._match
        return match is None or match(value)

    def __repr__(self):
        return "<QueryParameterMatcher %r>" % (self.name,)


_QUERY_MATCHER_FIELDS = frozenset(("name", "string_match", "present_match"))


def compileQueryParameterMatcher(queryParameterMatcher, path):
    """
    Compile an C{envoy.config.route.v3.QueryParameterMatcher}.

    @rtype: L{QueryParameterMatcher}
    """
    checkFields(queryParameterMatcher, _QUERY_MATCHER_FIELDS, path)
    name = queryParameterMatcher.name.encode("utf-8")
    if queryParameterMatcher.HasField("string_match"):
        return QueryParameterMatcher(
            name, compileStringMatcher(queryParameterMatcher.string_match,
                                       path + ".string_match"))
    # present_match, or nothing at all: Envoy checks presence only.
    return QueryParameterMatcher(name, None)
