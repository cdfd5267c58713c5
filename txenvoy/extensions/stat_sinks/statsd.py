# -*- test-case-name: tests.stats.test_flush -*-
"""
C{envoy.stat_sinks.statsd}: counters, gauges and histogram values sent as
statsd lines over UDP, one metric per datagram as Envoy's UDP statsd sink
does::

    envoy.cluster.c1.upstream_rq_total:3|c     (the increase since the last flush)
    envoy.server.live:1|g
    envoy.http.ingress.downstream_rq_time:12|ms

Only counters and gauges that were ever written are sent (zero deltas
included). Envoy sends each histogram value as it is recorded; here the
values of the flush interval are sent at the flush, one line per value, at
the two-significant-digit precision the store keeps.
"""

import ipaddress

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from zope.interface import implementer

from txenvoy.config import messages
from txenvoy.config.errors import ConfigError, UnsupportedField
from txenvoy.config.registry import Category, extension
from txenvoy.interfaces import IStatsSink
from txenvoy.stats.format import formatDouble

log = Logger(namespace="stats_sinks")

DEFAULT_PREFIX = "envoy"


@implementer(IStatsSink)
class StatsdSink:
    """
    A statsd sink over UDP on the main reactor. The socket is opened at
    the first flush, so building one (C{--mode validate}) opens nothing.
    """

    def __init__(self, reactor, host, port, prefix=DEFAULT_PREFIX):
        self._reactor = reactor
        self.address = (host, port)
        self.prefix = prefix
        self._port = None
        self._lastCounters = {}

    def _transport(self):
        if self._port is None:
            interface = "::" if ":" in self.address[0] else ""
            self._port = self._reactor.listenUDP(0, DatagramProtocol(), interface=interface)
        return self._port

    def lines(self, snapshot):
        """
        The statsd lines for one flush; remembers counter values so the
        next flush sends deltas.
        """
        prefix = self.prefix + "." if self.prefix else ""
        used = snapshot.used
        out = []
        last = self._lastCounters
        current = {}
        for name in sorted(snapshot.counters):
            value = snapshot.counters[name]
            current[name] = value
            if name not in used:
                continue
            delta = value - last.get(name, 0)
            if delta < 0:
                # /reset_counters: everything since the reset is new.
                delta = value
            out.append(self.formatLine(prefix, name, "%d" % (delta,), "c"))
        self._lastCounters = current
        for name in sorted(snapshot.gauges):
            if name in used:
                out.append(self.formatLine(prefix, name, "%d" % (snapshot.gauges[name],), "g"))
        for name in sorted(snapshot.histograms):
            h = snapshot.histograms[name]
            for value, count in sorted(h.intervalBuckets.items()):
                line = self.formatLine(prefix, name, formatDouble(value), "ms")
                out.extend([line] * count)
        return out

    def formatLine(self, prefix, name, value, kind):
        """One statsd line: C{<prefix><name>:<value>|<kind>}."""
        return "%s%s:%s|%s" % (prefix, name, value, kind)

    def datagrams(self, lines):
        """The datagrams to send: one line each."""
        return lines

    def flush(self, snapshot):
        """Send this flush's lines, one datagram each."""
        lines = self.lines(snapshot)
        if not lines:
            return
        port = self._transport()
        for line in self.datagrams(lines):
            try:
                port.write(line.encode("utf-8"), self.address)
            except OSError as e:
                # statsd is fire and forget; a full buffer or an
                # unreachable collector loses this flush, nothing more.
                log.debug("statsd write to {address} failed: {error}",
                          address=self.address, error=e)
                return

    def stop(self):
        """Close the UDP socket."""
        if self._port is not None:
            port, self._port = self._port, None
            return port.stopListening()


@extension(Category.STATS_SINK, "envoy.config.metrics.v3.StatsdSink",
           "envoy.stat_sinks.statsd", fields=("address", "tcp_cluster_name", "prefix"))
def createStatsdSink(message, context):
    """Build a L{StatsdSink} from an C{envoy.config.metrics.v3.StatsdSink}."""
    path = context.configPath
    which = message.WhichOneof("statsd_specifier")
    if which == "tcp_cluster_name":
        raise UnsupportedField(path + ".tcp_cluster_name", "statsd over TCP")
    if which != "address":
        raise ConfigError("%s: statsd sink needs an address" % (path,))
    host, port = statsdAddress(message.address, path + ".address")
    prefix = message.prefix if message.prefix else DEFAULT_PREFIX
    return StatsdSink(context.reactor, host, port, prefix)


def statsdAddress(address, path):
    """
    @param address: an C{envoy.config.core.v3.Address}.
    @return: C{(ip, port)} of its C{socket_address}.
    """
    if address.WhichOneof("address") != "socket_address":
        raise UnsupportedField(path, "only socket_address is supported")
    sa = address.socket_address
    if sa.WhichOneof("port_specifier") != "port_value":
        raise UnsupportedField(path + ".socket_address.named_port")
    try:
        ipaddress.ip_address(sa.address)
    except ValueError:
        raise messages.malformedIpAddress(sa.address, path + ".socket_address.address")
    return sa.address, sa.port_value
