# -*- test-case-name: tests.server.test_logging -*-
"""
Application logging with Envoy's logger names, levels and line layout.

txenvoy modules log through C{twisted.logger} with Envoy's logger name as
the namespace::

    log = Logger(namespace="upstream")
    log.info("cm init: all clusters initialized")

L{makeObserver} prints such events as Envoy does::

    [2026-11-25 21:06:30.602][4781][info][upstream] cm init: all clusters initialized

Each logger has its own level (C{--log-level}, C{--component-log-level},
C{POST /logging}), held by L{LogLevels}.

The data path logs its debug and trace story through a L{ComponentLogger}
per Envoy logger, whose C{debugEnabled} / C{traceEnabled} booleans the
bound L{LogLevels} keeps current. A call site tests the boolean before it
builds anything, so a level that is off costs one attribute read::

    log = componentLogger("http")
    if log.debugEnabled:
        log.debug("%snew stream", connTag(connectionId))

Such lines carry the Python source location where Envoy prints its C++
one, and Envoy 1.40's tags for the connection and stream ids::

    [2026-12-07 08:50:30.103][7224][debug][http] [txenvoy/http/conn_manager.py:771] \
[Tags: "ConnectionId":"2","StreamId":"14270386874937559073"] request headers complete (end_stream=true):
"""

import os
import sys
import threading
import time

from twisted.logger import ILogObserver, Logger, LogLevel, formatEvent
from zope.interface import implementer

#: Envoy's level names, most verbose first.
LEVELS = ("trace", "debug", "info", "warning", "error", "critical", "off")
_RANK = {name: i for i, name in enumerate(LEVELS)}
# Accepted on the command line (spdlog's short name), not by the admin.
_ALIASES = {"warn": "warning"}

#: Envoy 1.40's logger names, in the order C{POST /logging} lists them.
LOGGER_NAMES = (
    "a2a", "admin", "ai_protocol_manager", "alternate_protocols_cache", "aws", "assert",
    "backtrace", "basic_auth", "cache_filter", "client", "config", "connection",
    "conn_handler", "compression", "credential_injector", "decompression", "dns", "dubbo",
    "envoy_bug", "ext_authz", "ext_proc", "rocketmq", "file", "filter", "forward_proxy",
    "geolocation", "grpc", "happy_eyeballs", "hc", "health_checker", "http", "http2",
    "hystrix", "init", "io", "jwt", "json_rpc", "kafka", "key_value_store", "lua",
    "local_rate_limit", "main", "matcher", "mcp", "misc", "mongo", "multi_connection",
    "notification", "oauth2", "quic", "quic_stream", "pool", "rate_limit_quota", "rbac",
    "rds", "redis", "router", "runtime", "stats", "secret", "sse", "tap", "testing",
    "thrift", "tracing", "upstream", "udp", "wasm", "websocket", "golang", "stats_sinks",
    "dynamic_modules", "ip_tagging",
)

_TWISTED_LEVELS = {
    LogLevel.debug: "debug",
    LogLevel.info: "info",
    LogLevel.warn: "warning",
    LogLevel.error: "error",
    LogLevel.critical: "critical",
}


class UnknownLogLevel(ValueError):
    """A level name that is not one of L{LEVELS}."""


class UnknownLogger(KeyError):
    """A logger name that is not one of L{LOGGER_NAMES}."""


def parseLevel(name, allowAlias=True):
    """
    @return: Envoy's level name for C{name} (C{"warn"} -> C{"warning"}
        when C{allowAlias}).
    @raise UnknownLogLevel: for anything else.
    """
    if allowAlias:
        name = _ALIASES.get(name, name)
    if name not in _RANK:
        raise UnknownLogLevel(name)
    return name


class LogLevels:
    """
    The level of every Envoy logger.

    @ivar names: the logger names, in Envoy's order.
    """

    _bound = False

    def __init__(self, level="info", names=LOGGER_NAMES):
        self.names = tuple(names)
        level = parseLevel(level)
        self._levels = dict.fromkeys(self.names, level)
        #: Called with no argument after every change (worker processes
        #: follow the main process's levels).
        self.onChange = None

    def bindLoggers(self):
        """
        Make these levels the ones every L{ComponentLogger} follows, now
        and on every later change (the server whose log is printed calls
        this; other instances, in tests and embedding, leave the data
        path's loggers alone).
        """
        global _boundLevels
        if _boundLevels is not None:
            _boundLevels._bound = False
        _boundLevels = self
        self._bound = True
        self._syncLoggers()

    def unbindLoggers(self):
        """
        Stop driving the component loggers (if these levels drove them);
        they fall back to C{info}, where their debug and trace lines are off.
        """
        global _boundLevels
        if _boundLevels is self:
            _boundLevels = None
            for logger in _componentLoggers.values():
                logger.setLevel("info")
        self._bound = False

    def levels(self):
        """Every logger's level, as a dict."""
        return dict(self._levels)

    def setLevels(self, levels):
        """Set the loggers named in C{levels} (a L{levels} result)."""
        for name, level in levels.items():
            if name in self._levels:
                self._levels[name] = parseLevel(level)
        self._syncLoggers()

    def _syncLoggers(self):
        if self.onChange is not None:
            self.onChange()
        if self._bound:
            for name, logger in _componentLoggers.items():
                logger.setLevel(self._levels.get(name, "off"))

    def setAll(self, level):
        """Set every logger (C{--log-level}, C{/logging?level=}).

        @raise UnknownLogLevel: for a bad level.
        """
        level = parseLevel(level)
        for name in self.names:
            self._levels[name] = level
        self._syncLoggers()

    def set(self, name, level):
        """Set one logger.

        @raise UnknownLogger: for a name Envoy does not have.
        @raise UnknownLogLevel: for a bad level.
        """
        if name not in self._levels:
            raise UnknownLogger(name)
        self._levels[name] = parseLevel(level)
        self._syncLoggers()

    def setComponents(self, spec):
        """
        Apply C{--component-log-level}'s C{upstream:debug,connection:trace};
        nothing changes unless every pair is valid.

        @raise ValueError: for a malformed pair, with Envoy's message.
        @raise UnknownLogger: for an unknown name.
        @raise UnknownLogLevel: for a bad level.
        """
        pairs = []
        for item in spec.split(","):
            name, sep, level = item.partition(":")
            if not sep or not name or not level:
                raise ValueError("error: component log level not correctly specified '%s'"
                                 % (item,))
            if name not in self._levels:
                raise UnknownLogger(name)
            pairs.append((name, parseLevel(level)))
        for name, level in pairs:
            self._levels[name] = level
        self._syncLoggers()

    def levelOf(self, name):
        """@return: the level name of a logger (C{"info"})."""
        return self._levels[name]

    def enabled(self, name, level):
        """Whether an event at C{level} on logger C{name} is printed."""
        current = self._levels.get(name)
        if current is None or current == "off" or level == "off":
            return False
        return _RANK[level] >= _RANK[current]

    def text(self):
        """
        What C{POST /logging} answers: C{active loggers:} and one
        C{name: level} line per logger (indented by two spaces), then an empty line.
        """
        return "active loggers:\n" + "".join(
            "  %s: %s\n" % (name, self._levels[name]) for name in self.names) + "\n"


#: The L{LogLevels} the component loggers follow (L{LogLevels.bindLoggers}).
_boundLevels = None
_componentLoggers = {}


class ComponentLogger:
    """
    One Envoy logger as the data path uses it (Envoy's C{ENVOY_LOG} with
    its C{ENVOY_LOGGER().should_log()} test made explicit).

    Call sites test L{debugEnabled} or L{traceEnabled} first and only then
    format a message, so that a disabled level costs one attribute read::

        if log.debugEnabled:
            log.debug("%sconnecting to %s", connTag(cid), address)

    @ivar name: the Envoy logger name (C{"http"}).
    @ivar traceEnabled: whether C{trace} lines are printed.
    @ivar debugEnabled: whether C{debug} lines are printed.
    """

    __slots__ = ("name", "traceEnabled", "debugEnabled", "_logger")

    def __init__(self, name, observer=None):
        self.name = name
        self.traceEnabled = False
        self.debugEnabled = False
        self._logger = Logger(namespace=name, observer=observer)

    def setLevel(self, level):
        """Follow a new level name (one of L{LEVELS})."""
        rank = _RANK[level]
        self.traceEnabled = rank <= _RANK["trace"]
        self.debugEnabled = rank <= _RANK["debug"]

    def trace(self, message, *args):
        """Print C{message % args} at trace level (test L{traceEnabled} first)."""
        self._emit("trace", message, args)

    def debug(self, message, *args):
        """Print C{message % args} at debug level (test L{debugEnabled} first)."""
        self._emit("debug", message, args)

    def _emit(self, level, message, args):
        if args:
            message = message % args
        frame = sys._getframe(2)
        self._logger.emit(
            LogLevel.debug, "{log_text}", log_text=message, log_envoy_level=level,
            log_location="%s:%d" % (_sourcePath(frame.f_code.co_filename), frame.f_lineno))


_sourcePaths = {}

# Where this package's files are: what precedes "txenvoy/..." in their names.
# A checkout may itself be a directory named txenvoy, so the prefix is the
# package's own place, not the last "/txenvoy/" in a path.
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))).replace("\\", "/") + "/"


def _sourcePath(filename):
    # txenvoy/http/conn_manager.py, as Envoy prints source/common/...; a
    # file outside the package (a user's filter, a test) by its name alone.
    path = _sourcePaths.get(filename)
    if path is None:
        normal = filename.replace("\\", "/")
        if normal.startswith(_PACKAGE_PARENT + "txenvoy/"):
            path = normal[len(_PACKAGE_PARENT):]
        else:
            path = normal.rsplit("/", 1)[-1]
        _sourcePaths[filename] = path
    return path


def componentLogger(name):
    """
    The L{ComponentLogger} of Envoy logger C{name}, one per process.

    @raise UnknownLogger: for a name Envoy does not have.
    """
    logger = _componentLoggers.get(name)
    if logger is None:
        if name not in LOGGER_NAMES:
            raise UnknownLogger(name)
        logger = _componentLoggers[name] = ComponentLogger(name)
        if _boundLevels is not None:
            logger.setLevel(_boundLevels._levels.get(name, "off"))
    return logger


def connTag(connectionId):
    """
    Envoy 1.40's prefix of a connection's lines (C{ENVOY_CONN_LOG}):
    C{[Tags: "ConnectionId":"12"] }.
    """
    return '[Tags: "ConnectionId":"%d"] ' % (connectionId,)


def streamTag(connectionId, streamId):
    """
    Envoy 1.40's prefix of a stream's lines (C{ENVOY_STREAM_LOG}):
    C{[Tags: "ConnectionId":"12","StreamId":"3456..."] }.
    """
    return '[Tags: "ConnectionId":"%d","StreamId":"%d"] ' % (connectionId, streamId)


def eventLevel(event):
    """
    Envoy's level of a C{twisted.logger} event: C{log_envoy_level} if set
    (the only way to say C{trace}), otherwise from C{log_level}.
    """
    level = event.get("log_envoy_level")
    if level in _RANK:
        return level
    return _TWISTED_LEVELS.get(event.get("log_level"), "info")


def loggerNameOf(event, names):
    """
    The Envoy logger of an event: its C{log_namespace} when that is a
    logger name. Anything else (Twisted's own events) is reported under
    C{misc} when it is a warning or worse, and dropped otherwise, so that
    Twisted's routine chatter does not drown Envoy's log.
    """
    namespace = event.get("log_namespace")
    if namespace in names:
        return namespace
    if event.get("log_failure") is not None:
        return "misc"
    if _RANK[eventLevel(event)] >= _RANK["warning"]:
        return "misc"
    return None


def formatTime(t):
    """C{2026-11-25 21:06:30.602} in local time, as Envoy's default layout."""
    millis = int((t - int(t)) * 1000)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) + ".%03d" % (millis,)


def eventMessage(event):
    """An event's text, with the traceback of its failure if it has one."""
    message = formatEvent(event)
    failure = event.get("log_failure")
    if failure is not None:
        try:
            message = message + "\n" + failure.getTraceback().rstrip("\n")
        except Exception:
            pass
    return message


def formatLine(event, name, level, tid=None):
    """One log line (with a trailing newline; a traceback follows)."""
    if tid is None:
        tid = threading.get_native_id()
    message = eventMessage(event)
    location = event.get("log_location")
    if location is not None:
        message = "[%s] %s" % (location, message)
    return "[%s][%d][%s][%s] %s\n" % (
        formatTime(event.get("log_time") or time.time()), tid, level, name, message)


@implementer(ILogObserver)
class EnvoyLogObserver:
    """
    Prints events in Envoy's layout to a text stream, at each logger's
    level. Safe to call from any thread (workers log too).
    """

    def __init__(self, outFile, levels, render=None):
        self._out = outFile
        self._levels = levels
        self._render = render
        self._lock = threading.Lock()

    def __call__(self, event):
        name = loggerNameOf(event, self._levels._levels)
        if name is None:
            return
        level = eventLevel(event)
        if not self._levels.enabled(name, level):
            return
        if self._render is None:
            line = formatLine(event, name, level)
        else:
            # --log-format (txenvoy.server.logformat).
            line = self._render(event.get("log_time") or time.time(),
                                threading.get_native_id(), level, name, eventMessage(event),
                                event.get("log_location"))
        with self._lock:
            try:
                self._out.write(line)
                self._out.flush()
            except (OSError, ValueError):
                # A closed or full log file must never take the server down.
                pass

    def setOutput(self, outFile):
        """Switch to another stream (reopened log file); returns the old one."""
        with self._lock:
            old, self._out = self._out, outFile
        return old


def makeObserver(outFile, levels, render=None):
    """
    @param outFile: a text stream (L{openLogOutput}).
    @param levels: the L{LogLevels} (call its C{bindLoggers} too when
        the data path's debug and trace lines should follow them).
    @param render: a C{--log-format} line layout
        (L{txenvoy.server.logformat.compileLogFormat}); Envoy's default
        layout without it.
    @return: an C{ILogObserver} to add to the global log beginner or
        publisher.
    """
    return EnvoyLogObserver(outFile, levels, render)


def openLogOutput(path=None):
    """
    The stream for C{--log-path}: the file, opened for appending and line
    buffered, or C{sys.stderr} without a path.

    @raise OSError: when the file cannot be opened.
    """
    if not path:
        return sys.stderr
    return open(path, "a", buffering=1, encoding="utf-8")
