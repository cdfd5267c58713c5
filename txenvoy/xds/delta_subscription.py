# -*- test-case-name: tests.xds.test_delta_subscription,tests.e2e.test_grpc_xds -*-
"""
The incremental gRPC xDS stream (C{DELTA_GRPC}; Envoy's C{NewGrpcMuxImpl}
and C{DeltaSubscriptionState}).

Per type it keeps the resources held (name to version and message), the
names subscribed (none for the wildcard LDS and CDS) and the nonce. The
first request of each stream subscribes to the names and lists the
versions held (C{initial_resource_versions}) so the server sends only what
changed; later requests carry C{resource_names_subscribe} and
C{resource_names_unsubscribe} as watches come and go. A response's
resources and C{removed_resources} are folded into the set held, and the
whole set goes to the subscriptions with the C{system_version_info}: the
resource handlers are the same as for the state of the world. The
response is ACKed with its nonce alone, or NACKed with an C{error_detail};
a NACKed response changes nothing held.
"""

from txenvoy.xds.grpc_mux import INTERNAL, MuxStream, _TypeState
from txenvoy.xds.resources import decodeResource, messageClass

class _DeltaState(_TypeState):
    def __init__(self, typeUrl):
        _TypeState.__init__(self, typeUrl)
        self.held = {}          # name: (version, message)
        self.subscribe = set()
        self.unsubscribe = set()
        self.initialSent = False


class DeltaGrpcMux(MuxStream):
    """The incremental stream."""

    delta = True

    def _newState(self, typeUrl):
        return _DeltaState(typeUrl)

    def _watchChanged(self, state, subscription, added):
        names = set(subscription.names)
        if added:
            state.subscribe |= names
            state.unsubscribe -= names
        else:
            still = set(state.names())
            gone = names - still
            state.unsubscribe |= gone
            state.subscribe -= gone

    def _streamEstablished(self):
        for state in self.types.values():
            state.nonce = ""
            state.errorDetail = None
            state.initialSent = False

    def _request(self, state):
        from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryRequest

        request = DeltaDiscoveryRequest(type_url=state.typeUrl)
        if not state.initialSent:
            state.initialSent = True
            request.resource_names_subscribe.extend(state.names())
            for name, (version, _) in sorted(state.held.items()):
                request.initial_resource_versions[name] = version
            state.subscribe.clear()
            state.unsubscribe.clear()
        else:
            request.response_nonce = state.nonce
            request.resource_names_subscribe.extend(sorted(state.subscribe))
            request.resource_names_unsubscribe.extend(sorted(state.unsubscribe))
            state.subscribe.clear()
            state.unsubscribe.clear()
            if state.errorDetail is not None:
                request.error_detail.code = INTERNAL
                request.error_detail.message = state.errorDetail
                state.errorDetail = None
        return request

    def _onResponse(self, response):
        state = self._stateOf(response)
        if state is None:
            return
        try:
            held = self._fold(state, response)
        except ValueError as e:
            detail = self._refuse(state, str(e))
        else:
            detail = self._deliver(state, [(name, m) for name, (_, m) in held.items()],
                                   response.system_version_info)
            if detail is None:
                state.held = held
        state.errorDetail = detail
        self._queueRequest(state.typeUrl)

    def _fold(self, state, response):
        """The set held once the response applies (C{ValueError} if it cannot)."""
        cls = messageClass(state.typeUrl)
        held = dict(state.held)
        for entry in response.resources:
            if not entry.HasField("resource"):
                # A name the server only confirms (no resource): nothing to apply.
                continue
            held[entry.name] = (entry.version, decodeResource(entry.resource, state.typeUrl,
                                                              cls))
        for name in response.removed_resources:
            held.pop(name, None)
        return held
