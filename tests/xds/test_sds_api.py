"""
Tests for L{txenvoy.xds.sds_api} and the SDS side of the TLS contexts
(L{txenvoy.extensions.transport_sockets.tls_sds}): a server on a fake clock
reading secrets from files.
"""

import json
import os
import tempfile

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.config.errors import ConfigError
from txenvoy.config.loader import loadBootstrap
from txenvoy.server.server import Server

from tests.e2e.harness import EXAMPLES

_CERTS = os.path.join(EXAMPLES, "certs")
_SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
_HCM = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager"
        ".v3.HttpConnectionManager")


def _certificate(name, domain):
    return {"@type": _SECRET, "name": name, "tls_certificate": {
        "certificate_chain": {"filename": os.path.join(_CERTS, domain + ".crt.pem")},
        "private_key": {"filename": os.path.join(_CERTS, domain + ".key.pem")}}}


def _validation(name):
    return {"@type": _SECRET, "name": name, "validation_context": {
        "trusted_ca": {"filename": os.path.join(_CERTS, "ca.crt.pem")}}}


class SdsServerTests(SynchronousTestCase):

    def setUp(self):
        d = tempfile.mkdtemp()
        self.certPath = os.path.join(d, "cert.json")
        self.caPath = os.path.join(d, "ca.json")
        self.write(self.certPath, [_certificate("cert", "domain1")])
        self.write(self.caPath, [_validation("ca")])

    def write(self, path, resources, version="1"):
        with open(path, "w") as f:
            json.dump({"version_info": version, "resources": resources}, f)

    def server(self, validateOnly=False):
        tls = {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                        "DownstreamTlsContext",
               "require_client_certificate": True,
               "common_tls_context": {
                   "tls_certificate_sds_secret_configs": [
                       {"name": "cert", "sds_config": {"path": self.certPath}}],
                   "validation_context_sds_secret_config": {
                       "name": "ca", "sds_config": {"path": self.caPath}}}}
        listener = {
            "name": "l", "address": {"socket_address": {"address": "127.0.0.1",
                                                        "port_value": 0}},
            "filter_chains": [{
                "transport_socket": {"name": "envoy.transport_sockets.tls",
                                     "typed_config": tls},
                "filters": [{"name": "hcm", "typed_config": {
                    "@type": _HCM, "stat_prefix": "s",
                    "route_config": {"name": "r"},
                    "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http"
                                 ".router.v3.Router"}}]}}]}]}
        return Server(Clock(), loadBootstrap(configYaml=json.dumps({
            "node": {"id": "n", "cluster": "c"},
            "static_resources": {"listeners": [listener]}})), validateOnly=validateOnly)

    def socket(self, server):
        return server.listenerManager.listeners[0].filterChainManager.chains[0].transportSocket

    def test_certificateAndValidationFromSds(self):
        """
        Both secrets fill the context; a new certificate builds a new
        context for new handshakes; a rejected one leaves it.
        """
        server = self.server()
        socket = self.socket(server)
        first = socket.sds.current
        self.assertEqual(first.options.certificates[0].dnsNames, ("domain1.example.com",))
        self.assertEqual(len(first.validation.trustedCa), 1)
        manager = server.secretManager
        [cert] = [p for p in manager._providers.values() if p.name == "cert"]
        self.write(self.certPath, [_certificate("cert", "domain2")], "2")
        self.assertTrue(cert.subscription.refresh())
        self.assertEqual(socket.sds.current.options.certificates[0].dnsNames,
                         ("domain2.example.com",))
        self.write(self.certPath, [_validation("cert")], "3")
        self.assertFalse(cert.subscription.refresh())
        self.assertEqual(cert.versionInfo, "2")
        self.assertEqual(sorted(n for n, s, v, t in manager.dumpState()), ["ca", "cert"])

    def test_messages(self):
        """Envoy's words for a secret of another name, more than one, or none."""
        server = self.server()
        [cert] = [p for p in server.secretManager._providers.values() if p.name == "cert"]
        e = self.assertRaises(ConfigError, cert.onConfigUpdate, [], "2")
        self.assertEqual(e.message, "Missing SDS resources for cert in onConfigUpdate()")
        other = type(cert.secret)()
        other.name = "x"
        e = self.assertRaises(ConfigError, cert.onConfigUpdate, [other], "2")
        self.assertEqual(e.message, "Unexpected SDS secret (expecting cert): x")
        e = self.assertRaises(ConfigError, cert.onConfigUpdate, [other, other], "2")
        self.assertEqual(e.message, "Unexpected SDS secrets length: 2")

    def test_unreadableSecretRefused(self):
        """Serving without the certificate is refused with the path."""
        self.write(self.certPath, [_certificate("other", "domain1")])
        e = self.assertRaises(ConfigError, self.server)
        self.assertIn("transport_socket.typed_config: the TLS secrets could not be read",
                      e.message)
        self.server(validateOnly=True)
