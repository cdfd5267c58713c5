# -*- test-case-name: tests.xds.test_sds_api -*-
"""
TLS contexts whose certificates or trust come from SDS
(C{tls_certificate_sds_secret_configs},
C{validation_context_sds_secret_config}): the context is rebuilt from the
C{CommonTlsContext} with the secrets in place each time one changes, and
the socket factory swaps to the new one. A connection keeps the OpenSSL
context it shook hands with, so a rotation reaches new handshakes only.
"""

from twisted.internet.protocol import ClientFactory, Protocol
from zope.interface import implementer

from txenvoy.config.errors import ConfigError
from txenvoy.interfaces import (
    IDownstreamTransportSocketFactory,
    IUpstreamTransportSocketFactory,
)
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
            C{secretManager} provides the secrets.
        @param path: the field path of C{commonTlsContext}.
        @param build: C{f(commonTlsContext)} compiling a context with the
            secrets in place into a socket factory; raises L{ConfigError}.
        @param statPrefix: e.g. C{listener.<address>.server_ssl_socket_factory.}.
        """
        manager = context.secretManager
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
        #: C{upstream_context_secrets_not_ready}, counted by the upstream socket.
        self.notReady = None
        stats = manager.stats
        if stats is not None:
            self._updated = stats.counter(statPrefix + "ssl_context_update_by_sds")
            stats.counter(statPrefix + "downstream_context_secrets_not_ready")
            self.notReady = stats.counter(statPrefix + "upstream_context_secrets_not_ready")
        #: Validate mode: the secrets are not read.
        self.validating = any(provider is None for ignored, provider in self._slots)
        if self.validating:
            return
        for i, (kind, provider) in enumerate(self._slots):
            provider.addUpdateCallback(lambda secret, i=i: self._onSecret(i, secret))
        composed = self._compose({})
        if composed is not None:
            self.current = build(composed)
            if self._updated is not None and self._fromSds():
                # Envoy counts the first context made from SDS too (not
                # one made from static secrets only).
                self._updated.inc()

    def whenReady(self):
        """
        A Deferred firing once every secret from a control plane arrived,
        was rejected, or timed out (at once for files and static secrets).
        """
        from twisted.internet import defer

        if self.validating:
            return defer.succeed(None)
        d = defer.gatherResults([provider.whenInitialized() for ignored, provider in self._slots])
        d.addCallback(lambda _: None)
        return d

    def _fromSds(self):
        return any(provider.subscription is not None for ignored, provider in self._slots)

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
                body = ctc.tls_certificates.add()
                body.CopyFrom(secret.tls_certificate)
            else:
                body = ctc.validation_context
                body.CopyFrom(secret.validation_context)
            # A static secret's: accepted and not watched, as Envoy's.
            body.ClearField("watched_directory")
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


class _RefusedUpstream(Protocol):
    """
    What an upstream connection gets while its TLS secrets have not
    arrived: closed, and a failed connect to the caller.
    """

    def __init__(self, factory):
        self.factory = factory

    def connectionMade(self):
        from twisted.python.failure import Failure

        from txenvoy.extensions.transport_sockets.upstream_tls import UpstreamTlsError

        self.transport.abortConnection()
        self.factory.wrappedFactory.clientConnectionFailed(None, Failure(UpstreamTlsError("")))


class _RefusedUpstreamFactory(ClientFactory):
    def __init__(self, wrappedFactory):
        self.wrappedFactory = wrappedFactory

    def buildProtocol(self, addr):
        return _RefusedUpstream(self)

    def clientConnectionFailed(self, connector, reason):
        self.wrappedFactory.clientConnectionFailed(connector, reason)


@implementer(IUpstreamTransportSocketFactory)
class SdsUpstreamTlsSocket:
    """
    An upstream TLS socket factory whose context comes from SDS: each new
    connection takes the one current when it starts, so a rotated client
    certificate or trust reaches new connections, not those made.
    """

    supportsAlpn = True

    def __init__(self, sdsContext):
        self.sds = sdsContext

    def whenSecretsReady(self):
        """
        What the cluster warms on (Envoy's cluster init manager holding
        the C{SdsApi} init targets): its secrets from a control plane.
        """
        return self.sds.whenReady()

    def wrapProtocolFactory(self, factory, reactor, host, cluster=None, socketOptions=None):
        """See L{UpstreamTlsSocket.wrapProtocolFactory}."""
        current = self.sds.current
        if current is None:
            if self.sds.notReady is not None:
                self.sds.notReady.inc()
            return _RefusedUpstreamFactory(factory)
        return current.wrapProtocolFactory(factory, reactor, host, cluster, socketOptions)


def sdsSocket(sdsContext, socketClass, context, path):
    """
    The socket factory of an L{SdsTlsContext}: refused when serving
    without its secrets (the file held none Envoy would take).
    """
    if sdsContext.current is None and not sdsContext.validating and not sdsContext.remote:
        raise ConfigError("%s: the TLS secrets could not be read (see the SDS update "
                          "rejected above)" % (path,))
    return socketClass(sdsContext)


def buildTlsSocket(commonTlsContext, context, path, build, statPrefix, sdsSocketClass):
    """
    The socket factory of a TLS context: C{build}'s for a
    C{CommonTlsContext} that holds its secrets, or an C{sdsSocketClass}
    over an L{SdsTlsContext} for one that names SDS secrets.

    @param path: the field path of the C{DownstreamTlsContext} or
        C{UpstreamTlsContext}.
    @param build: C{f(commonTlsContext, path)} compiling a context.
    """
    if not usesSds(commonTlsContext):
        return build(commonTlsContext, path + ".common_tls_context")
    sds = SdsTlsContext(commonTlsContext, context, path + ".common_tls_context",
                        lambda composed: build(composed, "resources[0]"), statPrefix)
    return sdsSocket(sds, sdsSocketClass, context, path)
