# -*- test-case-name: tests.upstream.test_health_checker -*-
"""
Active health checking (Envoy's C{HealthCheckerImplBase} with its HTTP and
TCP checkers): C{clusters[].health_checks}.

A L{HealthChecker} runs on the main reactor, one L{HostSession} per host.
A session opens its own connection (not the data path's pools, so checks
never count C{upstream_cx_*}), sends a check, and turns the answer into the
host's C{failed_active_hc} / C{active_hc_timeout} /
C{excluded_via_immediate_hc_fail} / C{degraded_active_hc} flags. When a
host's health changes the cluster re-posts its membership to every worker
(L{txenvoy.upstream.cluster.PrimaryCluster.refreshHealth}), where the load
balancers rebuild their healthy lists.

Envoy's semantics, copied:

 - A host starts with C{failed_active_hc}; its first success makes it
   healthy at once whatever C{healthy_threshold} says, and the cluster's
   initialization (hence the server's) waits for every host's first result.
 - An HTTP status outside C{expected_statuses} and C{retriable_statuses}
   fails the host at once, ignoring C{unhealthy_threshold}; network
   failures, timeouts and retriable statuses count towards it.
 - Until the cluster has opened one data-path connection, checks run every
   C{no_traffic_interval} (60 s by default; C{no_traffic_healthy_interval}
   for a healthy host); afterwards every C{interval}, C{unhealthy_interval}
   for a failed host, and the C{*_edge_interval}s while a change of state
   is pending. Jitter is added as C{random % interval_jitter} plus
   C{random % (interval_jitter_percent% of the interval)}.
 - With C{event_log_path} or C{event_logger} file sinks, transitions (and,
   with C{always_log_health_check_failures} / C{_success}, every failure or
   every pass that changes nothing) are written as Envoy's JSON event lines
   (L{txenvoy.upstream.health_check_event_logger}).
"""

import random as _random

from twisted.internet import defer, protocol
from twisted.internet.error import ConnectionDone

from txenvoy.config.errors import ConfigError, UnsupportedExtension, UnsupportedField, report
from txenvoy.config.fields import checkFields, durationSeconds
from txenvoy.config.registry import unpackAny
from txenvoy.router.matcher import compileStringMatcher
from txenvoy.network.pipe import PipeAddress
from txenvoy.upstream.grpc_health_probe import FAILURE as GRPC_FAILURE
from txenvoy.upstream.grpc_health_probe import SUCCESS as GRPC_SUCCESS
from txenvoy.upstream.grpc_health_probe import GrpcHealthProbe
from txenvoy.upstream.host import (
    ACTIVE_HC_TIMEOUT,
    DEGRADED_ACTIVE_HC,
    EXCLUDED_VIA_IMMEDIATE_HC_FAIL,
    FAILED_ACTIVE_HC,
)

HTTP = "HTTP"
TCP = "TCP"
GRPC = "GRPC"

# Envoy's HealthCheckFailureType.
ACTIVE = "ACTIVE"
PASSIVE = "PASSIVE"
NETWORK = "NETWORK"
NETWORK_TIMEOUT = "NETWORK_TIMEOUT"

# Envoy's HealthTransition.
UNCHANGED = "Unchanged"
CHANGED = "Changed"
CHANGE_PENDING = "ChangePending"

DEFAULT_NO_TRAFFIC_INTERVAL = 60.0

#: The counters and gauges of C{cluster.<name>.health_check.*}.
COUNTERS = ("attempt", "success", "failure", "network_failure", "passive_failure",
            "verify_cluster")
GAUGES = ("healthy", "degraded")

_HC_FIELDS = (
    "timeout", "interval", "initial_jitter", "interval_jitter", "interval_jitter_percent",
    "unhealthy_threshold", "healthy_threshold", "reuse_connection", "http_health_check",
    "tcp_health_check", "grpc_health_check", "no_traffic_interval", "no_traffic_healthy_interval",
    "unhealthy_interval", "unhealthy_edge_interval", "healthy_edge_interval",
    "event_log_path", "event_logger", "always_log_health_check_failures",
    "always_log_health_check_success",
)
_HC_IGNORED = ()
_EVENT_SINK_TYPE = "envoy.extensions.health_check.event_sinks.file.v3.HealthCheckEventFileSink"
_HTTP_FIELDS = ("host", "path", "request_headers_to_add", "request_headers_to_remove",
                "expected_statuses", "retriable_statuses", "codec_client_type", "method",
                "service_name_matcher")
_TCP_FIELDS = ("send", "receive")
_GRPC_FIELDS = ("service_name", "authority", "initial_metadata")
# RequestMethod enum: METHOD_UNSPECIFIED, GET, HEAD, POST, PUT, DELETE, CONNECT,
# OPTIONS, TRACE, PATCH.
_METHODS = {0: b"GET", 1: b"GET", 2: b"HEAD", 3: b"POST", 4: b"PUT", 5: b"DELETE",
            7: b"OPTIONS", 8: b"TRACE", 9: b"PATCH"}


class HealthCheckConfig:
    """
    One compiled C{HealthCheck} (times in float seconds).

    @ivar kind: L{HTTP} or L{TCP}.
    @ivar request: HTTP: the request bytes; TCP: the C{send} payload
        (C{b""} for a connect-only check).
    @ivar receive: TCP: the C{receive} payloads, each to be found in order.
    @ivar expected: HTTP: C{[(start, end)]} status ranges that pass.
    @ivar retriable: HTTP: C{[(start, end)]} ranges that count towards
        C{unhealthy_threshold} rather than failing at once.
    """

    def __init__(self, **kw):
        self.kind = kw.pop("kind")
        self.timeout = kw.pop("timeout")
        self.interval = kw.pop("interval")
        self.unhealthyThreshold = kw.pop("unhealthyThreshold")
        self.healthyThreshold = kw.pop("healthyThreshold")
        self.initialJitter = kw.pop("initialJitter", 0.0)
        self.intervalJitter = kw.pop("intervalJitter", 0.0)
        self.intervalJitterPercent = kw.pop("intervalJitterPercent", 0)
        self.reuseConnection = kw.pop("reuseConnection", True)
        self.eventLogPaths = kw.pop("eventLogPaths", ())
        self.alwaysLogFailures = kw.pop("alwaysLogFailures", False)
        self.alwaysLogSuccess = kw.pop("alwaysLogSuccess", False)
        self.noTrafficInterval = kw.pop("noTrafficInterval", DEFAULT_NO_TRAFFIC_INTERVAL)
        self.noTrafficHealthyInterval = kw.pop("noTrafficHealthyInterval",
                                               self.noTrafficInterval)
        self.unhealthyInterval = kw.pop("unhealthyInterval", self.interval)
        self.unhealthyEdgeInterval = kw.pop("unhealthyEdgeInterval", self.unhealthyInterval)
        self.healthyEdgeInterval = kw.pop("healthyEdgeInterval", self.interval)
        self.request = kw.pop("request", b"")
        self.receive = kw.pop("receive", ())
        self.expected = kw.pop("expected", ((200, 201),))
        self.retriable = kw.pop("retriable", ())
        self.defaultHost = kw.pop("defaultHost", False)
        #: C{service_name_matcher}: C{match(bytes)} for the response's
        #: C{x-envoy-upstream-healthchecked-cluster}, or C{None}.
        self.serviceNameMatcher = kw.pop("serviceNameMatcher", None)
        #: gRPC: C{service_name}, C{authority} (bytes or C{None}: the
        #: cluster's name) and C{initial_metadata} as C{[(name, value)]}.
        self.grpcService = kw.pop("grpcService", "")
        self.grpcAuthority = kw.pop("grpcAuthority", None)
        self.grpcMetadata = kw.pop("grpcMetadata", ())
        if kw:
            raise TypeError("unknown HealthCheckConfig settings: %s" % (sorted(kw),))

    def requestFor(self, host):
        """
        The bytes to send to C{host}: an HTTP check without C{host} uses the
        endpoint's C{health_check_config.hostname} when it has one.
        """
        hostname = host.healthCheckHostname
        if self.kind != HTTP or not hostname or not self.defaultHost:
            return self.request
        requestLine, rest = self.request.split(b"\r\n", 1)
        rest = rest.split(b"\r\n", 1)[1]
        return requestLine + b"\r\nhost: " + hostname.encode("utf-8") + b"\r\n" + rest

    def inRanges(self, ranges, code):
        for start, end in ranges:
            if start <= code < end:
                return True
        return False


def _positiveDuration(hc, name, path, required=False):
    if not hc.HasField(name):
        if required:
            raise ConfigError("%s.%s: value is required (HealthCheckValidationError.%s)"
                              % (path, name, _camel(name)))
        return None
    t = durationSeconds(getattr(hc, name))
    if t <= 0:
        raise ConfigError("%s.%s: value must be greater than 0s "
                          "(HealthCheckValidationError.%s)" % (path, name, _camel(name)))
    return t


def _camel(name):
    return "".join(p.capitalize() for p in name.split("_"))


def _payload(p, path):
    checkFields(p, ("text", "binary"), path)
    which = p.WhichOneof("payload")
    if which == "text":
        try:
            return bytes.fromhex(p.text)
        except ValueError:
            raise ConfigError("%s.text: invalid hex string '%s'" % (path, p.text))
    if which == "binary":
        return bytes(p.binary)
    raise ConfigError("%s: value is required (PayloadValidationError.Payload)" % (path,))


def _ranges(ranges, path, lowest):
    out = []
    for i, r in enumerate(ranges):
        rpath = "%s[%d]" % (path, i)
        if not (lowest <= r.start < 600) or not (lowest <= r.end <= 600) or r.start >= r.end:
            raise ConfigError("%s: invalid HTTP status range [%d, %d)" % (rpath, r.start, r.end))
        out.append((r.start, r.end))
    return tuple(out)


def _compileHttp(http, path, clusterName, kw):
    checkFields(http, _HTTP_FIELDS, path)
    if http.codec_client_type != 0:
        report(UnsupportedField(path + ".codec_client_type", "HTTP2 health checks"))
    if not http.path:
        raise ConfigError("%s.path: value length must be at least 1 characters "
                          "(HttpHealthCheckValidationError.Path)" % (path,))
    method = _METHODS.get(http.method)
    if method is None:
        raise ConfigError("%s.method: value must not be in list [CONNECT]" % (path,))
    host = http.host or clusterName
    headers = [(b"host", host.encode("utf-8")), (b"user-agent", b"Envoy/HC")]
    removes = set(n.lower() for n in http.request_headers_to_remove)
    for n in removes:
        if n.startswith(":") or n == "host":
            raise ConfigError(":-prefixed or host headers may not be removed @ %s"
                              % (path + ".request_headers_to_remove",))
    headers = [(k, v) for k, v in headers if k.decode() not in removes]
    for i, opt in enumerate(http.request_headers_to_add):
        opath = "%s.request_headers_to_add[%d]" % (path, i)
        checkFields(opt, ("header", "append", "append_action", "keep_empty_value"), opath)
        checkFields(opt.header, ("key", "value"), opath + ".header")
        key, value = opt.header.key.lower(), opt.header.value
        if key.startswith(":") or key == "host":
            raise ConfigError(":-prefixed or host headers may not be modified @ %s" % (opath,))
        if "%" in value:
            report(UnsupportedField(opath + ".header.value", "formatters in health check "
                                    "request headers"))
        if not value and not opt.keep_empty_value:
            continue
        replace = ((opt.HasField("append") and not opt.append.value)
                   or opt.append_action in (2, 3))
        if replace:
            headers = [(k, v) for k, v in headers if k != key.encode()]
        headers.append((key.encode("utf-8"), value.encode("utf-8")))
    lines = [method + b" " + http.path.encode("utf-8") + b" HTTP/1.1"]
    lines.extend(k + b": " + v for k, v in headers)
    if method in (b"POST", b"PUT", b"PATCH"):
        lines.append(b"content-length: 0")
    kw["request"] = b"\r\n".join(lines) + b"\r\n\r\n"
    kw["defaultHost"] = not http.host
    if len(http.expected_statuses):
        kw["expected"] = _ranges(http.expected_statuses, path + ".expected_statuses", 100)
    kw["retriable"] = _ranges(http.retriable_statuses, path + ".retriable_statuses", 100)
    if http.HasField("service_name_matcher"):
        kw["serviceNameMatcher"] = compileStringMatcher(http.service_name_matcher,
                                                        path + ".service_name_matcher")


def _eventLogPaths(hc, path):
    """C{event_log_path} and the C{event_logger} file sinks' paths, in order."""
    paths = [hc.event_log_path] if hc.event_log_path else []
    for i, sink in enumerate(hc.event_logger):
        spath = "%s.event_logger[%d]" % (path, i)
        checkFields(sink, ("name", "typed_config"), spath)
        typeName = sink.typed_config.type_url.rsplit("/", 1)[-1]
        if typeName != _EVENT_SINK_TYPE:
            report(UnsupportedExtension(spath + ".typed_config", typeName, sink.name))
            continue
        message = unpackAny(sink.typed_config, spath + ".typed_config")
        checkFields(message, ("event_log_path",), spath + ".typed_config")
        if not message.event_log_path:
            raise ConfigError("%s.typed_config.event_log_path: value length must be at least 1 "
                              "characters (HealthCheckEventFileSinkValidationError.EventLogPath)"
                              % (spath,))
        paths.append(message.event_log_path)
    return tuple(paths)


def _compileGrpc(grpc, path, clusterName, http2, kw):
    checkFields(grpc, _GRPC_FIELDS, path)
    if not http2:
        # Envoy's words; the cluster needs explicit_http_config's
        # http2_protocol_options (or use_downstream_protocol_config).
        raise ConfigError("%s: %s cluster must support HTTP/2 for gRPC healthchecking"
                          % (path, clusterName))
    kw["kind"] = GRPC
    kw["grpcService"] = grpc.service_name
    kw["grpcAuthority"] = (grpc.authority or clusterName).encode("utf-8")
    metadata = []
    for i, option in enumerate(grpc.initial_metadata):
        opath = "%s.initial_metadata[%d]" % (path, i)
        checkFields(option, ("header",), opath)
        checkFields(option.header, ("key", "value"), opath + ".header")
        metadata.append((option.header.key.lower().encode("latin-1"),
                         option.header.value.encode("latin-1")))
    kw["grpcMetadata"] = tuple(metadata)


def compileHealthChecks(proto, path, http2=False):
    """
    Compile C{Cluster.health_checks}.

    @param proto: the C{Cluster} message.
    @param path: its field path.
    @param http2: whether the cluster speaks HTTP/2 upstream (a gRPC check
        needs it).
    @return: a L{HealthCheckConfig}, or C{None} when none is configured.
    @raise ConfigError: for an invalid or unsupported setting.
    """
    if not len(proto.health_checks):
        return None
    if len(proto.health_checks) > 1:
        raise ConfigError("%s.health_checks: Multiple health checks not supported" % (path,))
    hpath = path + ".health_checks[0]"
    hc = proto.health_checks[0]
    checkFields(hc, _HC_FIELDS, hpath, _HC_IGNORED)
    kw = {
        "timeout": _positiveDuration(hc, "timeout", hpath, required=True),
        "interval": _positiveDuration(hc, "interval", hpath, required=True),
    }
    for name, field in (("unhealthyThreshold", "unhealthy_threshold"),
                        ("healthyThreshold", "healthy_threshold")):
        if not hc.HasField(field):
            raise ConfigError("%s.%s: value is required (HealthCheckValidationError.%s)"
                              % (hpath, field, _camel(field)))
        # Envoy treats a threshold of 0 as 1 (the first result decides).
        kw[name] = max(1, getattr(hc, field).value)
    for name, field in (("noTrafficInterval", "no_traffic_interval"),
                        ("noTrafficHealthyInterval", "no_traffic_healthy_interval"),
                        ("unhealthyInterval", "unhealthy_interval"),
                        ("unhealthyEdgeInterval", "unhealthy_edge_interval"),
                        ("healthyEdgeInterval", "healthy_edge_interval")):
        t = _positiveDuration(hc, field, hpath)
        if t is not None:
            kw[name] = t
    for name, field in (("initialJitter", "initial_jitter"),
                        ("intervalJitter", "interval_jitter")):
        if hc.HasField(field):
            t = durationSeconds(getattr(hc, field))
            if t < 0:
                raise ConfigError("%s.%s: value must be greater than or equal to 0s"
                                  % (hpath, field))
            kw[name] = t
    kw["intervalJitterPercent"] = hc.interval_jitter_percent
    if hc.HasField("reuse_connection"):
        kw["reuseConnection"] = hc.reuse_connection.value
    kw["eventLogPaths"] = _eventLogPaths(hc, hpath)
    kw["alwaysLogFailures"] = hc.always_log_health_check_failures
    kw["alwaysLogSuccess"] = hc.always_log_health_check_success
    which = hc.WhichOneof("health_checker")
    if which == "http_health_check":
        kw["kind"] = HTTP
        _compileHttp(hc.http_health_check, hpath + ".http_health_check", proto.name, kw)
    elif which == "tcp_health_check":
        kw["kind"] = TCP
        tpath = hpath + ".tcp_health_check"
        tcp = hc.tcp_health_check
        checkFields(tcp, _TCP_FIELDS, tpath)
        if tcp.HasField("send"):
            kw["request"] = _payload(tcp.send, tpath + ".send")
        kw["receive"] = tuple(_payload(p, "%s.receive[%d]" % (tpath, i))
                              for i, p in enumerate(tcp.receive))
    elif which == "grpc_health_check":
        _compileGrpc(hc.grpc_health_check, hpath + ".grpc_health_check", proto.name, http2, kw)
    elif which is None:
        raise ConfigError("%s: value is required (HealthCheckValidationError.HealthChecker)"
                          % (hpath,))
    else:
        # custom_health_check needs an extension registry for checkers
        # (checkFields reported it).
        return None
    return HealthCheckConfig(**kw)


# --- probes: one check over one connection ----------------------------------


class _ProbeProtocol(protocol.Protocol):
    """
    The connection of one host's session. It hands the session what it
    reads and when it closes; the session decides what that means.
    """

    session = None

    def connectionMade(self):
        self.session._connected(self)

    def dataReceived(self, data):
        self.session._dataReceived(self, data)

    def connectionLost(self, reason=ConnectionDone):
        self.session._connectionLost(self)


class _ProbeFactory(protocol.ClientFactory):
    def __init__(self, session):
        self.session = session

    def buildProtocol(self, addr):
        p = _ProbeProtocol()
        p.session = self.session
        return p

    def clientConnectionFailed(self, connector, reason):
        self.session._connectFailed(connector)


class _HttpResponseReader:
    """
    Just enough of an HTTP/1.1 response parser for a check: the status, the
    headers that matter (C{connection}, C{x-envoy-immediate-health-check-fail},
    C{x-envoy-degraded}) and where the body ends.
    """

    def __init__(self):
        self.buf = b""
        self.status = None
        self.headers = None
        self.remaining = None
        self.chunked = False
        self.untilClose = False

    def feed(self, data):
        """@return: C{True} once the whole response has been read."""
        self.buf += data
        if self.headers is None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > 65536:
                    raise ValueError("response headers too long")
                return False
            head, self.buf = self.buf[:end], self.buf[end + 4:]
            lines = head.split(b"\r\n")
            parts = lines[0].split(b" ", 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
                raise ValueError("bad status line")
            self.version = parts[0]
            self.status = int(parts[1])
            headers = {}
            for line in lines[1:]:
                k, sep, v = line.partition(b":")
                if not sep:
                    raise ValueError("bad header")
                headers[k.strip().lower()] = v.strip()
            self.headers = headers
            te = headers.get(b"transfer-encoding", b"").lower()
            if te.endswith(b"chunked"):
                self.chunked = True
            elif b"content-length" in headers:
                self.remaining = int(headers[b"content-length"])
            elif self.status in (204, 304) or 100 <= self.status < 200:
                self.remaining = 0
            else:
                self.untilClose = True
        if self.untilClose:
            self.buf = b""
            return False
        if self.chunked:
            # The body is not looked at: wait for the terminating chunk.
            return self.buf.endswith(b"0\r\n\r\n")
        if len(self.buf) >= self.remaining:
            return True
        return False

    def header(self, name):
        return self.headers.get(name) if self.headers else None

    def keepAlive(self):
        conn = (self.header(b"connection") or b"").lower()
        if self.untilClose or conn == b"close":
            return False
        if self.version == b"HTTP/1.0" and conn != b"keep-alive":
            return False
        return True


class HostSession:
    """
    Health checking of one host (Envoy's C{ActiveHealthCheckSession}).

    @ivar host: the L{Host}.
    @ivar firstCheck: whether no result has been seen yet.
    """

    def __init__(self, checker, host):
        self.checker = checker
        self.host = host
        self.config = checker.config
        self.reactor = checker.reactor
        self.firstCheck = True
        self.numHealthy = 0
        self.numUnhealthy = 0
        self._intervalCall = None
        self._timeoutCall = None
        self._proto = None
        self._connector = None
        self._inFlight = False
        self._expectClose = False
        self._reader = None
        self._received = b""
        self._stopped = False
        self._grpc = None

    # --- timers ---------------------------------------------------------

    def start(self):
        jitter = self.config.initialJitter
        if jitter > 0:
            self._schedule(self.checker.randomMs(jitter))
        else:
            self._onInterval()

    def stop(self):
        self._stopped = True
        for name in ("_intervalCall", "_timeoutCall"):
            call = getattr(self, name)
            if call is not None and call.active():
                call.cancel()
            setattr(self, name, None)
        self._close()
        if self._connector is not None:
            self._connector.stopConnecting()
            self._connector = None

    def _schedule(self, delay):
        if self._stopped:
            return
        self._intervalCall = self.reactor.callLater(delay, self._onInterval)

    def _onInterval(self):
        self._intervalCall = None
        if self._stopped:
            return
        self.checker.stats["attempt"].inc()
        self._timeoutCall = self.reactor.callLater(self.config.timeout, self._onTimeout)
        self._inFlight = True
        self._reader = None
        self._received = b""
        if self._proto is None:
            host, port = self.host.address
            port = self.host.healthCheckPort or port
            if isinstance(host, PipeAddress):
                self._connector = self.reactor.connectUNIX(
                    host.sockaddr, _ProbeFactory(self), timeout=self.config.timeout + 1)
            else:
                self._connector = self.reactor.connectTCP(
                    host, port, _ProbeFactory(self), timeout=self.config.timeout + 1)
        else:
            self._send()

    def _onTimeout(self):
        self._timeoutCall = None
        self._inFlight = False
        self._close()
        connector, self._connector = self._connector, None
        if connector is not None:
            connector.stopConnecting()
        self.handleFailure(NETWORK_TIMEOUT)

    # --- connection events ----------------------------------------------

    def _connected(self, proto):
        self._connector = None
        if self._stopped or not self._inFlight:
            proto.transport.abortConnection()
            return
        self._proto = proto
        self._send()

    def _connectFailed(self, connector):
        if connector is not self._connector:
            return
        self._connector = None
        if self._inFlight:
            self._inFlight = False
            self.handleFailure(NETWORK)

    def _send(self):
        if self.config.kind == GRPC:
            self._sendGrpc()
            return
        req = self.config.requestFor(self.host)
        if self.config.kind == HTTP:
            self._reader = _HttpResponseReader()
        if req:
            self._proto.transport.write(req)
        if self.config.kind == TCP and not self.config.receive:
            # A connect-only check passes once connected, and closes (as
            # Envoy's does whatever reuse_connection says).
            self._inFlight = False
            self._close()
            self.handleSuccess()

    def _sendGrpc(self):
        cfg = self.config
        if self._grpc is None:
            hostname = self.host.healthCheckHostname
            authority = hostname.encode("utf-8") if hostname else cfg.grpcAuthority
            self._grpc = GrpcHealthProbe(authority, cfg.grpcService, cfg.grpcMetadata)
        self._proto.transport.write(self._grpc.check())

    def _grpcReceived(self, data):
        out, outcome = self._grpc.feed(data)
        if out:
            self._proto.transport.write(out)
        if outcome is None or not self._inFlight:
            # Between checks, or a late answer to one that timed out: a
            # connection that can carry no more checks is closed.
            if self._grpc.broken:
                self._close()
            return
        self._inFlight = False
        if outcome == GRPC_SUCCESS:
            self.handleSuccess()
        elif outcome == GRPC_FAILURE:
            # Envoy's onRpcComplete: an ACTIVE failure, not retriable.
            self.handleFailure(ACTIVE, retriable=False)
        else:
            self._close()
            self.handleFailure(NETWORK)
            return
        if not self.config.reuseConnection or self._grpc.broken:
            self._close()

    def _dataReceived(self, proto, data):
        if proto is not self._proto:
            return
        if self.config.kind == GRPC:
            # HTTP/2 frames (SETTINGS, PING) come between checks too.
            self._grpcReceived(data)
            return
        if not self._inFlight:
            return
        if self.config.kind == HTTP:
            try:
                done = self._reader.feed(data)
            except ValueError:
                self._inFlight = False
                self._close()
                self.handleFailure(NETWORK)
                return
            if done:
                self._httpComplete()
        else:
            self._received += data
            if self._tcpMatches():
                self._inFlight = False
                self.handleSuccess()
                if not self.config.reuseConnection:
                    self._close()

    def _tcpMatches(self):
        pos = 0
        for expected in self.config.receive:
            i = self._received.find(expected, pos)
            if i < 0:
                return False
            pos = i + len(expected)
        return True

    def _httpComplete(self):
        self._inFlight = False
        r = self._reader
        cfg = self.config
        if not cfg.inRanges(cfg.expected, r.status):
            if r.header(b"x-envoy-immediate-health-check-fail") is not None:
                self.host.setHealthFlag(EXCLUDED_VIA_IMMEDIATE_HC_FAIL)
            self.handleFailure(ACTIVE, retriable=cfg.inRanges(cfg.retriable, r.status),
                               statusCode=r.status)
        elif cfg.serviceNameMatcher is not None and not self._verifyCluster(r):
            self.handleFailure(ACTIVE, retriable=False, statusCode=r.status)
        else:
            self.handleSuccess(degraded=r.header(b"x-envoy-degraded") is not None)
        if not cfg.reuseConnection or not r.keepAlive():
            self._close()

    def _verifyCluster(self, response):
        """
        Envoy's C{service_name_matcher} check of an expected status
        (C{health_check.verify_cluster}): the upstream's
        C{x-envoy-upstream-healthchecked-cluster} must match, an absent
        header reading as empty.
        """
        self.checker.stats["verify_cluster"].inc()
        value = response.header(b"x-envoy-upstream-healthchecked-cluster") or b""
        return self.config.serviceNameMatcher(value)

    def _connectionLost(self, proto):
        if proto is not self._proto:
            return
        self._proto = None
        self._grpc = None
        if self._inFlight and not self._stopped:
            if self._reader is not None and self._reader.untilClose:
                self._httpComplete()
                return
            self._inFlight = False
            self.handleFailure(NETWORK)

    def _close(self):
        proto, self._proto = self._proto, None
        self._grpc = None
        if proto is not None and proto.transport is not None:
            proto.transport.abortConnection()

    # --- results (Envoy's handleSuccess / setUnhealthy) -----------------

    def handleSuccess(self, degraded=False):
        """A check passed."""
        self.numUnhealthy = 0
        host = self.host
        changed = UNCHANGED
        events = self.checker.eventLogger
        if host.hasHealthFlag(FAILED_ACTIVE_HC):
            self.numHealthy += 1
            if self.firstCheck or self.numHealthy >= self.config.healthyThreshold:
                for flag in (ACTIVE_HC_TIMEOUT, EXCLUDED_VIA_IMMEDIATE_HC_FAIL,
                             FAILED_ACTIVE_HC):
                    host.clearHealthFlag(flag)
                self.checker.stats["healthy"].inc()
                changed = CHANGED
                if events is not None:
                    events.logAddHealthy(host, self.firstCheck)
            else:
                changed = CHANGE_PENDING
        if changed != CHANGED and events is not None and self.config.alwaysLogSuccess:
            events.logSuccessful(host)
        if degraded != host.hasHealthFlag(DEGRADED_ACTIVE_HC):
            if degraded:
                host.setHealthFlag(DEGRADED_ACTIVE_HC)
                self.checker.stats["degraded"].inc()
                if events is not None:
                    events.logDegraded(host)
            else:
                if events is not None:
                    events.logNoLongerDegraded(host)
                host.clearHealthFlag(DEGRADED_ACTIVE_HC)
                self.checker.stats["degraded"].dec()
            changed = CHANGED
        self.checker.stats["success"].inc()
        self._finish(changed, healthy=True)

    def setUnhealthy(self, failureType, retriable=True, statusCode=0):
        """
        Count a failed check; @return: the transition.

        @param statusCode: the HTTP status that failed it, for the event
            log, or 0.
        """
        self.numHealthy = 0
        host = self.host
        changed = UNCHANGED
        events = self.checker.eventLogger
        if not host.hasHealthFlag(FAILED_ACTIVE_HC):
            self.numUnhealthy += 1
            if ((not retriable and failureType not in (NETWORK, NETWORK_TIMEOUT))
                    or self.numUnhealthy >= self.config.unhealthyThreshold):
                host.setHealthFlag(FAILED_ACTIVE_HC)
                self.checker.stats["healthy"].dec()
                changed = CHANGED
                if events is not None:
                    events.logEjectUnhealthy(host, failureType, statusCode)
            else:
                changed = CHANGE_PENDING
        if failureType == NETWORK_TIMEOUT and host.hasHealthFlag(FAILED_ACTIVE_HC):
            host.setHealthFlag(ACTIVE_HC_TIMEOUT)
        else:
            host.clearHealthFlag(ACTIVE_HC_TIMEOUT)
        if events is not None and (self.firstCheck or self.config.alwaysLogFailures):
            events.logUnhealthy(host, failureType, self.firstCheck, statusCode)
        stats = self.checker.stats
        stats["failure"].inc()
        if failureType in (NETWORK, NETWORK_TIMEOUT):
            stats["network_failure"].inc()
        elif failureType == PASSIVE:
            stats["passive_failure"].inc()
        return changed

    def handleFailure(self, failureType, retriable=True, statusCode=0):
        """A check failed: C{failureType} is L{ACTIVE}, L{NETWORK}..."""
        changed = self.setUnhealthy(failureType, retriable, statusCode)
        self._finish(changed, healthy=False)

    def _finish(self, changed, healthy):
        wasFirst, self.firstCheck = self.firstCheck, False
        if self._timeoutCall is not None and self._timeoutCall.active():
            self._timeoutCall.cancel()
        self._timeoutCall = None
        self.checker.hostChecked(self, changed, wasFirst)
        if self._intervalCall is None or not self._intervalCall.active():
            self._schedule(self.checker.nextInterval(self.host, healthy, changed))


class HealthChecker:
    """
    The active health checker of one cluster, on the main reactor.

    @ivar config: the L{HealthCheckConfig}.
    @ivar stats: C{{name: counter or gauge}} of C{cluster.<name>.health_check.*}.
    """

    def __init__(self, reactor, cluster, config, mainShard, rng=None, eventLogger=None):
        self.reactor = reactor
        self.cluster = cluster
        self.config = config
        #: The L{txenvoy.upstream.health_check_event_logger.HealthCheckEventLogger},
        #: or C{None} when the check has no event log.
        self.eventLogger = eventLogger
        self._rng = rng if rng is not None else _random.random
        scope = mainShard.scope(cluster.info.statPrefix + "health_check.")
        self.stats = {n: scope.counter(n) for n in COUNTERS}
        self.stats.update((n, scope.gauge(n)) for n in GAUGES)
        self.sessions = {}
        self._started = False
        self._firstRound = None
        self._awaitingFirst = set()

    def randomMs(self, limit):
        """Envoy's C{random() % limit_ms}, in seconds."""
        ms = int(limit * 1000)
        if ms <= 0:
            return 0.0
        return (int(self._rng() * (1 << 53)) % ms) / 1000.0

    def hadTraffic(self):
        """Whether the cluster has opened a data-path connection."""
        for h in self.cluster.hosts:
            if h.stats("cx_total"):
                return True
        return False

    def nextInterval(self, host, healthy, changed):
        """Envoy's C{HealthCheckerImplBase::interval}, jitter included."""
        cfg = self.config
        if not self.hadTraffic():
            base = (cfg.noTrafficHealthyInterval if not host.hasHealthFlag(FAILED_ACTIVE_HC)
                    else cfg.noTrafficInterval)
        elif not healthy:
            base = cfg.unhealthyEdgeInterval if changed == CHANGE_PENDING else cfg.unhealthyInterval
        else:
            base = cfg.healthyEdgeInterval if changed == CHANGE_PENDING else cfg.interval
        delay = base
        percent = cfg.intervalJitterPercent * int(base * 1000) // 100
        if percent > 0:
            delay += self.randomMs(percent / 1000.0)
        if cfg.intervalJitter > 0:
            delay += self.randomMs(cfg.intervalJitter)
        return delay

    def onHosts(self, hosts):
        """
        The cluster's membership changed (main thread): new hosts start
        failed until their first check, gone hosts stop being checked.
        """
        current = set(hosts)
        for host in list(self.sessions):
            if host not in current:
                self.sessions.pop(host).stop()
                self._awaitingFirst.discard(host)
        for host in hosts:
            if host not in self.sessions and not host.disableActiveHealthCheck:
                if not host.hasHealthFlag(FAILED_ACTIVE_HC):
                    host.setHealthFlag(FAILED_ACTIVE_HC)
                host.healthChecker = self
                session = self.sessions[host] = HostSession(self, host)
                if self._started:
                    session.start()
        self._maybeFirstRoundDone()

    def start(self):
        """
        Start checking every host.

        @return: a Deferred fired once every host has had its first result
            (Envoy's cluster initialization waits for it).
        """
        self._firstRound = defer.Deferred()
        self._started = True
        self._awaitingFirst = set(self.sessions)
        for session in list(self.sessions.values()):
            session.start()
        d = self._firstRound
        self._maybeFirstRoundDone()
        return d

    def immediateFailure(self, host):
        """
        A response of C{host} carried C{x-envoy-immediate-health-check-fail}
        (any thread): on the main reactor, the host is excluded and fails
        as a passive failure, whatever C{unhealthy_threshold} says; the
        next check is not moved (Envoy's C{setUnhealthyCrossThread}).
        """
        self.reactor.callFromThread(self._immediateFailure, host)

    def _immediateFailure(self, host):
        session = self.sessions.get(host)
        if session is None or session._stopped:
            return
        host.setHealthFlag(EXCLUDED_VIA_IMMEDIATE_HC_FAIL)
        session.setUnhealthy(PASSIVE, retriable=False)
        # The exclusion changes what workers may pick even when the host
        # had already failed.
        self.cluster.refreshHealth()

    def pendingFirstRound(self):
        """Whether L{start}'s Deferred has not fired yet."""
        return self._firstRound is not None

    def stop(self):
        """Cancel every timer and close every check connection."""
        self._started = False
        for session in self.sessions.values():
            session.stop()

    def hostChecked(self, session, changed, first):
        """A session finished a check: re-post health on a change."""
        if first:
            self._awaitingFirst.discard(session.host)
        detector = self.cluster.outlierDetector
        if detector is not None and detector.onHealthCheckPassed(session.host):
            changed = CHANGED
        if changed == CHANGED:
            self.cluster.refreshHealth()
        self._maybeFirstRoundDone()

    def _maybeFirstRoundDone(self):
        if self._firstRound is not None and not self._awaitingFirst:
            d, self._firstRound = self._firstRound, None
            d.callback(None)
