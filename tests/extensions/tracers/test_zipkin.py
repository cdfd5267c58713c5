"""
Tests for L{txenvoy.extensions.tracers.zipkin}: spans as Envoy's Zipkin
tracer makes them, and their Zipkin v2 JSON.
"""

import json
import weakref

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.extensions.tracers.freeing import withoutCollector
from txenvoy.extensions.tracers.zipkin import ZipkinDriver
from txenvoy.http.filter_config import snapshotSource
from txenvoy.http.headers import HeaderMap, RequestHeaders
from txenvoy.interfaces import ISpan, ITracerDriver
from txenvoy.network.stream_info import StreamInfo
from txenvoy.server.dispatcher import Dispatcher
from txenvoy.stats.store import StatsStore


def request(*pairs):
    return RequestHeaders(b"GET", b"/", b"h", headers=HeaderMap(
        [(n.encode(), v.encode()) for n, v in pairs]))


class ZipkinDriverTests(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.dispatcher = Dispatcher(self.clock, "worker_0", StatsStore().shard("worker_0"))
        self.info = StreamInfo(self.clock)

    def driver(self, **kw):
        driver = ZipkinDriver("zipkin", "/api/v2/spans", snapshotSource(None),
                              localAddress="10.0.0.1", serviceName="svc", **kw)
        verifyObject(ITracerDriver, driver)
        return driver

    def start(self, driver, headers, egress=False, traced=True):
        span = driver.startSpan(self.dispatcher, headers, self.info, "op", traced, egress, 10.0)
        verifyObject(ISpan, span)
        return span

    def test_freedByReferenceCounting(self):
        """
        A driver and the reporter it made for a worker are freed by
        reference counting alone once a new config lets them go: the
        reporter encodes without holding the driver (no reference cycle,
        which only a collection of the whole heap would free).
        """
        for proto in (False, True):
            driver = self.driver(proto=proto)
            refs = [weakref.ref(driver), weakref.ref(driver.reporterFor(self.dispatcher))]
            withoutCollector(self)
            del driver
            self.assertEqual([ref() for ref in refs], [None, None])

    def test_rootSpan(self):
        """A new trace: span id equal to the trace id, SERVER, shared."""
        span = self.start(self.driver(), request())
        self.assertEqual((span.traceId, span.parentId, span.kind, span.shared),
                         (span.spanId, None, "SERVER", True))

    def test_trace128(self):
        """trace_id_128bit: a 32-digit trace id whose lower half is the span id."""
        span = self.start(self.driver(traceId128=True), request())
        span.finishSpan(10.0)
        out = span.toJson({})
        self.assertEqual(len(out["traceId"]), 32)
        self.assertEqual(out["traceId"][16:], out["id"])

    def test_sharedSpanContext(self):
        """An ingress span keeps the caller's span id, and marks it shared."""
        span = self.start(self.driver(), request(
            ("x-b3-traceid", "0000000000000001"), ("x-b3-spanid", "0000000000000002"),
            ("x-b3-parentspanid", "0000000000000003")))
        self.assertEqual((span.traceId, span.spanId, span.parentId, span.shared),
                         (1, 2, 3, True))

    def test_childOfCaller(self):
        """Without shared_span_context, and for egress, the span is the caller's child."""
        headers = request(("x-b3-traceid", "0000000000000001"),
                          ("x-b3-spanid", "0000000000000002"))
        for driver, egress, kind in ((self.driver(sharedSpanContext=False), False, "SERVER"),
                                     (self.driver(), True, "CLIENT")):
            span = self.start(driver, headers, egress=egress)
            self.assertEqual((span.traceId, span.parentId, span.kind, span.shared),
                             (1, 2, kind, False))
            self.assertNotEqual(span.spanId, 2)

    def test_json(self):
        """
        Zipkin v2 JSON as Envoy sends it: named after the host,
        microseconds, the ss annotation, localEndpoint.
        """
        driver = self.driver()
        span = self.start(driver, request(("b3", "0000000000000001-0000000000000002-1")))
        span.setTag("component", "proxy")
        span.finishSpan(10.25)
        [out] = json.loads(driver.encode([span]))
        self.assertEqual(out, {
            "traceId": "0000000000000001", "id": "0000000000000002", "name": "h",
            "kind": "SERVER", "timestamp": 10000000, "duration": 250000, "shared": True,
            "localEndpoint": {"ipv4": "10.0.0.1", "port": 0, "serviceName": "svc"},
            "tags": {"component": "proxy"},
            "annotations": [{"timestamp": 10250000, "value": "ss"}]})
        self.assertEqual(driver.reporterFor(self.dispatcher).spans, [span])

    def test_proto(self):
        """
        HTTP_PROTO: a zipkin.proto3.ListOfSpans as Envoy 1.40 writes it, the
        trace id big-endian and the span and parent ids in host
        (little-endian) byte order.
        """
        from txenvoy.tracing import zipkin_proto

        driver = self.driver(proto=True)
        span = self.start(driver, request(
            ("x-b3-traceid", "0000000000000001"), ("x-b3-spanid", "0000000000000002")),
            egress=True)
        span.setTag("component", "proxy")
        span.finishSpan(10.25)
        message = zipkin_proto.ListOfSpans()
        message.ParseFromString(driver.encodeProto([span]))
        [out] = message.spans
        self.assertEqual((out.trace_id.hex(), out.parent_id.hex(), out.id,
                          out.kind, out.name, out.timestamp, out.duration, out.shared),
                         ("0000000000000001", "0200000000000000",
                          span.spanId.to_bytes(8, "little"), 1, "h", 10000000, 250000, False))
        self.assertEqual((out.local_endpoint.service_name, out.local_endpoint.ipv4),
                         ("svc", bytes([10, 0, 0, 1])))
        self.assertEqual((dict(out.tags), [(a.timestamp, a.value) for a in out.annotations]),
                         ({"component": "proxy"}, [(10250000, "cr")]))

    def test_unsampledNotReported(self):
        """An unsampled span finishes without reaching the reporter."""
        driver = self.driver()
        self.start(driver, request(), traced=False).finishSpan(11.0)
        self.assertEqual(driver.reporterFor(self.dispatcher).spans, [])
