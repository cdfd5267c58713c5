"""
Tracing end to end: the same YAML through real Envoy 1.40 and through a
real C{twistd envoy}, the same requests, each proxy reporting to its own
Zipkin receiver. What arrives (span count, names, kinds, parent/child
links, tags) and what the origin receives (B3 headers, the sampling
decision in C{x-request-id}) must match.
"""

import time

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.collectors import ZipkinReceiver
from tests.e2e.configs import bootstrap, cluster
from tests.e2e.harness import SharedFixture, adminStats
from tests.e2e.tracing_compare import (
    ComparisonFixture,
    TracingProxy,
    addCaseTests,
    listenerYaml,
)

_HCM = """\
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: %(prefix)s
          tracing:
%(tracing)s            provider:
              name: envoy.tracers.zipkin
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig
                collector_cluster: %(collector)s
                collector_endpoint: "/api/v2/spans"
                collector_endpoint_version: %(version)s
%(zipkin)s          route_config:
            virtual_hosts:
            - name: vh
              domains: ["*"]
              routes:
              - match: {prefix: "/deco"}
                route: {cluster: origin}
                decorator: {operation: decorated}
                metadata: {filter_metadata: {team: {owner: tracing}}}
              - match: {prefix: "/"}
                route: {cluster: origin}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"""

_INGRESS_TRACING = """\
            max_path_tag_length: 20
            custom_tags:
            - {tag: case, request_header: {name: x-case}}
            - {tag: lit, literal: {value: v1}}
            - {tag: team, metadata: {kind: {route: {}}, metadata_key: {key: team, path: [{key: owner}]}, default_value: none}}
            - {tag: env, environment: {name: TXENVOY_TRACING_TEST_UNSET, default_value: dflt}}
            - {tag: missing, request_header: {name: x-missing}}
"""

_EGRESS_TRACING = """\
            spawn_upstream_span: true
            custom_tags:
            - {tag: case, request_header: {name: x-case}}
"""

_EGRESS_ZIPKIN = """\
                shared_span_context: false
                trace_id_128bit: true
"""


def tracingConfig(ports, zipkinPort, originPort, deadPort):
    """
    One proxy's YAML: ingress, egress (OUTBOUND), HTTP_PROTO and
    dead-collector listeners.
    """
    json = "HTTP_JSON"
    ingress = _HCM % dict(prefix="ingress", tracing=_INGRESS_TRACING, collector="zipkin",
                          zipkin="", version=json)
    egress = _HCM % dict(prefix="egress", tracing=_EGRESS_TRACING, collector="zipkin",
                         zipkin=_EGRESS_ZIPKIN, version=json)
    dead = _HCM % dict(prefix="dead", tracing="", collector="deadzipkin", zipkin="",
                       version=json)
    proto = _HCM % dict(prefix="proto", tracing=_EGRESS_TRACING, collector="zipkin",
                        zipkin=_EGRESS_ZIPKIN, version="HTTP_PROTO")
    return bootstrap(
        [listenerYaml("ingress", ports["ingress"], ingress),
         listenerYaml("egress", ports["egress"], egress, "    traffic_direction: OUTBOUND\n"),
         listenerYaml("dead", ports["dead"], dead),
         listenerYaml("proto", ports["proto"], proto)],
        [cluster("origin", originPort), cluster("zipkin", zipkinPort),
         cluster("deadzipkin", deadPort)],
        admin=ports["admin"], extra="""
        node: {id: node1, cluster: svc1, locality: {zone: z1}}
        stats_config:
          stats_matcher:
            exclusion_list:
              patterns: [{prefix: listener_manager.}, {suffix: _active}]
        layered_runtime:
          layers:
          - name: static
            static_layer: {tracing.zipkin.min_flush_spans: 1}
        """)


IN_TRACE = "463ac35c9f6413ad48485a3953bb6124"
IN_SPAN = "a2fb4a1d1a96d312"
IN_PARENT = "0020000000000001"
SINGLE_TRACE = "80f198ee56343ba864fe8b2a57d3eff7"
SINGLE_SPAN = "e457b5a2e4d86bd1"

#: (case, listener, path, headers, spans expected)
CASES = [
    ("root", "ingress", "/foo?x=1", {"user-agent": "ua1"}, 1),
    ("multi", "ingress", "/averyveryverylongpath?q=1",
     {"x-b3-traceid": IN_TRACE, "x-b3-spanid": IN_SPAN, "x-b3-parentspanid": IN_PARENT,
      "x-b3-sampled": "1"}, 1),
    ("single", "ingress", "/s", {"b3": "%s-%s-1" % (SINGLE_TRACE, SINGLE_SPAN)}, 1),
    ("client", "ingress", "/c", {"x-client-trace-id": "abc"}, 1),
    ("deco", "ingress", "/deco", {}, 1),
    ("presampled", "ingress", "/p", {"x-request-id": "12345678-aaaa-9bbb-8ccc-123456789012"}, 1),
    ("unsampled", "ingress", "/u", {"x-b3-sampled": "0"}, 0),
    ("egress-multi", "egress", "/e",
     {"x-b3-traceid": IN_TRACE, "x-b3-spanid": IN_SPAN, "x-b3-sampled": "1"}, 2),
    ("egress-root", "egress", "/deco", {}, 2),
    ("proto-root", "proto", "/pr", {}, 2),
    ("proto-multi", "proto", "/deco",
     {"x-b3-traceid": IN_TRACE, "x-b3-spanid": IN_SPAN, "x-b3-sampled": "1"}, 2),
]


def _symbols():
    return {IN_TRACE: "in-trace", IN_SPAN: "in-span", IN_PARENT: "in-parent",
            SINGLE_TRACE: "single-trace", SINGLE_SPAN: "single-span"}


def _shape(proxy, spans, case):
    """
    What Envoy and txenvoy must agree on for one case: its spans and the
    origin's trace headers, ids replaced by what they are.
    """
    port = str(proxy.ports[case[1]])
    # The router's span carries the custom tags too.
    mine = sorted((s for s in spans if s["tags"].get("case") == case[0]),
                  key=lambda s: (s["kind"], s["name"]))
    names = _symbols()
    for s in mine:
        names.setdefault(s["traceId"], "trace-%d" % (len(s["traceId"]),))
        if len(s["traceId"]) == 32:
            names.setdefault(s["traceId"][16:], names[s["traceId"]] + "-low")
    for s in mine:
        names.setdefault(s["id"], "span-%s-%s" % (s["kind"], s["name"].replace(port, "PORT")))

    def name(value):
        return names.get(value, "other" if value else value)

    out = []
    for s in mine:
        tags = dict(s["tags"])
        rid = tags.pop("guid:x-request-id", "")
        tags["trace-reason"] = rid[14:15]
        for key in ("http.url", "peer.address", "upstream_address"):
            if key in tags:
                tags[key] = tags[key].replace(port, "PORT").replace(
                    str(proxy.origin.port), "ORIGIN")
        out.append(dict(
            kind=s["kind"], name=s["name"].replace(port, "PORT"), id=name(s["id"]),
            traceId=name(s["traceId"]), parentId=name(s.get("parentId")),
            shared=s.get("shared", False), tags=tags,
            annotations=[a["value"] for a in s.get("annotations", ())],
            localEndpoint=sorted(s["localEndpoint"].items())))
    head = [h for h in proxy.origin.heads if ("x-case", case[0]) in
            [(k.lower(), v) for k, v in h]][-1]
    trace = []
    for key, value in head:
        key = key.lower()
        if key.startswith("x-b3-") or key == "b3":
            if key == "b3":
                value = "-".join(name(p) if len(p) > 1 else p for p in value.split("-"))
            elif key != "x-b3-sampled":
                value = name(value)
            trace.append((key, value))
        elif key == "x-request-id":
            trace.append((key, value[14]))
        elif key == "x-envoy-decorator-operation":
            trace.append((key, value))
    return {"spans": out, "upstream": trace}


class TracingComparisonTests(ComparisonFixture, SharedFixture, SynchronousTestCase):
    """Real Envoy and txenvoy, the same tracing YAML, the same requests."""

    maxDiff = None
    CASES = CASES

    @classmethod
    def makeProxy(cls, real):
        return TracingProxy(real, ZipkinReceiver(), tracingConfig,
                            listeners=("ingress", "egress", "proto"))

    def test_reportsAsEnvoySendsThem(self):
        """
        Envoy's report: a POST of Zipkin v2 JSON to the collector_endpoint,
        Host the collector cluster's name.
        """
        path, headers, _ = self.txenvoy.receiver.reports[0]
        self.assertEqual(path, "/api/v2/spans")
        headers = {k.lower(): v for k, v in headers.items()}
        self.assertEqual(headers["content-type"], "application/json")
        self.assertEqual(headers["host"], "zipkin")

    def test_deadCollectorLosesNoRequest(self):
        """
        A collector that refuses connections costs reports, never a
        request; Envoy counts them in tracing.zipkin.reports_dropped (its
        async client answers them with a local 503), and so does txenvoy.
        """
        counts = {}
        for proxy in (self.envoy, self.txenvoy):
            self.assertEqual(self.responses[proxy, "dead"][0], 200)
            deadline = time.time() + 10
            while time.time() < deadline:
                stats = adminStats(proxy.ports["admin"])
                if stats.get("tracing.zipkin.reports_dropped", 0) >= 3:
                    break
                time.sleep(0.1)
            counts[proxy] = (stats["tracing.zipkin.reports_dropped"],
                             stats["tracing.zipkin.reports_failed"])
        self.assertEqual(counts[self.txenvoy], counts[self.envoy])

    def test_statsMatcher(self):
        """
        stats_config.stats_matcher: an excluded stat is in neither proxy's
        /stats; the others are.
        """
        for proxy in (self.envoy, self.txenvoy):
            names = set(adminStats(proxy.ports["admin"]))
            self.assertEqual([n for n in names if n.startswith("listener_manager.")
                              or n.endswith("_active")], [])
            self.assertIn("http.ingress.downstream_rq_total", names)
            self.assertIn("server.live", names)

    def test_samplingStats(self):
        """http.<prefix>.tracing.* count each reason as Envoy does."""
        names = ["http.%s.tracing.%s" % (p, s) for p in ("ingress", "egress") for s in (
            "client_enabled", "health_check", "not_traceable", "random_sampling",
            "service_forced")]
        envoy = adminStats(self.envoy.ports["admin"])
        txenvoy = adminStats(self.txenvoy.ports["admin"])
        self.assertEqual({n: txenvoy.get(n) for n in names}, {n: envoy.get(n) for n in names})


addCaseTests(TracingComparisonTests, _shape)
