"""
C{envoy.stat_sinks.metrics_service} end to end: the same YAML through
real Envoy 1.40 and a real C{twistd envoy}, the same requests, each proxy
streaming its stats flushes to its own gRPC metrics service (grpcio). The
stream (identifier first, one message per flush) and the families of the
stats both have (names, types, counter and gauge values, the summary's
quantiles and the histogram's bucket bounds) must match.

Envoy's gRPC cluster says C{http2_protocol_options}; txenvoy's sink
speaks HTTP/2 through grpcio whatever the cluster says.
"""

import urllib.request

from twisted.trial.unittest import SynchronousTestCase

from envoy.config.core.v3 import base_pb2
from tests.e2e.collectors import MetricsServiceReceiver, RecordingOrigin
from tests.e2e.configs import HTTP2, bootstrap, cluster, httpListener
from tests.e2e.harness import SharedFixture, freePort, startProxy, stopAll
from tests.e2e.tracing_compare import ORIGIN_HOST

#: Stats both proxies have, and the kinds of family each makes.
COMPARED = ("http.ingress.downstream_rq_total", "http.ingress.downstream_rq_2xx",
            "cluster.origin.upstream_rq_total", "cluster.origin.upstream_cx_total",
            "server.live", "cluster.origin.upstream_rq_time", "http.ingress.downstream_rq_time")
REQUESTS = 3


def metricsConfig(real, ports, servicePort, originPort):
    return bootstrap(
        [httpListener("ingress", ports["ingress"], virtualHosts=ORIGIN_HOST)],
        [cluster("origin", originPort), cluster("ms", servicePort, HTTP2 if real else "")],
        admin=ports["admin"], extra="""
        node: {id: n1, cluster: c1}
        stats_flush_interval: 0.5s
        stats_sinks:
        - name: envoy.stat_sinks.metrics_service
          typed_config:
            "@type": type.googleapis.com/envoy.config.metrics.v3.MetricsServiceConfig
            transport_api_version: V3
            grpc_service: {envoy_grpc: {cluster_name: ms}}
        """)


def _family(family):
    """A family without its timestamps, NaN written as text (NaN != NaN)."""
    out = []
    for metric in family.metric:
        if family.type in (0, 1):
            out.append(metric.counter.value if family.type == 0 else metric.gauge.value)
        elif family.type == 2:
            out.append([(q.quantile, "nan" if q.value != q.value else "value")
                        for q in metric.summary.quantile])
        else:
            out.append([b.upper_bound for b in metric.histogram.bucket])
    return (family.name, family.type, out)


class MetricsServiceComparisonTests(SharedFixture, SynchronousTestCase):
    """Real Envoy and txenvoy, the same metrics_service sink, the same requests."""

    maxDiff = None

    @classmethod
    def startFixture(cls):
        cls.origin = RecordingOrigin()
        cls.proxies = []
        try:
            for real in (True, False):
                receiver = MetricsServiceReceiver()
                ports = {k: freePort() for k in ("admin", "ingress")}
                try:
                    proc = startProxy(real, metricsConfig(real, ports, receiver.port,
                                                          cls.origin.port),
                                      ports["ingress"], ports["admin"])
                except BaseException:
                    receiver.stop()
                    raise
                cls.proxies.append((proc, receiver, ports))
            for _, receiver, ports in cls.proxies:
                for i in range(REQUESTS):
                    with urllib.request.urlopen("http://127.0.0.1:%d/r%d" % (
                            ports["ingress"], i), timeout=10) as r:
                        r.read()
            cls.messages = []
            for _, receiver, _ in cls.proxies:
                count = len(receiver.waitMessages(0, timeout=0))
                cls.messages.append(receiver.waitMessages(count + 2))
        except BaseException:
            cls.stopFixture()
            raise

    @classmethod
    def stopFixture(cls):
        stopAll(*[each for proc, receiver, _ in cls.proxies for each in (proc, receiver)],
                cls.origin)

    def test_stream(self):
        """One stream: the first message names the node, the later ones do not."""
        shown = []
        for messages in self.messages:
            self.assertGreaterEqual(len(messages), 2)
            node = base_pb2.Node.FromString(messages[0].identifier.node)
            shown.append((node.id, node.cluster, node.user_agent_name,
                          [m.HasField("identifier") for m in messages[1:]]))
        envoy, txenvoy = shown
        self.assertEqual(envoy[:3], ("n1", "c1", "envoy"))
        self.assertEqual((txenvoy[:3], set(txenvoy[3])), (envoy[:3], {False}))

    def test_families(self):
        """The last flush's families of the compared stats, as Envoy sends them."""
        shown = []
        for messages in self.messages:
            families = [_family(f) for f in messages[-1].envoy_metrics if f.name in COMPARED]
            shown.append(sorted(families, key=lambda f: (f[0], f[1])))
        envoy, txenvoy = shown
        self.assertIn(("http.ingress.downstream_rq_total", 0, [float(REQUESTS)]), envoy)
        self.assertEqual([f[:2] for f in envoy if f[0] == "cluster.origin.upstream_rq_time"],
                         [("cluster.origin.upstream_rq_time", 2),
                          ("cluster.origin.upstream_rq_time", 4)])
        self.assertEqual(txenvoy, envoy)
