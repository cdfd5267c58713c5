"""
End-to-end: a health check's event log (C{event_log_path}, an
C{event_logger} file sink, C{always_log_health_check_failures} and
C{always_log_health_check_success}) written by Envoy 1.40 and by a real
C{twistd envoy} checking the same kind of origin: the same JSON lines in the
same order, timestamps aside.
"""

import os
import re
import tempfile
import time
from http.server import BaseHTTPRequestHandler

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import Envoy, RealEnvoy, SharedFixture, forBoth, freePort, httpOrigin

CONFIG = """
admin: {address: {socket_address: {address: 127.0.0.1, port_value: %(admin)d}}}
static_resources:
  clusters:
  - name: hc
    connect_timeout: 1s
    load_assignment:
      cluster_name: hc
      endpoints:
      - locality: {region: r1, zone: z1}
        lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %(origin)d}}}
    health_checks:
    - timeout: 1s
      interval: 0.2s
      no_traffic_interval: 0.2s
      unhealthy_threshold: 2
      healthy_threshold: 2
      always_log_health_check_failures: true
      always_log_health_check_success: true
      event_log_path: %(log)s
      event_logger:
      - name: envoy.health_check.event_sink.file
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.health_check.event_sinks.file.v3.HealthCheckEventFileSink
          event_log_path: %(sinkLog)s
      http_health_check: {path: /health}
"""

#: Check results in order: three passes, three 503s, a degraded pass, passes.
STATUSES = [200, 200, 200, 503, 503, 503, 200, 200, 200]
LINES = 11


class _Origin(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        n = self.server.checks
        self.server.checks += 1
        status = STATUSES[n] if n < len(STATUSES) else 200
        self.send_response(status)
        if n == 6:
            self.send_header("x-envoy-degraded", "1")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


_TIMESTAMP = re.compile(r',"timestamp":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{3})?Z)"')


def _comparable(line):
    """A line without what differs between two runs: its time and the origin's port."""
    return re.sub(r'"port_value":\d+', '"port_value":0', _TIMESTAMP.sub("", line))


class HealthCheckEventsComparisonTests(SharedFixture, SynchronousTestCase):
    """Envoy 1.40 and txenvoy, each checking its own origin, side by side."""

    @classmethod
    def startFixture(cls):
        cls.tmp = tempfile.mkdtemp(prefix="hc-events-")
        cls.results = forBoth(cls._runProxy)

    @classmethod
    def _runProxy(cls, real):
        origin = httpOrigin(_Origin)
        origin.checks = 0
        name = "envoy" if real else "txenvoy"
        log = os.path.join(cls.tmp, name + ".log")
        sinkLog = os.path.join(cls.tmp, name + "-sink.log")
        admin = freePort()
        config = CONFIG % {"admin": admin, "origin": origin.server_address[1], "log": log,
                           "sinkLog": sinkLog}
        proxy = RealEnvoy(config) if real else Envoy(config, adminPort=admin)
        try:
            deadline = time.monotonic() + 20
            while origin.checks < len(STATUSES) + 2 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            # Stopping flushes the event logs.
            proxy.stop()
            origin.shutdown()
            origin.server_close()
        with open(log) as f, open(sinkLog) as g:
            return (f.read().splitlines(), g.read().splitlines())

    @classmethod
    def stopFixture(cls):
        import shutil

        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_sameEvents(self):
        """
        The same events, in the same order and the same JSON, as Envoy:
        add_healthy_event (first_check), successful_health_check_event while
        no change is due, eject_unhealthy_event then
        health_check_failure_event with the status, degraded_healthy_host,
        no_longer_degraded_host.
        """
        envoy = [_comparable(line) for line in self.results[True][0][:LINES]]
        txenvoy = [_comparable(line) for line in self.results[False][0][:LINES]]
        self.assertEqual(len(envoy), LINES)
        self.assertEqual(txenvoy, envoy)
        kinds = [re.findall(r'"(\w+_event|\w+_host)":\{', line)[-1] for line in envoy]
        self.assertIn("eject_unhealthy_event", kinds)
        self.assertIn("degraded_healthy_host", kinds)

    def test_sinkGetsTheSameLines(self):
        """The event_logger file sink writes what event_log_path gets."""
        self.assertEqual(self.results[False][1], self.results[False][0])
        self.assertEqual(self.results[True][1], self.results[True][0])

    def test_timestamps(self):
        """Every line has a millisecond RFC 3339 timestamp, as Envoy writes it."""
        for line in self.results[False][0]:
            self.assertIsNotNone(_TIMESTAMP.search(line), line)
