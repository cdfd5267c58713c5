# -*- test-case-name: tests.config.test_errors -*-
"""
Errors raised for a user's configuration mistakes, and the collection of
all of them in one load.

A L{ConfigError} always carries the message printed to the user; the entry
point prints it and exits 1. No traceback ever reaches the user for a config
mistake.

Envoy stops at the first error. txenvoy goes on where it safely can, so that
one run of C{--mode validate} lists everything a config lacks: inside
L{collectErrors}, L{report} records an error and lets the caller continue
(an unsupported field is left out of what is built), and L{skipOnError}
records an error and skips the one item (a cluster, a listener, a filter)
it was raised in. Outside a collection both raise at once, as before.
"""

import contextlib
import re
import threading

#: What a user is told when neither C{-c} nor C{--config-yaml} is given.
NO_CONFIG = (
    "no config given: pass -c/--config-path FILE (an Envoy v3 bootstrap, YAML or "
    "JSON) or --config-yaml TEXT"
)


class ConfigError(Exception):
    """
    The configuration is invalid.

    @ivar message: the whole message, naming the field path where known.
    @ivar line: the line of the config file the error is about, or C{None}.
    """

    line = None

    def __init__(self, message):
        Exception.__init__(self, message)
        self.message = message

    def __str__(self):
        return self.message

    @property
    def errors(self):
        """The single errors this one stands for: itself."""
        return [self]


class ConfigErrors(ConfigError):
    """
    Every error found in one load, in the order they were met; the first
    is the one Envoy would have stopped at.
    """

    def __init__(self, errors):
        self._errors = list(errors)
        ConfigError.__init__(self, "\n".join(e.message for e in self._errors))

    @property
    def errors(self):
        return list(self._errors)


class UnsupportedExtension(ConfigError):
    """
    A valid Envoy extension that txenvoy does not implement (yet).
    """

    def __init__(self, path, typeName, name=""):
        self.path = path
        self.typeName = typeName
        label = "'%s' " % (name,) if name else ""
        ConfigError.__init__(
            self,
            "%s: unsupported extension %s(@type type.googleapis.com/%s): "
            "txenvoy does not implement it yet" % (path, label, typeName),
        )


class UnknownExtension(UnsupportedExtension):
    """
    A C{typed_config} whose C{@type} is neither an Envoy extension nor one
    that an installed package registered: the package that provides it is
    missing. (A subclass, so that an C{is_optional} filter is skipped
    either way.)
    """

    def __init__(self, path, typeName, name=""):
        self.path = path
        self.typeName = typeName
        ConfigError.__init__(
            self,
            "%s: no extension for type.googleapis.com/%s; install the package that "
            "provides it as a twisted.plugin, or import it with --import MODULE"
            % (path, typeName),
        )


class UnsupportedField(ConfigError):
    """
    A valid Envoy field that txenvoy does not implement (yet); rejected
    rather than silently ignored.
    """

    def __init__(self, path, detail=""):
        self.path = path
        ConfigError.__init__(
            self,
            "%s: unsupported field%s: txenvoy does not implement it yet"
            % (path, (" (%s)" % detail) if detail else ""),
        )


# --- where an error is: its field path and its line ---------------------------

_PATH = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_@]+|\[[^\]]*\])*"
_AT_PATH = re.compile(r" @ (%s)" % (_PATH,))
_LEADING_PATH = re.compile(r"^(%s): " % (_PATH,))


def pathOf(error):
    """
    The field path an error names (C{static_resources.clusters[0].type}),
    or C{None}.
    """
    path = getattr(error, "path", None)
    if path:
        return path
    match = _AT_PATH.search(error.message)
    if match:
        return match.group(1)
    match = _LEADING_PATH.match(error.message)
    if match and ("." in match.group(1) or "[" in match.group(1)):
        return match.group(1)
    return None


class SourceLines:
    """
    Field path -> line, read from the YAML file a config came from, so that
    an error can say where in the file it is.
    """

    def __init__(self, lines):
        self._lines = dict(lines)

    def lineOf(self, path):
        """
        The line of C{path}, or of its nearest parent that the file writes
        (a default or a derived field has no line of its own).
        """
        while path:
            line = self._lines.get(path)
            if line is not None:
                return line
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return None


def describe(error):
    """
    The text for a user: every error on its own line, each with its line
    in the config file where known.
    """
    lines = []
    for e in error.errors:
        if e.line is not None:
            lines.append("%s (line %d)" % (e.message, e.line))
        else:
            lines.append(e.message)
    return "\n".join(lines)


# --- collecting every error of one load ---------------------------------------

class ErrorCollector:
    """
    The errors of one load, in order, without repeats.

    @ivar source: the L{SourceLines} of the config file, once it is read.
    """

    def __init__(self):
        self.errors = []
        self._seen = set()
        self.source = None

    def add(self, error):
        for e in error.errors:
            if e.message in self._seen:
                continue
            self._seen.add(e.message)
            if e.line is None and self.source is not None:
                path = pathOf(e)
                if path:
                    e.line = self.source.lineOf(path)
            self.errors.append(e)

    def raiseErrors(self):
        """Raise what was found: nothing, the one error, or L{ConfigErrors}."""
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise ConfigErrors(self.errors)


_state = threading.local()


def _collectors():
    """
    The collections running in this thread, innermost last: a config is
    compiled on one thread, and another thread's work is not its own.
    """
    try:
        return _state.collectors
    except AttributeError:
        _state.collectors = []
        return _state.collectors


@contextlib.contextmanager
def collectErrors():
    """
    Collect every error reported in the block; at its end raise them all,
    together with one that escaped the block.
    """
    active = _collectors()
    collector = ErrorCollector()
    if active:
        collector.source = active[-1].source
    active.append(collector)
    try:
        yield collector
    except ConfigError as e:
        collector.add(e)
    finally:
        active.remove(collector)
    collector.raiseErrors()


def collecting():
    """Whether a L{collectErrors} block is running."""
    return bool(_collectors())


def setSource(source):
    """Give the L{SourceLines} of the config file to the running collections."""
    for collector in _collectors():
        collector.source = source


def report(error):
    """
    Record C{error} and return, inside L{collectErrors}; raise it outside.
    The caller goes on as if the offending setting were not there.
    """
    active = _collectors()
    if not active:
        raise error
    active[-1].add(error)


@contextlib.contextmanager
def skipOnError():
    """
    Inside L{collectErrors}, record a L{ConfigError} raised in the block and
    go on after it, the item being built left out; outside, let it through.
    """
    try:
        yield
    except ConfigError as e:
        active = _collectors()
        if not active:
            raise
        active[-1].add(e)


#: What L{attempt} returns for an item that failed inside a collection.
FAILED = type("Failed", (), {"__repr__": lambda self: "FAILED", "__bool__": lambda self: False})()


def attempt(build, *args, **kwargs):
    """
    C{build(*args, **kwargs)}; inside L{collectErrors} a L{ConfigError} it
    raises is recorded and L{FAILED} returned, so that the caller leaves
    that one item out and checks the next. Outside, the error propagates.
    """
    try:
        return build(*args, **kwargs)
    except ConfigError as e:
        active = _collectors()
        if not active:
            raise
        active[-1].add(e)
        return FAILED
