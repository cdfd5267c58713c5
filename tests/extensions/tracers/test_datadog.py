"""
Tests for L{txenvoy.extensions.tracers.datadog}: spans, sampling and the
agent's msgpack payload as Envoy's Datadog tracer makes them.
"""

import weakref

import msgpack
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.extensions.tracers.freeing import withoutCollector
from tests.http.hcm_harness import Harness
from txenvoy.config.errors import ConfigError
from txenvoy.extensions.tracers.datadog import (
    DatadogDriver,
    encodeTraces,
    knuthKeeps,
    traceCountHeader,
)
from txenvoy.http.headers import HeaderMap, RequestHeaders
from txenvoy.interfaces import ISpan, ITracerDriver
from txenvoy.network.stream_info import StreamInfo
from txenvoy.server.dispatcher import Dispatcher
from txenvoy.stats.store import StatsStore


def request(*pairs):
    return RequestHeaders(b"GET", b"/", b"h", headers=HeaderMap(
        [(n.encode(), v.encode()) for n, v in pairs]))


class DatadogDriverTests(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.dispatcher = Dispatcher(self.clock, "worker_0", StatsStore().shard("worker_0"))
        self.info = StreamInfo(self.clock)
        self.driver = DatadogDriver("datadog", "edge")
        verifyObject(ITracerDriver, self.driver)
        self.reported = []
        tracer = self.driver.tracerFor(self.dispatcher)
        tracer.reporter.report = self.reported.append

    def test_freedByReferenceCounting(self):
        """
        A driver and the tracer it made for a worker (and its reporter) are
        freed by reference counting alone once a new config lets them go:
        the agent's answers reach the tracer without holding it.
        """
        driver = DatadogDriver("datadog", "edge")
        tracer = driver.tracerFor(self.dispatcher)
        refs = [weakref.ref(driver), weakref.ref(tracer), weakref.ref(tracer.reporter)]
        withoutCollector(self)
        del driver, tracer
        self.assertEqual([ref() for ref in refs], [None, None, None])

    def start(self, *pairs, traced=True, name="ingress"):
        span = self.driver.startSpan(self.dispatcher, request(*pairs), self.info, name,
                                     traced, False, 1796655509.25)
        verifyObject(ISpan, span)
        return span

    def test_newTrace(self):
        """
        A new trace Envoy keeps: span id equal to the trace id, the upper
        half the time in seconds, AUTO_KEEP by the agent's default rate
        (_dd.p.dm -0, _dd.agent_psr).
        """
        span = self.start()
        span.finishSpan(1796655509.5)
        [segment] = self.reported
        [out] = segment.toMsgpack()
        self.assertEqual((out["trace_id"], out["parent_id"], out["name"], out["resource"],
                          out["service"], out["start"], out["duration"], out["type"]),
                         (out["span_id"], 0, "envoy.proxy", "ingress", "edge",
                          1796655509250000000, 250000000, "web"))
        self.assertEqual(segment.traceIdHigh, 1796655509 << 32)
        self.assertEqual((out["meta"]["_dd.p.tid"], out["meta"]["_dd.p.dm"]),
                         ("%016x" % (1796655509 << 32,), "-0"))
        self.assertEqual((out["metrics"]["_sampling_priority_v1"],
                          out["metrics"]["_dd.agent_psr"]), (1.0, 1.0))

    def test_envoyDrops(self):
        """A new trace Envoy's sampling drops is sent as USER_DROP (-1)."""
        span = self.start(traced=False)
        self.assertFalse(span.sampled)
        span.finishSpan(1796655510.0)
        [out] = self.reported[0].toMsgpack()
        self.assertEqual(out["metrics"], {"process_id": out["metrics"]["process_id"],
                                          "_sampling_priority_v1": -1.0})
        self.assertNotIn("_dd.p.dm", out["meta"])

    def test_callerPriorityStands(self):
        """A caller's priority stands whatever Envoy decided."""
        span = self.start(("x-datadog-trace-id", "5"), ("x-datadog-parent-id", "6"),
                          ("x-datadog-sampling-priority", "0"), traced=True)
        self.assertEqual((span.segment.traceId, span.parentId, span.segment.priority),
                         (5, 6, 0))

    def test_agentRates(self):
        """
        dd-trace-cpp's: the agent's rate_by_service for this service, else
        its default rate, decides new traces (mechanism -1, AGENT_RATE); a
        rate of 0 drops them (AUTO_DROP).
        """
        tracer = self.driver.tracerFor(self.dispatcher)
        self.assertEqual(tracer.sampleRate(), (1.0, "-0"))
        tracer.onAgentResponse(200, b'{"rate_by_service": {"service:,env:": 0.5}}')
        self.assertEqual(tracer.sampleRate(), (0.5, "-1"))
        tracer.onAgentResponse(200, b'{"rate_by_service": {"service:edge,env:": 0.0}}')
        self.assertEqual(tracer.sampleRate(), (0.0, "-1"))
        span = self.start()
        self.assertEqual(span.segment.priority, 0)
        tracer.onAgentResponse(200, b"not json")
        tracer.onAgentResponse(500, b'{"rate_by_service": {}}')
        self.assertEqual(tracer.sampleRate(), (0.0, "-1"))

    def test_knuth(self):
        """dd-trace-cpp's sampling by trace id: all at 1, none at 0, about half at 0.5."""
        ids = range(1, 2001)
        self.assertEqual(sum(knuthKeeps(i, 1.0) for i in ids), 2000)
        self.assertEqual(sum(knuthKeeps(i, 0.0) for i in ids), 0)
        self.assertTrue(800 < sum(knuthKeeps(i, 0.5) for i in ids) < 1200)

    def test_tags(self):
        """error sets the span's error, error.reason also error.message, resource.name the resource."""
        span = self.start()
        span.setTag("error", "true")
        span.setTag("error.reason", "remote connection failure")
        span.setTag("resource.name", "r1")
        span.setOperation("decorated")
        span.log(1.0, "ignored")
        span.finishSpan(1796655510.0)
        [out] = self.reported[0].toMsgpack()
        self.assertEqual((out["error"], out["resource"], out["meta"]["error.message"],
                          out["meta"]["error.reason"]),
                         (1, "decorated", "remote connection failure",
                          "remote connection failure"))

    def test_childSpansLeaveTogether(self):
        """
        The router's span is a child in the same trace; the trace is
        reported once its last span finishes, trace-wide state on its root.
        """
        span = self.start()
        child = span.spawnChild("router origin egress", 1796655509.3)
        child.finishSpan(1796655509.4)
        self.assertEqual(self.reported, [])
        span.finishSpan(1796655509.5)
        [segment] = self.reported
        root, out = segment.toMsgpack()
        self.assertEqual((out["parent_id"], out["resource"], out["name"]),
                         (root["span_id"], "router origin egress", "envoy.proxy"))
        self.assertNotIn("_sampling_priority_v1", out["metrics"])
        self.assertNotIn("_dd.p.tid", out["meta"])

    def test_payload(self):
        """The report: a msgpack list of traces, and their count in a header."""
        self.start().finishSpan(1796655510.0)
        self.start().finishSpan(1796655510.0)
        body = msgpack.unpackb(encodeTraces(self.reported))
        self.assertEqual([len(t) for t in body], [1, 1])
        self.assertEqual(traceCountHeader(self.reported), [(b"x-datadog-trace-count", b"2")])

    def test_setSampled(self):
        """setSampled overrides the priority: USER_KEEP or USER_DROP."""
        span = self.start(traced=False)
        span.setSampled(True)
        self.assertEqual(span.segment.priority, 2)
        span.setSampled(False)
        self.assertEqual(span.segment.priority, -1)


DATADOG = "type.googleapis.com/envoy.config.trace.v3.DatadogConfig"


def harness(testCase, **fields):
    typed = {"@type": DATADOG}
    typed.update(fields)
    return Harness(testCase, hcm={"tracing": {"provider": {
        "name": "envoy.tracers.datadog", "typed_config": typed}}})


class DatadogConfigTests(SynchronousTestCase):

    def test_config(self):
        """collector_cluster, service_name and collector_hostname are read."""
        driver = harness(self, collector_cluster="dd", service_name="edge",
                         collector_hostname="agent.local").config.tracing.driver
        self.assertEqual((driver.collectorCluster, driver.serviceName,
                          driver.collectorHostname), ("dd", "edge", "agent.local"))

    def test_serviceNameRequired(self):
        """As Envoy's validation: service_name must not be empty."""
        e = self.assertRaises(ConfigError, harness, self, collector_cluster="dd")
        self.assertIn("tracing.provider.typed_config.service_name: value length must be at "
                      "least 1 characters", str(e))

    def test_remoteConfigRefused(self):
        """Remote configuration is refused with its path, not ignored."""
        e = self.assertRaises(ConfigError, harness, self, collector_cluster="dd",
                              service_name="s", remote_config={})
        self.assertIn("tracing.provider.typed_config.remote_config", str(e))
