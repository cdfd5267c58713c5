"""
End-to-end comparison of UDP listeners (C{protocol: UDP}) and
C{envoy.filters.udp_listener.udp_proxy}: a real C{twistd -n envoy} and a
real Envoy 1.40 with the same config, in front of the same UDP echo
servers. Compared: the answers each client gets, which echo server
answered (a session keeps its host; a C{source_ip} hash policy on a
RING_HASH cluster keeps a client's host across sessions), the sessions
that end after the idle timeout, and the C{udp.*} and cluster UDP stats.
"""

import socket
import threading
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import SharedFixture, adminStats, freePort, startProxy

CONFIG = """
admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: %(admin)d }
static_resources:
  listeners:
  - name: udp
    address:
      socket_address: { protocol: UDP, address: 127.0.0.1, port_value: %(udp)d }
    udp_listener_config: {}
    listener_filters:
    - name: envoy.filters.udp_listener.udp_proxy
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.udp.udp_proxy.v3.UdpProxyConfig
        stat_prefix: echo
        idle_timeout: 0.2s
        matcher:
          on_no_match:
            action:
              name: route
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.udp.udp_proxy.v3.Route
                cluster: echo
  - name: hashed
    address:
      socket_address: { protocol: UDP, address: 127.0.0.1, port_value: %(hashed)d }
    listener_filters:
    - name: envoy.filters.udp_listener.udp_proxy
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.udp.udp_proxy.v3.UdpProxyConfig
        stat_prefix: hashed
        idle_timeout: 0.2s
        hash_policies: [{ source_ip: true }]
        matcher:
          on_no_match:
            action:
              name: route
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.udp.udp_proxy.v3.Route
                cluster: ring
  - name: nowhere
    address:
      socket_address: { protocol: UDP, address: 127.0.0.1, port_value: %(nowhere)d }
    listener_filters:
    - name: envoy.filters.udp_listener.udp_proxy
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.udp.udp_proxy.v3.UdpProxyConfig
        stat_prefix: nowhere
        cluster: missing
  clusters:
  - name: echo
    load_assignment:
      cluster_name: echo
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: %(echo1)d } } }
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: %(echo2)d } } }
  - name: ring
    lb_policy: RING_HASH
    load_assignment:
      cluster_name: ring
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: %(echo1)d } } }
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: %(echo2)d } } }
"""


class _UdpEcho:
    """A UDP echo server on 127.0.0.1 answering C{<tag>:<datagram>}."""

    def __init__(self, tag):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.tag = tag
        self.sources = set()
        self._running = True
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while self._running:
            try:
                data, addr = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            self.sources.add(addr)
            self.sock.sendto(self.tag + b":" + data, addr)

    def stop(self):
        self._running = False
        self._thread.join(2)
        self.sock.close()


def _client():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2)
    return sock


def _ask(sock, port, data):
    sock.sendto(data, ("127.0.0.1", port))
    answer, source = sock.recvfrom(65535)
    return answer, source[1] == port


def _freeUdpPort():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


class UdpProxySideBySideTests(SharedFixture, SynchronousTestCase):
    """Envoy 1.40 and txenvoy, the same UDP proxy config, the same datagrams."""

    maxDiff = None

    @classmethod
    def startFixture(cls):
        cls.echoes = [_UdpEcho(b"one"), _UdpEcho(b"two")]
        cls.proxies = []
        try:
            for real in (True, False):
                ports = {"admin": freePort(), "udp": _freeUdpPort(), "hashed": _freeUdpPort(),
                         "nowhere": _freeUdpPort(), "echo1": cls.echoes[0].port,
                         "echo2": cls.echoes[1].port}
                # The admin port opens once the listeners are bound.
                cls.proxies.append((startProxy(real, CONFIG % ports, ports["admin"],
                                               ports["admin"]), ports))
        except BaseException:
            cls.stopFixture()
            raise

    @classmethod
    def stopFixture(cls):
        for proxy, _ in cls.proxies:
            proxy.stop()
        for echo in cls.echoes:
            echo.stop()

    def _datagrams(self, ports):
        a, b = _client(), _client()
        try:
            seen = []
            # One session per source: its datagrams all go to one host.
            first = [_ask(a, ports["udp"], b"a%d" % (i,)) for i in range(3)]
            seen.append(len({answer.split(b":")[0] for answer, _ in first}))
            seen.append([(answer.split(b":")[1], fromListener) for answer, fromListener in first])
            seen.append(_ask(b, ports["udp"], b"b")[0].split(b":")[1])
            # The session ends when idle (0.2 s, late on a loaded machine); a new one starts.
            time.sleep(0.8)
            seen.append(_ask(a, ports["udp"], b"again")[0].split(b":")[1])
            # source_ip hashing: the same host for every session of the IP.
            hosts = set()
            for i in range(3):
                hosts.add(_ask(a, ports["hashed"], b"h")[0].split(b":")[0])
                time.sleep(0.8)
            seen.append(len(hosts))
            # No cluster: the datagram is dropped.
            a.sendto(b"lost", ("127.0.0.1", ports["nowhere"]))
            try:
                a.settimeout(0.2)
                seen.append(a.recvfrom(100))
            except socket.timeout:
                seen.append("dropped")
            return seen
        finally:
            a.close()
            b.close()

    def test_sideBySide(self):
        """
        The same answers, sessions and host choices; then the same
        C{udp.*} and C{cluster.*.udp.*} stats (and the cluster's byte
        counts).
        """
        results = [None, None]

        def one(index, ports):
            seen = self._datagrams(ports)
            time.sleep(0.3)
            stats = {name: value for name, value in adminStats(ports["admin"]).items()
                     if name.startswith("udp.") or ".udp." in name and name.startswith("cluster.")
                     or name.endswith(("upstream_cx_rx_bytes_total",
                                       "upstream_cx_tx_bytes_total"))}
            results[index] = (seen, stats)

        # Both at once: the test is mostly waiting for idle timeouts.
        threads = [threading.Thread(target=one, args=(i, ports))
                   for i, (_, ports) in enumerate(self.proxies)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        self.assertIsNotNone(results[0])
        self.assertEqual(results[1], results[0])
