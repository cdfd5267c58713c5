# -*- test-case-name: tests.grpc.test_async_client -*-
"""
Unary gRPC calls from a worker or the main thread, with grpcio: OTLP
C{Export} today, and every other Envoy service a C{GrpcService} names.

grpcio runs its own I/O threads and completion queue; a call started with
C{future()} returns at once, so the worker never waits. Its completion
arrives on a grpcio thread, and is handed back to the worker with
C{dispatcher.post} (the reactor's C{callFromThread}): only the worker's
own thread touches the reporter, its counters and its Deferreds. This
keeps the calls off the data path without a second HTTP/2 stack in
txenvoy (the OTLP protocol, not the proxy's codecs, is what matters here),
and a channel reconnects by itself when the collector comes back.
"""

from twisted.internet import defer

from txenvoy.config.errors import ConfigError, UnsupportedField
from txenvoy.config.fields import checkFields, durationSeconds

_GRPC_SERVICE_FIELDS = frozenset(("envoy_grpc", "timeout", "initial_metadata"))
_ENVOY_GRPC_FIELDS = frozenset(("cluster_name", "authority"))


class EnvoyGrpcTarget:
    """
    A compiled C{GrpcService} with C{envoy_grpc}: the cluster, the call
    timeout (5 s when unset), the C{initial_metadata} and the authority
    (the cluster's name unless set).
    """

    def __init__(self, clusterName, timeout, metadata, authority):
        self.clusterName = clusterName
        self.timeout = timeout
        self.metadata = metadata
        self.authority = authority


def compileEnvoyGrpc(service, path, bootstrap):
    """
    @param service: an C{envoy.config.core.v3.GrpcService}.
    @param bootstrap: the C{Bootstrap}, to check the cluster, or C{None}.
    @return: an L{EnvoyGrpcTarget}.
    """
    checkFields(service, _GRPC_SERVICE_FIELDS, path)
    if not service.HasField("envoy_grpc"):
        raise UnsupportedField(path, "only envoy_grpc")
    checkFields(service.envoy_grpc, _ENVOY_GRPC_FIELDS, path + ".envoy_grpc")
    cluster = service.envoy_grpc.cluster_name
    if bootstrap is not None and cluster not in {c.name for c in
                                                 bootstrap.static_resources.clusters}:
        raise ConfigError("%s.envoy_grpc.cluster_name: unknown cluster '%s'" % (path, cluster))
    timeout = durationSeconds(service.timeout) if service.HasField("timeout") else 5.0
    metadata = tuple((m.key.lower(), m.value) for m in service.initial_metadata)
    return EnvoyGrpcTarget(cluster, timeout, metadata, service.envoy_grpc.authority or cluster)

class GrpcCallError(Exception):
    """The call ended with a non-OK gRPC status (C{code}, C{details})."""

    def __init__(self, code, details):
        Exception.__init__(self, "%s: %s" % (code, details))
        self.code = code
        self.details = details


class GrpcCollector:
    """
    Sends serialized request messages to C{method} on a collector cluster's
    host, one channel per collector address.

    @ivar clusterName: the C{envoy_grpc.cluster_name}.
    """

    def __init__(self, dispatcher, clusterName, method, timeout, metadata=(), userAgent=None,
                 authority=None):
        self._dispatcher = dispatcher
        self.clusterName = clusterName
        self._method = method
        self._timeout = timeout
        self._metadata = tuple(metadata)
        options = []
        if userAgent:
            options.append(("grpc.primary_user_agent", userAgent))
        if authority:
            options.append(("grpc.default_authority", authority))
        self._options = options
        self._channels = {}

    def host(self):
        """@return: a collector C{(ip, port)}, or C{None}."""
        manager = self._dispatcher.clusterManager
        cluster = manager.getThreadLocalCluster(self.clusterName) if manager else None
        if cluster is None:
            return None
        host = cluster.chooseHost()
        return None if host is None else host.address

    def _call(self, address):
        call = self._channels.get(address)
        if call is None:
            import grpc

            ip, port = address
            target = "[%s]:%d" % (ip, port) if ":" in ip else "%s:%d" % (ip, port)
            channel = grpc.insecure_channel(target, options=self._options)
            call = channel.unary_unary(self._method)
            self._channels[address] = call = (channel, call)
        return call[1]

    def post(self, address, body):
        """
        Start the call (never blocks).

        @return: a Deferred firing on the worker's thread with 200 for an
            OK status, or failing with L{GrpcCallError}.
        """
        return self.call(address, body).addCallback(lambda _: 200)

    def call(self, address, body, metadata=()):
        """
        Start the call (never blocks); C{metadata} is sent after the
        configured C{initial_metadata}.

        @return: a Deferred firing on the worker's thread with the
            serialized response message for an OK status, or failing with
            L{GrpcCallError}.
        """
        metadata = self._metadata + tuple(metadata)
        future = self._call(address).future(body, timeout=self._timeout,
                                            metadata=metadata or None)
        d = defer.Deferred(lambda _: future.cancel())
        post = self._dispatcher.post

        def done(f):
            # A grpcio thread: read the outcome here, act on the worker.
            try:
                answer = f.result()
            except Exception as e:
                code = getattr(e, "code", lambda: None)()
                details = getattr(e, "details", lambda: str(e))()
                post(_fire, d, GrpcCallError(code, details))
            else:
                post(_fire, d, answer)

        future.add_done_callback(done)
        return d

    def close(self):
        """Close every channel."""
        channels, self._channels = self._channels, {}
        for channel, _ in channels.values():
            channel.close()


def _fire(d, result):
    if d.called:
        return
    if isinstance(result, Exception):
        d.errback(result)
    else:
        d.callback(result)


class GrpcServiceClient:
    """
    A compiled C{GrpcService} calling one unary C{method} of an Envoy
    service from the workers (ext_authz's C{Check}, rate limit's
    C{ShouldRateLimit}): one L{GrpcCollector} per worker, a host of the
    cluster per call, and Envoy's C{x-envoy-internal} and
    C{x-envoy-expected-rq-timeout-ms} metadata.
    """

    def __init__(self, target, method, responseType, timeout=None):
        from txenvoy.stats.per_worker import PerWorker

        self.target = target
        self._responseType = responseType
        timeout = target.timeout if timeout is None else timeout
        self.timeout = timeout
        self._metadata = (("x-envoy-internal", "true"),
                          ("x-envoy-expected-rq-timeout-ms", "%d" % (round(timeout * 1000),)))
        self._clients = PerWorker(lambda dispatcher: GrpcCollector(
            dispatcher, target.clusterName, method, timeout, target.metadata,
            authority=target.authority))

    def call(self, dispatcher, message):
        """
        Start the call on C{dispatcher}'s worker (never blocks).

        @return: a Deferred firing there with the response message, or
            failing with L{GrpcCallError} (no host, a non-OK status, the
            timeout); cancelling it abandons the call.
        """
        client = self._clients.get(dispatcher)
        address = client.host()
        if address is None:
            return defer.fail(GrpcCallError(None, "no healthy upstream"))
        d = client.call(address, message.SerializeToString(), self._metadata)
        return d.addCallback(self._responseType.FromString)


class MainThreadDispatcher:
    """
    The main reactor as the dispatcher of a main-thread exporter (access
    logs, stats sinks): grpcio completions are posted to it.
    """

    clusterManager = None

    def __init__(self, reactor):
        self.reactor = reactor

    def post(self, f, *args):
        self.reactor.callFromThread(f, *args)


def mainThreadHosts(clusterManager, name):
    """
    A host chooser for the main thread (which has no thread-local
    clusters): the primary cluster's hosts in turn.

    @return: C{choose() -> (ip, port)} or C{None}.
    """
    chooseHost = mainThreadHostChooser(clusterManager, name)

    def choose():
        host = chooseHost()[1]
        return host.address if host is not None else None

    return choose


def mainThreadHostChooser(clusterManager, name):
    """
    As L{mainThreadHosts}, with the cluster and the host themselves.

    @return: C{choose() -> (PrimaryCluster, Host)}, or C{(None, None)}
        when the cluster is unknown or has no host.
    """
    turn = [0]

    def choose():
        cluster = clusterManager.get(name) if clusterManager is not None else None
        hosts = getattr(cluster, "hosts", ()) if cluster is not None else ()
        if not hosts:
            return None, None
        turn[0] += 1
        return cluster, hosts[turn[0] % len(hosts)]

    return choose
