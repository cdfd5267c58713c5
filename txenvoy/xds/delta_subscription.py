# -*- test-case-name: tests.xds.test_delta_subscription,tests.e2e.test_grpc_xds -*-
"""
The incremental gRPC xDS stream (C{DELTA_GRPC}; Envoy's C{NewGrpcMuxImpl},
C{DeltaSubscriptionState} and the delta half of its C{WatchMap}).

Per type it keeps the resources held (name to version and message), the
names subscribed (none for the wildcard LDS and CDS) and the nonce. The
first request of each stream subscribes to the names and lists the
versions held (C{initial_resource_versions}) so the server sends only what
changed; later requests carry C{resource_names_subscribe} and
C{resource_names_unsubscribe} as watches come and go.

A response is checked as Envoy checks it before anything applies: a name
twice among the resources, or among the resources and the removals, and
an entry whose C{Any} is not of the response's type (an entry without a
resource included) NACK it whole. An entry without a resource whose
version is the one held is a heartbeat and changes nothing. An entry with
C{aliases} and no resource is an unresolved alias, which only VHDS
(on-demand virtual hosts) answers; for the types txenvoy subscribes to it
is refused by name. Aliases beside a resource are ignored: the resource
applies under its name.

Resources of names not subscribed are dropped unless the type is
wildcard. A removal drops a resource from what is held, and from the
versions a new stream lists; RDS and SDS ignore removals (logged), as
Envoy's C{RdsRouteConfigSubscription} and C{SdsApi} do, and keep serving
what they had. Each subscription is handed the whole set it watches, with
the C{system_version_info}, only when the response touched it (a response
with neither resources nor removals goes to the wildcard ones, Envoy's
"empty update"). The resource handlers are the same as for the state of
the world. The response is ACKed with its nonce alone, or NACKed with an
C{error_detail}; a NACKed response changes nothing held.
"""

from google.protobuf import text_format
from twisted.logger import Logger

from txenvoy.xds.grpc_mux import INTERNAL, MuxStream, _TypeState
from txenvoy.xds.resources import ROUTE_TYPE, SECRET_TYPE, decodeResource, messageClass
from txenvoy.xds.subscription import refuseAll

log = Logger(namespace="config")

#: The types whose delta removals Envoy ignores, and the name it logs them under.
_REMOVAL_IGNORED = {ROUTE_TYPE: "RDS", SECRET_TYPE: "SDS"}


class _UnresolvedAlias(ValueError):
    """
    An entry with aliases and no resource, for a name a watch wants: the
    watch refuses it (Envoy hands it to the resource's handler, which
    fails on an empty resource), so it counts as the handler's rejection.
    """


class _DeltaState(_TypeState):
    def __init__(self, typeUrl):
        _TypeState.__init__(self, typeUrl)
        self.held = {}          # name: (version or None, message)
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
            still = state.names()
            gone = names - set(still)
            state.unsubscribe |= gone
            state.subscribe -= gone
            if still:
                # Not wildcard: what is not wanted any more is forgotten.
                for name in gone:
                    state.held.pop(name, None)

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
                if version is not None:
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
            added, removed = self._check(state, response)
            held = self._fold(state, added, removed)
            self._validate(state.typeUrl, list(held))
        except _UnresolvedAlias as e:
            detail = refuseAll(state.subscriptions, str(e), attempts=2)
        except ValueError as e:
            detail = self._refuse(state, str(e))
        else:
            touched = set(added) | set(removed)
            detail = self._deliverTouched(state, held, touched, response.system_version_info)
            if detail is None:
                state.held = held
        state.errorDetail = detail
        self._queueRequest(state.typeUrl)

    def _check(self, state, response):
        """
        The entries that apply and the names removed, as Envoy's
        C{handleGoodResponse} sorts them (C{ValueError} with its words
        for a response refused whole).

        @return: C{({name: entry}, [name])}, of the names this stream
            wants (any, for a wildcard type).
        """
        wildcard = not state.names()
        wanted = set(state.names())
        seen = set()
        added = {}
        for entry in response.resources:
            if entry.name in seen:
                raise ValueError("duplicate name %s found among added/updated resources"
                                 % (entry.name,))
            seen.add(entry.name)
            if not entry.HasField("resource"):
                held = state.held.get(entry.name)
                if held is not None and held[0] is not None and held[0] == entry.version:
                    # A heartbeat: the server confirms the version held.
                    continue
                if entry.aliases:
                    if wildcard or entry.name in wanted:
                        raise _UnresolvedAlias(
                            "resource %s: aliases without a resource (an unresolved alias) "
                            "answer only VHDS (on-demand virtual hosts), which txenvoy does "
                            "not implement" % (entry.name,))
                    continue
            if entry.resource.type_url != response.type_url:
                raise ValueError(
                    "type URL %s embedded in an individual Any does not match the "
                    "message-wide type URL %s in DeltaDiscoveryResponse %s"
                    % (entry.resource.type_url, response.type_url,
                       text_format.MessageToString(response)))
            if wildcard or entry.name in wanted:
                added[entry.name] = entry
        removed = []
        for name in response.removed_resources:
            if name in seen:
                raise ValueError("duplicate name %s found in the union of added+removed "
                                 "resources" % (name,))
            seen.add(name)
            if wildcard or name in wanted:
                removed.append(name)
        return added, removed

    def _fold(self, state, added, removed):
        """The set held once the response applies (C{ValueError} if it cannot)."""
        cls = messageClass(state.typeUrl)
        held = dict(state.held)
        for name, entry in added.items():
            held[name] = (entry.version, decodeResource(entry.resource, state.typeUrl, cls))
        ignoredBy = _REMOVAL_IGNORED.get(state.typeUrl)
        for name in removed:
            if ignoredBy is None:
                held.pop(name, None)
                continue
            log.error("Server sent a delta {kind} update attempting to remove a resource "
                      "(name: {name}). Ignoring.", kind=ignoredBy, name=name)
            if name in held:
                # Kept and used, but no version to claim on a new stream.
                held[name] = (None, held[name][1])
        return held

    def _deliverTouched(self, state, held, touched, version):
        """
        Hand each subscription its whole set if the response touched it.

        @return: C{None} to ACK, or the first error detail to NACK with.
        """
        detail = None
        for subscription in list(state.subscriptions):
            if subscription.names:
                if not touched.intersection(subscription.names):
                    continue
                mine = [held[n][1] for n in subscription.names if n in held]
            else:
                mine = [message for _, message in held.values()]
            error = subscription.onResponse(mine, version, delta=True)
            if error is not None and detail is None:
                detail = error
        return detail
