# -*- test-case-name: tests.e2e.test_grpc_xds -*-
"""
TLS to a control plane: the C{envoy_grpc} cluster's C{transport_socket}
(an C{UpstreamTlsContext}) as grpcio channel credentials, so the xDS
stream is encrypted, and mutually authenticated when the context holds a
client certificate, exactly where Envoy's would be.

With a validation context grpcio verifies the server itself: the
context's C{validation_context.trusted_ca} against its C{sni} (the host's
address when unset). Without one Envoy verifies nothing, and grpcio
cannot be told not to: the stream then goes through a
L{txenvoy.xds.tls_tunnel.TlsTunnel}, the cluster's own TLS as Envoy would
use it.
"""

from txenvoy.config.datasource import readDataSource
from txenvoy.config.errors import UnsupportedField

_TLS_TYPE = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"

#: The C{CommonTlsContext} fields that make Envoy verify the server.
_VALIDATION_FIELDS = ("validation_context", "validation_context_sds_secret_config",
                      "combined_validation_context",
                      "validation_context_certificate_provider",
                      "validation_context_certificate_provider_instance")

#: What L{channelCredentials} returns for a context that verifies nothing.
TUNNEL = object()


def channelCredentials(cluster, path):
    """
    @param cluster: the control plane's C{Cluster}.
    @param path: its field path, for messages.
    @return: C{(credentials, targetName)}, C{(None, None)} for
        plaintext, or C{(TUNNEL, None)} for TLS that verifies nothing
        (no validation context): grpcio then speaks plaintext to a
        L{txenvoy.xds.tls_tunnel.TlsTunnel}.
    """
    if not cluster.HasField("transport_socket"):
        return None, None
    tpath = path + ".transport_socket"
    typed = cluster.transport_socket.typed_config
    if typed.type_url.rsplit("/", 1)[-1] != _TLS_TYPE:
        raise UnsupportedField(tpath, "only a TLS transport socket to a control plane")
    import grpc
    from envoy.extensions.transport_sockets.tls.v3.tls_pb2 import UpstreamTlsContext

    context = UpstreamTlsContext()
    typed.Unpack(context)
    common = context.common_tls_context
    if not any(common.HasField(f) for f in _VALIDATION_FIELDS):
        return TUNNEL, None
    cpath = tpath + ".typed_config.common_tls_context"
    roots = readDataSource(common.validation_context.trusted_ca,
                           cpath + ".validation_context.trusted_ca") or None
    key = chain = None
    if common.tls_certificates:
        certificate = common.tls_certificates[0]
        chain = readDataSource(certificate.certificate_chain,
                               cpath + ".tls_certificates[0].certificate_chain")
        key = readDataSource(certificate.private_key, cpath + ".tls_certificates[0].private_key")
    credentials = grpc.ssl_channel_credentials(root_certificates=roots, private_key=key,
                                               certificate_chain=chain)
    return credentials, context.sni or None
