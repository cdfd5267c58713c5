# -*- test-case-name: tests.xds.test_file_xds -*-
"""
Reading a C{DiscoveryResponse} file (YAML, JSON, proto text or binary, by
extension) into its C{version_info} and resource messages of one type.
"""

from txenvoy.config.errors import ConfigError
from twisted.logger import Logger

from txenvoy.config.loader import _loadFile

log = Logger(namespace="config")

LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
ENDPOINT_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

#: The module of each resource type's message.
_MODULES = {
    LISTENER_TYPE: "envoy.config.listener.v3.listener_pb2",
    CLUSTER_TYPE: "envoy.config.cluster.v3.cluster_pb2",
    ROUTE_TYPE: "envoy.config.route.v3.route_pb2",
    ENDPOINT_TYPE: "envoy.config.endpoint.v3.endpoint_pb2",
    SECRET_TYPE: "envoy.extensions.transport_sockets.tls.v3.secret_pb2",
}


def _messageClass(typeUrl):
    import importlib

    module = importlib.import_module(_MODULES[typeUrl])
    return getattr(module, typeUrl.rsplit(".", 1)[-1])


class UnknownDynamicFields:
    """
    What an unknown field in a dynamic resource does (Envoy's dynamic
    validation visitor): by default it is dropped with a warning and
    counted in C{server.dynamic_unknown_fields}; with
    C{--reject-unknown-dynamic-fields} the update is rejected; with
    C{--ignore-unknown-dynamic-fields} it is dropped silently.
    """

    def __init__(self, counter=None, reject=False, ignore=False):
        self._counter = counter
        self.reject = reject
        self.ignore = ignore

    @classmethod
    def ofServer(cls, server):
        """The policy of a server's options, counting in its main stats."""
        options = server.options
        return cls(server.mainStats.counter("server.dynamic_unknown_fields"),
                   reject=options.rejectUnknownDynamicFields,
                   ignore=options.ignoreUnknownDynamicFields)

    def found(self, documents):
        """The warnings of the walk, one list per document that had any."""
        for warnings in documents:
            if self._counter is not None and not self.ignore:
                self._counter.inc()
            if not self.ignore:
                for warning in warnings:
                    log.warn("{warning}", warning=warning)


def readDiscoveryResponse(path, typeUrl, unknownFields=None):
    """
    @param unknownFields: an L{UnknownDynamicFields}; without one (or with
        one that rejects), a file with an unknown field is refused.
    @return: C{(versionInfo, [message, ...])}.
    @raise ConfigError: the file is missing, does not parse, or holds a
        resource of another type.
    """
    from envoy.service.discovery.v3.discovery_pb2 import DiscoveryResponse

    lenient = unknownFields is not None and not unknownFields.reject
    found = [] if lenient else None
    response = _loadFile(path, DiscoveryResponse(), found)
    if found:
        unknownFields.found(found)
    cls = _messageClass(typeUrl)
    resources = []
    for i, entry in enumerate(response.resources):
        if entry.type_url == "type.googleapis.com/envoy.service.discovery.v3.Resource":
            from envoy.service.discovery.v3.discovery_pb2 import Resource

            wrapper = Resource()
            entry.Unpack(wrapper)
            entry = wrapper.resource
        if entry.type_url != typeUrl:
            raise ConfigError("%s: resources[%d]: type URL %s embedded in an individual Any "
                              "does not match the message-wide type URL %s"
                              % (path, i, entry.type_url, typeUrl))
        message = cls()
        entry.Unpack(message)
        resources.append(message)
    return response.version_info, resources
