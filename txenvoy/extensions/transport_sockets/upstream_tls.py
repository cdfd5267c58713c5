# -*- test-case-name: tests.extensions.transport_sockets.test_upstream_tls -*-
"""
C{envoy.transport_sockets.tls} on the upstream side: TLS origination for a
cluster's connections (Envoy's C{UpstreamTlsContext}).

The OpenSSL client context is built once, when the config loads, from the
C{CommonTlsContext} compiled by
L{txenvoy.extensions.transport_sockets.tls.loadCertificateOptions}; with
SDS secrets (C{tls_certificate_sds_secret_configs},
C{validation_context_sds_secret_config}) it is rebuilt each time one
changes, and each new connection takes the current one. Each
upstream connection is wrapped in a L{UpstreamTlsProtocol}, a
C{TLSMemoryBIOProtocol} driven by the worker's own reactor, which:

 - hands the connection to the protocol it wraps only once the handshake
   is done, so that the connect timeout covers the handshake and a failed
   handshake reaches the caller as a failed connect (with Envoy's
   transport failure reason, C{TLS_error:|...:TLS_error_end});
 - counts C{cluster.<name>.ssl.*} on the worker's stats;
 - verifies the server as Envoy does: against C{trusted_ca}, SAN matchers
   and pinned hashes when there is a C{validation_context}, and not at all
   without one (no hostname check either way, unless the cluster's
   C{auto_san_validation} asks for the request's host, checked with
   C{service_identity});
 - carries TCP half-close both ways.

Envoy's client defaults are kept: TLS 1.2 to TLS 1.2 unless C{tls_params}
says otherwise, no SNI unless C{sni} (or C{auto_host_sni}) gives one, and
one session kept for resumption (C{max_session_keys}).
"""

import collections
import ipaddress
import re

import attr
from OpenSSL import SSL
from service_identity import CertificateError, VerificationError
from service_identity.cryptography import (
    verify_certificate_hostname,
    verify_certificate_ip_address,
)
from twisted.internet import error
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.logger import Logger
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from txenvoy.config.errors import ConfigError, UnsupportedField
from txenvoy.config.registry import Category, extension
from txenvoy.extensions.transport_sockets.tls import (
    DownstreamTlsProtocol,
    SslConnectionInfo,
    SslStats,
    loadCertificateOptions,
)
from txenvoy.extensions.transport_sockets.tls_sds import SdsUpstreamTlsSocket, buildTlsSocket
from txenvoy.interfaces import IUpstreamTransportSocketFactory
from txenvoy.privates import verifyErrorString

log = Logger(namespace="tls")

#: Envoy's client default: TLS 1.2 at most, whatever the server offers.
DEFAULT_CLIENT_MAXIMUM_VERSION = SSL.TLS1_2_VERSION

# OpenSSL's group names as Envoy's ssl.curves.<name> spells them.
_CURVE_STAT_NAMES = {
    "x25519": "X25519", "x448": "X448", "secp256r1": "P-256", "prime256v1": "P-256",
    "secp384r1": "P-384", "secp521r1": "P-521",
}


class UpstreamTlsError(error.ConnectError):
    """
    The TLS handshake with an upstream host failed: to the caller, a
    failed connect.

    @ivar transportFailureReason: Envoy's text for it (C{TLS_error:|...}),
        or C{""} when the host just closed.
    """

    def __init__(self, transportFailureReason):
        error.ConnectError.__init__(
            self, string=transportFailureReason or "TLS handshake failed: connection closed")
        self.transportFailureReason = transportFailureReason


# -- Envoy's failure reasons ------------------------------------------------------
#
# Envoy (BoringSSL) says "TLS_error:|<packed code>:<library>:OPENSSL_internal:
# <REASON>[:<verify details>]:TLS_error_end". OpenSSL words its reasons in
# lower case and numbers them differently; these tables give BoringSSL's
# names and codes for what an upstream handshake commonly meets.

_ERR_LIB_SSL = 16 << 24
_SSL_REASONS = {
    "certificate verify failed": ("CERTIFICATE_VERIFY_FAILED", 125),
    "wrong version number": ("WRONG_VERSION_NUMBER", 247),
    # What OpenSSL says of a plain-text reply where BoringSSL says
    # WRONG_VERSION_NUMBER.
    "packet length too long": ("WRONG_VERSION_NUMBER", 247),
    "record layer failure": ("WRONG_VERSION_NUMBER", 247),
    "http request": ("WRONG_VERSION_NUMBER", 247),
    "no protocols available": ("NO_SUPPORTED_VERSIONS_ENABLED", 280),
    "unsupported protocol": ("UNSUPPORTED_PROTOCOL", 240),
}
_ALERTS = {
    "close notify": 0, "unexpected message": 10, "bad record mac": 20,
    "decryption failed": 21, "record overflow": 22, "decompression failure": 30,
    "handshake failure": 40, "no certificate": 41, "bad certificate": 42,
    "unsupported certificate": 43, "certificate revoked": 44, "certificate expired": 45,
    "certificate unknown": 46, "illegal parameter": 47, "unknown ca": 48,
    "access denied": 49, "decode error": 50, "decrypt error": 51,
    "export restriction": 60, "protocol version": 70, "insufficient security": 71,
    "internal error": 80, "inappropriate fallback": 86, "user cancelled": 90,
    "no renegotiation": 100, "missing extension": 109, "unsupported extension": 110,
    "certificate unobtainable": 111, "unrecognized name": 112,
    "bad certificate status response": 113, "bad certificate hash value": 114,
    "unknown psk identity": 115, "certificate required": 116,
    "no application protocol": 120, "ech required": 121,
}
# BoringSSL keeps the SSLv3 prefix for the alerts SSLv3 already had.
_SSLV3_ALERTS = frozenset((0, 10, 20, 30, 40, 41, 42, 43, 44, 45, 46, 47))
_ALERT = re.compile(r"^(?:sslv3|tlsv1|tlsv13|tls) alert (.+)$")

#: BoringSSL's wording of the X.509 verify errors seen most.
_VERIFY_ERRORS = {
    2: "unable to get issuer certificate",
    7: "certificate signature failure",
    9: "certificate is not yet valid",
    10: "certificate has expired",
    18: "self signed certificate",
    19: "self signed certificate in certificate chain",
    20: "unable to get local issuer certificate",
    21: "unable to verify the first certificate",
    24: "invalid CA certificate",
    26: "unsupported certificate purpose",
}

CONNECTION_RESET_REASON = (
    "TLS_error:|33554536:system library:OPENSSL_internal:Connection reset by peer"
    ":TLS_error_end")


def _verifyErrorString(errno):
    text = _VERIFY_ERRORS.get(errno)
    if text is None:
        try:
            text = verifyErrorString(errno)
        except Exception:
            text = "error %d" % (errno,)
    return text


def _reasonPart(library, reason):
    alert = _ALERT.match(reason)
    if alert is not None and alert.group(1) in _ALERTS:
        number = _ALERTS[alert.group(1)]
        prefix = "SSLV3_ALERT_" if number in _SSLV3_ALERTS else "TLSV1_ALERT_"
        return "%d:%s:OPENSSL_internal:%s%s" % (
            _ERR_LIB_SSL | (1000 + number), library, prefix,
            alert.group(1).upper().replace(" ", "_"))
    name, code = _SSL_REASONS.get(reason, (reason.upper().replace(" ", "_"), 0))
    return "%d:%s:OPENSSL_internal:%s" % (_ERR_LIB_SSL | code, library, name)


def tlsFailureReason(sslError, verifyDetail=""):
    """
    Envoy's transport failure reason for a failed handshake.

    @param sslError: the C{OpenSSL.SSL.Error}.
    @param verifyDetail: why the certificate was refused
        (C{"verify cert failed: ..."}), or C{""}.
    """
    queue = sslError.args[0] if sslError.args else []
    parts = []
    if isinstance(queue, list):
        for item in queue:
            if isinstance(item, tuple) and len(item) == 3:
                library, _, reason = item
                parts.append("|" + _reasonPart(library or "SSL routines", str(reason)))
    if not parts:
        parts.append("|%d:SSL routines:OPENSSL_internal:%s" % (_ERR_LIB_SSL, sslError))
    return "TLS_error:%s%s:TLS_error_end" % (
        "".join(parts), (":" + verifyDetail) if verifyDetail else "")


def _sanList(certificate):
    from cryptography import x509

    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(name.value) for name in san]


def certificateMatches(certificate, name):
    """
    Whether C{certificate} (C{cryptography}) has a SAN matching C{name}: a
    DNS SAN by RFC 6125 (one leftmost wildcard label), an IP SAN by its
    address, as Envoy's C{DefaultCertValidator::verifySubjectAltName}.
    """
    try:
        ipaddress.ip_address(name)
    except ValueError:
        verify = verify_certificate_hostname
    else:
        verify = verify_certificate_ip_address
    try:
        verify(certificate, name)
    except (VerificationError, CertificateError, ValueError):
        return False
    return True


def _representsEof(sslError):
    if isinstance(sslError, SSL.SysCallError):
        return True
    queue = sslError.args[0] if sslError.args else None
    if not queue:
        return True
    last = queue[-1]
    return isinstance(last, tuple) and str(last[-1]).casefold().startswith("unexpected eof")


#: Server names whose sessions are kept (C{auto_sni} makes one per host).
_MAX_SESSION_NAMES = 256


# -- The transport socket -------------------------------------------------------


class UpstreamTlsProtocol(DownstreamTlsProtocol):
    """
    TLS between an upstream TCP transport and the protocol it wraps (an
    L{txenvoy.upstream.connection.UpstreamConnection}).

    The half-close and certificate checks of the downstream side are
    side-independent and reused; this class connects the wrapped protocol
    only after the handshake, turns a failed handshake into a failed
    connect, and counts the cluster's C{ssl.*} stats.

    @ivar ssl: the L{SslConnectionInfo}, complete once connected.
    @ivar sni: the server name sent, or C{""}.
    @ivar verifySans: names one of which the certificate's SANs must
        match (C{auto_san_validation}), or C{()}.
    @ivar alpnFallback: the ALPN names to offer when the context has none.
    """

    _handshakeError = None
    _verifyDetail = ""
    _failureReported = False
    _sanListChecked = False

    def __init__(self, factory, wrappedProtocol, _connectWrapped=True):
        # The wrapped protocol is connected in _onHandshakeDone.
        BufferingTLSTransport.__init__(self, factory, wrappedProtocol, False)
        self.tlsSocket = factory.tlsSocket
        self.sslStats = factory.sslStats
        self.sni = factory.sni
        self.verifySans = factory.verifySans
        self.alpnFallback = factory.alpnFallback
        # A session is resumed only for the same server name and SAN list:
        # resumption skips the certificate check.
        self.sessionKey = (self.sni, self.verifySans)
        self.ssl = SslConnectionInfo()

    @property
    def bufferSize(self):
        """The TCP transport's write buffer limit (backpressure)."""
        return self.transport.bufferSize

    @bufferSize.setter
    def bufferSize(self, value):
        self.transport.bufferSize = value

    def getHandle(self):
        """
        The socket, for socket options; the TLS connection is
        C{tlsConnection}.
        """
        return self.transport.getHandle()

    # Handshake.

    def _onHandshakeDone(self):
        tls = self.tlsConnection
        stats = self.sslStats
        stats.handshake.inc()
        validation = self.tlsSocket.validation
        self.ssl._complete(tls, validation is not None and validation.verifiesChain
                           and not self._chainFailed, tls.get_certificate(as_cryptography=True))
        if self.ssl.sessionReused:
            stats.session_reused.inc()
        if self.ssl.ciphersuiteString:
            stats.counter("ciphers." + self.ssl.ciphersuiteString).inc()
        if self.ssl.tlsVersion:
            stats.counter("versions." + self.ssl.tlsVersion).inc()
        group = tls.get_group_name()
        if group:
            stats.counter("curves." + _CURVE_STAT_NAMES.get(group.lower(), group)).inc()
        self.tlsSocket.keepSession(tls, self.sessionKey)
        self.wrappedProtocol.makeConnection(self)

    def verifyPeer(self, certificate, errno, depth, ok):
        """
        The OpenSSL verify callback: the downstream side's checks, noting
        why a certificate was refused in Envoy's words.
        """
        if self.verifySans and not self._chainFailed:
            refused = self._verifySanList(certificate, errno, depth, ok)
            if refused:
                return False
        failedBefore = self._chainFailed
        result = DownstreamTlsProtocol.verifyPeer(self, certificate, errno, depth, ok)
        if self._chainFailed and not failedBefore:
            if not ok:
                self._verifyDetail = (
                    "verify cert failed: X509_verify_cert: certificate verification error at "
                    "depth %d: %s" % (depth, _verifyErrorString(errno)))
            else:
                leaf = certificate.to_cryptography()
                if self.tlsSocket.validation.checkLeaf(leaf) == "fail_verify_san":
                    self._verifyDetail = ("verify cert failed: SAN matcher, certificate SANs "
                                          "are [%s]" % (", ".join(_sanList(leaf)),))
                else:
                    self._verifyDetail = "verify cert failed: cert hash and spki"
        return result

    def _verifySanList(self, certificate, errno, depth, ok):
        """
        Envoy's C{verifySubjectAltNameListOverride} check: the chain must
        verify (even with no C{validation_context}, which then trusts no
        one) and the leaf's SANs must match one of L{verifySans}.

        @return: whether the certificate is refused.
        """
        if not ok:
            if self.tlsSocket.validation is not None:
                # The configured validation decides, and words the failure.
                return False
            self._chainFailed = True
            self._verifyFailed("fail_verify_error")
            self._verifyDetail = (
                "verify cert failed: X509_verify_cert: certificate verification error at "
                "depth %d: %s" % (depth, _verifyErrorString(errno)))
            return True
        if depth != 0 or self._sanListChecked:
            return False
        self._sanListChecked = True
        leaf = certificate.to_cryptography()
        if any(certificateMatches(leaf, name) for name in self.verifySans):
            return False
        self._chainFailed = True
        self._verifyFailed("fail_verify_san")
        self._verifyDetail = (
            "verify cert failed: verify SAN list, expected SANs: [%s], certificate SANs: [%s]"
            % (", ".join(self.verifySans), ", ".join(_sanList(leaf))))
        return True

    def _tlsShutdownFinished(self, reason):
        if (reason is not None and not self.handshakeDone and self._handshakeError is None
                and isinstance(reason.value, SSL.Error)):
            self._handshakeError = reason.value
        DownstreamTlsProtocol._tlsShutdownFinished(self, reason)

    def connectionLost(self, reason):
        handshakeDone = self.handshakeDone
        if handshakeDone and self.tlsConnection is not None:
            # TLS 1.3 tickets arrive after the handshake.
            self.tlsSocket.keepSession(self.tlsConnection, self.sessionKey)
        DownstreamTlsProtocol.connectionLost(self, reason)
        if not handshakeDone and not self._failureReported:
            self._failureReported = True
            failure = Failure(UpstreamTlsError(self._failureReason(reason)))
            self.factory.wrappedFactory.clientConnectionFailed(None, failure)

    def _failureReason(self, tcpReason):
        sslError = self._handshakeError
        if sslError is not None and not _representsEof(sslError):
            return tlsFailureReason(sslError, self._verifyDetail)
        if (tcpReason is not None and tcpReason.check(error.ConnectionLost)
                and not tcpReason.check(error.ConnectionDone)):
            return CONNECTION_RESET_REASON
        # The host closed cleanly: Envoy reports no reason.
        return ""


def _verifyCallback(tlsConnection, certificate, errno, depth, ok):
    protocol = tlsConnection.get_app_data()
    try:
        return protocol.verifyPeer(certificate, errno, depth, ok)
    except Exception:
        # Raised from here, the error would leave do_handshake as something
        # other than an SSL error; refuse the certificate instead.
        log.failure("verifying an upstream certificate")
        return False


class _UpstreamTlsFactory(TLSMemoryBIOFactory):
    """One connection's TLS factory, driven by the worker's reactor."""

    protocol = UpstreamTlsProtocol

    def __init__(self, tlsSocket, wrappedFactory, reactor, sni, sslStats, verifySans=(),
                 alpnFallback=()):
        TLSMemoryBIOFactory.__init__(self, tlsSocket, True, wrappedFactory, clock=reactor)
        self.tlsSocket = tlsSocket
        self.sni = sni
        self.sslStats = sslStats
        self.verifySans = verifySans
        self.alpnFallback = alpnFallback


class _NullCounter:
    def inc(self, amount=1):
        pass


class _NullShard:
    def scope(self, prefix):
        return self

    def counter(self, name):
        return _NullCounter()


@implementer(IOpenSSLClientConnectionCreator, IUpstreamTransportSocketFactory)
class UpstreamTlsSocket:
    """
    A compiled C{UpstreamTlsContext}: one OpenSSL client context, built
    once, and L{wrapProtocolFactory} to put TLS under a cluster's
    connections.

    @ivar options: the L{txenvoy.extensions.transport_sockets.tls.CommonTlsOptions}.
    @ivar validation: its C{CertificateValidation}, or C{None} (then the
        server's certificate is not checked at all, as in Envoy).
    @ivar sni: the server name to send, or C{""} for none.
    @ivar autoHostSni: send the host's name instead, when it has one.
    @ivar maxSessionKeys: sessions kept for resumption (0: none).
    @ivar supportsAlpn: it can offer ALPN (what C{auto_config} needs).
    """

    supportsAlpn = True

    def __init__(self, options, sni="", autoHostSni=False, maxSessionKeys=1):
        if len(options.certificates) > 1:
            raise ConfigError("Multiple TLS certificates are not supported for client contexts")
        self.options = options
        self.validation = options.validation
        self.sni = sni
        self.autoHostSni = autoHostSni
        self.maxSessionKeys = maxSessionKeys
        certificate = options.certificates[0] if options.certificates else None
        context = options.newContext(SSL.TLS_CLIENT_METHOD, certificate)
        if self.validation is not None:
            # The callback sees every certificate; it decides what fails.
            context.set_verify(SSL.VERIFY_PEER, _verifyCallback)
        else:
            context.set_verify(SSL.VERIFY_NONE)
        if options.alpnProtocols:
            context.set_alpn_protos(list(options.alpnProtocols))
        if maxSessionKeys:
            context.set_session_cache_mode(SSL.SESS_CACHE_CLIENT)
        self._context = context
        # (server name, SANs to verify) -> the sessions kept for it.
        self._sessions = {}
        self._stats = {}

    # IOpenSSLClientConnectionCreator

    def clientConnectionForTLS(self, tlsProtocol):
        """A new C{SSL.Connection}: SNI, and the last session to resume."""
        connection = SSL.Connection(self._context, None)
        sni = getattr(tlsProtocol, "sni", "") or ""
        if sni:
            connection.set_tlsext_host_name(sni.encode("utf-8"))
        alpnFallback = getattr(tlsProtocol, "alpnFallback", ())
        if alpnFallback and not self.options.alpnProtocols:
            # Envoy offers the cluster's fallback (auto_config's h2 and
            # http/1.1) only when the context configures no alpn_protocols.
            connection.set_alpn_protos(list(alpnFallback))
        if getattr(tlsProtocol, "verifySans", ()) and self.validation is None:
            # auto_san_validation checks the peer even without a
            # validation_context, as Envoy does.
            connection.set_verify(SSL.VERIFY_PEER, _verifyCallback)
        if self.maxSessionKeys:
            kept = self._sessions.get(getattr(tlsProtocol, "sessionKey", None))
            session = kept[-1] if kept else None
            if session is not None:
                connection.set_session(session)
        return connection

    def keepSession(self, tlsConnection, key=("", ())):
        """
        Keep the session of a finished handshake for resumption
        (C{max_session_keys}).

        @param key: the connection's C{(server name, SANs to verify)}; only
            a connection with the same key resumes it.
        """
        if not self.maxSessionKeys:
            return
        session = tlsConnection.get_session()
        if session is None:
            return
        kept = self._sessions.get(key)
        if kept is None:
            if len(self._sessions) >= _MAX_SESSION_NAMES:
                self._sessions.pop(next(iter(self._sessions)))
            kept = self._sessions[key] = collections.deque(maxlen=self.maxSessionKeys)
        kept.append(session)

    def statsFor(self, cluster):
        """
        The L{SslStats} C{cluster.<name>.ssl.*} of one worker's cluster.

        @param cluster: a L{txenvoy.upstream.cluster_manager.ThreadLocalCluster}.
        """
        prefix = cluster.info.statPrefix + "ssl."
        key = (cluster.workerName, prefix)
        stats = self._stats.get(key)
        if stats is None:
            stats = self._stats[key] = SslStats(cluster.dispatcher.stats, prefix)
        return stats

    def sniFor(self, host):
        """The server name to send to C{host}."""
        if self.autoHostSni and host is not None and getattr(host, "hostname", ""):
            return host.hostname
        return self.sni

    def wrapProtocolFactory(self, factory, reactor, host, cluster=None, socketOptions=None):
        """
        Put TLS under the connections C{factory} makes.

        @param factory: the client factory of the plain connection; it sees
            C{clientConnectionFailed} with an L{UpstreamTlsError} when the
            handshake fails, and its protocol is connected only once the
            handshake is done.
        @param reactor: the worker's reactor (TLS write aggregation runs
            on it).
        @param host: the L{txenvoy.upstream.host.Host} connected to.
        @param cluster: the worker's cluster, for C{cluster.<name>.ssl.*};
            without it nothing is counted.
        @param socketOptions: the request's C{TransportSocketOptions}: its
            server name replaces the configured one, and the certificate
            must match one of its SANs (C{auto_sni}, C{auto_san_validation}).
        @return: the factory to connect with.
        """
        stats = self.statsFor(cluster) if cluster is not None else SslStats(_NullShard(), "")
        sni = self.sniFor(host)
        verifySans = ()
        alpnFallback = ()
        if socketOptions is not None:
            sni = socketOptions.serverName or sni
            verifySans = socketOptions.verifySubjectAltNames
            alpnFallback = socketOptions.alpnFallback
        return _UpstreamTlsFactory(self, factory, reactor, sni, stats, verifySans,
                                   alpnFallback)


_UPSTREAM_FIELDS = (
    "common_tls_context", "sni", "auto_host_sni", "allow_renegotiation", "max_session_keys",
    "enforce_rsa_key_usage",
)


@extension(Category.TRANSPORT_SOCKET_UPSTREAM,
           "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
           "envoy.transport_sockets.tls", fields=_UPSTREAM_FIELDS)
def createUpstreamTlsSocket(message, context):
    """Build an L{UpstreamTlsSocket} from an C{UpstreamTlsContext}."""
    path = context.configPath
    if message.allow_renegotiation:
        raise UnsupportedField(path + ".allow_renegotiation", "renegotiation")
    if message.HasField("enforce_rsa_key_usage") and message.enforce_rsa_key_usage.value:
        raise UnsupportedField(path + ".enforce_rsa_key_usage")
    maxSessionKeys = 1
    if message.HasField("max_session_keys"):
        maxSessionKeys = message.max_session_keys.value

    def build(ctc, ctcPath):
        options = loadCertificateOptions(ctc, ctcPath)
        if not ctc.tls_params.tls_maximum_protocol_version:
            options = attr.evolve(options, maximumVersion=DEFAULT_CLIENT_MAXIMUM_VERSION)
        if len(options.certificates) > 1:
            raise ConfigError("%s.common_tls_context.tls_certificates: Multiple TLS "
                              "certificates are not supported for client contexts" % (path,))
        return UpstreamTlsSocket(options, sni=message.sni, autoHostSni=message.auto_host_sni,
                                 maxSessionKeys=maxSessionKeys)

    statPrefix = getattr(context, "clusterStatPrefix", "cluster.") + \
        "client_ssl_socket_factory."
    return buildTlsSocket(message.common_tls_context, context, path, build, statPrefix,
                          SdsUpstreamTlsSocket)
