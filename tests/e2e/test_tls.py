"""
End-to-end: TLS termination chosen by SNI (tls_inspector + server_names),
in front of tcp_proxy, through a real process.
"""

import os
import socket
import ssl

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import EXAMPLES, Envoy, Upstream, echoHandler, freePort
from tests.e2e.test_l4 import l4Config, staticCluster

CERTS = os.path.join(EXAMPLES, "certs")


def tlsChain(serverName, cert, port, cluster):
    return {
        "filter_chain_match": {"server_names": [serverName]},
        "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                     "DownstreamTlsContext",
            "common_tls_context": {"tls_certificates": [{
                "certificate_chain": {"filename": os.path.join(CERTS, cert + ".crt.pem")},
                "private_key": {"filename": os.path.join(CERTS, cert + ".key.pem")}}]}}},
        "filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": "tls_" + cert, "cluster": cluster}}],
    }


class TlsTests(SynchronousTestCase):

    def test_sniChoosesCertificateAndChain(self):
        upstream = Upstream(echoHandler)
        self.addCleanup(upstream.stop)
        port, adminPort = freePort(), freePort()
        listener = {
            "name": "tls",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "listener_filters": [{"name": "envoy.filters.listener.tls_inspector", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3."
                         "TlsInspector"}}],
            "filter_chains": [tlsChain("domain1.example.com", "domain1", port, "echo"),
                              tlsChain("domain2.example.com", "domain2", port, "echo")],
        }
        envoy = Envoy(l4Config(adminPort, [listener], [staticCluster("echo", [upstream.port])]),
                      args=("--concurrency", "1"), adminPort=adminPort)
        self.addCleanup(envoy.stop)
        envoy.waitReady()
        context = ssl.create_default_context(cafile=os.path.join(CERTS, "ca.crt.pem"))
        for name in ("domain1.example.com", "domain2.example.com"):
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            s = context.wrap_socket(raw, server_hostname=name)
            self.assertIn(name, str(s.getpeercert()["subjectAltName"]))
            s.sendall(b"hello " + name.encode())
            self.assertEqual(s.recv(100), b"hello " + name.encode())
            s.close()
        # No chain for this name: closed after the listener filters.
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        with self.assertRaises((ssl.SSLError, ConnectionResetError, OSError)):
            context.wrap_socket(raw, server_hostname="other.example.com")
        raw.close()
        stats = envoy.stats()
        prefix = "listener.127.0.0.1_%d." % (port,)
        self.assertEqual(stats[prefix + "no_filter_chain_match"], 1)
        self.assertEqual(stats[prefix + "ssl.handshake"], 2)
        self.assertEqual(stats["tls_inspector.sni_found"], 3)
