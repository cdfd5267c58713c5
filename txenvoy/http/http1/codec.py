# -*- test-case-name: tests.http.http1.test_server_codec -*-
"""
What the HTTP/1.1 codecs share (Envoy's C{Http1::ConnectionImpl}), on llhttp
through httptools.

Downstream, L{txenvoy.http.http1.server_codec.ServerCodec} turns a
connection's bytes into requests for the HTTP connection manager and writes
its responses; upstream, L{txenvoy.http.http1.client_codec.ClientCodec}
writes requests and parses responses. Both derive from L{Http1Connection}
here, which also holds the codec's error type, Envoy's response code
details, local replies, chunk framing and the C{date} cache. This module
imports neither codec.
"""

import time
from email.utils import formatdate

from txenvoy.http.status import reasonPhrase, statusLine

__all__ = [
    "CodecError", "Details", "DateCache", "NON_PROTOCOL_ERROR_DETAILS",
    "localReply", "joinTransferEncoding", "parserError", "StopParsing", "Http1Connection",
    "PLAIN_NAMES", "PLAIN_NAMES_MAX", "PLAIN_NAME_MAX_LENGTH", "LAST_CHUNK",
]


class CodecError(Exception):
    """
    A message the codec refuses, with the reply it gets.

    @ivar status: the HTTP status of the local reply (400, 426, 431, 501),
        or C{None} upstream.
    @ivar details: Envoy's response code details (C{http1.codec_error}...).
    @ivar emptyBody: the reply has no body and Envoy's connection manager
        layout (C{date, server, connection, content-length: 0}) rather than
        the codec's C{text/plain} body.
    @ivar http10: the reply answers an accepted HTTP/1.0 request.
    @ivar request: the L{RequestHeaders} refused, when the request was read
        far enough for Envoy's connection manager to see it (its access log
        shows the method, path and headers), else C{None}.
    """

    def __init__(self, status, details, emptyBody=False, http10=False, request=None):
        Exception.__init__(self, status, details)
        self.status = status
        self.details = details
        self.emptyBody = emptyBody
        self.http10 = http10
        self.request = request


class Details:
    """Envoy's response code details for what the codec rejects."""

    CODEC_ERROR = "http1.codec_error"
    TOO_MANY_HEADERS = "http1.too_many_headers"
    HEADERS_TOO_LARGE = "http1.headers_too_large"
    INVALID_CHARACTERS = "http1.invalid_characters"
    CONNECTION_HEADER_REJECTED = "http1.connection_header_rejected"
    INVALID_URL = "http1.invalid_url"
    INVALID_SCHEME = "http1.invalid_scheme"
    INVALID_TRANSFER_ENCODING = "http1.invalid_transfer_encoding"
    BODY_DISALLOWED = "http1.body_disallowed"
    UNEXPECTED_UNDERSCORE = "http1.unexpected_underscore"
    CONTENT_LENGTH_AND_CHUNKED = "http1.content_length_and_chunked_not_allowed"
    LOW_VERSION = "low_version"
    INVALID_AUTHORITY = "http.invalid_authority"
    MISSING_HOST = "missing_host_header"
    PATH_NORMALIZATION_FAILED = "path_normalization_failed"


#: Details of replies that Envoy's connection manager (not its codec) sends,
#: for a request that parsed: not protocol errors (no C{DPE} flag, no
#: C{downstream_cx_protocol_error}).
NON_PROTOCOL_ERROR_DETAILS = frozenset(
    [Details.MISSING_HOST, Details.PATH_NORMALIZATION_FAILED])


class DateCache:
    """
    The C{date} header value, formatted at most once per second.

    @param clock: an C{IReactorTime} (its C{seconds()} is read); C{None}
        reads the wall clock.
    """

    __slots__ = ("_seconds", "_second", "_value")

    def __init__(self, clock=None):
        self._seconds = time.time if clock is None else clock.seconds
        self._second = None
        self._value = b""

    def value(self):
        """@return: the current IMF-fixdate, e.g. C{b"Wed, 25 Nov 2026 22:21:36 GMT"}."""
        now = int(self._seconds())
        if now != self._second:
            self._second = now
            self._value = formatdate(now, usegmt=True).encode("ascii")
        return self._value


_wallClockDateCache = None


def sharedDateCache(clock=None):
    """
    The one L{DateCache} of C{clock} (a worker's reactor): every connection
    of a worker reads the same, instead of building and filling its own.
    It is kept on the clock itself, so it lives exactly as long (a clock
    that takes no attribute gets a cache of its own each time).
    """
    global _wallClockDateCache
    if clock is None:
        if _wallClockDateCache is None:
            _wallClockDateCache = DateCache()
        return _wallClockDateCache
    cache = getattr(clock, "_txenvoyDateCache", None)
    if cache is None:
        cache = DateCache(clock)
        try:
            clock._txenvoyDateCache = cache
        except AttributeError:
            pass
    return cache


def localReply(status, date, serverName, emptyBody=False, http10=False):
    """
    Serialise the reply the codec sends for a request it refuses before
    closing the connection, in Envoy's header order.

    @param status: the HTTP status (int).
    @param date: the C{date} value (bytes).
    @param serverName: the C{server} value (bytes).
    @param emptyBody: use the connection manager's layout with no body
        (missing C{Host}, fragment in the path) instead of the codec's
        C{text/plain} reason phrase.
    @param http10: write an C{HTTP/1.0} status line.
    @return: the whole response (bytes).
    """
    line = statusLine(status, http10)
    if emptyBody:
        return (b"%sdate: %s\r\nserver: %s\r\nconnection: close\r\n"
                b"content-length: 0\r\n\r\n" % (line, date, serverName))
    body = reasonPhrase(status).encode("ascii")
    return (
        b"%scontent-length: %d\r\ncontent-type: text/plain\r\ndate: %s\r\n"
        b"server: %s\r\nconnection: close\r\n\r\n%s" % (
            line, len(body), date, serverName, body)
    )


def joinTransferEncoding(existing, value):
    """
    Add one C{Transfer-Encoding} header's value to the values seen before
    it, so that the codecs judge the header's values as one list, as RFC
    9112 and Envoy do: C{x} then C{chunked} is C{x,chunked} (refused), not
    the last value. Envoy's header map adds no comma after an empty value;
    an empty value after another one leaves a trailing comma, refused (where
    Envoy frames such a request by no length at all).

    @param existing: the joined values so far, or C{None}.
    @param value: this header's value (stripped).
    @return: the joined value.
    """
    if not existing:
        return value
    return existing + b"," + value


# How llhttp's own error reasons map onto Envoy's answers; anything else is
# a 400 with http1.codec_error.
_PARSER_ERRORS = [
    ("can't be present with", 400, Details.CONTENT_LENGTH_AND_CHUNKED),
    ("Invalid HTTP version", 426, Details.LOW_VERSION),
    ("Transfer-Encoding", 501, Details.INVALID_TRANSFER_ENCODING),
    ("Invalid header value char", 400, Details.INVALID_CHARACTERS),
]


def parserError(reason):
    """
    @param reason: the text of an httptools C{HttpParserError}.
    @return: the L{CodecError} Envoy answers that input with.
    """
    for fragment, status, details in _PARSER_ERRORS:
        if fragment in reason:
            return CodecError(status, details)
    return CodecError(400, Details.CODEC_ERROR)


class StopParsing(Exception):
    """Raised from a parser callback to abandon the rest of the input."""


# Raw header name -> lower-cased name, for names the codecs give no meaning
# to; filled as names are seen, bounded so junk names cannot grow it. Names
# with an underscore never enter it, so a hit needs no policy check.
PLAIN_NAMES = {}
PLAIN_NAMES_MAX = 4096
#: Longer names are lower-cased each time rather than kept: the cache is
#: bounded in bytes too (at most 4096 x 64), whatever names clients send.
PLAIN_NAME_MAX_LENGTH = 64
for _n in (
    b"accept", b"accept-encoding", b"accept-language", b"user-agent",
    b"cookie", b"content-type", b"authorization", b"cache-control",
    b"referer", b"origin", b"x-forwarded-for", b"x-forwarded-proto",
    b"x-request-id", b"pragma", b"if-none-match", b"if-modified-since",
    b"range", b"dnt", b"x-requested-with", b"date", b"server",
    b"etag", b"last-modified", b"vary", b"location", b"set-cookie",
    b"content-encoding", b"expires", b"age", b"accept-ranges",
):
    for _v in (_n, _n.title(), _n.upper()):
        PLAIN_NAMES[_v] = _n
del _n, _v


#: The last chunk of a chunked body with no trailers.
LAST_CHUNK = b"0\r\n\r\n"


class Http1Connection:
    """
    The base of both HTTP/1.1 codecs (Envoy's C{Http1::ConnectionImpl}):
    the connection's transport and callbacks, the limits on a head, the
    trailers switch, and the body framing both directions write alike.

    @param callbacks: the codec's owner (see each codec).
    @param transport: the connection's transport (C{write}, ...).
    @param maxHeadersKb: limit on a head, in KiB.
    @param maxHeadersCount: limit on the number of headers.
    @param enableTrailers: write trailers and pass them on (Envoy's
        C{enable_trailers}); by default both are dropped.
    """

    def __init__(self, callbacks, transport, maxHeadersKb, maxHeadersCount, enableTrailers):
        self._callbacks = callbacks
        self._transport = transport
        self._maxHeadBytes = maxHeadersKb * 1024
        self._maxHeadersCount = maxHeadersCount
        self._enableTrailers = enableTrailers

    @property
    def trailersEnabled(self):
        """Whether trailers are written and passed on."""
        return self._enableTrailers

    @staticmethod
    def chunk(data, endStream):
        """
        @return: C{data} as one chunk of a chunked body, followed by the
            last chunk when C{endStream}.
        """
        if endStream:
            return b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)
        return b"%x\r\n%s\r\n" % (len(data), data)

    @staticmethod
    def chunkPieces(data, endStream):
        """
        @return: what L{chunk} returns, as three pieces with C{data} itself
            in the middle: a large chunk is written between its framing
            (C{writeSequence}), not copied into one string with it.
        """
        return (b"%x\r\n" % (len(data),), data, b"\r\n0\r\n\r\n" if endStream else b"\r\n")

    def lastChunk(self, trailers):
        """
        @param trailers: a L{HeaderMap}, or C{None}.
        @return: the end of a chunked body: the last chunk with the
            trailers when they are enabled and there are some.
        """
        if trailers is not None and self._enableTrailers and len(trailers):
            return b"0\r\n" + b"".join(
                [name + b": " + value + b"\r\n" for name, value in trailers.items()]) + b"\r\n"
        return LAST_CHUNK
