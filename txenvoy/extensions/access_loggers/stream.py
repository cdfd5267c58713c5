# -*- test-case-name: tests.accesslog.test_loggers -*-
"""
C{envoy.access_loggers.stdout} and C{envoy.access_loggers.stderr}: the file
access logger writing to the process's standard output or error.
"""

from txenvoy.config.registry import Category, extension
from txenvoy.extensions.access_loggers.file import (
    FileAccessLogger,
    formatterOf,
    writerFor,
)


@extension(Category.ACCESS_LOGGER,
           "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
           "envoy.access_loggers.stdout")
def createStdoutAccessLog(message, context):
    """Build a logger writing to stdout from a C{StdoutAccessLog}."""
    path = context.configPath
    return FileAccessLogger(
        formatterOf(message, path),
        writerFor(context, lambda manager: manager.stdoutWriter(), path),
    )


@extension(Category.ACCESS_LOGGER,
           "envoy.extensions.access_loggers.stream.v3.StderrAccessLog",
           "envoy.access_loggers.stderr")
def createStderrAccessLog(message, context):
    """Build a logger writing to stderr from a C{StderrAccessLog}."""
    path = context.configPath
    return FileAccessLogger(
        formatterOf(message, path),
        writerFor(context, lambda manager: manager.stderrWriter(), path),
    )
