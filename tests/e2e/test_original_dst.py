"""
C{ORIGINAL_DST} clusters through a real C{twistd -n envoy} and real Envoy
1.40 on the same YAML: shared/envoy-examples/07 unchanged (its
C{transparent} listener, without an iptables redirect), the
C{x-envoy-original-dst-host} header and C{upstream_port_override} over
HTTP, the PROXY protocol's destination as a restored local address over
TCP, and the cleanup of unused hosts.
"""

import os
import socket
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import (
    EXAMPLES,
    FIXED_PORTS,
    Envoy,
    RealEnvoy,
    SharedFixture,
    Upstream,
    adminStats,
    echoHandler,
    freePort,
    recvAll,
    startProxy,
)
from tests.e2e.test_http import Origin, exchange

_HCM = """\
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: %(prefix)s
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: %(cluster)s}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"""

CONFIG = """\
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: %(admin)d}}
static_resources:
  listeners:
  - name: by_header
    address: {socket_address: {address: 127.0.0.1, port_value: %(header)d}}
    filter_chains:
    - filters:
%(hcmHeader)s
  - name: port_override
    address: {socket_address: {address: 127.0.0.1, port_value: %(override)d}}
    filter_chains:
    - filters:
%(hcmOverride)s
  - name: proxied
    address: {socket_address: {address: 127.0.0.1, port_value: %(pp)d}}
    listener_filters:
    - name: envoy.filters.listener.proxy_protocol
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: proxied
          cluster: od_tcp
  clusters:
  - name: od_header
    connect_timeout: 1s
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    original_dst_lb_config: {use_http_header: true}
  - name: od_override
    connect_timeout: 1s
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    original_dst_lb_config:
      use_http_header: true
      http_header_name: x-dst
      upstream_port_override: %(overridePort)d
  - name: od_tcp
    connect_timeout: 1s
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    cleanup_interval: 0.25s
"""


def _request(header=b""):
    return b"GET /echo HTTP/1.1\r\nhost: example\r\n" + header + b"\r\n"


class _Proxy:
    """One proxy (Envoy or txenvoy) running L{CONFIG}."""

    def __init__(self, real, originPort, overridePort):
        self.ports = dict(admin=freePort(), header=freePort(), override=freePort(),
                          pp=freePort())
        config = CONFIG % dict(
            self.ports, overridePort=overridePort,
            hcmHeader=_HCM % dict(prefix="header", cluster="od_header"),
            hcmOverride=_HCM % dict(prefix="override", cluster="od_override"))
        self.proxy = startProxy(real, config, self.ports["header"], self.ports["admin"])
        self.proxy.waitPort(self.ports["pp"])

    def stats(self):
        return adminStats(self.ports["admin"])

    def stop(self):
        self.proxy.stop()


class OriginalDstComparisonTests(SharedFixture, SynchronousTestCase):
    """Envoy 1.40 and txenvoy, the same ORIGINAL_DST clusters."""

    @classmethod
    def startFixture(cls):
        cls.origin = Origin()
        cls.other = Origin()
        cls.echo = Upstream(echoHandler)
        cls.proxies = []
        try:
            for real in (True, False):
                cls.proxies.append(_Proxy(real, cls.origin.port, cls.other.port))
        except BaseException:
            cls.stopFixture()
            raise

    @classmethod
    def stopFixture(cls):
        for p in cls.proxies:
            p.stop()
        for server in (cls.origin, cls.other, cls.echo):
            server.stop()

    def both(self, listener, raw):
        return [exchange(p.ports[listener], raw) for p in self.proxies]

    def assertSame(self, pair):
        envoy, txenvoy = pair
        self.assertEqual(txenvoy, envoy)
        return envoy

    def test_headerNamesTheHost(self):
        """
        C{use_http_header}: the request goes to the address in
        C{x-envoy-original-dst-host}, which the upstream receives too; the
        host joins the cluster's membership.
        """
        value = b"127.0.0.1:%d" % (self.origin.port,)
        got = self.assertSame(self.both("header", _request(
            b"x-envoy-original-dst-host: " + value + b"\r\n")))
        self.assertEqual(got[0]["status"], 200)
        for p in self.proxies:
            stats = p.stats()
            self.assertEqual(stats["cluster.od_header.membership_total"], 1)
            self.assertEqual(stats["cluster.od_header.upstream_rq_200"], 1)

    def test_invalidOrMissingHeader(self):
        """
        A header that is not C{ip:port} (a name, no port, a bad port)
        counts C{original_dst_host_invalid}; with no restored local address
        to fall back on, Envoy answers 503 C{no healthy upstream}, as with
        no header at all.
        """
        for header in (b"x-envoy-original-dst-host: localhost:80\r\n",
                       b"x-envoy-original-dst-host: 127.0.0.1\r\n",
                       b"x-envoy-original-dst-host: 127.0.0.1:99999\r\n", b""):
            got = self.assertSame(self.both("header", _request(header)))
            self.assertEqual((got[0]["status"], got[0]["body"]), (503, "no healthy upstream"))
        for p in self.proxies:
            stats = p.stats()
            self.assertEqual(stats["cluster.od_header.original_dst_host_invalid"], 3)
            self.assertEqual(stats["cluster.od_header.upstream_cx_none_healthy"], 4)

    def test_headerNameAndPortOverride(self):
        """
        C{http_header_name} replaces the header read, and
        C{upstream_port_override} the port it names.
        """
        got = self.assertSame(self.both("override", _request(b"x-dst: 127.0.0.1:1\r\n")))
        self.assertEqual(got[0]["status"], 200)
        ignored = self.assertSame(self.both("override", _request(
            b"x-envoy-original-dst-host: 127.0.0.1:%d\r\n" % (self.origin.port,))))
        self.assertEqual(ignored[0]["status"], 503)
        for p in self.proxies:
            self.assertEqual(p.stats()["cluster.od_override.membership_total"], 1)

    def test_restoredLocalAddressAndCleanup(self):
        """
        Over TCP the destination is the local address a listener filter
        restored (here from a PROXY protocol header); the host made for it
        leaves the membership at a C{cleanup_interval} sweep once it was
        not picked since the previous one and has no open connection.
        """
        header = b"PROXY TCP4 10.0.0.1 127.0.0.1 4000 %d\r\n" % (self.echo.port,)
        for p in self.proxies:
            s = socket.create_connection(("127.0.0.1", p.ports["pp"]), timeout=10)
            s.sendall(header + b"ping")
            got = b""
            while len(got) < 4:
                data = s.recv(4 - len(got))
                if not data:
                    break
                got += data
            self.assertEqual(got, b"ping")
            s.close()
        for p in self.proxies:
            deadline = time.time() + 10
            while True:
                stats = p.stats()
                if stats["cluster.od_tcp.membership_total"] == 0:
                    break
                self.assertLess(time.time(), deadline, stats)
                time.sleep(0.05)
            self.assertEqual(stats["cluster.od_tcp.membership_change"], 2)
            self.assertEqual(stats["cluster.od_tcp.upstream_cx_total"], 1)


class ListenerFiltersExampleTests(SynchronousTestCase):
    """shared/envoy-examples/07-listener-filters.yaml, unchanged."""

    def run07(self, proxy):
        try:
            proxy.waitPort(10014)
            s = socket.create_connection(("127.0.0.1", 10014), timeout=10)
            try:
                # Closed at once: with a FIN, or a reset when the close
                # races the handshake's last ACK (either proxy).
                got = recvAll(s, 10) or "closed"
            except ConnectionResetError:
                got = "closed"
            s.close()
            deadline = time.time() + 10
            while True:
                stats = adminStats(10095)
                # Two connections: waitPort's probe and this one.
                if stats.get("cluster.original_dst_cluster.upstream_cx_none_healthy") == 2:
                    break
                self.assertLess(time.time(), deadline)
                time.sleep(0.05)
            keys = ("cluster.original_dst_cluster.upstream_cx_none_healthy",
                    "cluster.original_dst_cluster.membership_total",
                    "tcp.transparent.downstream_cx_total")
            return got, [stats[k] for k in keys]
        finally:
            proxy.stop()

    def test_transparentListenerWithoutRedirect(self):
        """
        The C{transparent} listener (original_dst listener filter, tcp_proxy
        to the ORIGINAL_DST cluster) is harmless without an iptables
        redirect, as the README says: the kernel has no original
        destination, the local address is not restored, so the cluster has
        no host (C{upstream_cx_none_healthy}) and the connection is closed,
        in Envoy and in txenvoy.
        """
        path = os.path.join(EXAMPLES, "07-listener-filters.yaml")
        with open(path) as f:
            config = f.read()
        with FIXED_PORTS:
            envoy = self.run07(RealEnvoy(config))
            txenvoy = self.run07(Envoy(configPath=path, cwd=EXAMPLES,
                                       args=("--concurrency", "1"), adminPort=10095))
        self.assertEqual(txenvoy, envoy)
        self.assertEqual(envoy, ("closed", [2, 0, 2]))
