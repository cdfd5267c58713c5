# -*- test-case-name: tests.upstream.test_dns -*-
"""
What DNS clusters (Envoy's C{STRICT_DNS} and C{LOGICAL_DNS}, the
extensions in L{txenvoy.extensions.clusters}) share: the resolver and the
resolution schedule.

Resolution runs on the main thread only: getaddrinfo in the main reactor's
thread pool, re-resolved every C{dns_refresh_rate}. Workers never resolve;
they get the resulting host lists posted to them.

 - C{STRICT_DNS}: every endpoint is resolved on its own schedule and makes
   one host per address returned; a host whose address is unchanged across
   resolutions is kept (with its stats).
 - C{LOGICAL_DNS}: one endpoint, one host, whose address is the first one
   returned; a new answer changes the address of the same host, so
   membership does not churn with round-robin DNS.

A failed resolution keeps the previous hosts and counts C{update_failure}.
"""

import socket

from twisted.internet import defer, threads
from twisted.internet.abstract import isIPAddress, isIPv6Address

from txenvoy.server.logging import componentLogger
from txenvoy.upstream.cluster import PrimaryCluster

log = componentLogger("upstream")

V4_ONLY = "V4_ONLY"
V6_ONLY = "V6_ONLY"
AUTO = "AUTO"
V4_PREFERRED = "V4_PREFERRED"
ALL = "ALL"


class DnsResolutionError(Exception):
    """A name could not be resolved; C{str()} says why."""


def selectAddresses(infos, family):
    """
    Apply Envoy's C{dns_lookup_family} to getaddrinfo answers.

    @param infos: C{[(af, ip)]} in the resolver's order.
    @param family: one of C{AUTO}, C{V4_ONLY}, C{V6_ONLY}, C{V4_PREFERRED},
        C{ALL}.
    @return: the IPs to use, without duplicates, in order.
    """
    v4 = []
    v6 = []
    for af, ip in infos:
        bucket = v6 if af == socket.AF_INET6 else v4
        if ip not in bucket:
            bucket.append(ip)
    if family == V4_ONLY:
        return v4
    if family == V6_ONLY:
        return v6
    if family == V4_PREFERRED:
        return v4 or v6
    if family == ALL:
        seen = []
        for af, ip in infos:
            if ip not in seen:
                seen.append(ip)
        return seen
    # AUTO: IPv6 first, IPv4 when there is none (Envoy's definition).
    return v6 or v4


def _getaddrinfo(name, family):
    af = {V4_ONLY: socket.AF_INET, V6_ONLY: socket.AF_INET6}.get(family, socket.AF_UNSPEC)
    try:
        infos = socket.getaddrinfo(name, None, af, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise DnsResolutionError("%s: %s" % (name, e))
    pairs = []
    for fam, _, _, _, sockaddr in infos:
        ip = sockaddr[0]
        if fam == socket.AF_INET6:
            # Drop a scope id ("fe80::1%eth0"); connectTCP takes the bare IP.
            ip = ip.split("%", 1)[0]
        pairs.append((fam, ip))
    return selectAddresses(pairs, family)


class GetAddrInfoResolver:
    """
    Resolves names with the system's getaddrinfo in the reactor's thread
    pool (Envoy's C{getaddrinfo} DNS resolver).
    """

    def __init__(self, reactor):
        """@param reactor: the main reactor (it must provide a thread pool)."""
        self._reactor = reactor

    def resolve(self, name, family):
        """
        @param name: a DNS name or an IP literal (answered without lookup).
        @param family: a C{dns_lookup_family} name.
        @return: a Deferred firing with a list of IP strings, or failing
            with L{DnsResolutionError}.
        """
        if isIPAddress(name) or isIPv6Address(name):
            return defer.succeed([name])
        return threads.deferToThreadPool(
            self._reactor, self._reactor.getThreadPool(), _getaddrinfo, name, family)


class ResolveTarget:
    """One endpoint of a DNS cluster and its resolution state."""

    def __init__(self, endpoint):
        self.endpoint = endpoint
        self.hosts = []
        self.timer = None
        self.resolved = False
        self.failures = 0
        self.inFlight = None


class DnsClusterBase(PrimaryCluster):
    """
    Shared resolution scheduling of the DNS cluster types
    (L{txenvoy.extensions.clusters.strict_dns},
    L{txenvoy.extensions.clusters.logical_dns}), which say what an answer
    does to membership in C{applyAnswer}.
    """

    def __init__(self, reactor, info, endpoints, mainShard, resolver, rng):
        PrimaryCluster.__init__(self, reactor, info, endpoints, mainShard)
        self._resolver = resolver
        self._rng = rng
        self.targets = [ResolveTarget(ep) for ep in endpoints]

    def start(self):
        if not self.targets:
            self._markInitialized()
            return
        for target in self.targets:
            self._resolve(target)

    def stop(self):
        PrimaryCluster.stop(self)
        for target in self.targets:
            if target.timer is not None and target.timer.active():
                target.timer.cancel()
            target.timer = None
            if target.inFlight is not None:
                # The thread keeps running; its answer is dropped.
                d, target.inFlight = target.inFlight, None
                d.addErrback(lambda _: None)

    def _resolve(self, target):
        target.timer = None
        if self._stopped:
            return
        self.stats.update_attempt.inc()
        ep = target.endpoint
        if log.debugEnabled:
            log.debug("starting async DNS resolution for %s", ep.address)
        d = self._resolver.resolve(ep.address, self.info.dns.lookupFamily)
        target.inFlight = d
        d.addCallbacks(self._resolved, self._failed, callbackArgs=(target, d),
                       errbackArgs=(target, d))

    def _resolved(self, ips, target, d):
        if self._stopped or target.inFlight is not d:
            return
        target.inFlight = None
        target.failures = 0
        if log.debugEnabled:
            log.debug("async DNS resolution complete for %s: %s", target.endpoint.address,
                      ", ".join(map(str, ips)) or "no addresses")
        self.stats.update_success.inc()
        self.applyAnswer(target, list(ips))
        self._schedule(target, self.info.dns.refreshRate)
        self._targetDone(target)

    def _failed(self, failure, target, d):
        if self._stopped or target.inFlight is not d:
            return None
        target.inFlight = None
        target.failures += 1
        self.stats.update_failure.inc()
        dns = self.info.dns
        if dns.failureBaseInterval is not None:
            # Jittered exponential back-off, as Envoy's
            # JitteredExponentialBackOffStrategy.
            ceiling = min(dns.failureMaxInterval,
                          dns.failureBaseInterval * (2 ** target.failures - 1))
            delay = max(0.001, self._rng() * ceiling)
        else:
            delay = dns.refreshRate
        if log.debugEnabled:
            log.debug("DNS refresh rate reset for %s, (failure) refresh rate %d ms: %s",
                      target.endpoint.address, delay * 1000, failure.getErrorMessage())
        self._schedule(target, delay, jitter=False)
        self._targetDone(target)
        return None

    def _schedule(self, target, delay, jitter=True):
        if self._stopped:
            return
        if jitter and self.info.dns.jitter:
            delay += self._rng() * self.info.dns.jitter
        target.timer = self.reactor.callLater(delay, self._resolve, target)

    def _targetDone(self, target):
        target.resolved = True
        if not self.initialized and all(t.resolved for t in self.targets):
            self._markInitialized()

    def applyAnswer(self, target, ips):
        """
        Each cluster kind turns a target's resolved addresses into hosts.

        @param target: the L{ResolveTarget} (C{endpoint}, and C{hosts} it
            made last time).
        @param ips: the addresses DNS returned, in order.
        """
