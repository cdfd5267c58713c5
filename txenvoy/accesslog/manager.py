# -*- test-case-name: tests.accesslog.test_loggers -*-
"""
Access log outputs: files, stdout and stderr, written without ever blocking
a worker (Envoy's C{AccessLogManager} and C{Filesystem::FileImpl}).

Design: a worker's C{write(line)} only appends the line to the writer's
in-memory buffer, under a lock held for that append alone. The bytes reach
the file from a dedicated flush thread, woken:
 - by a timer on the main reactor, every C{flushInterval} (Envoy's
   C{--file-flush-interval-msec}, 10 s) for files and every
   C{stdFlushInterval} (0.2 s) for stdout/stderr, whose lines people watch
   as they come;
 - at once, by the writing thread, when a buffer passes C{minFlushSize}
   (64 KiB, Envoy's threshold);
 - by L{AccessLogManager.reopen} (C{SIGUSR1}, C{POST /reopen_logs}).

Why a thread rather than flushing on the main reactor: a C{write()} to a
file or pipe can block for as long as the kernel likes (a full or slow
disk, NFS, a stdout pipe whose reader stalls). On the main reactor that
would freeze the admin interface, xDS, stats and the main thread watchdog;
in a worker it would freeze traffic. Envoy makes the same choice (one flush
thread per file). The thread only does I/O; it releases the GIL while the
kernel works.

For deterministic tests, C{threaded=False} runs the same flushes on the
main reactor instead: timers flush inline, and a full buffer posts its
flush with C{reactor.callFromThread}.

Stats (when a store is given), in a shard of their own that only the
flushing code writes, under one lock: C{filesystem.write_buffered} (lines
buffered), C{filesystem.write_completed} (flushes that wrote),
C{filesystem.write_failed}, C{filesystem.flushed_by_timer} (timer flushes
that had data), C{filesystem.reopen_failed} and the gauge
C{filesystem.write_total_buffered} (bytes waiting). Lines are counted when
a flush or timer tick picks them up, since workers never touch stats
owned by another thread.
"""

import errno
import io
import os
import sys
import threading
import time

from twisted.internet import task
from twisted.logger import Logger

from txenvoy.config.errors import ConfigError
from txenvoy.lifecycle import StartStopService

#: Envoy flushes a file early once this much is buffered.
MIN_FLUSH_SIZE = 64 * 1024

#: Envoy's default C{--file-flush-interval-msec}, in seconds.
DEFAULT_FLUSH_INTERVAL = 10.0

#: How often stdout/stderr access logs reach the terminal.
DEFAULT_STD_FLUSH_INTERVAL = 0.2

_STDOUT_PATHS = ("/dev/stdout", "/proc/self/fd/1")
_STDERR_PATHS = ("/dev/stderr", "/proc/self/fd/2")

_log = Logger()


def checkWritable(path):
    """
    Check, without creating it, that C{path} could be opened for appending;
    used by C{--mode validate}, which opens nothing.

    @raise ConfigError: with Envoy's message,
        C{unable to open file '<path>': <reason>}.
    """
    if path in _STDOUT_PATHS or path in _STDERR_PATHS:
        return
    if os.path.isdir(path):
        problem = errno.EISDIR
    elif os.path.exists(path):
        problem = None if os.access(path, os.W_OK) else errno.EACCES
    else:
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            problem = errno.ENOENT
        elif not os.access(parent, os.W_OK | os.X_OK):
            problem = errno.EACCES
        else:
            problem = None
    if problem is not None:
        raise ConfigError(
            "unable to open file '%s': %s" % (path, os.strerror(problem))
        )


class _FileSink:
    """An append-only file that can be reopened (for logrotate)."""

    reopenable = True

    def __init__(self, path):
        self.path = path
        self._file = None
        self.open()

    def open(self):
        self._file = open(self.path, "ab", buffering=0)

    def write(self, data):
        if self._file is None:
            self.open()
        view = memoryview(data)
        while view:
            written = self._file.write(view)
            if written is None:
                # A non-blocking descriptor that is full: this is the flush
                # thread, so waiting is harmless.
                time.sleep(0.001)
                continue
            view = view[written:]

    def reopen(self):
        # Open the new file first: if that fails, keep writing to the old
        # one rather than losing lines.
        new = open(self.path, "ab", buffering=0)
        old, self._file = self._file, new
        if old is not None:
            old.close()

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None


class _StreamSink:
    """
    The process's stdout or stderr. The stream is looked up at write time
    (the original C{sys.__stdout__}, since twistd may replace C{sys.stdout}
    with a log redirector) unless one was given.
    """

    reopenable = False

    def __init__(self, name, stream=None):
        self.path = "/dev/" + name
        self._name = name
        self._stream = stream

    def write(self, data):
        stream = self._stream
        if stream is None:
            stream = getattr(sys, "__%s__" % (self._name,))
        if isinstance(stream, io.TextIOBase) or hasattr(stream, "buffer"):
            binary = getattr(stream, "buffer", None)
            if binary is None:
                stream.write(data.decode("utf-8", "surrogateescape"))
                stream.flush()
                return
            stream = binary
        stream.write(data)
        stream.flush()

    def reopen(self):
        pass

    def close(self):
        pass


class LogWriter:
    """
    One output shared by every access logger (and thread) writing to it.

    @ivar path: the file path, or C{/dev/stdout} / C{/dev/stderr}.
    @ivar flushInterval: seconds between timer flushes.
    """

    def __init__(self, manager, sink, flushInterval, minFlushSize):
        self.path = sink.path
        self.flushInterval = flushInterval
        self._manager = manager
        self._sink = sink
        self._minFlushSize = minFlushSize
        # Held only to append or to swap the buffer out, never during I/O.
        self._lock = threading.Lock()
        # Serialises flushes of this writer (flush thread, stop(), flush()).
        self._ioLock = threading.Lock()
        self._pending = []
        self._size = 0
        self._count = 0
        self._full = False
        self._timerDue = False
        self._reopenRequested = False

    def write(self, line):
        """
        Queue one formatted line (a C{str}); safe from any thread, and never
        blocks on I/O.
        """
        with self._lock:
            self._pending.append(line)
            self._size += len(line)
            self._count += 1
            if self._full or self._size < self._minFlushSize:
                return
            self._full = True
        self._manager._flushSoon(self)

    @property
    def bufferedSize(self):
        """Characters waiting to be written."""
        return self._size

    def _take(self):
        with self._lock:
            pending, self._pending = self._pending, []
            count, self._count = self._count, 0
            self._size = 0
            self._full = False
        return pending, count

    def _needsFlush(self):
        return self._full or self._timerDue or self._reopenRequested


class _DiscardWriter:
    """A writer that drops lines: for loggers built by C{--mode validate}."""

    path = None

    def write(self, line):
        pass


#: Shared writer for loggers that must not write anywhere.
DISCARD = _DiscardWriter()


class AccessLogManager(StartStopService):
    """
    Owns every access log output of a server: one L{LogWriter} per path,
    shared by all loggers and threads.

    @param reactor: the main reactor: it runs the flush timers (and, with
        C{threaded=False}, the flushes themselves).
    @param stats: a L{txenvoy.stats.store.StatsStore} (a shard named
        C{access_log_flush} is made in it), a shard, or C{None}.
    @param flushInterval: seconds between file flushes.
    @param stdFlushInterval: seconds between stdout/stderr flushes.
    @param threaded: flush on a dedicated thread (see the module docstring).
    @param stdout: the stream for stdout lines (default: the process's).
    @param stderr: the stream for stderr lines (default: the process's).
    """

    name = "access_log_manager"

    def __init__(self, reactor, stats=None, flushInterval=DEFAULT_FLUSH_INTERVAL,
                 stdFlushInterval=DEFAULT_STD_FLUSH_INTERVAL, minFlushSize=MIN_FLUSH_SIZE,
                 threaded=True, stdout=None, stderr=None):
        self._reactor = reactor
        self._flushInterval = flushInterval
        self._stdFlushInterval = stdFlushInterval
        self._minFlushSize = minFlushSize
        self._threaded = threaded
        self._stdStreams = {"stdout": stdout, "stderr": stderr}
        self._writers = {}
        self._writersLock = threading.Lock()
        self._timers = {}
        self._started = False
        self._stopped = False
        self._thread = None
        self._wake = threading.Event()
        self._stopping = False
        self._statsLock = threading.Lock()
        self._stats = self._makeStats(stats)

    @staticmethod
    def _makeStats(stats):
        if stats is None:
            return None
        shard = stats.shard("access_log_flush") if hasattr(stats, "shard") else stats
        names = ("write_buffered", "write_completed", "write_failed",
                 "flushed_by_timer", "reopen_failed")
        counters = {n: shard.counter("filesystem." + n) for n in names}
        counters["write_total_buffered"] = shard.gauge("filesystem.write_total_buffered")
        return counters

    # -- writers -------------------------------------------------------

    def fileWriter(self, path):
        """
        The writer for C{path}, opened (for appending) on first use. The
        paths C{/dev/stdout} and C{/dev/stderr} give the stream writers.

        @raise ConfigError: C{unable to open file '<path>': <reason>}.
        """
        if path in _STDOUT_PATHS:
            return self.stdoutWriter()
        if path in _STDERR_PATHS:
            return self.stderrWriter()
        key = os.path.abspath(path)
        with self._writersLock:
            writer = self._writers.get(key)
            if writer is not None:
                return writer
            try:
                sink = _FileSink(path)
            except OSError as e:
                raise ConfigError("unable to open file '%s': %s" % (path, e.strerror))
            writer = self._writers[key] = LogWriter(
                self, sink, self._flushInterval, self._minFlushSize)
        self._startTimerFor(writer)
        return writer

    def stdoutWriter(self):
        """The writer for the process's standard output."""
        return self._streamWriter("stdout")

    def stderrWriter(self):
        """The writer for the process's standard error."""
        return self._streamWriter("stderr")

    def _streamWriter(self, name):
        key = "/dev/" + name
        with self._writersLock:
            writer = self._writers.get(key)
            if writer is not None:
                return writer
            writer = self._writers[key] = LogWriter(
                self, _StreamSink(name, self._stdStreams[name]),
                self._stdFlushInterval, self._minFlushSize)
        self._startTimerFor(writer)
        return writer

    def writers(self):
        """@return: every writer made so far."""
        with self._writersLock:
            return list(self._writers.values())

    # -- lifecycle -----------------------------------------------------

    def start(self):
        """Start the flush timers (and thread). Idempotent."""
        if self._started:
            return
        self._started = True
        self._stopped = False
        self._stopping = False
        for writer in self.writers():
            writer._minFlushSize = self._minFlushSize
        if self._threaded:
            self._thread = threading.Thread(
                target=self._run, name="access_log_flush", daemon=True)
            self._thread.start()
        for writer in self.writers():
            self._startTimerFor(writer)

    def stop(self):
        """
        Stop the timers and the thread, write everything still buffered and
        close the files. A line written later is written at once by the
        caller (there is no loop left to protect), reopening its file.
        """
        if self._started:
            self._started = False
            for timer in self._timers.values():
                if timer.running:
                    timer.stop()
            self._timers.clear()
            thread, self._thread = self._thread, None
            if thread is not None:
                self._stopping = True
                self._wake.set()
                thread.join(5)
                if thread.is_alive():
                    # Stuck in a write (a stalled stdout reader): flushing
                    # here would wait on it forever; shutdown matters more.
                    _log.error("access log flush thread did not finish; "
                               "buffered access log lines are dropped")
                    return
        self.flush()
        for writer in self.writers():
            # From now on every line is written by its caller at once.
            writer._minFlushSize = 0
            with writer._ioLock:
                writer._sink.close()
        self._stopped = True

    def flush(self):
        """Write every buffer now, in the calling thread."""
        for writer in self.writers():
            self._flushWriter(writer)
        self._syncStats()

    def reopen(self):
        """
        Reopen every file (after logrotate moved it): on the flush thread
        when it runs, else now.
        """
        writers = [w for w in self.writers() if w._sink.reopenable]
        for writer in writers:
            writer._reopenRequested = True
        if self._thread is not None:
            self._wake.set()
        else:
            for writer in writers:
                self._flushWriter(writer)

    # -- flushing ------------------------------------------------------

    def _startTimerFor(self, writer):
        if self._stopped:
            writer._minFlushSize = 0
        if not self._started or writer.flushInterval in self._timers:
            return
        interval = writer.flushInterval
        timer = task.LoopingCall(self._tick, interval)
        timer.clock = self._reactor
        self._timers[interval] = timer
        timer.start(interval, now=False)

    def _tick(self, interval):
        due = []
        for writer in self.writers():
            if writer.flushInterval == interval and writer._count:
                writer._timerDue = True
                due.append(writer)
        if due:
            if self._thread is not None:
                self._wake.set()
            else:
                for writer in due:
                    self._flushWriter(writer)
        self._syncStats()

    def _flushSoon(self, writer):
        # Called by the writing thread when a buffer filled up.
        if self._thread is not None:
            self._wake.set()
        elif self._started:
            self._reactor.callFromThread(self._flushWriter, writer)
        else:
            self._flushWriter(writer)

    def _run(self):
        while True:
            self._wake.wait()
            self._wake.clear()
            stopping = self._stopping
            for writer in self.writers():
                if writer._needsFlush():
                    try:
                        self._flushWriter(writer)
                    except Exception:
                        _log.failure("access log flush of {path} failed", path=writer.path)
            self._syncStats()
            if stopping:
                return

    def _flushWriter(self, writer):
        with writer._ioLock:
            byTimer = writer._timerDue
            writer._timerDue = False
            if writer._reopenRequested:
                writer._reopenRequested = False
                try:
                    writer._sink.reopen()
                except OSError as e:
                    self._count("reopen_failed")
                    _log.error("unable to reopen access log {path}: {reason}",
                               path=writer.path, reason=e.strerror)
            pending, count = writer._take()
            if count:
                self._count("write_buffered", count)
            if not pending:
                return
            data = "".join(pending).encode("utf-8", "surrogateescape")
            try:
                writer._sink.write(data)
            except (OSError, ValueError) as e:
                self._count("write_failed")
                _log.error("unable to write access log {path}: {reason}",
                           path=writer.path, reason=getattr(e, "strerror", None) or e)
                return
            self._count("write_completed")
            if byTimer:
                self._count("flushed_by_timer")

    def _count(self, name, amount=1):
        if self._stats is None:
            return
        with self._statsLock:
            self._stats[name].inc(amount)

    def _syncStats(self):
        if self._stats is None:
            return
        # Read without the writers' locks: an approximate byte count is
        # what a gauge sampled at flush time can promise anyway.
        total = sum(w._size for w in self.writers())
        with self._statsLock:
            self._stats["write_total_buffered"].set(total)


__all__ = [
    "AccessLogManager",
    "DEFAULT_FLUSH_INTERVAL",
    "DEFAULT_STD_FLUSH_INTERVAL",
    "DISCARD",
    "LogWriter",
    "MIN_FLUSH_SIZE",
    "checkWritable",
]
