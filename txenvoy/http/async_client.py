# -*- test-case-name: tests.http.test_async_client -*-
"""
Requests that txenvoy itself sends to a cluster (Envoy's
C{Http::AsyncClient}): an authorization check, a JWKS fetch, a mirrored
request. They take the cluster's load balancer, connection pools and
circuit breakers like any routed request, and count in the cluster's
C{upstream_rq_*} stats, but no downstream stream is behind them.

As Envoy's client does, a request carries C{x-envoy-internal: true} and,
with a timeout, C{x-envoy-expected-rq-timeout-ms}; its response gets
C{x-envoy-upstream-service-time}; a timeout counts in
C{upstream_rq_timeout} and as a 504::

    client = AsyncHttpClient(dispatcher)
    handle = client.send("authz", request, body, timeout, callbacks)
    # later: callbacks.onSuccess(response, body) or callbacks.onFailure(reason)
    handle.cancel()     # gives up; neither is called then
"""

from zope.interface import Interface

from txenvoy.http.conn_pool import poolsFor
from txenvoy.upstream.load_balancer_context import LoadBalancerContext

__all__ = ["AsyncHttpClient", "IAsyncRequestCallbacks", "NO_CLUSTER", "NO_HEALTHY_UPSTREAM",
           "TIMEOUT"]

#: Failure reasons besides the pool's reset reasons (C{overflow}, ...).
NO_CLUSTER = "no_cluster"
NO_HEALTHY_UPSTREAM = "no_healthy_upstream"
TIMEOUT = "timeout"


class IAsyncRequestCallbacks(Interface):
    """Where the outcome of an L{AsyncHttpClient} request goes."""

    def onSuccess(response, body):
        """
        A whole response came (whatever its status).

        @param response: its L{txenvoy.http.headers.ResponseHeaders}.
        @param body: its body, C{bytes}.
        """

    def onFailure(reason):
        """No response: C{reason} is Envoy's reset reason, or L{TIMEOUT}..."""


class _AsyncRequest:
    """One request in flight: the pool's and the codec's callbacks."""

    _handle = None
    _client = None
    _timer = None
    _response = None
    _done = False
    _counted = False
    #: The pool batches downstream writes through a stream's corker; none here.
    corker = None

    _start = 0.0

    def __init__(self, cluster, pool, request, body, callbacks, reactor=None):
        self.reactor = reactor
        self.cluster = cluster
        self.pool = pool
        self.request = request
        self.body = body
        self.callbacks = callbacks
        self._chunks = []

    # The handle.

    def cancel(self):
        """Give up on the request; no callback follows."""
        if self._done:
            return
        self._done = True
        self._release()

    def _release(self):
        self._stopTimer()
        handle = self._handle
        if handle is not None:
            self._handle = None
            handle.cancel()
        client = self._client
        if client is not None:
            self._client = None
            client.resetStream()
        self._uncount()

    def _stopTimer(self):
        timer = self._timer
        if timer is not None:
            self._timer = None
            if timer.active():
                timer.cancel()

    def _uncount(self):
        if self._counted:
            self._counted = False
            self.cluster.stats.upstream_rq_active.dec()

    def _finish(self, outcome, *args):
        if self._done:
            return
        self._done = True
        self._stopTimer()
        self._uncount()
        getattr(self.callbacks, outcome)(*args)

    def onTimeout(self):
        """The request's timeout passed: Envoy's 504."""
        self._timer = None
        if self._done:
            return
        stats = self.cluster.stats
        stats.upstream_rq_timeout.inc()
        self._charge(504)
        self._done = True
        self._release()
        self.callbacks.onFailure(TIMEOUT)

    def _charge(self, status):
        stats = self.cluster.stats
        code, klass = stats.rqCode(status)
        code.inc()
        klass.inc()
        stats.upstream_rq_completed.inc()

    # Pool callbacks.

    def onPoolReady(self, client):
        """A connection: write the request."""
        self._handle = None
        if self._done:
            self.pool._release(client)
            return
        self._client = client
        client.attach(self)
        stats = self.cluster.stats
        stats.upstream_rq_total.inc()
        stats.upstream_rq_active.inc()
        self._counted = True
        self._start = self.reactor.seconds()
        codec = client.codec
        body = self.body
        codec.encodeRequest(self.request, not body)
        if body:
            codec.encodeData(body, True)

    def onPoolFailure(self, reason):
        """No connection."""
        self._handle = None
        self._charge(503)
        self._finish("onFailure", reason)

    # Response callbacks.

    def onResponseHeaders(self, headers, endStream):
        if headers.status >= 200 or headers.status == 101:
            # As Envoy's router adds it to every upstream response.
            headers.headers.add(b"x-envoy-upstream-service-time", b"%d" % (
                int((self.reactor.seconds() - self._start) * 1000),))
            self._response = headers

    def onResponseData(self, data, endStream):
        if data:
            self._chunks.append(data)

    def onResponseTrailers(self, trailers):
        pass

    def onResponseComplete(self):
        self._client = None
        response = self._response
        if response is None or self._done:
            return
        self._charge(response.status)
        self._finish("onSuccess", response, b"".join(self._chunks))

    def onUpstreamReset(self, reason):
        self._client = None
        if not self._done:
            self._charge(503)
        self._finish("onFailure", reason)

    def onAboveWriteBufferHighWatermark(self):
        pass

    def onBelowWriteBufferLowWatermark(self):
        pass


class AsyncHttpClient:
    """
    Sends requests of one worker to its clusters (Envoy's
    C{httpAsyncClientForCluster}).
    """

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher

    def send(self, clusterName, request, body, timeout, callbacks):
        """
        Send C{request} (a L{txenvoy.http.headers.RequestHeaders} whose
        C{authority} is the C{host} written) with C{body} to a host of
        C{clusterName}.

        @param timeout: seconds, or C{None} for none.
        @param callbacks: an L{IAsyncRequestCallbacks}; it may be called
            before this returns (no such cluster, no healthy host).
        @return: a handle with C{cancel()}.
        """
        dispatcher = self.dispatcher
        entries = request.headers
        entries.set(b"x-envoy-internal", b"true")
        if timeout:
            entries.set(b"x-envoy-expected-rq-timeout-ms", b"%d" % (round(timeout * 1000),))
        if body:
            entries.set(b"content-length", b"%d" % (len(body),))
        cluster = dispatcher.clusterManager.getThreadLocalCluster(clusterName)
        if cluster is None:
            failed = _AsyncRequest(None, None, request, body, callbacks)
            failed._finish("onFailure", NO_CLUSTER)
            return failed
        host = cluster.chooseHost(LoadBalancerContext(None, request))
        pool = poolsFor(cluster).poolFor(host) if host is not None else None
        outgoing = _AsyncRequest(cluster, pool, request, body, callbacks, dispatcher.reactor)
        if pool is None:
            cluster.stats.upstream_cx_none_healthy.inc()
            outgoing._charge(503)
            outgoing._finish("onFailure", NO_HEALTHY_UPSTREAM)
            return outgoing
        if timeout:
            outgoing._timer = dispatcher.reactor.callLater(timeout, outgoing.onTimeout)
        outgoing._handle = pool.newStream(outgoing)
        return outgoing
