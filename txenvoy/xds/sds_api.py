# -*- test-case-name: tests.xds.test_sds_api -*-
"""
SDS (Envoy's C{SdsApi} and C{SecretManagerImpl}): a TLS context names a
secret (C{tls_certificate_sds_secret_configs},
C{validation_context_sds_secret_config}) and its C{sds_config}; every
context naming the same secret from the same source shares one
subscription, and each is told when the secret changes, to build new
OpenSSL contexts for new handshakes while the connections already made
keep theirs.

An update that names another secret, holds none or more than one, or that
a context cannot use (a file that is not there, a key that does not match)
is rejected whole, and every context keeps the secret it had.
"""

import os
import time

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger

from txenvoy.config.datasource import readDataSource
from txenvoy.config.errors import ConfigError, collectErrors
from txenvoy.config.fields import checkFields
from txenvoy.xds.path_subscription import _ownErrors
from txenvoy.xds.resources import SECRET_TYPE

log = Logger(namespace="config")


def _stamps(files):
    """What the poll compares: each file's inode, time and size."""
    stamps = []
    for path in files:
        try:
            st = os.stat(path)
        except OSError:
            stamps.append(None)
        else:
            stamps.append((st.st_ino, st.st_mtime_ns, st.st_size))
    return stamps
from txenvoy.xds.subscription_factory import weakHandler


#: The C{DataSource}s of each kind of secret that are read when it arrives.
_FILE_FIELDS = {
    "tls_certificate": ("certificate_chain", "private_key", "password", "ocsp_staple"),
    "validation_context": ("trusted_ca", "crl"),
}


def inlineFiles(secret):
    """
    C{secret} with the files it names read in as C{inline_bytes}, as
    Envoy's C{SdsApi::resolveSecret} does: what is used, and shown in
    C{/config_dump}, is what the files held when the secret arrived.

    @raise ConfigError: a file cannot be read.
    """
    kind = secret.WhichOneof("type")
    fields = _FILE_FIELDS.get(kind, ())
    body = getattr(secret, kind) if kind else None
    if not secretFiles(secret) and not (body is not None and _watches(body)):
        return secret
    resolved = type(secret)()
    resolved.CopyFrom(secret)
    body = getattr(resolved, kind)
    if _watches(body):
        # Used here, to re-read the files; not part of the TLS context.
        body.ClearField("watched_directory")
    for field in fields:
        if body.HasField(field) and getattr(body, field).WhichOneof("specifier") == "filename":
            source = getattr(body, field)
            source.inline_bytes = readDataSource(source, "%s.%s.%s" % (secret.name, kind, field))
    return resolved


def _watches(body):
    return ("watched_directory" in body.DESCRIPTOR.fields_by_name
            and body.HasField("watched_directory"))


def secretFiles(secret):
    """The files a secret's C{DataSource}s name (those L{inlineFiles} reads)."""
    kind = secret.WhichOneof("type")
    body = getattr(secret, kind) if kind else None
    return [getattr(body, f).filename for f in _FILE_FIELDS.get(kind, ())
            if body.HasField(f) and getattr(body, f).WhichOneof("specifier") == "filename"]


def watchedDirectories(secret):
    """
    Where a file moved in means the secret's files changed, as Envoy's
    C{SdsApi} watches: the secret's C{watched_directory}, or else the
    directory of each of its files.
    """
    kind = secret.WhichOneof("type")
    body = getattr(secret, kind) if kind else None
    if body is not None and _watches(body):
        return [body.watched_directory.path]
    return sorted({os.path.dirname(os.path.abspath(f)) for f in secretFiles(secret)})


class _NoStats:
    """The scope of a static secret: it counts nothing."""

    def counter(self, name):
        return None


_NO_STATS = _NoStats()


class SdsSecretProvider:
    """
    One secret, by name, from one config source.

    @ivar secret: the C{Secret} in use, or C{None} before the first update.
    @ivar versionInfo: the C{version_info} it came with.
    @ivar lastUpdated: its wall-clock time.
    """

    def __init__(self, name, scope):
        self.name = name
        self.secret = None
        self.versionInfo = None
        self.lastUpdated = None
        self.subscription = None
        self._consumers = []
        self._keyRotationFailed = scope.counter("key_rotation_failed")
        # The secret as it came, its files unread, and the watches of them.
        self._raw = None
        self._watches = []
        self._reactor = None

    def whenInitialized(self):
        """
        A Deferred firing once the secret is there, or its subscription to
        a control plane had its first update (applied or rejected) or
        timed out: what Envoy's C{SdsApi} init target waits for.
        """
        waitFor = getattr(self.subscription, "whenInitialized", None)
        if self.secret is not None or waitFor is None:
            return defer.succeed(None)
        return waitFor()

    def addUpdateCallback(self, onSecret):
        """
        Call C{onSecret(secret)} on each new secret; it raises
        L{ConfigError} if it cannot use it, which rejects the update for
        every consumer.
        """
        self._consumers.append(onSecret)

    def onConfigUpdate(self, resources, versionInfo):
        """
        Apply a state-of-the-world update.

        @raise ConfigError: the update is rejected; nothing changed.
        """
        if not resources:
            raise ConfigError("Missing SDS resources for %s in onConfigUpdate()" % (self.name,))
        if len(resources) != 1:
            raise ConfigError("Unexpected SDS secrets length: %d" % (len(resources),))
        secret = resources[0]
        if secret.name != self.name:
            raise ConfigError("Unexpected SDS secret (expecting %s): %s"
                              % (self.name, secret.name))
        raw, secret = secret, inlineFiles(secret)
        if secret != self.secret:
            self._switchTo(secret)
            self.versionInfo = versionInfo
            self.lastUpdated = time.time()
        if raw != self._raw:
            self._raw = raw
            if self._reactor is not None:
                self._watchFiles()

    def _switchTo(self, secret):
        # Every consumer builds what it would use before any switches.
        with collectErrors():
            ready = [consumer(secret) for consumer in self._consumers]
        for apply in ready:
            if apply is not None:
                apply()
        self.secret = secret

    # The secret's files, re-read when one is moved in (Envoy's SdsApi::onWatchUpdate).

    def watchFiles(self, reactor):
        """Watch the files the secret names from now on, on C{reactor}."""
        self._reactor = reactor
        self._watchFiles()

    def stopWatching(self):
        self._reactor = None
        watches, self._watches = self._watches, []
        for watch in watches:
            watch.stop()

    def _watchFiles(self):
        from txenvoy.xds.directory_watch import MovedIntoWatch

        for watch in self._watches:
            watch.stop()
        self._watches = []
        if self._raw is None:
            return
        files = secretFiles(self._raw)
        for directory in watchedDirectories(self._raw):
            watch = MovedIntoWatch(self._reactor, directory, self._filesMoved,
                                   lambda files=files: _stamps(files))
            watch.start()
            self._watches.append(watch)

    def _filesMoved(self, name):
        """Read the files again; a new certificate reaches new handshakes."""
        try:
            with _ownErrors():
                secret = inlineFiles(self._raw)
                if secret != self.secret:
                    self._switchTo(secret)
        except ConfigError as e:
            self._keyRotationFailed.inc()
            log.warn("Failed to reload certificates: {reason}", reason=e.message)


class SecretManager(Service):
    """
    The SDS subscriptions of one server, one per secret name and config
    source, read once when first named and watched while the server runs.
    """

    def __init__(self, subscriptions, stats, staticSecrets=(),
                 path="static_resources.secrets"):
        """
        @param subscriptions: the server's
            L{txenvoy.xds.subscription_factory.SubscriptionFactory}.
        @param stats: the main stats shard; a secret's stats are
            C{sds.<name>.*}.
        @param staticSecrets: the C{Secret}s of C{static_resources.secrets},
            named by an C{SdsSecretConfig} without C{sds_config}.
        @raise ConfigError: a static secret without a name, or two of one name.
        """
        self._factory = subscriptions
        self.stats = stats
        self._providers = {}
        self._static = {}
        for i, secret in enumerate(staticSecrets):
            if not secret.name:
                raise ConfigError("%s[%d].name: static secret must have a name"
                                  % (path, i))
            if secret.name in self._static:
                raise ConfigError("%s[%d]: Duplicate static TlsCertificate secret name %s"
                                  % (path, i, secret.name))
            provider = SdsSecretProvider(secret.name, _NO_STATS)
            provider.secret = secret
            self._static[secret.name] = provider

    def findOrCreate(self, sdsSecretConfig, path):
        """
        The provider of an C{SdsSecretConfig}.

        @param path: its field path, for messages.
        @return: an L{SdsSecretProvider} (read once, so holding the secret
            if the file had a good one), or C{None} in validate mode.
        @raise ConfigError: a secret without a source (a static secret),
            or a source txenvoy cannot read.
        """
        checkFields(sdsSecretConfig, ("name", "sds_config"), path)
        if not sdsSecretConfig.name:
            raise ConfigError("%s.name: value length must be at least 1 characters" % (path,))
        if not sdsSecretConfig.HasField("sds_config"):
            provider = self._static.get(sdsSecretConfig.name)
            if provider is None:
                raise ConfigError("%s: Unknown static secret: %s"
                                  % (path, sdsSecretConfig.name))
            return provider
        key = sdsSecretConfig.SerializeToString(deterministic=True)
        provider = self._providers.get(key)
        if provider is not None:
            return provider
        name = sdsSecretConfig.name
        scope = self.stats.scope("sds.%s." % (name,))
        provider = SdsSecretProvider(name, scope)
        provider.subscription = self._factory.subscribe(
            sdsSecretConfig.sds_config, path + ".sds_config", scope, SECRET_TYPE,
            weakHandler(provider.onConfigUpdate), name)
        if provider.subscription is None:
            return None
        self._providers[key] = provider
        provider.subscription.refresh()
        if self.running:
            provider.subscription.start()
            provider.watchFiles(self._factory.reactor)
        return provider

    def dumpState(self):
        """
        What C{/config_dump} shows as C{dynamic_active_secrets}: C{[(name,
        secret, versionInfo, lastUpdated)]}.
        """
        return [(p.name, p.secret, p.versionInfo, p.lastUpdated)
                for p in self._providers.values() if p.secret is not None]

    def staticSecrets(self):
        """What C{/config_dump} shows as C{static_secrets}: C{[Secret]}."""
        return [p.secret for p in self._static.values()]

    def startService(self):
        Service.startService(self)
        for p in self._providers.values():
            p.subscription.start()
            p.watchFiles(self._factory.reactor)

    def stopService(self):
        Service.stopService(self)
        for p in self._providers.values():
            p.subscription.stop()
            p.stopWatching()
