# -*- test-case-name: tests.upstream.test_grpc_health_probe -*-
"""
One host's gRPC health check connection (Envoy's
C{GrpcActiveHealthCheckSession}): HTTP/2 with prior knowledge, one
C{grpc.health.v1.Health/Check} call per check, on one stream each.

The messages are two one-field protobufs (C{HealthCheckRequest.service},
C{HealthCheckResponse.status}), written and read here by hand rather than
pulling in generated code for them.
"""

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (ConnectionTerminated, DataReceived, ResponseReceived, StreamEnded,
                       StreamReset, TrailersReceived)
from h2.exceptions import H2Error

PATH = b"/grpc.health.v1.Health/Check"

#: C{HealthCheckResponse.ServingStatus.SERVING}.
SERVING = 1

# What a check came to.
SUCCESS = "success"
FAILURE = "failure"
#: The connection cannot carry another check (GOAWAY, protocol error).
BROKEN = "broken"


def _varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encodeRequest(service):
    """@return: the gRPC frame of C{HealthCheckRequest{service}}."""
    raw = service.encode("utf-8")
    message = b"\x0a" + _varint(len(raw)) + raw if raw else b""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def _readVarint(data, i):
    value = shift = 0
    while i < len(data):
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i
    raise ValueError("truncated varint")


def decodeStatus(body):
    """
    @param body: the response's gRPC frames.
    @return: the C{status} of the first C{HealthCheckResponse}, C{0}
        (UNKNOWN) when it has none, or C{None} when the body is not one
        well-formed uncompressed message.
    """
    if len(body) < 5 or body[0] != 0:
        return None
    length = int.from_bytes(body[1:5], "big")
    message = body[5:5 + length]
    if len(message) != length:
        return None
    status = 0
    i = 0
    try:
        while i < len(message):
            tag, i = _readVarint(message, i)
            wireType = tag & 7
            if wireType == 0:
                value, i = _readVarint(message, i)
                if tag >> 3 == 1:
                    status = value
            elif wireType == 2:
                length, i = _readVarint(message, i)
                i += length
            else:
                return None
    except ValueError:
        return None
    return status


class GrpcHealthProbe:
    """
    The HTTP/2 side of one host's gRPC checks over one connection.

    C{check()} returns the bytes to write for a new call; C{feed(data)}
    returns C{(bytesToWrite, outcome)} where C{outcome} is C{None} while
    the call is open, else L{SUCCESS}, L{FAILURE} or L{BROKEN}.
    """

    def __init__(self, authority, service, headersToAdd=()):
        """
        @param authority: the C{:authority} (bytes).
        @param service: C{grpc_health_check.service_name}.
        @param headersToAdd: C{[(name, value)]} bytes, C{initial_metadata}.
        """
        self._authority = authority
        self._request = encodeRequest(service)
        self._extra = list(headersToAdd)
        self._conn = H2Connection(H2Configuration(client_side=True, header_encoding=None,
                                                  validate_inbound_headers=False))
        self._conn.initiate_connection()
        #: The host's first bytes until they show its SETTINGS frame.
        self._preface = b""
        self._stream = None
        self._status = None
        self._grpcStatus = None
        self._body = b""
        self.broken = False

    def check(self):
        """Start a call; @return: the bytes to write."""
        conn = self._conn
        stream = self._stream = conn.get_next_available_stream_id()
        self._status = self._grpcStatus = None
        self._body = b""
        headers = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", PATH),
                   (b":authority", self._authority), (b"content-type", b"application/grpc"),
                   (b"te", b"trailers")] + self._extra
        conn.send_headers(stream, headers)
        conn.send_data(stream, self._request, end_stream=True)
        return conn.data_to_send()

    def feed(self, data):
        """Bytes from the host; see the class docstring."""
        conn = self._conn
        if self._preface is not None:
            # The host's first frame must be a SETTINGS frame of a sane
            # size. h2 would wait for a frame as long as "HTT" reads (4.7
            # MB) from a host answering HTTP/1.1; this fails it now, as
            # nghttp2's header check does in Envoy.
            self._preface += data
            if len(self._preface) < 9:
                return b"", None
            header = self._preface[:9]
            data, self._preface = self._preface, None
            if header[3] != 0x4 or int.from_bytes(header[:3], "big") > 16384:
                self.broken = True
                return b"", BROKEN
        try:
            events = conn.receive_data(data)
        except H2Error:
            self.broken = True
            return b"", BROKEN
        outcome = None
        for event in events:
            if isinstance(event, ConnectionTerminated):
                self.broken = True
                if outcome is None and self._stream is not None:
                    outcome = BROKEN
            elif getattr(event, "stream_id", None) != self._stream:
                continue
            elif isinstance(event, ResponseReceived):
                self._headers(event.headers)
            elif isinstance(event, TrailersReceived):
                self._headers(event.headers)
            elif isinstance(event, DataReceived):
                self._body += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, StreamEnded):
                outcome = self._verdict()
                self._stream = None
            elif isinstance(event, StreamReset):
                outcome = FAILURE
                self._stream = None
        return conn.data_to_send(), outcome

    def _headers(self, headers):
        for name, value in headers:
            if name == b":status":
                self._status = value
            elif name == b"grpc-status":
                self._grpcStatus = value

    def _verdict(self):
        # Envoy: a 200, grpc-status 0 (in trailers, or a trailers-only
        # answer) and a HealthCheckResponse saying SERVING.
        if self._status != b"200" or self._grpcStatus != b"0":
            return FAILURE
        return SUCCESS if decodeStatus(self._body) == SERVING else FAILURE

    def close(self):
        """@return: the GOAWAY to write before closing."""
        if self.broken:
            return b""
        self._conn.close_connection(ErrorCodes.NO_ERROR)
        return self._conn.data_to_send()
