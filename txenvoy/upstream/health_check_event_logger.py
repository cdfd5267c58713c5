# -*- test-case-name: tests.upstream.test_health_check_event_logger -*-
"""
Health check event logs (Envoy's C{HealthCheckEventLoggerImpl}): a
cluster's C{health_checks[].event_log_path} and its C{event_logger} file
sinks (C{envoy.health_check.event_sinks.file}) get one JSON line per event,
byte for byte as Envoy 1.40 writes them::

    {"health_checker_type":"HTTP","host":{"socket_address":{...}},
     "cluster_name":"c","eject_unhealthy_event":{"failure_type":"ACTIVE",
     "http_status_code":503},"timestamp":"...Z","locality":{...}}

Fields come in the C{HealthCheckEvent} message's field-number order with
every scalar printed (Envoy prints with C{always_print_primitive_fields}),
and the timestamp has Envoy's millisecond precision. Lines go through the
server's L{txenvoy.accesslog.manager.AccessLogManager}, so they are
flushed like access logs (C{--file-flush-interval-msec}) and reopened on
C{SIGUSR1}.

Which events are written, and when, is the health checker's business
(L{txenvoy.upstream.health_checker.HostSession}), as in Envoy.
"""

import json
import time

__all__ = ["HealthCheckEventLogger", "formatTimestamp"]


def formatTimestamp(seconds):
    """
    A C{google.protobuf.Timestamp} in JSON, from wall-clock seconds cut to
    milliseconds as Envoy's C{TimestampUtil} cuts them (no fraction when it
    is zero, as protobuf prints it).
    """
    ms = int(seconds * 1000)
    whole, millis = divmod(ms, 1000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    if millis:
        text += ".%03d" % (millis,)
    return text + "Z"


def _string(value):
    return json.dumps(value, ensure_ascii=False)


def _hostJson(host):
    ip, port = host.address
    return ('{"socket_address":{"protocol":"TCP","address":%s,"port_value":%d,'
            '"resolver_name":"","ipv4_compat":false,"network_namespace_filepath":""}}'
            % (_string(ip), port))


def _localityJson(host):
    locality = getattr(host, "locality", None)
    region = zone = subZone = ""
    if locality is not None:
        region, zone, subZone = locality.region, locality.zone, locality.subZone
    return '{"region":%s,"zone":%s,"sub_zone":%s}' % (
        _string(region), _string(zone), _string(subZone))


class HealthCheckEventLogger:
    """
    The event log of one cluster's health checker.

    @param reactor: gives the events' wall-clock time.
    @param writers: L{txenvoy.accesslog.manager.LogWriter}s, one per path.
    @param checkerType: C{"HTTP"} or C{"TCP"}.
    @param clusterName: the cluster's name.
    """

    def __init__(self, reactor, writers, checkerType, clusterName):
        self.reactor = reactor
        self.writers = tuple(writers)
        self._head = '{"health_checker_type":%s,"host":' % (_string(checkerType),)
        self._cluster = ',"cluster_name":%s' % (_string(clusterName),)

    def _write(self, host, early, late):
        # HealthCheckEvent field numbers: the eject (4) and add (5) events
        # come before the timestamp (6), the failure (7) and degraded
        # (8, 9) events after it, the success event (12) after the
        # locality (11).
        line = "".join((
            self._head, _hostJson(host), self._cluster, early,
            ',"timestamp":"%s"' % (formatTimestamp(self.reactor.seconds()),),
            late[0], ',"locality":', _localityJson(host), late[1], "}\n"))
        for writer in self.writers:
            writer.write(line)

    def logEjectUnhealthy(self, host, failureType, statusCode):
        """The host went unhealthy (C{eject_unhealthy_event})."""
        self._write(host, ',"eject_unhealthy_event":{"failure_type":"%s","http_status_code":%d}'
                    % (failureType, statusCode), ("", ""))

    def logAddHealthy(self, host, firstCheck):
        """The host went healthy (C{add_healthy_event})."""
        self._write(host, ',"add_healthy_event":{"first_check":%s}'
                    % ("true" if firstCheck else "false",), ("", ""))

    def logUnhealthy(self, host, failureType, firstCheck, statusCode):
        """A check failed (C{health_check_failure_event})."""
        self._write(host, "", (
            ',"health_check_failure_event":{"failure_type":"%s","first_check":%s,'
            '"http_status_code":%d}' % (failureType, "true" if firstCheck else "false",
                                        statusCode), ""))

    def logDegraded(self, host):
        """The host went degraded (C{degraded_healthy_host})."""
        self._write(host, "", (',"degraded_healthy_host":{}', ""))

    def logNoLongerDegraded(self, host):
        """The host is no longer degraded (C{no_longer_degraded_host})."""
        self._write(host, "", (',"no_longer_degraded_host":{}', ""))

    def logSuccessful(self, host):
        """A check passed (C{successful_health_check_event})."""
        self._write(host, "", ("", ',"successful_health_check_event":{}'))
