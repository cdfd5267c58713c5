"""
Tests for L{txenvoy.upstream.health_check_event_logger}: Envoy 1.40's event
lines (the e2e comparison in L{tests.e2e.test_health_check_events} checks
them against the binary's).
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.upstream.health_check_event_logger import HealthCheckEventLogger, formatTimestamp
from txenvoy.upstream.host import Host, Locality

HOST = ('"host":{"socket_address":{"protocol":"TCP","address":"10.0.0.1","port_value":80,'
        '"resolver_name":"","ipv4_compat":false,"network_namespace_filepath":""}}')


class Lines:
    """A writer that keeps what it is given."""

    def __init__(self):
        self.lines = []

    def write(self, line):
        self.lines.append(line)


class FormatTests(SynchronousTestCase):

    def test_timestamp(self):
        """Milliseconds, none when whole: protobuf's JSON of Envoy's ms timestamps."""
        self.assertEqual(formatTimestamp(0.0), "1970-01-01T00:00:00Z")
        self.assertEqual(formatTimestamp(1796645170.7739), "2026-12-07T12:06:10.773Z")

    def test_events(self):
        """Field order as Envoy prints HealthCheckEvent; the host's locality."""
        clock = Clock()
        clock.advance(1.25)
        out = Lines()
        logger = HealthCheckEventLogger(clock, [out], "TCP", "c1")
        host = Host(("10.0.0.1", 80), locality=Locality("r", "z", "s"))
        logger.logEjectUnhealthy(host, "NETWORK", 0)
        logger.logUnhealthy(host, "ACTIVE", True, 503)
        logger.logAddHealthy(host, False)
        logger.logDegraded(host)
        logger.logNoLongerDegraded(host)
        logger.logSuccessful(host)
        head = '{"health_checker_type":"TCP",' + HOST + ',"cluster_name":"c1"'
        when = ',"timestamp":"1970-01-01T00:00:01.250Z"'
        where = ',"locality":{"region":"r","zone":"z","sub_zone":"s"}'
        self.assertEqual(out.lines, [
            head + ',"eject_unhealthy_event":{"failure_type":"NETWORK","http_status_code":0}'
            + when + where + "}\n",
            head + when + ',"health_check_failure_event":{"failure_type":"ACTIVE",'
            '"first_check":true,"http_status_code":503}' + where + "}\n",
            head + ',"add_healthy_event":{"first_check":false}' + when + where + "}\n",
            head + when + ',"degraded_healthy_host":{}' + where + "}\n",
            head + when + ',"no_longer_degraded_host":{}' + where + "}\n",
            head + when + where + ',"successful_health_check_event":{}' + "}\n",
        ])
