"""
Fuzz target: the access log format compiler (L{txenvoy.formatter.substitution}).

The input's first byte chooses how the format reaches the compiler, as a
C{log_format} (C{SubstitutionFormatString}) does: C{text_format},
C{text_format_source.inline_bytes} (raw bytes), or a C{json_format}
struct with the text as a value, nested and in a list; and whether
C{omit_empty_values} is on. The rest is the format. It goes through
L{formatterFromProto}, and a format that compiles formats one finished
HTTP request and one TCP connection.

Accepted: the format compiles and every line formats to a C{str} (a JSON
format's line is one JSON object and a newline). A proper rejection is a
L{ConfigError} (L{UnsupportedField} included): the config loader reports
it with the field path. Anything else is a crash.
"""

import json

from google.protobuf import struct_pb2
from twisted.internet.task import Clock

from envoy.config.core.v3 import substitution_format_string_pb2

from tests.fuzz.support import FuzzInput, check
from txenvoy.formatter.substitution import JsonFormatter, formatterFromProto
from txenvoy.config.errors import ConfigError
from txenvoy.http.headers import HeaderMap, RequestHeaders, ResponseHeaders
from txenvoy.http.local_reply import headerView
from txenvoy.network.stream_info import ResponseFlag, StreamInfo

_TEXT, _BYTES, _JSON = range(3)


def _logFormat(mode, omit, raw):
    message = substitution_format_string_pb2.SubstitutionFormatString()
    message.omit_empty_values = omit
    text = raw.decode("utf-8", "replace")
    if mode == _TEXT:
        message.text_format = text
    elif mode == _BYTES:
        message.text_format_source.inline_bytes = raw
    else:
        struct = struct_pb2.Struct()
        struct.update({"line": text, "nested": {"inner": text, "n": 1.5, "b": True},
                       "list": [text, None, 7], "empty": {}})
        message.json_format.CopyFrom(struct)
    return message


def _streams():
    """A finished HTTP request and a finished TCP connection."""
    clock = Clock()
    clock.advance(1000)
    http = StreamInfo(clock, wallTime=lambda: 1795645031.272046)
    http.downstreamRemoteAddress = ("203.0.113.7", 40000)
    http.downstreamDirectRemoteAddress = ("10.0.0.1", 5555)
    http.downstreamLocalAddress = ("::1", 10000)
    http.upstreamHost = "127.0.0.1:49521"
    http.upstreamCluster = "echo"
    http.upstreamLocalAddress = ("127.0.0.1", 39578)
    http.protocol = "HTTP/1.1"
    http.responseCode = 503
    http.responseCodeDetails = "upstream reset: with details"
    http.routeName = "r"
    http.requestedServerName = "sni.test"
    http.bytesReceived = 5
    http.bytesSent = 7
    http.setResponseFlag(ResponseFlag.UPSTREAM_CONNECTION_FAILURE)
    clock.advance(0.056)
    http.onComplete()
    request = RequestHeaders(b"GET", b"/p?q=\xff", b"a.test:80", headers=HeaderMap(
        [(b"user-agent", b"curl/8"), (b"x-a", b"1"), (b"x-a", b"2"),
         (b"x-bin", b"\xc3\x28\x00\x7f")]))
    response = ResponseHeaders(503, HeaderMap([(b"x-r", b"\xe2\x82\xac")]))
    trailers = HeaderMap([(b"grpc-status", b"14")])
    tcp = StreamInfo(clock, wallTime=lambda: 0.0)
    tcp.onComplete()
    # The connection manager hands loggers views of its heads.
    return [(http, headerView(request), headerView(response), trailers),
            (tcp, None, None, None)]


# Formatting only reads them: built once.
_built = []


def testOneInput(data):
    """Compile C{data} as a log format and format two lines with it."""
    inp = FuzzInput(data)
    flags = inp.byte()
    mode = (flags & 3) % 3
    message = _logFormat(mode, bool(flags & 4), inp.rest())
    try:
        formatter = formatterFromProto(message, "access_log[0].log_format")
    except ConfigError:
        return
    if not _built:
        _built.extend(_streams())
    for info, request, response, trailers in _built:
        line = formatter.format(info, request, response, trailers)
        check(isinstance(line, str), "formatted %r", line)
        if isinstance(formatter, JsonFormatter):
            check(line.endswith("\n"), "a JSON line without its newline: %r", line)
            check(isinstance(json.loads(line), dict), "not a JSON object: %r", line)
