"""
Tests for L{txenvoy.server.logging}.
"""

import io
import re
import sys

from twisted.logger import Logger, LogLevel, LogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject
from twisted.logger import ILogObserver

from txenvoy.server.logging import (
    LOGGER_NAMES,
    LogLevels,
    UnknownLogger,
    UnknownLogLevel,
    eventLevel,
    formatTime,
    makeObserver,
    openLogOutput,
)

_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\]\[\d+\]\[(\w+)\]\[(\w+)\] (.*)$")


class LogLevelsTests(SynchronousTestCase):

    def test_text(self):
        """POST /logging's body, as Envoy 1.40 prints it (73 loggers)."""
        text = LogLevels().text()
        self.assertTrue(text.startswith("active loggers:\n  a2a: info\n  admin: info\n"
                                        "  ai_protocol_manager: info\n"))
        self.assertTrue(text.endswith("  dynamic_modules: info\n  ip_tagging: info\n\n"))
        self.assertEqual(len(LOGGER_NAMES), 73)
        self.assertEqual(text.count("\n"), 75)

    def test_set(self):
        levels = LogLevels()
        levels.setAll("debug")
        levels.set("upstream", "trace")
        self.assertEqual(levels.levelOf("upstream"), "trace")
        self.assertEqual(levels.levelOf("main"), "debug")
        self.assertIn("  upstream: trace\n", levels.text())
        self.assertRaises(UnknownLogger, levels.set, "nosuch", "info")
        self.assertRaises(UnknownLogLevel, levels.set, "main", "loud")
        self.assertRaises(UnknownLogLevel, LogLevels, "loud")

    def test_warnAlias(self):
        """--log-level warn is Envoy's warning."""
        levels = LogLevels("warn")
        self.assertEqual(levels.levelOf("main"), "warning")

    def test_components(self):
        """--component-log-level upstream:debug,connection:trace."""
        levels = LogLevels()
        levels.setComponents("upstream:debug,connection:trace")
        self.assertEqual(levels.levelOf("upstream"), "debug")
        self.assertEqual(levels.levelOf("connection"), "trace")
        self.assertRaises(ValueError, levels.setComponents, "upstream")
        self.assertRaises(UnknownLogger, levels.setComponents, "main:info,nosuch:debug")
        self.assertEqual(levels.levelOf("main"), "info")

    def test_enabled(self):
        levels = LogLevels("warning")
        self.assertFalse(levels.enabled("main", "info"))
        self.assertTrue(levels.enabled("main", "error"))
        levels.set("main", "off")
        self.assertFalse(levels.enabled("main", "critical"))


class ObserverTests(SynchronousTestCase):

    def setUp(self):
        self.out = io.StringIO()
        self.levels = LogLevels()
        self.observer = makeObserver(self.out, self.levels)
        self.publisher = LogPublisher(self.observer)

    def lines(self):
        return self.out.getvalue().splitlines()

    def test_interface(self):
        self.assertTrue(verifyObject(ILogObserver, self.observer))

    def test_layout(self):
        """[time][tid][level][logger] message, as Envoy's default format."""
        log = Logger(namespace="upstream", observer=self.publisher)
        log.info("cm init: {what}", what="all clusters initialized")
        log.warn("careful")
        [first, second] = self.lines()
        self.assertEqual(_LINE.match(first).groups(),
                         ("info", "upstream", "cm init: all clusters initialized"))
        self.assertEqual(_LINE.match(second).groups()[:2], ("warning", "upstream"))

    def test_levels(self):
        """Each logger prints at or above its own level; trace via log_envoy_level."""
        log = Logger(namespace="connection", observer=self.publisher)
        log.debug("hidden")
        self.levels.set("connection", "trace")
        log.debug("shown")
        log.debug("very fine", log_envoy_level="trace")
        self.assertEqual([_LINE.match(x).groups() for x in self.lines()],
                         [("debug", "connection", "shown"), ("trace", "connection", "very fine")])

    def test_foreignNamespaces(self):
        """
        Twisted's own chatter is dropped; its warnings, errors and failures
        go to the misc logger.
        """
        log = Logger(namespace="twisted.web.server.Site", observer=self.publisher)
        log.info("Starting factory")
        log.error("bad thing")
        try:
            1 / 0
        except ZeroDivisionError:
            log.failure("Unhandled error", Failure(), level=LogLevel.critical)
        text = self.out.getvalue()
        self.assertNotIn("Starting factory", text)
        self.assertIn("[error][misc] bad thing", text)
        self.assertIn("[critical][misc] Unhandled error\nTraceback", text)
        self.assertIn("ZeroDivisionError", text)

    def test_closedOutput(self):
        """A closed log stream never raises into the caller."""
        self.out.close()
        Logger(namespace="main", observer=self.publisher).error("lost")

    def test_eventLevel(self):
        self.assertEqual(eventLevel({"log_level": LogLevel.warn}), "warning")
        self.assertEqual(eventLevel({"log_level": LogLevel.debug, "log_envoy_level": "trace"}),
                         "trace")

    def test_formatTime(self):
        self.assertRegex(formatTime(1764104790.6021), r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.602$")


class OutputTests(SynchronousTestCase):

    def test_stderrByDefault(self):
        self.assertIs(openLogOutput(None), sys.stderr)
        self.assertIs(openLogOutput(""), sys.stderr)

    def test_logPath(self):
        """--log-path appends to the file."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("before\n")
        out = openLogOutput(path)
        self.addCleanup(out.close)
        publisher = LogPublisher(makeObserver(out, LogLevels()))
        Logger(namespace="main", observer=publisher).info("hello")
        with open(path) as f:
            lines = f.read().splitlines()
        self.assertEqual(lines[0], "before")
        self.assertTrue(lines[1].endswith("[info][main] hello"))
