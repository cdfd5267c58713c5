"""
OpenTelemetry tracing end to end: real Envoy 1.40 and a real C{twistd
envoy} export OTLP to collectors built on C{opentelemetry-proto} (gRPC
C{TraceService} and the OTLP/HTTP endpoint), for the same requests; the
spans (names, kinds, links, flags, attributes, trace state) and the W3C
headers the origin receives must match.

One difference in the YAML: Envoy's gRPC collector cluster says
C{http2_protocol_options}, which txenvoy's clusters refuse until HTTP/2
upstreams exist; txenvoy's exporter speaks HTTP/2 through grpcio whatever
the cluster says.
"""

import time
import urllib.request

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.collectors import OtlpCollector, RecordingOrigin
from tests.e2e.configs import HTTP2, bootstrap, cluster
from tests.e2e.harness import SharedFixture, adminStats, freePort, startProxy
from tests.e2e.tracing_compare import listenerYaml

_HCM = """\
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: %(prefix)s
%(accessLog)s          tracing:
%(tracing)s            custom_tags:
            - {tag: case, request_header: {name: x-case}}
            provider:
              name: envoy.tracers.opentelemetry
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                service_name: %(service)s
%(export)s          route_config:
            virtual_hosts:
            - name: vh
              domains: ["*"]
              routes:
              - match: {prefix: "/deco"}
                route: {cluster: origin}
                decorator: {operation: decorated}
              - match: {prefix: "/"}
                route: {cluster: origin}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"""

_GRPC = """\
                grpc_service: {envoy_grpc: {cluster_name: otlp_grpc}, timeout: 2s}
"""
_HTTP = """\
                http_service:
                  http_uri: {uri: "http://collector.local/v1/traces", cluster: otlp_http, timeout: 2s}
                  request_headers_to_add: [{header: {key: x-api-key, value: k1}}]
"""
_ACCESS_LOG = """\
          access_log:
          - name: envoy.access_loggers.open_telemetry
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.open_telemetry.v3.OpenTelemetryAccessLogConfig
              common_config:
                log_name: edge
                transport_api_version: V3
                grpc_service: {envoy_grpc: {cluster_name: otlp_grpc}}
                buffer_flush_interval: 0.2s
              resource_attributes:
                values: [{key: team, value: {string_value: t1}}]
              body: {string_value: "%REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE%"}
              attributes:
                values:
                - {key: case, value: {string_value: "%REQ(X-CASE)%"}}
                - {key: flags, value: {string_value: "%RESPONSE_FLAGS%"}}
                - {key: missing, value: {string_value: "%REQ(X-NOPE)%"}}
"""
def otelConfig(real, ports, collector, originPort):
    grpcListener = _HCM % dict(prefix="grpc", tracing="", service="svc-grpc", export=_GRPC,
                               accessLog=_ACCESS_LOG)
    httpListener = _HCM % dict(prefix="http", tracing="            spawn_upstream_span: true\n",
                               service="svc-http", export=_HTTP, accessLog="")
    return bootstrap(
        [listenerYaml("grpc", ports["grpc"], grpcListener),
         listenerYaml("http", ports["http"], httpListener, "    traffic_direction: OUTBOUND\n")],
        [cluster("origin", originPort),
         cluster("otlp_grpc", collector.grpcPort, HTTP2 if real else ""),
         cluster("otlp_http", collector.httpPort)],
        admin=ports["admin"], extra="""
        node: {id: node1, cluster: svc1, locality: {zone: z1}}
        stats_flush_interval: 0.5s
        stats_sinks:
        - name: envoy.stat_sinks.open_telemetry
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.stat_sinks.open_telemetry.v3.SinkConfig
            grpc_service: {envoy_grpc: {cluster_name: otlp_grpc}}
        layered_runtime:
          layers:
          - name: static
            static_layer: {tracing.opentelemetry.min_flush_spans: 1}
        """)


TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"

#: (case, listener, path, headers, spans expected)
CASES = [
    ("root", "grpc", "/a", {}, 1),
    ("parent", "grpc", "/b", {"traceparent": "00-%s-%s-01" % (TRACE, PARENT),
                              "tracestate": "vendor=v1"}, 1),
    ("unsampled", "grpc", "/c", {"traceparent": "00-%s-%s-00" % (TRACE, PARENT)}, 0),
    ("b3-ignored", "grpc", "/d", {"x-b3-traceid": "463ac35c9f6413ad",
                                  "x-b3-spanid": "a2fb4a1d1a96d312", "x-b3-sampled": "1"}, 1),
    ("malformed", "grpc", "/e", {"traceparent": "00-zz-%s-01" % (PARENT,)}, 0),
    ("decorated", "grpc", "/deco", {}, 1),
    ("http-root", "http", "/f", {}, 2),
    ("http-parent", "http", "/deco", {"traceparent": "00-%s-%s-01" % (TRACE, PARENT)}, 2),
]


class _Proxy:

    def __init__(self, real):
        self.collector = OtlpCollector()
        self.origin = RecordingOrigin()
        self.ports = {k: freePort() for k in ("admin", "grpc", "http")}
        try:
            self.proc = startProxy(real, otelConfig(real, self.ports, self.collector,
                                                    self.origin.port),
                                   self.ports["http"], self.ports["admin"])
            self.proc.waitPort(self.ports["grpc"])
        except BaseException:
            self.collector.stop()
            self.origin.stop()
            raise

    def get(self, listener, path, headers):
        request = urllib.request.Request(
            "http://127.0.0.1:%d%s" % (self.ports[listener], path), headers=headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            # The whole body: a client leaving early makes Envoy's flags DC.
            response.read()
            return response.status

    def stop(self):
        try:
            self.proc.stop()
        finally:
            self.collector.stop()
            self.origin.stop()


def _shape(proxy, spans, case):
    port = str(proxy.ports[case[1]])
    mine = sorted(((r, s) for r, _, s in spans if any(
        a.key == "case" and a.value.string_value == case[0] for a in s.attributes)),
        key=lambda rs: (rs[1].kind, rs[1].name))
    names = {bytes.fromhex(TRACE): "in-trace", bytes.fromhex(PARENT): "in-parent"}
    for _, s in mine:
        names.setdefault(s.trace_id, "new-trace")
    for _, s in mine:
        names.setdefault(s.span_id, "span-%d-%s" % (s.kind, s.name.replace(port, "PORT")))

    def name(value):
        return names.get(value, "other" if value else "")

    out = []
    for resource, s in mine:
        attributes = [(a.key, a.value.string_value) for a in s.attributes]
        attributes = [(k, v[14:15] if k == "guid:x-request-id" else
                       v.replace(port, "PORT").replace(str(proxy.origin.port), "ORIGIN"))
                      for k, v in attributes]
        out.append(dict(name=s.name.replace(port, "PORT"), kind=s.kind, id=name(s.span_id),
                        trace=name(s.trace_id), parent=name(s.parent_span_id),
                        traceState=s.trace_state, flags=s.flags, attributes=attributes,
                        service=resource.get("service.name"),
                        sdk=resource.get("telemetry.sdk.name")))
    head = [h for h in proxy.origin.heads
            if ("x-case", case[0]) in [(k.lower(), v) for k, v in h]][-1]
    upstream = []
    for key, value in head:
        key = key.lower()
        if key == "traceparent" and case[0] != "malformed":
            version, trace, span, flags = value.split("-")
            value = "-".join((version, name(bytes.fromhex(trace)),
                              name(bytes.fromhex(span)), flags))
        elif key == "x-request-id":
            value = value[14]
        elif key not in ("tracestate", "x-envoy-decorator-operation"):
            continue
        upstream.append((key, value))
    return {"spans": out, "upstream": upstream}


class OpenTelemetryComparisonTests(SharedFixture, SynchronousTestCase):
    """Real Envoy and txenvoy exporting OTLP, the same requests."""

    maxDiff = None

    @classmethod
    def startFixture(cls):
        cls.envoy = _Proxy(True)
        try:
            cls.txenvoy = _Proxy(False)
        except BaseException:
            cls.envoy.stop()
            raise
        try:
            for proxy in (cls.envoy, cls.txenvoy):
                for case, listener, path, headers, _ in CASES:
                    proxy.get(listener, path, dict(headers, **{"x-case": case}))
            total = sum(c[-1] for c in CASES)
            cls.spans = {p: p.collector.waitSpans(total) for p in (cls.envoy, cls.txenvoy)}
        except BaseException:
            cls.stopFixture()
            raise

    @classmethod
    def stopFixture(cls):
        try:
            cls.envoy.stop()
        finally:
            cls.txenvoy.stop()

    def test_spanCount(self):
        """Both proxies export the same number of spans."""
        total = sum(c[-1] for c in CASES)
        self.assertEqual((len(self.spans[self.envoy]), len(self.spans[self.txenvoy])),
                         (total, total))

    def test_transports(self):
        """
        Spans arrive over OTLP/gRPC and over OTLP/HTTP, the latter a POST of
        application/x-protobuf with the http_uri's Host and the configured
        request headers.
        """
        requests = self.txenvoy.collector.requests
        self.assertEqual({t for t, _, _ in requests}, {"grpc", "http"})
        headers = [{k.lower(): v for k, v in h.items()} for t, h, _ in requests if t == "http"]
        self.assertEqual((headers[0]["content-type"], headers[0]["host"],
                          headers[0]["x-api-key"]),
                         ("application/x-protobuf", "collector.local", "k1"))

    def test_accessLogRecords(self):
        """
        envoy.access_loggers.open_telemetry: the same resource (built-in
        labels, then resource_attributes) and the same formatted body and
        attributes as Envoy's records, one per request.
        """
        def records(proxy):
            deadline = time.time() + 10
            want = sum(1 for c in CASES if c[1] == "grpc")
            while time.time() < deadline and len(proxy.collector.logRecords()) < want:
                time.sleep(0.05)
            return sorted((sorted(resource.items()), record.body.string_value,
                           [(a.key, a.value.string_value) for a in record.attributes],
                           record.time_unix_nano % 1000)
                          for resource, record in proxy.collector.logRecords())

        self.assertEqual(records(self.txenvoy), records(self.envoy))
        self.assertEqual(adminStats(self.txenvoy.ports["admin"])[
            "access_logs.open_telemetry_access_log.logs_written"],
            sum(1 for c in CASES if c[1] == "grpc"))

    def test_metrics(self):
        """
        envoy.stat_sinks.open_telemetry: the connection managers' request
        counters arrive under the same tag-extracted names, attributes,
        kinds and values as Envoy's.
        """
        wanted = ("http.downstream_rq_total", "http.downstream_rq_xx",
                  "http.downstream_rq_completed")

        def points(proxy):
            deadline = time.time() + 10
            while True:
                out = []
                requests = list(proxy.collector.metrics)
                for metric in (m for rm in requests[-1:] for rm in rm.resource_metrics
                               for sm in rm.scope_metrics for m in sm.metrics):
                    if metric.name in wanted:
                        for p in metric.sum.data_points:
                            if ("envoy.http_conn_manager_prefix", "admin") in [
                                    (a.key, a.value.string_value) for a in p.attributes]:
                                continue
                            out.append((metric.name, metric.sum.is_monotonic,
                                        metric.sum.aggregation_temporality, p.as_int,
                                        sorted((a.key, a.value.string_value)
                                               for a in p.attributes)))
                total = sum(p[3] for p in out if p[0] == "http.downstream_rq_total")
                if total >= len(CASES) or time.time() > deadline:
                    return sorted(out)
                time.sleep(0.1)

        self.assertEqual(points(self.txenvoy), points(self.envoy))

    def test_stats(self):
        """tracing.opentelemetry.spans_sent counts what was exported, as in Envoy."""
        total = sum(c[-1] for c in CASES)
        self.assertEqual(adminStats(self.txenvoy.ports["admin"])[
            "tracing.opentelemetry.spans_sent"], total)


def _addCases(cls):
    for case in CASES:
        def test(self, case=case):
            self.assertEqual(_shape(self.txenvoy, self.spans[self.txenvoy], case),
                             _shape(self.envoy, self.spans[self.envoy], case))
        test.__name__ = "test_case_" + case[0].replace("-", "_")
        test.__doc__ = ("Envoy 1.40 and txenvoy export the same spans and send the same "
                        "W3C headers upstream for the %r request." % (case[0],))
        setattr(cls, test.__name__, test)
    return cls


_addCases(OpenTelemetryComparisonTests)
