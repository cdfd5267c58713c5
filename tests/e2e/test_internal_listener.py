"""
Internal listeners, compared with Envoy 1.40 on the same YAML: listener A
hands each connection to a cluster whose endpoint is an
C{envoy_internal_address}, the internal listener B receives it inside the
process (no socket) and serves it, for HTTP and for tcp_proxy to a real
upstream; the host's and cluster's metadata are passed through by the
C{internal_upstream} transport socket; an endpoint naming no internal
listener fails as a refused connect. The stats, C{/listeners},
C{/clusters} and B's access logs are Envoy's.
"""

import json
import os
import shutil
import socket
import tempfile
import time
import urllib.request
from http.server import BaseHTTPRequestHandler

from twisted.trial.unittest import TestCase

from tests.e2e.harness import (
    Envoy,
    RealEnvoy,
    SharedFixture,
    Upstream,
    echoHandler,
    exchangeOne,
    freePort,
    httpOrigin,
    recvAll,
    statusOf,
)

ROUTER = ('[{name: router, typed_config: {"@type": '
          'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]')
#: B's router: without x-envoy-upstream-service-time, whose digits (more
#: on a loaded machine) would make A's received byte counts differ.
QUIET_ROUTER = ROUTER.replace(".Router}", ".Router, suppress_envoy_headers: true}")
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3" \
      ".HttpConnectionManager"
TCP = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
FILE_LOG = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
INTERNAL_UPSTREAM = ("type.googleapis.com/envoy.extensions.transport_sockets.internal_upstream"
                     ".v3.InternalUpstreamTransport")
RAW = "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"

CONFIG = """
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: %(admin)d}}
bootstrap_extensions:
- name: envoy.bootstrap.internal_listener
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener
    buffer_size_kb: 64
static_resources:
  listeners:
  - name: a_tcp
    address: {socket_address: {address: 127.0.0.1, port_value: %(tcp)d}}
    filter_chains:
    - filters:
      - {name: tcp, typed_config: {"@type": "%(TCP)s", stat_prefix: a_tcp, cluster: to_b_tcp}}
  - name: b_tcp
    internal_listener: {}
    filter_chains:
    - filters:
      - name: tcp
        typed_config:
          "@type": "%(TCP)s"
          stat_prefix: b_tcp
          cluster: echo
          access_log:
          - name: f
            typed_config:
              "@type": "%(LOG)s"
              path: %(dir)s/b_tcp.log
              log_format:
                text_format: "%%DOWNSTREAM_REMOTE_ADDRESS%% %%DOWNSTREAM_LOCAL_ADDRESS%% %%DYNAMIC_METADATA(hns)%% %%DYNAMIC_METADATA(cns)%% %%BYTES_RECEIVED%% %%BYTES_SENT%%\\n"
  - name: a_http
    address: {socket_address: {address: 127.0.0.1, port_value: %(http)d}}
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          "@type": "%(HCM)s"
          stat_prefix: a_http
          use_remote_address: true
          route_config:
            virtual_hosts:
            - name: v
              domains: ["*"]
              routes:
              - {match: {prefix: /missing}, route: {cluster: to_missing}}
              - {match: {prefix: /}, route: {cluster: to_b_http}}
          http_filters: %(ROUTER)s
  - name: b_http
    internal_listener: {}
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          "@type": "%(HCM)s"
          stat_prefix: b_http
          use_remote_address: true
          access_log:
          - name: f
            typed_config:
              "@type": "%(LOG)s"
              path: %(dir)s/b_http.log
              log_format:
                text_format: "%%DOWNSTREAM_REMOTE_ADDRESS%% %%DOWNSTREAM_LOCAL_ADDRESS%% %%REQ(X-FORWARDED-FOR)%% %%RESPONSE_CODE%%\\n"
          route_config:
            virtual_hosts:
            - name: v
              domains: ["*"]
              routes:
              - {match: {prefix: /echo}, route: {cluster: origin}}
              - {match: {prefix: /}, direct_response: {status: 200, body: {inline_string: "from b"}}}
          http_filters: %(QUIET_ROUTER)s
  clusters:
  - name: to_b_tcp
    metadata: {filter_metadata: {cns: {k: cv}}}
    transport_socket:
      name: envoy.transport_sockets.internal_upstream
      typed_config:
        "@type": "%(IU)s"
        passthrough_metadata:
        - {kind: {host: {}}, name: hns}
        - {kind: {cluster: {}}, name: cns}
        transport_socket: {name: raw, typed_config: {"@type": "%(RAW)s"}}
    load_assignment:
      cluster_name: to_b_tcp
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {envoy_internal_address: {server_listener_name: b_tcp}}}
          metadata: {filter_metadata: {hns: {k: hv}}}
  - name: to_b_http
    load_assignment:
      cluster_name: to_b_http
      endpoints:
      - lb_endpoints:
        - endpoint:
            address: {envoy_internal_address: {server_listener_name: b_http, endpoint_id: e1}}
  - name: to_missing
    load_assignment:
      cluster_name: to_missing
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {envoy_internal_address: {server_listener_name: nope}}}
  - name: origin
    load_assignment:
      cluster_name: origin
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %(origin)d}}}
  - name: echo
    load_assignment:
      cluster_name: echo
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %(echo)d}}}
"""

#: Stats both proxies must agree on after the traffic below.
STATS = [
    "listener.envoy_internal_b_tcp.downstream_cx_total",
    "listener.envoy_internal_b_tcp.downstream_cx_destroy",
    "listener.envoy_internal_b_tcp.worker_0.downstream_cx_total",
    "listener.envoy_internal_b_http.downstream_cx_total",
    "listener.envoy_internal_b_http.downstream_cx_active",
    "listener.envoy_internal_b_http.http.b_http.downstream_rq_2xx",
    "tcp.a_tcp.downstream_cx_total",
    "tcp.a_tcp.downstream_cx_rx_bytes_total",
    "tcp.a_tcp.downstream_cx_tx_bytes_total",
    "tcp.b_tcp.downstream_cx_total",
    "tcp.b_tcp.downstream_cx_rx_bytes_total",
    "tcp.b_tcp.downstream_cx_tx_bytes_total",
    "cluster.to_b_tcp.upstream_cx_total",
    "cluster.to_b_tcp.upstream_cx_rx_bytes_total",
    "cluster.to_b_tcp.upstream_cx_tx_bytes_total",
    "cluster.to_b_tcp.upstream_cx_destroy_remote",
    "cluster.echo.upstream_cx_total",
    "cluster.to_b_http.upstream_cx_total",
    "cluster.to_b_http.upstream_cx_active",
    "cluster.to_b_http.upstream_rq_200",
    "cluster.to_b_http.upstream_cx_rx_bytes_total",
    "cluster.to_b_http.upstream_cx_tx_bytes_total",
    "http.b_http.downstream_cx_total",
    "http.b_http.downstream_cx_rx_bytes_total",
    "http.b_http.downstream_cx_tx_bytes_total",
    "http.b_http.rq_direct_response",
    "cluster.to_missing.upstream_cx_total",
    "cluster.to_missing.upstream_cx_connect_fail",
    "cluster.to_missing.upstream_cx_destroy_remote",
    "cluster.to_missing.upstream_rq_503",
    "cluster.to_missing.upstream_rq_pending_failure_eject",
    "listener_manager.listener_create_success",
    "listener_manager.total_listeners_active",
]

#: Bytes sent through A -> B -> echo (larger than B's 64 KiB buffer, so
#: the in-memory connection's back-pressure is crossed).
PAYLOAD = bytes(range(256)) * 1024


def _get(port, path):
    response = exchangeOne(port, ("GET %s HTTP/1.1\r\nhost: a\r\n\r\n" % (path,)).encode())
    return statusOf(response), response.partition(b"\r\n\r\n")[2]


class _HeaderEcho(BaseHTTPRequestHandler):
    """Answers with the forwarding headers it was sent, one a line."""

    def do_GET(self):
        body = "".join("%s: %s\n" % (name.lower(), value) for name, value in self.headers.items()
                       if name.lower() in ("x-forwarded-for", "x-envoy-external-address",
                                           "x-envoy-internal")).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _Side:
    def __init__(self, real, echoPort, originPort):
        self.real = real
        self.dir = tempfile.mkdtemp(prefix="txenvoy-internal-")
        self.ports = {"tcp": freePort(), "http": freePort(), "admin": freePort()}
        config = CONFIG % dict(self.ports, dir=self.dir, echo=echoPort, origin=originPort,
                               TCP=TCP, HCM=HCM, LOG=FILE_LOG, ROUTER=ROUTER,
                               QUIET_ROUTER=QUIET_ROUTER, IU=INTERNAL_UPSTREAM, RAW=RAW)
        flush = ("--file-flush-interval-msec", "100")
        self.proxy = (RealEnvoy(config, args=flush) if real
                      else Envoy(config, args=("--concurrency", "1") + flush,
                                 adminPort=self.ports["admin"]))

    def waitReady(self):
        self.proxy.waitPort(self.ports["http"])

    def exercise(self):
        self.ok = _get(self.ports["http"], "/x")
        self.missing = _get(self.ports["http"], "/missing")
        self.forwarded = _get(self.ports["http"], "/echo")[1]
        with socket.create_connection(("127.0.0.1", self.ports["tcp"]), timeout=10) as s:
            s.sendall(PAYLOAD)
            # Half-close: the FIN crosses B to the echo upstream, whose FIN
            # comes back after the echoed bytes.
            s.shutdown(socket.SHUT_WR)
            self.echoed = recvAll(s, 20)

    def admin(self, path):
        url = "http://127.0.0.1:%d%s" % (self.ports["admin"], path)
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.read().decode()

    def stats(self):
        deadline = time.time() + 10
        while True:
            out = {}
            for line in self.admin("/stats").splitlines():
                name, _, value = line.partition(": ")
                if value.isdigit():
                    out[name] = int(value)
            # The tcp_proxy sessions are counted once both ends closed.
            if out.get("listener.envoy_internal_b_tcp.downstream_cx_destroy") or \
                    time.time() > deadline:
                return out
            time.sleep(0.05)

    def log(self, name, count=1):
        path = os.path.join(self.dir, name)
        deadline = time.time() + 10
        while time.time() < deadline:
            if os.path.exists(path):
                with open(path) as f:
                    text = f.read()
                if text.endswith("\n") and text.count("\n") >= count:
                    return text.splitlines()
            time.sleep(0.05)
        raise AssertionError("no access log at %s" % (path,))

    def stop(self):
        self.proxy.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class InternalListenerComparisonTests(SharedFixture, TestCase):

    @classmethod
    def startFixture(cls):
        cls.sides = []
        cls.echo = Upstream(echoHandler)
        cls.origin = httpOrigin(_HeaderEcho)
        try:
            # Both start at once; then each is asked the same.
            for real in (True, False):
                cls.sides.append(_Side(real, cls.echo.port, cls.origin.server_address[1]))
            for side in cls.sides:
                side.waitReady()
                side.exercise()
        except BaseException:
            cls.stopFixture()
            raise

    @classmethod
    def stopFixture(cls):
        for side in cls.sides:
            side.stop()
        cls.sides = []
        cls.echo.stop()
        cls.origin.shutdown()
        cls.origin.server_close()

    def test_http(self):
        """
        HTTP from listener A reaches internal listener B through the
        cluster's C{envoy_internal_address}; B sees Envoy's addresses:
        C{envoy://internal_client_address/} for its peer and
        C{envoy://b_http/e1} (listener and endpoint id) for itself.
        """
        for side in self.sides:
            self.assertEqual(side.ok, (200, b"from b"))
        envoy, txenvoy = (side.log("b_http.log", 2) for side in self.sides)
        self.assertEqual(len(envoy), 2)
        # The x-forwarded-for A appended: this machine's address.
        self.assertTrue(envoy[0].startswith(
            "envoy://internal_client_address/ envoy://b_http/e1 "), envoy)
        self.assertEqual(txenvoy, envoy)

    def test_forwardingHeaders(self):
        """
        With C{use_remote_address} on both listeners, B's peer has no IP:
        Envoy appends nothing to C{x-forwarded-for} there and leaves A's
        C{x-envoy-external-address} as it was.
        """
        envoy, txenvoy = (side.forwarded for side in self.sides)
        self.assertIn(b"x-envoy-external-address: 127.0.0.1\n", envoy)
        self.assertEqual(txenvoy, envoy)

    def test_unknownInternalListener(self):
        """
        An endpoint naming no internal listener: Envoy's refused connect,
        a 503 with C{reset reason: remote connection failure}.
        """
        for side in self.sides:
            self.assertEqual(side.missing, (503, b"upstream connect error or disconnect/reset "
                                                 b"before headers. reset reason: remote "
                                                 b"connection failure"))

    def test_tcpProxy(self):
        """
        tcp_proxy A -> internal listener B -> tcp_proxy to a real echo
        upstream: every byte comes back, the half-close crosses both hops,
        and B's connection carries the host's and the cluster's metadata
        that C{passthrough_metadata} names.
        """
        for side in self.sides:
            self.assertEqual(side.echoed, PAYLOAD)
        envoy, txenvoy = (side.log("b_tcp.log") for side in self.sides)
        self.assertEqual(envoy, ['envoy://internal_client_address/ envoy://b_tcp/ {"k":"hv"} '
                                 '{"k":"cv"} %d %d' % (len(PAYLOAD), len(PAYLOAD))])
        self.assertEqual(txenvoy, envoy)

    def test_stats(self):
        """An internal listener's stats are C{listener.envoy_internal_<name>.*}."""
        envoy, txenvoy = (side.stats() for side in self.sides)
        self.assertEqual({n: txenvoy.get(n) for n in STATS}, {n: envoy.get(n) for n in STATS})

    def test_admin(self):
        """C{/listeners} and C{/clusters} print internal addresses as Envoy does."""
        envoy, txenvoy = self.sides

        def listeners(side):
            return [line for line in side.admin("/listeners").splitlines()
                    if line.startswith("b_")]

        self.assertEqual(listeners(txenvoy), listeners(envoy))
        self.assertEqual(listeners(envoy), ["b_tcp::envoy://b_tcp/", "b_http::envoy://b_http/"])

        def hosts(side):
            return sorted(line for line in side.admin("/clusters").splitlines()
                          if line.startswith(("to_b_http::", "to_missing::"))
                          and "::cx_total::" in line)

        self.assertEqual(hosts(txenvoy), hosts(envoy))
        self.assertIn("to_missing::envoy://nope/::cx_total::1", hosts(envoy))

    def test_adminJson(self):
        """
        The JSON forms name an internal address as Envoy's
        C{envoy_internal_address} (C{server_listener_name}, C{endpoint_id}).
        """
        def addresses(side):
            listeners = json.loads(side.admin("/listeners?format=json"))["listener_statuses"]
            clusters = json.loads(side.admin("/clusters?format=json"))["cluster_statuses"]
            return ([(x["name"], x["local_address"]) for x in listeners
                     if x["name"].startswith("b_")],
                    sorted((c["name"], c["host_statuses"][0]["address"]) for c in clusters
                           if c["name"].startswith("to_")))

        envoy, txenvoy = (addresses(side) for side in self.sides)
        self.assertEqual(txenvoy, envoy)
        self.assertIn(("to_b_http", {"envoy_internal_address": {
            "server_listener_name": "b_http", "endpoint_id": "e1"}}), envoy[1])
