# -*- test-case-name: tests.tracing.test_http_tracer -*-
"""
The connection manager's C{tracing} block (Envoy's C{HttpTracerUtility}
and C{ConnectionManagerUtility::mutateTracingRequestHeader}).

When a request arrives, L{TracingConfig.startSpan} takes Envoy's sampling
decision and packs it into C{x-request-id}: a decision already carried
there stands; otherwise C{x-client-trace-id} (C{client_sampling}, runtime
C{tracing.client_enabled}), then C{x-envoy-force-trace}, then
C{random_sampling} (runtime C{tracing.random_sampling}, decided on the
request id so every proxy agrees); C{overall_sampling} (runtime
C{tracing.global_enabled}) may veto it all. It counts
C{http.<prefix>.tracing.*} and asks the provider for a span named after
the route's C{decorator} or the request's host.

The router calls L{TracingConfig.beginUpstream} to inject the context into
the upstream request (spawning a CLIENT span first with
C{spawn_upstream_span}), and the stream's end calls
L{TracingConfig.finishSpan}, which sets Envoy's standard tags and the
C{custom_tags}.
"""

from zope.interface import implementer

from txenvoy.config.fields import checkFields
from txenvoy.interfaces import ITracerDriver
from txenvoy.runtime.runtime import FractionalPercent, fractionalPercent
from txenvoy.stats.per_worker import PerWorker, StatsStruct
from txenvoy.tracing import request_id
from txenvoy.tracing.custom_tags import compileCustomTags

_TRACING_FIELDS = frozenset((
    "client_sampling", "random_sampling", "overall_sampling", "verbose",
    "max_path_tag_length", "custom_tags", "provider", "spawn_upstream_span",
))
_ROUTE_TRACING_FIELDS = frozenset((
    "client_sampling", "random_sampling", "overall_sampling", "custom_tags",
))

#: Envoy's C{tracing.*} stats of a connection manager.
TRACING_STATS = ("client_enabled", "health_check", "not_traceable", "random_sampling",
                 "service_forced")

_STAT_OF_REASON = {
    request_id.SAMPLED: "random_sampling",
    request_id.FORCED: "service_forced",
    request_id.CLIENT: "client_enabled",
    request_id.NO_TRACE: "not_traceable",
}

DEFAULT_MAX_PATH_TAG_LENGTH = 256

#: C{verbose}: Envoy's stream timing events (its C{annotateVerbose}), in
#: its order, each logged when the stream info recorded that time.
VERBOSE_EVENTS = (
    ("lastDownstreamRxMonotonic", "last_downstream_rx_byte_received"),
    ("firstUpstreamTxMonotonic", "first_upstream_tx_byte_sent"),
    ("lastUpstreamTxMonotonic", "last_upstream_tx_byte_sent"),
    ("firstUpstreamRxMonotonic", "first_upstream_rx_byte_received"),
    ("lastUpstreamRxMonotonic", "last_upstream_rx_byte_received"),
    ("firstDownstreamTxMonotonic", "first_downstream_tx_byte_sent"),
    ("lastDownstreamTxMonotonic", "last_downstream_tx_byte_sent"),
)


def _percent(message, field, scale, default):
    """Envoy's C{PROTOBUF_PERCENT_TO_ROUNDED_INTEGER_OR_DEFAULT}."""
    if message.HasField(field):
        return int(round(getattr(message, field).value * scale / 100.0))
    return default


class RouteTracing:
    """
    A route's C{tracing} overrides (fractional percents and custom tags).
    """

    def __init__(self, clientSampling=None, randomSampling=None, overallSampling=None,
                 customTags=()):
        self.clientSampling = clientSampling
        self.randomSampling = randomSampling
        self.overallSampling = overallSampling
        self.customTags = customTags


def compileRouteTracing(message, path):
    """@return: a L{RouteTracing} from a route's C{envoy.config.route.v3.Tracing}."""
    checkFields(message, _ROUTE_TRACING_FIELDS, path)
    return RouteTracing(
        fractionalPercent(message.client_sampling) if message.HasField("client_sampling")
        else None,
        fractionalPercent(message.random_sampling) if message.HasField("random_sampling")
        else None,
        fractionalPercent(message.overall_sampling) if message.HasField("overall_sampling")
        else None,
        compileCustomTags(message.custom_tags, path + ".custom_tags"))


class Decorator:
    """
    A route's C{decorator}: the span's operation name, sent upstream in
    C{x-envoy-decorator-operation} unless C{propagate} is false.
    """

    def __init__(self, operation, propagate=True):
        self.operation = operation
        self.header = operation.encode("utf-8") if propagate else None


def compileDecorator(message, path):
    """@return: a L{Decorator} from an C{envoy.config.route.v3.Decorator}."""
    checkFields(message, frozenset(("operation", "propagate")), path)
    propagate = message.propagate.value if message.HasField("propagate") else True
    return Decorator(message.operation, propagate)


@implementer(ITracerDriver)
class NullDriver:
    """Envoy's null tracer: a C{tracing} block without a provider."""

    def startSpan(self, dispatcher, requestHeaders, streamInfo, operationName, traced, egress,
                  timestamp):
        return None


class TracingConfig:
    """
    One connection manager's compiled C{tracing} block.

    @ivar driver: the provider, an L{txenvoy.interfaces.ITracerDriver}.
    @ivar clientSampling: a L{FractionalPercent} (of 100).
    @ivar randomSampling: a L{FractionalPercent} (of 10000).
    @ivar overallSampling: a L{FractionalPercent} (of 100).
    @ivar verbose: log the stream's timing events on the span.
    @ivar maxPathTagLength: how much of the path C{http.url} keeps.
    @ivar customTags: L{CustomTag}s.
    @ivar spawnUpstreamSpan: the router starts a CLIENT span per request.
    """

    def __init__(self, driver, statPrefix, snapshot, clientSampling=FractionalPercent(100, 100),
                 randomSampling=FractionalPercent(10000, 10000),
                 overallSampling=FractionalPercent(100, 100), verbose=False,
                 maxPathTagLength=DEFAULT_MAX_PATH_TAG_LENGTH, customTags=(),
                 spawnUpstreamSpan=False, nodeId="", zone=""):
        self.driver = driver
        self.snapshot = snapshot
        self.clientSampling = clientSampling
        self.randomSampling = randomSampling
        self.overallSampling = overallSampling
        self.verbose = verbose
        self.maxPathTagLength = maxPathTagLength
        self.customTags = customTags
        self.spawnUpstreamSpan = spawnUpstreamSpan
        self.nodeId = nodeId
        self.zone = zone
        prefix = statPrefix + "tracing."
        self._stats = PerWorker(lambda d: StatsStruct(d.stats, prefix, TRACING_STATS))

    # The request arrives.

    def decide(self, headers, route):
        """
        Envoy's C{mutateTracingRequestHeader}: pack the decision into
        C{x-request-id}.

        @param headers: the L{txenvoy.http.headers.HeaderMap} of the request.
        @return: the trace reason (L{request_id} constants).
        """
        rid = headers.get(b"x-request-id")
        number = request_id.requestIdInteger(rid)
        if number is None:
            return request_id.NO_TRACE
        result = number % 10000
        client, rand, overall = self.clientSampling, self.randomSampling, self.overallSampling
        overrides = route.entry.tracing if route is not None else None
        if overrides is not None:
            client = overrides.clientSampling or client
            rand = overrides.randomSampling or rand
            overall = overrides.overallSampling or overall
        snapshot = self.snapshot()
        reason = request_id.traceReason(rid)
        if reason == request_id.NO_TRACE:
            if headers.get(b"x-client-trace-id") is not None and snapshot.featureEnabledFractional(
                    "tracing.client_enabled", client):
                reason = request_id.CLIENT
            elif headers.get(b"x-envoy-force-trace") is not None:
                reason = request_id.FORCED
            elif snapshot.featureEnabledFractional("tracing.random_sampling", rand, result):
                reason = request_id.SAMPLED
        if not snapshot.featureEnabledFractional("tracing.global_enabled", overall, result):
            reason = request_id.NO_TRACE
        packed = request_id.withTraceReason(rid, reason)
        if packed != rid:
            headers.set(b"x-request-id", packed)
        return reason

    def startSpan(self, dispatcher, request, streamInfo, route, egress):
        """
        Decide, count, and start the connection manager's span; apply the
        route's C{decorator} as Envoy's C{traceRequest}: an egress request
        carries its operation upstream in C{x-envoy-decorator-operation},
        an ingress request's own such header renames the span instead (and
        is removed), else the ingress response carries the operation.

        @param request: the L{txenvoy.http.headers.RequestHeaders}.
        @param route: the request's route match, or C{None}.
        @param egress: the listener's C{traffic_direction} is C{OUTBOUND}.
        @return: C{(span, responseOperation)}: an
            L{txenvoy.interfaces.ISpan} or C{None} when the request's trace
            context cannot be read, and the C{bytes} the response's
            C{x-envoy-decorator-operation} gets, or C{None}.
        """
        headers = request.headers
        reason = self.decide(headers, route)
        getattr(self._stats.get(dispatcher), _STAT_OF_REASON[reason]).inc()
        # Envoy's operation name; a provider may name its spans otherwise
        # (Zipkin: the host), until a decorator renames them.
        if egress:
            name = "egress " + (request.authority or b"").decode("latin-1")
        else:
            name = "ingress"
        span = self.driver.startSpan(dispatcher, request, streamInfo, name,
                                     reason != request_id.NO_TRACE,
                                     egress and not self.spawnUpstreamSpan,
                                     streamInfo.startTime)
        decorator = route.entry.decorator if route is not None else None
        if decorator is not None and span is not None:
            span.setOperation(decorator.operation)
        responseOperation = decorator.header if decorator is not None else None
        if egress:
            if responseOperation is not None:
                headers.set(b"x-envoy-decorator-operation", responseOperation)
            return span, None
        override = headers.get(b"x-envoy-decorator-operation")
        if override is not None:
            if override:
                if span is not None:
                    span.setOperation(override.decode("latin-1"))
                responseOperation = None
            headers.remove(b"x-envoy-decorator-operation")
        return span, responseOperation

    # The router forwards it.

    def beginUpstream(self, span, request, clusterName, startTime):
        """
        Put the trace context into the upstream request.

        @return: the upstream CLIENT span with C{spawn_upstream_span}, else
            C{None}.
        """
        if self.spawnUpstreamSpan:
            child = span.spawnChild("router %s egress" % (clusterName,), startTime)
            child.injectContext(request, None)
            return child
        span.injectContext(request, None)
        return None

    def finishUpstreamSpan(self, child, request, streamInfo, status, endTime,
                           resetReason=None):
        """
        End the router's CLIENT span with Envoy's upstream tags and the
        custom tags.

        @param resetReason: why the upstream request failed before any
            response (Envoy's reset reason, e.g. C{remote connection
            failure}), or C{None}: then, as Envoy's upstream request, the
            span has no protocol nor status, and says why in C{error.reason}.
        """
        if resetReason is not None:
            status = 0
            child.setTag("error", "true")
            child.setTag("error.reason", resetReason)
            child.setTag("http.protocol", "-")
        elif streamInfo.protocol:
            child.setTag("http.protocol", streamInfo.protocol)
        host = streamInfo.upstreamHost
        if host:
            child.setTag("upstream_address", host)
            child.setTag("peer.address", host)
        child.setTag("component", "proxy")
        cluster = streamInfo.upstreamCluster
        if cluster:
            child.setTag("upstream_cluster", cluster)
            child.setTag("upstream_cluster.name", cluster)
        child.setTag("http.status_code", "%d" % (status or 0,))
        child.setTag("response_flags", streamInfo.responseFlags())
        if not status or status >= 500:
            child.setTag("error", "true")
        for custom in self.customTags:
            custom.apply(child, request, streamInfo, None)
        child.finishSpan(endTime)

    # The stream ends.

    def finishSpan(self, span, request, response, streamInfo, route):
        """
        Envoy's C{finalizeDownstreamSpan}: standard tags, custom tags,
        then finish.
        """
        # In Envoy's order (OTLP keeps it).
        tag = span.setTag
        tag("node_id", self.nodeId)
        tag("zone", self.zone)
        if request is not None:
            headers = request.headers
            get = headers.get
            rid = get(b"x-request-id")
            if rid is not None:
                tag("guid:x-request-id", rid.decode("latin-1"))
            client = get(b"x-client-trace-id")
            if client is not None:
                tag("guid:x-client-trace-id", client.decode("latin-1"))
            path = request.path or b""
            limit = self.maxPathTagLength
            if len(path) > limit:
                path = path[:limit]
            scheme = get(b"x-forwarded-proto") or request.scheme or b"http"
            tag("http.url", (b"%s://%s%s" % (scheme, request.authority or b"", path)).decode(
                "latin-1"))
            tag("http.method", request.method.decode("latin-1"))
            downstream = get(b"x-envoy-downstream-service-cluster")
            tag("downstream_cluster", downstream.decode("latin-1") if downstream else "-")
            agent = get(b"user-agent")
            tag("user_agent", agent.decode("latin-1") if agent else "-")
        if streamInfo.protocol:
            tag("http.protocol", streamInfo.protocol)
        remote = streamInfo.downstreamDirectRemoteAddress or streamInfo.downstreamRemoteAddress
        if remote:
            tag("peer.address", remote[0])
        tag("request_size", "%d" % (streamInfo.bytesReceived,))
        tag("response_size", "%d" % (streamInfo.bytesSent,))
        tag("component", "proxy")
        cluster = streamInfo.upstreamCluster
        if cluster:
            tag("upstream_cluster", cluster)
            tag("upstream_cluster.name", cluster)
        status = streamInfo.responseCode
        tag("http.status_code", "%d" % (status or 0,))
        tag("response_flags", streamInfo.responseFlags())
        if not status or status >= 500:
            tag("error", "true")
        for custom in self.customTags:
            custom.apply(span, request, streamInfo, route)
        overrides = route.entry.tracing if route is not None else None
        if overrides is not None:
            for custom in overrides.customTags:
                custom.apply(span, request, streamInfo, route)
        if self.verbose:
            start = streamInfo.startTime
            for attribute, event in VERBOSE_EVENTS:
                at = streamInfo.elapsed(getattr(streamInfo, attribute, None))
                if at is not None:
                    span.log(start + at, event)
        span.finishSpan(streamInfo.startTime + streamInfo.duration())


def compileTracing(message, context, path, statPrefix):
    """
    Compile an HCM C{tracing} block.

    @param message: an C{HttpConnectionManager.Tracing}.
    @param statPrefix: C{http.<stat_prefix>.}.
    @return: a L{TracingConfig}; without a provider, Envoy still decides
        and counts, but makes no spans (L{NullDriver}).
    """
    from txenvoy.config.registry import Category
    from txenvoy.http.filter_config import snapshotSource

    checkFields(message, _TRACING_FIELDS, path)
    if message.HasField("provider"):
        driver = context.createExtension(Category.TRACER, message.provider, path + ".provider")
    else:
        driver = NullDriver()
    nodeId = zone = ""
    if context.bootstrap is not None:
        nodeId = context.bootstrap.node.id
        zone = context.bootstrap.node.locality.zone
    maxPath = (message.max_path_tag_length.value if message.HasField("max_path_tag_length")
               else DEFAULT_MAX_PATH_TAG_LENGTH)
    return TracingConfig(
        driver, statPrefix, snapshotSource(context),
        clientSampling=FractionalPercent(_percent(message, "client_sampling", 100, 100), 100),
        randomSampling=FractionalPercent(_percent(message, "random_sampling", 10000, 10000),
                                         10000),
        overallSampling=FractionalPercent(_percent(message, "overall_sampling", 100, 100), 100),
        verbose=message.verbose, maxPathTagLength=maxPath,
        customTags=compileCustomTags(message.custom_tags, path + ".custom_tags"),
        spawnUpstreamSpan=(message.spawn_upstream_span.value
                           if message.HasField("spawn_upstream_span") else False),
        nodeId=nodeId, zone=zone)
