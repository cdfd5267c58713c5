"""
End-to-end: a real C{twistd -n envoy} process proxying real bytes on
127.0.0.1 (issue: runnable core and the L4 data path).
"""

import os
import socket
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import (
    EXAMPLES, STARTUP_TIMEOUT, Envoy, Upstream, echoHandler, freePort, recvAll, runTwistd,
    tagHandler)


def l4Config(adminPort, listeners, clusters):
    """A bootstrap with an admin listener, as a dict."""
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": adminPort}}},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }


def tcpProxyListener(name, port, cluster, **extra):
    config = {"@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
              "stat_prefix": name, "cluster": cluster}
    config.update(extra)
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy",
                                        "typed_config": config}]}],
    }


def staticCluster(name, ports, lbPolicy="ROUND_ROBIN", connectTimeout="1s"):
    return {
        "name": name, "type": "STATIC", "connect_timeout": connectTimeout, "lb_policy": lbPolicy,
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}
            for p in ports]}]},
    }


class L4ProxyTests(SynchronousTestCase):
    """tcp_proxy through a real process."""

    def startEnvoy(self, listeners, clusters, args=("--concurrency", "1")):
        self.adminPort = freePort()
        envoy = Envoy(l4Config(self.adminPort, listeners, clusters), args=args,
                      adminPort=self.adminPort)
        self.addCleanup(envoy.stop)
        envoy.waitReady()
        return envoy

    def startUpstream(self, handler):
        upstream = Upstream(handler)
        self.addCleanup(upstream.stop)
        return upstream

    def test_fiveMiBRoundTrip(self):
        """5 MiB sent through tcp_proxy to an echo upstream come back intact."""
        upstream = self.startUpstream(echoHandler)
        port = freePort()
        envoy = self.startEnvoy([tcpProxyListener("p", port, "echo")],
                                [staticCluster("echo", [upstream.port])])
        payload = os.urandom(5 * 1024 * 1024)
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        received = []

        import threading

        def reader():
            received.append(recvAll(s))
        t = threading.Thread(target=reader)
        t.start()
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        t.join(60)
        s.close()
        self.assertEqual(len(received[0]), len(payload))
        self.assertEqual(received[0], payload)
        stats = envoy.stats()
        self.assertEqual(stats["tcp.p.downstream_cx_rx_bytes_total"], len(payload))
        self.assertEqual(stats["cluster.echo.upstream_cx_total"], 1)

    def test_halfClose(self):
        """
        A client FIN reaches the upstream, and the upstream's answer written
        after that FIN still reaches the client (Envoy's tcp_proxy keeps
        half-closed connections open).
        """
        def answerAfterFin(conn):
            data = b""
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            conn.sendall(b"got:" + data)
            conn.shutdown(socket.SHUT_WR)
        upstream = self.startUpstream(answerAfterFin)
        port = freePort()
        self.startEnvoy([tcpProxyListener("p", port, "u")], [staticCluster("u", [upstream.port])])
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"abc")
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(recvAll(s, 10), b"got:abc")
        s.close()

    def test_upstreamRefuses(self):
        """
        An upstream that refuses closes the downstream promptly and counts
        upstream_cx_connect_fail and upstream_cx_connect_attempts_exceeded.
        """
        deadPort = freePort()
        port = freePort()
        envoy = self.startEnvoy([tcpProxyListener("p", port, "dead")],
                                [staticCluster("dead", [deadPort])])
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        start = time.time()
        try:
            data = recvAll(s, 5)
        except ConnectionResetError:
            data = b""
        self.assertEqual(data, b"")
        self.assertLess(time.time() - start, 2.0)
        s.close()
        stats = envoy.stats()
        self.assertEqual(stats["cluster.dead.upstream_cx_connect_fail"], 1)
        self.assertEqual(stats["cluster.dead.upstream_cx_connect_attempts_exceeded"], 1)

    def test_roundRobin(self):
        """ROUND_ROBIN alternates between two upstreams."""
        a = self.startUpstream(tagHandler(b"A"))
        b = self.startUpstream(tagHandler(b"B"))
        port = freePort()
        self.startEnvoy([tcpProxyListener("p", port, "ab")], [staticCluster("ab", [a.port, b.port])])
        seen = []
        for _ in range(6):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            seen.append(recvAll(s, 10))
            s.close()
        self.assertEqual(sorted(seen), [b"A"] * 3 + [b"B"] * 3)
        for first, second in zip(seen, seen[1:]):
            self.assertNotEqual(first, second)

    def test_emptyFilterList(self):
        """
        A filter chain with C{filters: []} accepts, then closes at once
        (Envoy: "closing connection: no filters") and counts
        network_extension_config_missing.
        """
        port = freePort()
        listener = {"name": "empty",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                    "filter_chains": [{"filters": []}]}
        envoy = self.startEnvoy([listener], [])
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.assertEqual(recvAll(s, 5), b"")
        s.close()
        stats = envoy.stats()
        prefix = "listener.127.0.0.1_%d." % (port,)
        self.assertEqual(stats[prefix + "network_extension_config_missing"], 1)
        self.assertEqual(stats[prefix + "downstream_cx_total"], 1)

    def test_twoWorkers(self):
        """With --concurrency 2 both workers take connections."""
        upstream = self.startUpstream(tagHandler(b"x"))
        port = freePort()
        envoy = self.startEnvoy([tcpProxyListener("p", port, "u")],
                                [staticCluster("u", [upstream.port])],
                                args=("--concurrency", "2"))
        for _ in range(60):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            self.assertEqual(recvAll(s, 10), b"x")
            s.close()
        stats = envoy.stats()
        prefix = "listener.127.0.0.1_%d." % (port,)
        self.assertEqual(stats[prefix + "downstream_cx_total"], 60)
        self.assertGreater(stats[prefix + "worker_0.downstream_cx_total"], 0)
        self.assertGreater(stats[prefix + "worker_1.downstream_cx_total"], 0)
        self.assertEqual(stats["listener_manager.listener_create_success"], 2 + 0)

    def test_portInUse(self):
        """A listener port already in use is fatal at start: exit 1, address named."""
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        self.addCleanup(busy.close)
        port = busy.getsockname()[1]
        envoy = Envoy(l4Config(freePort(), [tcpProxyListener("p", port, "u")],
                               [staticCluster("u", [freePort()])]))
        try:
            rc = envoy.proc.wait(STARTUP_TIMEOUT)
        finally:
            envoy.stop()
        self.assertEqual(rc, 1)
        self.assertIn("cannot bind '127.0.0.1:%d'" % (port,), envoy.output()[1])


class ExampleConfigTests(SynchronousTestCase):
    """Envoy's own example configs, run unchanged."""

    def test_tcpProxyExampleProxies(self):
        """
        06-tcp-proxy.yaml runs from its folder and proxies 10010 to the
        upstreams on 10080/10081 (round robin) and 10011 (weighted).
        """
        a = Upstream(tagHandler(b"A"), port=10080)
        self.addCleanup(a.stop)
        b = Upstream(tagHandler(b"B"), port=10081)
        self.addCleanup(b.stop)
        c = Upstream(tagHandler(b"C"), port=10082)
        self.addCleanup(c.stop)
        envoy = Envoy(configPath="06-tcp-proxy.yaml", cwd=EXAMPLES, adminPort=10094,
                      args=("--concurrency", "1"))
        self.addCleanup(envoy.stop)
        envoy.waitReady()
        seen = set()
        for _ in range(4):
            s = socket.create_connection(("127.0.0.1", 10010), timeout=10)
            seen.add(recvAll(s, 10))
            s.close()
        self.assertEqual(seen, {b"A", b"B"})
        weighted = []
        for _ in range(40):
            s = socket.create_connection(("127.0.0.1", 10011), timeout=10)
            weighted.append(recvAll(s, 10))
            s.close()
        # 80/20 between backend_a (A or B) and backend_b (C, via STRICT_DNS).
        self.assertIn(b"C", weighted)
        self.assertGreater(len([w for w in weighted if w != b"C"]), len(weighted) // 2)
        deadline = time.time() + 5
        while time.time() < deadline:
            out, _ = envoy.output()
            if "-> 127.0.0.1:1008" in out:
                break
            time.sleep(0.1)
        self.assertIn("-> 127.0.0.1:1008", out)


class ValidateModeTests(SynchronousTestCase):
    """--mode validate on Envoy's example corpus."""

    def test_validOk(self):
        rc, out, err = runTwistd(["--mode", "validate", "-c", "06-tcp-proxy.yaml"], cwd=EXAMPLES)
        self.assertEqual((rc, out), (0, "configuration '06-tcp-proxy.yaml' OK\n"))

    def test_invalidExitsOne(self):
        rc, out, err = runTwistd(["--mode", "validate", "-c", "invalid/unknown-field.yaml"],
                                 cwd=EXAMPLES)
        self.assertEqual(rc, 1)
        self.assertEqual(out, "")
        self.assertIn("no such field: 'bogus_field'", err)
        self.assertNotIn("Traceback", err)
