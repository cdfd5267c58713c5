# -*- test-case-name: tests.extensions.stat_sinks.test_dog_statsd -*-
"""
C{envoy.stat_sinks.dog_statsd}: statsd lines in DogStatsD form, the stat
name tag-extracted (C{stats_config} and Envoy's default extractors) and
its tags appended, as Envoy's DogStatsD sink writes them::

    envoy.http.downstream_rq_xx:3|c|#envoy.response_code_class:2,envoy.http_conn_manager_prefix:ingress
    envoy.server.live:1|g

One line per datagram, or with C{max_bytes_per_datagram} as many lines as
fit, joined by newlines.
"""

from txenvoy.config.registry import Category, extension
from txenvoy.extensions.stat_sinks.statsd import DEFAULT_PREFIX, StatsdSink, statsdAddress
from txenvoy.stats.tags import defaultTagProducer


class DogStatsdSink(StatsdSink):
    """A L{StatsdSink} writing tag-extracted names with DogStatsD tags."""

    def __init__(self, reactor, host, port, prefix=DEFAULT_PREFIX, tagProducer=None,
                 maxBytesPerDatagram=None):
        StatsdSink.__init__(self, reactor, host, port, prefix)
        self.tagProducer = tagProducer or defaultTagProducer()
        self.maxBytesPerDatagram = maxBytesPerDatagram

    def formatLine(self, prefix, name, value, kind):
        extracted, tags = self.tagProducer.produceTags(name)
        line = "%s%s:%s|%s" % (prefix, extracted, value, kind)
        if tags:
            line += "|#" + ",".join("%s:%s" % tag for tag in tags)
        return line

    def datagrams(self, lines):
        limit = self.maxBytesPerDatagram
        if not limit:
            return lines
        out = []
        current = ""
        for line in lines:
            if current and len(current) + 1 + len(line) > limit:
                out.append(current)
                current = line
            else:
                current = current + "\n" + line if current else line
        if current:
            out.append(current)
        return out


@extension(Category.STATS_SINK, "envoy.config.metrics.v3.DogStatsdSink",
           "envoy.stat_sinks.dog_statsd", fields=("address", "prefix", "max_bytes_per_datagram"))
def createDogStatsdSink(message, context):
    """Build a L{DogStatsdSink} from an C{envoy.config.metrics.v3.DogStatsdSink}."""
    path = context.configPath
    host, port = statsdAddress(message.address, path + ".address")
    server = getattr(context, "server", None)
    limit = (message.max_bytes_per_datagram.value
             if message.HasField("max_bytes_per_datagram") else None)
    return DogStatsdSink(context.reactor, host, port, message.prefix or DEFAULT_PREFIX,
                         getattr(server, "tagProducer", None), limit)
