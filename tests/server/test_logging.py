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
    ComponentLogger,
    LogLevels,
    UnknownLogger,
    UnknownLogLevel,
    componentLogger,
    connTag,
    eventLevel,
    formatTime,
    makeObserver,
    openLogOutput,
    streamTag,
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


class ComponentLoggerTests(SynchronousTestCase):
    """The data path's loggers: booleans to test, Envoy's tags, a source location."""

    def setUp(self):
        self.out = io.StringIO()
        self.levels = LogLevels()
        self.publisher = LogPublisher(makeObserver(self.out, self.levels))

    def test_flags(self):
        """C{setLevel} sets the two booleans a call site tests before formatting."""
        log = ComponentLogger("http")
        self.assertEqual((log.traceEnabled, log.debugEnabled), (False, False))
        log.setLevel("debug")
        self.assertEqual((log.traceEnabled, log.debugEnabled), (False, True))
        log.setLevel("trace")
        self.assertEqual((log.traceEnabled, log.debugEnabled), (True, True))
        log.setLevel("off")
        self.assertEqual((log.traceEnabled, log.debugEnabled), (False, False))

    def test_layout(self):
        """
        Envoy's layout with the Python source location where Envoy prints
        its C++ one: C{[time][tid][debug][http] [txenvoy/...py:N] message}.
        """
        self.levels.set("http", "trace")
        log = ComponentLogger("http", observer=self.publisher)
        log.debug("%snew stream", connTag(7))
        line = sys._getframe().f_lineno - 1
        tag = streamTag(7, 2 ** 64 - 1)
        log.trace("%sencoding data via codec (size=%d end_stream=%s)", tag, 5, "true")
        first, second = self.lines()
        self.assertEqual(_LINE.match(first).groups(), (
            "debug", "http",
            '[test_logging.py:%d] [Tags: "ConnectionId":"7"] new stream' % (line,)))
        self.assertTrue(second.endswith(
            '[trace][http] [test_logging.py:%d] [Tags: "ConnectionId":"7",'
            '"StreamId":"18446744073709551615"] encoding data via codec (size=5 end_stream=true)'
            % (line + 3,)), second)

    def test_sourcePathOfPackageAndOtherFiles(self):
        """
        A file of the package is named from C{txenvoy/} on, as Envoy names
        C{source/common/...}; any other file by its name alone, even in a
        checkout that is itself a directory named C{txenvoy}.
        """
        from txenvoy.http import conn_manager
        from txenvoy.server import logging as logging_
        self.assertEqual(logging_._sourcePath(conn_manager.__file__),
                         "txenvoy/http/conn_manager.py")
        self.assertEqual(
            logging_._sourcePath("/srv/txenvoy/tests/server/test_logging.py"),
            "test_logging.py")
        self.assertEqual(logging_._sourcePath("/opt/filters/txenvoy/my_filter.py"),
                         "my_filter.py")

    def test_noArguments(self):
        """A message without arguments is printed as it is (a % stays)."""
        self.levels.set("pool", "debug")
        ComponentLogger("pool", observer=self.publisher).debug("100% busy")
        self.assertTrue(self.lines()[0].endswith("] 100% busy"))

    def lines(self):
        return self.out.getvalue().splitlines()

    def test_bound(self):
        """
        The bound L{LogLevels} drives every component logger: C{--log-level},
        C{--component-log-level} and C{POST /logging} alike.
        """
        http, connection = componentLogger("http"), componentLogger("connection")
        self.assertIs(componentLogger("http"), http)
        self.assertRaises(UnknownLogger, componentLogger, "nosuch")
        levels = LogLevels("info")
        levels.bindLoggers()
        self.addCleanup(levels.unbindLoggers)
        self.assertFalse(http.debugEnabled)
        levels.setComponents("http:debug")
        self.assertEqual((http.debugEnabled, http.traceEnabled, connection.debugEnabled),
                         (True, False, False))
        levels.set("connection", "trace")
        self.assertTrue(connection.traceEnabled)
        levels.setAll("info")
        self.assertEqual((http.debugEnabled, connection.debugEnabled), (False, False))
        levels.setAll("debug")
        # Another server's levels (a test's, an embedded one's) change nothing.
        LogLevels("info").setAll("critical")
        self.assertTrue(http.debugEnabled)
        levels.unbindLoggers()
        self.assertEqual((http.debugEnabled, connection.traceEnabled), (False, False))

    def test_laterLogger(self):
        """A logger first asked for after binding starts at the bound level."""
        levels = LogLevels("debug")
        levels.bindLoggers()
        self.addCleanup(levels.unbindLoggers)
        self.assertTrue(componentLogger("rbac").debugEnabled)


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
