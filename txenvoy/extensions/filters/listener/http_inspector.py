# -*- test-case-name: tests.extensions.filters.listener.test_http_inspector -*-
"""
C{envoy.filters.listener.http_inspector}: on a plaintext connection, peeks
at the first request line and tells filter chain matching whether it is
HTTP/1.0 (C{http/1.0}), HTTP/1.1 (C{http/1.1}) or the HTTP/2 prior
knowledge preface (C{h2c}). It never consumes a byte.

What counts as a request line follows Envoy 1.40, observed on the real
binary: any method token (C{get}, C{FOO}), spaces or tabs between the
parts, a target that is a path, C{*}, an absolute URI or (for C{CONNECT})
an authority, then C{HTTP/x.y} with one digit each side (C{1.1} is
HTTP/1.1; any other version, and a version-less C{GET /}, count as
HTTP/1.0), the line ending at LF.
"""

import re

from zope.interface import implementer

from txenvoy.config.registry import Category, extension
from txenvoy.interfaces import IListenerFilter, IListenerFilterFactory
from txenvoy.stats.per_worker import PerWorker

HTTP2_CONNECTION_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

#: How many bytes the inspector may look at (Envoy's listener filter buffer).
MAX_INSPECT_SIZE = 64 * 1024

_TCHAR = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
_REQUEST_LINE = re.compile(
    rb"([" + _TCHAR + rb"]+)[ \t]+([\x21-\x7e]+)"
    rb"(?:[ \t]+HTTP/([0-9])\.([0-9])[ \t\r\x00]*|[ \t\r]*)\Z")
# The request target forms Envoy accepted: origin (/path), asterisk, absolute
# (scheme://...), and authority (host:port) for CONNECT only.
_ABSOLUTE_TARGET = re.compile(rb"[A-Za-z][A-Za-z0-9+.\-]*://")
_METHOD_CHARS = re.compile(rb"[" + _TCHAR + rb"]*")
_LINE_CHARS = re.compile(rb"[\x21-\x7e \t\r]*\Z")


class Protocol:
    """What L{classify} decided."""

    HTTP10 = "http/1.0"
    HTTP11 = "http/1.1"
    H2C = "h2c"
    #: Not HTTP.
    NONE = None
    #: Not enough bytes yet.
    MORE = "more"


def _startsLikePreface(data):
    n = min(len(data), len(HTTP2_CONNECTION_PREFACE))
    return data[:n] == HTTP2_CONNECTION_PREFACE[:n]


class _PartialLine:
    """
    Checks a first line that has not ended yet, a chunk at a time, so a
    line trickling in costs linear time: a method token, then only
    printable characters, spaces and tabs.
    """

    def __init__(self):
        self.inMethod = True

    def ok(self, chunk):
        if self.inMethod:
            end = _METHOD_CHARS.match(chunk).end()
            if end == len(chunk):
                return True
            if chunk[end:end + 1] not in (b" ", b"\t"):
                return False
            self.inMethod = False
            chunk = chunk[end:]
        return _LINE_CHARS.match(chunk) is not None


def classify(data, partial=None, scanned=0):
    """
    Classify the first bytes of a plaintext connection.

    @param data: every byte read so far.
    @param partial: the L{_PartialLine} state of earlier calls, if any.
    @param scanned: how many bytes of C{data} earlier calls already saw.
    @return: a L{Protocol} value.
    """
    if _startsLikePreface(data):
        return Protocol.H2C if len(data) >= len(HTTP2_CONNECTION_PREFACE) else Protocol.MORE
    if data[:1] in (b"\r", b"\n"):
        return Protocol.NONE
    end = data.find(b"\n", scanned)
    if end < 0:
        if partial is None:
            partial, scanned = _PartialLine(), 0
        return Protocol.MORE if partial.ok(data[scanned:]) else Protocol.NONE
    line = data[:end]
    if line.endswith(b"\r"):
        line = line[:-1]
    m = _REQUEST_LINE.match(line)
    if m is None:
        return Protocol.NONE
    method, target = m.group(1), m.group(2)
    if not (target[:1] == b"/" or target == b"*" or _ABSOLUTE_TARGET.match(target)
            or method == b"CONNECT"):
        return Protocol.NONE
    if m.group(3) == b"1" and m.group(4) == b"1":
        return Protocol.HTTP11
    return Protocol.HTTP10


class HttpInspectorStats:
    """The C{http_inspector.*} stats of one worker."""

    COUNTERS = ("http10_found", "http11_found", "http2_found", "http_not_found", "read_error")

    def __init__(self, shard):
        scope = shard.scope("http_inspector.")
        for name in self.COUNTERS:
            setattr(self, name, scope.counter(name))


@implementer(IListenerFilter)
class HttpInspector:
    """
    The HTTP inspector for one accepted socket (Envoy's
    C{HttpInspector::Filter}).
    """

    maxReadBytes = MAX_INSPECT_SIZE

    def __init__(self, config, connection):
        self._stats = config.statsFor(connection.dispatcher)
        self._callbacks = None
        self._partial = _PartialLine()
        self._scanned = 0

    def onAccept(self, callbacks):
        # A TLS connection (found by tls_inspector) cannot be read here.
        transport = callbacks.transportProtocol
        if transport and transport != "raw_buffer":
            return True
        self._callbacks = callbacks
        return False

    def onData(self, data):
        data = data[:MAX_INSPECT_SIZE]
        found = classify(data, self._partial, self._scanned)
        if found == Protocol.MORE:
            if not _startsLikePreface(data):
                self._scanned = len(data)
            # Envoy keeps waiting, past its buffer size too, until the
            # listener filters time out.
            return False
        stats = self._stats
        if found is Protocol.NONE:
            stats.http_not_found.inc()
            return True
        if found == Protocol.HTTP11:
            stats.http11_found.inc()
        elif found == Protocol.HTTP10:
            stats.http10_found.inc()
        else:
            stats.http2_found.inc()
        self._callbacks.setRequestedApplicationProtocols([found])
        return True


@implementer(IListenerFilterFactory)
class HttpInspectorConfig:
    """A compiled C{HttpInspector} (it has no fields)."""

    def __init__(self):
        self.statsFor = PerWorker(lambda d: HttpInspectorStats(d.stats)).get

    def buildListenerFilter(self, connection):
        return HttpInspector(self, connection)


@extension(Category.LISTENER_FILTER,
           "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector",
           "envoy.filters.listener.http_inspector")
def createHttpInspector(message, context):
    """Build a L{HttpInspectorConfig}."""
    return HttpInspectorConfig()
