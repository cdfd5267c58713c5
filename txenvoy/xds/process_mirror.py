# -*- test-case-name: tests.xds.test_process_mirror -*-
"""
Dynamic resources across processes (C{--worker-processes}). As Envoy's
main thread does, the main process alone subscribes (files, gRPC and REST
control planes), validates, ACKs or NACKs and counts; each update it
accepted goes, as the serialized resources with their version, to every
worker process (L{UpdateRelay}), which applies it through the same handler
(LDS, CDS, RDS, SDS) a local subscription would call (L{UpdateMirror}).
A worker process never talks to a control plane nor reads an xDS file.

A subscription is known on both sides by its key (L{subscriptionKey}):
the resource type, the resource name and the config source, which both
processes read from the same bootstrap and the same resources. The main
process keeps the last update of each key, so that a worker process
started later (one replacing a worker process that died) begins with
the current dynamic config.

EDS is not sent this way: the main process sends each cluster's host set
with its health (L{txenvoy.upstream.host_set_mirror}).
"""

import base64
import functools
import hashlib

from twisted.internet import defer
from twisted.logger import Logger

from txenvoy.config.errors import ConfigError

log = Logger(namespace="config")

#: The keys of the two wildcard subscriptions of C{dynamic_resources}.
LDS_KEY = "lds"
CDS_KEY = "cds"

#: Stats the main process counts for the whole server: a worker process
#: does not report its own (they would be counted once per process).
_MAIN_OWNED_PREFIXES = ("listener_manager.lds.", "cluster_manager.", "control_plane.", "sds.",
                        "listener_manager.listener_added", "listener_manager.listener_modified",
                        "listener_manager.listener_removed",
                        "listener_manager.listener_in_place_updated")


#: A cluster's stats of its membership and its EDS updates (the main
#: process's, which discovers and checks the hosts and sends them on).
_CLUSTER_MAIN_OWNED = frozenset((
    "membership_change", "update_attempt", "update_success", "update_failure",
    "update_rejected", "update_empty", "update_no_rebuild", "init_fetch_timeout", "version",
    "update_time", "update_duration", "assignment_stale", "assignment_timeout_received"))


# Asked for every stat of every push (twice a second): the names repeat.
@functools.lru_cache(maxsize=1 << 16)
def mainOwnedStat(name):
    """
    Whether the stat C{name} is one the main process alone counts for the
    whole server: the subscriptions' (LDS, CDS, RDS, SDS, EDS, the control
    plane's), the listener and cluster managers' updates, a cluster's
    membership changes, a TLS context's SDS updates.
    """
    if name.startswith(_MAIN_OWNED_PREFIXES) or name.endswith(".ssl_context_update_by_sds"):
        return True
    if name.startswith("cluster."):
        return name.rpartition(".")[2] in _CLUSTER_MAIN_OWNED
    return name.startswith("http.") and ".rds." in name


def subscriptionKey(typeUrl, name, source):
    """
    What names one subscription in both processes: C{typeUrl}, the
    resource C{name} and the C{ConfigSource} it is read from.
    """
    digest = hashlib.sha256(source.SerializeToString(deterministic=True)).hexdigest()[:16]
    return "%s %s %s" % (typeUrl, name, digest)


def encodeResources(resources):
    """Resource messages as JSON-able C{[type URL, base64 of the bytes]}."""
    return [["type.googleapis.com/" + r.DESCRIPTOR.full_name,
             base64.b64encode(r.SerializeToString()).decode("ascii")] for r in resources]


def decodeResources(encoded):
    """The messages of L{encodeResources}, with the types their C{Any}s name imported."""
    from txenvoy.config.protos import importTypeName, messageClass
    from txenvoy.server.worker_process import importAnyTypes

    resources = []
    for typeUrl, data in encoded:
        importTypeName(typeUrl)
        message = messageClass(typeUrl).FromString(base64.b64decode(data))
        importAnyTypes(message)
        resources.append(message)
    return resources


class UpdateRelay:
    """
    The main process's side: every accepted update, sent on and kept.

    @ivar current: C{{key: message body}}, the last update of each key.
    @ivar send: called with each C{{"xds_update": body}} message (the
        worker processes' broadcast), once they start.
    """

    def __init__(self):
        self.current = {}
        self.send = None

    def wrap(self, key, onUpdate):
        """
        C{onUpdate} as a subscription's handler that, once it accepted an
        update, sends it to the worker processes.
        """
        def relayed(resources, versionInfo):
            result = onUpdate(resources, versionInfo)
            self.publish(key, resources, versionInfo)
            return result
        return relayed

    def publish(self, key, resources, versionInfo):
        body = {"key": key, "version": versionInfo,
                "resources": encodeResources(resources)}
        self.current[key] = body
        if self.send is not None:
            self.send({"xds_update": body})

    def ready(self, key):
        """
        The main process's subscription C{key} is initialized without an
        update (its first was rejected, or its C{initial_fetch_timeout}
        passed): the worker processes' stop waiting for one.
        """
        if key in self.current:
            return
        body = self.current[key] = {"key": key}
        if self.send is not None:
            self.send({"xds_update": body})

    def forget(self, key):
        """
        The main process stopped its subscription C{key} (no listener uses
        those routes any more): a worker process that subscribes to it
        again waits for a new update, as the main process does, rather
        than starting from this one.
        """
        if self.current.pop(key, None) is not None and self.send is not None:
            self.send({"xds_update": {"key": key, "forgotten": True}})

    def snapshot(self):
        """Every key's last update, in the order they first came (CDS before LDS)."""
        return list(self.current.values())


class MirroredSubscription:
    """
    A worker process's subscription: driven as a file or control-plane one
    (C{refresh}, C{start}, C{stop}, C{initialized}), fed by the main
    process. It counts nothing: the main process's subscription did.

    @ivar initialized: fires once the first update was applied.
    """

    def __init__(self, mirror, key, onUpdate, readyAtOnce=False):
        """
        @param readyAtOnce: initialized when first refreshed, with or
            without an update (a file, which the main process read before
            anything here asked for it).
        """
        self._mirror = mirror
        self.key = key
        self._onUpdate = onUpdate
        self._readyAtOnce = readyAtOnce
        self.initialized = defer.Deferred()
        self.lastVersion = None
        self.lastUpdated = None
        #: The body last applied (or tried).
        self.applied = None

    def refresh(self):
        """Apply the main process's last update of this key, if any."""
        body = self._mirror.current.get(self.key)
        if body is None:
            if self._readyAtOnce:
                self._ready()
            return False
        return self.apply(body)

    def _ready(self):
        if not self.initialized.called:
            self.initialized.callback(None)

    def apply(self, body):
        from txenvoy.xds.path_subscription import _ownErrors
        from txenvoy.xds.subscription import withoutCollection

        self.applied = body
        if "resources" not in body:
            # Initialized in the main process without an update.
            self._ready()
            return False
        try:
            # As the main process applied it: no collection walks the
            # heap meanwhile, and what it made is frozen after.
            with _ownErrors(), withoutCollection():
                self._onUpdate(decodeResources(body["resources"]), body["version"])
        except ConfigError as e:
            # The main process accepted it: only a worker's own state
            # (a port in use) can refuse it here.
            log.error("worker process: update {key} not applied: {reason}",
                      key=self.key, reason=e.message)
            self._ready()
            return False
        except Exception:
            log.failure("worker process: update {key} not applied", key=self.key)
            self._ready()
            return False
        self.lastVersion = body["version"]
        self.lastUpdated = self._mirror.clock.seconds()
        self._ready()
        return True

    def whenInitialized(self):
        d = defer.Deferred()

        def fire(result):
            if not d.called:
                d.callback(None)
            return result
        self.initialized.addBoth(fire)
        return d

    def start(self, transport=None):
        self._mirror.watch(self)

    def stop(self):
        self._mirror.unwatch(self)


class UpdateMirror:
    """
    A worker process's side: the main process's updates by key, applied
    to the subscriptions that watch them.

    @ivar current: C{{key: message body}}.
    """

    def __init__(self, clock, bodies=()):
        """
        @param bodies: the main process's L{UpdateRelay.snapshot}, applied
            as each subscription is made (as files are read while the
            server is built).
        """
        self.clock = clock
        self.current = {body["key"]: body for body in bodies}
        self._watching = {}

    def subscribe(self, key, onUpdate, readyAtOnce=False):
        """A L{MirroredSubscription} to C{key}, not applied yet (its C{refresh} does)."""
        return MirroredSubscription(self, key, onUpdate, readyAtOnce)

    def watch(self, subscription):
        self._watching.setdefault(subscription.key, []).append(subscription)
        body = self.current.get(subscription.key)
        if body is not None and subscription.applied is not body:
            subscription.apply(body)

    def unwatch(self, subscription):
        watching = self._watching.get(subscription.key, [])
        if subscription in watching:
            watching.remove(subscription)

    def onUpdate(self, body):
        """One update from the main process."""
        if body.get("forgotten"):
            self.current.pop(body["key"], None)
            return
        self.current[body["key"]] = body
        for subscription in list(self._watching.get(body["key"], ())):
            subscription.apply(body)
