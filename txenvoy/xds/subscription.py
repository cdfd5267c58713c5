# -*- test-case-name: tests.xds.test_grpc_mux -*-
"""
One resource type's subscription to a control plane, whatever carries it
(Envoy's C{GrpcSubscriptionImpl} and C{HttpSubscriptionImpl}): the seam
between a transport (L{txenvoy.xds.grpc_mux}, L{txenvoy.xds.delta_subscription},
C{txenvoy.xds.rest_subscription}) and a resource handler (LDS, CDS, RDS,
EDS, SDS).

A transport hands it the resources of one response with their version
(L{onResponse}; the delta transports first fold their additions and
removals into the whole set); the handler's C{onUpdate(resources,
versionInfo)} accepts them or raises L{ConfigError} to reject them whole,
and the transport learns which: C{None} to ACK, or the error detail to
NACK with. The stats are Envoy's: C{<prefix>.update_attempt},
C{update_success}, C{update_rejected}, C{update_failure} (the stream
failed), C{init_fetch_timeout}, C{version}, C{update_time},
C{update_duration}.
"""

import contextlib
import gc
import time

from twisted.internet import defer
from twisted.logger import Logger

from txenvoy.config.errors import ConfigError
from txenvoy.server.gc_freeze import YOUNG_GENERATIONS
from txenvoy.upstream.hashing import xxHash64
from txenvoy.xds.path_subscription import _ownErrors

log = Logger(namespace="config")

#: Envoy's default C{initial_fetch_timeout}.
DEFAULT_INITIAL_FETCH_TIMEOUT = 15.0


@contextlib.contextmanager
def withoutCollection():
    """
    Apply an update with the cyclic collector paused, then freeze what it
    made (C{gc.freeze}): the thousands of objects a large update makes
    would otherwise start full collections, each walking the whole heap
    while every thread, the workers' included, waits (70 to 140 ms for a
    thousand clusters). The young generations are collected first (a
    short walk), so that the garbage of the requests just served is not
    frozen with it. The configuration the update replaced holds no
    reference cycles and is freed as its last user lets it go
    (L{txenvoy.server.gc_freeze}).
    """
    enabled = gc.isenabled()
    if enabled:
        gc.collect(YOUNG_GENERATIONS)
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


class Subscription:
    """
    @ivar typeUrl: the resource type URL.
    @ivar names: the resource names subscribed to (empty: wildcard).
    @ivar lastVersion: the C{version_info} of the last accepted update.
    @ivar lastUpdated: its wall-clock time.
    @ivar initialized: a Deferred firing once the first update was
        accepted or rejected, or the initial fetch timed out (what Envoy's
        init manager waits for before the workers start).
    """

    def __init__(self, reactor, scope, typeUrl, onUpdate, names=(),
                 initialFetchTimeout=DEFAULT_INITIAL_FETCH_TIMEOUT, transport=None,
                 afterUpdate=None):
        """
        @param scope: the stats scope, e.g. C{listener_manager.lds.}.
        @param onUpdate: C{f(resources, versionInfo)}; raises
            L{ConfigError} to reject the update.
        @param initialFetchTimeout: seconds, or 0 for none.
        @param transport: what L{start} watches through when given none.
        @param afterUpdate: called after each accepted update (the server's
            garbage freezer, which freezes what settles after it).
        """
        self.reactor = reactor
        self.typeUrl = typeUrl
        self.names = tuple(names)
        self._onUpdate = onUpdate
        self._initialFetchTimeout = initialFetchTimeout
        self.attempt = scope.counter("update_attempt")
        self.success = scope.counter("update_success")
        self.failure = scope.counter("update_failure")
        self.rejected = scope.counter("update_rejected")
        self.empty = scope.counter("update_empty")
        self.fetchTimeout = scope.counter("init_fetch_timeout")
        self.version = scope.gauge("version")
        self.updateTime = scope.gauge("update_time")
        self.duration = scope.histogram("update_duration")
        self.lastVersion = None
        self.lastUpdated = None
        self.initialized = defer.Deferred()
        self._timer = None
        self._transport = transport
        self._afterUpdate = afterUpdate
        self.transport = None

    def start(self, transport=None):
        """Watch through C{transport} (its C{watch(subscription)})."""
        self.transport = transport = transport or self._transport
        self.attempt.inc()
        if self._initialFetchTimeout > 0:
            self._timer = self.reactor.callLater(self._initialFetchTimeout, self._timedOut)
        transport.watch(self)

    def stop(self):
        self._cancelTimer()
        if self.transport is not None:
            self.transport.unwatch(self)
            self.transport = None

    def _cancelTimer(self):
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _ready(self):
        self._cancelTimer()
        if not self.initialized.called:
            self.initialized.callback(None)

    def _timedOut(self):
        self._timer = None
        self.fetchTimeout.inc()
        self.attempt.inc()
        log.warn("gRPC config: initial fetch timed out for {type}", type=self.typeUrl)
        self._ready()

    # What the transport calls.

    def onResponse(self, resources, versionInfo, delta=False):
        """
        Apply one update.

        @param delta: whether a delta stream delivers it: Envoy's delta
            subscription counts C{update_attempt} before the handler runs,
            and again when the handler rejects the update; the state of
            the world counts it once, after.
        @return: C{None} (ACK) or the error detail (NACK).
        """
        if delta:
            self.attempt.inc()
        started = time.monotonic()
        try:
            with _ownErrors(), withoutCollection():
                self._onUpdate(resources, versionInfo)
        except ConfigError as e:
            detail = e.message
        except Exception as e:
            log.failure("config update for {type} rejected", type=self.typeUrl)
            detail = "%s: %s" % (type(e).__name__, e)
        else:
            detail = None
        if detail is not None or not delta:
            self.attempt.inc()
        if detail is not None:
            log.warn("gRPC config for {type} rejected: {reason}", type=self.typeUrl,
                     reason=detail)
            self.rejected.inc()
            self._ready()
            return detail
        now = time.time()
        self.success.inc()
        self.updateTime.set(int(now * 1000))
        self.version.set(xxHash64(versionInfo))
        self.duration.recordValue(int((time.monotonic() - started) * 1000))
        self.lastVersion = versionInfo
        self.lastUpdated = now
        if self._afterUpdate is not None:
            self._afterUpdate()
        self._ready()
        return None

    def onRejectedBeforeUpdate(self, detail, attempts=1):
        """
        The transport refused a response itself (a resource it could not
        decode); C{attempts} counts as a handler's rejection would.
        """
        self.attempt.inc(attempts)
        self.rejected.inc()
        log.warn("gRPC config for {type} rejected: {reason}", type=self.typeUrl, reason=detail)
        self._ready()

    def onConnectionFailure(self):
        """The stream failed or could not be opened; the old config stays."""
        self.attempt.inc()
        self.failure.inc()


def refuseAll(subscriptions, detail, attempts=1):
    """A response the transport could not decode: each subscription counts it."""
    for subscription in subscriptions:
        subscription.onRejectedBeforeUpdate(detail, attempts)
    return detail


def deliverAll(subscriptions, named, version):
    """
    Hand C{[(name, message)]} to each subscription (one by name gets only
    its own resources).

    @return: C{None} to ACK, or the first error detail to NACK with.
    """
    detail = None
    for subscription in list(subscriptions):
        if subscription.names:
            wanted = set(subscription.names)
            mine = [m for name, m in named if name in wanted]
        else:
            mine = [m for _, m in named]
        error = subscription.onResponse(mine, version)
        if error is not None and detail is None:
            detail = error
    return detail
