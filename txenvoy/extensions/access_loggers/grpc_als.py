# -*- test-case-name: tests.extensions.access_loggers.test_grpc_als -*-
"""
C{envoy.access_loggers.http_grpc} and C{envoy.access_loggers.tcp_grpc}:
Envoy's gRPC access log service (C{envoy.service.accesslog.v3
.AccessLogService/StreamAccessLogs}, client streaming). Each finished
request (C{HTTPAccessLogEntry}) or connection (C{TCPAccessLogEntry}) is
built from its stream info on the worker, buffered under a lock and sent
by the main thread every C{buffer_flush_interval} (default 1 s) or once
C{buffer_size_bytes} (default 16384) wait, over one stream per logger
whose first message names the node and the C{log_name}, as Envoy's.

The stream is a grpcio call fed from the reactor
(L{txenvoy.grpc.streaming.ClientStreamingCall}): the main thread only
queues messages. A service that is down or slow costs bounded memory:
past four batches not yet taken by grpcio, or twice C{buffer_size_bytes}
waiting, entries are dropped and counted; a stream that ends is opened
again at the next flush. Stats C{access_logs.grpc_access_log.logs_written},
C{logs_dropped}, C{grpc_entries_flushed} and C{grpc_entries_flush_failed}.
"""

from twisted.logger import Logger
from zope.interface import implementer

from txenvoy.accesslog.buffered import RecordBuffer
from txenvoy.config.errors import ConfigError
from txenvoy.config.fields import checkFields, durationSeconds
from txenvoy.config.node import describeNode
from txenvoy.config.registry import Category, extension
from txenvoy.grpc.async_client import compileEnvoyGrpc, mainThreadHosts
from txenvoy.grpc.streaming import ClientStreamingCall, openChannel
from txenvoy.interfaces import IAccessLogger

log = Logger(namespace="grpc_access_log")

METHOD = "/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs"
STAT_PREFIX = "access_logs.grpc_access_log."
#: Batches handed to grpcio and not yet sent, past which entries are dropped.
MAX_QUEUED = 4

_COMMON_FIELDS = frozenset(("log_name", "grpc_service", "transport_api_version",
                            "buffer_flush_interval", "buffer_size_bytes"))
_HTTP_FIELDS = ("common_config", "additional_request_headers_to_log",
                "additional_response_headers_to_log")
_PROTOCOLS = {"HTTP/1.0": 1, "HTTP/1.1": 2, "HTTP/2": 3, "HTTP/3": 4}
_METHODS = {}


def _timestamp(message, seconds):
    micros = int(round(seconds * 1e6))
    message.seconds, message.nanos = divmod(micros, 1000000)
    message.nanos *= 1000


def _duration(message, seconds):
    nanos = int(round(seconds * 1e9))
    message.seconds, message.nanos = divmod(nanos, 1000000000)


def _address(message, address):
    if isinstance(address, str):
        host, _, port = address.rpartition(":")
        address = (host.strip("[]"), int(port) if port.isdigit() else 0)
    message.socket_address.address = address[0]
    message.socket_address.port_value = address[1]


def _methodNumber(method):
    from envoy.config.core.v3 import base_pb2

    number = _METHODS.get(method)
    if number is None:
        number = _METHODS[method] = base_pb2.RequestMethod.Value(method) \
            if method in base_pb2.RequestMethod.keys() else 0
    return number


def fillCommon(common, streamInfo, logType):
    """C{AccessLogCommon} from a stream info, as Envoy's gRPC access log fills it."""
    si = streamInfo
    if si.downstreamRemoteAddress:
        _address(common.downstream_remote_address, si.downstreamRemoteAddress)
    if si.downstreamLocalAddress:
        _address(common.downstream_local_address, si.downstreamLocalAddress)
    _timestamp(common.start_time, si.startTime)
    for attribute, field in (("lastDownstreamRxMonotonic", "time_to_last_rx_byte"),
                             ("firstUpstreamTxMonotonic", "time_to_first_upstream_tx_byte"),
                             ("lastUpstreamTxMonotonic", "time_to_last_upstream_tx_byte"),
                             ("firstUpstreamRxMonotonic", "time_to_first_upstream_rx_byte"),
                             ("lastUpstreamRxMonotonic", "time_to_last_upstream_rx_byte"),
                             ("firstDownstreamTxMonotonic", "time_to_first_downstream_tx_byte"),
                             ("lastDownstreamTxMonotonic", "time_to_last_downstream_tx_byte")):
        at = si.elapsed(getattr(si, attribute, None))
        if at is not None:
            _duration(getattr(common, field), at)
    if si.upstreamHost:
        _address(common.upstream_remote_address, si.upstreamHost)
    if si.upstreamLocalAddress:
        _address(common.upstream_local_address, si.upstreamLocalAddress)
    if si.upstreamCluster:
        common.upstream_cluster = si.upstreamCluster
    direct = si.downstreamDirectRemoteAddress or si.downstreamRemoteAddress
    if direct:
        _address(common.downstream_direct_remote_address, direct)
    _duration(common.duration, si.duration())
    if si.upstreamHost:
        common.upstream_request_attempt_count = max(1, getattr(si, "attemptCount", 1))
    if si.upstreamTransportFailureReason:
        common.upstream_transport_failure_reason = si.upstreamTransportFailureReason
    if si.routeName:
        common.route_name = si.routeName
    flags = si.responseFlags()
    if flags and flags != "-":
        _responseFlags(common.response_flags, flags)
    common.access_log_type = logType


_FLAG_FIELDS = {
    "LH": "failed_local_healthcheck", "UH": "no_healthy_upstream",
    "UT": "upstream_request_timeout", "LR": "local_reset", "UR": "upstream_remote_reset",
    "UF": "upstream_connection_failure", "UC": "upstream_connection_termination",
    "UO": "upstream_overflow", "NR": "no_route_found", "DI": "delay_injected",
    "FI": "fault_injected", "RL": "rate_limited", "URX": "upstream_retry_limit_exceeded",
    "SI": "stream_idle_timeout", "DPE": "downstream_protocol_error",
    "UMSDR": "upstream_max_stream_duration_reached", "NC": "no_cluster_found",
    "DT": "duration_timeout", "UPE": "upstream_protocol_error", "OM": "overload_manager",
    "DC": "downstream_connection_termination", "DR": "downstream_remote_reset",
    "RLSE": "rate_limit_service_error", "IH": "invalid_envoy_request_headers",
    "NFCF": "no_filter_config_found",
}


def _responseFlags(message, flags):
    for flag in flags.split(","):
        field = _FLAG_FIELDS.get(flag)
        if field is not None:
            setattr(message, field, True)


@implementer(IAccessLogger)
class GrpcAccessLogger:
    """
    One log's buffer and stream. C{build(streamInfo, request, response)}
    makes an entry (an C{HTTPAccessLogEntry} or C{TCPAccessLogEntry}),
    C{kind} names the message's field (C{http_logs}, C{tcp_logs}).
    """

    def __init__(self, reactor, host, identifier, kind, build, stats, openCall,
                 flushInterval=1.0, bufferSizeBytes=16384):
        self._reactor = reactor
        self._host = host
        self._identifier = identifier
        self._kind = kind
        self._build = build
        self._openCall = openCall
        self._dropped = stats.counter(STAT_PREFIX + "logs_dropped")
        self._flushed = stats.counter(STAT_PREFIX + "grpc_entries_flushed")
        self._failed = stats.counter(STAT_PREFIX + "grpc_entries_flush_failed")
        self.buffer = RecordBuffer(reactor, self.flush,
                                   stats.counter(STAT_PREFIX + "logs_written"), self._dropped,
                                   flushInterval, bufferSizeBytes)
        self._call = None

    def start(self):
        """Start the flush timer on the main reactor."""
        self.buffer.start()

    def stop(self):
        self.buffer.stop()
        if self._call is not None:
            self._call.cancel()
            self._call = None

    def log(self, streamInfo, requestHeaders=None, responseHeaders=None,
            responseTrailers=None):
        """Build one entry and buffer it (any worker thread; never blocks)."""
        entry = self._build(streamInfo, requestHeaders, responseHeaders)
        self.buffer.add(entry, entry.ByteSize())

    def flush(self):
        """Send what is buffered as one message on the stream (main thread)."""
        from envoy.service.accesslog.v3 import als_pb2

        entries = self.buffer.take()
        if not entries:
            return
        call = self._call
        message = als_pb2.StreamAccessLogsMessage()
        if call is None or not call.active:
            address = self._host()
            if address is None:
                self._lost(len(entries))
                return
            call = self._call = self._openCall(address)
            call.start(self._onDone(call))
            message.identifier.CopyFrom(self._identifier)
        elif call.queued() >= MAX_QUEUED:
            # The service does not keep up: these go, the worker never waits.
            self._lost(len(entries))
            return
        getattr(message, self._kind).log_entry.extend(entries)
        call.send(message)
        self._flushed.inc(len(entries))

    def _lost(self, count):
        self.buffer.drop(count)

    def _onDone(self, call):
        def done(code, details, response):
            if self._call is call:
                self._call = None
            if code:
                self._failed.inc()
                log.debug("access log stream ended: {code} {details}", code=code,
                          details=details)
        return done


def _headerValue(headers, name):
    value = headers.get(name) if headers is not None else None
    return value.decode("latin-1") if value is not None else None


def _mapBytes(headers):
    # Envoy's HeaderMap::byteSize(): names and values, nothing between.
    return sum(len(n) + len(v) for n, v in headers.headers.items())


def requestHeadersBytes(request, scheme):
    """
    Envoy's C{request_headers_bytes}: the request map's C{byteSize()} as
    it is when logged (the pseudo-headers and what the router added).
    """
    size = _mapBytes(request) + 7 + len(request.method) + 7 + len(scheme)
    if request.authority is not None:
        size += 10 + len(request.authority)
    if request.path is not None:
        size += 5 + len(request.path)
    return size


def responseHeadersBytes(response):
    """Envoy's C{response_headers_bytes}: C{:status} and the map's bytes."""
    return 7 + len(b"%d" % (response.status,)) + _mapBytes(response)


def httpEntryBuilder(requestHeadersToLog, responseHeadersToLog):
    """@return: C{build(streamInfo, request, response) -> HTTPAccessLogEntry}."""
    from envoy.data.accesslog.v3 import accesslog_pb2

    requestNames = [n.lower().encode("latin-1") for n in requestHeadersToLog]
    responseNames = [n.lower().encode("latin-1") for n in responseHeadersToLog]

    def build(streamInfo, request, response):
        entry = accesslog_pb2.HTTPAccessLogEntry()
        fillCommon(entry.common_properties, streamInfo,
                   accesslog_pb2.AccessLogType.Value("DownstreamEnd"))
        protocol = _PROTOCOLS.get(streamInfo.protocol)
        if protocol:
            entry.protocol_version = protocol
        if request is not None:
            r = entry.request
            headers = request.headers
            r.request_method = _methodNumber(request.method.decode("latin-1"))
            scheme = headers.get(b"x-forwarded-proto") or request.scheme or b"http"
            r.scheme = scheme.decode("latin-1")
            if request.authority:
                r.authority = request.authority.decode("latin-1")
            if request.path:
                r.path = request.path.decode("latin-1")
            for field, name in (("user_agent", b"user-agent"), ("referer", b"referer"),
                                ("forwarded_for", b"x-forwarded-for"),
                                ("request_id", b"x-request-id"),
                                ("original_path", b"x-envoy-original-path")):
                value = _headerValue(headers, name)
                if value is not None:
                    setattr(r, field, value)
            if r.request_id:
                entry.common_properties.stream_id = r.request_id
            r.request_body_bytes = streamInfo.bytesReceived
            r.request_headers_bytes = requestHeadersBytes(request, scheme)
            r.upstream_header_bytes_sent = streamInfo.upstreamHeaderBytesSent
            for name in requestNames:
                value = _headerValue(headers, name)
                if value is not None:
                    r.request_headers[name.decode("latin-1")] = value
        rs = entry.response
        if streamInfo.responseCode:
            rs.response_code.value = streamInfo.responseCode
        rs.response_body_bytes = streamInfo.bytesSent
        rs.upstream_header_bytes_received = streamInfo.upstreamHeaderBytesReceived
        if response is not None:
            if hasattr(response, "status"):
                rs.response_headers_bytes = responseHeadersBytes(response)
            headers = getattr(response, "headers", response)
            for name in responseNames:
                value = _headerValue(headers, name)
                if value is not None:
                    rs.response_headers[name.decode("latin-1")] = value
        if streamInfo.downstreamHeaderBytesSent:
            rs.downstream_header_bytes_sent = streamInfo.downstreamHeaderBytesSent
        common = entry.common_properties
        common.downstream_wire_bytes_sent = streamInfo.downstreamWireBytesSent
        common.upstream_wire_bytes_sent = streamInfo.upstreamWireBytesSent
        common.upstream_wire_bytes_received = streamInfo.upstreamWireBytesReceived
        if streamInfo.responseCodeDetails:
            rs.response_code_details = streamInfo.responseCodeDetails
        return entry

    return build


def buildTcpEntry(streamInfo, request=None, response=None):
    """A C{TCPAccessLogEntry} for a finished connection."""
    from envoy.data.accesslog.v3 import accesslog_pb2

    entry = accesslog_pb2.TCPAccessLogEntry()
    fillCommon(entry.common_properties, streamInfo,
               accesslog_pb2.AccessLogType.Value("TcpConnectionEnd"))
    entry.connection_properties.received_bytes = streamInfo.bytesReceived
    entry.connection_properties.sent_bytes = streamInfo.bytesSent
    common = entry.common_properties
    # A TCP proxy's bytes are its wire bytes, each way; what it read from
    # downstream it wrote upstream once connected, and back.
    common.downstream_wire_bytes_received = streamInfo.bytesReceived
    common.downstream_wire_bytes_sent = streamInfo.bytesSent
    if streamInfo.upstreamLocalAddress:
        common.upstream_wire_bytes_sent = streamInfo.bytesReceived
        common.upstream_wire_bytes_received = streamInfo.bytesSent
    return entry


def _identifier(bootstrap, logName):
    from envoy.service.accesslog.v3 import als_pb2

    identifier = als_pb2.StreamAccessLogsMessage.Identifier(log_name=logName)
    if bootstrap is not None:
        identifier.node.CopyFrom(describeNode(bootstrap.node))
    return identifier


def compileCommonConfig(common, path, context):
    """
    Check Envoy's C{CommonGrpcAccessLogConfig} (at C{path}), shared by the
    gRPC and OpenTelemetry access loggers.

    @return: C{(target, flushInterval, bufferSizeBytes)}, C{target} the
        compiled C{grpc_service}.
    """
    checkFields(common, _COMMON_FIELDS, path)
    if not common.log_name:
        raise ConfigError("%s.log_name: value length must be at least 1 characters" % (path,))
    target = compileEnvoyGrpc(common.grpc_service, path + ".grpc_service", context.bootstrap)
    flush = (durationSeconds(common.buffer_flush_interval)
             if common.HasField("buffer_flush_interval") else 1.0)
    size = common.buffer_size_bytes.value if common.HasField("buffer_size_bytes") else 16384
    return target, flush, size


def _create(message, context, kind, build):
    common = message.common_config
    target, flush, size = compileCommonConfig(
        common, context.path + ".typed_config.common_config", context)
    reactor = context.reactor

    def openCall(address):
        channel = openChannel(address, userAgent="txenvoy-access-log",
                              authority=target.authority)
        return ClientStreamingCall(reactor.callFromThread, channel, METHOD,
                                   metadata=target.metadata)

    stats = (context.stats.shard("main_thread") if hasattr(context.stats, "shard")
             else context.stats)
    logger = GrpcAccessLogger(reactor, mainThreadHosts(context.clusterManager,
                                                       target.clusterName),
                              _identifier(context.bootstrap, common.log_name), kind, build,
                              stats, openCall, flushInterval=flush, bufferSizeBytes=size)
    if not context.validateOnly:
        logger.start()
    return logger


@extension(Category.ACCESS_LOGGER,
           "envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig",
           "envoy.access_loggers.http_grpc", fields=_HTTP_FIELDS)
def createHttpGrpcAccessLogger(message, context):
    """Build a L{GrpcAccessLogger} of C{HTTPAccessLogEntry}s."""
    return _create(message, context, "http_logs", httpEntryBuilder(
        message.additional_request_headers_to_log,
        message.additional_response_headers_to_log))


@extension(Category.ACCESS_LOGGER,
           "envoy.extensions.access_loggers.grpc.v3.TcpGrpcAccessLogConfig",
           "envoy.access_loggers.tcp_grpc", fields=("common_config",))
def createTcpGrpcAccessLogger(message, context):
    """Build a L{GrpcAccessLogger} of C{TCPAccessLogEntry}s."""
    return _create(message, context, "tcp_logs", buildTcpEntry)
