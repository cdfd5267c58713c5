"""
Tests for L{txenvoy.http.conn_manager_utility}'s response head rules
(Envoy's C{mutateResponseHeaders}), and its C{x-forwarded-client-cert}
handling (Envoy's C{mutateXfccRequestHeader}) and C{add_user_agent}, through
a real connection manager: each C{forward_client_cert_details} mode, with
and without a client certificate. C{tests/e2e/test_example_mtls.py} compares
C{SANITIZE_SET} with Envoy 1.40 on a real mTLS connection.
"""

from twisted.trial.unittest import SynchronousTestCase

from txenvoy.http.conn_manager_utility import (
    APPEND_IF_ABSENT,
    OVERWRITE,
    PASS_THROUGH,
    mutateResponseHeaders,
)
from txenvoy.http.headers import HeaderMap, RequestHeaders, ResponseHeaders
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


class _ResponseConfig:
    """The connection manager settings C{mutateResponseHeaders} reads."""

    def __init__(self, transformation=OVERWRITE, via=None, alwaysSetRequestId=False):
        self.serverHeaderTransformation = transformation
        self.serverName = b"envoy"
        self.via = via
        self.alwaysSetRequestIdInResponse = alwaysSetRequestId


class MutateResponseHeadersTests(SynchronousTestCase):
    """
    Envoy's C{mutateResponseHeaders} on heads with several of the names it
    rewrites, in any order.
    """

    def mutate(self, entries, config=None, upgrade=False, request=None):
        response = ResponseHeaders(200, HeaderMap(entries))
        mutateResponseHeaders(config or _ResponseConfig(), response, request, b"D", upgrade)
        return response.headers.items()

    def test_plain(self):
        self.assertEqual(self.mutate([(b"content-length", b"2")]),
                         [(b"content-length", b"2"), (b"date", b"D"), (b"server", b"envoy")])

    def test_origin(self):
        """An origin's server keeps its place; its date stays; connection goes."""
        self.assertEqual(
            self.mutate([(b"server", b"nginx"), (b"date", b"X"), (b"connection", b"keep-alive"),
                         (b"content-length", b"2")]),
            [(b"server", b"envoy"), (b"date", b"X"), (b"content-length", b"2")])

    def test_severalServers(self):
        """The first server entry is overwritten in place, the later ones dropped."""
        self.assertEqual(
            self.mutate([(b"keep-alive", b"5"), (b"x-a", b"1"), (b"server", b"a"),
                         (b"x-b", b"2"), (b"server", b"b"), (b"x-c", b"3")]),
            [(b"x-a", b"1"), (b"server", b"envoy"), (b"x-b", b"2"), (b"x-c", b"3"),
             (b"date", b"D")])

    def test_upgradeKeepsConnection(self):
        self.assertEqual(
            self.mutate([(b"upgrade", b"websocket"), (b"connection", b"upgrade"),
                         (b"keep-alive", b"5"), (b"proxy-connection", b"x")], upgrade=True),
            [(b"upgrade", b"websocket"), (b"connection", b"upgrade"), (b"date", b"D"),
             (b"server", b"envoy")])

    def test_passThroughAndAppend(self):
        self.assertEqual(self.mutate([(b"server", b"a")], _ResponseConfig(PASS_THROUGH)),
                         [(b"server", b"a"), (b"date", b"D")])
        self.assertEqual(self.mutate([], _ResponseConfig(PASS_THROUGH)), [(b"date", b"D")])
        self.assertEqual(self.mutate([(b"server", b"a")], _ResponseConfig(APPEND_IF_ABSENT)),
                         [(b"server", b"a"), (b"date", b"D")])
        self.assertEqual(self.mutate([], _ResponseConfig(APPEND_IF_ABSENT)),
                         [(b"date", b"D"), (b"server", b"envoy")])

    def test_via(self):
        """The last via entry gets the proxy's; without one, it is added."""
        config = _ResponseConfig(via=b"edge")
        self.assertEqual(
            self.mutate([(b"via", b"1"), (b"connection", b"close"), (b"via", b"2")], config),
            [(b"via", b"1"), (b"via", b"2, edge"), (b"date", b"D"), (b"server", b"envoy")])
        self.assertEqual(self.mutate([], config),
                         [(b"date", b"D"), (b"server", b"envoy"), (b"via", b"edge")])

    def test_requestId(self):
        config = _ResponseConfig(alwaysSetRequestId=True)
        request = RequestHeaders(b"GET", b"/", headers=HeaderMap([(b"x-request-id", b"r")]))
        self.assertEqual(
            self.mutate([(b"x-request-id", b"up"), (b"date", b"X"), (b"x-request-id", b"up2")],
                        config, request=request),
            [(b"x-request-id", b"up"), (b"date", b"X"), (b"x-request-id", b"r"),
             (b"server", b"envoy")])
        self.assertEqual(self.mutate([], config, request=request),
                         [(b"date", b"D"), (b"server", b"envoy"), (b"x-request-id", b"r")])
        self.assertEqual(self.mutate([], config), [(b"date", b"D"), (b"server", b"envoy")])
