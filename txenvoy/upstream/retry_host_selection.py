# -*- test-case-name: tests.upstream.test_retry_host_selection -*-
"""
Host selection on retries (the route's C{retry_policy.retry_host_predicate}
and C{host_selection_retry_max_attempts}, Envoy's C{RetryStateImpl} host
predicates with C{ZoneAwareLoadBalancerBase::chooseHost}'s loop):

 - C{envoy.retry_host_predicates.previous_hosts}: a retry avoids the
   hosts already attempted for the request;
 - C{envoy.retry_host_predicates.omit_canary_hosts}: a retry avoids hosts
   whose C{envoy.lb} metadata says C{canary: true}.

On a retry, a host a predicate rejects is picked again, up to
C{host_selection_retry_max_attempts} more times (1 by default); the last
host picked is used if none passes. The first attempt is never filtered.

C{retry_priority} C{envoy.retry_priorities.previous_priorities}
(L{PreviousPriorities}) moves a retry's load away from the priority
levels already attempted.
"""

from txenvoy.config.errors import ConfigError, UnsupportedExtension
from txenvoy.config.registry import unpackAny

PREVIOUS_HOSTS = "previous_hosts"
OMIT_CANARY_HOSTS = "omit_canary_hosts"

#: C{@type} and extension names of the predicates, by kind.
PREDICATES = {
    "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate": PREVIOUS_HOSTS,
    "envoy.retry_host_predicates.previous_hosts": PREVIOUS_HOSTS,
    "envoy.extensions.retry.host.omit_canary_hosts.v3.OmitCanaryHostsPredicate":
        OMIT_CANARY_HOSTS,
    "envoy.retry_host_predicates.omit_canary_hosts": OMIT_CANARY_HOSTS,
}


def compilePredicates(predicates, path):
    """
    @param predicates: the C{retry_host_predicate} list.
    @return: the kinds (L{PREVIOUS_HOSTS}, L{OMIT_CANARY_HOSTS}) in order.
    @raise UnsupportedExtension: for any other predicate.
    """
    kinds = []
    for i, p in enumerate(predicates):
        typeName = p.typed_config.type_url.rsplit("/", 1)[-1]
        kind = PREDICATES.get(typeName) or (None if typeName else PREDICATES.get(p.name))
        if kind is None:
            raise UnsupportedExtension("%s[%d]" % (path, i), typeName, p.name)
        kinds.append(kind)
    return tuple(kinds)


class RetryHostSelection:
    """
    One request's retry host predicates (the router keeps it for the
    request and hands it to the load balancer context of each retry).

    @ivar hostSelectionRetryCount: extra picks allowed when a host is
        rejected.
    """

    __slots__ = ("_previous", "_omitCanary", "_attempted", "hostSelectionRetryCount",
                 "retryPriority")

    def __init__(self, kinds, maxAttempts=1, retryPriority=None):
        """
        @param retryPriority: a L{PreviousPriorities}, or C{None}.
        """
        self._previous = PREVIOUS_HOSTS in kinds
        self._omitCanary = OMIT_CANARY_HOSTS in kinds
        self._attempted = []
        self.hostSelectionRetryCount = maxAttempts
        self.retryPriority = retryPriority

    def onHostAttempted(self, host):
        """An attempt goes to C{host}."""
        if self._previous:
            self._attempted.append(host)
        if self.retryPriority is not None:
            self.retryPriority.onHostAttempted(host)

    def shouldSelectAnotherHost(self, host):
        """Whether a predicate rejects C{host} for this retry."""
        if self._omitCanary and host.canary:
            return True
        return self._previous and host in self._attempted


def chooseHostWithRetryPredicates(loadBalancer, context, selection):
    """
    Envoy's C{ZoneAwareLoadBalancerBase::chooseHost}: pick again while
    C{selection} rejects the host, up to its C{hostSelectionRetryCount}
    more times; the last pick stands.
    """
    host = None
    choose = loadBalancer.chooseHost
    priority = selection.retryPriority
    availability = getattr(loadBalancer, "priorityAvailability", None)
    if priority is not None and availability is not None:
        load = priority.priorityLoad(availability())
        if load is not None:
            def choose(context, load=load):
                return loadBalancer.chooseHostWithPriorityLoad(load[0], load[1], context)
    for _ in range(selection.hostSelectionRetryCount + 1):
        host = choose(context)
        if host is None or not selection.shouldSelectAnotherHost(host):
            return host
    return host


_PREVIOUS_PRIORITIES_TYPE = ("envoy.extensions.retry.priority.previous_priorities.v3."
                             "PreviousPrioritiesConfig")


def compileRetryPriority(retryPriority, path):
    """
    @param retryPriority: the C{retry_priority} message.
    @return: its C{update_frequency}.
    @raise ConfigError: for a frequency below 1.
    @raise UnsupportedExtension: for another retry priority.
    """
    typeName = retryPriority.typed_config.type_url.rsplit("/", 1)[-1]
    if typeName != _PREVIOUS_PRIORITIES_TYPE:
        raise UnsupportedExtension(path, typeName, retryPriority.name)
    msg = unpackAny(retryPriority.typed_config, path + ".typed_config")
    if msg.update_frequency < 1:
        raise ConfigError("%s.typed_config.update_frequency: value must be greater than 0"
                          % (path,))
    return msg.update_frequency


class PreviousPriorities:
    """
    C{envoy.retry_priorities.previous_priorities} (Envoy's
    C{PreviousPrioritiesRetryPriority}): after every C{update_frequency}
    attempts, the priorities already attempted get no load; the others
    share it by their availability. When none is left, the attempts are
    forgotten and the original load applies again.
    """

    __slots__ = ("updateFrequency", "_attempted", "_excluded", "_load")

    def __init__(self, updateFrequency):
        self.updateFrequency = updateFrequency
        self._attempted = []
        self._excluded = set()
        self._load = None

    def onHostAttempted(self, host):
        self._attempted.append(host)

    def priorityLoad(self, availability):
        """
        @param availability: per level, C{(healthy, degraded)} availability
            in percent (the load balancer's
            C{priorityAvailability()}).
        @return: C{(healthyLoad, degradedLoad)} to use, or C{None} for the
            original load.
        """
        n = len(self._attempted)
        if n < self.updateFrequency:
            return None
        if n % self.updateFrequency == 0:
            for h in self._attempted:
                self._excluded.add(h.priority)
            load = self._adjusted(availability)
            if load is None:
                self._attempted = []
                load = self._adjusted(availability)
            self._load = load
        return self._load

    def _adjusted(self, availability):
        health = [0 if i in self._excluded else h for i, (h, _) in enumerate(availability)]
        degraded = [0 if i in self._excluded else d for i, (_, d) in enumerate(availability)]
        total = min(100, sum(health) + sum(degraded))
        if total == 0:
            return None
        healthyLoad = [0] * len(health)
        degradedLoad = [0] * len(degraded)
        remaining = 100
        while remaining:
            for loads, avail in ((healthyLoad, health), (degradedLoad, degraded)):
                for i, a in enumerate(avail):
                    delta = min(remaining, a * 100 // total)
                    loads[i] += delta
                    remaining -= delta
        return healthyLoad, degradedLoad
