# -*- test-case-name: tests.router.test_shadow -*-
"""
Shadow traffic (a route's C{request_mirror_policies}, Envoy's
C{ShadowWriter}): a copy of the request goes to another cluster, its
answer thrown away; the client never waits for it.

As Envoy does, the copy has the request's final headers with C{-shadow}
appended to the host (before any port; not with
C{disable_shadow_host_suffix_append}) and the async client's address
(C{192.0.2.2}) appended to C{x-forwarded-for}, and is sent only for the share of
requests C{runtime_fraction} lets through. Here the copy leaves once the
request is complete (its body held until then), through
L{txenvoy.http.async_client}, so it counts in the shadow cluster's
C{upstream_rq_*} stats.
"""

from txenvoy.config.errors import ConfigError
from txenvoy.config.fields import checkFields
from txenvoy.http.async_client import AsyncHttpClient
from txenvoy.http.headers import RequestHeaders
from txenvoy.runtime import RuntimeFractionalPercent
from txenvoy.stats.per_worker import PerWorker

__all__ = ["MirrorPolicy", "ShadowRequests", "compileMirrorPolicies", "shadowHost"]

_clients = PerWorker(AsyncHttpClient)

#: The downstream address of Envoy's async client streams (a TEST-NET-1
#: address), which its router appends to a shadow's x-forwarded-for.
_ASYNC_CLIENT_ADDRESS = b"192.0.2.2"


class MirrorPolicy:
    """A compiled C{RequestMirrorPolicy}."""

    __slots__ = ("cluster", "fraction", "suffix")

    def __init__(self, cluster, fraction, suffix):
        self.cluster = cluster
        self.fraction = fraction
        self.suffix = suffix


def compileMirrorPolicies(policies, path):
    """Compile a route's C{request_mirror_policies}."""
    out = []
    for i, policy in enumerate(policies):
        itemPath = "%s[%d]" % (path, i)
        checkFields(policy, ("cluster", "runtime_fraction", "disable_shadow_host_suffix_append"),
                    itemPath)
        if not policy.cluster:
            raise ConfigError("%s: Proto constraint validation failed (RequestMirrorPolicy"
                              "ValidationError.Cluster: exactly one of cluster and "
                              "cluster_header is required)" % (itemPath,))
        fraction = (RuntimeFractionalPercent(policy.runtime_fraction)
                    if policy.HasField("runtime_fraction") else None)
        out.append(MirrorPolicy(policy.cluster, fraction,
                                not policy.disable_shadow_host_suffix_append))
    return tuple(out)


def shadowHost(authority):
    """Envoy's C{shadowAppendedHost}: C{a.example:80} becomes C{a.example-shadow:80}."""
    colon = authority.rfind(b":")
    if colon > 0 and b"]" not in authority[colon:] and authority[colon + 1:].isdigit():
        return authority[:colon] + b"-shadow" + authority[colon:]
    return authority + b"-shadow"


class _Discard:
    """The shadow's answer, not wanted."""

    def onSuccess(self, response, body):
        pass

    def onFailure(self, reason):
        pass


_DISCARD = _Discard()


class ShadowRequests:
    """The copies of one request for its route's mirror policies."""

    def __init__(self, dispatcher, policies, snapshot):
        self.dispatcher = dispatcher
        self.policies = [p for p in policies
                         if p.fraction is None or p.fraction.enabled(snapshot)]
        self.request = None
        self.body = []

    def __bool__(self):
        return bool(self.policies)

    def onHeaders(self, request):
        """The request's final head (after the route's changes)."""
        self.request = RequestHeaders(request.method, request.path, request.authority,
                                      request.scheme, headers=request.headers.copy())

    def onData(self, data):
        if data:
            self.body.append(data)

    def send(self, timeout):
        """The request is complete: send every copy."""
        request = self.request
        body = b"".join(self.body)
        client = _clients.get(self.dispatcher)
        for policy in self.policies:
            authority = request.authority or b""
            copy = RequestHeaders(request.method, request.path,
                                  shadowHost(authority) if policy.suffix else authority,
                                  request.scheme, headers=request.headers.copy())
            xff = copy.headers.get(b"x-forwarded-for")
            copy.headers.set(b"x-forwarded-for", _ASYNC_CLIENT_ADDRESS if xff is None
                             else xff + b"," + _ASYNC_CLIENT_ADDRESS)
            client.send(policy.cluster, copy, body, timeout, _DISCARD)
