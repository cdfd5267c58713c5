# -*- test-case-name: tests.e2e.test_grpc_xds -*-
"""
TLS to a control plane: the C{envoy_grpc} cluster's C{transport_socket}
(an C{UpstreamTlsContext}) as grpcio channel credentials, so the xDS
stream is encrypted, and mutually authenticated when the context holds a
client certificate, exactly where Envoy's would be.

grpcio always verifies the server: the context's
C{validation_context.trusted_ca} (the system's roots when unset) against
its C{sni} (the host's address when unset).
"""

from txenvoy.config.datasource import readDataSource
from txenvoy.config.errors import UnsupportedField

_TLS_TYPE = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"


def channelCredentials(cluster, path):
    """
    @param cluster: the control plane's C{Cluster}.
    @param path: its field path, for messages.
    @return: C{(credentials, targetName)}, or C{(None, None)} for
        plaintext.
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
