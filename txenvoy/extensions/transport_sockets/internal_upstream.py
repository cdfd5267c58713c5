# -*- test-case-name: tests.extensions.transport_sockets.test_internal_upstream -*-
"""
C{envoy.transport_sockets.internal_upstream}: the transport socket of a
cluster whose endpoints are internal listeners (C{envoy_internal_address}).

It wraps another transport socket (C{raw_buffer}, or TLS over the
in-memory connection) and passes to the internal listener's side what
Envoy passes: the C{passthrough_metadata} namespaces of the host's or the
cluster's C{filter_metadata}, which become the dynamic metadata of the
connection the internal listener accepts (C{%DYNAMIC_METADATA(ns)%} in a
tcp_proxy access log there).
"""

from google.protobuf import json_format
from zope.interface import implementer

from txenvoy.config.errors import UnsupportedField
from txenvoy.config.fields import checkFields
from txenvoy.config.registry import Category, createExtension, extension, typeNameOf
from txenvoy.interfaces import IUpstreamTransportSocketFactory

_RAW_BUFFER_TYPE = "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
_HOST, _CLUSTER = "host", "cluster"


@implementer(IUpstreamTransportSocketFactory)
class InternalUpstreamSocket:
    """
    @ivar inner: the wrapped transport socket factory, or C{None} for
        C{raw_buffer}.
    @ivar sources: C{(kind, namespace)} pairs, C{kind} C{"host"} or
        C{"cluster"}.
    """

    def __init__(self, inner, sources):
        self.inner = inner
        self.sources = tuple(sources)
        self._clusterMetadata = {}

    def wrapProtocolFactory(self, factory, reactor, host, cluster=None, socketOptions=None):
        if self.inner is None:
            return factory
        if socketOptions is None:
            return self.inner.wrapProtocolFactory(factory, reactor, host, cluster)
        return self.inner.wrapProtocolFactory(factory, reactor, host, cluster, socketOptions)

    def passthroughFor(self, host, clusterInfo):
        """
        What the internal listener's connection receives:
        C{{"metadata": {namespace: dict}}} for the configured namespaces
        the host or the cluster has.
        """
        metadata = {}
        for kind, namespace in self.sources:
            if kind == _HOST:
                value = (host.filterMetadata or {}).get(namespace)
            else:
                value = self._clusterNamespaces(clusterInfo).get(namespace)
            if value is not None:
                metadata[namespace] = value
        return {"metadata": metadata} if metadata else {}

    def _clusterNamespaces(self, info):
        cached = self._clusterMetadata.get(info.name)
        if cached is None:
            proto = getattr(info, "proto", None)
            cached = {}
            if proto is not None and proto.HasField("metadata"):
                cached = {ns: json_format.MessageToDict(v)
                          for ns, v in proto.metadata.filter_metadata.items()}
            self._clusterMetadata[info.name] = cached
        return cached


@extension(Category.TRANSPORT_SOCKET_UPSTREAM,
           "envoy.extensions.transport_sockets.internal_upstream.v3.InternalUpstreamTransport",
           "envoy.transport_sockets.internal_upstream",
           fields=("passthrough_metadata", "transport_socket"))
def createInternalUpstream(message, context):
    path = context.configPath
    sources = []
    for i, source in enumerate(message.passthrough_metadata):
        checkFields(source, ("kind", "name"), "%s.passthrough_metadata[%d]" % (path, i))
        kind = source.kind.WhichOneof("kind")
        if kind not in (_HOST, _CLUSTER):
            raise UnsupportedField("%s.passthrough_metadata[%d].kind.%s" % (path, i, kind),
                                   "only host and cluster metadata")
        sources.append((kind, source.name))
    inner = None
    ts = message.transport_socket
    if typeNameOf(ts.typed_config) != _RAW_BUFFER_TYPE:
        inner = createExtension(Category.TRANSPORT_SOCKET_UPSTREAM, ts, context,
                                path + ".transport_socket")
    return InternalUpstreamSocket(inner, sources)
