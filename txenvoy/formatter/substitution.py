# -*- test-case-name: tests.formatter.test_substitution -*-
"""
Envoy's substitution formatter (C{substitution_formatter.cc}): the format
strings of access logs, header mutation values and local reply bodies,
compiled once when the config loads.

A text format such as::

    [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%" %RESPONSE_CODE%

is parsed into literal text and operators. An operator is a plain function
C{op(streamInfo, requestHeaders, responseHeaders, responseTrailers)}
returning a C{str}, an C{int} or C{None} (not known: printed C{-}, or
C{null} in JSON). Formatting one line is then a loop over prepared pairs of
C{(literal, operator)}, with no parsing or name lookup per request.

Header maps are read through C{get(lowercaseName)} returning C{bytes},
C{str} or C{None}. Pseudo-headers (C{:method}, C{:path}, C{:authority},
C{:scheme}, C{:status}) are first read from the attribute of the same name
(C{headers.method}...), then through C{get()}. Header bytes are decoded as
UTF-8 with C{surrogateescape}, so a writer that encodes the line the same
way reproduces the original bytes exactly, as Envoy does.

Behaviour copied from Envoy 1.40 (checked against the binary):
 - C{%%} is a literal C{%}; anything else after C{%} must be a whole
   command, or the format is rejected with Envoy's message.
 - a text line gets no newline added; a JSON line always ends with one.
 - JSON: keys sorted, compact separators; a value that is exactly one
   command keeps its type (numbers stay numbers, unknown is C{null}); a
   value mixing text and commands is a string in which unknown parts are
   C{-}; literal numbers, booleans, nulls, lists and nested objects are
   kept.
 - C{omit_empty_values}: unknown values print as nothing in text, and their
   keys (and objects left empty) are dropped in JSON.
"""

import json.encoder
import os
import re
import socket
import time

from txenvoy.config.errors import ConfigError, UnsupportedField
from txenvoy.config.fields import checkFields
from txenvoy.network.address import addressString

#: Envoy's format when an access log has no C{log_format}.
DEFAULT_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" '
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% "
    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" '
    '"%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" '
    '"%UPSTREAM_HOST%"\n'
)

#: What an unknown value prints as in text (and inside mixed JSON strings).
UNSPECIFIED = "-"

# Envoy's command grammar: %COMMAND(ARG):LENGTH%, the argument matched
# lazily so that a ")" inside it is only taken when nothing else fits.
_COMMAND = re.compile(r"%([A-Z0-9_]+)(?:\((.*?)\))?(?::([0-9]+))?%")
_HEADER_NAME = re.compile(r"^:?[A-Za-z0-9!#$&'*+\-.^_`|~]+$")
_SURROGATE = re.compile("[\udc80-\udcff]")
_encodeString = json.encoder.encode_basestring

# Largest max-length Envoy's parser accepts (it reads it as a size_t).
_MAX_LENGTH = 2**64 - 1

# Valid Envoy commands that txenvoy does not implement: rejected as
# unsupported rather than as unknown, so the message says which is which.
_KNOWN_UNSUPPORTED = frozenset(
    """
    CLUSTER_METADATA UPSTREAM_METADATA FILTER_STATE
    UPSTREAM_FILTER_STATE FILTER_CHAIN_NAME VIRTUAL_CLUSTER_NAME
    REQ_WITHOUT_QUERY GRPC_STATUS GRPC_STATUS_NUMBER UPSTREAM_WIRE_BYTES_SENT
    UPSTREAM_WIRE_BYTES_RECEIVED UPSTREAM_HEADER_BYTES_SENT
    UPSTREAM_HEADER_BYTES_RECEIVED DOWNSTREAM_WIRE_BYTES_SENT
    DOWNSTREAM_WIRE_BYTES_RECEIVED DOWNSTREAM_HEADER_BYTES_SENT
    DOWNSTREAM_HEADER_BYTES_RECEIVED REQUEST_HEADERS_BYTES
    RESPONSE_HEADERS_BYTES RESPONSE_TRAILERS_BYTES REQUEST_TX_DURATION
    UPSTREAM_REQUEST_ATTEMPT_COUNT UPSTREAM_HOST_NAME
    UPSTREAM_HOST_NAME_WITHOUT_PORT UPSTREAM_CONNECTION_ID
    UPSTREAM_CONNECTION_POOL_READY_DURATION UPSTREAM_PEER_SUBJECT
    UPSTREAM_PEER_ISSUER UPSTREAM_TLS_SESSION_ID UPSTREAM_TLS_CIPHER
    UPSTREAM_TLS_VERSION UPSTREAM_PEER_CERT DOWNSTREAM_PEER_URI_SAN
    DOWNSTREAM_LOCAL_URI_SAN DOWNSTREAM_PEER_SUBJECT DOWNSTREAM_LOCAL_SUBJECT
    DOWNSTREAM_PEER_ISSUER DOWNSTREAM_TLS_SESSION_ID DOWNSTREAM_TLS_CIPHER
    DOWNSTREAM_TLS_VERSION DOWNSTREAM_PEER_FINGERPRINT_256
    DOWNSTREAM_PEER_FINGERPRINT_1 DOWNSTREAM_PEER_SERIAL DOWNSTREAM_PEER_CERT
    DOWNSTREAM_PEER_CERT_V_START DOWNSTREAM_PEER_CERT_V_END
    DOWNSTREAM_TRANSPORT_FAILURE_REASON DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT_AND_IP
    DOWNSTREAM_PEER_CHAIN_FINGERPRINTS_256 DOWNSTREAM_PEER_CHAIN_SERIALS
    UNIQUE_ID STREAM_ID TRACE_ID ACCESS_LOG_TYPE
    CUSTOM_FLAGS COMMON_DURATION UPSTREAM_CLUSTER_RAW
    DOWNSTREAM_REMOTE_ADDRESS_ENDPOINT_ID QUERY_PARAM PATH
    """.split()
)


def _ms(seconds):
    # Durations come from float subtraction: nudge by a nanosecond so that
    # 0.7 - 0.4 prints 300 ms rather than 299, like Envoy's integer maths.
    return int(seconds * 1000 + 1e-6)


def _decode(value):
    if value is None:
        return None
    if value.__class__ is bytes:
        return value.decode("utf-8", "surrogateescape")
    if value.__class__ is str:
        return value
    return str(value)


def _hostPort(address):
    """
    Split an address (a C{(host, port)} tuple, a Twisted C{IAddress}, or a
    C{"host:port"} string) into C{(host, port)}; port is C{None} when there
    is none (a Unix socket path).
    """
    if address.__class__ is tuple:
        return address[0], address[1]
    if isinstance(address, str):
        host, sep, port = address.rpartition(":")
        if sep and port.isdigit():
            return host.strip("[]"), int(port)
        return address, None
    host = getattr(address, "host", None)
    if host is not None:
        return host, getattr(address, "port", None)
    name = getattr(address, "name", None)
    if name is not None:
        return _decode(name), None
    return str(address), None


def formatAddress(address):
    """
    Envoy's text for an address: C{1.2.3.4:80}, C{[::1]:80}, or a path.
    C{None} (unknown) stays C{None}.
    """
    if address is None:
        return None
    if address.__class__ is str:
        return address or None
    host, port = _hostPort(address)
    if port is None:
        return host
    return addressString(host, port)


def _addressWithoutPort(address):
    if address is None:
        return None
    host = _hostPort(address)[0]
    if host is not None and host.__class__ is not str:
        # A pipe (Unix socket) address: its path.
        host = str(host)
    return host or None


def _addressPort(address):
    if address is None:
        return None
    return _hostPort(address)[1]


# -- time ----------------------------------------------------------------


class TimeFormatter:
    """
    Formats a wall-clock time with Envoy's C{START_TIME} rules: C{strftime}
    plus C{%f} (nanoseconds, 9 digits), C{%1f}..C{%9f} (that many digits,
    truncated), C{%s} (seconds since the epoch), C{%E3S} / C{%E*S} (seconds
    with 3 / all fractional digits) and C{%Ez} (C{+00:00}). Times are UTC,
    or local time for C{START_TIME_LOCAL}.

    Everything but the fractions only changes once a second, so it is
    cached for the last second seen; the cache is one tuple replaced whole,
    which is safe to share between worker threads.
    """

    DEFAULT = "%Y-%m-%dT%H:%M:%E3SZ"

    def __init__(self, fmt, local=False):
        self._local = local
        self._segments = self._compile(fmt or self.DEFAULT)
        self._cache = (None, None)

    @staticmethod
    def _compile(fmt):
        # Segments: ("s", strftimeText), ("e",) epoch seconds, ("z",) the
        # +hh:mm offset, ("f", digits) a fraction, (".", digits) a fraction
        # after a dot (%E<n>S), (".*",) significant fraction digits (%E*S).
        segments = []
        chunk = []

        def special(segment):
            if chunk:
                segments.append(("s", "".join(chunk)))
                del chunk[:]
            segments.append(segment)

        i = 0
        n = len(fmt)
        while i < n:
            c = fmt[i]
            if c != "%" or i + 1 >= n:
                chunk.append(c)
                i += 1
                continue
            nxt = fmt[i + 1]
            after = fmt[i + 2] if i + 2 < n else ""
            if nxt == "f":
                special(("f", 9))
                i += 2
            elif nxt == "s":
                special(("e",))
                i += 2
            elif nxt in "123456789" and after == "f":
                special(("f", int(nxt)))
                i += 3
            elif nxt == "E" and after == "z":
                special(("z",))
                i += 3
            elif nxt == "E" and (after.isdigit() or after == "*") and fmt[i + 3:i + 4] == "S":
                chunk.append("%S")
                special((".*",) if after == "*" else (".", int(after)))
                i += 4
            else:
                chunk.append(fmt[i:i + 2])
                i += 2
        if chunk:
            segments.append(("s", "".join(chunk)))
        return tuple(segments)

    def format(self, when):
        """@param when: seconds since the epoch (a float)."""
        micros = round(when * 1000000)
        seconds, micros = divmod(micros, 1000000)
        cachedSecond, parts = self._cache
        if cachedSecond != seconds:
            parts = self._secondParts(seconds)
            self._cache = (seconds, parts)
        nanos = "%06d000" % (micros,)
        out = []
        for segment, part in zip(self._segments, parts):
            if part is not None:
                out.append(part)
                continue
            kind = segment[0]
            if kind == "f":
                out.append(nanos[:segment[1]])
            elif kind == ".":
                if segment[1]:
                    out.append("." + nanos[:segment[1]])
            else:
                significant = nanos.rstrip("0")
                if significant:
                    out.append("." + significant)
        return "".join(out)

    def _secondParts(self, seconds):
        tm = time.localtime(seconds) if self._local else time.gmtime(seconds)
        parts = []
        for segment in self._segments:
            kind = segment[0]
            if kind == "s":
                parts.append(_strftime(segment[1], tm))
            elif kind == "e":
                parts.append(str(seconds))
            elif kind == "z":
                offset = tm.tm_gmtoff or 0
                sign = "+" if offset >= 0 else "-"
                offset = abs(offset) // 60
                parts.append("%s%02d:%02d" % (sign, offset // 60, offset % 60))
            else:
                parts.append(None)
        return tuple(parts)


def _strftime(fmt, tm):
    # strftime(3) stops at a NUL, and Python's refuses one: it is written
    # as it is, between the formatted pieces around it.
    if "\0" in fmt:
        return "\0".join([time.strftime(piece, tm) for piece in fmt.split("\0")])
    return time.strftime(fmt, tm)


# -- operators ------------------------------------------------------------


class _Command:
    """How one command name accepts its argument and length."""

    def __init__(self, build, argument="none", length=False):
        self.build = build
        self.argument = argument  # "none", "optional" or "required"
        self.length = length


def _simple(get):
    """A command taking no argument: C{get(streamInfo)}."""
    return _Command(lambda arg, path: lambda si, rq, rs, tr: get(si))


def _nonEmpty(value):
    return value or None


def _details(value):
    # Envoy keeps details single-token so a line splits on spaces.
    return value.replace(" ", "_") if value else None


def _elapsedMs(si, attribute):
    mono = getattr(si, attribute, None)
    if mono is None:
        return None
    return _ms(si.elapsed(mono))


def _responseTxDuration(si):
    first = getattr(si, "firstUpstreamRxMonotonic", None)
    last = getattr(si, "lastDownstreamTxMonotonic", None)
    if first is None or last is None:
        return None
    return _ms(last - first)


def _directRemote(si):
    address = si.downstreamDirectRemoteAddress
    return address if address is not None else si.downstreamRemoteAddress


_PSEUDO_ATTRIBUTES = {
    ":method": "method",
    ":path": "path",
    ":authority": "authority",
    ":scheme": "scheme",
    ":status": "status",
}


def _headerReader(name):
    """
    A function reading one header (lowercase C{name}) from a header map,
    returning C{str} or C{None}.
    """
    attribute = _PSEUDO_ATTRIBUTES.get(name)
    if attribute is None:
        def read(headers):
            value = headers.get(name)
            if value is None:
                return None
            if value.__class__ is bytes:
                return value.decode("utf-8", "surrogateescape")
            return _decode(value)

        return read

    fallbacks = (name, "host") if name == ":authority" else (name,)

    def readPseudo(headers):
        value = getattr(headers, attribute, None)
        if value is None:
            get = getattr(headers, "get", None)
            if get is None:
                return None
            for key in fallbacks:
                value = get(key)
                if value is not None:
                    break
        return _decode(value)

    return readPseudo


def _parseHeaderArgument(command, argument, path):
    if not argument:
        raise _error(path, "%s requires parameters" % (command,))
    names = argument.split("?")
    if len(names) > 2:
        raise _error(
            path, "More than 1 alternative header specified in token: %s" % (argument,)
        )
    names = [n for n in names if n]
    if not names:
        raise _error(path, "%s requires parameters" % (command,))
    for n in names:
        if not _HEADER_NAME.match(n):
            raise _error(
                path,
                "Invalid header configuration. Format string contains invalid characters.",
            )
    return [n.lower() for n in names]


def _headerCommand(which):
    def build(argument, path, command, maxLength):
        readers = [_headerReader(n) for n in _parseHeaderArgument(command, argument, path)]
        if which == "request":
            def pick(si, rq, rs, tr):
                return rq
        elif which == "response":
            def pick(si, rq, rs, tr):
                return rs
        else:
            def pick(si, rq, rs, tr):
                return tr if tr is not None else getattr(si, "responseTrailers", None)

        if len(readers) == 1:
            (read,) = readers

            def op(si, rq, rs, tr):
                headers = pick(si, rq, rs, tr)
                if headers is None:
                    return None
                return read(headers)
        else:
            first, second = readers

            def op(si, rq, rs, tr):
                headers = pick(si, rq, rs, tr)
                if headers is None:
                    return None
                value = first(headers)
                return value if value is not None else second(headers)

        return _truncated(op, maxLength)

    return _Command(build, argument="required", length=True)


def _truncated(op, maxLength):
    if maxLength is None:
        return op

    def truncated(si, rq, rs, tr):
        value = op(si, rq, rs, tr)
        if value is None:
            return None
        return value[:maxLength]

    return truncated


def _startTime(local):
    def build(argument, path):
        formatter = TimeFormatter(argument, local=local)
        fmt = formatter.format
        return lambda si, rq, rs, tr: fmt(si.startTime)

    return _Command(build, argument="optional")


def _emitTime():
    def build(argument, path):
        fmt = TimeFormatter(argument).format
        return lambda si, rq, rs, tr: fmt(time.time())

    return _Command(build, argument="optional")


def _environment():
    def build(argument, path, command, maxLength):
        if not argument:
            raise _error(path, "ENVIRONMENT requires parameters")
        # Envoy reads the variable once, and prints "-" for a missing one
        # even in JSON.
        value = os.environ.get(argument, UNSPECIFIED)
        if maxLength is not None:
            value = value[:maxLength]
        return lambda si, rq, rs, tr: value

    return _Command(build, argument="required", length=True)


def _metadataText(value):
    """
    A metadata value as Envoy prints it in text: strings bare, the rest as
    JSON, a struct's keys in order (as protobuf prints a C{Struct}'s map).
    """
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 53:
        return str(int(value))
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _dynamicMetadata():
    def build(argument, path, command, maxLength):
        namespace, _, keys = argument.partition(":")
        if not namespace:
            raise _error(path, "DYNAMIC_METADATA requires parameters")
        keys = keys.split(":") if keys else []

        def op(si, rq, rs, tr):
            value = getattr(si, "dynamicMetadata", {}).get(namespace)
            for key in keys:
                if not isinstance(value, dict):
                    return None
                value = value.get(key)
            if value is None:
                return None
            return _metadataText(value)

        return _truncated(op, maxLength)

    return _Command(build, argument="required", length=True)


def _hostname():
    def build(argument, path):
        name = socket.gethostname() or None
        return lambda si, rq, rs, tr: name

    return _Command(build)


_COMMANDS = {
    "START_TIME": _startTime(False),
    "START_TIME_LOCAL": _startTime(True),
    "EMIT_TIME": _emitTime(),
    "DOWNSTREAM_REMOTE_ADDRESS": _simple(
        lambda si: formatAddress(si.downstreamRemoteAddress)),
    "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": _simple(
        lambda si: _addressWithoutPort(si.downstreamRemoteAddress)),
    "DOWNSTREAM_REMOTE_PORT": _simple(
        lambda si: _addressPort(si.downstreamRemoteAddress)),
    "DOWNSTREAM_DIRECT_REMOTE_ADDRESS": _simple(
        lambda si: formatAddress(_directRemote(si))),
    "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT": _simple(
        lambda si: _addressWithoutPort(_directRemote(si))),
    "DOWNSTREAM_DIRECT_REMOTE_PORT": _simple(
        lambda si: _addressPort(_directRemote(si))),
    "DOWNSTREAM_LOCAL_ADDRESS": _simple(
        lambda si: formatAddress(si.downstreamLocalAddress)),
    "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT": _simple(
        lambda si: _addressWithoutPort(si.downstreamLocalAddress)),
    "DOWNSTREAM_LOCAL_PORT": _simple(
        lambda si: _addressPort(si.downstreamLocalAddress)),
    "UPSTREAM_HOST": _simple(lambda si: formatAddress(si.upstreamHost)),
    "UPSTREAM_REMOTE_ADDRESS": _simple(lambda si: formatAddress(si.upstreamHost)),
    "UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": _simple(
        lambda si: _addressWithoutPort(si.upstreamHost)),
    "UPSTREAM_REMOTE_PORT": _simple(lambda si: _addressPort(si.upstreamHost)),
    "UPSTREAM_CLUSTER": _simple(lambda si: si.upstreamCluster or None),
    "UPSTREAM_LOCAL_ADDRESS": _simple(
        lambda si: formatAddress(si.upstreamLocalAddress)),
    "UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT": _simple(
        lambda si: _addressWithoutPort(si.upstreamLocalAddress)),
    "UPSTREAM_LOCAL_PORT": _simple(lambda si: _addressPort(si.upstreamLocalAddress)),
    "UPSTREAM_TRANSPORT_FAILURE_REASON": _simple(
        lambda si: _details(si.upstreamTransportFailureReason)),
    "BYTES_RECEIVED": _simple(lambda si: si.bytesReceived),
    "BYTES_SENT": _simple(lambda si: si.bytesSent),
    "DURATION": _simple(lambda si: _ms(si.duration())),
    "REQUEST_DURATION": _simple(
        lambda si: _elapsedMs(si, "lastDownstreamRxMonotonic")),
    "RESPONSE_DURATION": _simple(
        lambda si: _elapsedMs(si, "firstUpstreamRxMonotonic")),
    "RESPONSE_TX_DURATION": _simple(_responseTxDuration),
    "RESPONSE_FLAGS": _simple(lambda si: si.responseFlags()),
    # Envoy prints 0 when no HTTP status was sent (every TCP proxy line).
    "RESPONSE_CODE": _simple(lambda si: si.responseCode or 0),
    "RESPONSE_CODE_DETAILS": _simple(lambda si: _details(si.responseCodeDetails)),
    "CONNECTION_TERMINATION_DETAILS": _simple(
        lambda si: _details(si.connectionTerminationDetails)),
    "PROTOCOL": _simple(lambda si: si.protocol or None),
    "REQUESTED_SERVER_NAME": _simple(lambda si: si.requestedServerName or None),
    "ROUTE_NAME": _simple(lambda si: si.routeName or None),
    # Set by the HTTP connection manager while it formats a local reply.
    "LOCAL_REPLY_BODY": _simple(lambda si: getattr(si, "localReplyBody", None)),
    "CONNECTION_ID": _simple(lambda si: si.connectionId or 0),
    "HOSTNAME": _hostname(),
    "REQ": _headerCommand("request"),
    "RESP": _headerCommand("response"),
    "TRAILER": _headerCommand("trailer"),
    "ENVIRONMENT": _environment(),
    "DYNAMIC_METADATA": _dynamicMetadata(),
}


def supportedCommands():
    """@return: the sorted names of every command txenvoy formats."""
    return sorted(_COMMANDS)


def _error(path, message):
    return ConfigError("%s: %s" % (path, message) if path else message)


def _buildOperator(command, argument, length, path):
    spec = _COMMANDS.get(command)
    if spec is None:
        if command in _KNOWN_UNSUPPORTED:
            raise UnsupportedField(path or "format", "format command %%%s%%" % (command,))
        raise _error(path, "Not supported field in StreamInfo: %s" % (command,))
    if length is not None:
        maxLength = int(length)
        if maxLength > _MAX_LENGTH:
            raise _error(path, "Length must be an integer, given: %s" % (length,))
    else:
        maxLength = None
    if spec.argument == "none":
        if argument is not None or maxLength is not None:
            raise _error(path, "%s does not take any parameters or length" % (command,))
        return spec.build(None, path)
    if spec.argument == "required" and not argument:
        raise _error(path, "%s requires parameters" % (command,))
    if not spec.length:
        if maxLength is not None:
            raise _error(path, "%s does not allow length to be specified." % (command,))
        return spec.build(argument, path)
    return spec.build(argument, path, command, maxLength)


def parseFormat(text, path=""):
    """
    Split an Envoy format string into pieces.

    @return: C{(pairs, tail)}: a list of C{(literalBefore, operator)} and the
        literal text after the last operator.
    @raise ConfigError: with Envoy's message for a bad format string.
    """
    pairs = []
    literal = []
    pos = 0
    n = len(text)
    while pos < n:
        c = text[pos]
        if c != "%":
            literal.append(c)
            pos += 1
            continue
        if pos + 1 < n and text[pos + 1] == "%":
            literal.append("%")
            pos += 2
            continue
        m = _COMMAND.match(text, pos)
        if m is None:
            raise _error(
                path,
                "Incorrect configuration: %s. Couldn't find valid command at position %d"
                % (text, pos),
            )
        command, argument, length = m.groups()
        pairs.append(("".join(literal), _buildOperator(command, argument, length, path)))
        literal = []
        pos = m.end()
    return pairs, "".join(literal)


# -- formatters -------------------------------------------------------------


class Formatter:
    """
    A compiled text format. Build with L{compileFormat}.

    @ivar text: the format string it was compiled from.
    """

    def __init__(self, text, pairs, tail, omitEmptyValues=False):
        self.text = text
        self._pairs = tuple(pairs)
        self._tail = tail
        self._missing = "" if omitEmptyValues else UNSPECIFIED

    def format(self, streamInfo, requestHeaders=None, responseHeaders=None,
               responseTrailers=None):
        """
        @return: the formatted line (no newline is added: a text format
            carries its own, as in Envoy).
        """
        missing = self._missing
        out = []
        append = out.append
        for literal, op in self._pairs:
            append(literal)
            value = op(streamInfo, requestHeaders, responseHeaders, responseTrailers)
            if value is None:
                append(missing)
            elif value.__class__ is str:
                append(value)
            else:
                append(str(value))
        append(self._tail)
        return "".join(out)


def compileFormat(text, omitEmptyValues=False, path=""):
    """
    Compile an Envoy text format string.

    @param path: the config field path, for error messages.
    @raise ConfigError: for an unknown command or a malformed string.
    @rtype: L{Formatter}
    """
    pairs, tail = parseFormat(text, path)
    return Formatter(text, pairs, tail, omitEmptyValues)


def jsonString(value):
    """
    A JSON string literal as Envoy writes it: valid UTF-8 is kept as is;
    a value holding bytes that are not UTF-8 has every non-ASCII byte, quote
    and backslash written as C{\\u00XX}.
    """
    if _SURROGATE.search(value) is None:
        return _encodeString(value)
    raw = value.encode("utf-8", "surrogateescape")
    return '"%s"' % "".join(
        chr(b) if 0x20 <= b < 0x7F and b not in (0x22, 0x5C) else "\\u%04x" % b
        for b in raw
    )


def _jsonNumber(number):
    if number != number:
        return "null"
    if float(number).is_integer() and abs(number) < 2**63:
        return str(int(number))
    return repr(float(number))


def _jsonConstant(value):
    """Serialise a literal config value (no command in it)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (int, float)):
        return _jsonNumber(value)
    if isinstance(value, str):
        return jsonString(value)
    raise TypeError(value)


def _typedValue(op):
    def render(si, rq, rs, tr):
        value = op(si, rq, rs, tr)
        if value is None:
            return None
        if value.__class__ is str:
            return jsonString(value)
        if value.__class__ is int:
            return str(value)
        return _jsonNumber(value)

    return render


def _mixedValue(pairs, tail, missing):
    def render(si, rq, rs, tr):
        out = []
        append = out.append
        for literal, op in pairs:
            append(literal)
            value = op(si, rq, rs, tr)
            if value is None:
                append(missing)
            elif value.__class__ is str:
                append(value)
            else:
                append(str(value))
        append(tail)
        return jsonString("".join(out))

    return render


def _structToPython(struct):
    """A C{google.protobuf.Struct} (or a plain dict) as plain Python."""
    if isinstance(struct, dict):
        return struct
    from google.protobuf import json_format

    return json_format.MessageToDict(struct)


class _Template:
    """A JSON value that holds one or more commands."""

    def __init__(self, render, single):
        self.render = render
        self.single = single


def _compileJsonValue(value, omitEmpty, path):
    """
    @return: a JSON text (constant), a L{_Template}, a C{("map", [(key,
        node)])} or C{("list", [node])}, or C{None} for a literal null.
    """
    if isinstance(value, dict):
        fields = []
        for key in sorted(value):
            node = _compileJsonValue(value[key], omitEmpty, "%s.%s" % (path, key))
            fields.append((jsonString(key), node))
        return ("map", fields)
    if isinstance(value, list):
        return ("list", [
            _compileJsonValue(v, omitEmpty, "%s[%d]" % (path, i)) for i, v in enumerate(value)
        ])
    if isinstance(value, str) and "%" in value:
        pairs, tail = parseFormat(value, path)
        if len(pairs) == 1 and pairs[0][0] == "" and tail == "":
            return _Template(_typedValue(pairs[0][1]), single=True)
        if not pairs:
            return jsonString(tail)
        missing = "" if omitEmpty else UNSPECIFIED
        return _Template(_mixedValue(tuple(pairs), tail, missing), single=False)
    if value is None:
        return None
    return _jsonConstant(value)


def _flatten(node, pieces):
    """
    Lay a compiled JSON tree out as text pieces and templates, merging
    adjacent constant text, for the non-omitting formatter.
    """
    if node is None:
        pieces.append("null")
    elif isinstance(node, str):
        pieces.append(node)
    elif isinstance(node, _Template):
        render = node.render
        if node.single:
            def always(si, rq, rs, tr, render=render):
                text = render(si, rq, rs, tr)
                return "null" if text is None else text

            pieces.append(always)
        else:
            pieces.append(render)
    else:
        kind, items = node
        if kind == "map":
            pieces.append("{")
            for i, (key, child) in enumerate(items):
                if i:
                    pieces.append(",")
                pieces.append(key + ":")
                _flatten(child, pieces)
            pieces.append("}")
        else:
            pieces.append("[")
            for i, child in enumerate(items):
                if i:
                    pieces.append(",")
                _flatten(child, pieces)
            pieces.append("]")


def _renderOmitting(node, si, rq, rs, tr):
    """Render a compiled JSON tree, dropping unknown values; C{None} = omit."""
    if isinstance(node, str):
        return node
    if isinstance(node, _Template):
        return node.render(si, rq, rs, tr)
    kind, items = node
    if kind == "map":
        out = []
        for key, child in items:
            text = _renderOmitting(child, si, rq, rs, tr)
            if text is not None:
                out.append(key + ":" + text)
        if not out:
            return None
        return "{" + ",".join(out) + "}"
    out = []
    for child in items:
        text = _renderOmitting(child, si, rq, rs, tr)
        if text is not None:
            out.append(text)
    return "[" + ",".join(out) + "]"


def _dropNulls(node):
    # With omit_empty_values Envoy drops literal nulls while compiling.
    if node is None or isinstance(node, (str, _Template)):
        return node
    kind, items = node
    if kind == "map":
        return ("map", [(k, _dropNulls(c)) for k, c in items if c is not None])
    return ("list", [_dropNulls(c) for c in items if c is not None])


class JsonFormatter:
    """
    A compiled C{json_format}: one JSON object per line. Build with
    L{compileJsonFormat}.
    """

    def __init__(self, tree, omitEmptyValues=False):
        self._omit = omitEmptyValues
        if omitEmptyValues:
            self._tree = _dropNulls(tree)
            self._pairs = None
            return
        pieces = []
        _flatten(tree, pieces)
        pairs = []
        literal = []
        for piece in pieces:
            if isinstance(piece, str):
                literal.append(piece)
            else:
                pairs.append(("".join(literal), piece))
                literal = []
        self._pairs = tuple(pairs)
        self._tail = "".join(literal) + "\n"

    def format(self, streamInfo, requestHeaders=None, responseHeaders=None,
               responseTrailers=None):
        """@return: one JSON object and a newline."""
        if self._pairs is None:
            text = _renderOmitting(
                self._tree, streamInfo, requestHeaders, responseHeaders, responseTrailers
            )
            return (text or "{}") + "\n"
        out = []
        append = out.append
        for literal, render in self._pairs:
            append(literal)
            append(render(streamInfo, requestHeaders, responseHeaders, responseTrailers))
        append(self._tail)
        return "".join(out)


def compileJsonFormat(struct, omitEmptyValues=False, path=""):
    """
    Compile a C{json_format} (a C{google.protobuf.Struct} or a dict).

    @raise ConfigError: for a bad format string in any value.
    @rtype: L{JsonFormatter}
    """
    value = _structToPython(struct)
    tree = _compileJsonValue(value, omitEmptyValues, path)
    return JsonFormatter(tree, omitEmptyValues)


def _dataSourceText(source, path):
    which = source.WhichOneof("specifier")
    if which == "inline_string":
        return source.inline_string
    if which == "inline_bytes":
        return source.inline_bytes.decode("utf-8", "surrogateescape")
    if which == "filename":
        try:
            with open(source.filename, "rb") as f:
                return f.read().decode("utf-8", "surrogateescape")
        except OSError as e:
            raise ConfigError(
                "%s.filename: unable to read file: %s: %s"
                % (path, source.filename, e.strerror)
            )
    if which == "environment_variable":
        value = os.environ.get(source.environment_variable)
        if value is None:
            raise ConfigError(
                "%s.environment_variable: Environment variable doesn't exist: %s"
                % (path, source.environment_variable)
            )
        return value
    raise ConfigError("%s: a data source needs one of inline_string, inline_bytes, "
                      "filename or environment_variable" % (path,))


def formatterFromProto(logFormat, path=""):
    """
    Compile an C{envoy.config.core.v3.SubstitutionFormatString}
    (C{log_format}).

    @param path: the field path of C{log_format}, for messages.
    @return: a L{Formatter} or L{JsonFormatter}.
    """
    # content_type is the local reply's; an access log line has none.
    checkFields(logFormat, ("text_format", "json_format", "text_format_source",
                            "omit_empty_values", "formatters"), path, ("content_type",))
    if len(logFormat.formatters):
        raise UnsupportedField(path + ".formatters", "formatter extensions")
    omit = logFormat.omit_empty_values
    which = logFormat.WhichOneof("format")
    if which == "text_format":
        return compileFormat(logFormat.text_format, omit, path + ".text_format")
    if which == "text_format_source":
        sub = path + ".text_format_source"
        return compileFormat(_dataSourceText(logFormat.text_format_source, sub), omit, sub)
    if which == "json_format":
        return compileJsonFormat(logFormat.json_format, omit, path + ".json_format")
    return compileFormat(DEFAULT_FORMAT, omit, path)


def defaultFormatter():
    """The formatter for Envoy's default access log line."""
    return compileFormat(DEFAULT_FORMAT)


__all__ = [
    "DEFAULT_FORMAT",
    "UNSPECIFIED",
    "Formatter",
    "JsonFormatter",
    "TimeFormatter",
    "compileFormat",
    "compileJsonFormat",
    "defaultFormatter",
    "formatAddress",
    "formatterFromProto",
    "jsonString",
    "parseFormat",
    "supportedCommands",
]
