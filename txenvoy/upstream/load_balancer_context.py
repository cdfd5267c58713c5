# -*- test-case-name: tests.upstream.test_load_balancer_context -*-
"""
What a load balancer may know about the connection or request it picks a
host for (Envoy's C{Upstream::LoadBalancerContext}).

tcp_proxy and the router build one per pick and hand it to
C{ThreadLocalCluster.chooseHost}; the policies that need nothing from it
(round robin, random, least request) never look at it.
"""


class LoadBalancerContext:
    """
    @ivar downstreamConnection: the downstream
        L{txenvoy.network.connection.ServerConnection} (C{localAddress},
        C{localAddressRestored}, C{remoteAddress}), or C{None}.
    @ivar downstreamHeaders: the request's
        L{txenvoy.http.headers.RequestHeaders}, or C{None} for TCP.
    @ivar hashKey: the request's hash from the route's (or tcp_proxy's)
        C{hash_policy}, or C{None}.
    @ivar metadataMatch: the route's C{metadata_match} criteria (see
        L{txenvoy.upstream.metadata_match}), or C{None}.
    @ivar retryHostSelection: on a retry, the request's
        L{txenvoy.upstream.retry_host_selection.RetryHostSelection}; else
        C{None}.
    """

    __slots__ = ("downstreamConnection", "downstreamHeaders", "hashKey", "metadataMatch",
                 "retryHostSelection")

    def __init__(self, downstreamConnection=None, downstreamHeaders=None, hashKey=None,
                 metadataMatch=None, retryHostSelection=None):
        self.downstreamConnection = downstreamConnection
        self.downstreamHeaders = downstreamHeaders
        self.hashKey = hashKey
        self.metadataMatch = metadataMatch
        self.retryHostSelection = retryHostSelection

    def computeHashKey(self):
        """
        Envoy's C{LoadBalancerContext::computeHashKey}: the hash a
        consistent-hash load balancer places the request with, or C{None}
        (it then picks at random).
        """
        return self.hashKey

    def requestHeader(self, name):
        """
        @param name: a lower-case header name (C{bytes} or C{str}).
        @return: the first value of that request header (C{bytes}), or
            C{None} (also for TCP, which has no headers).
        """
        headers = self.downstreamHeaders
        if headers is None:
            return None
        if isinstance(name, str):
            name = name.encode("latin-1")
        if name == b"host" or name == b":authority":
            return headers.authority
        return headers.headers.get(name)

    def __repr__(self):
        return "<LoadBalancerContext %r>" % (self.downstreamConnection,)
