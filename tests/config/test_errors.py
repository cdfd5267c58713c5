"""
Tests for L{txenvoy.config.errors}: collecting every error of one load.
"""

import os

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.config.errors import (
    FAILED,
    ConfigError,
    ConfigErrors,
    SourceLines,
    UnknownExtension,
    UnsupportedExtension,
    UnsupportedField,
    attempt,
    collectErrors,
    collecting,
    describe,
    pathOf,
    report,
    setSource,
    skipOnError,
)
from txenvoy.config.loader import loadBootstrap, parseYamlWithLines
from txenvoy.server.options import ServerOptions
from txenvoy.server.server import Server

from tests.e2e.harness import EXAMPLES


class OutsideACollectionTests(SynchronousTestCase):
    """Without L{collectErrors}, the first error raises, as before."""

    def test_reportRaises(self):
        error = UnsupportedField("a.b")
        self.assertIs(self.assertRaises(UnsupportedField, report, error), error)

    def test_attemptRaises(self):
        def build():
            raise ConfigError("x: bad")
        self.assertRaises(ConfigError, attempt, build)

    def test_skipOnErrorRaises(self):
        def build():
            with skipOnError():
                raise ConfigError("x: bad")
        self.assertRaises(ConfigError, build)
        self.assertFalse(collecting())


class CollectionTests(SynchronousTestCase):
    """Inside L{collectErrors}, errors are kept and raised together."""

    def test_nothingReported(self):
        with collectErrors() as collector:
            self.assertTrue(collecting())
        self.assertEqual(collector.errors, [])
        self.assertFalse(collecting())

    def test_oneErrorIsItself(self):
        """One error is raised as itself: its message stays one line."""
        error = UnsupportedField("a.b")

        def load():
            with collectErrors():
                report(error)
        self.assertIs(self.assertRaises(UnsupportedField, load), error)

    def test_allInOrder(self):
        """
        L{report} goes on, L{attempt} and L{skipOnError} leave one item out,
        an error escaping the block comes last; repeats are dropped.
        """
        def bad(name):
            raise ConfigError("%s: bad" % (name,))

        def load():
            with collectErrors():
                report(UnsupportedField("a"))
                self.assertIs(attempt(bad, "b"), FAILED)
                self.assertEqual(attempt(lambda: 5), 5)
                with skipOnError():
                    bad("c")
                    self.fail("not reached")
                report(UnsupportedField("a"))
                bad("d")
        e = self.assertRaises(ConfigErrors, load)
        self.assertEqual([x.message for x in e.errors], [
            "a: unsupported field: txenvoy does not implement it yet",
            "b: bad", "c: bad", "d: bad"])
        self.assertEqual(e.message, "\n".join(x.message for x in e.errors))

    def test_nested(self):
        """An inner collection's errors join the outer one."""
        def load():
            with collectErrors():
                report(ConfigError("a: 1"))
                with skipOnError():
                    with collectErrors():
                        report(ConfigError("b: 2"))
                        report(ConfigError("c: 3"))
                report(ConfigError("d: 4"))
        e = self.assertRaises(ConfigErrors, load)
        self.assertEqual([x.message for x in e.errors], ["a: 1", "b: 2", "c: 3", "d: 4"])

    def test_lines(self):
        """With the file's L{SourceLines}, each error gets its line."""
        _, lines = parseYamlWithLines("a:\n  b:\n  - c: 1\n    d: 2\n")

        def load():
            with collectErrors():
                setSource(lines)
                report(UnsupportedField("a.b[0].d"))
                report(ConfigError("value is bad @ a.b[0].e"))
                report(ConfigError("no path here"))
        e = self.assertRaises(ConfigErrors, load)
        self.assertEqual([x.line for x in e.errors], [4, 3, None])
        self.assertEqual(describe(e), (
            "a.b[0].d: unsupported field: txenvoy does not implement it yet (line 4)\n"
            "value is bad @ a.b[0].e (line 3)\n"
            "no path here"))


class PathAndLineTests(SynchronousTestCase):

    def test_pathOf(self):
        """The path is found in each form messages name it."""
        self.assertEqual(pathOf(UnsupportedField("x.y[0].z")), "x.y[0].z")
        self.assertEqual(pathOf(ConfigError("Proto constraint validation failed (X) @ a.b[1]")),
                         "a.b[1]")
        self.assertEqual(pathOf(ConfigError("a.b[k.v].c: no good")), "a.b[k.v].c")
        self.assertIsNone(pathOf(ConfigError("cluster manager: duplicate cluster 'c1'")))
        self.assertIsNone(pathOf(ConfigError("Invalid path: x.yaml")))

    def test_sourceLines(self):
        """Map keys are found as C{a.k} and C{a[k]}; a parent stands in."""
        _, lines = parseYamlWithLines(
            "x:\n  m:\n    k.v: {deep: 1}\n  l: [a,\n   b]\n")
        self.assertEqual(lines.lineOf("x.m[k.v]"), 3)
        self.assertEqual(lines.lineOf("x.m.k.v"), 3)
        self.assertEqual(lines.lineOf("x.l[1]"), 5)
        self.assertEqual(lines.lineOf("x.m[k.v].missing.more"), 3)
        self.assertIsNone(lines.lineOf("nowhere"))
        self.assertIsNone(SourceLines({}).lineOf("x"))

    def test_recursiveAlias(self):
        """An alias that contains itself does not loop."""
        _, lines = parseYamlWithLines("a: &x [*x]\n")
        self.assertEqual(lines.lineOf("a"), 1)


class ExtensionErrorTests(SynchronousTestCase):

    def test_unknownIsAnUnsupportedExtension(self):
        """
        An C{@type} nobody registered says where extensions come from, and
        is still skipped where a filter C{is_optional}.
        """
        e = UnknownExtension("p.typed_config", "myfilters.ApiKey")
        self.assertIsInstance(e, UnsupportedExtension)
        self.assertEqual(e.message, (
            "p.typed_config: no extension for type.googleapis.com/myfilters.ApiKey; install "
            "the package that provides it as a twisted.plugin, or import it with --import "
            "MODULE"))


class FirstErrorIsEnvoysTests(SynchronousTestCase):
    """
    The first error of a collected load is the one a load that stops at the
    first error (as Envoy does) raises.
    """

    def build(self, name):
        reactor = MemoryReactorClock()
        bootstrap = loadBootstrap(name)
        return Server(reactor, bootstrap, ServerOptions(configPath=name, concurrency=0),
                      validateOnly=True)

    def test_examples(self):
        cwd = os.getcwd()
        os.chdir(EXAMPLES)
        self.addCleanup(os.chdir, cwd)
        for name in ("05-dynamic-fs/envoy.yaml", "07-listener-filters.yaml",
                     "08-health-outlier-circuit-breakers.yaml", "12-bootstrap-ops.yaml",
                     "13-tls-mtls-upstream-tls.yaml"):
            try:
                self.build(name)
            except ConfigError as e:
                first = e
            else:
                continue
            try:
                with collectErrors():
                    self.build(name)
            except ConfigError as e:
                every = e.errors
            self.assertEqual(every[0].message, first.message, name)
            self.assertNotIn("\n", first.message)


class ThreadTests(SynchronousTestCase):
    """A collection belongs to the thread that runs it."""

    def test_otherThreadRaises(self):
        import threading

        seen = []

        def elsewhere():
            try:
                report(ConfigError("x: other thread"))
            except ConfigError as e:
                seen.append(e.message)

        with collectErrors() as collector:
            thread = threading.Thread(target=elsewhere)
            thread.start()
            thread.join()
        self.assertEqual(seen, ["x: other thread"])
        self.assertEqual(collector.errors, [])
