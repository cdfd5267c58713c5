"""
End-to-end: an upstream TLS context whose client certificate comes from
SDS (a file) and whose trust from C{static_resources.secrets}, against a
TLS upstream that requires a client certificate, compared with Envoy 1.40:
which certificate the upstream sees before and after the file is rotated,
the stats, and C{/config_dump}'s secrets.
"""

import os
import socket
import ssl
import tempfile
import threading

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import adminStats, forBoth, freePort
from tests.e2e.test_file_xds import _moveInto, _proxy, _response, _withoutTimes
from tests.e2e.test_xds_resources import (
    EXAMPLES_CERTS,
    _bootstrap,
    _configDump,
    _directListener,
    _get,
    _secret,
    _staticCluster,
    _waitStat,
)

_CERTS = os.path.abspath(EXAMPLES_CERTS)
_UPSTREAM_TLS = ("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                 "UpstreamTlsContext")
_SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


class _ClientCertUpstream:
    """
    A TLS HTTP/1.1 server on 127.0.0.1 that requires a client certificate
    signed by the test CA and answers each request with its common name,
    closing the connection after it.
    """

    def __init__(self):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(os.path.join(_CERTS, "server.crt.pem"),
                                os.path.join(_CERTS, "server.key.pem"))
        context.load_verify_locations(os.path.join(_CERTS, "ca.crt.pem"))
        context.verify_mode = ssl.CERT_REQUIRED
        self._context = context
        self._listening = socket.socket()
        self._listening.bind(("127.0.0.1", 0))
        self._listening.listen(16)
        self._listening.settimeout(0.2)
        self.port = self._listening.getsockname()[1]
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stopped.is_set():
            try:
                raw, ignored = self._listening.accept()
            except OSError:
                continue
            raw.settimeout(5)
            try:
                with self._context.wrap_socket(raw, server_side=True) as s:
                    data = b""
                    while b"\r\n\r\n" not in data:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    subject = dict(x[0] for x in s.getpeercert()["subject"])
                    body = subject["commonName"].encode()
                    s.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\nconnection: close"
                              b"\r\n\r\n%s" % (len(body), body))
            except (OSError, ssl.SSLError):
                raw.close()

    def stop(self):
        self._stopped.set()
        self._thread.join(5)
        self._listening.close()


def _tlsCluster(port, sdsPath):
    cluster = _staticCluster("tls_up", port)
    cluster["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": _UPSTREAM_TLS,
        "common_tls_context": {
            "tls_certificate_sds_secret_configs": [{
                "name": "client_cert", "sds_config": {
                    "path_config_source": {"path": sdsPath},
                    "resource_api_version": "V3"}}],
            "validation_context_sds_secret_config": {"name": "test_ca"}}}}
    return cluster


_STATIC_CA = {"name": "test_ca", "validation_context": {
    "trusted_ca": {"filename": os.path.join(_CERTS, "ca.crt.pem")}}}


class UpstreamSdsTests(SynchronousTestCase):

    def _sequence(self, real):
        import json

        d = tempfile.mkdtemp(prefix="upstream-sds-")
        port, adminPort = freePort(), freePort()
        path = os.path.join(d, "sds.yaml")
        upstream = _ClientCertUpstream()
        _moveInto(d, "sds.yaml", _response("1", [_secret("client_cert", "domain1")]))
        config = json.loads(_bootstrap(adminPort, [_directListener(port, "tls_up")],
                                       [_tlsCluster(upstream.port, path)]))
        config["static_resources"]["secrets"] = [_STATIC_CA]
        proxy = _proxy(real, json.dumps(config), adminPort, ())
        seen = []
        try:
            proxy.waitPort(port)
            seen.append(_get(port))
            _moveInto(d, "sds.yaml", _response("2", [_secret("client_cert", "domain2")]))
            _waitStat(adminPort, "sds.client_cert.update_success", 2)
            seen.append(_get(port))
            stats = adminStats(adminPort)
            dump = _configDump(adminPort, "resource=static_secrets")
            dynamic = _configDump(adminPort, "resource=dynamic_active_secrets")
        finally:
            proxy.stop()
            upstream.stop()
        compared = {n: stats.get(n) for n in (
            "sds.client_cert.update_success", "sds.client_cert.update_rejected",
            "cluster.tls_up.client_ssl_socket_factory.ssl_context_update_by_sds",
            "cluster.tls_up.ssl.handshake")}
        return seen, compared, _withoutTimes(dump, {}), _withoutTimes(dynamic, {})

    def test_upstreamClientCertificateRotationAsEnvoy(self):
        """
        Envoy's upstream SDS: the client certificate an upstream sees is
        the secret file's, and after the file is rotated new upstream
        connections present the new one; a secret named without
        C{sds_config} is C{static_resources.secrets}' (C{static_secrets}
        in C{/config_dump}, the file's under C{dynamic_active_secrets}).
        """
        results = forBoth(self._sequence, timeout=60)
        self.maxDiff = None
        self.assertEqual(results[True][0], [
            (200, b"domain1.example.com"), (200, b"domain2.example.com")])
        self.assertEqual(results[False], results[True])
