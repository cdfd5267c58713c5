"""
Fuzz target: the TLS ClientHello reader (L{txenvoy.network.tls_parse}) as
the C{tls_inspector} listener filter drives it.

The input's first bytes choose C{max_client_hello_size} and where the rest
is cut into reads; the rest is the first flight a client sends. The reads
go, as a growing buffer, to L{ClientHelloParser.parse}, as the inspector
hands it the peeked bytes, and the whole buffer goes to the one-shot
L{parseClientHello}.

Accepted: a L{ParseState}; C{TLS} with a L{ClientHello} whose fields have
their types (the server name a C{str} of at most 255 characters, the ALPN
names C{str}), C{NEED_MORE} only below the size limit, and the bytes
processed within what was read. Not TLS and too large are the proper
rejections. Anything else is a crash, and so is a decision that depends on
how the bytes were cut into reads (the incremental and one-shot parses
must agree).
"""

from tests.fuzz.support import FuzzInput, check
from txenvoy.network.tls_parse import (
    ClientHello,
    ClientHelloParser,
    ParseState,
    parseClientHello,
)

_STATES = frozenset([ParseState.NEED_MORE, ParseState.TLS, ParseState.NOT_TLS,
                     ParseState.TOO_LARGE])
_SIZES = (16384, 16384, 512, 64)


def _checkHello(hello):
    check(isinstance(hello, ClientHello), "client hello %r", hello)
    check(isinstance(hello.serverName, str) and len(hello.serverName) <= 255,
          "server name %r", hello.serverName)
    check(all(isinstance(p, str) for p in hello.alpnProtocols), "alpn %r",
          hello.alpnProtocols)
    check(all(isinstance(v, int) for v in hello.cipherSuites), "ciphers %r",
          hello.cipherSuites)
    check(isinstance(hello.maximumVersion, int), "version %r", hello.maximumVersion)


def testOneInput(data):
    """Parse C{data} as a first TLS flight, read by read and at once."""
    inp = FuzzInput(data)
    maxSize = _SIZES[inp.byte() & 3]
    parser = ClientHelloParser(maxSize)
    buffer = b""
    state = ParseState.NEED_MORE
    for piece in inp.pieces():
        buffer += piece
        state = parser.parse(buffer)
        check(state in _STATES, "state %r", state)
        if state != ParseState.NEED_MORE:
            break
    if state == ParseState.NEED_MORE:
        check(len(buffer) < maxSize, "still reading after %d bytes", len(buffer))
        return
    check(0 < parser.bytesProcessed <= min(len(buffer), maxSize),
          "%d bytes processed of %d", parser.bytesProcessed, len(buffer))
    if state == ParseState.TLS:
        _checkHello(parser.clientHello)
    whole = parseClientHello(buffer, maxSize)
    check(whole == (state, parser.clientHello, parser.bytesProcessed),
          "read by read: %r; at once: %r", (state, parser.clientHello,
                                            parser.bytesProcessed), whole)
