# -*- test-case-name: tests.test_regex -*-
"""
Envoy's regex engine: every C{safe_regex} (routes, header, string and query
matchers, RBAC, rewrites) and every other pattern Envoy evaluates with RE2
(protoc-gen-validate C{pattern} rules, the admin's C{filter} and
C{name_regex}), compiled with RE2 itself through C{google-re2}.

RE2 is what makes a regex safe to put in front of untrusted input: matching
is linear in the input, so C{(a+)+b} against a long run of C{a}s costs the
same as any other path, where a backtracking engine would stall the worker.
Using the engine Envoy uses also gives Envoy's syntax (C{\\pL},
C{[[:^alpha:]]}, C{\\z}, C{\\Q...\\E}) and Envoy's error messages for free.

Matching works on the raw C{bytes} the codec hands over, read as Latin-1,
as Envoy 1.40 reads them (observed: C{\\pL} matches the byte C{0xE9}, not
the two bytes of a UTF-8 C{é}); a pattern's own non-ASCII text is its UTF-8
bytes, so a literal C{é} in a pattern still matches a UTF-8 C{é}.

Envoy's program-size guard is kept: a config pattern whose RE2 program is
larger than the runtime's C{re2.max_program_size.error_level} (100 by
default) is a config error with Envoy's message; one larger than
C{re2.max_program_size.warn_level} is logged.
"""

import contextvars

import re2
from re2 import _re2
from twisted.logger import Logger

from txenvoy.config.errors import ConfigError
from txenvoy.config.fields import checkFields

__all__ = [
    "DEFAULT_MAX_PROGRAM_SIZE",
    "Regex",
    "RegexError",
    "compileRegex",
    "compileRegexMatcher",
    "compileRegexRewrite",
    "compilePattern",
    "useRuntimeLimits",
]

DEFAULT_MAX_PROGRAM_SIZE = 100
_UNANCHORED = _re2.RE2.Anchor.UNANCHORED
_ANCHOR_BOTH = _re2.RE2.Anchor.ANCHOR_BOTH
_log = Logger(namespace="misc")
# (error level, warn level) for the config being compiled in this thread:
# Envoy reads them from its runtime when a regex is compiled.
_programSizeLimits = contextvars.ContextVar(
    "re2ProgramSizeLimits", default=(DEFAULT_MAX_PROGRAM_SIZE, None))


def useRuntimeLimits(snapshot):
    """
    Take the program-size levels of the configs compiled next in this
    thread from a runtime snapshot (C{re2.max_program_size.error_level} and
    C{.warn_level}), as Envoy reads them from its runtime.
    """
    _programSizeLimits.set((
        snapshot.getInteger("re2.max_program_size.error_level", DEFAULT_MAX_PROGRAM_SIZE),
        snapshot.getInteger("re2.max_program_size.warn_level", None)))


def _options():
    options = re2.Options()
    # Errors are reported through ConfigError, not on stderr.
    options.log_errors = False
    # Envoy 1.40 matches bytes as Latin-1: \pL matches the byte 0xE9 but
    # not the two bytes of a UTF-8 "é", and program sizes (the limit below)
    # are those of a Latin-1 program.
    options.encoding = re2.Options.Encoding.LATIN1
    return options


_OPTIONS = _options()


class Regex:
    """
    A compiled RE2 pattern over C{bytes}.

    @ivar pattern: the pattern as the config gave it.
    @ivar groups: how many capture groups it has.
    """

    __slots__ = ("pattern", "groups", "_match")

    def __init__(self, pattern, compiled):
        self.pattern = pattern
        self.groups = compiled.NumberOfCapturingGroups()
        self._match = compiled.Match

    def fullmatch(self, value):
        """True when all of C{value} (C{bytes}) matches (RE2's C{FullMatch})."""
        return self._match(_ANCHOR_BOTH, value, 0, len(value))[0][0] >= 0

    def search(self, value):
        """
        True when some part of C{value} matches (RE2's C{PartialMatch});
        C{value} is C{bytes}, or text (a stat or resource name).
        """
        if value.__class__ is str:
            value = value.encode("utf-8")
        return self._match(_UNANCHORED, value, 0, len(value))[0][0] >= 0

    def spans(self, value, start=0, anchor=_UNANCHORED):
        """
        The (start, end) of the match and of each group in C{value[start:]},
        or C{None}; a group that took no part is C{(-1, -1)}.
        """
        spans = self._match(anchor, value, start, len(value))
        return spans if spans[0][0] >= 0 else None


class RegexError(ValueError):
    """A pattern RE2 rejects; the message is RE2's (or Envoy's size limit)."""


def compilePattern(pattern, maxProgramSize=None, warnProgramSize=None):
    """
    Compile an RE2 pattern given as text or bytes, as the admin's
    C{filter} and C{name_regex} are (no program-size limit there, as in
    Envoy).

    @param maxProgramSize: Envoy's error level; C{None} for no limit.
    @param warnProgramSize: Envoy's warn level; C{None} for no limit.
    @raise RegexError: with RE2's own message when RE2 rejects the
        pattern, or Envoy's when its program is too large.
    """
    if isinstance(pattern, str):
        raw = pattern.encode("utf-8")
    else:
        raw, pattern = pattern, pattern.decode("utf-8", "replace")
    compiled = _re2.RE2(raw, _OPTIONS)
    if not compiled.ok():
        raise RegexError(compiled.error().decode("utf-8", "replace"))
    size = compiled.ProgramSize()
    if maxProgramSize is not None and size > maxProgramSize:
        raise RegexError(
            "regex '%s' RE2 program size of %d > max program size of %d set for the "
            "error level threshold. Increase configured max program size if necessary."
            % (pattern, size, maxProgramSize))
    if warnProgramSize is not None and size > warnProgramSize:
        _log.warn(
            "regex '{pattern}' RE2 program size of {size} > max program size of {limit} "
            "set for the warn level threshold. Increase configured max program size if "
            "necessary.", pattern=pattern, size=size, limit=warnProgramSize)
    return Regex(pattern, compiled)


def compileRegex(regexMatcher, path):
    """
    Compile an Envoy C{RegexMatcher} (or a bare pattern string), with
    Envoy's program-size limits (see L{useRuntimeLimits}).

    @param path: the config field path, for error messages.
    @return: a L{Regex}.
    @raise ConfigError: naming C{path}.
    """
    if isinstance(regexMatcher, (str, bytes)):
        pattern = regexMatcher
    else:
        # google_re2 is deprecated and changes nothing: RE2 is the engine.
        checkFields(regexMatcher, ("regex",), path, ("google_re2",))
        pattern = regexMatcher.regex
    try:
        return compilePattern(pattern, *_programSizeLimits.get())
    except RegexError as e:
        raise ConfigError("%s @ %s.regex" % (e, path))


def compileRegexMatcher(regexMatcher, path):
    """
    Compile an Envoy C{RegexMatcher} into C{fullmatch(value: bytes) -> bool}
    (the whole value must match, as Envoy's C{safe_regex} does).
    """
    return compileRegex(regexMatcher, path).fullmatch


def compileRegexRewrite(regexMatchAndSubstitute, path):
    """
    Compile a C{RegexMatchAndSubstitute} into C{rewrite(bytes) -> bytes},
    replacing every match as RE2's C{GlobalReplace} does (C{\\0}..C{\\9}
    name capture groups, C{\\\\} is a backslash).

    A substitution that RE2 cannot apply (an unknown escape, or a group the
    pattern does not have) leaves the value unchanged, as Envoy 1.40 does.
    """
    regex = compileRegex(regexMatchAndSubstitute.pattern, path + ".pattern")
    template = _rewriteTemplate(regexMatchAndSubstitute.substitution.encode("utf-8"),
                                regex.groups)
    if template is None:
        return lambda value: value

    def rewrite(value):
        return _globalReplace(regex, template, value)

    return rewrite


def _rewriteTemplate(substitution, groups):
    """
    RE2's rewrite string as a list of C{bytes} literals and C{int} group
    numbers, or C{None} where RE2 would refuse it.
    """
    parts = []
    literal = bytearray()
    i = 0
    n = len(substitution)
    while i < n:
        c = substitution[i:i + 1]
        if c == b"\\":
            d = substitution[i + 1:i + 2]
            if d.isdigit():
                if int(d) > groups:
                    return None
                if literal:
                    parts.append(bytes(literal))
                    literal.clear()
                parts.append(int(d))
            elif d == b"\\":
                literal += b"\\"
            else:
                return None
            i += 2
            continue
        literal += c
        i += 1
    if literal:
        parts.append(bytes(literal))
    return parts


def _globalReplace(regex, template, value):
    """RE2's C{GlobalReplace}: every non-overlapping match replaced."""
    out = []
    pos = 0
    end = len(value)
    lastEnd = -1
    count = 0
    while pos <= end:
        spans = regex.spans(value, pos)
        if spans is None:
            break
        start, stop = spans[0]
        if pos < start:
            out.append(value[pos:start])
        if start == lastEnd and start == stop:
            # An empty match where the last one ended: skip one character.
            if pos < end:
                out.append(value[pos:pos + 1])
            pos += 1
            continue
        for part in template:
            if isinstance(part, int):
                s, e = spans[part]
                if s >= 0:
                    out.append(value[s:e])
            else:
                out.append(part)
        pos = lastEnd = stop
        count += 1
    if count == 0:
        return value
    if pos < end:
        out.append(value[pos:])
    return b"".join(out)
