"""
Tests for L{txenvoy.regex}: Envoy's regexes compiled with RE2.
"""

import time

from twisted.trial.unittest import SynchronousTestCase

from envoy.type.matcher.v3 import regex_pb2

from txenvoy.config.errors import ConfigError
from txenvoy.regex import (
    RegexError,
    compilePattern,
    compileRegex,
    compileRegexMatcher,
    compileRegexRewrite,
    useRuntimeLimits,
)


def _rewrite(pattern, substitution):
    message = regex_pb2.RegexMatchAndSubstitute()
    message.pattern.regex = pattern
    message.substitution = substitution
    return compileRegexRewrite(message, "r")


class RE2SyntaxTests(SynchronousTestCase):
    """
    Patterns are RE2's, with RE2's syntax and RE2's messages.
    """

    def test_re2Spellings(self):
        """
        RE2 syntax that Python's C{re} spells differently, or not at all.
        """
        self.assertTrue(compileRegex(r"[[:alpha:]]+\z", "r").fullmatch(b"abc"))
        self.assertTrue(compileRegex(r"\Qa.b\E", "r").fullmatch(b"a.b"))
        self.assertFalse(compileRegex(r"\Qa.b\E", "r").fullmatch(b"axb"))
        self.assertTrue(compileRegex(r"(?P<n>x)\x{41}", "r").fullmatch(b"xA"))
        self.assertTrue(compileRegex(r"[[:^alpha:]]+", "r").fullmatch(b"123"))
        self.assertFalse(compileRegex(r"[[:^alpha:]]+", "r").fullmatch(b"1a3"))

    def test_unicodeClassesOverLatin1(self):
        """
        C{\\pL} works, over values read as Latin-1 as Envoy 1.40 reads them
        (observed with a header matcher C{safe_regex: '\\pL'}: C{a} and the
        byte C{0xE9} match, the UTF-8 bytes of C{é} and of C{日} do not).
        """
        letter = compileRegex(r"\pL", "r")
        self.assertTrue(letter.fullmatch(b"a"))
        self.assertTrue(letter.fullmatch(b"\xe9"))
        self.assertFalse(letter.fullmatch("é".encode()))
        self.assertFalse(letter.fullmatch("日".encode()))
        self.assertTrue(compileRegex(r"/\pL+", "r").fullmatch(b"/hello"))
        self.assertTrue(compileRegex("caf.", "r").fullmatch(b"caf\xe9"))
        self.assertTrue(compileRegex("café", "r").fullmatch("café".encode()))

    def test_programSizesAreEnvoys(self):
        """
        Program sizes are those Envoy 1.40 reports (C{.{90}} 184,
        C{\\pL{20}} 144, C{[^a]{80}} 164), so the same patterns pass and
        fail the limit.
        """
        for pattern, size in [(".{90}", 184), (r"\pL{20}", 144), ("[^a]{80}", 164)]:
            error = self.assertRaises(ConfigError, compileRegex, pattern, "p")
            self.assertIn("program size of %d >" % (size,), str(error))
        self.assertTrue(compileRegex("b{30}[^a]{20}", "p").fullmatch(b"b" * 30 + b"c" * 20))

    def test_dollarIsEndOfText(self):
        """
        RE2's C{$} does not match before a final newline.
        """
        self.assertFalse(compileRegex("a$", "r").search(b"a\n"))
        self.assertTrue(compileRegex("a$", "r").search(b"ba"))

    def test_asciiPerlClasses(self):
        """
        C{\\d} is ASCII-only, as in RE2.
        """
        self.assertFalse(compileRegex(r"\d", "r").fullmatch("\u0663".encode()))

    def test_rejectedWithRE2Message(self):
        """
        Patterns RE2 rejects are config errors with RE2's message and the
        field path, as Envoy reports them.
        """
        cases = {
            "/(?=a)": "invalid perl operator: (?=",
            r"/(a)\1": "invalid escape sequence: \\1",
            r"/a\Z": "invalid escape sequence: \\Z",
            "a++": "bad repetition operator: ++",
            "a{1001}": "invalid repetition size: {1001}",
            "(abc": "missing ): (abc",
        }
        for pattern, message in cases.items():
            error = self.assertRaises(ConfigError, compileRegex, pattern, "p")
            self.assertEqual(str(error), "%s @ p.regex" % (message,))

    def test_programSizeErrorLevel(self):
        """
        A pattern whose RE2 program is larger than 100 is refused with
        Envoy's message (Envoy 1.40, C{a{1000}}: program size 1004).
        """
        error = self.assertRaises(ConfigError, compileRegex, "a{1000}", "p")
        self.assertEqual(
            str(error),
            "regex 'a{1000}' RE2 program size of 1004 > max program size of 100 set for "
            "the error level threshold. Increase configured max program size if "
            "necessary. @ p.regex")
        self.assertTrue(compileRegex("a{50}", "p").fullmatch(b"a" * 50))

    def test_programSizeFromRuntime(self):
        """
        C{re2.max_program_size.error_level} in the runtime raises the limit
        for the configs compiled after it, as in Envoy.
        """
        class Snap:
            def __init__(self, values):
                self.values = values

            def getInteger(self, key, default):
                return self.values.get(key, default)

        self.addCleanup(useRuntimeLimits, Snap({}))
        useRuntimeLimits(Snap({"re2.max_program_size.error_level": 2000}))
        self.assertTrue(compileRegex("a{1000}", "p").fullmatch(b"a" * 1000))
        useRuntimeLimits(Snap({}))
        self.assertRaises(ConfigError, compileRegex, "a{1000}", "p")

    def test_adminPatternsHaveNoSizeLimit(self):
        """
        The admin's filters compile with RE2 and no program-size limit; a
        bad one raises L{RegexError} with RE2's message.
        """
        self.assertTrue(compilePattern("a{1000}").search("xx" + "a" * 1000))
        error = self.assertRaises(RegexError, compilePattern, "(a")
        self.assertEqual(str(error), "missing ): (a")


class LinearTimeTests(SynchronousTestCase):
    """
    Matching takes time linear in the input: a pattern that makes a
    backtracking engine explode costs nothing special.
    """

    def test_nestedQuantifiers(self):
        """
        C{(a+)+b} against 30 C{a}s (2**30 paths for a backtracking engine)
        answers at once.
        """
        match = compileRegexMatcher(regex_pb2.RegexMatcher(regex="(a+)+b"), "r")
        started = time.perf_counter()
        for _ in range(100):
            self.assertFalse(match(b"a" * 30))
        self.assertLess(time.perf_counter() - started, 0.5)


class RewriteTests(SynchronousTestCase):
    """
    C{RegexMatchAndSubstitute} applied as RE2's C{GlobalReplace}.
    """

    def test_groups(self):
        """
        C{\\N} names a capture group, C{\\0} the whole match.
        """
        self.assertEqual(_rewrite(r"^/v(\d+)/(.*)$", r"/\2?v=\1")(b"/v2/users"),
                         b"/users?v=2")
        self.assertEqual(_rewrite("o", r"[\0]")(b"foo"), b"f[o][o]")

    def test_emptyMatches(self):
        """
        An empty match is replaced once per position and never twice where
        a match ended, as C{GlobalReplace} does.
        """
        self.assertEqual(_rewrite("x*", "-")(b"abc"), b"-a-b-c-")
        self.assertEqual(_rewrite("b*", "-")(b"abc"), b"-a-c-")
        self.assertEqual(_rewrite("x*", "-")(b"\xe9"), b"-\xe9-")

    def test_noMatchKeepsValue(self):
        """
        A value that does not match comes back unchanged.
        """
        self.assertEqual(_rewrite("z", "y")(b"abc"), b"abc")

    def test_invalidSubstitution(self):
        """
        A substitution naming a group the pattern lacks, or an unknown
        escape, leaves the value unchanged (Envoy 1.40).
        """
        self.assertEqual(_rewrite("(a)", r"\2")(b"abc"), b"abc")
        self.assertEqual(_rewrite("a", r"\q")(b"abc"), b"abc")
        self.assertEqual(_rewrite("a", r"\\")(b"abc"), b"\\bc")
