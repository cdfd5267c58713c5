# -*- test-case-name: tests.extensions.filters.listener.test_tls_inspector -*-
"""
A small TLS ClientHello reader: is this connection TLS, and what server
name (SNI) and application protocols (ALPN) does the client ask for?

It reads what Envoy's C{tls_inspector} makes BoringSSL read: TLS records
of type handshake, reassembled into the first handshake message, which must
be a well-formed ClientHello. It never decrypts or answers anything.

The parser is incremental: it is handed the whole buffer read so far each
time (a listener filter peeks, so the buffer only grows) and resumes where
it stopped, so a ClientHello sent a byte at a time costs linear time.
"""

import struct

import attr

#: Envoy's default and largest C{max_client_hello_size}: a ClientHello not
#: complete within this many bytes is C{client_hello_too_large}.
TLS_MAX_CLIENT_HELLO = 16384

_RECORD_HEADER = 5
_MAX_RECORD_PAYLOAD = 16384
_CONTENT_HANDSHAKE = 22
_HANDSHAKE_CLIENT_HELLO = 1
_MAX_HOST_NAME = 255

EXT_SERVER_NAME = 0
EXT_SUPPORTED_GROUPS = 10
EXT_EC_POINT_FORMATS = 11
EXT_SIGNATURE_ALGORITHMS = 13
EXT_ALPN = 16
EXT_SUPPORTED_VERSIONS = 43

TLS1_0, TLS1_1, TLS1_2, TLS1_3 = 0x0301, 0x0302, 0x0303, 0x0304
_KNOWN_VERSIONS = frozenset((TLS1_0, TLS1_1, TLS1_2, TLS1_3))


class ParseState:
    """Where a L{ClientHelloParser} stands."""

    #: Not enough bytes yet to decide.
    NEED_MORE = "need_more"
    #: A complete, well-formed ClientHello.
    TLS = "tls"
    #: The bytes are not (valid) TLS.
    NOT_TLS = "not_tls"
    #: No complete ClientHello within the size limit.
    TOO_LARGE = "too_large"


def isGrease(value):
    """
    Whether a 16-bit value is a GREASE placeholder (RFC 8701): C{0x?a?a}
    with both bytes equal.
    """
    return (value & 0x0F0F) == 0x0A0A and (value >> 8) == (value & 0xFF)


@attr.s(frozen=True, slots=True)
class ClientHello:
    """
    What a ClientHello says, in wire order.

    @ivar serverName: the SNI host name as sent, or C{""}.
    @ivar alpnProtocols: offered ALPN protocol names (C{str}); empty when
        the extension is absent or malformed.
    @ivar legacyVersion: the C{legacy_version} field (C{0x0303} for TLS 1.2+).
    @ivar supportedVersions: the C{supported_versions} extension values.
    @ivar cipherSuites: cipher suite code points.
    @ivar extensionTypes: extension types in order.
    @ivar supportedGroups: named groups offered.
    @ivar ecPointFormats: EC point formats offered.
    @ivar signatureAlgorithms: signature schemes offered.
    """

    serverName = attr.ib(default="")
    alpnProtocols = attr.ib(default=())
    legacyVersion = attr.ib(default=TLS1_2)
    supportedVersions = attr.ib(default=())
    cipherSuites = attr.ib(default=())
    extensionTypes = attr.ib(default=())
    supportedGroups = attr.ib(default=())
    ecPointFormats = attr.ib(default=())
    signatureAlgorithms = attr.ib(default=())

    @property
    def maximumVersion(self):
        """The highest TLS version the client offers (a wire code point)."""
        offered = [v for v in self.supportedVersions if not isGrease(v)]
        return max(offered) if offered else self.legacyVersion


class _Malformed(Exception):
    """The ClientHello body does not decode."""


class _Reader:
    """A cursor over bytes; every read past the end is L{_Malformed}."""

    __slots__ = ("data", "pos", "end")

    def __init__(self, data, pos=0, end=None):
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def remaining(self):
        return self.end - self.pos

    def take(self, n):
        if n > self.end - self.pos:
            raise _Malformed()
        start = self.pos
        self.pos += n
        return self.data[start:self.pos]

    def u8(self):
        if self.pos >= self.end:
            raise _Malformed()
        self.pos += 1
        return self.data[self.pos - 1]

    def u16(self):
        return struct.unpack("!H", self.take(2))[0]

    def sub(self, lengthBytes):
        n = self.u8() if lengthBytes == 1 else self.u16()
        if n > self.end - self.pos:
            raise _Malformed()
        r = _Reader(self.data, self.pos, self.pos + n)
        self.pos += n
        return r


def _u16List(r):
    if r.remaining() % 2:
        raise _Malformed()
    return tuple(r.u16() for _ in range(r.remaining() // 2))


def _parseServerName(body):
    # BoringSSL accepts exactly one non-empty host_name without NUL bytes.
    r = _Reader(body)
    names = r.sub(2)
    if r.remaining():
        raise _Malformed()
    if names.u8() != 0:
        raise _Malformed()
    name = names.sub(2)
    if names.remaining():
        raise _Malformed()
    value = name.take(name.remaining())
    if not value or len(value) > _MAX_HOST_NAME or b"\x00" in value:
        raise _Malformed()
    return value.decode("latin-1")


def _parseAlpn(body):
    # A malformed ALPN list is left for the real TLS stack to reject, as
    # Envoy's inspector does: it is simply not reported.
    try:
        r = _Reader(body)
        names = r.sub(2)
        if r.remaining() or names.remaining() < 2:
            return ()
        out = []
        while names.remaining():
            name = names.sub(1)
            if not name.remaining():
                return ()
            out.append(name.take(name.remaining()).decode("latin-1"))
        return tuple(out)
    except _Malformed:
        return ()


def parseClientHelloBody(body):
    """
    Decode a ClientHello handshake message body (without its 4-byte
    handshake header).

    @return: a L{ClientHello}, or C{None} if the body is malformed.
    """
    try:
        return _parseBody(body)
    except _Malformed:
        return None


def _parseBody(body):
    r = _Reader(body)
    legacyVersion = r.u16()
    r.take(32)
    sessionId = r.sub(1)
    if sessionId.remaining() > 32:
        raise _Malformed()
    suites = r.sub(2)
    if suites.remaining() < 2:
        raise _Malformed()
    cipherSuites = _u16List(suites)
    compression = r.sub(1)
    if compression.remaining() < 1:
        raise _Malformed()
    fields = {}
    types = []
    if r.remaining():
        extensions = r.sub(2)
        if r.remaining():
            raise _Malformed()
        seen = set()
        while extensions.remaining():
            extType = extensions.u16()
            ext = extensions.sub(2)
            if extType in seen:
                raise _Malformed()
            seen.add(extType)
            types.append(extType)
            fields[extType] = ext.take(ext.remaining())
    serverName = ""
    if EXT_SERVER_NAME in fields:
        serverName = _parseServerName(fields[EXT_SERVER_NAME])
    supportedVersions = ()
    if EXT_SUPPORTED_VERSIONS in fields:
        v = _Reader(fields[EXT_SUPPORTED_VERSIONS])
        lst = v.sub(1)
        if v.remaining() or not lst.remaining():
            raise _Malformed()
        supportedVersions = _u16List(lst)
        if not any(x in _KNOWN_VERSIONS for x in supportedVersions):
            raise _Malformed()
    elif legacyVersion < TLS1_0:
        # SSL 3.0 and older: no version in common with Envoy's inspector.
        raise _Malformed()

    def optionalList(extType, lengthBytes, itemBytes):
        if extType not in fields:
            return ()
        try:
            rr = _Reader(fields[extType])
            lst = rr.sub(lengthBytes)
            if itemBytes == 1:
                return tuple(lst.take(lst.remaining()))
            return _u16List(lst)
        except _Malformed:
            return ()

    return ClientHello(
        serverName=serverName,
        alpnProtocols=_parseAlpn(fields[EXT_ALPN]) if EXT_ALPN in fields else (),
        legacyVersion=legacyVersion,
        supportedVersions=supportedVersions,
        cipherSuites=cipherSuites,
        extensionTypes=tuple(types),
        supportedGroups=optionalList(EXT_SUPPORTED_GROUPS, 2, 2),
        ecPointFormats=optionalList(EXT_EC_POINT_FORMATS, 1, 1),
        signatureAlgorithms=optionalList(EXT_SIGNATURE_ALGORITHMS, 2, 2),
    )


class ClientHelloParser:
    """
    Reads the first TLS flight of a connection, incrementally.

    Call L{parse} with the whole buffer read so far, every time more bytes
    arrive, until it returns something other than L{ParseState.NEED_MORE}.

    @ivar state: the current L{ParseState}.
    @ivar clientHello: the L{ClientHello} once L{state} is C{TLS}.
    @ivar bytesProcessed: how many bytes the decision needed (whole TLS
        records; for bytes that are not TLS, the record header that gave
        it away), as Envoy's C{tls_inspector.bytes_processed} records.
    """

    def __init__(self, maxSize=TLS_MAX_CLIENT_HELLO):
        self.maxSize = maxSize
        self.state = ParseState.NEED_MORE
        self.clientHello = None
        self.bytesProcessed = 0
        self._offset = 0
        self._handshake = b""

    def parse(self, data):
        """
        @param data: every byte read from the connection so far.
        @return: the new L{state}.
        """
        if self.state != ParseState.NEED_MORE:
            return self.state
        limit = min(len(data), self.maxSize)
        while True:
            offset = self._offset
            if limit - offset < _RECORD_HEADER:
                return self._needMore(limit)
            contentType, major, length = data[offset], data[offset + 1], \
                struct.unpack("!H", data[offset + 3:offset + 5])[0]
            if contentType != _CONTENT_HANDSHAKE or major != 3 or length > _MAX_RECORD_PAYLOAD:
                return self._decide(ParseState.NOT_TLS, offset + _RECORD_HEADER)
            end = offset + _RECORD_HEADER + length
            if end > limit:
                return self._needMore(limit)
            self._handshake += data[offset + _RECORD_HEADER:end]
            self._offset = end
            hs = self._handshake
            if len(hs) >= 1 and hs[0] != _HANDSHAKE_CLIENT_HELLO:
                return self._decide(ParseState.NOT_TLS, end)
            if len(hs) >= 4:
                messageLength = struct.unpack("!I", b"\x00" + hs[1:4])[0]
                if len(hs) >= 4 + messageLength:
                    hello = parseClientHelloBody(hs[4:4 + messageLength])
                    if hello is None:
                        return self._decide(ParseState.NOT_TLS, end)
                    self.clientHello = hello
                    return self._decide(ParseState.TLS, end)

    def _needMore(self, limit):
        if limit >= self.maxSize:
            return self._decide(ParseState.TOO_LARGE, limit)
        return ParseState.NEED_MORE

    def _decide(self, state, processed):
        self.state = state
        self.bytesProcessed = processed
        self._handshake = b""
        return state


def parseClientHello(data, maxSize=TLS_MAX_CLIENT_HELLO):
    """
    One-shot form of L{ClientHelloParser}.

    @return: C{(state, clientHello or None, bytesProcessed)}.
    """
    p = ClientHelloParser(maxSize)
    state = p.parse(data)
    return state, p.clientHello, p.bytesProcessed
