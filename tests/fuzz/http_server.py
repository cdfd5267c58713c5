"""
Fuzz target: the downstream HTTP/1.1 codec (L{txenvoy.http.http1.server_codec}).

The input's first bytes choose the codec's settings, how the answering
side responds and where the bytes are cut into reads; the rest is what a
client sends. The bytes go through L{ServerCodec.dataReceived} on a
C{StringTransport}, then the connection is lost.

Accepted: every request reaches a decoder and is answered. A proper
rejection is C{onCodecError(status, details)}, once, with one of the
codec's statuses (400, 426, 431, 501) and a details string, after which the
connection is closing. Anything else is a crash: an exception out of the
codec (only the decoders' own exceptions may leave it, and these raise
none), a second codec error, a reply written after the codec error, or
output that is not a sequence of well-formed responses.
"""

import httptools
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from tests.fuzz.support import FuzzInput, check
from tests.http.http1.test_codec_fuzz import ResponseCounter
from txenvoy.http.http1.server_codec import ServerCodec
from txenvoy.http.headers import HeaderMap, ResponseHeaders

_STATUSES = (400, 426, 431, 501)
_UNDERSCORES = ("ALLOW", "REJECT_REQUEST", "DROP_HEADER", "ALLOW")

# How the answering side responds to one request.
(_WHOLE, _CHUNKED, _EARLY, _CONTINUE, _RESET, _UPGRADE) = range(6)


class _Decoder:
    """Answers one request in the way chosen for it."""

    def __init__(self, owner, encoder, mode):
        self.owner = owner
        self.encoder = encoder
        self.mode = mode
        self.headers = None

    def decodeHeaders(self, headers, endStream):
        check(headers.version in ("HTTP/1.1", "HTTP/1.0"), "version %r", headers.version)
        check((isinstance(headers.path, bytes) and headers.path)
              or (headers.path is None and headers.method == b"CONNECT"),
              "path %r of %r", headers.path, headers.method)
        self.headers = headers
        mode = self.mode
        if mode == _RESET:
            self.encoder.resetStream()
            return
        if mode == _EARLY:
            self.respond()
            return
        if mode == _CONTINUE and headers.headers.get(b"expect") == b"100-continue":
            self.encoder.encode100ContinueHeaders()
        upgrade = headers.upgrade
        if mode == _UPGRADE and upgrade is not None and upgrade != b"connect":
            # As the connection manager does after a 101 from upstream.
            self.encoder.encodeHeaders(ResponseHeaders(101, HeaderMap(
                [(b"upgrade", upgrade), (b"connection", b"upgrade")])), False)
            self.owner.upgraded = True
            self.owner.codec.switchToRaw(self.owner.raw.append)
            return
        if endStream:
            self.respond()

    def decodeData(self, data, endStream):
        check(isinstance(data, bytes), "data %r", data)
        if endStream:
            self.respond()

    def decodeTrailers(self, trailers):
        self.respond()

    def respond(self):
        encoder = self.encoder
        if encoder.responseStarted or encoder.responseComplete:
            return
        if self.headers.method == b"HEAD":
            encoder.encodeHeaders(ResponseHeaders(204), True)
        elif self.mode == _CHUNKED:
            if self.headers.version == "HTTP/1.0":
                # Close-delimited: the parse of the output stops there.
                self.owner.openEnded = True
            encoder.encodeHeaders(ResponseHeaders(200), False)
            encoder.encodeData(b"ok", False)
            encoder.encodeTrailers(HeaderMap([(b"x-t", b"1")]))
        else:
            encoder.encodeHeaders(
                ResponseHeaders(200, HeaderMap([(b"content-length", b"2")])), False)
            encoder.encodeData(b"ok", True)


class _Callbacks:
    """The connection manager's side of the codec."""

    def __init__(self, modes):
        self.modes = modes
        self.streams = 0
        self.errors = []
        self.upgraded = False
        self.openEnded = False
        self.raw = []
        self.codec = None
        self.dropped = 0

    def newStream(self, encoder):
        check(not self.errors, "newStream after the codec error %r", self.errors)
        mode = self.modes[self.streams % len(self.modes)]
        self.streams += 1
        return _Decoder(self, encoder, mode)

    def onCodecError(self, status, details):
        check(not self.errors, "a second codec error %r after %r",
              (status, details), self.errors)
        check(status in _STATUSES, "codec error status %r", status)
        check(isinstance(details, str) and details, "codec error details %r", details)
        self.errors.append((status, details))

    def onDroppedHeaderWithUnderscores(self, name):
        self.dropped += 1


def _checkOutput(out, callbacks, transport):
    counter = ResponseCounter()
    parser = httptools.HttpResponseParser(counter)
    upgraded = False
    try:
        parser.feed_data(out)
    except httptools.HttpParserUpgrade:
        upgraded = True
    except httptools.HttpParserError as e:
        check(False, "malformed output (%s): %r", e, out[-300:])
    check(not upgraded or callbacks.upgraded, "a 101 nobody asked for: %r", out[-300:])
    if not upgraded:
        open = counter.begun - counter.complete
        check(open == 0 or (open == 1 and callbacks.openEnded),
              "%d responses begun, %d complete: %r", counter.begun, counter.complete,
              out[-300:])
    if callbacks.errors:
        check(transport.disconnecting, "still open after the codec error %r",
              callbacks.errors)


def testOneInput(data):
    """Feed C{data} to a server codec; raise for anything but a proper outcome."""
    inp = FuzzInput(data)
    flags = inp.byte()
    modes = [inp.byte() % 6 for _ in range(1 + inp.byte() % 4)]
    small = bool(flags & 0x10)
    callbacks = _Callbacks(modes)
    transport = StringTransport()
    codec = ServerCodec(
        callbacks, transport, clock=Clock(),
        acceptHttp10=bool(flags & 1),
        defaultHostForHttp10=b"default.test" if flags & 0x20 else None,
        headersWithUnderscoresAction=_UNDERSCORES[(flags >> 1) & 3],
        enableTrailers=bool(flags & 8),
        maxRequestHeadersKb=1 if small else 60,
        maxHeadersCount=5 if small else 100)
    callbacks.codec = codec
    for piece in inp.pieces():
        codec.dataReceived(piece)
    codec.connectionLost(None)
    _checkOutput(transport.value(), callbacks, transport)
