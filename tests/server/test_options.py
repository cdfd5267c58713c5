"""Tests for L{txenvoy.server.options}: Envoy's flags, with Envoy's meaning."""

import os

from twisted.trial.unittest import SynchronousTestCase

from txenvoy.server.options import SHUTDOWN_DRAIN_TIME_S, Options


def parse(*argv):
    options = Options()
    options.parseOptions(["-c", "envoy.yaml"] + list(argv))
    return options.serverOptions()


class OptionsTests(SynchronousTestCase):

    def test_envoyFlagsAccepted(self):
        """
        Envoy's remaining flags parse, and C{/server_info} reports them
        under Envoy's keys.
        """
        opts = parse("--disable-hot-restart", "--base-id", "7", "--use-dynamic-base-id",
                     "--log-format", "%v", "--log-format-escaped",
                     "--admin-address-path", "/tmp/a", "--local-address-ip-version", "v6",
                     "--allow-unknown-static-fields", "--reject-unknown-dynamic-fields",
                     "--ignore-unknown-dynamic-fields", "--service-zone", "z",
                     "--file-flush-interval-msec", "500", "--enable-core-dump")
        info = opts.asServerInfo()
        self.assertEqual(
            {k: info[k] for k in ("base_id", "use_dynamic_base_id", "log_format",
                                  "log_format_escaped", "admin_address_path",
                                  "local_address_ip_version", "allow_unknown_static_fields",
                                  "reject_unknown_dynamic_fields",
                                  "ignore_unknown_dynamic_fields", "service_zone",
                                  "file_flush_interval", "enable_core_dump")},
            {"base_id": "7", "use_dynamic_base_id": True, "log_format": "%v",
             "log_format_escaped": True, "admin_address_path": "/tmp/a",
             "local_address_ip_version": "v6", "allow_unknown_static_fields": True,
             "reject_unknown_dynamic_fields": True, "ignore_unknown_dynamic_fields": True,
             "service_zone": "z", "file_flush_interval": "0.5s", "enable_core_dump": True})

    def test_shutdownDrainDefault(self):
        """
        SIGTERM's drain bound fits Kubernetes' 30 s grace period;
        C{--drain-time-s} keeps Envoy's 600 s for listener drains.
        """
        opts = parse()
        self.assertEqual((opts.shutdownDrainTimeS, opts.drainTimeS), (SHUTDOWN_DRAIN_TIME_S, 600))
        self.assertLess(SHUTDOWN_DRAIN_TIME_S, 30)
        self.assertEqual(parse("--shutdown-drain-time-s", "3").shutdownDrainTimeS, 3)

    def test_cpusetThreads(self):
        """Envoy: --cpuset-threads takes the default concurrency from the cpuset."""
        self.assertEqual(parse("--cpuset-threads").concurrency, len(os.sched_getaffinity(0)))
        self.assertEqual(parse("--cpuset-threads", "--concurrency", "2").concurrency, 2)

    def test_importRepeatable(self):
        self.assertEqual(parse("--import", "a.b", "--import", "c").imports, ["a.b", "c"])
