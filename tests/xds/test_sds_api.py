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


_UPSTREAM_TLS = ("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                 "UpstreamTlsContext")


class UpstreamSdsTests(SynchronousTestCase):
    """SDS secrets in a cluster's C{UpstreamTlsContext}, and static secrets."""

    def setUp(self):
        self.certPath = os.path.join(tempfile.mkdtemp(), "cert.json")
        self.write([_certificate("cert", "domain1")], "1")

    def write(self, resources, version):
        with open(self.certPath, "w") as f:
            json.dump({"version_info": version, "resources": resources}, f)

    def server(self, secrets, caName="ca", validateOnly=False):
        ca = _validation("ca")
        del ca["@type"]
        cluster = {
            "name": "up", "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": "up", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {
                    "address": "127.0.0.1", "port_value": 1}}}}]}]},
            "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                "@type": _UPSTREAM_TLS, "common_tls_context": {
                    "tls_certificate_sds_secret_configs": [
                        {"name": "cert", "sds_config": {"path": self.certPath}}],
                    "validation_context_sds_secret_config": {"name": caName}}}}}
        return Server(Clock(), loadBootstrap(configYaml=json.dumps({
            "node": {"id": "n", "cluster": "c"},
            "static_resources": {"clusters": [cluster],
                                 "secrets": [ca] * secrets}})), validateOnly=validateOnly)

    def test_rotationRebuildsTheClientContext(self):
        """
        The client certificate comes from the file, the trust from the
        static secret; a new certificate builds a new context, counted in
        C{cluster.<name>.client_ssl_socket_factory.ssl_context_update_by_sds}.
        """
        server = self.server(1)
        socket = server.clusterManager.clusters["up"].info.transportSocket
        self.assertEqual(socket.sds.current.options.certificates[0].dnsNames,
                         ("domain1.example.com",))
        self.assertEqual(len(socket.sds.current.validation.trustedCa), 1)
        [cert] = [p for p in server.secretManager._providers.values() if p.name == "cert"]
        self.write([_certificate("cert", "domain2")], "2")
        self.assertTrue(cert.subscription.refresh())
        self.assertEqual(socket.sds.current.options.certificates[0].dnsNames,
                         ("domain2.example.com",))
        counter = "cluster.up.client_ssl_socket_factory.ssl_context_update_by_sds"
        self.assertEqual(server.mainStats.counter(counter).value, 2)
        self.assertEqual([s.name for s in server.secretManager.staticSecrets()], ["ca"])
        # The file's certificate is read in, as Envoy's SdsApi::resolveSecret.
        [(name, secret, version, ignored)] = server.secretManager.dumpState()
        self.assertEqual((name, version), ("cert", "2"))
        self.assertEqual(
            secret.tls_certificate.certificate_chain.WhichOneof("specifier"), "inline_bytes")

    def test_staticSecretErrors(self):
        """Envoy's words for an unknown static secret, or two of one name."""
        e = self.assertRaises(ConfigError, self.server, 1, caName="other")
        self.assertIn("validation_context_sds_secret_config: Unknown static secret: other",
                      e.message)
        e = self.assertRaises(ConfigError, self.server, 2)
        self.assertEqual(e.message, "static_resources.secrets[1]: Duplicate static "
                                    "TlsCertificate secret name ca")

    def test_validateMode(self):
        """In validate mode the file is not read, and no secret is needed."""
        os.remove(self.certPath)
        self.server(1, validateOnly=True)


class SecretsNotReadyTests(SynchronousTestCase):
    """An upstream connection started before its secrets arrived."""

    def test_connectionRefused(self):
        """
        It is closed and fails as a connect, counting
        C{upstream_context_secrets_not_ready}, as Envoy's.
        """
        from twisted.internet.protocol import ClientFactory
        from twisted.internet.testing import StringTransport

        from txenvoy.extensions.transport_sockets.tls_sds import SdsUpstreamTlsSocket
        from txenvoy.extensions.transport_sockets.upstream_tls import UpstreamTlsError
        from txenvoy.stats.store import StatsStore

        counter = StatsStore().shard("main_thread").counter(
            "cluster.up.client_ssl_socket_factory.upstream_context_secrets_not_ready")

        class NotReady:
            current = None
            notReady = counter

        failures = []

        class Wrapped(ClientFactory):
            def clientConnectionFailed(self, connector, reason):
                failures.append(reason)

        factory = SdsUpstreamTlsSocket(NotReady()).wrapProtocolFactory(
            Wrapped(), Clock(), None)
        transport = StringTransport()
        factory.buildProtocol(None).makeConnection(transport)
        self.assertTrue(transport.disconnecting)
        [failure] = failures
        self.assertIsInstance(failure.value, UpstreamTlsError)
        self.assertEqual(counter.value, 1)


class ClusterWarmsOnSecretsTests(SynchronousTestCase):
    """
    A cluster whose TLS secrets come from a control plane initializes once
    they arrived, were rejected or timed out, as Envoy's cluster init
    manager holds its C{SdsApi} targets. (Against Envoy, by CDS over ADS:
    L{tests.e2e.test_grpc_xds}.)
    """

    def test_clusterWaitsForItsSecrets(self):
        from twisted.internet import defer

        tests = UpstreamSdsTests("test_validateMode")
        tests.setUp()
        server = tests.server(1)
        cluster = server.clusterManager.clusters["up"]
        secrets = defer.Deferred()

        class Pending:
            def whenReady(self):
                return secrets

        cluster.info.transportSocket.sds = Pending()
        cluster.start()
        initialized = cluster.whenInitialized()
        self.assertNoResult(initialized)
        secrets.callback(None)
        self.successResultOf(initialized)

    def test_remoteSubscriptionInitializedBeforeOrAfterStart(self):
        """
        L{RemoteSubscription.whenInitialized} asked before the subscription
        starts fires with its first update, as one asked after.
        """
        from twisted.internet import defer

        from txenvoy.xds.subscription_factory import RemoteSubscription

        class Subscription:
            initialized = defer.Deferred()

            def start(self, transport):
                pass

        subscription = Subscription()

        class ControlPlanes:
            def subscription(self, *args):
                return subscription, None

        remote = RemoteSubscription(ControlPlanes(), None, "p", None, _SECRET, None, "cert")
        before = remote.whenInitialized()
        remote.start()
        after = remote.whenInitialized()
        self.assertNoResult(before)
        subscription.initialized.callback(None)
        self.successResultOf(before)
        self.successResultOf(after)


class SecretFilesRotationTests(SynchronousTestCase):
    """
    A secret's files moved again are read anew (here by the stat poll on a
    fake clock), as Envoy's C{SdsApi::onWatchUpdate}; files that do not
    load count C{key_rotation_failed} and the secret in use stays. (With
    inotify, against Envoy: L{tests.e2e.test_xds_resources}.)
    """

    def test_rotation(self):
        import shutil

        d = tempfile.mkdtemp()

        def place(domain, key=None):
            for ext, source in (("crt", domain), ("key", key or domain)):
                tmp = os.path.join(d, "tmp")
                shutil.copy(os.path.join(_CERTS, "%s.%s.pem" % (source, ext)), tmp)
                os.rename(tmp, os.path.join(d, "cert.%s.pem" % (ext,)))

        place("domain1")
        tests = UpstreamSdsTests("test_validateMode")
        tests.setUp()
        tests.write([{"@type": _SECRET, "name": "cert", "tls_certificate": {
            "certificate_chain": {"filename": os.path.join(d, "cert.crt.pem")},
            "private_key": {"filename": os.path.join(d, "cert.key.pem")},
            "watched_directory": {"path": d}}}], "1")
        server = tests.server(1)
        socket = server.clusterManager.clusters["up"].info.transportSocket
        [provider] = [p for p in server.secretManager._providers.values() if p.name == "cert"]
        clock = Clock()
        provider.watchFiles(clock)
        self.addCleanup(provider.stopWatching)

        def names():
            return socket.sds.current.options.certificates[0].dnsNames

        self.assertEqual(names(), ("domain1.example.com",))
        place("domain2", key="domain1")
        clock.advance(1)
        self.assertEqual(names(), ("domain1.example.com",))
        failed = server.mainStats.counter("sds.cert.key_rotation_failed")
        self.assertEqual(failed.value, 1)
        place("domain2")
        clock.advance(1)
        self.assertEqual(names(), ("domain2.example.com",))
        self.assertEqual(failed.value, 1)
        self.assertEqual(provider.versionInfo, "1")
