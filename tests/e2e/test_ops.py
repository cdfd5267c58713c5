"""
End-to-end operations: file access logs and SIGUSR1 reopen (logrotate),
the statsd sink, and /drain_listeners.
"""

import os
import signal
import socket
import tempfile
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import STARTUP_TIMEOUT, Envoy, Upstream, freePort, recvAll, tagHandler
from tests.e2e.test_l4 import l4Config, staticCluster, tcpProxyListener


def waitFor(predicate, timeout=STARTUP_TIMEOUT):
    """Whether C{predicate()} came true; most wait for a process's start."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def fileContents(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


class OpsTests(SynchronousTestCase):

    def start(self, bootstrapExtra=None, accessLogPath=None, args=()):
        self.upstream = Upstream(tagHandler(b"hi"))
        self.addCleanup(self.upstream.stop)
        self.port, self.adminPort = freePort(), freePort()
        extra = {}
        if accessLogPath:
            extra["access_log"] = [{
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3."
                             "FileAccessLog",
                    "path": accessLogPath,
                    "log_format": {"text_format_source": {"inline_string":
                                   "%UPSTREAM_HOST% rx=%BYTES_RECEIVED% tx=%BYTES_SENT%\n"}},
                }}]
        config = l4Config(self.adminPort, [tcpProxyListener("p", self.port, "u", **extra)],
                          [staticCluster("u", [self.upstream.port])])
        config.update(bootstrapExtra or {})
        envoy = Envoy(config, args=("--concurrency", "1", "--file-flush-interval-msec", "100")
                      + tuple(args), adminPort=self.adminPort)
        self.addCleanup(envoy.stop)
        envoy.waitReady()
        return envoy

    def connectOnce(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        s.sendall(b"abc")
        data = recvAll(s, 10)
        s.close()
        return data

    def test_fileAccessLogAndReopen(self):
        """
        tcp_proxy's file access log is written; after logrotate moves the
        file, SIGUSR1 makes txenvoy write to a new file at the old path.
        """
        path = os.path.join(tempfile.mkdtemp(prefix="txenvoy-log-"), "access.log")
        envoy = self.start(accessLogPath=path)
        self.assertEqual(self.connectOnce(), b"hi")
        line = "127.0.0.1:%d rx=3 tx=2\n" % (self.upstream.port,)
        self.assertTrue(waitFor(lambda: line in fileContents(path)), fileContents(path))
        os.rename(path, path + ".1")
        envoy.proc.send_signal(signal.SIGUSR1)
        self.assertTrue(waitFor(lambda: os.path.exists(path)))
        self.connectOnce()
        self.assertTrue(waitFor(lambda: line in fileContents(path)))
        self.assertEqual(fileContents(path + ".1").count(line), 1)

    def test_statsdSink(self):
        """Counters reach a statsd listener over UDP every stats_flush_interval."""
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        udp.settimeout(5)
        self.addCleanup(udp.close)
        self.start({
            "stats_flush_interval": "0.2s",
            "stats_sinks": [{"name": "envoy.stat_sinks.statsd", "typed_config": {
                "@type": "type.googleapis.com/envoy.config.metrics.v3.StatsdSink",
                "address": {"socket_address": {"address": "127.0.0.1",
                                               "port_value": udp.getsockname()[1]}}}}],
        })
        self.connectOnce()
        seen = b""
        deadline = time.time() + 5
        while time.time() < deadline and b"envoy.cluster.u.upstream_cx_total:1|c" not in seen:
            seen += udp.recv(65536) + b"\n"
        self.assertIn(b"envoy.cluster.u.upstream_cx_total:1|c", seen)

    def test_drainListeners(self):
        """POST /drain_listeners stops accepting; the process keeps running."""
        envoy = self.start()
        status, body = envoy.admin("/drain_listeners", method="POST")
        self.assertEqual(status, 200)
        self.assertTrue(waitFor(lambda: _refused(self.port)))
        self.assertEqual(envoy.admin("/ready")[0], 200)
        self.assertEqual(envoy.stats()["listener_manager.listener_stopped"], 1)


def _refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except OSError:
        return True


class LoggingTests(SynchronousTestCase):

    def test_logPathAndAdminAccessLog(self):
        """
        --log-path gets the application log (Envoy's layout); the admin's own
        access_log records admin requests.
        """
        tmp = tempfile.mkdtemp(prefix="txenvoy-log-")
        logPath = os.path.join(tmp, "app.log")
        adminLog = os.path.join(tmp, "admin.log")
        adminPort = freePort()
        config = l4Config(adminPort, [], [])
        config["admin"]["access_log"] = [{
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": adminLog}}]
        envoy = Envoy(config, args=("--log-path", logPath, "--file-flush-interval-msec", "100"),
                      adminPort=adminPort)
        self.addCleanup(envoy.stop)
        envoy.waitReady()
        self.assertTrue(waitFor(lambda: "[info][main] starting main dispatch loop"
                                in fileContents(logPath)), fileContents(logPath))
        envoy.admin("/stats?filter=server")
        self.assertTrue(waitFor(lambda: '"GET /stats?filter=server HTTP/1.1" 200'
                                in fileContents(adminLog)), fileContents(adminLog))
