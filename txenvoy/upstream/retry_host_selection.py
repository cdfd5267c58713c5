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
"""

from txenvoy.config.errors import UnsupportedExtension

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

    __slots__ = ("_previous", "_omitCanary", "_attempted", "hostSelectionRetryCount")

    def __init__(self, kinds, maxAttempts=1):
        self._previous = PREVIOUS_HOSTS in kinds
        self._omitCanary = OMIT_CANARY_HOSTS in kinds
        self._attempted = []
        self.hostSelectionRetryCount = maxAttempts

    def onHostAttempted(self, host):
        """An attempt goes to C{host}."""
        if self._previous:
            self._attempted.append(host)

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
    for _ in range(selection.hostSelectionRetryCount + 1):
        host = loadBalancer.chooseHost(context)
        if host is None or not selection.shouldSelectAnotherHost(host):
            return host
    return host
