# -*- test-case-name: tests.extensions.transport_sockets.test_tls -*-
"""
C{envoy.transport_sockets.tls} on the downstream side: TLS termination for a
filter chain (Envoy's C{DownstreamTlsContext}).

The OpenSSL contexts are built once, when the config loads; each accepted
connection only gets an C{OpenSSL.SSL.Connection} from them. The socket is
a C{twisted.protocols.tls.TLSMemoryBIOProtocol} between the TCP transport
and the network filter chain, always driven by the worker's own reactor,
and, unlike Twisted's, it carries TCP half-close: the client's
C{close_notify} (or FIN) reaches the filter chain as C{readConnectionLost},
and the chain's C{loseWriteConnection} sends C{close_notify} and a FIN.

L{loadCertificateOptions} compiles a C{CommonTlsContext} (certificates,
trust, versions, ciphers, ALPN) into L{CommonTlsOptions}, which an upstream
TLS socket can reuse to build client contexts.
"""

import base64
import hashlib
import re
from functools import cached_property
from urllib.parse import quote

import attr
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL, crypto
from OpenSSL.SSL import Error, WantReadError, ZeroReturnError
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IOpenSSLServerConnectionCreator,
)
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from txenvoy.config.datasource import readDataSource
from txenvoy.config.errors import ConfigError, UnsupportedField
from txenvoy.config.fields import checkFields
from txenvoy.config.registry import Category, extension
from txenvoy.extensions.transport_sockets.tls_sds import SdsDownstreamTlsSocket, buildTlsSocket
from txenvoy.interfaces import IDownstreamTransportSocketFactory
from txenvoy.network.filter import forwardReadConnectionLost
from txenvoy.privates import TLSTransport, sessionReused
from txenvoy.server.logging import componentLogger, connTag

log = Logger(namespace="tls")
connectionLog = componentLogger("connection")

_VERSIONS = {
    1: SSL.TLS1_VERSION,
    2: SSL.TLS1_1_VERSION,
    3: SSL.TLS1_2_VERSION,
    4: SSL.TLS1_3_VERSION,
}
#: Envoy's defaults for both sides: TLS 1.2 to TLS 1.3.
DEFAULT_MINIMUM_VERSION = SSL.TLS1_2_VERSION
DEFAULT_MAXIMUM_VERSION = SSL.TLS1_3_VERSION

#: Envoy's default TLS 1.2 cipher suites (BoringSSL's equal-preference
#: groups flattened, in order).
DEFAULT_CIPHER_SUITES = (
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
)
# Names from Envoy's current and earlier default lists: if this OpenSSL
# refuses one of them it is dropped, not reported as a config error.
_ENVOY_DEFAULT_CIPHER_NAMES = frozenset(DEFAULT_CIPHER_SUITES + (
    "ECDHE-ECDSA-AES128-SHA", "ECDHE-RSA-AES128-SHA", "AES128-GCM-SHA256", "AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA", "ECDHE-RSA-AES256-SHA", "AES256-GCM-SHA384", "AES256-SHA",
))
_DEFAULT_CURVES = ({"X25519", "P-256"}, {"X25519MLKEM768", "X25519", "P-256"})
_CURVES = {"P-256": ec.SECP256R1, "P-384": ec.SECP384R1, "P-521": ec.SECP521R1}
# OpenSSL's group names as Envoy's ssl.curves.<name> spells them.
_CURVE_STAT_NAMES = {
    "x25519": "X25519", "x448": "X448", "secp256r1": "P-256", "prime256v1": "P-256",
    "secp384r1": "P-384", "secp521r1": "P-521",
}

_X509_V_ERR_CERT_HAS_EXPIRED = 10
SSL_MAX_SID_CTX_LENGTH = 32
_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.S)


def _source(ds):
    """How Envoy names a DataSource in its messages."""
    return ds.filename if ds.WhichOneof("specifier") == "filename" else "<inline>"


def _loadCertificates(ds, path):
    data = readDataSource(ds, path)
    blocks = _PEM_CERTIFICATE.findall(data)
    try:
        certificates = [x509.load_pem_x509_certificate(b) for b in blocks]
    except ValueError:
        certificates = []
    return certificates


# -- Certificates ---------------------------------------------------------------


@attr.s(frozen=True)
class CertificateEntry:
    """
    One C{TlsCertificate}: a certificate, its private key and the rest of
    its chain.

    @ivar certificate: the leaf, a C{cryptography.x509.Certificate}.
    @ivar privateKey: its private key (a C{cryptography} key).
    @ivar chain: intermediates sent after the leaf.
    @ivar dnsNames: lowercase DNS names the leaf is for (SAN, else CN), for
        picking a certificate by SNI.
    """

    certificate = attr.ib()
    privateKey = attr.ib()
    chain = attr.ib(default=())
    dnsNames = attr.ib(default=())


def _dnsNames(certificate):
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    if not names:
        names = [a.value for a in certificate.subject.get_attributes_for_oid(
            x509.NameOID.COMMON_NAME) if isinstance(a.value, str)]
    return tuple(n.lower() for n in names)


def loadTlsCertificate(tlsCertificate, path):
    """
    Load one C{TlsCertificate} (PEM C{certificate_chain} and
    C{private_key}, optional C{password}).

    @return: a L{CertificateEntry}.
    @raise ConfigError: with Envoy's wording, naming the file.
    """
    checkFields(tlsCertificate, ("certificate_chain", "private_key", "password"), path)
    if not tlsCertificate.HasField("certificate_chain"):
        raise ConfigError("%s: Failed to load incomplete certificate from path: " % (path,))
    chainSource = _source(tlsCertificate.certificate_chain)
    try:
        certificates = _loadCertificates(tlsCertificate.certificate_chain,
                                         path + ".certificate_chain")
    except ConfigError as e:
        raise ConfigError("%s: Failed to load incomplete certificate from %s: certificate chain "
                          "not set (%s)" % (path, chainSource, e))
    if not certificates:
        raise ConfigError("%s.certificate_chain: Failed to load certificate chain from %s"
                          % (path, chainSource))
    if not tlsCertificate.HasField("private_key"):
        raise ConfigError("%s: Failed to load incomplete private key from path: " % (path,))
    keySource = _source(tlsCertificate.private_key)
    keyData = readDataSource(tlsCertificate.private_key, path + ".private_key")
    password = None
    if tlsCertificate.HasField("password"):
        password = readDataSource(tlsCertificate.password, path + ".password") or None
    try:
        # The full RSA consistency check costs ~150 ms a key; OpenSSL's
        # check_privatekey below still proves the key belongs to the
        # certificate, which is what OpenSSL-based servers rely on.
        key = serialization.load_pem_private_key(
            keyData, password, unsafe_skip_rsa_key_validation=True)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise ConfigError("%s.private_key: Failed to load private key from %s, Cause: %s"
                          % (path, keySource, e))
    leaf = certificates[0]
    # The check OpenSSL makes, done here to name the files in the message.
    context = SSL.Context(SSL.TLS_METHOD)
    try:
        context.use_certificate(leaf)
        context.use_privatekey(key)
        context.check_privatekey()
    except Error:
        raise ConfigError("%s: Failed to load private key from %s: it does not match the "
                          "certificate in %s" % (path, keySource, chainSource))
    return CertificateEntry(leaf, key, tuple(certificates[1:]), _dnsNames(leaf))


# -- Peer certificate validation ------------------------------------------------


def dnsNameMatch(pattern, name):
    """
    Envoy's C{Utility::dnsNameMatch}: C{name} from the config against a DNS
    SAN that may be a wildcard (C{*.example.com} covers exactly one label).
    """
    pattern, name = pattern.lower(), name.lower()
    if name == pattern:
        return True
    if name.startswith("*."):
        dot = pattern.find(".")
        return dot > 0 and pattern[dot:] == name[1:]
    return False


_SAN_EMAIL, _SAN_DNS, _SAN_URI, _SAN_IP, _SAN_OTHER = 1, 2, 3, 4, 5


def _peerSans(certificate):
    """C{{sanType: [str, ...]}} of a certificate."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return {}
    return {
        _SAN_DNS: san.get_values_for_type(x509.DNSName),
        _SAN_URI: san.get_values_for_type(x509.UniformResourceIdentifier),
        _SAN_EMAIL: san.get_values_for_type(x509.RFC822Name),
        _SAN_IP: [str(a) for a in san.get_values_for_type(x509.IPAddress)],
    }


class SanMatcher:
    """One C{SubjectAltNameMatcher}: a SAN type and a string matcher."""

    def __init__(self, sanType, stringMatcher, path):
        from txenvoy.router.matcher import compileStringMatcher

        self.sanType = sanType
        self.description = (sanType, stringMatcher.SerializeToString(deterministic=True))
        match = compileStringMatcher(stringMatcher, path + ".matcher")
        if (sanType == _SAN_DNS and stringMatcher.WhichOneof("match_pattern") == "exact"):
            exact = stringMatcher.exact
            self._match = lambda value: dnsNameMatch(exact, value)
        else:
            self._match = lambda value: match(value.encode("utf-8"))

    def matches(self, sans):
        """@param sans: the peer's L{_peerSans}."""
        return any(self._match(v) for v in sans.get(self.sanType, ()))


def _spki(certificate):
    der = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).digest()


class CertificateValidation:
    """
    A compiled C{CertificateValidationContext}: who may present a
    certificate, and what it must say.

    @ivar trustedCa: trusted CA certificates (C{cryptography}).
    @ivar systemRootCerts: also trust the system's roots.
    @ivar sanMatchers: L{SanMatcher}s; one must match.
    @ivar certificateHashes: allowed SHA-256 digests of the whole
        certificate; with L{spkiHashes}, one of either must match.
    @ivar spkiHashes: allowed SHA-256 digests of the SubjectPublicKeyInfo.
    @ivar allowExpired: accept an expired certificate.
    @ivar acceptUntrusted: C{trust_chain_verification: ACCEPT_UNTRUSTED}.
    @ivar maxVerifyDepth: C{max_verify_depth}, or C{None}.
    """

    def __init__(self, trustedCa=(), systemRootCerts=False, sanMatchers=(),
                 certificateHashes=(), spkiHashes=(), allowExpired=False,
                 acceptUntrusted=False, maxVerifyDepth=None):
        self.trustedCa = tuple(trustedCa)
        self.systemRootCerts = systemRootCerts
        self.sanMatchers = tuple(sanMatchers)
        self.certificateHashes = frozenset(certificateHashes)
        self.spkiHashes = frozenset(spkiHashes)
        self.allowExpired = allowExpired
        self.acceptUntrusted = acceptUntrusted
        self.maxVerifyDepth = maxVerifyDepth

    @property
    def verifiesChain(self):
        """Whether the chain is checked against trusted roots."""
        return bool(self.trustedCa) or self.systemRootCerts

    @property
    def checksLeaf(self):
        """Whether the leaf itself is checked (SAN, hash or SPKI)."""
        return bool(self.sanMatchers or self.certificateHashes or self.spkiHashes)

    def verifyMode(self, requireCertificate=False):
        """
        The OpenSSL verify mode for a server: ask for a client certificate
        when there is something to check it against; fail without one when
        it is required or when its SAN, hash or key is pinned (as Envoy
        1.40 does).
        """
        mode = SSL.VERIFY_NONE
        if self.verifiesChain or self.acceptUntrusted:
            mode = SSL.VERIFY_PEER
        if self.checksLeaf or requireCertificate:
            mode = SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT
        return mode

    def checkLeaf(self, certificate):
        """
        @param certificate: the peer's leaf (C{cryptography}).
        @return: C{None}, or the stat that names the failure
            (C{"fail_verify_san"}, C{"fail_verify_cert_hash"}).
        """
        if self.sanMatchers:
            sans = _peerSans(certificate)
            if not any(m.matches(sans) for m in self.sanMatchers):
                return "fail_verify_san"
        if self.certificateHashes or self.spkiHashes:
            digest = certificate.fingerprint(hashes.SHA256())
            if digest not in self.certificateHashes and _spki(certificate) not in self.spkiHashes:
                return "fail_verify_cert_hash"
        return None

    def configure(self, context):
        """Install the trust store on an C{SSL.Context}."""
        store = context.get_cert_store()
        for ca in self.trustedCa:
            store.add_cert(crypto.X509.from_cryptography(ca))
        if self.systemRootCerts:
            context.set_default_verify_paths()
        if self.maxVerifyDepth is not None:
            context.set_verify_depth(self.maxVerifyDepth)


def _hexDigest(text, path):
    value = text.replace(":", "")
    try:
        digest = bytes.fromhex(value)
    except ValueError:
        digest = b""
    if len(digest) != 32:
        raise ConfigError("%s: Invalid hex-encoded SHA-256 %s" % (path, text))
    return digest


def _spkiDigest(text, path):
    try:
        digest = base64.b64decode(text, validate=True)
    except ValueError:
        digest = b""
    if len(digest) != 32:
        raise ConfigError("%s: Invalid base64-encoded SHA-256 %s" % (path, text))
    return digest


_VALIDATION_FIELDS = (
    "trusted_ca", "system_root_certs", "verify_certificate_spki", "verify_certificate_hash",
    "match_typed_subject_alt_names", "match_subject_alt_names", "allow_expired_certificate",
    "trust_chain_verification", "max_verify_depth", "only_verify_leaf_cert_crl",
)


def loadValidationContext(vc, path):
    """
    Compile a C{CertificateValidationContext}.

    @return: a L{CertificateValidation}.
    """
    checkFields(vc, _VALIDATION_FIELDS, path)
    trusted = []
    if vc.HasField("trusted_ca"):
        trusted = _loadCertificates(vc.trusted_ca, path + ".trusted_ca")
        if not trusted:
            raise ConfigError("%s.trusted_ca: Failed to load trusted CA certificates from %s"
                              % (path, _source(vc.trusted_ca)))
    matchers = []
    for i, m in enumerate(vc.match_typed_subject_alt_names):
        p = "%s.match_typed_subject_alt_names[%d]" % (path, i)
        # oid only names an OTHER_NAME SAN, which is refused below.
        checkFields(m, ("san_type", "matcher"), p)
        if m.san_type == _SAN_OTHER:
            raise UnsupportedField(p + ".san_type", "OTHER_NAME")
        matchers.append(SanMatcher(m.san_type, m.matcher, p))
    for i, m in enumerate(vc.match_subject_alt_names):
        p = "%s.match_subject_alt_names[%d]" % (path, i)
        for sanType in (_SAN_DNS, _SAN_URI, _SAN_EMAIL, _SAN_IP):
            matchers.append(SanMatcher(sanType, m, p))
    systemRoots = vc.HasField("system_root_certs")
    if matchers and not (trusted or systemRoots):
        raise ConfigError("%s: SAN-based verification of peer certificates without trusted CA "
                          "is insecure and not allowed" % (path,))
    return CertificateValidation(
        trustedCa=trusted, systemRootCerts=systemRoots, sanMatchers=matchers,
        certificateHashes=[_hexDigest(h, path + ".verify_certificate_hash")
                           for h in vc.verify_certificate_hash],
        spkiHashes=[_spkiDigest(h, path + ".verify_certificate_spki")
                    for h in vc.verify_certificate_spki],
        allowExpired=vc.allow_expired_certificate,
        acceptUntrusted=vc.trust_chain_verification == 1,
        maxVerifyDepth=vc.max_verify_depth.value if vc.HasField("max_verify_depth") else None,
    )


# -- CommonTlsContext -----------------------------------------------------------


@attr.s(frozen=True)
class CommonTlsOptions:
    """
    A compiled C{CommonTlsContext}, shared by both sides of TLS.

    @ivar certificates: L{CertificateEntry}s, in config order.
    @ivar validation: a L{CertificateValidation}, or C{None}.
    @ivar alpnProtocols: ALPN names (C{bytes}) in preference order.
    @ivar minimumVersion: an C{OpenSSL.SSL.TLS*_VERSION}.
    @ivar maximumVersion: an C{OpenSSL.SSL.TLS*_VERSION}.
    @ivar cipherList: the OpenSSL TLS 1.2 cipher string.
    @ivar tls13Ciphersuites: the OpenSSL TLS 1.3 suites string, or C{None}.
    @ivar curve: a single C{cryptography} curve to use, or C{None}.
    """

    certificates = attr.ib(default=())
    validation = attr.ib(default=None)
    alpnProtocols = attr.ib(default=())
    minimumVersion = attr.ib(default=DEFAULT_MINIMUM_VERSION)
    maximumVersion = attr.ib(default=DEFAULT_MAXIMUM_VERSION)
    cipherList = attr.ib(default=":".join(DEFAULT_CIPHER_SUITES).encode("ascii"))
    tls13Ciphersuites = attr.ib(default=None)
    curve = attr.ib(default=None)

    def fingerprint(self):
        """
        A digest of the certificates and the trust configuration, used as
        the session id context so that a session only resumes where the
        same checks would pass.
        """
        h = hashlib.sha256()
        for entry in self.certificates:
            h.update(entry.certificate.fingerprint(hashes.SHA256()))
        v = self.validation
        if v is not None:
            for ca in v.trustedCa:
                h.update(ca.fingerprint(hashes.SHA256()))
            h.update(repr((v.systemRootCerts, sorted(v.certificateHashes),
                           sorted(v.spkiHashes), v.allowExpired, v.acceptUntrusted,
                           [m.description for m in v.sanMatchers])).encode())
        return h.digest()

    def newContext(self, method=SSL.TLS_METHOD, certificate=None):
        """
        A new C{SSL.Context} with this config's versions, ciphers and trust
        store, and C{certificate} (a L{CertificateEntry}) if given. The
        verify mode and ALPN depend on the side and are left to the caller.
        """
        context = SSL.Context(method)
        context.set_min_proto_version(self.minimumVersion)
        context.set_max_proto_version(self.maximumVersion)
        context.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION)
        context.set_mode(SSL.MODE_RELEASE_BUFFERS)
        context.set_cipher_list(self.cipherList)
        if self.tls13Ciphersuites:
            context.set_tls13_ciphersuites(self.tls13Ciphersuites)
        if self.curve is not None:
            context.set_tmp_ecdh(self.curve())
        if certificate is not None:
            context.use_certificate(certificate.certificate)
            context.use_privatekey(certificate.privateKey)
            for extra in certificate.chain:
                context.add_extra_chain_cert(extra)
        if self.validation is not None:
            self.validation.configure(context)
        return context


def _cipherSettings(params, path):
    configured = list(params.cipher_suites)
    if not configured:
        return ":".join(DEFAULT_CIPHER_SUITES).encode("ascii"), None
    names = []
    for entry in configured:
        names.extend(entry.strip("[]").split("|") if entry.startswith("[") else [entry])
    tls12, tls13, rejected = [], [], []
    for name in names:
        scratch = SSL.Context(SSL.TLS_METHOD)
        try:
            if name.startswith("TLS_"):
                scratch.set_tls13_ciphersuites(name.encode("ascii"))
                tls13.append(name)
            else:
                scratch.set_cipher_list(name.encode("ascii"))
                tls12.append(name)
        except (Error, UnicodeEncodeError):
            if name not in _ENVOY_DEFAULT_CIPHER_NAMES:
                rejected.append(name)
    if rejected:
        raise ConfigError(
            "%s.cipher_suites: Failed to initialize cipher suites %s. The following ciphers "
            "were rejected when tried individually: %s"
            % (path, ":".join(configured), ":".join(rejected)))
    cipherList = ":".join(tls12 or DEFAULT_CIPHER_SUITES).encode("ascii")
    return cipherList, (":".join(tls13).encode("ascii") if tls13 else None)


def _curveSetting(params, path):
    curves = list(params.ecdh_curves)
    if not curves or set(curves) in _DEFAULT_CURVES:
        return None
    if len(curves) == 1 and curves[0] in _CURVES:
        return _CURVES[curves[0]]
    if all(c in _CURVES or c in ("X25519", "X25519MLKEM768", "X448") for c in curves):
        raise UnsupportedField(path + ".ecdh_curves", "only one NIST curve, or the default list")
    raise ConfigError("%s.ecdh_curves: Failed to initialize ECDH curves %s"
                      % (path, ":".join(curves)))


_COMMON_FIELDS = ("tls_params", "tls_certificates", "validation_context", "alpn_protocols")


def loadCertificateOptions(commonTlsContext, path):
    """
    Compile a C{CommonTlsContext} once, at config load: read and check the
    certificates and keys, the trust store, the protocol versions, the
    cipher suites and the ALPN list.

    Certificate providers, SDS secrets, key logs and custom handshakers
    are L{UnsupportedField}s.

    @param path: the field path of C{commonTlsContext}, for messages.
    @return: L{CommonTlsOptions}.
    @raise ConfigError: for a bad value, with Envoy's wording.
    """
    ctc = commonTlsContext
    checkFields(ctc, _COMMON_FIELDS, path)
    certificates = tuple(loadTlsCertificate(c, "%s.tls_certificates[%d]" % (path, i))
                         for i, c in enumerate(ctc.tls_certificates))
    validation = None
    if ctc.HasField("validation_context"):
        validation = loadValidationContext(ctc.validation_context, path + ".validation_context")
    options = {}
    if ctc.HasField("tls_params"):
        params = ctc.tls_params
        p = path + ".tls_params"
        checkFields(params, ("tls_minimum_protocol_version", "tls_maximum_protocol_version",
                              "cipher_suites", "ecdh_curves"), p)
        options["minimumVersion"] = _VERSIONS.get(params.tls_minimum_protocol_version,
                                                  DEFAULT_MINIMUM_VERSION)
        options["maximumVersion"] = _VERSIONS.get(params.tls_maximum_protocol_version,
                                                  DEFAULT_MAXIMUM_VERSION)
        options["cipherList"], options["tls13Ciphersuites"] = _cipherSettings(params, p)
        options["curve"] = _curveSetting(params, p)
    return CommonTlsOptions(
        certificates=certificates, validation=validation,
        alpnProtocols=tuple(a.encode("ascii") for a in ctc.alpn_protocols), **options)


# -- Stats and connection info ---------------------------------------------------


class SslStats:
    """
    The C{<listener prefix>ssl.*} stats of one listener on one worker
    (Envoy's C{SslStats}); per-version, per-cipher and per-curve counters
    are made on first use.
    """

    COUNTERS = ("connection_error", "handshake", "session_reused", "no_certificate",
                "fail_verify_no_cert", "fail_verify_error", "fail_verify_san",
                "fail_verify_cert_hash")

    def __init__(self, shard, prefix):
        self._scope = shard.scope(prefix)
        self._named = {}
        for name in self.COUNTERS:
            setattr(self, name, self._scope.counter(name))

    def counter(self, name):
        """A counter under the prefix, cached (C{versions.TLSv1.3}...)."""
        c = self._named.get(name)
        if c is None:
            c = self._named[name] = self._scope.counter(name)
        return c


def _pem(certificate):
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


class SslConnectionInfo:
    """
    What the TLS handshake established on one downstream connection
    (Envoy's C{Ssl::ConnectionInfo}), set as C{connection.ssl}. Certificate
    details are computed on first use.

    @ivar handshakeComplete: whether the handshake finished.
    @ivar tlsVersion: C{"TLSv1.3"}...
    @ivar ciphersuiteString: the negotiated cipher's name.
    @ivar alpn: the negotiated ALPN protocol (C{str}) or C{None}.
    @ivar sni: the server name the client sent, or C{""}.
    @ivar sessionReused: whether the session was resumed.
    @ivar peerCertificatePresented: whether the client sent a certificate.
    @ivar peerCertificateValidated: whether it was verified against the
        trusted CAs and passed the SAN/hash checks.
    """

    handshakeComplete = False
    tlsVersion = None
    ciphersuiteString = None
    alpn = None
    sni = ""
    sessionReused = False
    peerCertificatePresented = False
    peerCertificateValidated = False
    _peer = None
    _peerChain = ()
    _local = None

    def _complete(self, tlsConnection, validated, local):
        self.handshakeComplete = True
        self.tlsVersion = tlsConnection.get_protocol_version_name()
        self.ciphersuiteString = tlsConnection.get_cipher_name()
        negotiated = tlsConnection.get_alpn_proto_negotiated()
        self.alpn = negotiated.decode("ascii", "replace") if negotiated else None
        sni = tlsConnection.get_servername()
        self.sni = sni.decode("ascii", "replace") if sni else ""
        self.sessionReused = sessionReused(tlsConnection)
        peer = tlsConnection.get_peer_certificate(as_cryptography=True)
        self._peer = peer
        self.peerCertificatePresented = peer is not None
        self.peerCertificateValidated = peer is not None and validated
        chain = tlsConnection.get_peer_cert_chain(as_cryptography=True)
        self._peerChain = tuple(chain or ())
        self._local = local

    @cached_property
    def _peerSans(self):
        return _peerSans(self._peer) if self._peer is not None else {}

    @cached_property
    def _localSans(self):
        return _peerSans(self._local) if self._local is not None else {}

    @cached_property
    def sha256PeerCertificateDigest(self):
        """Hex SHA-256 of the peer certificate, or C{""}."""
        return self._peer.fingerprint(hashes.SHA256()).hex() if self._peer else ""

    @cached_property
    def serialNumberPeerCertificate(self):
        """The peer certificate's serial number in lowercase hex, or C{""}."""
        if self._peer is None:
            return ""
        n = self._peer.serial_number
        return n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big").hex()

    @cached_property
    def subjectPeerCertificate(self):
        """The peer certificate's subject, RFC 2253 style, or C{""}."""
        return self._peer.subject.rfc4514_string() if self._peer else ""

    @cached_property
    def issuerPeerCertificate(self):
        """The peer certificate's issuer, RFC 2253 style, or C{""}."""
        return self._peer.issuer.rfc4514_string() if self._peer else ""

    @property
    def uriSanPeerCertificate(self):
        """The peer certificate's URI SANs."""
        return tuple(self._peerSans.get(_SAN_URI, ()))

    @property
    def dnsSansPeerCertificate(self):
        """The peer certificate's DNS SANs."""
        return tuple(self._peerSans.get(_SAN_DNS, ()))

    @property
    def ipSansPeerCertificate(self):
        """The peer certificate's IP SANs, as text."""
        return tuple(self._peerSans.get(_SAN_IP, ()))

    @property
    def emailSansPeerCertificate(self):
        """The peer certificate's e-mail SANs."""
        return tuple(self._peerSans.get(_SAN_EMAIL, ()))

    @property
    def validFromPeerCertificate(self):
        """The peer certificate's C{notBefore} (UTC), or C{None}."""
        return self._peer.not_valid_before_utc if self._peer else None

    @property
    def expirationPeerCertificate(self):
        """The peer certificate's C{notAfter} (UTC), or C{None}."""
        return self._peer.not_valid_after_utc if self._peer else None

    @cached_property
    def pemEncodedPeerCertificate(self):
        """The peer certificate in PEM, or C{""}."""
        return _pem(self._peer) if self._peer else ""

    @cached_property
    def urlEncodedPemEncodedPeerCertificate(self):
        """The peer certificate in URL-encoded PEM (for XFCC C{Cert=})."""
        return quote(self.pemEncodedPeerCertificate, safe="") if self._peer else ""

    @cached_property
    def urlEncodedPemEncodedPeerCertificateChain(self):
        """The peer's chain in URL-encoded PEM (for XFCC C{Chain=})."""
        return quote("".join(_pem(c) for c in self._peerChain), safe="")

    @property
    def subjectLocalCertificate(self):
        """Our certificate's subject, RFC 2253 style, or C{""}."""
        return self._local.subject.rfc4514_string() if self._local else ""

    @property
    def uriSanLocalCertificate(self):
        """Our certificate's URI SANs (for XFCC C{By=})."""
        return tuple(self._localSans.get(_SAN_URI, ()))

    @property
    def dnsSansLocalCertificate(self):
        """Our certificate's DNS SANs."""
        return tuple(self._localSans.get(_SAN_DNS, ()))


def _representsEof(error):
    if isinstance(error, SSL.SysCallError):
        return True
    queue = error.args[0] if error.args else None
    if not queue:
        return True
    reason = queue[-1][-1] if isinstance(queue[-1], tuple) else ""
    return str(reason).casefold().startswith("unexpected eof")


def _hasReason(error, text):
    queue = error.args[0] if error.args else None
    if not isinstance(queue, list):
        return False
    return any(isinstance(e, tuple) and text in str(e[-1]) for e in queue)


# -- The transport socket -------------------------------------------------------


@implementer(IHalfCloseableProtocol)
class DownstreamTlsProtocol(TLSTransport):
    """
    TLS between the TCP transport and the network filter chain of one
    downstream connection.

    Beyond Twisted's C{TLSMemoryBIOProtocol}: it counts the listener's
    C{ssl.*} stats, sets C{connection.negotiatedProtocol} and
    C{connection.ssl} when the handshake completes, checks the client
    certificate as the C{DownstreamTlsContext} says, and carries half-close
    both ways.
    """

    _readClosed = False
    _writeClosed = False
    _closeWritePending = False
    _closeNotifySent = False
    _peerFinished = False
    _failureCounted = False
    _chainFailed = False
    _leafChecked = False
    _verifyFailureCounted = False

    def __init__(self, factory, wrappedProtocol, _connectWrapped=True):
        TLSTransport.__init__(self, factory, wrappedProtocol, _connectWrapped)
        self.connection = factory.connection
        self.tlsSocket = factory.tlsSocket
        self.sslStats = factory.tlsSocket.statsFor(factory.connection)

    # Handshake.

    def _onHandshakeDone(self):
        tls = self.tlsConnection
        stats = self.sslStats
        stats.handshake.inc()
        info = self.connection.ssl
        info._complete(tls, self.tlsSocket.validation is not None
                       and self.tlsSocket.validation.verifiesChain and not self._chainFailed,
                       tls.get_certificate(as_cryptography=True))
        if info.sessionReused:
            stats.session_reused.inc()
        if not info.peerCertificatePresented:
            stats.no_certificate.inc()
        if info.ciphersuiteString:
            stats.counter("ciphers." + info.ciphersuiteString).inc()
        if info.tlsVersion:
            stats.counter("versions." + info.tlsVersion).inc()
        group = tls.get_group_name()
        if group:
            stats.counter("curves." + _CURVE_STAT_NAMES.get(group.lower(), group)).inc()
        self.connection.negotiatedProtocol = info.alpn

    def _tlsShutdownFinished(self, reason):
        if reason is not None and not self.handshakeDone and not self._failureCounted:
            self._failureCounted = True
            self._countHandshakeFailure(reason.value)
            if connectionLog.debugEnabled:
                self._logHandshakeFailure(reason)
        TLSTransport._tlsShutdownFinished(self, reason)

    def _logHandshakeFailure(self, reason):
        # Envoy 1.40: [C2] remote address:127.0.0.1:40790,TLS_error:|268436...:TLS_error_end
        from txenvoy.extensions.transport_sockets.upstream_tls import tlsFailureReason

        if isinstance(reason.value, Error):
            why = tlsFailureReason(reason.value)
        else:
            why = reason.getErrorMessage()
        remote = self.connection.remoteAddress
        connectionLog.debug("%sremote address:%s:%s,%s",
                            connTag(self.connection.streamInfo.connectionId),
                            remote[0], remote[1], why)

    def _countHandshakeFailure(self, error):
        if self._verifyFailureCounted or not isinstance(error, Error) or _representsEof(error):
            return
        if _hasReason(error, "peer did not return a certificate"):
            self.sslStats.fail_verify_no_cert.inc()
        else:
            self.sslStats.connection_error.inc()

    def verifyPeer(self, certificate, errno, depth, ok):
        """
        The OpenSSL verify callback for this connection.

        @return: whether to go on with the handshake.
        """
        validation = self.tlsSocket.validation
        if validation is None:
            return True
        if not ok:
            if not validation.verifiesChain:
                # Nothing to check the chain against: pinned hashes or a
                # required certificate only.
                return True
            if validation.allowExpired and errno == _X509_V_ERR_CERT_HAS_EXPIRED:
                return True
            self._chainFailed = True
            self._verifyFailed("fail_verify_error")
            return validation.acceptUntrusted
        if depth == 0 and not self._leafChecked:
            self._leafChecked = True
            failure = validation.checkLeaf(certificate.to_cryptography())
            if failure is not None:
                self._chainFailed = True
                self._verifyFailed(failure)
                return validation.acceptUntrusted
        return True

    def _verifyFailed(self, stat):
        if not self._verifyFailureCounted:
            self._verifyFailureCounted = True
            getattr(self.sslStats, stat).inc()

    # Reading, with close_notify and FIN as a read half-close.

    def _flushReceiveBIO(self):
        while not self._lostTLSConnection and not self._readClosed:
            try:
                data = self.tlsConnection.recv(2 ** 15)
            except WantReadError:
                break
            except ZeroReturnError:
                self._onCloseNotify()
                break
            except Error:
                self._tlsShutdownFinished(Failure())
            else:
                if not self._aborted:
                    ProtocolWrapper.dataReceived(self, data)
        self._flushSendBIO()

    def _onCloseNotify(self):
        if IHalfCloseableProtocol(self.wrappedProtocol, None) is None:
            # Twisted's behaviour: answer close_notify and close.
            self._shutdownTLS()
            self._tlsShutdownFinished(None)
            return
        self._readClosed = True
        IHalfCloseableProtocol(self.wrappedProtocol).readConnectionLost()
        if self._writeClosed:
            self.transport.loseConnection()

    def readConnectionLost(self):
        """The client's FIN, from the TCP transport."""
        self._peerFinished = True
        if not self.handshakeDone:
            # The client gave up before the handshake finished.
            self.transport.loseConnection()
            return
        if self._readClosed:
            if self._writeClosed:
                self.transport.loseConnection()
            return
        # A FIN without close_notify ends the client's side all the same.
        self._readClosed = True
        forwardReadConnectionLost(self.wrappedProtocol, self)
        if self._writeClosed:
            self.transport.loseConnection()

    # Writing, with loseWriteConnection as close_notify then FIN.

    def _write(self, data):
        if self._closeNotifySent or (self._writeClosed and not self._closeWritePending):
            return
        TLSTransport._write(self, data)

    def loseWriteConnection(self):
        """
        Send what is buffered, then C{close_notify} and a FIN; reading goes
        on.
        """
        if self._writeClosed or self.disconnecting:
            return
        if not self.handshakeDone:
            self.loseConnection()
            return
        self.flushSmallWrites()
        self._writeClosed = True
        if self.appDataPending:
            self._closeWritePending = True
            return
        self._sendCloseNotify()

    def _unbufferPendingWrites(self):
        TLSTransport._unbufferPendingWrites(self)
        if self._closeWritePending and not self.appDataPending:
            self._closeWritePending = False
            self._sendCloseNotify()

    def _sendCloseNotify(self, close=False):
        self._closeNotifySent = True
        try:
            self.tlsConnection.shutdown()
        except Error:
            pass
        self._flushSendBIO()
        if close or self._readClosed:
            self.transport.loseConnection()
        else:
            self.transport.loseWriteConnection()

    def writeConnectionLost(self):
        """Our FIN went out."""
        p = IHalfCloseableProtocol(self.wrappedProtocol, None)
        if p is not None:
            p.writeConnectionLost()

    def loseConnection(self):
        """
        Send what is buffered and C{close_notify}, then close the socket
        without waiting for the client's C{close_notify} (Envoy's close
        with C{FlushWrite}). As with a TCP transport, a registered producer
        does not hold the close back.
        """
        if self.disconnecting or not self.connected:
            return
        if self._writeClosed and not self._closeWritePending:
            # close_notify and FIN are out already; only the socket is left.
            self.disconnecting = True
            self.transport.loseConnection()
            return
        if self.handshakeDone and not self.appDataPending:
            self.flushSmallWrites()
            self.disconnecting = True
            self._sendCloseNotify(close=True)
            return
        TLSTransport.loseConnection(self)
        if self._peerFinished:
            # No close_notify can come back over a finished TCP stream.
            self.transport.loseConnection()


class _HeadFactory(Factory):
    """Hands out the one network filter chain head it was made with."""

    def __init__(self, head):
        self._head = head

    def buildProtocol(self, addr):
        return self._head


class _DownstreamTlsFactory(TLSMemoryBIOFactory):
    """The per-connection TLS factory, driven by the worker's reactor."""

    protocol = DownstreamTlsProtocol

    def __init__(self, tlsSocket, connection, head):
        TLSMemoryBIOFactory.__init__(self, tlsSocket, False, _HeadFactory(head),
                                     clock=connection.dispatcher.reactor)
        self.tlsSocket = tlsSocket
        self.connection = connection


@implementer(IOpenSSLServerConnectionCreator, IDownstreamTransportSocketFactory)
class DownstreamTlsSocket:
    """
    A compiled C{DownstreamTlsContext}: the OpenSSL server contexts (one
    per certificate, picked by SNI), built once, and L{wrap} to put TLS
    under a connection's filter chain.

    @ivar options: the L{CommonTlsOptions}.
    @ivar validation: the L{CertificateValidation}, or C{None}.
    @ivar requireClientCertificate: C{require_client_certificate}.
    @ivar requireSni: C{require_sni}.
    """

    def __init__(self, options, requireClientCertificate=False, requireSni=False,
                 sessionTimeout=None, disableStatelessResumption=False,
                 disableStatefulResumption=False, preferClientCiphers=False):
        if not options.certificates:
            raise ConfigError("No TLS certificates found for server context")
        self.options = options
        self.validation = options.validation
        self.requireClientCertificate = requireClientCertificate
        self.requireSni = requireSni
        self._stats = {}
        sessionId = options.fingerprint()[:SSL_MAX_SID_CTX_LENGTH]
        self._contexts = []
        for entry in options.certificates:
            context = options.newContext(SSL.TLS_SERVER_METHOD, entry)
            flags = 0
            if not preferClientCiphers:
                flags |= SSL.OP_CIPHER_SERVER_PREFERENCE
            if disableStatelessResumption:
                flags |= SSL.OP_NO_TICKET
            if flags:
                context.set_options(flags)
            context.set_session_id(sessionId)
            if disableStatefulResumption:
                context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
            if sessionTimeout is not None:
                context.set_timeout(sessionTimeout)
            self._configureVerify(context)
            if options.alpnProtocols:
                context.set_alpn_select_callback(self._selectAlpn)
            self._contexts.append(context)
        if len(self._contexts) > 1 or requireSni:
            self._contexts[0].set_tlsext_servername_callback(self._onServerName)
        # Switched to when require_sni is set and the client sent none: it
        # has no certificate, so the handshake fails.
        self._refuseContext = SSL.Context(SSL.TLS_SERVER_METHOD)

    def _configureVerify(self, context):
        validation = self.validation
        if validation is None:
            mode = SSL.VERIFY_NONE
            if self.requireClientCertificate:
                mode = SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT
        else:
            mode = validation.verifyMode(self.requireClientCertificate)
            for ca in validation.trustedCa:
                context.add_client_ca(ca)
        if mode != SSL.VERIFY_NONE:
            context.set_verify(mode, _verifyCallback)

    def _selectAlpn(self, connection, offered):
        for protocol in self.options.alpnProtocols:
            if protocol in offered:
                return protocol
        return SSL.NO_OVERLAPPING_PROTOCOLS

    def _onServerName(self, connection):
        name = connection.get_servername()
        if name is None:
            if self.requireSni:
                connection.set_context(self._refuseContext)
            return
        if len(self._contexts) > 1:
            context = self._contextFor(name.decode("ascii", "replace").lower())
            if context is not self._contexts[0]:
                connection.set_context(context)

    def _contextFor(self, name):
        wildcard = None
        for entry, context in zip(self.options.certificates, self._contexts):
            for dnsName in entry.dnsNames:
                if dnsName == name:
                    return context
                if wildcard is None and dnsName.startswith("*.") and dnsNameMatch(name, dnsName):
                    wildcard = context
        return wildcard if wildcard is not None else self._contexts[0]

    def serverConnectionForTLS(self, tlsProtocol):
        """A new C{SSL.Connection} from the first certificate's context."""
        return SSL.Connection(self._contexts[0], None)

    def statsFor(self, connection):
        """The L{SslStats} of C{connection}'s listener on its worker."""
        prefix = connection.listener.config.statPrefix + "ssl."
        key = (connection.dispatcher.name, prefix)
        stats = self._stats.get(key)
        if stats is None:
            stats = self._stats[key] = SslStats(connection.dispatcher.stats, prefix)
        return stats

    def wrap(self, connection, headProtocol):
        """
        Put TLS under a connection's filter chain.

        @param connection: the L{txenvoy.network.connection.ServerConnection}.
        @param headProtocol: the head of its network filter chain.
        @return: the protocol that gets C{makeConnection(transport)} and the
            socket's bytes: a L{DownstreamTlsProtocol} wrapping
            C{headProtocol}.
        """
        connection.ssl = SslConnectionInfo()
        connection.negotiatedProtocol = None
        factory = _DownstreamTlsFactory(self, connection, headProtocol)
        return factory.buildProtocol(None)


def _verifyCallback(tlsConnection, certificate, errno, depth, ok):
    protocol = tlsConnection.get_app_data()
    try:
        return protocol.verifyPeer(certificate, errno, depth, ok)
    except Exception:
        # An exception here would surface from do_handshake as something
        # other than an SSL error; fail the handshake instead.
        log.failure("verifying a client certificate")
        return False


_DOWNSTREAM_FIELDS = (
    "common_tls_context", "require_client_certificate", "require_sni",
    "disable_stateless_session_resumption", "disable_stateful_session_resumption",
    "session_timeout", "ocsp_staple_policy", "full_scan_certs_on_sni_mismatch",
    "prefer_client_ciphers",
)


@extension(Category.TRANSPORT_SOCKET_DOWNSTREAM,
           "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
           "envoy.transport_sockets.tls", fields=_DOWNSTREAM_FIELDS)
def createDownstreamTlsSocket(message, context):
    """
    Build a L{DownstreamTlsSocket} from a C{DownstreamTlsContext}; with SDS
    secrets, an L{SdsDownstreamTlsSocket} that rebuilds it when they change.
    """
    path = context.configPath
    if message.ocsp_staple_policy != 0:
        raise UnsupportedField(path + ".ocsp_staple_policy", "only LENIENT_STAPLING")
    timeout = None
    if message.HasField("session_timeout"):
        timeout = max(1, int(message.session_timeout.ToTimedelta().total_seconds()))

    def build(commonTlsContext, ctcPath):
        options = loadCertificateOptions(commonTlsContext, ctcPath)
        if not options.certificates:
            raise ConfigError("%s: No TLS certificates found for server context" % (path,))
        return DownstreamTlsSocket(
            options,
            requireClientCertificate=(message.HasField("require_client_certificate")
                                      and message.require_client_certificate.value),
            requireSni=message.HasField("require_sni") and message.require_sni.value,
            sessionTimeout=timeout,
            disableStatelessResumption=message.disable_stateless_session_resumption,
            disableStatefulResumption=message.disable_stateful_session_resumption,
            preferClientCiphers=message.prefer_client_ciphers,
        )

    statPrefix = getattr(context, "listenerStatPrefix", "listener.") + \
        "server_ssl_socket_factory."
    return buildTlsSocket(message.common_tls_context, context, path, build, statPrefix,
                          SdsDownstreamTlsSocket)
