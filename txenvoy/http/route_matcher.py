# -*- test-case-name: tests.http.test_route_table -*-
"""
Envoy's value matchers, compiled once when the config loads: C{StringMatcher}
(exact / prefix / suffix / contains / safe_regex, with C{ignore_case}),
C{RegexMatcher}, route C{HeaderMatcher} and C{QueryParameterMatcher}.

Everything here works on C{bytes}, as the HTTP/1 codec hands them over, and
is usable by any filter that matches headers (router, RBAC, health check,
fault...).

Regular expressions are Envoy's C{safe_regex}, which is RE2 syntax. They are
translated into Python's C{re} for the common subset and compiled once:
 - RE2 syntax with another spelling in Python is rewritten: C{\\z},
   C{\\Q...\\E}, C{\\x{...}}, octal escapes, C{(?<name>...)}, POSIX classes
   such as C{[[:alpha:]]}, and C{$} (end of text only, as RE2 means it);
 - what RE2 rejects is rejected with RE2's message (back-references,
   look-around, possessive repetition, repetition counts over 1000,
   C{\\Z});
 - what RE2 accepts but C{re} cannot express (C{\\p} Unicode classes,
   C{\\C}, C{(?U)}, negated POSIX classes) is a L{ConfigError} saying so.
Matching uses Envoy's semantics: the whole value must match (RE2
C{FullMatch}). Values are decoded as UTF-8 (with C{surrogateescape}, so any
byte string round-trips) and classes such as C{\\d}, C{\\w}, C{\\s} are
ASCII-only, as in RE2. Envoy's RE2 program-size limit is not enforced.

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

from txenvoy.config.errors import ConfigError, UnsupportedField

__all__ = [
    "compileRegex",
    "compileRegexRewrite",
    "compileStringMatcher",
    "HeaderMatcher",
    "compileHeaderMatcher",
    "compileHeaderMatchers",
    "matchHeaders",
    "QueryParameterMatcher",
    "compileQueryParameterMatcher",
    "parseQueryParameters",
    "queryOf",
    "compileRegexMatcher",
    "decodeValue",
    "encodeValue",
]


def decodeValue(value):
    """
    Bytes as the text a compiled regex matches (UTF-8, every other byte kept
    as a lone surrogate so that L{encodeValue} gives the same bytes back).
    """
    return value.decode("utf-8", "surrogateescape")


def encodeValue(text):
    """The inverse of L{decodeValue}."""
    return text.encode("utf-8", "surrogateescape")


# -- RE2 -> re ---------------------------------------------------------------

_POSIX_CLASSES = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7f",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}

_OCTAL = "01234567"
_HEX = "0123456789abcdefABCDEF"
# Escapes both engines read the same way.
_SAME_ESCAPES = frozenset("dDsSwWbBAaftnrv")
_MAX_REPEAT = 1000
_REPEAT = re.compile(r"\{(\d+)(,(\d*))?\}")


class _Re2Error(Exception):
    """A pattern RE2 (or this translation) does not accept."""


def _translateRe2(pattern):
    """
    Rewrite an RE2 pattern as an equivalent Python C{re} pattern.

    @raise _Re2Error: with RE2's wording where RE2 rejects the pattern.
    """
    out = []
    append = out.append
    n = len(pattern)
    i = 0
    inClass = False
    multiline = False
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n:
                raise _Re2Error("trailing \\")
            d = pattern[i + 1]
            if d == "Q":
                end = pattern.find("\\E", i + 2)
                literal = pattern[i + 2:] if end < 0 else pattern[i + 2:end]
                append("".join("\\" + ch if not ch.isalnum() else ch for ch in literal))
                i = n if end < 0 else end + 2
                continue
            if d == "E":
                # A stray \E outside \Q is ignored by RE2.
                i += 2
                continue
            if d == "z" and not inClass:
                append("\\Z")
                i += 2
                continue
            if d in "pP":
                raise _Re2Error("Unicode class \\%s is not supported by txenvoy" % (d,))
            if d == "C":
                raise _Re2Error("\\C is not supported by txenvoy")
            if d == "x":
                if i + 2 < n and pattern[i + 2] == "{":
                    end = pattern.find("}", i + 3)
                    digits = pattern[i + 3:end] if end > 0 else ""
                    if end < 0 or not digits or any(h not in _HEX for h in digits):
                        escape = pattern[i:end + 1] if end > 0 else pattern[i:]
                        raise _Re2Error("invalid escape sequence: %s" % (escape,))
                    code = int(digits, 16)
                    if code > 0x10FFFF:
                        raise _Re2Error("invalid escape sequence: %s" % (pattern[i:end + 1],))
                    append("\\U%08x" % (code,))
                    i = end + 1
                    continue
                if i + 4 <= n and all(h in _HEX for h in pattern[i + 2:i + 4]):
                    append(pattern[i:i + 4])
                    i += 4
                    continue
                raise _Re2Error("invalid escape sequence: %s" % (pattern[i:i + 4],))
            if d in _OCTAL:
                j = i + 2
                if d != "0" and (j >= n or pattern[j] not in _OCTAL):
                    # \1..\7 alone is a back-reference, which RE2 refuses.
                    raise _Re2Error("invalid escape sequence: \\%s" % (d,))
                while j < n and j < i + 4 and pattern[j] in _OCTAL:
                    j += 1
                code = int(pattern[i + 1:j], 8)
                append("\\x%02x" % (code,) if code < 256 else "\\u%04x" % (code,))
                i = j
                continue
            if d in _SAME_ESCAPES or not d.isalnum():
                append(pattern[i:i + 2])
                i += 2
                continue
            raise _Re2Error("invalid escape sequence: \\%s" % (d,))
        if inClass:
            if c == "[" and pattern.startswith("[:", i):
                end = pattern.find(":]", i + 2)
                if end > 0:
                    name = pattern[i + 2:end]
                    if name.startswith("^"):
                        raise _Re2Error("negated POSIX class [:%s:] is not supported by txenvoy"
                                        % (name,))
                    ranges = _POSIX_CLASSES.get(name)
                    if ranges is None:
                        raise _Re2Error("invalid character class range: [:%s:]" % (name,))
                    append(ranges)
                    i = end + 2
                    continue
            if c == "[":
                # A literal "[" inside a class; Python warns about nested sets.
                append("\\[")
                i += 1
                continue
            if c == "]":
                inClass = False
            append(c)
            i += 1
            continue
        if c == "[":
            inClass = True
            append(c)
            i += 1
            if i < n and pattern[i] == "^":
                append("^")
                i += 1
            # A "]" right after "[" or "[^" is a literal.
            if i < n and pattern[i] == "]":
                append("\\]")
                i += 1
            continue
        if c == "(" and pattern.startswith("(?", i):
            rest = pattern[i + 2:i + 4]
            if rest == "P=" or rest == "P>":
                raise _Re2Error("invalid named capture group: %s" % (pattern[i:i + 4],))
            if rest[:1] == "P" or rest[:1] == ":":
                append(pattern[i:i + 3])
                i += 3
                continue
            if rest[:1] == "<" and rest[1:2] not in ("=", "!"):
                append("(?P<")
                i += 3
                continue
            if rest[:1] in ("=", "!", ">", "#", "<", "|", "(") or not rest:
                operator = pattern[i:i + 4] if rest[:1] == "<" else pattern[i:i + 3]
                raise _Re2Error("invalid perl operator: %s" % (operator,))
            # Flags: (?flags) or (?flags:...)
            j = i + 2
            while j < n and pattern[j] not in ":)":
                if pattern[j] not in "imsU-":
                    raise _Re2Error("invalid perl operator: %s" % (pattern[i:j + 1],))
                j += 1
            flags = pattern[i + 2:j]
            if "U" in flags:
                raise _Re2Error("the (?U) flag is not supported by txenvoy")
            if "m" in flags.split("-")[0]:
                multiline = True
            append(pattern[i:j])
            i = j
            continue
        if c in "*+?":
            if i + 1 < n and pattern[i + 1] == "+":
                # Possessive repetition: Python 3.11 has it, RE2 does not.
                raise _Re2Error("bad repetition operator: %s+" % (c,))
            append(c)
            i += 1
            continue
        if c == "{":
            m = _REPEAT.match(pattern, i)
            if m is not None:
                low = int(m.group(1))
                high = m.group(3)
                if low > _MAX_REPEAT or (high and int(high) > _MAX_REPEAT) or (
                        high and int(high) < low):
                    raise _Re2Error("bad repetition operator: %s" % (m.group(0),))
                append(m.group(0))
                i = m.end()
                if i < n and pattern[i] == "+":
                    raise _Re2Error("bad repetition operator: %s+" % (m.group(0),))
                continue
            # RE2 reads a "{" that starts no repetition as a literal.
            append("\\{")
            i += 1
            continue
        if c == "$" and not multiline:
            # RE2's "$" is the end of the text; Python's would also match
            # before a final newline.
            append("\\Z")
            i += 1
            continue
        append(c)
        i += 1
    if inClass:
        raise _Re2Error("missing ]: %s" % (pattern,))
    return "".join(out)


def compileRegex(regexMatcher, path):
    """
    Compile an Envoy C{RegexMatcher} (or a bare pattern string).

    @param path: the config field path, for error messages.
    @return: a compiled C{re.Pattern} over C{str} (see L{decodeValue}).
    @raise ConfigError: when RE2 would reject the pattern, or when it uses
        RE2 syntax that Python cannot express.
    """
    if isinstance(regexMatcher, str):
        pattern = regexMatcher
    else:
        pattern = regexMatcher.regex
    try:
        translated = _translateRe2(pattern)
        return re.compile(translated, re.ASCII)
    except _Re2Error as e:
        raise ConfigError("%s @ %s.regex" % (e, path))
    except re.error as e:
        if e.msg.startswith("missing )"):
            # RE2's wording for the most common mistake.
            raise ConfigError("missing ): %s @ %s.regex" % (pattern, path))
        raise ConfigError("invalid regex '%s': %s @ %s.regex" % (pattern, e, path))
    except (OverflowError, ValueError) as e:
        raise ConfigError("invalid regex '%s': %s @ %s.regex" % (pattern, e, path))


def compileRegexMatcher(regexMatcher, path):
    """
    Compile an Envoy C{RegexMatcher} into C{fullmatch(value: bytes) -> bool}
    (the whole value must match, as RE2's C{FullMatch}).

    An ASCII value is matched by a C{bytes} twin of the pattern, which gives
    the same answer without decoding; other values are decoded first (see
    L{decodeValue}).
    """
    regex = compileRegex(regexMatcher, path)
    textMatch = regex.fullmatch
    bytesMatch = None
    # Only an ASCII pattern has a bytes twin that agrees with it (a
    # quantifier after a multi-byte character would apply to its last
    # byte); escapes such as \U exist only in text patterns.
    if regex.pattern.isascii():
        try:
            bytesMatch = re.compile(regex.pattern.encode("ascii"), re.ASCII).fullmatch
        except (re.error, ValueError):
            bytesMatch = None
    if bytesMatch is None:
        def fullmatchText(value):
            return textMatch(decodeValue(value)) is not None

        return fullmatchText

    def fullmatch(value):
        if value.isascii():
            return bytesMatch(value) is not None
        return textMatch(decodeValue(value)) is not None

    return fullmatch


def compileRegexRewrite(regexMatchAndSubstitute, path):
    """
    Compile a C{RegexMatchAndSubstitute} into C{rewrite(bytes) -> bytes},
    replacing every match as RE2's C{GlobalReplace} does (C{\\0}..C{\\9}
    name capture groups, C{\\\\} is a backslash).

    A substitution that RE2 cannot apply (an unknown escape, or a group the
    pattern does not have) leaves the value unchanged, as Envoy 1.40 does.
    """
    regex = compileRegex(regexMatchAndSubstitute.pattern, path + ".pattern")
    template = _re2RewriteTemplate(regexMatchAndSubstitute.substitution, regex.groups)
    if template is None:
        return lambda value: value
    sub = regex.sub

    def rewrite(value):
        return encodeValue(sub(template, decodeValue(value)))

    return rewrite


def _re2RewriteTemplate(substitution, groups):
    """RE2's rewrite string as a C{re.sub} template, or C{None} if invalid."""
    out = []
    i = 0
    n = len(substitution)
    while i < n:
        c = substitution[i]
        if c == "\\":
            if i + 1 >= n:
                return None
            d = substitution[i + 1]
            if d.isdigit():
                if int(d) > groups:
                    return None
                out.append("\\g<%s>" % (d,))
            elif d == "\\":
                out.append("\\\\")
            else:
                return None
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


# -- StringMatcher -------------------------------------------------------------


def _checkFields(message, allowed, path):
    for field, _ in message.ListFields():
        if field.name not in allowed:
            raise UnsupportedField("%s.%s" % (path, field.name))


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
    _checkFields(stringMatcher, _STRING_MATCHER_FIELDS, path)
    which = stringMatcher.WhichOneof("match_pattern")
    ignoreCase = stringMatcher.ignore_case
    if which == "safe_regex":
        if ignoreCase:
            raise ConfigError("ignore_case has no effect for safe_regex. @ %s" % (path,))
        _checkFields(stringMatcher.safe_regex, _REGEX_MATCHER_FIELDS, path + ".safe_regex")
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
    _checkFields(headerMatcher, _HEADER_MATCHER_FIELDS, path)
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
        _checkFields(headerMatcher.safe_regex_match, _REGEX_MATCHER_FIELDS,
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
    _checkFields(queryParameterMatcher, _QUERY_MATCHER_FIELDS, path)
    name = queryParameterMatcher.name.encode("utf-8")
    if queryParameterMatcher.HasField("string_match"):
        return QueryParameterMatcher(
            name, compileStringMatcher(queryParameterMatcher.string_match,
                                       path + ".string_match"))
    # present_match, or nothing at all: Envoy checks presence only.
    return QueryParameterMatcher(name, None)
