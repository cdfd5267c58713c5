# -*- test-case-name: tests.extensions.tracers.test_datadog -*-
"""
C{envoy.tracers.datadog}: spans as Envoy's Datadog tracer (dd-trace-cpp)
makes them, sent to a Datadog agent's trace API (C{POST /v0.4/traces},
C{application/msgpack}) on C{collector_cluster}.

Every span is named C{envoy.proxy}; what Envoy calls the operation
(C{ingress}, C{egress <host>}, a route's C{decorator}) is its resource,
and C{service_name} its service. The context is read from the Datadog
headers, then W3C C{traceparent}/C{tracestate}, and both are written
upstream (L{txenvoy.tracing.datadog_context}).

Every trace goes to the agent, kept or not: its sampling priority says
which. A caller's priority stands; a new trace that Envoy's sampling drops
gets C{USER_DROP} (-1), one it keeps the agent's rate for the service
(C{rate_by_service} from the agent's last answer, 100% until then) as
C{AUTO_KEEP} or C{AUTO_DROP}. The spans of one local trace leave together
once all of them have finished, batched per worker every two seconds (as
dd-trace-cpp's flush interval); stats C{tracing.datadog.reports_sent},
C{reports_dropped}, C{reports_failed} and C{reports_skipped_no_cluster}
as Envoy names them, and txenvoy's C{spans_dropped} (traces a full buffer
or a slow agent cost, counted by trace).

msgpack encodes the report; it does no I/O, and the report is POSTed by
Twisted's HTTP client on the worker's own reactor, so neither blocks it.
"""

import json
import os
import random
import sys
import uuid
import weakref

import msgpack
from zope.interface import implementer

from txenvoy import VERSION_STRING, __version__
from txenvoy.config.errors import ConfigError
from txenvoy.config.registry import Category, extension
from txenvoy.interfaces import ISpan, ITracerDriver
from txenvoy.stats.per_worker import StatsStruct, perWorkerMethod
from txenvoy.tracing import datadog_context
from txenvoy.tracing.datadog_context import AUTO_DROP, AUTO_KEEP, USER_DROP, USER_KEEP
from txenvoy.tracing.reporter import BatchReporter, HttpCollector, checkCollectorCluster

#: Envoy's C{tracing.datadog.*} counters, and txenvoy's C{spans_dropped}.
DATADOG_STATS = ("reports_sent", "reports_dropped", "reports_failed",
                 "reports_skipped_no_cluster", "spans_dropped")

TRACES_PATH = "/v0.4/traces"
#: dd-trace-cpp's flush interval and Envoy's agent request timeout.
FLUSH_INTERVAL = 2.0
REPORT_TIMEOUT = 2.0
MAX_BUFFERED_TRACES = 1000
SPAN_NAME = "envoy.proxy"

_FIELDS = ("collector_cluster", "service_name", "collector_hostname")
_KNUTH_FACTOR = 1111111111111111111
_MAX_ID = (1 << 64) - 1
_DEFAULT_RATE_KEY = "service:,env:"
# dd-trace-cpp's sampling mechanisms, as the _dd.p.dm trace tag writes them.
_DEFAULT_MECHANISM, _AGENT_RATE = "-0", "-1"

_rng = random.SystemRandom()


def _randomId():
    # dd-trace-cpp's ids are 63-bit.
    return _rng.getrandbits(63) or 1


def _nanos(seconds):
    # Envoy's clock: whole microseconds.
    return int(round(seconds * 1e6)) * 1000


def knuthKeeps(traceId, rate):
    """dd-trace-cpp's sampling by trace id: the same decision everywhere for one trace."""
    if rate >= 1.0:
        return True
    return (traceId * _KNUTH_FACTOR) & _MAX_ID < int(rate * _MAX_ID)


class TraceSegment:
    """
    The spans of one trace on this proxy and the trace-wide state they share:
    the sampling priority, the C{_dd.p.*} trace tags, the origin.
    """

    def __init__(self, tracer, traceIdHigh, traceId, priority=None, origin=None,
                 traceTags=(), w3cParentId=None, otherTraceState=""):
        self.tracer = tracer
        self.traceIdHigh = traceIdHigh
        self.traceId = traceId
        self.priority = priority
        self.origin = origin
        self.traceTags = list(traceTags)
        self.w3cParentId = w3cParentId
        self.otherTraceState = otherTraceState
        self.agentRate = None
        self.spans = []
        self._open = 0

    def decide(self, traced):
        """Envoy's sampling over dd-trace-cpp's, for a trace without a priority yet."""
        if self.priority is not None:
            return
        if not traced:
            self.priority = USER_DROP
            return
        rate, mechanism = self.tracer.sampleRate()
        self.agentRate = rate
        if knuthKeeps(self.traceId, rate):
            self.priority = AUTO_KEEP
            self.setTraceTag("_dd.p.dm", mechanism)
        else:
            self.priority = AUTO_DROP

    def setTraceTag(self, name, value):
        self.traceTags = [t for t in self.traceTags if t[0] != name] + [(name, value)]

    def opened(self, span):
        self.spans.append(span)
        self._open += 1

    def closed(self):
        self._open -= 1
        if self._open == 0:
            self.tracer.reporter.report(self)

    def toMsgpack(self):
        """This trace as the agent's v0.4 API has it: a list of span maps."""
        tracer = self.tracer
        out = []
        for i, span in enumerate(self.spans):
            meta = dict(span.tags)
            meta.update(tracer.spanMeta)
            metrics = {"process_id": tracer.processId}
            if self.origin:
                meta["_dd.origin"] = self.origin
            if i == 0:
                # The local root carries the trace-wide state.
                for name, value in self.traceTags:
                    meta[name] = value
                if self.w3cParentId is not None:
                    meta["_dd.parent_id"] = self.w3cParentId
                if self.agentRate is not None:
                    metrics["_dd.agent_psr"] = float(self.agentRate)
                metrics["_sampling_priority_v1"] = float(self.priority)
            out.append({
                "service": tracer.serviceName,
                "name": span.name,
                "resource": span.resource,
                "trace_id": self.traceId,
                "span_id": span.spanId,
                "parent_id": span.parentId,
                "start": _nanos(span.start),
                "duration": max(0, _nanos(span.end) - _nanos(span.start)),
                "error": 1 if span.error else 0,
                "meta": meta,
                "metrics": metrics,
                "type": "web",
            })
        return out


@implementer(ISpan)
class DatadogSpan:
    """One Datadog span; its segment reports the trace when its last span finishes."""

    def __init__(self, segment, resource, spanId, parentId, start, name=SPAN_NAME):
        self.segment = segment
        self.name = name
        self.resource = resource
        self.spanId = spanId
        self.parentId = parentId
        self.start = start
        self.end = None
        self.error = False
        self.tags = {}
        segment.opened(self)

    @property
    def sampled(self):
        return self.segment.priority is not None and self.segment.priority > 0

    def setOperation(self, name):
        # What Envoy calls the operation is Datadog's resource.
        self.resource = name

    def setTag(self, name, value):
        if name == "resource.name":
            self.resource = value
            return
        if name == "error":
            self.error = value == "true"
            return
        self.tags[name] = value
        if name == "error.reason":
            self.tags["error.message"] = value

    def log(self, timestamp, event):
        """Datadog spans have no events (as Envoy's)."""

    def setSampled(self, sampled):
        self.segment.priority = USER_KEEP if sampled else USER_DROP

    def finishSpan(self, timestamp):
        if self.end is not None:
            return
        self.end = timestamp
        self.segment.closed()

    def injectContext(self, requestHeaders, upstreamHost):
        segment = self.segment
        datadog_context.inject(requestHeaders.headers, segment.traceIdHigh, segment.traceId,
                               self.spanId, segment.priority, segment.origin,
                               segment.traceTags, segment.otherTraceState)

    def spawnChild(self, operationName, timestamp):
        return DatadogSpan(self.segment, operationName, _randomId(), self.spanId, timestamp,
                           name=SPAN_NAME)


class DatadogTracer:
    """
    One worker's tracer: its reporter, its runtime id, and the sampling
    rates the agent last sent.
    """

    def __init__(self, serviceName, reporterFactory):
        self.serviceName = serviceName
        self.environment = os.environ.get("DD_ENV", "")
        self.processId = float(os.getpid())
        self.spanMeta = {"language": "python", "runtime-id": str(uuid.uuid4()),
                         "version": "envoy " + VERSION_STRING}
        if self.environment:
            self.spanMeta["env"] = self.environment
        self.rates = {}
        self.defaultRate = None
        self.reporter = reporterFactory(self)

    def sampleRate(self):
        """
        @return: C{(rate, mechanism)} for a new trace of this service, as
            dd-trace-cpp's: the agent's rate for this service, else its
            default rate (both C{AGENT_RATE}), else 100% (C{DEFAULT}) until
            the agent has answered.
        """
        rate = self.rates.get("service:%s,env:%s" % (self.serviceName, self.environment))
        if rate is not None:
            return rate, _AGENT_RATE
        if self.defaultRate is not None:
            return self.defaultRate, _AGENT_RATE
        return 1.0, _DEFAULT_MECHANISM

    def onAgentResponse(self, code, body):
        """
        The agent's answer: C{{"rate_by_service": {"service:s,env:e": rate}}};
        its default rate (key C{service:,env:}) stays until another replaces it.
        """
        if code != 200:
            return
        try:
            rates = json.loads(body).get("rate_by_service")
        except (ValueError, AttributeError):
            return
        if isinstance(rates, dict):
            self.rates = {k: float(v) for k, v in rates.items()
                          if isinstance(v, (int, float)) and 0.0 <= v <= 1.0}
            self.defaultRate = self.rates.get(_DEFAULT_RATE_KEY, self.defaultRate)


def _agentResponses(tracer):
    """
    The agent's answers for C{tracer}, which does not stay alive for them:
    the tracer holds its reporter, which holds this; a reference back would
    be a cycle, freed only by a collection of the whole heap once a config
    replaced the tracer.
    """
    onAgentResponse = weakref.WeakMethod(tracer.onAgentResponse)

    def onResponseBody(code, body):
        method = onAgentResponse()
        if method is not None:
            method(code, body)

    return onResponseBody


def encodeTraces(segments):
    """A report body: the msgpack list of traces."""
    return msgpack.packb([s.toMsgpack() for s in segments])


def traceCountHeader(segments):
    """The report's own headers: how many traces it carries."""
    return [(b"x-datadog-trace-count", b"%d" % (len(segments),))]


_LANG_HEADERS = [
    (b"datadog-meta-lang", b"python"),
    (b"datadog-meta-lang-version", ("%d.%d.%d" % sys.version_info[:3]).encode()),
    (b"datadog-meta-tracer-version", __version__.encode()),
]


@implementer(ITracerDriver)
class DatadogDriver:
    """The compiled C{DatadogConfig}: spans, and a tracer per worker."""

    def __init__(self, collectorCluster, serviceName, collectorHostname="",
                 flushInterval=FLUSH_INTERVAL):
        self.collectorCluster = collectorCluster
        self.serviceName = serviceName
        self.collectorHostname = collectorHostname
        self.flushInterval = flushInterval

    def _makeTracer(self, dispatcher):
        def reporter(tracer):
            collector = HttpCollector(
                dispatcher, self.collectorCluster, TRACES_PATH, b"application/msgpack",
                self.collectorHostname, extraHeaders=_LANG_HEADERS, timeout=REPORT_TIMEOUT,
                onResponseBody=_agentResponses(tracer))
            stats = StatsStruct(dispatcher.stats, "tracing.datadog.", DATADOG_STATS)
            return BatchReporter(
                dispatcher.reactor, collector, encodeTraces, stats,
                flushInterval=self.flushInterval, minFlushSpans=MAX_BUFFERED_TRACES,
                maxBufferedSpans=MAX_BUFFERED_TRACES, okStatus=lambda code: code == 200,
                reportHeaders=traceCountHeader)
        return DatadogTracer(self.serviceName, reporter)

    #: C{tracerFor(dispatcher)}: that worker's L{DatadogTracer}.
    tracerFor = perWorkerMethod(_makeTracer)

    def startSpan(self, dispatcher, requestHeaders, streamInfo, operationName, traced, egress,
                  timestamp):
        tracer = self.tracerFor(dispatcher)
        context = datadog_context.extract(requestHeaders.headers)
        if context is None:
            spanId = _randomId()
            # dd-trace-cpp's 128-bit trace ids: the upper half starts with
            # the time in seconds.
            high = int(timestamp) << 32
            segment = TraceSegment(tracer, high, spanId,
                                   traceTags=[("_dd.p.tid", "%016x" % (high,))])
            span = DatadogSpan(segment, operationName, spanId, 0, timestamp)
        else:
            segment = TraceSegment(tracer, context.traceIdHigh, context.traceId,
                                   context.priority, context.origin, context.traceTags,
                                   context.w3cParentId, context.otherTraceState)
            span = DatadogSpan(segment, operationName, _randomId(), context.parentId,
                               timestamp)
        segment.decide(traced)
        return span


@extension(Category.TRACER, "envoy.config.trace.v3.DatadogConfig", "envoy.tracers.datadog",
           fields=_FIELDS)
def createDatadogDriver(message, context):
    """Build a L{DatadogDriver} from an C{envoy.config.trace.v3.DatadogConfig}."""
    path = context.path + ".typed_config"
    if not message.collector_cluster:
        raise ConfigError("%s.collector_cluster: value length must be at least 1 characters"
                          % (path,))
    if not message.service_name:
        raise ConfigError("%s.service_name: value length must be at least 1 characters"
                          % (path,))
    checkCollectorCluster(context, message.collector_cluster, path + ".collector_cluster")
    return DatadogDriver(message.collector_cluster, message.service_name,
                         message.collector_hostname)
