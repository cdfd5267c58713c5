"""
Tests for L{txenvoy.http.conn_manager_utility}'s C{x-forwarded-client-cert}
handling (Envoy's C{mutateXfccRequestHeader}) and C{add_user_agent}, through
a real connection manager: each C{forward_client_cert_details} mode, with
and without a client certificate. C{tests/e2e/test_example_mtls.py} compares
C{SANITIZE_SET} with Envoy 1.40 on a real mTLS connection.
"""

from twisted.trial.unittest import SynchronousTestCase

from txenvoy.testing.http_filter import FakeServer

from tests.http.hcm_harness import Harness


class _MutualTls:
    """A TLS peer that presented a certificate, as the TLS socket shows it."""

    peerCertificatePresented = True
    sha256PeerCertificateDigest = "ab" * 32
    subjectPeerCertificate = "CN=client.example.com,O=Test"
    uriSanPeerCertificate = ("spiffe://cluster/client",)
    dnsSansPeerCertificate = ("client.example.com", "alt.example.com")
    uriSanLocalCertificate = ("spiffe://cluster/proxy",)
    urlEncodedPemEncodedPeerCertificate = "-----BEGIN%20CERT"
    urlEncodedPemEncodedPeerCertificateChain = "-----BEGIN%20CHAIN"


class _ServerOnlyTls(_MutualTls):
    peerCertificatePresented = False


ALL = {"subject": True, "cert": True, "chain": True, "dns": True, "uri": True}


class XfccTests(SynchronousTestCase):

    def xfcc(self, mode, details=None, ssl=_MutualTls(), sent=("By=old",)):
        hcm = {"forward_client_cert_details": mode}
        if details is not None:
            hcm["set_current_client_cert_details"] = details
        h = Harness(self, hcm=hcm)
        down = h.connect(ssl=ssl)
        extra = b"".join(b"x-forwarded-client-cert: %s\r\n" % (v.encode(),) for v in sent)
        down.send(b"GET /o/ HTTP/1.1\r\nhost: a\r\n" + extra + b"\r\n")
        headers = h.upstream().request()[1]
        return [v for n, v in headers if n == "x-forwarded-client-cert"]

    def test_sanitize(self):
        self.assertEqual(self.xfcc("SANITIZE"), [])

    def test_forwardOnly(self):
        self.assertEqual(self.xfcc("FORWARD_ONLY"), ["By=old"])
        self.assertEqual(self.xfcc("FORWARD_ONLY", ssl=_ServerOnlyTls()), [])

    def test_alwaysForwardOnly(self):
        self.assertEqual(self.xfcc("ALWAYS_FORWARD_ONLY", ssl=None), ["By=old"])

    def test_sanitizeSet(self):
        """Envoy's order: By, Hash, then Cert, Chain, Subject, URI, DNS."""
        self.assertEqual(self.xfcc("SANITIZE_SET", ALL), [
            "By=spiffe://cluster/proxy;Hash=" + "ab" * 32 + ';Cert="-----BEGIN%20CERT";'
            'Chain="-----BEGIN%20CHAIN";Subject="CN=client.example.com,O=Test";'
            "URI=spiffe://cluster/client;DNS=client.example.com;DNS=alt.example.com"])

    def test_appendForward(self):
        self.assertEqual(self.xfcc("APPEND_FORWARD", {"subject": True}), [
            "By=old,By=spiffe://cluster/proxy;Hash=" + "ab" * 32
            + ';Subject="CN=client.example.com,O=Test"'])

    def test_withoutClientCertificate(self):
        """Without mutual TLS the header is removed in every mode but ALWAYS_FORWARD_ONLY."""
        for mode in ("APPEND_FORWARD", "SANITIZE_SET"):
            self.assertEqual(self.xfcc(mode, {"subject": True}, ssl=_ServerOnlyTls()), [])
            self.assertEqual(self.xfcc(mode, {"subject": True}, ssl=None), [])


class AddUserAgentTests(SynchronousTestCase):
    """C{add_user_agent}, as Envoy 1.40 wrote it (same order, values in place)."""

    def headers(self, extra=b""):
        server = FakeServer(cluster="c1")
        server.node.id = "n1"
        h = Harness(self, hcm={"add_user_agent": True}, server=server)
        down = h.connect()
        down.send(b"GET /o/ HTTP/1.1\r\nhost: a\r\n" + extra + b"\r\n")
        return [(n, v) for n, v in h.upstream().request()[1]
                if n not in ("x-request-id", "x-envoy-expected-rq-timeout-ms")]

    def test_added(self):
        self.assertEqual(self.headers(), [
            ("host", "a"), ("x-forwarded-proto", "http"),
            ("x-envoy-downstream-service-cluster", "c1"), ("user-agent", "c1"),
            ("x-envoy-downstream-service-node", "n1")])

    def test_clientUserAgentKept(self):
        self.assertIn(("user-agent", "curl"), self.headers(b"user-agent: curl\r\n"))

    def test_emptyUserAgentSetInPlace(self):
        self.assertEqual(self.headers(b"user-agent: \r\n")[1], ("user-agent", "c1"))
