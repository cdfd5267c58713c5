# -*- test-case-name: tests.e2e.test_rest_xds -*-
"""
REST polling (C{api_type: REST}; Envoy's C{HttpSubscriptionImpl}): every
C{refresh_delay} a C{DiscoveryRequest} is POSTed as JSON to the type's
C{/v3/discovery:<type>} path on a host of the C{cluster_names} cluster,
and the JSON C{DiscoveryResponse} that comes back is applied like a gRPC
one. The next request carries the version accepted (after a rejection,
still the previous one: as Envoy's REST, without an C{error_detail}). A request that fails,
times out (C{request_timeout}, 1 s unless set) or gets another status
than 200 counts C{update_failure} and changes nothing.

The HTTP client is Twisted's C{Agent} on the main reactor.
"""

import io
import json

from twisted.logger import Logger

from txenvoy.xds.grpc_mux import _nameOf
from txenvoy.xds.resources import decodeResources, restPath
from txenvoy.xds.subscription import deliverAll, refuseAll

log = Logger(namespace="config")


class RestPoller:
    """The poller of one type (its subscriptions are the watches)."""

    def __init__(self, reactor, clusterManager, clusterName, node, typeUrl, refreshDelay,
                 requestTimeout):
        from txenvoy.grpc.async_client import mainThreadHosts

        self.reactor = reactor
        self.clusterName = clusterName
        self._choose = mainThreadHosts(clusterManager, clusterName)
        self.node = node
        self.typeUrl = typeUrl
        self._refreshDelay = refreshDelay
        self._requestTimeout = requestTimeout
        self.subscriptions = []
        self._version = ""
        self._nonce = ""
        self._timer = None
        self._inFlight = None
        self._agent = None
        self._stopped = False

    def watch(self, subscription):
        self.subscriptions.append(subscription)
        if self._timer is None and self._inFlight is None:
            self._poll()

    def unwatch(self, subscription):
        if subscription in self.subscriptions:
            self.subscriptions.remove(subscription)
        if not self.subscriptions:
            self.stop()

    def stop(self):
        self._stopped = True
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        inFlight, self._inFlight = self._inFlight, None
        if inFlight is not None:
            inFlight.cancel()

    def _request(self):
        from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest

        request = DiscoveryRequest(type_url=self.typeUrl, version_info=self._version,
                                   response_nonce=self._nonce)
        request.node.CopyFrom(self.node)
        names = set()
        for subscription in self.subscriptions:
            names.update(subscription.names)
        request.resource_names.extend(sorted(names))
        return request

    def _poll(self):
        from google.protobuf import json_format
        from twisted.web.client import Agent, FileBodyProducer, readBody
        from twisted.web.http_headers import Headers

        self._timer = None
        address = self._choose()
        if address is None:
            log.warn("REST config: cluster '{cluster}' has no host", cluster=self.clusterName)
            self._failed()
            return
        if self._agent is None:
            self._agent = Agent(self.reactor)
        body = json_format.MessageToJson(self._request(), indent=None,
                                         preserving_proto_field_name=True).encode()
        ip, port = address
        url = "http://%s:%d%s" % ("[%s]" % ip if ":" in ip else ip, port, restPath(self.typeUrl))
        d = self._agent.request(
            b"POST", url.encode(), Headers({b"content-type": [b"application/json"],
                                            b"host": [self.clusterName.encode()]}),
            FileBodyProducer(io.BytesIO(body)))

        def read(response):
            if response.code != 200:
                raise _Failed("status %d" % (response.code,))
            return readBody(response)

        d.addCallback(read)
        d.addTimeout(self._requestTimeout, self.reactor)
        self._inFlight = d
        d.addCallbacks(self._onBody, self._onError)

    def _onBody(self, body):
        from envoy.service.discovery.v3.discovery_pb2 import DiscoveryResponse

        from txenvoy.config.loader import parseDict

        self._inFlight = None
        try:
            # Unknown fields dropped (a list takes the warnings), as for
            # every dynamic resource.
            response = parseDict(json.loads(body), DiscoveryResponse(), [])
        except Exception as e:
            self._onError(_Failed("the response does not parse: %s" % (e,)))
            return
        self._nonce = response.nonce
        try:
            resources = decodeResources(response.resources, self.typeUrl)
        except ValueError as e:
            detail = refuseAll(self.subscriptions, str(e))
        else:
            detail = deliverAll(self.subscriptions, [(_nameOf(r), r) for r in resources],
                                response.version_info)
        if detail is None:
            self._version = response.version_info
        self._schedule()

    def _onError(self, failure):
        self._inFlight = None
        reason = failure.value if hasattr(failure, "value") else failure
        log.warn("REST config for {type} update failed: {reason}", type=self.typeUrl,
                 reason=reason)
        self._failed()

    def _failed(self):
        for subscription in self.subscriptions:
            subscription.onConnectionFailure()
        self._schedule()

    def _schedule(self):
        if self.subscriptions and not self._stopped:
            self._timer = self.reactor.callLater(self._refreshDelay, self._poll)


class _Failed(Exception):
    pass
