"""
Tests for L{txenvoy.accesslog.manager}, L{txenvoy.accesslog.filters} and the
file / stdout / stderr access loggers in L{txenvoy.extensions.access_loggers}.
"""

import io
import os
import threading
import time

from google.protobuf import json_format as pbjson
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2  # noqa: F401
from envoy.extensions.access_loggers.file.v3 import file_pb2  # noqa: F401
from envoy.extensions.access_loggers.stream.v3 import stream_pb2  # noqa: F401

import txenvoy.extensions  # noqa: F401  (registers the loggers)
from txenvoy.accesslog.filters import (
    FilteredAccessLogger,
    createAccessLog,
    createAccessLogs,
)
from txenvoy.accesslog.manager import (
    DISCARD,
    AccessLogManager,
    checkWritable,
)
from txenvoy.config.context import FactoryContext
from txenvoy.config.errors import ConfigError, UnsupportedExtension, UnsupportedField
from txenvoy.extensions.access_loggers.file import FileAccessLogger
from txenvoy.formatter.substitution import DEFAULT_FORMAT
from txenvoy.interfaces import IAccessLogger
from txenvoy.network.stream_info import ResponseFlag, StreamInfo
from txenvoy.stats.store import StatsStore

FILE = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
STDOUT = "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"
STDERR = "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog"


class ThreadReactor(Clock):
    """A fake main reactor: a clock plus a queue for callFromThread."""

    def __init__(self):
        Clock.__init__(self)
        self.posted = []

    def callFromThread(self, f, *args, **kwargs):
        self.posted.append((f, args, kwargs))

    def runPosted(self):
        posted, self.posted = self.posted, []
        for f, args, kwargs in posted:
            f(*args, **kwargs)


def streamInfo(code=None, durationMs=0, flags=(), healthCheck=False):
    clock = Clock()
    si = StreamInfo(clock, wallTime=lambda: 1795645031.272)
    si.responseCode = code
    si.bytesReceived = 3
    for flag in flags:
        si.setResponseFlag(flag)
    if healthCheck:
        si.healthCheck = True
    clock.advance(durationMs / 1000.0)
    si.onComplete()
    return si


def read(path):
    with open(path, "rb") as f:
        return f.read()


class ManagerTests(SynchronousTestCase):
    """L{AccessLogManager} with its flushes on the (fake) main reactor."""

    def setUp(self):
        self.reactor = ThreadReactor()
        self.store = StatsStore()
        self.manager = AccessLogManager(
            self.reactor, self.store, flushInterval=10.0, stdFlushInterval=0.2,
            threaded=False, stdout=io.BytesIO(), stderr=io.BytesIO())
        self.addCleanup(self.manager.stop)
        self.path = self.mktemp()

    def counter(self, name):
        return self.store.counterValue("filesystem." + name)

    def test_oneWriterPerPath(self):
        """Every logger of a path shares one writer."""
        a = self.manager.fileWriter(self.path)
        b = self.manager.fileWriter(os.path.join(".", self.path))
        self.assertIs(a, b)
        self.assertIsNot(a, self.manager.fileWriter(self.path + "2"))

    def test_writeIsBuffered(self):
        """A write only queues the line; the timer writes it out."""
        self.manager.start()
        writer = self.manager.fileWriter(self.path)
        writer.write("one\n")
        writer.write("two\n")
        self.assertEqual(read(self.path), b"")
        self.reactor.advance(9.9)
        self.assertEqual(read(self.path), b"")
        self.reactor.advance(0.1)
        self.assertEqual(read(self.path), b"one\ntwo\n")
        self.assertEqual(self.counter("write_buffered"), 2)
        self.assertEqual(self.counter("write_completed"), 1)
        self.assertEqual(self.counter("flushed_by_timer"), 1)
        self.assertEqual(self.store.gaugeValue("filesystem.write_total_buffered"), 0)

    def test_idleTimerCountsNothing(self):
        self.manager.start()
        self.manager.fileWriter(self.path)
        self.reactor.advance(30)
        self.assertEqual(self.counter("flushed_by_timer"), 0)
        self.assertEqual(self.counter("write_completed"), 0)

    def test_gaugeBeforeFlush(self):
        """A std timer tick samples what the file writer holds."""
        self.manager.start()
        self.manager.stdoutWriter()
        self.manager.fileWriter(self.path).write("12345")
        self.reactor.advance(0.2)
        self.assertEqual(self.store.gaugeValue("filesystem.write_total_buffered"), 5)

    def test_fullBufferFlushesSoon(self):
        """Past 64 KiB the writing thread posts a flush to the main reactor."""
        self.manager.start()
        writer = self.manager.fileWriter(self.path)
        line = "x" * 1023 + "\n"
        for _ in range(63):
            writer.write(line)
        self.assertEqual(self.reactor.posted, [])
        writer.write(line)
        self.assertEqual(len(self.reactor.posted), 1)
        writer.write(line)
        self.assertEqual(len(self.reactor.posted), 1)
        self.reactor.runPosted()
        self.assertEqual(len(read(self.path)), 65 * 1024)
        self.assertEqual(self.counter("flushed_by_timer"), 0)

    def test_flush(self):
        writer = self.manager.fileWriter(self.path)
        writer.write("now\n")
        self.manager.flush()
        self.assertEqual(read(self.path), b"now\n")

    def test_appends(self):
        with open(self.path, "wb") as f:
            f.write(b"old\n")
        self.manager.fileWriter(self.path).write("new\n")
        self.manager.flush()
        self.assertEqual(read(self.path), b"old\nnew\n")

    def test_bytesRoundTrip(self):
        """Lines carrying undecodable header bytes are written as those bytes."""
        self.manager.fileWriter(self.path).write(b"\xff\xc3\xa9\n".decode("utf-8", "surrogateescape"))
        self.manager.flush()
        self.assertEqual(read(self.path), b"\xff\xc3\xa9\n")

    def test_reopen(self):
        """After logrotate moves the file, reopen() starts a new one."""
        writer = self.manager.fileWriter(self.path)
        writer.write("before\n")
        self.manager.flush()
        os.rename(self.path, self.path + ".1")
        writer.write("moved\n")
        self.manager.reopen()
        writer.write("after\n")
        self.manager.flush()
        self.assertEqual(read(self.path + ".1"), b"before\n")
        self.assertEqual(read(self.path), b"moved\nafter\n")

    def test_reopenFailure(self):
        """A failed reopen is counted and the old file kept."""
        directory = self.mktemp()
        os.mkdir(directory)
        path = os.path.join(directory, "a.log")
        writer = self.manager.fileWriter(path)
        os.rename(path, path + ".1")
        # A directory where the file was cannot be opened for appending.
        os.mkdir(path)
        writer.write("kept\n")
        self.manager.reopen()
        self.assertEqual(self.counter("reopen_failed"), 1)
        self.manager.flush()
        self.assertEqual(read(path + ".1"), b"kept\n")

    def test_unopenable(self):
        """Envoy 1.40: C{unable to open file '<path>': No such file or directory}."""
        e = self.assertRaises(ConfigError, self.manager.fileWriter, "/nonexistent/dir/x.log")
        self.assertEqual(e.message,
                         "unable to open file '/nonexistent/dir/x.log': No such file or directory")

    def test_checkWritable(self):
        """Validation reports the same error without creating anything."""
        e = self.assertRaises(ConfigError, checkWritable, "/nonexistent/dir/x.log")
        self.assertIn("No such file or directory", e.message)
        checkWritable(self.path)
        self.assertFalse(os.path.exists(self.path))
        checkWritable("/dev/stdout")

    def test_stdout(self):
        """stdout lines are flushed by the short timer."""
        out = io.BytesIO()
        manager = AccessLogManager(self.reactor, threaded=False, stdout=out,
                                   stdFlushInterval=0.2)
        manager.start()
        self.addCleanup(manager.stop)
        writer = manager.stdoutWriter()
        self.assertIs(writer, manager.fileWriter("/dev/stdout"))
        writer.write("line\n")
        self.reactor.advance(0.2)
        self.assertEqual(out.getvalue(), b"line\n")

    def test_stderrTextStream(self):
        err = io.StringIO()
        manager = AccessLogManager(self.reactor, threaded=False, stderr=err)
        writer = manager.fileWriter("/dev/stderr")
        self.assertIs(writer, manager.stderrWriter())
        writer.write("e\n")
        manager.flush()
        self.assertEqual(err.getvalue(), "e\n")

    def test_stopFlushesThenWritesDirectly(self):
        """stop() writes everything; later lines are written by their caller."""
        self.manager.start()
        writer = self.manager.fileWriter(self.path)
        writer.write("a\n")
        self.manager.stop()
        self.assertEqual(read(self.path), b"a\n")
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        writer.write("late\n")
        self.assertEqual(read(self.path), b"a\nlate\n")

    def test_writeFailure(self):
        class Broken:
            path = "broken"
            reopenable = False

            def write(self, data):
                raise OSError(28, "No space left on device")

            def close(self):
                pass

        writer = self.manager.fileWriter(self.path)
        writer._sink = Broken()
        writer.write("x\n")
        self.manager.flush()
        self.assertEqual(self.counter("write_failed"), 1)
        self.assertEqual(self.counter("write_completed"), 0)
        self.flushLoggedErrors()


class ThreadedManagerTests(SynchronousTestCase):
    """The flush thread, for real."""

    def waitFor(self, condition):
        deadline = time.monotonic() + 5
        while not condition():
            if time.monotonic() > deadline:
                self.fail("timed out")
            time.sleep(0.001)

    def test_threadFlushes(self):
        """
        Timer ticks and full buffers wake the flush thread; lines written by
        several threads all arrive; stop() ends the thread.
        """
        clock = Clock()
        store = StatsStore()
        manager = AccessLogManager(clock, store, flushInterval=1.0, minFlushSize=1000)
        path = self.mktemp()
        writer = manager.fileWriter(path)
        manager.start()
        thread = manager._thread
        self.assertTrue(thread.is_alive())

        writer.write("tick\n")
        clock.advance(1.0)
        self.waitFor(lambda: read(path) == b"tick\n")

        def work(n):
            for i in range(100):
                writer.write("%d-%d\n" % (n, i))

        workers = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        manager.stop()
        self.assertFalse(thread.is_alive())
        lines = read(path).splitlines()
        self.assertEqual(len(lines), 401)
        self.assertEqual(len(set(lines)), 401)
        self.assertEqual(store.counterValue("filesystem.write_buffered"), 401)

    def test_reopenOnThread(self):
        clock = Clock()
        manager = AccessLogManager(clock)
        path = self.mktemp()
        writer = manager.fileWriter(path)
        manager.start()
        self.addCleanup(manager.stop)
        os.rename(path, path + ".1")
        manager.reopen()
        self.waitFor(lambda: os.path.exists(path))
        writer.write("new\n")
        manager.flush()
        self.assertEqual(read(path), b"new\n")


def accessLog(d):
    msg = accesslog_pb2.AccessLog()
    pbjson.ParseDict(d, msg)
    return msg


class LoggerTests(SynchronousTestCase):
    """The access logger extensions and C{createAccessLog}."""

    def setUp(self):
        self.reactor = ThreadReactor()
        self.out = io.BytesIO()
        self.err = io.BytesIO()
        self.manager = AccessLogManager(self.reactor, threaded=False, stdout=self.out,
                                        stderr=self.err)
        self.addCleanup(self.manager.stop)
        self.context = FactoryContext(self.reactor, StatsStore(),
                                      accessLogManager=self.manager)
        self.path = self.mktemp()

    def build(self, d, context=None, path="tcp.access_log[0]"):
        return createAccessLog(accessLog(d), context or self.context, path)

    def fileLog(self, extra=None, **top):
        config = {"@type": FILE, "path": self.path}
        config.update(extra or {})
        d = {"name": "envoy.access_loggers.file", "typed_config": config}
        d.update(top)
        return d

    def test_fileLogger(self):
        logger = self.build(self.fileLog(
            {"log_format": {"text_format_source": {"inline_string": "%RESPONSE_CODE%\n"}}}))
        self.assertTrue(verifyObject(IAccessLogger, logger))
        self.assertIsInstance(logger, FileAccessLogger)
        logger.log(streamInfo(code=200), None, None)
        self.manager.flush()
        self.assertEqual(read(self.path), b"200\n")

    def test_defaultFormat(self):
        logger = self.build(self.fileLog())
        self.assertEqual(logger.formatter.text, DEFAULT_FORMAT)
        logger.log(streamInfo(), None, None)
        self.manager.flush()
        self.assertEqual(
            read(self.path),
            b'[2026-11-25T22:17:11.272Z] "- - -" 0 - 3 0 0 - "-" "-" "-" "-" "-"\n')

    def test_deprecatedFormats(self):
        """FileAccessLog's deprecated C{format} and C{json_format}."""
        logger = self.build(self.fileLog({"format": "old %BYTES_RECEIVED%\n"}))
        logger.log(streamInfo())
        logger = self.build(self.fileLog({"json_format": {"rx": "%BYTES_RECEIVED%"}}))
        logger.log(streamInfo())
        self.manager.flush()
        self.assertEqual(read(self.path), b'old 3\n{"rx":3}\n')

    def test_sharedFile(self):
        """Two loggers of one path share one writer."""
        a = self.build(self.fileLog())
        b = self.build(self.fileLog())
        self.assertIs(a.writer, b.writer)

    def test_jsonLogFormat(self):
        logger = self.build(self.fileLog(
            {"log_format": {"json_format": {"code": "%RESPONSE_CODE%"}}}))
        logger.log(streamInfo(code=503))
        self.manager.flush()
        self.assertEqual(read(self.path), b'{"code":503}\n')

    def test_stdoutAndStderr(self):
        out = self.build({"name": "s", "typed_config": {
            "@type": STDOUT,
            "log_format": {"text_format_source": {"inline_string": "out %RESPONSE_CODE%\n"}}}})
        err = self.build({"name": "s", "typed_config": {"@type": STDERR}})
        out.log(streamInfo(code=201))
        err.log(streamInfo())
        self.manager.flush()
        self.assertEqual(self.out.getvalue(), b"out 201\n")
        self.assertTrue(self.err.getvalue().startswith(b'[2026-11-25T22:17:11.272Z] "- - -" 0'))

    def test_badFormatNamesPath(self):
        e = self.assertRaises(ConfigError, self.build, self.fileLog(
            {"log_format": {"text_format_source": {"inline_string": "%NOPE%"}}}))
        self.assertEqual(
            e.message,
            "tcp.access_log[0].typed_config.log_format.text_format_source: "
            "Not supported field in StreamInfo: NOPE")

    def test_unopenableNamesPath(self):
        d = self.fileLog()
        d["typed_config"]["path"] = "/nonexistent/dir/x.log"
        e = self.assertRaises(ConfigError, self.build, d)
        self.assertEqual(
            e.message,
            "tcp.access_log[0].typed_config.path: unable to open file "
            "'/nonexistent/dir/x.log': No such file or directory")

    def test_validateOpensNothing(self):
        """C{--mode validate} builds the logger but creates no file."""
        context = FactoryContext(self.reactor, StatsStore(), validateOnly=True)
        logger = self.build(self.fileLog(), context)
        self.assertIs(logger.writer, DISCARD)
        logger.log(streamInfo())
        self.assertFalse(os.path.exists(self.path))

    def test_validateChecksPath(self):
        context = FactoryContext(self.reactor, StatsStore(), validateOnly=True)
        d = self.fileLog()
        d["typed_config"]["path"] = "/nonexistent/dir/x.log"
        e = self.assertRaises(ConfigError, self.build, d, context)
        self.assertIn("unable to open file '/nonexistent/dir/x.log'", e.message)

    def test_unknownType(self):
        from envoy.extensions.access_loggers.stats.v3 import stats_pb2  # noqa: F401

        e = self.assertRaises(UnsupportedExtension, self.build, {
            "name": "g", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.stats.v3."
                         "Config"}})
        self.assertIn("tcp.access_log[0].typed_config", e.message)

    def test_createAccessLogs(self):
        loggers = createAccessLogs([accessLog(self.fileLog()), accessLog(self.fileLog())],
                                   self.context, "x.access_log")
        self.assertEqual(len(loggers), 2)


class FilterTests(SynchronousTestCase):
    """The C{filter} of an C{access_log} entry."""

    def setUp(self):
        self.context = FactoryContext(Clock(), StatsStore(), validateOnly=True)

    def accepts(self, filterDict, si):
        d = {"name": "f", "filter": filterDict, "typed_config": {
            "@type": FILE, "path": "/dev/null"}}
        logger = createAccessLog(accessLog(d), self.context, "al[0]")
        self.assertIsInstance(logger, FilteredAccessLogger)
        self.assertTrue(verifyObject(IAccessLogger, logger))
        seen = []
        logger.logger = type("L", (), {"log": lambda self, *a: seen.append(a)})()
        logger.log(si, None, None)
        return bool(seen)

    def comparison(self, op, value):
        return {"comparison": {"op": op, "value": {"default_value": value, "runtime_key": "k"}}}

    def test_statusCode(self):
        f = {"status_code_filter": self.comparison("GE", 400)}
        self.assertTrue(self.accepts(f, streamInfo(code=404)))
        self.assertFalse(self.accepts(f, streamInfo(code=200)))
        self.assertFalse(self.accepts(f, streamInfo()))
        f = {"status_code_filter": self.comparison("EQ", 0)}
        self.assertTrue(self.accepts(f, streamInfo()))
        f = {"status_code_filter": self.comparison("NE", 200)}
        self.assertTrue(self.accepts(f, streamInfo(code=201)))
        f = {"status_code_filter": self.comparison("LE", 299)}
        self.assertTrue(self.accepts(f, streamInfo(code=200)))

    def test_duration(self):
        f = {"duration_filter": self.comparison("GE", 100)}
        self.assertTrue(self.accepts(f, streamInfo(durationMs=100)))
        self.assertFalse(self.accepts(f, streamInfo(durationMs=99)))

    def test_responseFlags(self):
        f = {"response_flag_filter": {"flags": ["UF", "NR"]}}
        self.assertTrue(self.accepts(f, streamInfo(
            flags=[ResponseFlag.UPSTREAM_CONNECTION_FAILURE])))
        self.assertFalse(self.accepts(f, streamInfo(flags=[ResponseFlag.UPSTREAM_OVERFLOW])))
        anyFlag = {"response_flag_filter": {}}
        self.assertTrue(self.accepts(anyFlag, streamInfo(flags=[ResponseFlag.UPSTREAM_OVERFLOW])))
        self.assertFalse(self.accepts(anyFlag, streamInfo()))

    def test_badFlag(self):
        e = self.assertRaises(ConfigError, self.accepts,
                              {"response_flag_filter": {"flags": ["XX"]}}, streamInfo())
        self.assertIn("al[0].filter.response_flag_filter.flags[0]", e.message)

    def test_notHealthCheck(self):
        f = {"not_health_check_filter": {}}
        self.assertTrue(self.accepts(f, streamInfo()))
        self.assertFalse(self.accepts(f, streamInfo(healthCheck=True)))

    def test_andOr(self):
        big = {"status_code_filter": self.comparison("GE", 500)}
        slow = {"duration_filter": self.comparison("GE", 1000)}
        both = {"and_filter": {"filters": [big, slow]}}
        either = {"or_filter": {"filters": [big, slow]}}
        self.assertFalse(self.accepts(both, streamInfo(code=503)))
        self.assertTrue(self.accepts(both, streamInfo(code=503, durationMs=1000)))
        self.assertTrue(self.accepts(either, streamInfo(code=503)))
        self.assertFalse(self.accepts(either, streamInfo(code=200)))

    def test_andNeedsTwo(self):
        f = {"and_filter": {"filters": [{"not_health_check_filter": {}}]}}
        e = self.assertRaises(ConfigError, self.accepts, f, streamInfo())
        self.assertIn("al[0].filter.and_filter.filters", e.message)

    def test_unsupported(self):
        """Filters txenvoy lacks are rejected, naming the nested path."""
        f = {"or_filter": {"filters": [
            {"not_health_check_filter": {}},
            {"runtime_filter": {"runtime_key": "k"}}]}}
        e = self.assertRaises(UnsupportedField, self.accepts, f, streamInfo())
        self.assertTrue(e.message.startswith(
            "al[0].filter.or_filter.filters[1].runtime_filter: unsupported field"))

    def test_noFilterNoWrapper(self):
        d = {"name": "f", "typed_config": {"@type": FILE, "path": "/dev/null"}}
        logger = createAccessLog(accessLog(d), self.context, "al[0]")
        self.assertIsInstance(logger, FileAccessLogger)
