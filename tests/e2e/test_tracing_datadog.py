"""
Datadog tracing end to end: the same YAML through real Envoy 1.40 and a
real C{twistd envoy}, the same requests, each proxy reporting to its own
Datadog agent receiver (C{/v0.4/traces}, msgpack). The spans (count,
names, resources, service, parent/child links, meta and metrics) and the
Datadog and W3C headers the origin receives must match, ids replaced by
what they are. What differs by design: C{language}, C{runtime-id} and
C{version} name the tracer, and C{process_id} its process.
"""

import re
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.collectors import DatadogAgent
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
%(tracing)s            custom_tags:
            - {tag: case, request_header: {name: x-case}}
            provider:
              name: envoy.tracers.datadog
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.DatadogConfig
                collector_cluster: %(collector)s
                service_name: %(service)s
          route_config:
            virtual_hosts:
            - name: vh
              domains: ["*"]
              routes:
              - match: {prefix: "/deco"}
                route: {cluster: origin}
                decorator: {operation: decorated}
              - match: {prefix: "/dead"}
                route: {cluster: deadorigin}
              - match: {prefix: "/"}
                route: {cluster: origin}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"""

_EGRESS_TRACING = """\
            spawn_upstream_span: true
            random_sampling: {value: 0}
"""


def datadogConfig(ports, agentPort, originPort, deadPort):
    """One proxy's YAML: ingress, egress (OUTBOUND) and dead-agent listeners."""
    ingress = _HCM % dict(prefix="ingress", tracing="", collector="datadog", service="edge")
    egress = _HCM % dict(prefix="egress", tracing=_EGRESS_TRACING, collector="datadog",
                         service="envoy")
    dead = _HCM % dict(prefix="dead", tracing="", collector="deadagent", service="edge")
    return bootstrap(
        [listenerYaml("ingress", ports["ingress"], ingress),
         listenerYaml("egress", ports["egress"], egress, "    traffic_direction: OUTBOUND\n"),
         listenerYaml("dead", ports["dead"], dead)],
        [cluster("origin", originPort), cluster("datadog", agentPort),
         cluster("deadagent", deadPort), cluster("deadorigin", deadPort)],
        admin=ports["admin"], extra="node: {id: node1, cluster: svc1, locality: {zone: z1}}")


W3C_TRACE = "463ac35c9f6413ad48485a3953bb6124"
W3C_SPAN = "a2fb4a1d1a96d312"
W3C_DD_PARENT = "00000000000004d2"

#: (case, listener, path, headers, spans expected)
CASES = [
    ("root", "ingress", "/foo?x=1", {"user-agent": "ua1"}, 1),
    ("datadog", "ingress", "/d",
     {"x-datadog-trace-id": "12345", "x-datadog-parent-id": "678",
      "x-datadog-sampling-priority": "2", "x-datadog-origin": "synthetics",
      "x-datadog-tags": "_dd.p.dm=-4,_dd.p.usr=u1,other=x"}, 1),
    ("w3c", "ingress", "/w",
     {"traceparent": "00-%s-%s-01" % (W3C_TRACE, W3C_SPAN),
      "tracestate": "dd=s:2;p:%s;t.dm:-4,vendor=v1" % (W3C_DD_PARENT,)}, 1),
    ("unsampled", "ingress", "/u",
     {"x-datadog-trace-id": "999", "x-datadog-parent-id": "5",
      "x-datadog-sampling-priority": "0"}, 1),
    ("deco", "ingress", "/deco", {}, 1),
    ("error", "ingress", "/dead", {}, 1),
    ("egress-root", "egress", "/e", {}, 2),
    ("egress-datadog", "egress", "/deco",
     {"x-datadog-trace-id": "4242", "x-datadog-parent-id": "77",
      "x-datadog-sampling-priority": "1"}, 2),
    ("egress-dead", "egress", "/dead", {"x-envoy-force-trace": "1"}, 2),
]

#: What names the tracer and its process, not the trace.
_TRACER_META = ("language", "runtime-id", "version")


def _symbolizer(spans, case):
    """Names for every id of one case's spans, in decimal and in hex."""
    names = {"12345": "dd-trace", "678": "dd-parent", "999": "dd-trace", "5": "dd-parent",
             "4242": "dd-trace", "77": "dd-parent",
             str(int(W3C_TRACE[16:], 16)): "w3c-trace-low", W3C_TRACE[:16]: "w3c-trace-high",
             str(int(W3C_SPAN, 16)): "w3c-span", W3C_DD_PARENT: "w3c-dd-parent"}
    for s in spans:
        names.setdefault(str(s["trace_id"]), "trace")
    for s in spans:
        names.setdefault(str(s["span_id"]), "span-" + s["resource"].split(" ")[0])
    for value, name in list(names.items()):
        if value.isdigit():
            names.setdefault("%016x" % (int(value),), name)
    return names


_PORT = re.compile(r":\d+")
_TIME_HIGH = re.compile(r"^[0-9a-f]{8}00000000$")


def _name(names, value):
    text = str(value)
    if _TIME_HIGH.match(text):
        return "time-high"
    return names.get(text, text)


def _token(names, token):
    if len(token) == 32:
        # A W3C trace id: its upper half, then the Datadog trace id.
        return "%s+%s" % (_name(names, token[:16]), _name(names, str(int(token[16:], 16))))
    return _name(names, token)


def _shape(proxy, spans, case):
    """One case's spans and upstream trace headers, ids named."""
    mine = [s for s in spans if s["meta"].get("case") == case[0]]
    mine.sort(key=lambda s: s["resource"].startswith("router"))
    names = _symbolizer(mine, case)
    out = []
    for s in mine:
        meta = {k: v for k, v in s["meta"].items() if k not in _TRACER_META}
        rid = meta.pop("guid:x-request-id", "")
        meta["trace-reason"] = rid[14:15]
        for key in ("http.url", "peer.address", "upstream_address"):
            if key in meta:
                meta[key] = _PORT.sub(":PORT", meta[key])
        for key in ("_dd.p.tid", "_dd.parent_id"):
            if key in meta:
                meta[key] = _name(names, meta[key])
        metrics = dict(s["metrics"])
        metrics.pop("process_id")
        out.append(dict(
            service=s["service"], name=s["name"], resource=_PORT.sub(":PORT", s["resource"]),
            trace_id=_name(names, s["trace_id"]), span_id=_name(names, s["span_id"]),
            parent_id=_name(names, s["parent_id"]), error=s["error"], type=s["type"],
            meta=meta, metrics=metrics))
    head = [h for h in proxy.origin.heads if ("x-case", case[0]) in
            [(k.lower(), v) for k, v in h]]
    upstream = []
    for key, value in (head[-1] if head else ()):
        key = key.lower()
        if key.startswith("x-datadog-") or key in ("traceparent", "tracestate"):
            value = re.sub(r"[0-9a-f]+", lambda m: _token(names, m.group(0)), value)
            upstream.append((key, value))
    return {"spans": out, "upstream": upstream}


class DatadogComparisonTests(ComparisonFixture, SharedFixture, SynchronousTestCase):
    """Real Envoy and txenvoy, the same Datadog tracing YAML, the same requests."""

    maxDiff = None
    CASES = CASES

    @classmethod
    def makeProxy(cls, real):
        # No rates: a decision made after the agent's first answer would
        # otherwise be AGENT_RATE (-1), before it DEFAULT (-0).
        return TracingProxy(real, DatadogAgent(rates={}), datadogConfig)

    def test_reportsAsEnvoySendsThem(self):
        """
        Envoy's report: a POST of msgpack to /v0.4/traces, Host the agent
        cluster's name, X-Datadog-Trace-Count the number of traces in it,
        each trace's spans together.
        """
        for proxy in (self.envoy, self.txenvoy):
            path, headers, traces = proxy.receiver.reports[0]
            self.assertEqual(path, "/v0.4/traces")
            headers = {k.lower(): v for k, v in headers.items()}
            self.assertEqual(headers["content-type"], "application/msgpack")
            self.assertEqual(headers["host"], "datadog")
            self.assertEqual(int(headers["x-datadog-trace-count"]), len(traces))
            self.assertIn("datadog-meta-lang", headers)
            for trace in traces:
                self.assertEqual(len({s["trace_id"] for s in trace}), 1)

    def test_deadAgentLosesNoRequest(self):
        """
        An agent that refuses connections costs reports, never a request;
        Envoy counts them in tracing.datadog.reports_dropped (its async
        client's local 503), and so does txenvoy.
        """
        for proxy in (self.envoy, self.txenvoy):
            self.assertEqual(self.responses[proxy, "dead"][0], 200)
            deadline = time.time() + 10
            while time.time() < deadline:
                stats = adminStats(proxy.ports["admin"])
                if stats.get("tracing.datadog.reports_dropped", 0) >= 1:
                    break
                time.sleep(0.1)
            self.assertGreaterEqual(stats["tracing.datadog.reports_dropped"], 1)
            self.assertEqual(stats["tracing.datadog.reports_failed"], 0)
            self.assertEqual(stats["tracing.datadog.reports_skipped_no_cluster"], 0)

    def test_responseCodes(self):
        """The same status for every request through both proxies."""
        self.assertEqual({c[0]: self.responses[self.txenvoy, c[0]][0] for c in CASES},
                         {c[0]: self.responses[self.envoy, c[0]][0] for c in CASES})


addCaseTests(DatadogComparisonTests, _shape)
