# -*- test-case-name: tests.xds.test_grpc_mux -*-
"""
The state-of-the-world gRPC xDS stream (Envoy's C{GrpcMuxImpl}): one
stream to a control plane carrying one resource type (a per-type
C{api_config_source}) or all of them (C{ads_config}).

Per type it keeps what Envoy keeps: the last accepted C{version_info}, the
last C{nonce} received, the names subscribed (none for the wildcard LDS
and CDS). A response is decoded, handed to the type's subscriptions, and
answered: an ACK carries the new version and the response's nonce; a
NACK the previous version, the nonce and an C{error_detail} (code 13,
INTERNAL) whose message names the problem.

The node goes on the first request of each stream, and on every one
unless C{set_node_on_first_message_only}. A stream that ends or cannot be
opened is retried after Envoy's jittered exponential backoff (500 ms
doubling to 30 s), and the first request of the new stream carries the
last accepted version so the server can skip what the proxy already has.
With C{rate_limit_settings} requests draw from a token bucket; those that
wait count C{control_plane.rate_limit_enforced} and show in
C{control_plane.pending_requests}. C{control_plane.connected_state} is 1
while a stream is open.

grpcio runs the stream (L{txenvoy.grpc.streaming}); every response is
handled on the main reactor, never on a worker.
"""

import random

from twisted.logger import Logger

from txenvoy.grpc.streaming import StreamingCall, openChannel
from txenvoy.xds.resources import decodeResources
from txenvoy.xds.subscription import deliverAll, refuseAll

log = Logger(namespace="config")

#: Envoy's C{RETRY_INITIAL_DELAY_MS} and C{RETRY_MAX_DELAY_MS} for xDS streams.
RETRY_INITIAL_DELAY = 0.5
RETRY_MAX_DELAY = 30.0

#: google.rpc.Code INTERNAL, as Envoy NACKs.
INTERNAL = 13

ADS_METHOD = ("/envoy.service.discovery.v3.AggregatedDiscoveryService/"
              "StreamAggregatedResources")


class JitteredBackoff:
    """
    Envoy's C{JitteredExponentialBackOffStrategy}: a random delay below
    an interval that starts at C{base} and doubles up to C{maximum};
    L{reset} once the stream works again.
    """

    def __init__(self, base=RETRY_INITIAL_DELAY, maximum=RETRY_MAX_DELAY, random=random.random):
        self._base = base
        self._maximum = maximum
        self._random = random
        self._next = base

    def next(self):
        interval = self._next
        self._next = interval * 2 if interval < self._maximum / 2 else self._maximum
        return min(self._random() * interval, self._maximum)

    def reset(self):
        self._next = self._base


class TokenBucket:
    """
    C{rate_limit_settings}: C{max_tokens} (100 unless set) refilled at
    C{fill_rate} per second (10 unless set), starting full.
    """

    def __init__(self, clock, maxTokens=100, fillRate=10.0):
        self._clock = clock
        self._max = maxTokens
        self._rate = fillRate
        self._tokens = float(maxTokens)
        self._last = clock.seconds()

    def _refill(self):
        now = self._clock.seconds()
        self._tokens = min(self._max, self._tokens + (now - self._last) * self._rate)
        self._last = now

    def consume(self):
        self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def nextToken(self):
        """Seconds until a token is there."""
        self._refill()
        return max(0.0, (1 - self._tokens) / self._rate)


class ControlPlaneTarget:
    """
    Where a stream goes: an C{envoy_grpc} cluster's hosts in turn (the
    cluster manager's main-thread view), one grpcio channel per address;
    with C{tunnel}, each through a L{txenvoy.xds.tls_tunnel.TlsTunnel} on
    C{reactor} (TLS that verifies nothing, as Envoy's without a
    validation context).
    """

    def __init__(self, clusterManager, clusterName, authority=None, userAgent=None,
                 metadata=(), credentials=None, tlsName=None, reactor=None, tunnel=False):
        from txenvoy.grpc.async_client import mainThreadHostChooser

        self.clusterName = clusterName
        self._nextHost = mainThreadHostChooser(clusterManager, clusterName)
        self._authority = authority
        self._userAgent = userAgent
        self.metadata = tuple(metadata)
        self._credentials = credentials
        self._tlsName = tlsName
        self._reactor = reactor
        self._tunnel = tunnel
        self._channels = {}
        self._tunnels = {}

    def channel(self):
        """A channel to the next host, or C{None} when the cluster has none."""
        cluster, host = self._nextHost()
        if host is None:
            return None
        address = host.address
        channel = self._channels.get(address)
        if channel is None:
            target, credentials = address, self._credentials
            if self._tunnel:
                from txenvoy.xds.tls_tunnel import TlsTunnel

                tunnel = self._tunnels[address] = TlsTunnel(
                    self._reactor, cluster.info.transportSocket, host,
                    connectTimeout=cluster.info.connectTimeout)
                target, credentials = tunnel.listen(), None
            channel = self._channels[address] = openChannel(
                target, userAgent=self._userAgent, authority=self._authority,
                credentials=credentials, tlsName=self._tlsName)
        return channel

    def close(self):
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            channel.close()
        tunnels, self._tunnels = self._tunnels, {}
        for tunnel in tunnels.values():
            tunnel.close()


class _TypeState:
    """What the stream keeps for one type URL."""

    def __init__(self, typeUrl):
        self.typeUrl = typeUrl
        self.subscriptions = []
        self.version = ""
        self.nonce = ""
        self.errorDetail = None

    def names(self):
        if any(not s.names for s in self.subscriptions):
            return []
        names = set()
        for s in self.subscriptions:
            names.update(s.names)
        return sorted(names)


class MuxStream:
    """
    What the state-of-the-world and the delta streams share: opening the
    stream, the node, the backoff, the rate limit and the stats.
    Subclasses build requests (L{_request}) and handle responses
    (L{_onResponse}).
    """

    method = ADS_METHOD

    def __init__(self, reactor, target, node, scope, setNodeOnFirstMessageOnly=False,
                 rateLimit=None, backoff=None, method=None, callFactory=StreamingCall,
                 validators=()):
        """
        @param target: a L{ControlPlaneTarget}.
        @param node: the C{envoy.config.core.v3.Node} to send.
        @param scope: the C{control_plane.} stats scope.
        @param rateLimit: a L{TokenBucket}, or C{None}.
        @param callFactory: makes the call (L{StreamingCall}'s signature).
        @param validators: the L{txenvoy.interfaces.IConfigValidator}s of
            C{config_validators}, run on each update of their type before
            it applies (Envoy's C{CustomConfigValidators}).
        """
        self.reactor = reactor
        self._callFactory = callFactory
        self.target = target
        self.node = node
        if method is not None:
            self.method = method
        self._nodeFirstOnly = setNodeOnFirstMessageOnly
        self._rateLimit = rateLimit
        self._backoff = backoff or JitteredBackoff()
        self._validators = tuple(validators)
        self.connected = scope.gauge("connected_state")
        self.rateLimitEnforced = scope.counter("rate_limit_enforced")
        self.pending = scope.gauge("pending_requests")
        self.types = {}
        self._queue = []
        self._call = None
        self._firstRequest = True
        self._retry = None
        self._drainTimer = None
        self._running = False

    # The subscriptions' side.

    def watch(self, subscription):
        state = self.types.get(subscription.typeUrl)
        if state is None:
            state = self.types[subscription.typeUrl] = self._newState(subscription.typeUrl)
        state.subscriptions.append(subscription)
        self._watchChanged(state, subscription, added=True)
        if not self._running:
            self.start()
        else:
            self._queueRequest(subscription.typeUrl)

    def unwatch(self, subscription):
        state = self.types.get(subscription.typeUrl)
        if state is None or subscription not in state.subscriptions:
            return
        state.subscriptions.remove(subscription)
        self._watchChanged(state, subscription, added=False)
        if not any(s.subscriptions for s in self.types.values()):
            # Nothing is watched any more: the stream closes.
            self.stop()
            return
        self._queueRequest(subscription.typeUrl)

    def _newState(self, typeUrl):
        return _TypeState(typeUrl)

    def _watchChanged(self, state, subscription, added):
        """A subclass's chance to note the names a watch adds or drops."""

    # The stream.

    def start(self):
        self._running = True
        if self._call is None and self._retry is None:
            self._establish()

    def stop(self):
        self._running = False
        for timer in (self._retry, self._drainTimer):
            if timer is not None and timer.active():
                timer.cancel()
        self._retry = self._drainTimer = None
        call, self._call = self._call, None
        if call is not None:
            call.cancel()
        self.connected.set(0)
        self.target.close()

    def _establish(self):
        self._retry = None
        if not self._running:
            return
        channel = self.target.channel()
        if channel is None:
            log.warn("xDS stream: cluster '{cluster}' has no host", cluster=self.target.clusterName)
            self._failed()
            return
        from envoy.service.discovery.v3 import discovery_pb2

        responseClass = (discovery_pb2.DeltaDiscoveryResponse if self.delta
                         else discovery_pb2.DiscoveryResponse)
        self._call = call = self._callFactory(
            self.reactor.callFromThread, channel, self.method,
            responseDeserializer=responseClass.FromString, metadata=self.target.metadata)
        call.start(self._onMessage, self._onClose)
        self.connected.set(1)
        self._firstRequest = True
        self._streamEstablished()
        self._queue = []
        for typeUrl in self.types:
            self._queueRequest(typeUrl)

    def _streamEstablished(self):
        """
        What a new stream starts from: as Envoy, the versions held, and
        neither the old stream's nonces nor its last error.
        """
        for state in self.types.values():
            state.nonce = ""
            state.errorDetail = None

    def _onMessage(self, response):
        self._backoff.reset()
        self._onResponse(response)

    def _onClose(self, code, details):
        self._call = None
        log.warn("{method} gRPC config stream to {cluster} closed: {code}, {details}",
                 method=self.method.rsplit("/", 1)[-1], cluster=self.target.clusterName,
                 code=code, details=details)
        self._failed()

    def _failed(self):
        self.connected.set(0)
        for state in self.types.values():
            for subscription in state.subscriptions:
                subscription.onConnectionFailure()
        if self._running:
            self._retry = self.reactor.callLater(self._backoff.next(), self._establish)

    def _stateOf(self, response):
        """The type's state, its nonce noted; C{None} (logged) for a type not asked for."""
        state = self.types.get(response.type_url)
        if state is None:
            log.warn("Ignoring the message for type URL {type} as it has no current "
                     "subscribers.", type=response.type_url)
            return None
        state.nonce = response.nonce
        state.errorDetail = None
        return state

    def _validate(self, typeUrl, names):
        """Run the config validators of C{typeUrl} (C{ValueError} refuses the update)."""
        for validator in self._validators:
            if validator.typeUrl == typeUrl:
                validator.validate(names)

    def _refuse(self, state, detail):
        return refuseAll(state.subscriptions, detail)

    def _deliver(self, state, named, version):
        return deliverAll(state.subscriptions, named, version)

    def _queueRequest(self, typeUrl):
        if self._call is None:
            # Sent anew when the stream is back.
            return
        self._queue.append(typeUrl)
        self._drain()

    def _drain(self):
        self._drainTimer = None
        while self._queue and self._call is not None:
            if self._rateLimit is not None and not self._rateLimit.consume():
                self.rateLimitEnforced.inc()
                self.pending.set(len(self._queue))
                if self._drainTimer is None:
                    self._drainTimer = self.reactor.callLater(self._rateLimit.nextToken(),
                                                              self._drain)
                return
            typeUrl = self._queue.pop(0)
            state = self.types.get(typeUrl)
            if state is None:
                continue
            request = self._request(state)
            if request is None:
                continue
            if self._firstRequest or not self._nodeFirstOnly:
                request.node.CopyFrom(self.node)
            self._firstRequest = False
            self._call.send(request)
        self.pending.set(len(self._queue))


class GrpcMux(MuxStream):
    """The state-of-the-world stream."""

    delta = False

    def _request(self, state):
        from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest

        request = DiscoveryRequest(type_url=state.typeUrl, version_info=state.version,
                                   response_nonce=state.nonce)
        request.resource_names.extend(state.names())
        if state.errorDetail is not None:
            request.error_detail.code = INTERNAL
            request.error_detail.message = state.errorDetail
        return request

    def _onResponse(self, response):
        state = self._stateOf(response)
        if state is None:
            return
        if not state.subscriptions:
            if len(response.resources) == 0:
                state.version = response.version_info
            self._queueRequest(state.typeUrl)
            return
        try:
            resources = decodeResources(response.resources, state.typeUrl)
            self._validate(state.typeUrl, [_nameOf(r) for r in resources])
        except ValueError as e:
            detail = self._refuse(state, str(e))
        else:
            detail = self._deliver(state, [(_nameOf(r), r) for r in resources],
                                   response.version_info)
        if detail is None:
            state.version = response.version_info
        else:
            state.errorDetail = detail
        self._queueRequest(state.typeUrl)


def _nameOf(resource):
    return getattr(resource, "name", None) or getattr(resource, "cluster_name", "")
