# -*- test-case-name: tests.http.http2.test_server_codec -*-
"""
C{http2_protocol_options} (Envoy's C{config.core.v3.Http2ProtocolOptions}),
compiled once at config time, with Envoy 1.40's defaults, and the root
C{http2.*} stats its HTTP/2 codecs keep.
"""

import attr

from txenvoy.config.errors import ConfigError
from txenvoy.config.fields import checkFields
from txenvoy.stats.per_worker import PerWorker, StatsStruct

__all__ = ["Http2Options", "DEFAULT_HTTP2_OPTIONS", "http2OptionsFromProto", "http2StatsFor",
           "HTTP2_OPTION_FIELDS"]

#: The C{Http2ProtocolOptions} fields txenvoy honours.
HTTP2_OPTION_FIELDS = (
    "max_concurrent_streams", "initial_stream_window_size",
    "initial_connection_window_size", "hpack_table_size", "allow_connect",
    "connection_keepalive", "max_outbound_frames", "max_outbound_control_frames",
    "max_consecutive_inbound_frames_with_empty_payload",
    "max_inbound_priority_frames_per_stream",
    "max_inbound_window_update_frames_per_data_frame_sent",
    "override_stream_error_on_invalid_http_message",
)

# Envoy's own bounds (its proto validation rules).
_WINDOW_MIN = 65535
_WINDOW_MAX = 2147483647


@attr.s(frozen=True, slots=True)
class Http2Options:
    """
    The HTTP/2 settings of one codec, Envoy 1.40's defaults unless
    configured (observed on its SETTINGS frame: 1024 streams, a 16 MiB
    stream window, a 24 MiB connection window).

    @ivar keepaliveInterval: seconds between PINGs (C{connection_keepalive.interval}),
        or C{None}.
    @ivar keepaliveTimeout: seconds to wait for a PING's ACK before closing.
    @ivar streamErrorOnInvalidHttpMessage: a request head HTTP/2 forbids
        resets only its stream (C{override_stream_error_on_invalid_http_message},
        else the connection manager's C{stream_error_on_invalid_http_message});
        by default it ends the connection.
    """

    maxConcurrentStreams = attr.ib(default=1024)
    initialStreamWindowSize = attr.ib(default=16777216)
    initialConnectionWindowSize = attr.ib(default=25165824)
    hpackTableSize = attr.ib(default=4096)
    allowConnect = attr.ib(default=False)
    keepaliveInterval = attr.ib(default=None)
    keepaliveTimeout = attr.ib(default=20.0)
    maxOutboundFrames = attr.ib(default=10000)
    maxOutboundControlFrames = attr.ib(default=1000)
    maxConsecutiveInboundFramesWithEmptyPayload = attr.ib(default=1)
    maxInboundPriorityFramesPerStream = attr.ib(default=100)
    maxInboundWindowUpdateFramesPerDataFrameSent = attr.ib(default=10)
    streamErrorOnInvalidHttpMessage = attr.ib(default=False)


DEFAULT_HTTP2_OPTIONS = Http2Options()


def _seconds(duration):
    return duration.seconds + duration.nanos / 1e9


def http2OptionsFromProto(message, path, upstream=False):
    """
    Compile an C{Http2ProtocolOptions}.

    @param message: the proto message.
    @param path: its field path, for errors.
    @param upstream: a cluster's options: Envoy's upstream defaults (no
        stream limit of its own: the host's SETTINGS decide).
    @raise ConfigError: for a value Envoy refuses, or a field txenvoy does
        not support.
    """
    checkFields(message, HTTP2_OPTION_FIELDS, path)
    values = {"maxConcurrentStreams": 2147483647} if upstream else {}

    def uint(field, name, low=None, high=None):
        if message.HasField(field):
            value = getattr(message, field).value
            if (low is not None and value < low) or (high is not None and value > high):
                raise ConfigError("%s.%s: value must be inside range [%s, %s]"
                                  % (path, field, low, high))
            values[name] = value

    uint("max_concurrent_streams", "maxConcurrentStreams", 1, 2147483647)
    uint("initial_stream_window_size", "initialStreamWindowSize", _WINDOW_MIN, _WINDOW_MAX)
    uint("initial_connection_window_size", "initialConnectionWindowSize",
         _WINDOW_MIN, _WINDOW_MAX)
    uint("hpack_table_size", "hpackTableSize")
    uint("max_outbound_frames", "maxOutboundFrames", 1)
    uint("max_outbound_control_frames", "maxOutboundControlFrames", 1)
    uint("max_consecutive_inbound_frames_with_empty_payload",
         "maxConsecutiveInboundFramesWithEmptyPayload")
    uint("max_inbound_priority_frames_per_stream", "maxInboundPriorityFramesPerStream")
    uint("max_inbound_window_update_frames_per_data_frame_sent",
         "maxInboundWindowUpdateFramesPerDataFrameSent", 1)
    if message.allow_connect:
        values["allowConnect"] = True
    if message.HasField("override_stream_error_on_invalid_http_message"):
        if upstream:
            raise ConfigError("%s.override_stream_error_on_invalid_http_message: not supported "
                              "by txenvoy on upstream connections" % (path,))
        values["streamErrorOnInvalidHttpMessage"] = \
            message.override_stream_error_on_invalid_http_message.value
    if message.HasField("connection_keepalive"):
        keepalive = message.connection_keepalive
        kpath = path + ".connection_keepalive"
        checkFields(keepalive, ("interval", "timeout"), kpath)
        if not keepalive.HasField("timeout"):
            raise ConfigError("%s.timeout: value is required" % (kpath,))
        if keepalive.HasField("interval"):
            values["keepaliveInterval"] = _seconds(keepalive.interval)
        values["keepaliveTimeout"] = _seconds(keepalive.timeout)
    return Http2Options(**values)


_COUNTERS = (
    "rx_reset", "tx_reset", "header_overflow", "headers_cb_no_stream", "trailers",
    "outbound_flood", "outbound_control_flood", "inbound_empty_frames_flood",
    "inbound_priority_frames_flood", "inbound_window_update_frames_flood",
    "rx_messaging_error", "goaway_sent", "keepalive_timeout", "stream_refused_errors",
    "dropped_headers_with_underscores", "requests_rejected_with_underscores_in_headers",
    "tx_flush_timeout", "metadata_empty_frames", "header_list_size_too_large",
)
_GAUGES = ("streams_active", "pending_send_bytes", "outbound_frames_active",
           "outbound_control_frames_active", "deferred_stream_close")

#: One worker's root C{http2.*} stats (Envoy keeps them outside any prefix,
#: shared by every listener and cluster).
http2StatsFor = PerWorker(
    lambda dispatcher: StatsStruct(dispatcher.stats, "http2.", _COUNTERS, _GAUGES)).get
