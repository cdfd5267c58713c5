# -*- test-case-name: tests.xds.test_file_xds -*-
"""
Reading a C{DiscoveryResponse} file (YAML, JSON, proto text or binary, by
extension) into its C{version_info} and resource messages of one type.
"""

from txenvoy.config.errors import ConfigError
from txenvoy.config.loader import _loadFile

LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"


def _messageClass(typeUrl):
    if typeUrl == LISTENER_TYPE:
        from envoy.config.listener.v3.listener_pb2 import Listener

        return Listener
    from envoy.config.cluster.v3.cluster_pb2 import Cluster

    return Cluster


def readDiscoveryResponse(path, typeUrl):
    """
    @return: C{(versionInfo, [message, ...])}.
    @raise ConfigError: the file is missing, does not parse, or holds a
        resource of another type.
    """
    from envoy.service.discovery.v3.discovery_pb2 import DiscoveryResponse

    response = _loadFile(path, DiscoveryResponse())
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
