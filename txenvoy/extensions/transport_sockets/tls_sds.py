# -*- test-case-name: tests.xds.test_sds_api -*-
"""
TLS contexts whose certificates or trust come from SDS
(C{tls_certificate_sds_secret_configs},
C{validation_context_sds_secret_config}): the context is rebuilt from the
C{CommonTlsContext} with the secrets in place each time one changes, and
the socket factory swaps to the new one. A connection keeps the OpenSSL
context it shook hands with, so a rotation reaches new handshakes only.
"""

from twisted.internet.protocol import Protocol
from zope.interface import implementer

from txenvoy.config.errors import ConfigError
from txenvoy.interfaces import IDownstreamTransportSocketFactory
from txenvoy.xds.subscription_factory import RemoteSubscription

#: The SDS fields of a C{CommonTlsContext} that are read.
SDS_FIELDS = ("tls_certificate_sds_secret_configs", "validation_context_sds_secret_config")

_CERTIFICATE, _VALIDATION = "tls_certificate", "validation_context"


def usesSds(commonTlsContext):
    """Whether a C{CommonTlsContext} names any SDS secret."""
    return bool(commonTlsContext.tls_certificate_sds_secret_configs) or \
        commonTlsContext.HasField("validation_context_sds_secret_config")


class SdsTlsContext:
    """
    A C{CommonTlsContext} with SDS secrets, and what it builds.

    @ivar current: what C{build} made from the latest secrets, or C{None}
        while one of them has not arrived.
    """

    def __init__(self, commonTlsContext, context, path, build, statPrefix):
        """
        @param context: the L{txenvoy.config.context.FactoryContext}; its
            server's C{secretManager} provides the secrets.
        @param path: the field path of C{commonTlsContext}.
        @param build: C{f(commonTlsContext)} compiling a context with the
            secrets in place into a socket factory; raises L{ConfigError}.
        @param statPrefix: e.g. C{listener.<address>.server_ssl_socket_factory.}.
        """
        manager = getattr(context.server, "secretManager", None)
        if manager is None:
            raise ConfigError("%s: SDS secrets need a server" % (path,))
        self._template = type(commonTlsContext)()
        self._template.CopyFrom(commonTlsContext)
        for field in SDS_FIELDS:
            self._template.ClearField(field)
        self._build = build
        self._slots = []
        for i, config in enumerate(commonTlsContext.tls_certificate_sds_secret_configs):
            self._slots.append((_CERTIFICATE, manager.findOrCreate(
                config, "%s.tls_certificate_sds_secret_configs[%d]" % (path, i))))
        if commonTlsContext.HasField("validation_context_sds_secret_config"):
            self._slots.append((_VALIDATION, manager.findOrCreate(
                commonTlsContext.validation_context_sds_secret_config,
                path + ".validation_context_sds_secret_config")))
        self.current = None
        # From a control plane a secret arrives after the listener is up.
        self.remote = any(isinstance(getattr(p, "subscription", None), RemoteSubscription)
                          for ignored, p in self._slots)
        self._updated = None
        self._notReady = None
        stats = getattr(context.server, "mainStats", None)
        if stats is not None:
            self._updated = stats.counter(statPrefix + "ssl_context_update_by_sds")
            stats.counter(statPrefix + "downstream_context_secrets_not_ready")
            stats.counter(statPrefix + "upstream_context_secrets_not_ready")
        if any(provider is None for ignored, provider in self._slots):
            # Validate mode: the secrets are not read.
            return
        for i, (kind, provider) in enumerate(self._slots):
            provider.addUpdateCallback(lambda secret, i=i: self._onSecret(i, secret))
        composed = self._compose({})
        if composed is not None:
            self.current = build(composed)
            if self._updated is not None:
                # Envoy counts the first context made from SDS too.
                self._updated.inc()

    def _compose(self, override):
        """The C{CommonTlsContext} with every secret in place, or C{None}."""
        ctc = type(self._template)()
        ctc.CopyFrom(self._template)
        for i, (kind, provider) in enumerate(self._slots):
            secret = override.get(i, provider.secret)
            if secret is None:
                return None
            if secret.WhichOneof("type") != kind:
                raise ConfigError("secret '%s' is not a %s" % (secret.name, kind))
            if kind == _CERTIFICATE:
                ctc.tls_certificates.add().CopyFrom(secret.tls_certificate)
            else:
                ctc.validation_context.CopyFrom(secret.validation_context)
        return ctc

    def _onSecret(self, index, secret):
        composed = self._compose({index: secret})
        if composed is None:
            return None
        built = self._build(composed)

        def apply():
            self.current = built
            if self._updated is not None:
                self._updated.inc()
        return apply


class _Refused(Protocol):
    """What a connection gets while its TLS secrets have not arrived."""

    def connectionMade(self):
        self.transport.abortConnection()


@implementer(IDownstreamTransportSocketFactory)
class SdsDownstreamTlsSocket:
    """
    A downstream TLS socket factory whose context comes from SDS: each
    connection gets the one current when it is accepted.
    """

    def __init__(self, sdsContext):
        self.sds = sdsContext

    def wrap(self, connection, headProtocol):
        current = self.sds.current
        if current is None:
            # No certificate yet: the connection is closed, as Envoy's.
            return _Refused()
        return current.wrap(connection, headProtocol)


def sdsSocket(sdsContext, socketClass, context, path):
    """
    The socket factory of an L{SdsTlsContext}: refused when serving
    without its secrets (the file held none Envoy would take).
    """
    if sdsContext.current is None and not context.validateOnly and not sdsContext.remote:
        raise ConfigError("%s: the TLS secrets could not be read (see the SDS update "
                          "rejected above)" % (path,))
    return socketClass(sdsContext)
