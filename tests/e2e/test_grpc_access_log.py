"""
C{envoy.access_loggers.http_grpc} and C{tcp_grpc} end to end: the same
YAML through real Envoy 1.40 and a real C{twistd envoy}, the same
requests and connection, each proxy streaming to its own gRPC access log
service (C{envoy.service.accesslog.v3}, grpcio). The streams' first
message names the node and log, and the entries must match field for
field, except what differs by nature (ports, ids, times: the per-phase
times are compared by presence and order) and the fields txenvoy does not
fill yet (the bytes received downstream).

Envoy's gRPC cluster says C{http2_protocol_options}; txenvoy's exporter
speaks HTTP/2 through grpcio whatever the cluster says.
"""

import urllib.error
import urllib.request

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.collectors import AccessLogServiceReceiver, RecordingOrigin
from tests.e2e.configs import HTTP2, bootstrap, cluster, httpListener
from tests.e2e.harness import SharedFixture, adminStats, freePort, startProxy, stopAll
from tests.e2e.tracing_compare import listenerYaml

_ACCESS_LOG = """
access_log:
- name: envoy.access_loggers.http_grpc
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig
    common_config:
      log_name: edge
      transport_api_version: V3
      grpc_service: {envoy_grpc: {cluster_name: als}}
      buffer_flush_interval: 0.2s
    additional_request_headers_to_log: [x-case, x-missing]
    additional_response_headers_to_log: [content-length]
"""

_TCP = """\
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: origin
          access_log:
          - name: envoy.access_loggers.tcp_grpc
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.TcpGrpcAccessLogConfig
              common_config:
                log_name: tcplog
                transport_api_version: V3
                grpc_service: {envoy_grpc: {cluster_name: als}}
                buffer_flush_interval: 0.2s
"""

PATHS = ("/a", "/b?x=1", "/none")

#: The per-phase times, in the order a proxied request passes them.
TIMINGS = ("time_to_last_rx_byte", "time_to_first_upstream_tx_byte",
           "time_to_last_upstream_tx_byte", "time_to_first_upstream_rx_byte",
           "time_to_last_upstream_rx_byte", "time_to_first_downstream_tx_byte",
           "time_to_last_downstream_tx_byte")

#: What differs by nature or is not filled by txenvoy yet. The timings
#: are replaced by which of them are present and in what order.
_COMMON_CLEARED = ("start_time", "duration", "stream_id") + TIMINGS
_HTTP_WIRE_CLEARED = ("downstream_wire_bytes_received",)
_REQUEST_CLEARED = ("request_id", "downstream_header_bytes_received")
_RESPONSE_CLEARED = ()


def alsConfig(real, ports, alsPort, originPort):
    return bootstrap(
        [httpListener("ingress", ports["ingress"], hcm=_ACCESS_LOG, virtualHosts="""
            - name: vh
              domains: ["*"]
              routes:
              - {match: {prefix: "/none"}, direct_response: {status: 404}}
              - {match: {prefix: "/"}, route: {cluster: origin}}
            """, router="""
            # No x-envoy-upstream-service-time: its digits (more on a loaded
            # machine) would make the byte counts compared differ.
            suppress_envoy_headers: true
            """),
         listenerYaml("tcp", ports["tcp"], _TCP)],
        [cluster("origin", originPort), cluster("als", alsPort, HTTP2 if real else "")],
        admin=ports["admin"], extra="node: {id: n1, cluster: c1}")


def _normalized(entry, ports):
    entry = type(entry).FromString(entry.SerializeToString())
    common = entry.common_properties
    for field in _COMMON_CLEARED:
        common.ClearField(field)
    for field in ("downstream_remote_address", "downstream_direct_remote_address"):
        getattr(common, field).socket_address.ClearField("port_value")
    common.upstream_remote_address.socket_address.ClearField("port_value")
    common.upstream_local_address.socket_address.ClearField("port_value")
    common.downstream_local_address.socket_address.ClearField("port_value")
    if entry.HasField("request") if hasattr(entry, "request") else False:
        for field in _HTTP_WIRE_CLEARED:
            common.ClearField(field)
        for field in _REQUEST_CLEARED:
            entry.request.ClearField(field)
        entry.request.authority = entry.request.authority.replace(
            str(ports["ingress"]), "PORT")
    if hasattr(entry, "response"):
        for field in _RESPONSE_CLEARED:
            entry.response.ClearField(field)
    return entry


def timingOrder(entry):
    """
    The timings an entry has, earliest first (equal times keep the order
    of L{TIMINGS}), and whether each is within the entry's duration.
    """
    common = entry.common_properties
    present = [(getattr(common, name).ToNanoseconds(), i, name)
               for i, name in enumerate(TIMINGS) if common.HasField(name)]
    duration = common.duration.ToNanoseconds()
    return [name for _, _, name in sorted(present)], all(
        0 <= at <= duration for at, _, _ in present)


class GrpcAccessLogComparisonTests(SharedFixture, SynchronousTestCase):
    """Real Envoy and txenvoy, the same gRPC access log YAML, the same traffic."""

    maxDiff = None

    @classmethod
    def startFixture(cls):
        cls.origin = RecordingOrigin()
        cls.proxies = []
        try:
            for real in (True, False):
                receiver = AccessLogServiceReceiver()
                ports = {k: freePort() for k in ("admin", "ingress", "tcp")}
                try:
                    proc = startProxy(real, alsConfig(real, ports, receiver.port,
                                                      cls.origin.port),
                                      ports["ingress"], ports["admin"])
                    proc.waitPort(ports["tcp"])
                except BaseException:
                    receiver.stop()
                    raise
                cls.proxies.append((proc, receiver, ports))
            for _, receiver, ports in cls.proxies:
                for path in PATHS:
                    request = urllib.request.Request(
                        "http://127.0.0.1:%d%s" % (ports["ingress"], path),
                        headers={"x-case": "c1", "referer": "r"})
                    try:
                        with urllib.request.urlopen(request, timeout=10) as r:
                            r.read()
                    except urllib.error.HTTPError as e:
                        e.read()
                with urllib.request.urlopen("http://127.0.0.1:%d/t" % (ports["tcp"],),
                                            timeout=10) as r:
                    r.read()
            for _, receiver, _ in cls.proxies:
                receiver.waitFor(receiver.httpEntries, len(PATHS))
                receiver.waitFor(receiver.tcpEntries, 1)
        except BaseException:
            cls.stopFixture()
            raise

    @classmethod
    def stopFixture(cls):
        stopAll(*[each for proc, receiver, _ in cls.proxies for each in (proc, receiver)],
                cls.origin)

    def test_identifier(self):
        """Each stream's first message names the node (id, cluster) and the log."""
        shown = []
        for _, receiver, _ in self.proxies:
            with receiver._lock:
                firsts = [messages[0] for _, messages in receiver.streams if messages]
            shown.append(sorted((m.identifier.log_name, m.identifier.node.id,
                                 m.identifier.node.cluster, m.identifier.node.user_agent_name)
                                for m in firsts))
        envoy, txenvoy = shown
        self.assertEqual(envoy, [("edge", "n1", "c1", "envoy"), ("tcplog", "n1", "c1", "envoy")])
        self.assertEqual(txenvoy, envoy)

    def test_httpEntries(self):
        """HTTPAccessLogEntry: the same fields as Envoy fills them, by path."""
        shown = []
        for _, receiver, ports in self.proxies:
            entries = [_normalized(e, ports) for e in receiver.httpEntries()]
            shown.append(sorted((e.request.path, str(e)) for e in entries))
        envoy, txenvoy = shown
        self.assertEqual([p for p, _ in envoy], sorted(PATHS))
        for (path, mine), (_, theirs) in zip(txenvoy, envoy):
            self.assertEqual(mine, theirs, path)

    def test_httpTimings(self):
        """
        Envoy's per-phase times: the same ones present as Envoy's, in the
        same order, none past the request's duration (values differ).
        """
        shown = []
        for _, receiver, _ in self.proxies:
            shown.append(sorted((e.request.path, timingOrder(e))
                                for e in receiver.httpEntries()))
        envoy, txenvoy = shown
        self.assertEqual(txenvoy, envoy)
        self.assertEqual(sorted(dict(envoy)["/a"][0]), sorted(TIMINGS))

    def test_tcpEntry(self):
        """TCPAccessLogEntry: bytes each way, cluster, addresses, log type."""
        shown = []
        for _, receiver, ports in self.proxies:
            shown.append([str(_normalized(e, ports)) for e in receiver.tcpEntries()])
        envoy, txenvoy = shown
        self.assertEqual(txenvoy, envoy)

    def test_stats(self):
        """
        access_logs.grpc_access_log.*: every entry flushed, none dropped
        or failed (Envoy's flushed count also counts its batches' own
        bookkeeping, so only at least as many).
        """
        for _, _, ports in self.proxies:
            stats = adminStats(ports["admin"])
            self.assertGreaterEqual(stats["access_logs.grpc_access_log.grpc_entries_flushed"],
                                    len(PATHS) + 1)
            self.assertEqual((stats["access_logs.grpc_access_log.logs_dropped"],
                              stats["access_logs.grpc_access_log.grpc_entries_flush_failed"]),
                             (0, 0))
