"""
Fuzz target: the upstream HTTP/1.1 codec (L{txenvoy.http.http1.client_codec}).

The input's first bytes choose the request written (its method, whether it
has a body, the codec's limits and trailers setting) and where the rest is
cut into reads; the rest is what the upstream answers. The bytes go
through L{ClientCodec.dataReceived} on a C{StringTransport}, then the
connection is lost.

Accepted: response headers, then data, then completion, in that order. A
proper rejection is C{onProtocolError(details)}, once, with a details
string, after which nothing else is reported and the connection is not
reused. Anything else is a crash: an exception out of the codec, events
out of order or after the error, a complete response that leaves a
response in progress.
"""

from twisted.internet.testing import StringTransport

from tests.fuzz.support import FuzzInput, check
from txenvoy.http.http1.client_codec import ClientCodec
from txenvoy.http.headers import HeaderMap, RequestHeaders, ResponseHeaders

_METHODS = (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"GET", b"CONNECT")


class _Events:
    """Checks the order of what the codec reports."""

    def __init__(self, informational):
        self.events = []
        if informational:
            self.onResponse1xxHeaders = self._informational

    def _add(self, event):
        check("error" not in self.events, "%s after the protocol error: %r",
              event, self.events)
        check("complete" not in self.events or event == "error",
              "%s after the response completed: %r", event, self.events)
        self.events.append(event)

    def _informational(self, headers):
        check(isinstance(headers, ResponseHeaders), "1xx headers %r", headers)
        check(100 <= headers.status < 200 and headers.status != 101,
              "1xx status %r", headers.status)
        check("headers" not in self.events, "1xx after the response headers: %r",
              self.events)

    def onResponseHeaders(self, headers, endStream):
        check(isinstance(headers, ResponseHeaders), "headers %r", headers)
        check(100 <= headers.status <= 999, "status %r", headers.status)
        check("headers" not in self.events, "headers twice: %r", self.events)
        self._add("headers")
        if endStream:
            self.events.append("end")

    def onResponseData(self, data, endStream):
        check(isinstance(data, bytes), "data %r", data)
        check("headers" in self.events, "data before headers: %r", self.events)
        check("end" not in self.events, "data after the end: %r", self.events)
        self._add("end" if endStream else "data")

    def onResponseTrailers(self, trailers):
        check(isinstance(trailers, HeaderMap), "trailers %r", trailers)
        check("headers" in self.events and "end" not in self.events,
              "trailers out of order: %r", self.events)
        self._add("end")

    def onResponseComplete(self):
        check("end" in self.events, "complete before the end: %r", self.events)
        self._add("complete")

    def onProtocolError(self, details):
        check(isinstance(details, str) and details, "details %r", details)
        self._add("error")


def testOneInput(data):
    """Feed C{data} as a response to a client codec; raise unless handled."""
    inp = FuzzInput(data)
    flags = inp.byte()
    method = _METHODS[flags & 7]
    small = bool(flags & 0x10)
    events = _Events(informational=bool(flags & 0x40))
    codec = ClientCodec(events, StringTransport(),
                        maxResponseHeadersKb=1 if small else 60,
                        maxHeadersCount=5 if small else 100,
                        enableTrailers=bool(flags & 0x20))
    headers = HeaderMap([(b"accept", b"*/*")])
    withBody = bool(flags & 8) and method != b"CONNECT"
    if flags & 0x80 and method == b"GET":
        headers.add(b"upgrade", b"websocket")
        headers.add(b"connection", b"upgrade")
    path = None if method == b"CONNECT" else b"/"
    codec.encodeRequest(RequestHeaders(method, path, b"up.test:80", headers=headers),
                        not withBody)
    pieces = inp.pieces()
    for i, piece in enumerate(pieces):
        if withBody and i == 1:
            codec.encodeData(b"body", True)
        codec.dataReceived(piece)
    codec.connectionLost(None)
    if "complete" in events.events and "error" not in events.events:
        check(not codec.responseInProgress, "complete, yet a response in progress")
    if "error" in events.events:
        check(not codec.keepAlive, "reusable after a protocol error")
