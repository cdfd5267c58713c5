"""
Tests for L{txenvoy.tracing.http_tracer}: Envoy's sampling decision, the
connection manager's span and its tags, through an in-memory connection
manager and router (L{txenvoy.testing.HttpProxyHarness}).
"""

from twisted.trial.unittest import SynchronousTestCase

from tests.http.hcm_harness import Harness
from txenvoy.config.errors import ConfigError
from txenvoy.runtime.runtime import OverrideLayer, Snapshot, entryFromText
from txenvoy.tracing import request_id
from txenvoy.tracing.http_tracer import VERBOSE_EVENTS

ZIPKIN = {"name": "envoy.tracers.zipkin", "typed_config": {
    "@type": "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig",
    "collector_cluster": "origin", "collector_endpoint": "/api/v2/spans",
    "collector_endpoint_version": "HTTP_JSON"}}

ROUTES = """
- match: {prefix: "/deco"}
  route: {cluster: origin}
  decorator: {operation: checkout}
  metadata: {filter_metadata: {team: {owner: payments}}}
- match: {prefix: "/quiet"}
  route: {cluster: origin}
  tracing: {random_sampling: {numerator: 0}}
- match: {prefix: "/"}
  route: {cluster: origin}
"""

RID = "12345678-aaaa-4bbb-8ccc-123456789012"


class TracingTestCase(SynchronousTestCase):

    tracing = {}

    def setUp(self):
        self.h = Harness(self, routes=ROUTES,
                         hcm={"tracing": dict(self.tracing, provider=ZIPKIN)})
        self.config = self.h.config.tracing

    def runtime(self, values):
        snapshot = Snapshot([OverrideLayer("test", {k: entryFromText(v)
                                                     for k, v in values.items()})])
        self.config.snapshot = lambda: snapshot

    def request(self, path, headers=(), status=200):
        # Each request on its own upstream connection.
        return self.h.request(path=path, headers=headers, upstreamResponse=(
            b"HTTP/1.1 %d x\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok" % (status,)))

    def spans(self):
        """Finished, sampled spans waiting in the worker's reporter."""
        return self.config.driver.reporterFor(self.h.dispatcher).spans

    def upstream(self, exchange):
        return dict(exchange.upstreamRequest.headers)


class SamplingTests(TracingTestCase):

    def test_randomSamplingByDefault(self):
        """
        Envoy's defaults sample every request: x-request-id gets 9 at offset
        14, http.<prefix>.tracing.random_sampling counts it, the span is
        kept for the reporter and B3 goes upstream.
        """
        e = self.request("/a")
        up = self.upstream(e)
        self.assertEqual(up["x-request-id"][14], "9")
        self.assertEqual(up["x-b3-sampled"], "1")
        self.assertEqual(up["x-b3-spanid"], up["x-b3-traceid"])
        self.assertEqual(self.h.stat("http.ingress.tracing.random_sampling"), 1)
        [span] = self.spans()
        self.assertEqual((span.kind, span.name, span.shared), ("SERVER", "example.com", True))

    def test_decisionCarriedInRequestId(self):
        """A request id that already says sampled is traced whatever the sampling."""
        self.runtime({"tracing.random_sampling": "0"})
        e = self.request("/a", headers=[("x-request-id", RID[:14] + "9" + RID[15:])])
        self.assertEqual(self.upstream(e)["x-b3-sampled"], "1")
        e = self.request("/a", headers=[("x-request-id", RID)])
        self.assertEqual(self.upstream(e)["x-b3-sampled"], "0")
        self.assertEqual(self.upstream(e)["x-request-id"], RID)
        self.assertEqual(self.h.stat("http.ingress.tracing.not_traceable"), 1)
        self.assertEqual(len(self.spans()), 1)

    def test_clientTraceId(self):
        """x-client-trace-id forces a trace (b), unless tracing.client_enabled is 0."""
        e = self.request("/a", headers=[("x-request-id", RID),
                                               ("x-client-trace-id", "c1")])
        self.assertEqual(self.upstream(e)["x-request-id"][14], "b")
        self.assertEqual(self.spans()[0].tags["guid:x-client-trace-id"], "c1")
        self.runtime({"tracing.client_enabled": "0", "tracing.random_sampling": "0"})
        e = self.request("/a", headers=[("x-request-id", RID),
                                               ("x-client-trace-id", "c1")])
        self.assertEqual(self.upstream(e)["x-request-id"][14], "4")
        self.assertEqual(self.h.stat("http.ingress.tracing.client_enabled"), 1)

    def test_forceTrace(self):
        """
        x-envoy-force-trace forces a trace (a), counted as service_forced;
        the connection manager strips it from external requests first, as
        Envoy does.
        """
        self.runtime({"tracing.random_sampling": "0"})
        headers = _Map(RID)
        headers[b"x-envoy-force-trace"] = b"1"
        self.assertEqual(self.config.decide(headers, None), request_id.FORCED)
        self.assertEqual(headers[b"x-request-id"][14:15], b"a")
        e = self.request("/a", headers=[("x-request-id", RID), ("x-envoy-force-trace", "1")])
        self.assertEqual(self.upstream(e)["x-request-id"][14], "4")
        self.assertEqual(self.h.stat("http.ingress.tracing.not_traceable"), 1)

    def test_globalEnabledVetoes(self):
        """tracing.global_enabled at 0 (overall_sampling) clears every reason."""
        self.runtime({"tracing.global_enabled": "0"})
        e = self.request("/a", headers=[("x-request-id", RID[:14] + "9" + RID[15:])])
        self.assertEqual(self.upstream(e)["x-request-id"], RID)
        self.assertEqual(self.spans(), [])

    def test_routeOverridesRandomSampling(self):
        """A route's tracing.random_sampling replaces the connection manager's."""
        e = self.request("/quiet", headers=[("x-request-id", RID)])
        self.assertEqual(self.upstream(e)["x-b3-sampled"], "0")

    def test_incomingSampledStateWins(self):
        """x-b3-sampled: 0 keeps a sampled request out of the reports (Zipkin)."""
        e = self.request("/a", headers=[("x-b3-sampled", "0")])
        self.assertEqual(self.upstream(e)["x-b3-sampled"], "0")
        self.assertEqual(self.spans(), [])


class PercentTests(TracingTestCase):

    tracing = {"random_sampling": {"value": 50}, "client_sampling": {"value": 0}}

    def test_randomSamplingOnTheRequestId(self):
        """random_sampling is a share of 10000 decided on int(id[:8], 16) % 10000."""
        self.assertEqual(self.config.randomSampling, (5000, 10000))
        below = "%08x" % (10000 * 7 + 4999,) + RID[8:]
        above = "%08x" % (10000 * 7 + 5000,) + RID[8:]
        self.assertEqual(self.config.decide(_Map(below), None), request_id.SAMPLED)
        self.assertEqual(self.config.decide(_Map(above), None), request_id.NO_TRACE)

    def test_clientSampling(self):
        """client_sampling 0 ignores x-client-trace-id."""
        self.assertEqual(self.config.decide(_Map(RID, b"c"), None), request_id.SAMPLED
                         if int(RID[:8], 16) % 10000 < 5000 else request_id.NO_TRACE)


class _Map(dict):
    def __init__(self, rid, client=None):
        dict.__init__(self, {b"x-request-id": rid.encode()})
        if client is not None:
            self[b"x-client-trace-id"] = client

    def set(self, name, value):
        self[name] = value


class SpanTests(TracingTestCase):

    tracing = {
        "max_path_tag_length": 8,
        "custom_tags": [
            {"tag": "lit", "literal": {"value": "v"}},
            {"tag": "hdr", "request_header": {"name": "x-foo", "default_value": "none"}},
            {"tag": "team", "metadata": {"kind": {"route": {}},
                                         "metadata_key": {"key": "team",
                                                          "path": [{"key": "owner"}]}}},
        ]}

    def test_standardAndCustomTags(self):
        """Envoy's finalizeDownstreamSpan tags, and custom tags of each kind."""
        self.request("/deco/long/path?q=1", headers=[("x-foo", "bar"),
                                                            ("user-agent", "ua")])
        [span] = self.spans()
        tags = dict(span.tags)
        self.assertEqual(tags.pop("guid:x-request-id")[14], "9")
        self.assertEqual(tags, {
            "component": "proxy", "http.url": "http://example.com/deco/lo",
            "http.method": "GET", "downstream_cluster": "-", "user_agent": "ua",
            "http.protocol": "HTTP/1.1", "peer.address": "10.1.2.3", "request_size": "0",
            "response_size": "2", "response_flags": "-", "upstream_cluster": "origin",
            "upstream_cluster.name": "origin", "http.status_code": "200", "lit": "v",
            "hdr": "bar", "team": "payments"})
        self.assertEqual(span.name, "checkout")
        self.assertEqual(span.events[-1][1], "ss")

    def test_decorator(self):
        """
        An ingress route's decorator names the span and is returned in the
        response's x-envoy-decorator-operation; a request's own such header
        renames the span instead and is not forwarded.
        """
        e = self.request("/deco")
        self.assertEqual(e.response.header("x-envoy-decorator-operation"), "checkout")
        e = self.request("/deco", headers=[("x-envoy-decorator-operation", "mine")])
        self.assertNotIn("x-envoy-decorator-operation", self.upstream(e))
        self.assertIsNone(e.response.header("x-envoy-decorator-operation"))
        self.assertEqual([s.name for s in self.spans()], ["checkout", "mine"])

    def test_errorTag(self):
        """A 5xx (here no healthy upstream's 503) sets error: true."""
        self.request("/a", status=503)
        self.assertEqual(self.spans()[0].tags["error"], "true")
        self.assertEqual(self.spans()[0].tags["http.status_code"], "503")

    def test_malformedContextNoSpan(self):
        """A B3 context that cannot be read gets no span and no injected headers."""
        e = self.request("/a", headers=[("x-b3-traceid", "nothex"),
                                               ("x-b3-spanid", "1")])
        self.assertEqual(e.response.status, 200)
        self.assertEqual(self.spans(), [])
        self.assertNotIn("x-b3-sampled", self.upstream(e))


class VerboseTests(TracingTestCase):

    tracing = {"verbose": True}

    def test_timingEvents(self):
        """verbose: Envoy's stream timing events as span annotations, in order, before ss."""
        self.request("/a")
        [span] = self.spans()
        events = [e for _, e in span.events]
        self.assertEqual(events[-1], "ss")
        self.assertIn("first_upstream_rx_byte_received", events)
        self.assertLessEqual(set(events), {e for _, e in VERBOSE_EVENTS} | {"ss"})

    def test_everyTimingEvent(self):
        """
        A proxied request passes every phase Envoy times: all seven events,
        in Envoy's order (its annotateVerbose), before ss.
        """
        self.request("/a")
        [span] = self.spans()
        events = [e for _, e in span.events if e != "ss"]
        self.assertEqual(events, [e for _, e in VERBOSE_EVENTS])


class UpstreamSpanTests(TracingTestCase):

    tracing = {"spawn_upstream_span": True}

    def test_routerSpan(self):
        """
        spawn_upstream_span: the router starts a CLIENT child named
        "router <cluster> egress" and its context goes upstream.
        """
        e = self.request("/a")
        child, parent = self.spans()
        self.assertEqual((child.kind, child.name, child.parentId),
                         ("CLIENT", "router origin egress", parent.spanId))
        up = self.upstream(e)
        self.assertEqual(up["x-b3-spanid"], "%016x" % (child.spanId,))
        self.assertEqual(up["x-b3-parentspanid"], "%016x" % (parent.spanId,))
        self.assertEqual(child.tags["upstream_address"], "127.0.0.1:8080")
        self.assertEqual(child.events[-1][1], "cr")


class ConfigTests(SynchronousTestCase):

    def test_unsupportedProvider(self):
        """Another provider is refused with the field path."""
        e = self.assertRaises(ConfigError, Harness, self, hcm={"tracing": {"provider": {
            "name": "envoy.tracers.skywalking", "typed_config": {
                "@type": "type.googleapis.com/envoy.config.trace.v3.SkyWalkingConfig",
                "grpc_service": {"envoy_grpc": {"cluster_name": "origin"}}}}}})
        self.assertIn("tracing.provider.typed_config", str(e))
        self.assertIn("SkyWalkingConfig", str(e))

    def test_unsupportedZipkinField(self):
        """The GRPC collector endpoint is refused naming the field."""
        provider = {"name": "envoy.tracers.zipkin", "typed_config": dict(
            ZIPKIN["typed_config"], collector_endpoint_version="GRPC")}
        e = self.assertRaises(ConfigError, Harness, self,
                              hcm={"tracing": {"provider": provider}})
        self.assertIn("tracing.provider.typed_config.collector_endpoint_version", str(e))


class NoProviderTests(SynchronousTestCase):

    def test_decidesAndCountsWithoutSpans(self):
        """
        Envoy's null tracer: a tracing block without a provider still packs
        the decision into x-request-id and counts it, but injects nothing.
        """
        h = Harness(self, hcm={"tracing": {}})
        e = h.request(path="/o/x")
        up = dict(e.upstreamRequest.headers)
        self.assertEqual(up["x-request-id"][14], "9")
        self.assertNotIn("x-b3-traceid", up)
        self.assertEqual(h.stat("http.ingress.tracing.random_sampling"), 1)
