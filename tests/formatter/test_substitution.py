"""
Tests for L{txenvoy.formatter.substitution}. Expected lines marked "Envoy
1.40" were printed by the real binary for the same connection or request.
"""

import os
import socket

from google.protobuf import json_format as pbjson
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from envoy.config.core.v3 import substitution_format_string_pb2

from txenvoy.config.errors import ConfigError, UnsupportedField
from txenvoy.formatter.substitution import (
    DEFAULT_FORMAT,
    Formatter,
    JsonFormatter,
    TimeFormatter,
    compileFormat,
    compileJsonFormat,
    defaultFormatter,
    formatAddress,
    formatterFromProto,
    jsonString,
    supportedCommands,
)
from txenvoy.network.stream_info import ResponseFlag, StreamInfo

# 2026-11-25T22:17:11.272046Z
START = 1795645031.272046


class Headers:
    """A header map: lowercase names to bytes, pseudo-headers as attributes."""

    def __init__(self, fields=(), **pseudo):
        self._fields = dict(fields)
        for name, value in pseudo.items():
            setattr(self, name, value)

    def get(self, name):
        return self._fields.get(name)


class PlainHeaders:
    """A header map with pseudo-headers only reachable through get()."""

    def __init__(self, fields):
        self._fields = dict(fields)

    def get(self, name):
        return self._fields.get(name)


def tcpStreamInfo(clock=None, durationMs=56, **attrs):
    """A finished TCP proxy connection like the one Envoy logged."""
    clock = clock or Clock()
    clock.advance(1000)
    si = StreamInfo(clock, wallTime=lambda: START)
    si.downstreamRemoteAddress = ("127.0.0.1", 55478)
    si.downstreamLocalAddress = ("127.0.0.1", 51395)
    si.upstreamHost = "127.0.0.1:49521"
    si.upstreamCluster = "echo"
    si.upstreamLocalAddress = ("127.0.0.1", 39578)
    si.bytesReceived = 5
    si.bytesSent = 5
    si.connectionId = 2
    for name, value in attrs.items():
        setattr(si, name, value)
    clock.advance(durationMs / 1000.0)
    si.onComplete()
    return si


def httpRequest():
    return Headers(
        {
            b"user-agent".decode(): b"curl/7.88.1",
            "x-request-id": b"ee47",
            "x-forwarded-for": None,
        },
        method=b"GET", path=b"/api/x", authority=b"127.0.0.1:10611", scheme=b"http",
    )


class DefaultFormatTests(SynchronousTestCase):
    """Envoy's default line, with no C{log_format}."""

    def test_tcpProxyLine(self):
        """
        Envoy 1.40, tcp_proxy with a stdout logger and no format: method,
        path and protocol are C{-}, the response code is 0.
        """
        line = defaultFormatter().format(tcpStreamInfo(), None, None)
        self.assertEqual(
            line,
            '[2026-11-25T22:17:11.272Z] "- - -" 0 - 5 5 56 - "-" "-" "-" "-" '
            '"127.0.0.1:49521"\n',
        )

    def test_tcpConnectFailure(self):
        """Envoy 1.40, tcp_proxy to a refused port."""
        si = tcpStreamInfo(durationMs=1, bytesReceived=0, bytesSent=0,
                           upstreamHost="127.0.0.1:50581")
        # In the order tcp_proxy meets them: Envoy prints flags in the
        # order they were set.
        si.setResponseFlag(ResponseFlag.UPSTREAM_CONNECTION_FAILURE)
        si.setResponseFlag(ResponseFlag.UPSTREAM_RETRY_LIMIT_EXCEEDED)
        self.assertEqual(
            defaultFormatter().format(si, None, None),
            '[2026-11-25T22:17:11.272Z] "- - -" 0 UF,URX 0 0 1 - "-" "-" "-" "-" '
            '"127.0.0.1:50581"\n',
        )

    def test_httpLine(self):
        """Envoy 1.40, a proxied GET (anchor example line)."""
        si = tcpStreamInfo(durationMs=1, bytesReceived=0, bytesSent=267,
                           upstreamHost="127.0.0.1:10680")
        si.protocol = "HTTP/1.1"
        si.responseCode = 200
        response = Headers({"x-envoy-upstream-service-time": b"0"}, status=200)
        self.assertEqual(
            defaultFormatter().format(si, httpRequest(), response),
            '[2026-11-25T22:17:11.272Z] "GET /api/x HTTP/1.1" 200 - 0 267 1 0 "-" '
            '"curl/7.88.1" "ee47" "127.0.0.1:10611" "127.0.0.1:10680"\n',
        )

    def test_originalPathPreferred(self):
        """C{X-ENVOY-ORIGINAL-PATH?:PATH} prints the original path when set."""
        request = httpRequest()
        request._fields["x-envoy-original-path"] = b"/orig"
        line = compileFormat("%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%").format(
            tcpStreamInfo(), request, None)
        self.assertEqual(line, "/orig")

    def test_protocolErrorLine(self):
        """Envoy 1.40, a request that failed to parse (no headers at all)."""
        si = tcpStreamInfo(durationMs=0, bytesReceived=0, bytesSent=11, upstreamHost=None)
        si.protocol = "HTTP/1.1"
        si.responseCode = 400
        si.setResponseFlag(ResponseFlag.DOWNSTREAM_PROTOCOL_ERROR)
        line = defaultFormatter().format(si, None, Headers(status=400))
        self.assertEqual(
            line,
            '[2026-11-25T22:17:11.272Z] "- - HTTP/1.1" 400 DPE 0 11 0 - "-" "-" "-" '
            '"-" "-"\n',
        )

    def test_defaultFormatText(self):
        """The default is Envoy's format string, with its newline."""
        self.assertTrue(DEFAULT_FORMAT.endswith('"%UPSTREAM_HOST%"\n'))
        self.assertIsInstance(defaultFormatter(), Formatter)
        self.assertEqual(defaultFormatter().text, DEFAULT_FORMAT)


class TextFormatTests(SynchronousTestCase):
    """Operators and the text format."""

    def fmt(self, text, si=None, request=None, response=None, trailers=None, **kw):
        return compileFormat(text, **kw).format(
            si or tcpStreamInfo(), request, response, trailers)

    def test_dynamicMetadata(self):
        """
        C{%DYNAMIC_METADATA(ns:key...)%}: strings bare, numbers without a
        needless fraction, objects as JSON, C{-} when absent.
        """
        si = tcpStreamInfo()
        si.dynamicMetadata = {"acme": {"team": "blue", "n": 1.0, "o": {"a": [1, 2]}}}
        self.assertEqual(self.fmt("%DYNAMIC_METADATA(acme:team)%", si), "blue")
        self.assertEqual(self.fmt("%DYNAMIC_METADATA(acme:n)%", si), "1")
        self.assertEqual(self.fmt("%DYNAMIC_METADATA(acme:o)%", si), '{"a":[1,2]}')
        self.assertEqual(self.fmt("%DYNAMIC_METADATA(acme:nope)%", si), "-")
        self.assertEqual(self.fmt("%DYNAMIC_METADATA(acme:team):2%", si), "bl")

    def test_dynamicMetadataKeyOrder(self):
        """
        A struct prints with its keys in order, whatever order the filters
        wrote them in, as Envoy prints the RBAC filter's
        C{enforced_*} before C{shadow_*} (tests/e2e/test_rbac_matcher.py).
        """
        si = tcpStreamInfo()
        si.dynamicMetadata = {"r": {"shadow_engine_result": "allowed",
                                    "enforced_engine_result": "denied"}}
        self.assertEqual(self.fmt("%DYNAMIC_METADATA(r)%", si),
                         '{"enforced_engine_result":"denied","shadow_engine_result":"allowed"}')

    def test_noNewlineAdded(self):
        """Envoy 1.40 writes a text format as is: no newline is added."""
        self.assertEqual(self.fmt("rx=%BYTES_RECEIVED%"), "rx=5")

    def test_percentEscape(self):
        """C{%%} is a literal percent sign."""
        self.assertEqual(self.fmt("100%% %BYTES_SENT%%%"), "100% 5%")

    def test_onlyLiteral(self):
        self.assertEqual(self.fmt("plain"), "plain")
        self.assertEqual(self.fmt(""), "")

    def test_startTimeFormats(self):
        """
        Envoy 1.40 printed C{1795645031.329|329067000|329067|329067000|3}
        and C{2026/11/25T22:17:11+0000 1795645031} for these formats.
        """
        clock = Clock()
        si = StreamInfo(clock, wallTime=lambda: 1795645031.329067)
        self.assertEqual(
            self.fmt("%START_TIME(%s.%3f|%f|%6f|%9f|%1f)%", si),
            "1795645031.329|329067000|329067|329067000|3")
        self.assertEqual(
            self.fmt("%START_TIME(%Y/%m/%dT%H:%M:%S%z %s)%", si),
            "2026/11/25T22:17:11+0000 1795645031")
        self.assertEqual(self.fmt("%START_TIME%", si), "2026-11-25T22:17:11.329Z")
        self.assertEqual(self.fmt("%START_TIME()%", si), "2026-11-25T22:17:11.329Z")

    def test_startTimeSecondsFraction(self):
        """C{%E3S}, C{%E*S} and C{%Ez} follow absl's time format."""
        formatter = TimeFormatter("%E3S %E*S %E6S %Ez %%f")
        self.assertEqual(formatter.format(1795645031.5), "11.500 11.5 11.500000 +00:00 %f")
        self.assertEqual(formatter.format(1795645032.0), "12.000 12 12.000000 +00:00 %f")

    def test_startTimeCachePerSecond(self):
        """The cached per-second part changes with the second."""
        formatter = TimeFormatter("")
        self.assertEqual(formatter.format(1795645031.999), "2026-11-25T22:17:11.999Z")
        self.assertEqual(formatter.format(1795645032.001), "2026-11-25T22:17:12.001Z")
        self.assertEqual(formatter.format(1795645031.5), "2026-11-25T22:17:11.500Z")

    def test_startTimeNul(self):
        """
        A NUL in a C{START_TIME} format (YAML can spell it C{"\\0"}) is
        written as it is, instead of failing every line at format time
        (found by the fuzz target L{tests.fuzz.access_log_format}).
        """
        formatter = TimeFormatter("%Y\0%m\0\0%")
        self.assertEqual(formatter.format(1795645031.5), "2026\x0011\x00\x00%")
        si = StreamInfo(Clock(), wallTime=lambda: START)
        line = self.fmt("[%START_TIME(%YA/.%m/%on_\x01\x00format%ZTA(%f)%", si)
        self.assertTrue(line.startswith("[2026A/.11/%on_\x01\x00format"), line)
        self.assertTrue(line.endswith("TA(272046000"), line)

    def test_startTimeLocal(self):
        si = StreamInfo(Clock(), wallTime=lambda: START)
        import time as _time

        expected = _time.strftime("%Y %H", _time.localtime(int(START)))
        self.assertEqual(self.fmt("%START_TIME_LOCAL(%Y %H)%", si), expected)

    def test_addresses(self):
        si = tcpStreamInfo()
        si.downstreamRemoteAddress = ("::1", 4000)
        self.assertEqual(
            self.fmt(
                "%DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% "
                "%DOWNSTREAM_REMOTE_PORT% %DOWNSTREAM_DIRECT_REMOTE_ADDRESS% "
                "%DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT% "
                "%DOWNSTREAM_LOCAL_PORT% %UPSTREAM_HOST% %UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% "
                "%UPSTREAM_REMOTE_PORT% %UPSTREAM_LOCAL_ADDRESS% "
                "%UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT% %UPSTREAM_LOCAL_PORT% %UPSTREAM_CLUSTER%",
                si),
            "[::1]:4000 ::1 4000 [::1]:4000 127.0.0.1:51395 127.0.0.1 51395 "
            "127.0.0.1:49521 127.0.0.1 49521 127.0.0.1:39578 127.0.0.1 39578 echo",
        )

    def test_directRemoteAddress(self):
        """The direct peer differs from the remote one behind PROXY protocol."""
        si = tcpStreamInfo()
        si.downstreamRemoteAddress = ("203.0.113.7", 1234)
        si.downstreamDirectRemoteAddress = ("127.0.0.1", 55478)
        self.assertEqual(
            self.fmt("%DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_DIRECT_REMOTE_ADDRESS% "
                     "%DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT%", si),
            "203.0.113.7:1234 127.0.0.1:55478 127.0.0.1")

    def test_twistedAddress(self):
        """Twisted address objects are formatted like tuples."""
        self.assertEqual(formatAddress(IPv4Address("TCP", "10.0.0.1", 80)), "10.0.0.1:80")
        self.assertIsNone(formatAddress(None))
        si = tcpStreamInfo(downstreamRemoteAddress=IPv4Address("TCP", "10.0.0.1", 80))
        self.assertEqual(self.fmt("%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", si), "10.0.0.1")

    def test_missingValues(self):
        """Unknown values print C{-}."""
        si = StreamInfo(Clock())
        si.onComplete()
        self.assertEqual(
            self.fmt(
                "%DOWNSTREAM_REMOTE_ADDRESS% %UPSTREAM_HOST% %UPSTREAM_CLUSTER% "
                "%PROTOCOL% %REQUESTED_SERVER_NAME% %ROUTE_NAME% %RESPONSE_CODE_DETAILS% "
                "%CONNECTION_TERMINATION_DETAILS% %UPSTREAM_TRANSPORT_FAILURE_REASON% "
                "%REQUEST_DURATION% %RESPONSE_DURATION% %RESPONSE_TX_DURATION% "
                "%REQ(:METHOD)% %RESP(:STATUS)% %TRAILER(GRPC-STATUS)% %RESPONSE_FLAGS%",
                si),
            " ".join(["-"] * 16))

    def test_counts(self):
        """Numbers: response code 0 when none was sent, as Envoy prints."""
        self.assertEqual(
            self.fmt("%BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESPONSE_CODE% "
                     "%CONNECTION_ID%"),
            "5 5 56 0 2")

    def test_durations(self):
        """Request and response durations, in whole milliseconds."""
        clock = Clock()
        si = StreamInfo(clock)
        si.lastDownstreamRxMonotonic = clock.seconds() + 0.004
        si.firstUpstreamRxMonotonic = clock.seconds() + 0.0075
        si.lastDownstreamTxMonotonic = clock.seconds() + 0.0101
        clock.advance(0.3)
        si.onComplete()
        self.assertEqual(
            self.fmt("%DURATION% %REQUEST_DURATION% %RESPONSE_DURATION% "
                     "%RESPONSE_TX_DURATION%", si),
            "300 4 7 2")

    def test_detailsHaveNoSpaces(self):
        """
        Envoy 1.40 printed C{delayed_connect_error:_Connection_refused}:
        spaces in details become underscores.
        """
        si = tcpStreamInfo(
            upstreamTransportFailureReason="delayed connect error: Connection refused",
            responseCodeDetails="via upstream", connectionTerminationDetails="idle timeout")
        self.assertEqual(
            self.fmt("%UPSTREAM_TRANSPORT_FAILURE_REASON% %RESPONSE_CODE_DETAILS% "
                     "%CONNECTION_TERMINATION_DETAILS%", si),
            "delayed_connect_error:_Connection_refused via_upstream idle_timeout")

    def test_streamFacts(self):
        si = tcpStreamInfo(protocol="HTTP/2", requestedServerName="a.example.com",
                           routeName="r1")
        self.assertEqual(self.fmt("%PROTOCOL% %REQUESTED_SERVER_NAME% %ROUTE_NAME%", si),
                         "HTTP/2 a.example.com r1")

    def test_requestHeaders(self):
        """Header names are case-insensitive; pseudo-headers read attributes."""
        request = httpRequest()
        self.assertEqual(
            self.fmt("%REQ(:METHOD)% %REQ(:path)% %REQ(:AUTHORITY)% %REQ(:SCHEME)% "
                     "%REQ(User-Agent)% %REQ(X-Missing)%", request=request),
            "GET /api/x 127.0.0.1:10611 http curl/7.88.1 -")

    def test_pseudoHeadersThroughGet(self):
        """Without attributes, pseudo-headers are read with get()."""
        request = PlainHeaders({":method": b"POST", ":path": "/p", "host": b"h.example"})
        self.assertEqual(
            self.fmt("%REQ(:METHOD)% %REQ(:PATH)% %REQ(:AUTHORITY)%", request=request),
            "POST /p h.example")

    def test_alternativeHeader(self):
        request = PlainHeaders({"b": b"second"})
        self.assertEqual(self.fmt("%REQ(A?B)% %REQ(B?A)% %REQ(C?D)%", request=request),
                         "second second -")

    def test_maxLength(self):
        """C{:N} truncates; Envoy 1.40 printed C{/dir} for C{%REQ(:PATH):4%}."""
        request = Headers(path=b"/direct")
        self.assertEqual(self.fmt("%REQ(:PATH):4%|%REQ(:PATH):0%", request=request), "/dir|")

    def test_responseHeadersAndTrailers(self):
        response = Headers({"content-type": b"text/plain"}, status=404)
        trailers = PlainHeaders({"grpc-status": b"0"})
        self.assertEqual(
            self.fmt("%RESP(:STATUS)% %RESP(CONTENT-TYPE)% %TRAILER(GRPC-STATUS)%",
                     response=response, trailers=trailers),
            "404 text/plain 0")

    def test_trailersFromStreamInfo(self):
        si = tcpStreamInfo()
        si.responseTrailers = PlainHeaders({"grpc-status": b"14"})
        self.assertEqual(self.fmt("%TRAILER(grpc-status)%", si), "14")

    def test_headerBytesRoundTrip(self):
        """Bytes that are not UTF-8 survive, for a writer encoding back."""
        request = PlainHeaders({"user-agent": b"caf\xc3\xa9 \xff"})
        line = self.fmt("%REQ(USER-AGENT)%", request=request)
        self.assertEqual(line.encode("utf-8", "surrogateescape"), b"caf\xc3\xa9 \xff")

    def test_environment(self):
        """
        Envoy 1.40 printed C{/ro} for C{%ENVIRONMENT(HOME):3%} and C{-} for a
        missing variable.
        """
        os.environ["TXENVOY_TEST_ENV"] = "/root"
        self.addCleanup(os.environ.pop, "TXENVOY_TEST_ENV")
        os.environ.pop("TXENVOY_TEST_MISSING", None)
        self.assertEqual(
            self.fmt("%ENVIRONMENT(TXENVOY_TEST_ENV)% %ENVIRONMENT(TXENVOY_TEST_ENV):3% "
                     "%ENVIRONMENT(TXENVOY_TEST_MISSING)%"),
            "/root /ro -")

    def test_hostname(self):
        self.assertEqual(self.fmt("%HOSTNAME%"), socket.gethostname())

    def test_omitEmptyValuesText(self):
        """
        Envoy 1.40 printed C{OMIT [] [127.0.0.1:50581] 0 UF,URX} with
        C{omit_empty_values}: unknown values print nothing.
        """
        si = tcpStreamInfo(upstreamHost="127.0.0.1:50581")
        si.setResponseFlag(ResponseFlag.UPSTREAM_CONNECTION_FAILURE)
        si.setResponseFlag(ResponseFlag.UPSTREAM_RETRY_LIMIT_EXCEEDED)
        self.assertEqual(
            self.fmt("OMIT [%REQ(:METHOD)%] [%UPSTREAM_HOST%] %RESPONSE_CODE% %RESPONSE_FLAGS%"
                     " %ROUTE_NAME%.", si, omitEmptyValues=True),
            "OMIT [] [127.0.0.1:50581] 0 UF,URX .")

    def test_supportedCommands(self):
        commands = supportedCommands()
        for name in ("START_TIME", "REQ", "RESP", "TRAILER", "ENVIRONMENT", "HOSTNAME",
                     "DURATION", "RESPONSE_FLAGS", "UPSTREAM_TRANSPORT_FAILURE_REASON"):
            self.assertIn(name, commands)


class FormatErrorTests(SynchronousTestCase):
    """Bad format strings are config errors with Envoy's messages."""

    def assertError(self, text, message, path=""):
        e = self.assertRaises(ConfigError, compileFormat, text, path=path)
        self.assertEqual(e.message, message)

    def test_unknownCommand(self):
        self.assertError("%FOO%", "Not supported field in StreamInfo: FOO")

    def test_unclosed(self):
        self.assertError(
            "%START_TIME",
            "Incorrect configuration: %START_TIME. Couldn't find valid command at position 0")
        self.assertError(
            "100%", "Incorrect configuration: 100%. Couldn't find valid command at position 3")
        self.assertError(
            "%%%", "Incorrect configuration: %%%. Couldn't find valid command at position 2")
        self.assertError(
            "%start_time%",
            "Incorrect configuration: %start_time%. Couldn't find valid command at position 0")
        self.assertError(
            "%REQ(a):x%",
            "Incorrect configuration: %REQ(a):x%. Couldn't find valid command at position 0")

    def test_parameters(self):
        self.assertError("%REQ()%", "REQ requires parameters")
        self.assertError("%ENVIRONMENT%", "ENVIRONMENT requires parameters")
        self.assertError("%REQ(?)%", "REQ requires parameters")
        self.assertError("%RESP(a?b?c)%",
                         "More than 1 alternative header specified in token: a?b?c")
        self.assertError("%DURATION(x)%", "DURATION does not take any parameters or length")
        self.assertError("%UPSTREAM_HOST:5%",
                         "UPSTREAM_HOST does not take any parameters or length")
        self.assertError("%START_TIME:3%", "START_TIME does not allow length to be specified.")
        self.assertError(
            "%REQ(a b)%",
            "Invalid header configuration. Format string contains invalid characters.")
        self.assertError(
            "%REQ(a)b)%",
            "Invalid header configuration. Format string contains invalid characters.")

    def test_pathInMessage(self):
        self.assertError("%FOO%", "x.log_format: Not supported field in StreamInfo: FOO",
                         path="x.log_format")

    def test_validButUnsupported(self):
        """A valid Envoy command txenvoy lacks is reported as unsupported."""
        e = self.assertRaises(UnsupportedField, compileFormat, "%FILTER_STATE(x)%",
                              path="p")
        self.assertIn("FILTER_STATE", e.message)
        self.assertTrue(e.message.startswith("p: unsupported field"))


class JsonFormatTests(SynchronousTestCase):
    """C{json_format}."""

    def test_envoyLine(self):
        """
        Envoy 1.40, tcp_proxy with this json_format: keys sorted, single
        commands typed, mixed values strings with C{-}, nested values kept.
        """
        formatter = compileJsonFormat({
            "code": "%RESPONSE_CODE%", "rx": "%BYTES_RECEIVED%", "dur": "%DURATION%",
            "mixed": "rx=%BYTES_RECEIVED% m=%REQ(:METHOD)%", "method": "%REQ(:METHOD)%",
            "flags": "%RESPONSE_FLAGS%", "cid": "%CONNECTION_ID%", "host": "%UPSTREAM_HOST%",
            "dla": "%DOWNSTREAM_LOCAL_ADDRESS%", "sni": "%REQUESTED_SERVER_NAME%",
            "st": "%START_TIME%",
            "nested": {"a": "%BYTES_SENT%", "n": 5, "b": True, "l": ["x", "%DURATION%"],
                       "z": None, "lit": "plain"},
            "pct": "100%% sure",
        })
        si = tcpStreamInfo(durationMs=2, bytesReceived=6, bytesSent=6)
        self.assertEqual(
            formatter.format(si, None, None),
            '{"cid":2,"code":0,"dla":"127.0.0.1:51395","dur":2,"flags":"-",'
            '"host":"127.0.0.1:49521","method":null,"mixed":"rx=6 m=-",'
            '"nested":{"a":6,"b":true,"l":["x",2],"lit":"plain","n":5,"z":null},'
            '"pct":"100% sure","rx":6,"sni":null,"st":"2026-11-25T22:17:11.272Z"}\n')

    def test_httpValues(self):
        """Envoy 1.40: C{%RESP(:STATUS)%} is a string, C{%RESPONSE_CODE%} a number."""
        formatter = compileJsonFormat({"code": "%RESPONSE_CODE%", "status": "%RESP(:STATUS)%",
                                       "path": "%REQ(:PATH):4%"})
        si = tcpStreamInfo()
        si.responseCode = 200
        self.assertEqual(
            formatter.format(si, Headers(path=b"/direct"), Headers(status=200)),
            '{"code":200,"path":"/dir","status":"200"}\n')

    def test_omitEmptyValues(self):
        """
        Envoy 1.40 printed C{{"c":0,"h":"127.0.0.1:50581","x":"ab"}}: unknown
        keys and emptied objects are dropped, mixed strings kept.
        """
        formatter = compileJsonFormat(
            {"m": "%REQ(:METHOD)%", "c": "%RESPONSE_CODE%", "x": "a%REQ(:METHOD)%b",
             "h": "%UPSTREAM_HOST%", "n": {"q": "%PROTOCOL%"}, "z": None, "l": ["%PROTOCOL%"]},
            omitEmptyValues=True)
        si = tcpStreamInfo(upstreamHost="127.0.0.1:50581")
        self.assertEqual(formatter.format(si, None, None),
                         '{"c":0,"h":"127.0.0.1:50581","l":[],"x":"ab"}\n')

    def test_omitEverything(self):
        formatter = compileJsonFormat({"m": "%REQ(:METHOD)%"}, omitEmptyValues=True)
        self.assertEqual(formatter.format(tcpStreamInfo(), None, None), "{}\n")

    def test_escaping(self):
        """
        Envoy 1.40: valid UTF-8 is kept, quotes, backslashes and tabs are
        escaped; a value with bytes that are not UTF-8 has every non-ASCII
        byte escaped.
        """
        formatter = compileJsonFormat({"ua": "%REQ(USER-AGENT)%"})

        def ua(raw):
            line = formatter.format(tcpStreamInfo(), PlainHeaders({"user-agent": raw}), None)
            return line.encode("utf-8", "surrogateescape")

        self.assertEqual(ua(b'caf\xc3\xa9 "q"'), b'{"ua":"caf\xc3\xa9 \\"q\\""}\n')
        self.assertEqual(ua(b"a\\b\tc"), b'{"ua":"a\\\\b\\tc"}\n')
        self.assertEqual(ua(b'caf\xc3\xa9 "q" \\ \xff'),
                         b'{"ua":"caf\\u00c3\\u00a9 \\u0022q\\u0022 \\u005c \\u00ff"}\n')

    def test_jsonString(self):
        self.assertEqual(jsonString('a"b'), '"a\\"b"')
        self.assertEqual(jsonString("\x01"), '"\\u0001"')

    def test_literalNumbers(self):
        formatter = compileJsonFormat({"i": 3, "f": 1.5, "neg": -2.0, "b": False})
        self.assertEqual(formatter.format(tcpStreamInfo()),
                         '{"b":false,"f":1.5,"i":3,"neg":-2}\n')

    def test_badCommandInValue(self):
        e = self.assertRaises(ConfigError, compileJsonFormat, {"a": {"b": "%NOPE%"}},
                              path="log_format.json_format")
        self.assertEqual(e.message,
                         "log_format.json_format.a.b: Not supported field in StreamInfo: NOPE")

    def test_fromStruct(self):
        """A C{google.protobuf.Struct} works like a dict."""
        msg = substitution_format_string_pb2.SubstitutionFormatString()
        pbjson.ParseDict({"json_format": {"c": "%RESPONSE_CODE%", "n": {"x": 1}}}, msg)
        formatter = formatterFromProto(msg, "log_format")
        self.assertIsInstance(formatter, JsonFormatter)
        self.assertEqual(formatter.format(tcpStreamInfo()), '{"c":0,"n":{"x":1}}\n')


class FromProtoTests(SynchronousTestCase):
    """L{formatterFromProto} on a C{SubstitutionFormatString}."""

    def parse(self, d):
        msg = substitution_format_string_pb2.SubstitutionFormatString()
        pbjson.ParseDict(d, msg)
        return msg

    def test_inlineString(self):
        f = formatterFromProto(
            self.parse({"text_format_source": {"inline_string": "%BYTES_SENT%\n"}}))
        self.assertEqual(f.format(tcpStreamInfo()), "5\n")

    def test_textFormat(self):
        f = formatterFromProto(self.parse({"text_format": "[%PROTOCOL%]",
                                           "omit_empty_values": True}))
        self.assertEqual(f.format(tcpStreamInfo()), "[]")

    def test_filename(self):
        path = self.mktemp()
        with open(path, "w") as fh:
            fh.write("from file %BYTES_RECEIVED%\n")
        f = formatterFromProto(self.parse({"text_format_source": {"filename": path}}))
        self.assertEqual(f.format(tcpStreamInfo()), "from file 5\n")

    def test_missingFile(self):
        e = self.assertRaises(
            ConfigError, formatterFromProto,
            self.parse({"text_format_source": {"filename": "/nonexistent/f"}}), "lf")
        self.assertIn("lf.text_format_source.filename", e.message)

    def test_errorPath(self):
        e = self.assertRaises(
            ConfigError, formatterFromProto,
            self.parse({"text_format_source": {"inline_string": "%X%"}}), "a.log_format")
        self.assertEqual(
            e.message, "a.log_format.text_format_source: Not supported field in StreamInfo: X")

    def test_noFormatIsDefault(self):
        f = formatterFromProto(self.parse({"omit_empty_values": False}))
        self.assertEqual(f.text, DEFAULT_FORMAT)

    def test_formatterExtensions(self):
        msg = self.parse({"formatters": [{"name": "x", "typed_config": {
            "@type": "type.googleapis.com/envoy.config.core.v3.SubstitutionFormatString"}}]})
        e = self.assertRaises(UnsupportedField, formatterFromProto, msg, "lf")
        self.assertTrue(e.message.startswith("lf.formatters"))
