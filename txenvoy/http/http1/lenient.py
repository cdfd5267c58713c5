# -*- test-case-name: tests.http.http1.test_server_codec -*-
"""
The lenient side of the downstream HTTP/1.1 codec: where llhttp and Envoy's
own parser (balsa) part ways, a request head is parsed again line by line
and read as balsa reads it.

llhttp parses the common case fast. When it refuses a head that Envoy
would take (a bare LF or CR, an obs-fold, a request line cut at tabs) or
takes one Envoy refuses, L{LenientParsing} replays the input from the last
message boundary through a L{Forwarder}, feeding llhttp one rewritten head
line at a time; an error found in a head is answered once the head's empty
line has come, as Envoy does. C{bench/differential.py} compares the two on
mutated requests.
"""

import re

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser

from txenvoy.http.http1.codec import CodecError, Details

__all__ = [
    "LenientParsing", "Forwarder", "newParser", "Reparse", "LineError", "ENVOY_METHODS",
    "checkMethod", "headerLine", "urlValid", "headFault",
]

# A line as the rewriting feeder reads a request head: up to and with its LF.
_LINE = re.compile(rb"[^\n]*\n")
# The empty line that ends a head, as Envoy finds it.
_HEAD_END = re.compile(rb"\n\r?\n")
# A request line's method and parts as Envoy (balsa) cuts them: at bytes
# up to SP.
_METHOD = re.compile(rb"[^\x00-\x20]*")
_PART = re.compile(rb"[^\x00-\x20]+")
_BINARY = re.compile(rb"[\x7f-\xff]")
# Request targets as Envoy's first check takes them (see urlValid).
_URL_PATH = re.compile(rb"[\x21-\x7e]*")
_URL_HOST = rb"([A-Za-z0-9!$%&'()*+,\-.:;=@\[\]_~]*)"
_URL_ABSOLUTE = re.compile(rb"[A-Za-z]+://" + _URL_HOST + rb"(?:[/?][\x21-\x7e]*)?")
_URL_CONNECT = re.compile(_URL_HOST + rb"(?:[/?][\x21-\x7e]*)?")
# A Content-Length header line.
_CONTENT_LENGTH_LINE = re.compile(
    rb"(?:^|\n)[Cc][Oo][Nn][Tt][Ee][Nn][Tt]-[Ll][Ee][Nn][Gg][Tt][Hh][ \t]*:")
# A header name.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# The form of a version Envoy reads further.
_VERSION = re.compile(rb"HTTP/[0-9]\.[0-9]")
# Control characters that make Envoy refuse a head (HTAB and CR are read as
# spaces in a request line).
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x0c\x0e-\x1f\x7f]")

# The methods Envoy's HTTP/1 codec (balsa) accepts without
# allow_custom_methods; llhttp knows more (M-SEARCH, QUERY, RTSP's...).
ENVOY_METHODS = frozenset([
    b"ACL", b"BIND", b"CHECKOUT", b"CONNECT", b"COPY", b"DELETE", b"GET", b"HEAD",
    b"LINK", b"LOCK", b"MERGE", b"MKACTIVITY", b"MKCALENDAR", b"MKCOL", b"MOVE",
    b"MSEARCH", b"NOTIFY", b"OPTIONS", b"PATCH", b"POST", b"PROPFIND", b"PROPPATCH",
    b"PURGE", b"PUT", b"REBIND", b"REPORT", b"SEARCH", b"SOURCE", b"SUBSCRIBE", b"TRACE",
    b"UNBIND", b"UNLINK", b"UNLOCK", b"UNSUBSCRIBE"])


class Forwarder:
    """
    Parser callbacks used while the codec re-parses or rewrites input:
    tracks whether the parser is inside a request head, drops every event of
    the first C{skip} messages (handled before a replay) and, with
    C{skipHead}, the head of the next one (the made-up head that gives an
    C{h2c} request's body its framing), and forwards the rest to the codec.
    """

    def __init__(self, codec, skip=0, skipHead=False):
        self.codec = codec
        self.skip = skip
        self.skipHead = skipHead
        self.inHead = False
        # Between messages (a request line is due), and the number of head
        # lines fed since the message began.
        self.idle = not skipHead
        self.lines = 0

    def on_message_begin(self):
        self.inHead = True
        self.idle = False
        self.lines = 0
        if not self.skip and not self.skipHead:
            self.codec.on_message_begin()

    def on_url(self, url):
        if not self.skip and not self.skipHead:
            self.codec.on_url(url)

    def on_header(self, name, value):
        if not self.skip and not self.skipHead:
            self.codec.on_header(name, value)

    def on_headers_complete(self):
        self.inHead = False
        if self.skip:
            return
        if self.skipHead:
            self.skipHead = False
            return
        self.codec.on_headers_complete()

    def on_body(self, data):
        if not self.skip:
            self.codec.on_body(data)

    def on_message_complete(self):
        self.idle = True
        if self.skip:
            self.skip -= 1
        else:
            self.codec.on_message_complete()
def urlValid(url, isConnect):
    """
    Envoy's first check of a request target (its balsa parser's
    C{isUrlValid}, made to match http-parser): a path of visible ASCII, or
    a scheme, C{://}, host characters (no C{@@}) and such a path.
    """
    if url[:1] in b"/*":
        return _URL_PATH.fullmatch(url, 1) is not None
    m = (_URL_CONNECT if isConnect else _URL_ABSOLUTE).fullmatch(url)
    return m is not None and b"@@" not in m.group(1)
def headFault(data):
    """
    Whether the head lines in C{data} (up to the head's end) hold what
    Envoy refuses before it looks at the framing headers: a control
    character, or a header name that is not a token.
    """
    end = _HEAD_END.search(data)
    for line in data[:end.start() if end is not None else len(data)].split(b"\n"):
        line = line.rstrip(b"\r")
        if _CONTROL.search(line) is not None:
            return True
        name, colon, _ = line.partition(b":")
        if colon and _TOKEN.fullmatch(name) is None:
            return True
    return False
class Reparse(Exception):
    """Raised from a parser callback: the head is to be parsed again."""
class LineError(CodecError):
    """A request line Envoy refuses as soon as it reads it, whole head or not."""
def checkMethod(line, partial=False):
    """
    Refuse the request line C{line} if its method is not one of Envoy's;
    with C{partial} (the line has not ended) only if it cannot become one
    (binary bytes, a TLS hello).

    @raise LineError: 400.
    """
    method = _METHOD.match(line).group()
    if partial:
        # Envoy reads printable bytes on until the line ends; a line that
        # starts with other bytes (a TLS hello) it refuses at once.
        if len(method) < len(line) and not method or _BINARY.search(method):
            raise LineError(400, Details.CODEC_ERROR)
    elif method not in ENVOY_METHODS:
        raise LineError(400, Details.CODEC_ERROR)
def headerLine(line):
    """
    A header line (without its line break) with the CRs Envoy drops from
    a header value removed and trailing whitespace trimmed; a CR before the
    colon is left for llhttp to refuse.
    """
    if b"\r" in line:
        colon = line.find(b":")
        if colon < 0 or b"\r" in line[:colon]:
            return line
        line = line[:colon] + line[colon:].replace(b"\r", b"")
    # Envoy trims a value's trailing whitespace (llhttp would take
    # "chunked\t" for another coding).
    return line.rstrip(b" \t")
def newParser(protocol, anyVersion=False):
    """
    A request parser for C{protocol}. Whether a connection stays open is
    the codec's decision (Envoy's rules), not llhttp's. C{anyVersion} lets
    request lines such as HTTP/1.2 parse (Envoy answers them 426, or serves
    them as 1.0); the fast path's parser accepts 0.9, 1.0, 1.1 and 2.0 only
    and hands the others to a replay.
    """
    parser = HttpRequestParser(protocol)
    parser.set_dangerous_leniencies(lenient_version=anyVersion, lenient_keep_alive=True)
    return parser

class LenientParsing:
    """
    The codec's replay and line-by-line feeding (mixed into
    L{txenvoy.http.http1.server_codec.ServerCodec}, whose state it shares):
    a head llhttp refused is parsed again as Envoy's balsa reads it.
    """

    def _replay(self):
        chunks = [self._savedFirst]
        if self._savedMore:
            chunks.extend(self._savedMore)
        self._savedFirst = b""
        self._savedMore = None
        self._forwarder = Forwarder(self, self._completedSinceSaved)
        self._parser = newParser(self._forwarder, anyVersion=True)
        self._carry = b""
        self._lineEnd = b""
        self._inHead = False
        self._idle = True
        for chunk in chunks:
            if self._deferred is not None:
                self._scanDeferred(chunk)
                continue
            if not self._parsing or self._closed:
                break
            if self._upgraded is not None:
                self._upgradeData(chunk)
            else:
                self._feedRewriting(chunk, replaying=True)


    def _feedRewriting(self, data, replaying=False):
        """
        Feed C{data} a head line at a time, rewriting what Envoy (balsa)
        tolerates in a request head and llhttp does not, and refusing what
        Envoy refuses and llhttp would let through (see L{_requestLine}).
        In header lines a CR not followed by LF is dropped (Envoy forwards
        C{ab} for C{a\\rb}), a bare LF gets its CR, and an obs-fold line
        break is removed (C{a\\r\\n} and two spaces before C{b} give C{a}, two spaces and C{b}). Bytes outside heads are
        fed untouched.
        """
        forwarder = self._forwarder
        if (not replaying and not forwarder.inHead and not forwarder.skip
                and forwarder.idle and self._idle and not self._carry):
            # Between messages at a chunk boundary: back to the fast path.
            self._forwarder = None
            self._parser = newParser(self)
            self._feedFast(data)
            return
        if self._carry:
            data = self._carry + data
            self._carry = b""
        parserFeed = self._parser.feed_data
        n = len(data)
        pos = 0
        base = None         # where the raw bytes being fed start in data
        whole = False       # the head's end is being fed
        upgradeAt = error = None
        try:
            while pos < n and self._parsing:
                if not forwarder.inHead and not forwarder.idle:
                    # A body: untouched, up to the end of this line (the
                    # next message may start within it).
                    # If a request starts within the line, the line's end
                    # is its request line's: a bare LF there gets its CR.
                    m = _LINE.match(data, pos)
                    nxt = m.end() if m is not None else n
                    cut = nxt - 1 if m is not None else n
                    if cut > pos and data[cut - 1:cut] == b"\r":
                        cut -= 1
                    base = pos
                    parserFeed(data[pos:cut])
                    if forwarder.inHead and cut < nxt:
                        base = None
                        parserFeed(b"\r\n")
                        forwarder.lines += 1
                    elif cut < nxt:
                        base = cut
                        parserFeed(data[cut:nxt])
                    pos = nxt
                    continue
                m = _LINE.match(data, pos)
                if m is None:
                    # A head line not yet complete waits for its end; a
                    # request line whose method cannot be one is refused
                    # at once, as Envoy does.
                    self._carry = data[pos:]
                    if not forwarder.inHead:
                        checkMethod(self._carry, partial=True)
                    break
                nxt = m.end()
                line = data[pos:nxt - 1]
                if line[-1:] == b"\r":
                    line = line[:-1]
                base = None
                if not forwarder.inHead:
                    # Between messages: empty lines are skipped, as both
                    # parsers do; anything else is a request line.
                    if not line:
                        parserFeed(b"\r\n")
                    else:
                        parserFeed(self._requestLine(line))
                        forwarder.lines = 1
                elif not line:
                    # The empty line that ends the head.
                    lineEnd, self._lineEnd = self._lineEnd, b""
                    whole = True
                    parserFeed(lineEnd + b"\r\n")
                    whole = False
                elif line[:1] in b" \t" and forwarder.lines > 1:
                    # An obs-fold: the previous header line goes on.
                    self._lineEnd = b"\r\n"
                    parserFeed(headerLine(line))
                else:
                    lineEnd, self._lineEnd = self._lineEnd, b"\r\n"
                    parserFeed(lineEnd + headerLine(line))
                    forwarder.lines += 1
                pos = nxt
        except HttpParserUpgrade as e:
            upgradeAt = nxt if base is None else base + e.args[0]
        except HttpParserError as e:
            error = e
        except LineError as e:
            self._protocolError(e)
            return
        except CodecError as e:
            self._headError(e, data[pos:])
            return
        else:
            if forwarder.inHead or forwarder.idle:
                size = len(self._carry) + (self._headSize if forwarder.inHead else 0)
                if size > self._maxHeadBytes:
                    self._protocolError(CodecError(431, Details.HEADERS_TOO_LARGE))
            return
        if error is not None:
            self._onParserError(error, b"\n\n" if whole else data[pos:])
        else:
            self._onParserUpgrade(data, upgradeAt)


    def _requestLine(self, line):
        """
        A request line as Envoy's balsa reads it: its parts are cut at runs
        of bytes up to SP (HTAB and CR included, so tabs separate and
        trailing whitespace goes). The method, the version's form and the
        number of parts are judged at once, as Envoy judges them when the
        line ends: an unknown method, a version not C{HTTP/d.d}, one part or
        more than three are 400; two parts are an HTTP/0.9 request (426,
        but see below). Other control characters in the line are judged
        with the rest of the head, once it is whole (400).

        @param line: the line without its line break.
        @return: the line to feed the parser, with CRLF.
        @raise LineError: for what is refused at once.
        @raise CodecError: for what is refused once the head is whole.
        """
        checkMethod(line)
        parts = _PART.findall(line)
        if len(parts) == 1 or (len(parts) >= 3 and (
                len(parts) > 3 or _VERSION.fullmatch(parts[2]) is None)):
            raise LineError(400, Details.CODEC_ERROR)
        if not urlValid(parts[1], parts[0] == b"CONNECT"):
            raise LineError(400, Details.CODEC_ERROR)
        if len(parts) == 2:
            if parts[1].endswith(b"HTTP/1.1"):
                # Envoy: a line of two parts ends the request there (HTTP/0.9,
                # no headers), and one that ends in HTTP/1.1 is taken for an
                # HTTP/1.1 request (its isHttp11 reads the line's end).
                return b"%s %s HTTP/1.1\r\n\r\n" % (parts[0], parts[1])
            if not self._acceptHttp10:
                raise LineError(426, Details.LOW_VERSION)
        if _CONTROL.search(line) is not None:
            raise CodecError(400, Details.CODEC_ERROR)
        return b" ".join(parts) + b"\r\n"


    def _beforeTransferEncoding(self, error, data):
        """
        @return: C{error}, or for a 501 (Transfer-Encoding) what Envoy finds
            first in the head C{data}: bad characters in any header line
            (400), or a Content-Length with the Transfer-Encoding (400).
        """
        if error.status == 501:
            if headFault(data):
                return CodecError(400, Details.CODEC_ERROR)
            if self._contentLength is not None or _CONTENT_LENGTH_LINE.search(data):
                return CodecError(400, Details.CONTENT_LENGTH_AND_CHUNKED)
        return error


    def _headError(self, error, data):
        """
        Answer C{error}, found in a request head, once the head is whole:
        at once if C{data} (the input from the error on) holds the empty
        line that ends it, else when it comes. Until then what is read is
        only scanned for it (and counted against the head size limit).
        """
        if _HEAD_END.search(data) is not None:
            self._protocolError(error)
            return
        if len(data) > self._maxHeadBytes:
            self._protocolError(CodecError(431, Details.HEADERS_TOO_LARGE))
            return
        self._deferred = error
        self._deferredBytes = len(data)
        self._deferredTail = data[-2:]
        self._deferredHead = [data] if error.status == 501 else None
        self._parsing = False
        self._parser = None
        self._forwarder = None
        self._inHead = False
        self._upgraded = None


    def _scanDeferred(self, data):
        text = self._deferredTail + data
        if self._deferredHead is not None:
            self._deferredHead.append(data)
        if _HEAD_END.search(text) is not None:
            error, self._deferred = self._deferred, None
            if self._deferredHead is not None:
                error = self._beforeTransferEncoding(error, b"".join(self._deferredHead))
            self._protocolError(error)
            return
        self._deferredBytes += len(data)
        self._deferredTail = text[-2:]
        if self._deferredBytes > self._maxHeadBytes:
            self._deferred = None
            self._protocolError(CodecError(431, Details.HEADERS_TOO_LARGE))
