# -*- test-case-name: tests.xds.test_subscription_factory -*-
"""
From a C{ConfigSource} to a subscription (Envoy's
C{SubscriptionFactoryImpl}), for the resources a listener or a cluster
asks for by name (RDS, EDS, SDS): a file (C{path_config_source}, C{path})
or a control plane (C{ads}, C{api_config_source}) through the server's
L{txenvoy.xds.control_plane.ControlPlanes}. Either is driven the same way
(C{refresh}, C{start}, C{stop}) and hands its handler the same
C{onConfigUpdate(resources, versionInfo)}.
"""

import functools
import weakref

from twisted.internet import defer

from txenvoy.config.errors import ConfigError
from txenvoy.xds.config_source import checkExists, fileSourceOf
from txenvoy.xds.control_plane import isControlPlane
from txenvoy.xds.discovery_file import ENDPOINT_TYPE, readDiscoveryResponse
from txenvoy.xds.path_subscription import FileSubscription
from txenvoy.xds.process_mirror import subscriptionKey


def weakHandler(method):
    """
    A bound method as a subscription's C{onUpdate} that does not keep its
    object alive. The object (an EDS cluster) holds its subscription: one
    holding it back would be a reference cycle, and a replaced cluster
    would then wait for a collection of the whole heap to be freed
    (L{txenvoy.server.gc_freeze}). An update reaching an object that is
    gone is rejected.
    """
    ref = weakref.WeakMethod(method)

    def onUpdate(resources, versionInfo):
        handler = ref()
        if handler is None:
            raise ConfigError("the subscriber of this resource was removed")
        return handler(resources, versionInfo)

    return onUpdate


class RemoteSubscription:
    """
    A subscription by name to a control plane, made when it starts (the
    transport reaches the control plane through the cluster manager, which
    may not exist yet when the subscription is asked for).
    """

    #: Called once stopped (the worker processes' relay forgets it).
    afterStop = None

    def __init__(self, controlPlanes, source, path, scope, typeUrl, onUpdate, name):
        self._controlPlanes = controlPlanes
        self._args = (source, path, scope, typeUrl, onUpdate, (name,))
        self.subscription = None
        self._waiting = []

    def refresh(self):
        """Nothing to read now: the control plane sends."""
        return False

    def start(self):
        if self.subscription is None:
            self.subscription, transport = self._controlPlanes.subscription(*self._args)
            self.subscription.start(transport)
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                self.subscription.initialized.addBoth(_fire, d)

    def whenInitialized(self):
        """
        A Deferred firing as L{initialized} does, asked for before or
        after the subscription starts (what a cluster warms on: its TLS
        secrets).
        """
        d = defer.Deferred()
        if self.subscription is None:
            self._waiting.append(d)
        else:
            self.subscription.initialized.addBoth(_fire, d)
        return d

    @property
    def initialized(self):
        """
        Once started, a Deferred firing when the first update was applied
        or rejected, or C{initial_fetch_timeout} passed (Envoy's init
        target of the subscription); C{None} before.
        """
        if self.subscription is None:
            return None
        return self.subscription.initialized

    def stop(self):
        subscription, self.subscription = self.subscription, None
        if subscription is not None:
            subscription.stop()
        if self.afterStop is not None:
            self.afterStop()


def _fire(result, d):
    if not d.called:
        d.callback(None)
    return result


class SubscriptionFactory:
    """
    Makes the subscriptions of one server.

    @ivar controlPlanes: the server's
        L{txenvoy.xds.control_plane.ControlPlanes}, or C{None}.
    """

    def __init__(self, reactor, controlPlanes=None, unknownFields=None, validateOnly=False,
                 relay=None, mirror=None):
        """
        @param unknownFields: the
            L{txenvoy.xds.discovery_file.UnknownDynamicFields} policy of files.
        @param relay: in the main process of worker processes, the
            L{txenvoy.xds.process_mirror.UpdateRelay} every accepted update
            (but EDS, whose host sets travel by themselves) is sent on by.
        @param mirror: in a worker process, the
            L{txenvoy.xds.process_mirror.UpdateMirror} that feeds every
            subscription instead of a file or a control plane.
        """
        self.reactor = reactor
        self.controlPlanes = controlPlanes
        self._unknownFields = unknownFields
        self.validateOnly = validateOnly
        self.relay = relay
        self.mirror = mirror

    def subscribe(self, source, path, scope, typeUrl, onUpdate, name):
        """
        A subscription to the resource C{name} of C{typeUrl}, not read
        yet (C{refresh} reads a file, C{start} watches it or asks the
        control plane).

        @param path: the C{ConfigSource}'s field path, for messages.
        @param scope: the stats scope (C{update_attempt}, ...).
        @return: a L{FileSubscription} or a L{RemoteSubscription}, or
            C{None} in validate mode.
        @raise ConfigError: a source txenvoy cannot use, or (serving) a
            file that is not there.
        """
        if not self.validateOnly and (self.relay is not None or self.mirror is not None):
            key = subscriptionKey(typeUrl, name, source)
            if self.mirror is not None:
                remote = isControlPlane(source)
                if remote:
                    self.controlPlanes.check(source, path)
                # A file is read at once in the main process: what it
                # gave, if anything, came before the resource naming it.
                return self.mirror.subscribe(key, onUpdate, readyAtOnce=not remote)
            if typeUrl != ENDPOINT_TYPE:
                subscription = self._subscribe(source, path, scope, typeUrl,
                                               self.relay.wrap(key, onUpdate), name)
                if subscription is not None:
                    subscription.afterStop = functools.partial(self.relay.forget, key)
                return subscription
        return self._subscribe(source, path, scope, typeUrl, onUpdate, name)

    def _subscribe(self, source, path, scope, typeUrl, onUpdate, name):
        if isControlPlane(source):
            if self.controlPlanes is None:
                raise ConfigError("%s: a control plane needs a valid dynamic_resources" % (path,))
            self.controlPlanes.check(source, path)
            if self.validateOnly:
                return None
            subscription = RemoteSubscription(self.controlPlanes, source, path, scope,
                                              typeUrl, onUpdate, name)
            if self.relay is not None and typeUrl != ENDPOINT_TYPE:
                # Initialized with no update (rejected, or its
                # initial_fetch_timeout): what waits on it in the worker
                # processes waits no more either.
                subscription.whenInitialized().addCallback(
                    lambda _, key=subscriptionKey(typeUrl, name, source): self.relay.ready(key))
            return subscription
        fileSource = fileSourceOf(source, path)
        if fileSource is None or self.validateOnly:
            return None
        checkExists(fileSource)
        unknownFields = self._unknownFields
        return FileSubscription(
            self.reactor, fileSource, scope,
            lambda p: readDiscoveryResponse(p, typeUrl, unknownFields), onUpdate)
