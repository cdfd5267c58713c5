"""
C{envoy.access_loggers.fluentd} end to end: the same YAML through real
Envoy 1.40 and a real C{twistd envoy}, the same requests, each proxy
sending to its own forward-protocol receiver. The messages (tag, entry
count, records with their types) and the access_logs.fluentd.* stats
must match; a receiver that refuses connections costs records, never a
request.
"""

import time
import urllib.error
import urllib.request

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.collectors import FluentdReceiver, RecordingOrigin
from tests.e2e.configs import bootstrap, cluster, httpListener
from tests.e2e.harness import DeadPort, SharedFixture, adminStats, freePort, startProxy, stopAll

_ACCESS_LOG = """
access_log:
- name: envoy.access_loggers.fluentd
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.access_loggers.fluentd.v3.FluentdAccessLogConfig
    cluster: %(cluster)s
    tag: envoy.%(prefix)s
    stat_prefix: %(prefix)s
    buffer_flush_interval: 0.2s
    record:
      method: "%%REQ(:METHOD)%%"
      path: "%%REQ(:PATH)%%"
      code: "%%RESPONSE_CODE%%"
      flags: "%%RESPONSE_FLAGS%%"
      mixed: "%%REQ(:METHOD)%% %%RESPONSE_CODE%%"
      missing: "%%REQ(X-NOPE)%%"
      nested: {protocol: "%%PROTOCOL%%", constant: 7, list: ["%%RESPONSE_CODE%%", x]}
"""

_VIRTUAL_HOST = """
- name: vh
  domains: ["*"]
  routes:
  - match: {prefix: "/dead"}
    route: {cluster: deadorigin}
  - match: {prefix: "/"}
    route: {cluster: origin}
"""


def _listener(prefix, port, cluster):
    return httpListener(prefix, port, hcm=_ACCESS_LOG % dict(prefix=prefix, cluster=cluster),
                        virtualHosts=_VIRTUAL_HOST)


PATHS = ("/a", "/b?x=1", "/dead")


def fluentdConfig(ports, receiverPort, originPort, deadPort):
    return bootstrap(
        [_listener("ingress", ports["ingress"], "fluentd"),
         _listener("dead", ports["dead"], "deadfluentd")],
        [cluster("origin", originPort), cluster("fluentd", receiverPort),
         cluster("deadfluentd", deadPort), cluster("deadorigin", deadPort)],
        admin=ports["admin"])


def _get(port, path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        e.read()
        return e.code


class FluentdComparisonTests(SharedFixture, SynchronousTestCase):
    """Real Envoy and txenvoy, the same fluentd access log YAML, the same requests."""

    maxDiff = None

    @classmethod
    def startFixture(cls):
        cls.origin = RecordingOrigin()
        cls.dead = DeadPort()
        cls.proxies = []
        try:
            dead = cls.dead.port
            for real in (True, False):
                receiver = FluentdReceiver()
                ports = {k: freePort() for k in ("admin", "ingress", "dead")}
                try:
                    proc = startProxy(real, fluentdConfig(ports, receiver.port,
                                                          cls.origin.port, dead),
                                      ports["ingress"], ports["admin"])
                    proc.waitPort(ports["dead"])
                except BaseException:
                    receiver.stop()
                    raise
                cls.proxies.append((proc, receiver, ports))
            cls.codes = []
            for _, _, ports in cls.proxies:
                cls.codes.append([_get(ports["ingress"], p) for p in PATHS]
                                 + [_get(ports["dead"], "/") for _ in range(3)])
            cls.entries = [receiver.waitEntries(len(PATHS))
                           for _, receiver, _ in cls.proxies]
        except BaseException:
            cls.stopFixture()
            raise

    @classmethod
    def stopFixture(cls):
        stopAll(*[each for proc, receiver, _ in cls.proxies for each in (proc, receiver)],
                cls.origin)
        cls.dead.close()

    def test_records(self):
        """
        The same tag and records, typed as Envoy types them (a lone
        command keeps its type, a mixed string is text, a missing value
        null), sorted by path.
        """
        envoy, txenvoy = [sorted(((tag, record) for tag, _, record in entries),
                                 key=lambda e: e[1]["path"]) for entries in self.entries]
        self.assertEqual(len(envoy), len(PATHS))
        self.assertEqual(txenvoy, envoy)

    def test_entryTime(self):
        """Each entry's time is the emission second (an integer near now)."""
        for entries in self.entries:
            for _, when, _ in entries:
                self.assertIsInstance(when, int)
                self.assertLess(abs(when - time.time()), 60)

    def test_stats(self):
        """
        access_logs.fluentd.<stat_prefix>.* as Envoy counts them: records
        taken and lost, and messages sent (how many depends on batching).
        """
        names = ["access_logs.fluentd.ingress." + n for n in (
            "entries_buffered", "entries_lost", "connections_closed", "reconnect_attempts")]
        shown = []
        for _, _, ports in self.proxies:
            stats = adminStats(ports["admin"])
            self.assertGreaterEqual(stats["access_logs.fluentd.ingress.events_sent"], 1)
            shown.append({n: stats.get(n) for n in names})
        envoy, txenvoy = shown
        self.assertEqual(envoy["access_logs.fluentd.ingress.entries_buffered"], len(PATHS))
        self.assertEqual(txenvoy, envoy)

    def test_deadReceiverLosesNoRequest(self):
        """A receiver that refuses connections: every request answered, as Envoy."""
        envoy, txenvoy = self.codes
        self.assertEqual(txenvoy, envoy)
        self.assertEqual(envoy[-3:], [200, 200, 200])
