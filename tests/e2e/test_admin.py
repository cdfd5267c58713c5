"""
End-to-end: every admin path of a real C{twistd -n envoy} process, with
Envoy's status codes, content types and formats.
"""

import json
import socket
import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import Envoy, SharedFixture, Upstream, freePort, recvAll, tagHandler
from tests.e2e.test_l4 import l4Config, staticCluster, tcpProxyListener


class AdminTests(SharedFixture, SynchronousTestCase):

    @classmethod
    def startFixture(cls):
        cls.upstream = Upstream(tagHandler(b"hi"))
        cls.port, cls.adminPort = freePort(), freePort()
        cls.envoy = Envoy(l4Config(cls.adminPort, [tcpProxyListener("p", cls.port, "u")],
                                   [staticCluster("u", [cls.upstream.port])]),
                          args=("--concurrency", "1"), adminPort=cls.adminPort)
        cls.envoy.waitReady()
        s = socket.create_connection(("127.0.0.1", cls.port), timeout=10)
        recvAll(s, 10)
        s.close()

    @classmethod
    def stopFixture(cls):
        cls.envoy.stop()
        cls.upstream.stop()

    def request(self, path, method="GET"):
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (self.adminPort, path),
                                     method=method)
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, r.headers, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read().decode()

    def test_ready(self):
        status, headers, body = self.request("/ready")
        self.assertEqual((status, body), (200, "LIVE\n"))
        self.assertEqual(headers["content-type"], "text/plain; charset=UTF-8")
        self.assertEqual(headers["server"], "envoy")

    def test_serverInfo(self):
        status, headers, body = self.request("/server_info")
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-type"], "application/json")
        info = json.loads(body)
        self.assertEqual(info["state"], "LIVE")
        self.assertEqual(info["command_line_options"]["concurrency"], 1)
        self.assertIn("uptime_current_epoch", info)

    def test_statsText(self):
        stats = self.envoy.stats()
        self.assertEqual(stats["cluster.u.upstream_cx_total"], 1)
        self.assertEqual(stats["listener.127.0.0.1_%d.downstream_cx_total" % (self.port,)], 1)
        self.assertEqual(stats["listener_manager.listener_create_success"], 1)
        self.assertEqual(stats["server.live"], 1)
        self.assertEqual(stats["server.concurrency"], 1)

    def test_statsFilterUsedOnlyJson(self):
        status, headers, body = self.request("/stats?format=json&filter=tcp%5C.&usedonly")
        self.assertEqual(status, 200)
        names = {s["name"] for s in json.loads(body)["stats"] if "name" in s}
        self.assertIn("tcp.p.downstream_cx_total", names)
        self.assertTrue(all(n.startswith("tcp.") for n in names))

    def test_prometheusParses(self):
        """The exposition parses with the Prometheus client's own parser."""
        status, _, body = self.request("/stats/prometheus")
        self.assertEqual(status, 200)
        samples = {}
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        self.assertEqual(
            samples[("envoy_cluster_upstream_cx_total", (("envoy_cluster_name", "u"),))], 1)
        self.assertEqual(samples[("envoy_server_live", ())], 1)

    def test_listenersAndClusters(self):
        _, _, body = self.request("/listeners")
        self.assertEqual(body, "p::127.0.0.1:%d\n" % (self.port,))
        _, _, body = self.request("/clusters")
        host = "u::127.0.0.1:%d::" % (self.upstream.port,)
        self.assertIn(host + "cx_total::1", body)
        self.assertIn(host + "health_flags::healthy", body)
        _, _, body = self.request("/clusters?format=json")
        self.assertEqual(json.loads(body)["cluster_statuses"][0]["name"], "u")

    def test_configDump(self):
        _, _, body = self.request("/config_dump")
        configs = json.loads(body)["configs"]
        self.assertEqual(configs[0]["@type"],
                         "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump")

    def test_mutatingPathsNeedPost(self):
        """Envoy: a GET on a state-changing path is 405."""
        for path in ("/quitquitquit", "/healthcheck/fail", "/reset_counters", "/logging",
                     "/drain_listeners"):
            status, _, body = self.request(path)
            self.assertEqual((status, body), (405, "Method GET not allowed, POST required."), path)

    def test_healthcheckFailAndOk(self):
        self.assertEqual(self.request("/healthcheck/fail", "POST")[0], 200)
        try:
            status, _, body = self.request("/ready")
            self.assertEqual((status, body), (503, "DRAINING\n"))
            self.assertEqual(self.envoy.stats()["server.live"], 0)
        finally:
            self.assertEqual(self.request("/healthcheck/ok", "POST")[0], 200)
        self.assertEqual(self.request("/ready")[0], 200)

    def test_logging(self):
        status, _, body = self.request("/logging?level=debug", "POST")
        self.assertEqual(status, 200)
        self.assertIn("admin: debug", body)
        self.request("/logging?level=info", "POST")

    def test_unknownPath(self):
        self.assertEqual(self.request("/nosuch")[0], 404)


class QuitTests(SynchronousTestCase):

    def test_quitquitquit(self):
        """POST /quitquitquit: 200 OK, then the process exits 0."""
        adminPort = freePort()
        envoy = Envoy(l4Config(adminPort, [], []), adminPort=adminPort)
        self.addCleanup(envoy.stop)
        envoy.waitReady()
        status, body = envoy.admin("/quitquitquit", method="POST")
        self.assertEqual((status, body), (200, "OK\n"))
        self.assertEqual(envoy.proc.wait(15), 0)
