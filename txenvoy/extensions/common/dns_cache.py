# -*- test-case-name: tests.extensions.common.test_dns_cache -*-
"""
Envoy's dynamic forward proxy DNS cache (C{envoy.common.dns_cache}): the
addresses of the hosts a forward proxy was asked for, resolved on demand
and shared by the C{dynamic_forward_proxy} HTTP filter and cluster that
name the same C{dns_cache_config}.

One cache per name and server. Workers read resolved entries
directly (a dict read); a host not in the cache is resolved on the main
thread with the cluster manager's resolver (getaddrinfo in the reactor's
thread pool, so nothing blocks), and each worker that asked is told on its
own thread (C{dispatcher.post}).

Stats, as Envoy 1.40 names them: C{dns_cache.<name>.} C{dns_query_attempt},
C{dns_query_success}, C{dns_query_failure}, C{dns_query_timeout},
C{host_added}, C{host_address_changed}, C{host_overflow},
C{host_removed}, C{dns_rq_pending_overflow}, C{dns_address_filter_out},
C{cache_load}, the gauge C{num_hosts} and
C{circuit_breakers.rq_pending_open} / C{rq_pending_remaining}. As in
Envoy, the first address a host gets counts as a change, and an answer
with no address of the C{dns_lookup_family} is a success without an
address (the filter then answers C{DNS resolution failure}).

Each host is resolved again every C{dns_refresh_rate} (60 s unless set)
and dropped (C{host_removed}) at the first refresh that finds it unused
for C{host_ttl} (5 minutes unless set), as Envoy's C{onReResolve}.
"""

import weakref

from twisted.internet.abstract import isIPAddress, isIPv6Address

from txenvoy.config.errors import ConfigError
from txenvoy.config.fields import checkFields, durationSeconds
from txenvoy.stats.per_worker import StatsStruct
from txenvoy.upstream.cluster import DNS_LOOKUP_FAMILIES
from txenvoy.upstream.dns import GetAddrInfoResolver

__all__ = ["DnsCache", "DnsCacheSettings", "HostEntry", "compileDnsCacheConfig", "getDnsCache",
           "splitHost"]

_COUNTERS = ("cache_load", "dns_address_filter_out", "dns_query_attempt", "dns_query_failure",
             "dns_query_success", "dns_query_timeout", "dns_rq_pending_overflow", "host_added",
             "host_address_changed", "host_overflow", "host_removed")
_GAUGES = ("num_hosts",)

_FIELDS = ("name", "dns_lookup_family", "max_hosts", "dns_refresh_rate", "host_ttl")


class DnsCacheSettings:
    """
    A compiled C{DnsCacheConfig}: C{name}, C{family}, C{maxHosts}, and
    C{refreshRate} and C{hostTtl} in seconds.
    """

    def __init__(self, name, family, maxHosts, refreshRate=60.0, hostTtl=300.0):
        self.name = name
        self.family = family
        self.maxHosts = maxHosts
        self.refreshRate = refreshRate
        self.hostTtl = hostTtl

    def key(self):
        return (self.name, self.family, self.maxHosts, self.refreshRate, self.hostTtl)


def compileDnsCacheConfig(message, path):
    """
    @param message: a C{DnsCacheConfig}.
    @return: a L{DnsCacheSettings}.
    """
    checkFields(message, _FIELDS, path)
    if not message.name:
        raise ConfigError("%s.name: value length must be at least 1 characters" % (path,))
    family = DNS_LOOKUP_FAMILIES.get(message.dns_lookup_family, "AUTO")
    maxHosts = message.max_hosts.value if message.HasField("max_hosts") else 1024
    refreshRate, hostTtl = 60.0, 300.0
    if message.HasField("dns_refresh_rate"):
        refreshRate = durationSeconds(message.dns_refresh_rate)
        if refreshRate <= 0.001:
            raise ConfigError("%s.dns_refresh_rate: value must be greater than 1ms" % (path,))
    if message.HasField("host_ttl"):
        hostTtl = durationSeconds(message.host_ttl)
        if hostTtl <= 0:
            raise ConfigError("%s.host_ttl: value must be greater than 0s" % (path,))
    return DnsCacheSettings(message.name, family, maxHosts, refreshRate, hostTtl)


def splitHost(authority, defaultPort):
    """
    C{host[:port]} (or C{[v6]:port}) as C{(host, port)}; the port is
    C{defaultPort} when absent.
    """
    if authority.startswith("["):
        end = authority.find("]")
        if end > 0:
            rest = authority[end + 1:]
            port = int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else defaultPort
            return authority[1:end], port
    host, sep, port = authority.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        return host, int(port)
    return authority, defaultPort


class HostEntry:
    """
    One host of the cache: C{address} C{(ip, port)} once resolved to one,
    else C{None}; C{resolved} once the first answer (or failure) came;
    C{lastUsed}, when a worker last asked for it.
    """

    def __init__(self, host, port, now):
        self.host = host
        self.port = port
        self.address = None
        self.resolved = False
        self.lastUsed = now


class DnsCache:
    """One named DNS cache of a server (main thread owns its writes)."""

    def __init__(self, reactor, mainShard, settings, resolver=None):
        self._reactor = reactor
        self.settings = settings
        self._resolver = resolver if resolver is not None else GetAddrInfoResolver(reactor)
        self._hosts = {}
        self._waiting = {}
        prefix = "dns_cache.%s." % (settings.name,)
        self.stats = StatsStruct(mainShard, prefix, counters=_COUNTERS, gauges=_GAUGES)
        breakers = StatsStruct(mainShard, prefix + "circuit_breakers.",
                               gauges=("rq_pending_open", "rq_pending_remaining"))
        breakers.rq_pending_remaining.set(1024)

    def lookup(self, host, port):
        """
        A resolved L{HostEntry}, or C{None} (any thread: a dict read).
        """
        entry = self._hosts.get((host, port))
        if entry is None or not entry.resolved:
            return None
        entry.lastUsed = self._reactor.seconds()
        return entry

    def load(self, host, port, dispatcher, callback):
        """
        Envoy's C{loadDnsCacheEntry}, from a worker.

        @return: the resolved L{HostEntry}, or C{None} when it is being
            resolved: C{callback(entry)} then runs on C{dispatcher}'s
            thread once it is (C{entry} C{None} past C{max_hosts}).
        """
        entry = self.lookup(host, port)
        if entry is not None:
            return entry
        self._reactor.callFromThread(self._resolve, host, port, dispatcher, callback)
        return None

    def _resolve(self, host, port, dispatcher, callback):
        key = (host, port)
        entry = self._hosts.get(key)
        if entry is not None and entry.resolved:
            dispatcher.post(callback, entry)
            return
        waiting = self._waiting.get(key)
        if waiting is not None:
            waiting.append((dispatcher, callback))
            return
        stats = self.stats
        if len(self._hosts) >= self.settings.maxHosts:
            stats.host_overflow.inc()
            dispatcher.post(callback, None)
            return
        entry = self._hosts[key] = HostEntry(host, port, self._reactor.seconds())
        stats.host_added.inc()
        stats.num_hosts.set(len(self._hosts))
        self._waiting[key] = [(dispatcher, callback)]
        self._query(entry)

    def _query(self, entry):
        self.stats.dns_query_attempt.inc()
        d = self._resolver.resolve(entry.host, self.settings.family)
        d.addCallbacks(self._resolved, self._failed, callbackArgs=(entry,),
                       errbackArgs=(entry,))

    def _refresh(self, entry):
        """Envoy's C{onReResolve}: drop a host unused for C{host_ttl}, else resolve it again."""
        key = (entry.host, entry.port)
        if self._hosts.get(key) is not entry:
            return
        if self._reactor.seconds() - entry.lastUsed >= self.settings.hostTtl:
            del self._hosts[key]
            self.stats.host_removed.inc()
            self.stats.num_hosts.set(len(self._hosts))
            return
        self._query(entry)

    def _family(self, ips):
        family = self.settings.family
        if family == "V4_ONLY":
            return [ip for ip in ips if isIPAddress(ip)]
        if family == "V6_ONLY":
            return [ip for ip in ips if isIPv6Address(ip)]
        return ips

    def _resolved(self, ips, entry):
        self.stats.dns_query_success.inc()
        ips = self._family(ips)
        if ips:
            address = (ips[0], entry.port)
            if address != entry.address:
                self.stats.host_address_changed.inc()
            entry.address = address
        self._finish(entry)

    def _failed(self, reason, entry):
        self.stats.dns_query_failure.inc()
        self._finish(entry)

    def _finish(self, entry):
        entry.resolved = True
        for dispatcher, callback in self._waiting.pop((entry.host, entry.port), ()):
            dispatcher.post(callback, entry)
        self._reactor.callLater(self.settings.refreshRate, self._refresh, entry)


# the server's main stats shard -> {name: DnsCache}
_caches = weakref.WeakKeyDictionary()


def getDnsCache(reactor, mainShard, settings, resolver=None):
    """
    The server's cache of this name, made on first use; a second config
    of the same name must be the same config (Envoy's check).
    """
    byName = _caches.setdefault(mainShard, {})
    cache = byName.get(settings.name)
    if cache is None:
        cache = byName[settings.name] = DnsCache(reactor, mainShard, settings, resolver)
    elif cache.settings.key() != settings.key():
        raise ConfigError("config specified DNS cache '%s' with different settings"
                          % (settings.name,))
    return cache
