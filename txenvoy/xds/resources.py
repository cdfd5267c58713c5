# -*- test-case-name: tests.xds.test_grpc_mux -*-
"""
The xDS resource types and their messages: a type URL to its message
class, the discovery methods of each service, and the decoding of a
response's C{Any} resources as Envoy decodes them (a resource of another
type than the response's is refused with Envoy's words; unknown fields
are kept aside and ignored, Envoy's default for dynamic resources).
"""

import importlib

_PREFIX = "type.googleapis.com/"
RESOURCE_WRAPPER = _PREFIX + "envoy.service.discovery.v3.Resource"

LISTENER_TYPE = _PREFIX + "envoy.config.listener.v3.Listener"
CLUSTER_TYPE = _PREFIX + "envoy.config.cluster.v3.Cluster"
ROUTE_TYPE = _PREFIX + "envoy.config.route.v3.RouteConfiguration"
ENDPOINT_TYPE = _PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET_TYPE = _PREFIX + "envoy.extensions.transport_sockets.tls.v3.Secret"

#: Type URL: (message module, service, SotW method, delta method, REST path).
TYPES = {
    LISTENER_TYPE: ("envoy.config.listener.v3.listener_pb2",
                    "envoy.service.listener.v3.ListenerDiscoveryService",
                    "StreamListeners", "DeltaListeners", "/v3/discovery:listeners"),
    CLUSTER_TYPE: ("envoy.config.cluster.v3.cluster_pb2",
                   "envoy.service.cluster.v3.ClusterDiscoveryService",
                   "StreamClusters", "DeltaClusters", "/v3/discovery:clusters"),
    ROUTE_TYPE: ("envoy.config.route.v3.route_pb2",
                 "envoy.service.route.v3.RouteDiscoveryService",
                 "StreamRoutes", "DeltaRoutes", "/v3/discovery:routes"),
    ENDPOINT_TYPE: ("envoy.config.endpoint.v3.endpoint_pb2",
                    "envoy.service.endpoint.v3.EndpointDiscoveryService",
                    "StreamEndpoints", "DeltaEndpoints", "/v3/discovery:endpoints"),
    SECRET_TYPE: ("envoy.extensions.transport_sockets.tls.v3.secret_pb2",
                  "envoy.service.secret.v3.SecretDiscoveryService",
                  "StreamSecrets", "DeltaSecrets", "/v3/discovery:secrets"),
}


def messageClass(typeUrl):
    """The message class of a type URL in L{TYPES}."""
    module = importlib.import_module(TYPES[typeUrl][0])
    return getattr(module, typeUrl.rsplit(".", 1)[-1])


def streamMethod(typeUrl, delta=False):
    """The full gRPC method of a type's own (non-aggregated) service."""
    _, service, sotw, deltaMethod, _ = TYPES[typeUrl]
    return "/%s/%s" % (service, deltaMethod if delta else sotw)


def restPath(typeUrl):
    return TYPES[typeUrl][4]


def decodeResource(entry, typeUrl, cls):
    """
    One C{Any} (or C{Resource} wrapping one) as a message of C{cls}.

    @raise ValueError: with Envoy's message, for another type or bytes
        that do not parse.
    """
    if entry.type_url == RESOURCE_WRAPPER:
        from envoy.service.discovery.v3.discovery_pb2 import Resource

        wrapper = Resource()
        entry.Unpack(wrapper)
        entry = wrapper.resource
    if entry.type_url != typeUrl:
        raise ValueError("%s does not match the message-wide type URL %s in "
                         "DiscoveryResponse" % (entry.type_url, typeUrl))
    message = cls()
    try:
        message.ParseFromString(entry.value)
    except Exception as e:
        raise ValueError("Unable to unpack as %s: %s" % (cls.DESCRIPTOR.full_name, e))
    return message


def decodeResources(entries, typeUrl):
    """Every C{Any} of a response (see L{decodeResource})."""
    if typeUrl not in TYPES:
        raise ValueError("unknown type URL %s" % (typeUrl,))
    cls = messageClass(typeUrl)
    return [decodeResource(entry, typeUrl, cls) for entry in entries]
