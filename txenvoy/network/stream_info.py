# -*- test-case-name: tests.network.test_stream_info -*-
"""
What is known about one connection or one HTTP request, for access logs and
stats (Envoy's C{StreamInfo}).
"""

import time


class ResponseFlag:
    """Envoy's response flags, as printed by C{%RESPONSE_FLAGS%}."""

    FAILED_LOCAL_HEALTH_CHECK = "LH"
    NO_HEALTHY_UPSTREAM = "UH"
    UPSTREAM_REQUEST_TIMEOUT = "UT"
    LOCAL_RESET = "LR"
    UPSTREAM_REMOTE_RESET = "UR"
    UPSTREAM_CONNECTION_FAILURE = "UF"
    UPSTREAM_CONNECTION_TERMINATION = "UC"
    UPSTREAM_OVERFLOW = "UO"
    NO_ROUTE_FOUND = "NR"
    DELAY_INJECTED = "DI"
    FAULT_INJECTED = "FI"
    RATE_LIMITED = "RL"
    UPSTREAM_RETRY_LIMIT_EXCEEDED = "URX"
    STREAM_IDLE_TIMEOUT = "SI"
    DOWNSTREAM_CONNECTION_TERMINATION = "DC"
    DOWNSTREAM_PROTOCOL_ERROR = "DPE"
    NO_CLUSTER_FOUND = "NC"
    UPSTREAM_MAX_STREAM_DURATION_REACHED = "UMSDR"
    DURATION_TIMEOUT = "DT"
    NO_FILTER_CONFIG_FOUND = "NFCF"
    OVERLOAD_MANAGER = "OM"
    UNAUTHORIZED_EXTERNAL_SERVICE = "UAEX"
    RATELIMIT_SERVICE_ERROR = "RLSE"
    INVALID_ENVOY_REQUEST_HEADERS = "IH"
    DOWNSTREAM_REMOTE_RESET = "DR"


# Envoy's response flags in the order of its enum. Several flags print in
# the order they were set (see StreamInfo.responseFlags).
FLAG_ORDER = [
    "LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL",
    "UAEX", "RLSE", "URX", "SI", "IH", "DPE", "UMSDR", "RFCF", "NFCF", "DT",
    "UPE", "NC", "OM", "DF", "DO", "DR", "UDO", "DC",
]
_FLAG_RANK = {f: i for i, f in enumerate(FLAG_ORDER)}


class StreamInfo:
    """
    Facts about one connection (L4) or one request (HTTP), filled in as it
    goes and read by access loggers once it is done.

    Times are wall-clock seconds (C{startTime}) and monotonic seconds for
    durations, so a clock step does not make durations negative.

    @ivar downstreamRemoteAddress: C{(host, port)} of the client.
    @ivar downstreamLocalAddress: C{(host, port)} the client connected to.
    @ivar upstreamHost: C{"ip:port"} of the chosen upstream, or C{None}.
    @ivar upstreamCluster: the cluster name, or C{None}.
    @ivar upstreamLocalAddress: C{(host, port)} of our side upstream.
    @ivar bytesReceived: bytes read from downstream (body bytes for HTTP).
    @ivar bytesSent: bytes written to downstream (body bytes for HTTP).
    @ivar downstreamWireBytesSent: an HTTP response's bytes as written by
        the codec (head, framing and body).
    @ivar downstreamHeaderBytesSent: the bytes of its header lines.
    @ivar upstreamWireBytesSent: the HTTP/1 request's bytes written upstream,
        and C{upstreamWireBytesReceived} its response's bytes read;
        C{upstreamHeaderBytesSent} and C{upstreamHeaderBytesReceived} the
        bytes of each head's header lines.
    @ivar responseCode: the HTTP status sent, or C{None}.
    @ivar responseCodeDetails: Envoy's C{%RESPONSE_CODE_DETAILS%}.
    @ivar protocol: C{"HTTP/1.1"} etc., or C{None} at L4.
    @ivar requestedServerName: SNI, or C{""}.
    @ivar routeName: the matched route's name, or C{""}.
    @ivar connectionTerminationDetails: why we closed, if we did.
    @ivar filterState: free-form data set by filters.
    """

    # One per connection and per request: the fields every stream has are
    # slots; what a few filters add of their own goes to a __dict__.
    __slots__ = ("_clock", "startTime", "_startMonotonic", "endMonotonic",
                 "lastDownstreamRxMonotonic", "firstUpstreamTxMonotonic",
                 "lastUpstreamTxMonotonic", "firstUpstreamRxMonotonic",
                 "lastUpstreamRxMonotonic", "firstDownstreamTxMonotonic",
                 "lastDownstreamTxMonotonic", "downstreamRemoteAddress",
                 "downstreamDirectRemoteAddress", "downstreamLocalAddress", "upstreamHost",
                 "upstreamCluster", "upstreamLocalAddress", "upstreamTransportFailureReason",
                 "bytesReceived", "bytesSent", "downstreamWireBytesSent",
                 "downstreamHeaderBytesSent", "upstreamWireBytesSent", "upstreamWireBytesReceived",
                 "upstreamHeaderBytesSent", "upstreamHeaderBytesReceived",
                 "responseCode", "responseCodeDetails", "protocol",
                 "requestedServerName", "routeName", "connectionId",
                 "connectionTerminationDetails", "_flags", "_filterState", "_dynamicMetadata",
                 "__dict__", "__weakref__")

    def __init__(self, clock, wallTime=time.time, connection=None):
        """
        @param connection: the L{StreamInfo} of the downstream connection
            an HTTP request came on: its addresses, id and SNI are the
            request's.
        """
        _start(self, clock, wallTime, connection)

    @property
    def filterState(self):
        """Free-form data set by filters, by name."""
        state = self._filterState
        if state is None:
            state = self._filterState = {}
        return state

    @filterState.setter
    def filterState(self, state):
        self._filterState = state

    def filterStateValue(self, name, default=None):
        """C{filterState.get(name, default)}, creating no state."""
        state = self._filterState
        return default if state is None else state.get(name, default)

    def hasFilterState(self):
        """Whether C{filterState} has anything in it, creating no state."""
        return bool(self._filterState)

    @property
    def dynamicMetadata(self):
        """Dynamic metadata by filter name (Envoy's C{dynamicMetadata()})."""
        metadata = self._dynamicMetadata
        if metadata is None:
            metadata = self._dynamicMetadata = {}
        return metadata

    @dynamicMetadata.setter
    def dynamicMetadata(self, metadata):
        self._dynamicMetadata = metadata

    def setResponseFlag(self, flag):
        # Envoy 1.40 keeps flags in the order they were set (a vector), and
        # prints them so: a retry limit hit before the failure that ends
        # the request gives "URX,UF".
        if self._flags is None:
            self._flags = [flag]
        elif flag not in self._flags:
            self._flags.append(flag)

    def hasResponseFlag(self, flag):
        return self._flags is not None and flag in self._flags

    def responseFlags(self):
        """
        @return: Envoy's C{%RESPONSE_FLAGS%} text: C{"-"} or C{"URX,UF"}.
        """
        if not self._flags:
            return "-"
        return ",".join(self._flags)

    def onComplete(self):
        """Mark the stream finished; fixes L{duration}."""
        if self.endMonotonic is None:
            self.endMonotonic = self._clock.seconds()

    def elapsed(self, monotonic):
        """Seconds from start to a monotonic time, or C{None}."""
        if monotonic is None:
            return None
        return monotonic - self._startMonotonic

    def duration(self):
        """Seconds from start to completion (or to now while running)."""
        end = self.endMonotonic if self.endMonotonic is not None else self._clock.seconds()
        return end - self._startMonotonic


_new = object.__new__


def _start(self, clock, wallTime, connection):
    # StreamInfo.__init__'s body, so that requestStreamInfo can fill an
    # instance without Python's class call.
    self._clock = clock
    self.startTime = wallTime()
    self._startMonotonic = clock.seconds()
    self.endMonotonic = None
    self.lastDownstreamRxMonotonic = None
    self.firstUpstreamTxMonotonic = None
    self.lastUpstreamTxMonotonic = None
    self.firstUpstreamRxMonotonic = None
    self.lastUpstreamRxMonotonic = None
    self.firstDownstreamTxMonotonic = None
    self.lastDownstreamTxMonotonic = None
    if connection is None:
        self.downstreamRemoteAddress = None
        self.downstreamDirectRemoteAddress = None
        self.downstreamLocalAddress = None
        self.connectionId = 0
        self.requestedServerName = ""
    else:
        self.downstreamRemoteAddress = connection.downstreamRemoteAddress
        self.downstreamDirectRemoteAddress = connection.downstreamDirectRemoteAddress
        self.downstreamLocalAddress = connection.downstreamLocalAddress
        self.connectionId = connection.connectionId
        self.requestedServerName = connection.requestedServerName
    self.upstreamHost = None
    self.upstreamCluster = None
    self.upstreamLocalAddress = None
    self.upstreamTransportFailureReason = None
    self.bytesReceived = 0
    self.bytesSent = 0
    self.downstreamWireBytesSent = 0
    self.downstreamHeaderBytesSent = 0
    self.upstreamWireBytesSent = 0
    self.upstreamWireBytesReceived = 0
    self.upstreamHeaderBytesSent = 0
    self.upstreamHeaderBytesReceived = 0
    self.responseCode = None
    self.responseCodeDetails = None
    self.protocol = None
    self.routeName = ""
    self.connectionTerminationDetails = None
    self._flags = None
    # Created when first asked for: most connections never use them.
    self._filterState = None
    self._dynamicMetadata = None
    return self


def requestStreamInfo(clock, connection):
    """
    C{StreamInfo(clock, connection=connection)}, made once per HTTP
    request: without the class call, whose path through C{__init__} costs
    about as much as filling the fields.
    """
    return _start(_new(StreamInfo), clock, time.time, connection)
