# -*- test-case-name: tests.accesslog.test_loggers -*-
"""
C{envoy.access_loggers.file}: one formatted line per finished connection or
request, appended to a file through the server's
L{txenvoy.accesslog.manager.AccessLogManager}.

The stdout and stderr loggers (L{txenvoy.extensions.access_loggers.stream})
are this same logger on another writer, as in Envoy.
"""

from zope.interface import implementer

from txenvoy.accesslog.manager import DISCARD, checkWritable
from txenvoy.config.errors import ConfigError
from txenvoy.config.registry import Category, extension
from txenvoy.formatter import substitution as _formatter
from txenvoy.interfaces import IAccessLogger


@implementer(IAccessLogger)
class FileAccessLogger:
    """
    Formats a line and hands it to a writer; the writer never blocks.

    @ivar formatter: a L{txenvoy.formatter.substitution.Formatter} or
        L{txenvoy.formatter.substitution.JsonFormatter}.
    @ivar writer: a L{txenvoy.accesslog.manager.LogWriter}.
    """

    def __init__(self, formatter, writer):
        self.formatter = formatter
        self.writer = writer

    def log(self, streamInfo, requestHeaders=None, responseHeaders=None,
            responseTrailers=None):
        """Format one line and queue it; see L{IAccessLogger.log}."""
        self.writer.write(self.formatter.format(
            streamInfo, requestHeaders, responseHeaders, responseTrailers))


def formatterOf(message, path):
    """
    The formatter of an access logger message: its C{log_format}, or
    Envoy's default line when it has none.
    """
    if message.HasField("log_format"):
        return _formatter.formatterFromProto(message.log_format, path + ".log_format")
    return _formatter.defaultFormatter()


def _fileFormatter(message, path):
    which = message.WhichOneof("access_log_format")
    if which == "log_format":
        return _formatter.formatterFromProto(message.log_format, path + ".log_format")
    if which == "format":
        # Deprecated "format": an empty string means the default line.
        if not message.format:
            return _formatter.defaultFormatter()
        return _formatter.compileFormat(message.format, path=path + ".format")
    if which == "json_format":
        return _formatter.compileJsonFormat(message.json_format, path=path + ".json_format")
    if which == "typed_json_format":
        return _formatter.compileJsonFormat(
            message.typed_json_format, path=path + ".typed_json_format")
    return _formatter.defaultFormatter()


def writerFor(context, opener, path):
    """
    The writer a logger should use: C{opener(manager)} normally, nothing in
    C{--mode validate}.
    """
    if context.validateOnly:
        return DISCARD
    manager = context.accessLogManager
    if manager is None:
        raise RuntimeError(
            "%s: the factory context has no accessLogManager to write to" % (path,))
    return opener(manager)


@extension(Category.ACCESS_LOGGER,
           "envoy.extensions.access_loggers.file.v3.FileAccessLog",
           "envoy.access_loggers.file",
           fields=("path", "format", "json_format", "typed_json_format", "log_format"))
def createFileAccessLog(message, context):
    """Build a L{FileAccessLogger} from a C{FileAccessLog}."""
    path = context.configPath
    if not message.path:
        raise ConfigError("%s.path: value length must be at least 1 characters" % (path,))
    formatter = _fileFormatter(message, path)
    if context.validateOnly:
        try:
            checkWritable(message.path)
        except ConfigError as e:
            raise ConfigError("%s.path: %s" % (path, e.message))

    def open_(manager):
        try:
            return manager.fileWriter(message.path)
        except ConfigError as e:
            raise ConfigError("%s.path: %s" % (path, e.message))

    return FileAccessLogger(formatter, writerFor(context, open_, path))
