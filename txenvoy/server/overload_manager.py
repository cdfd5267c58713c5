# -*- test-case-name: tests.server.test_overload_manager -*-
"""
The overload manager (Envoy's C{OverloadManagerImpl}).

Every C{refresh_interval} (1 s unless configured) the main reactor asks
each resource monitor for its pressure (a fraction of its limit), feeds it
through the triggers of each overload action, and, when an action's state
changed, posts the new states to every worker as one immutable
L{OverloadState}. A worker reads its current state through its own
L{ThreadLocalOverloadState}; nothing there is shared between threads
except the proactive resources (C{global_downstream_max_connections}),
which are counted at accept time on every worker and so keep one
lock-protected count, as Envoy keeps one atomic.

Stats, named as Envoy names them:

  - C{overload.<monitor>.pressure} (percent), C{failed_updates},
    C{skipped_updates} (a monitor still busy with the last update);
  - C{overload.<action>.active} (1 while saturated) and C{scale_percent};
  - C{overload.refresh_interval_delay}: how late each refresh ran, in ms.
"""

import random
import threading
from types import MappingProxyType

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import Attribute, Interface, implementer

from txenvoy.config import messages
from txenvoy.config.errors import ConfigError, UnsupportedField
from txenvoy.config.fields import checkFields
from txenvoy.config.registry import Category, typeNameOf, unpackAny
from txenvoy.server.heap_shrinker import FreeMemoryReleaser, HeapShrinker

log = Logger(namespace="main")

__all__ = [
    "STOP_ACCEPTING_REQUESTS", "DISABLE_HTTP_KEEPALIVE", "STOP_ACCEPTING_CONNECTIONS",
    "REJECT_INCOMING_CONNECTIONS", "SHRINK_HEAP", "REDUCE_TIMEOUTS", "RESET_HIGH_MEMORY_STREAM",
    "GLOBAL_DOWNSTREAM_MAX_CONNECTIONS", "IResourceMonitor", "IProactiveResourceMonitor",
    "OverloadManager", "OverloadState", "SharedCount", "ThreadLocalOverloadState", "NULL_OVERLOAD_STATE",
    "overloadStateOf",
]

_ACTION = "envoy.overload_actions."
STOP_ACCEPTING_REQUESTS = _ACTION + "stop_accepting_requests"
DISABLE_HTTP_KEEPALIVE = _ACTION + "disable_http_keepalive"
STOP_ACCEPTING_CONNECTIONS = _ACTION + "stop_accepting_connections"
REJECT_INCOMING_CONNECTIONS = _ACTION + "reject_incoming_connections"
SHRINK_HEAP = _ACTION + "shrink_heap"
REDUCE_TIMEOUTS = _ACTION + "reduce_timeouts"
RESET_HIGH_MEMORY_STREAM = _ACTION + "reset_high_memory_stream"

#: The actions Envoy 1.40 knows; any other name is a config error.
KNOWN_ACTIONS = frozenset([
    STOP_ACCEPTING_REQUESTS, DISABLE_HTTP_KEEPALIVE, STOP_ACCEPTING_CONNECTIONS,
    REJECT_INCOMING_CONNECTIONS, SHRINK_HEAP, REDUCE_TIMEOUTS, RESET_HIGH_MEMORY_STREAM,
])
#: Known to Envoy, not acted on by txenvoy: rejected rather than ignored.
_UNSUPPORTED_ACTIONS = frozenset([RESET_HIGH_MEMORY_STREAM])

#: The one proactive resource: counted as connections are accepted, not polled.
GLOBAL_DOWNSTREAM_MAX_CONNECTIONS = "envoy.resource_monitors.global_downstream_max_connections"

_SCALE_TIMERS_TYPE = "envoy.config.overload.v3.ScaleTimersOverloadActionConfig"
# ScaleTimersOverloadActionConfig.TimerType values txenvoy scales.
HTTP_DOWNSTREAM_CONNECTION_IDLE = 1
_SCALED_TIMER_NAMES = {1: "HTTP_DOWNSTREAM_CONNECTION_IDLE"}

DEFAULT_REFRESH_INTERVAL = 1.0


class IResourceMonitor(Interface):
    """
    A polled resource (Envoy's C{Server::ResourceMonitor}), made by a
    C{envoy.resource_monitors} extension and run on the main thread.
    """

    def updateResourceUsage(callbacks):
        """
        Measure, then call C{callbacks.onSuccess(pressure)} (a fraction of
        the limit, may exceed 1) or C{callbacks.onFailure(reason)}; at once
        or later. Until one is called, further updates are skipped.
        """


class IProactiveResourceMonitor(Interface):
    """
    A resource counted as it is used (Envoy's C{ProactiveResourceMonitor}):
    only C{global_downstream_max_connections} is one.
    """

    maxResourceUsage = Attribute("The limit.")


def _bernoulli(value, _random=random.random):
    """True with probability C{value}: Envoy's C{RandomGenerator::bernoulli}."""
    if value <= 0.0:
        return False
    return value >= 1.0 or _random() < value


# -- triggers and actions (main thread) ------------------------------------------


class ThresholdTrigger:
    """Saturated (1.0) once the pressure reaches C{threshold}, else 0."""

    def __init__(self, threshold):
        self.threshold = threshold
        self.state = 0.0

    def update(self, pressure):
        self.state = 1.0 if pressure >= self.threshold else 0.0


class RangeTrigger:
    """
    0 below C{scaling_threshold}, 1.0 (saturated) from
    C{saturation_threshold}, and linear in between.
    """

    def __init__(self, scaling, saturation):
        self.scaling = scaling
        self.saturation = saturation
        self.state = 0.0

    def update(self, pressure):
        if pressure < self.scaling:
            self.state = 0.0
        elif pressure >= self.saturation:
            self.state = 1.0
        else:
            self.state = (pressure - self.scaling) / (self.saturation - self.scaling)


class OverloadAction:
    """
    One configured action: its state is the largest of its triggers'.

    @ivar name: C{envoy.overload_actions.<...>}.
    @ivar triggers: C{{resource name: trigger}}.
    @ivar state: the current value, 0 to 1.
    @ivar scaledTimers: for C{reduce_timeouts}, C{{timer type: (minTimeout,
        minScale)}} (one of the two is C{None}).
    """

    def __init__(self, proto, resources, stats, path):
        self.name = name = proto.name
        if name not in KNOWN_ACTIONS:
            raise ConfigError("Unknown Overload Manager Action %s @ %s.name" % (name, path))
        if name in _UNSUPPORTED_ACTIONS:
            raise UnsupportedField(path, name)
        self.triggers = {}
        for i, t in enumerate(proto.triggers):
            tpath = "%s.triggers[%d]" % (path, i)
            if t.name not in resources:
                raise ConfigError("Unknown trigger resource %s for overload action %s @ %s.name"
                                  % (t.name, name, tpath))
            if t.name in self.triggers:
                raise ConfigError("Duplicate trigger resource for overload action %s @ %s"
                                  % (name, tpath))
            which = t.WhichOneof("trigger_oneof")
            if which == "threshold":
                trigger = ThresholdTrigger(t.threshold.value)
            else:
                s = t.scaled
                if s.scaling_threshold >= s.saturation_threshold:
                    raise ConfigError("scaling_threshold must be less than saturation_threshold"
                                      " @ %s.scaled" % (tpath,))
                trigger = RangeTrigger(s.scaling_threshold, s.saturation_threshold)
            self.triggers[t.name] = trigger
        self.scaledTimers = self._scaledTimers(proto, path)
        self.state = 0.0
        scope = stats.scope("overload.%s." % (name,))
        self._active = scope.gauge("active")
        self._scalePercent = scope.gauge("scale_percent")
        self._active.set(0)
        self._scalePercent.set(0)

    def _scaledTimers(self, proto, path):
        if not proto.HasField("typed_config"):
            return {}
        if typeNameOf(proto.typed_config) != _SCALE_TIMERS_TYPE or self.name != REDUCE_TIMEOUTS:
            raise UnsupportedField(path + ".typed_config", typeNameOf(proto.typed_config))
        config = unpackAny(proto.typed_config, path + ".typed_config")
        timers = {}
        for i, factor in enumerate(config.timer_scale_factors):
            fpath = "%s.typed_config.timer_scale_factors[%d]" % (path, i)
            if factor.timer not in _SCALED_TIMER_NAMES:
                raise UnsupportedField(fpath + ".timer", "only HTTP_DOWNSTREAM_CONNECTION_IDLE")
            if factor.WhichOneof("overload_adjust") == "min_timeout":
                timers[factor.timer] = (factor.min_timeout.ToTimedelta().total_seconds(), None)
            else:
                timers[factor.timer] = (None, factor.min_scale.value / 100.0)
        return timers

    def updateResourcePressure(self, resource, pressure):
        """
        @return: whether the action's state changed.
        """
        old = self.state
        self.triggers[resource].update(pressure)
        new = max(t.state for t in self.triggers.values())
        self.state = new
        self._active.set(1 if new >= 1.0 else 0)
        self._scalePercent.set(int(new * 100))
        return new != old


# -- resources (main thread) -----------------------------------------------------


class _Resource:
    """
    A polled resource monitor and its stats; it is also the callbacks
    object the monitor answers.
    """

    def __init__(self, name, monitor, manager, stats):
        self.name = name
        self.monitor = monitor
        self._manager = manager
        self._pending = False
        scope = stats.scope("overload.%s." % (name,))
        self._pressure = scope.gauge("pressure")
        self._failed = scope.counter("failed_updates")
        self._skipped = scope.counter("skipped_updates")
        self._pressure.set(0)

    def update(self):
        if self._pending:
            log.debug("Skipping update for resource {name} which has pending update",
                      name=self.name)
            self._skipped.inc()
            return
        self._pending = True
        try:
            self.monitor.updateResourceUsage(self)
        except Exception as e:
            self.onFailure(e)

    def onSuccess(self, pressure):
        self._pending = False
        self._pressure.set(int(pressure * 100))
        self._manager._updateResourcePressure(self.name, pressure)

    def onFailure(self, reason):
        self._pending = False
        log.info("Failed to update resource {name}: {reason}", name=self.name, reason=reason)
        self._failed.inc()


class SharedCount:
    """
    A count that several worker threads take from and give back to, under
    one lock (Envoy keeps such counts in atomics): the global connection
    limit and each listener's own limit.
    """

    def __init__(self):
        self.current = 0
        self._lock = threading.Lock()

    def tryAllocate(self, limit, amount=1):
        """Add C{amount} unless that would pass C{limit}; say whether it did."""
        with self._lock:
            if self.current + amount > limit:
                return False
            self.current += amount
            return True

    def deallocate(self, amount=1):
        with self._lock:
            self.current -= amount


class ProactiveResource(SharedCount):
    """
    A resource every worker allocates from as it is used (Envoy's
    C{ProactiveResource}). A refused allocation counts
    C{overload.<name>.failed_updates} in the shard of the refused thread;
    as in Envoy 1.40, its C{pressure} gauge stays 0.
    """

    def __init__(self, name, maxUsage, stats):
        SharedCount.__init__(self)
        self.name = name
        self.max = maxUsage
        scope = stats.scope("overload.%s." % (name,))
        scope.gauge("pressure").set(0)
        scope.counter("failed_updates")


# -- what workers see ------------------------------------------------------------


class OverloadState:
    """
    An immutable snapshot of every action's state, as posted to workers.

    @ivar values: C{{action name: value}} for actions above 0.
    """

    __slots__ = ("values",)

    def __init__(self, values=None):
        self.values = MappingProxyType(dict(values or {}))

    def value(self, action):
        return self.values.get(action, 0.0)

    def isSaturated(self, action):
        return self.values.get(action, 0.0) >= 1.0


class ThreadLocalOverloadState:
    """
    One worker's view (Envoy's C{ThreadLocalOverloadState}): the last
    L{OverloadState} posted to it, the proactive resources, and callbacks
    run on the worker's thread when an action's state changes.

    @ivar state: the current L{OverloadState}.
    @ivar scaledTimers: C{{timer type: (minTimeout, minScale)}} of the
        C{reduce_timeouts} action (empty without one).
    """

    def __init__(self, stats=None, proactive=None, scaledTimers=None):
        self.state = OverloadState()
        self._proactive = proactive or {}
        self._failed = {}
        if stats is not None:
            for name in self._proactive:
                self._failed[name] = stats.counter("overload.%s.failed_updates" % (name,))
        self.scaledTimers = scaledTimers or {}
        self._callbacks = {}

    def value(self, action):
        """The action's state, 0 (inactive) to 1 (saturated)."""
        return self.state.values.get(action, 0.0)

    def isSaturated(self, action):
        return self.state.values.get(action, 0.0) >= 1.0

    def shouldApply(self, action):
        """Whether a scaled action applies this time (Envoy's bernoulli(value))."""
        values = self.state.values
        if not values:
            # No action active, nearly always: no lookup (a read through
            # the mapping proxy costs more than the rest of this call).
            return False
        value = values.get(action)
        return value is not None and _bernoulli(value)

    def tryAllocateResource(self, name, amount=1):
        """
        Take C{amount} of a proactive resource. Without that resource
        configured, always succeeds.
        """
        resource = self._proactive.get(name)
        if resource is None:
            return True
        if resource.tryAllocate(resource.max, amount):
            return True
        self._failed[name].inc()
        return False

    def tryDeallocateResource(self, name, amount=1):
        resource = self._proactive.get(name)
        if resource is not None:
            resource.deallocate(amount)

    def hasProactiveResource(self, name):
        return name in self._proactive

    def scaledTimeout(self, timerType, timeout):
        """
        C{timeout} as C{reduce_timeouts} scales it now (Envoy's scaled
        range timer: C{min + (max - min) * (1 - value)}).
        """
        adjust = self.scaledTimers.get(timerType)
        if adjust is None or not timeout:
            return timeout
        value = self.state.values.get(REDUCE_TIMEOUTS, 0.0)
        if not value:
            return timeout
        minTimeout, minScale = adjust
        low = minTimeout if minTimeout is not None else timeout * minScale
        low = min(low, timeout)
        return low + (timeout - low) * (1.0 - value)

    def addCallback(self, action, callback):
        """Call C{callback(value)} on this thread whenever C{action} changes."""
        self._callbacks.setdefault(action, {})[callback] = None

    def removeCallback(self, action, callback):
        callbacks = self._callbacks.get(action)
        if callbacks:
            callbacks.pop(callback, None)

    def setState(self, state):
        """Install a newly posted L{OverloadState}; run on the owning thread."""
        old = self.state
        self.state = state
        for action, callbacks in list(self._callbacks.items()):
            if old.value(action) != state.value(action):
                for cb in list(callbacks):
                    try:
                        cb(state.value(action))
                    except Exception:
                        log.failure("overload action callback for {action} failed",
                                    action=action)


class _NullOverloadState(ThreadLocalOverloadState):
    """Nothing is ever overloaded, so nothing needs to be told."""

    def addCallback(self, action, callback):
        pass


#: What code built without an overload manager reads.
NULL_OVERLOAD_STATE = _NullOverloadState()


def overloadStateOf(dispatcher):
    """A dispatcher's L{ThreadLocalOverloadState}, or the null one."""
    return getattr(dispatcher, "overloadState", None) or NULL_OVERLOAD_STATE


# -- the manager -----------------------------------------------------------------


class OverloadManager(Service):
    """
    Built from the bootstrap's C{overload_manager} (possibly empty), on the
    main thread; a child service of the server, refreshing while it runs.

    @ivar refreshInterval: seconds between updates.
    @ivar resources: C{{name: _Resource}} of polled monitors.
    @ivar proactive: C{{name: ProactiveResource}}.
    @ivar actions: C{{name: OverloadAction}}.
    """

    def __init__(self, reactor, config, stats, context, path="overload_manager"):
        self.reactor = reactor
        self._stats = stats
        checkFields(config, ("refresh_interval", "resource_monitors", "actions"), path)
        self.refreshInterval = (config.refresh_interval.ToTimedelta().total_seconds()
                                if config.HasField("refresh_interval")
                                else DEFAULT_REFRESH_INTERVAL)
        self.resources = {}
        self.proactive = {}
        for i, rm in enumerate(config.resource_monitors):
            rpath = "%s.resource_monitors[%d]" % (path, i)
            name = rm.name
            if name in self.resources or name in self.proactive:
                raise ConfigError("Duplicate resource monitor %s @ %s" % (name, rpath))
            monitor = self._createMonitor(rm, context, rpath)
            if name == GLOBAL_DOWNSTREAM_MAX_CONNECTIONS:
                self.proactive[name] = ProactiveResource(name, monitor.maxResourceUsage, stats)
            else:
                self.resources[name] = _Resource(name, monitor, self, stats)
        self.actions = {}
        self._byResource = {}
        known = set(self.resources) | set(self.proactive)
        for i, ap in enumerate(config.actions):
            apath = "%s.actions[%d]" % (path, i)
            if ap.name in self.actions:
                raise ConfigError("Duplicate overload action %s @ %s" % (ap.name, apath))
            action = OverloadAction(ap, known, stats, apath)
            self.actions[ap.name] = action
            for resource in action.triggers:
                self._byResource.setdefault(resource, []).append(action)
        self._delay = stats.histogram("overload.refresh_interval_delay")
        # Envoy 1.40 always has it, configured or not (txenvoy rejects the action).
        stats.counter(RESET_HIGH_MEMORY_STREAM + ".count")
        self._workers = []
        self._loop = None
        self._lastRefresh = None
        self.state = OverloadState()
        self._shrinkHeap = None

    @staticmethod
    def _createMonitor(rm, context, path):
        """
        Envoy looks the global connection monitor up by its name among
        proactive monitors, and every other one by its type among polled
        ones; a type in the wrong place is not found.
        """
        monitor = context.createExtension(Category.RESOURCE_MONITOR, rm, path)
        wanted = (IProactiveResourceMonitor if rm.name == GLOBAL_DOWNSTREAM_MAX_CONNECTIONS
                  else IResourceMonitor)
        if not wanted.providedBy(monitor):
            raise messages.noImplementation(rm.name, path, typeNameOf(rm.typed_config))
        return monitor

    def registerWorker(self, dispatcher):
        """
        Give a worker's dispatcher its L{ThreadLocalOverloadState}
        (C{dispatcher.overloadState}); later states are posted to it.
        """
        reduce = self.actions.get(REDUCE_TIMEOUTS)
        tls = ThreadLocalOverloadState(dispatcher.stats, self.proactive,
                                       reduce.scaledTimers if reduce is not None else None)
        tls.state = self.state
        dispatcher.overloadState = tls
        self._workers.append(dispatcher)
        return tls

    def startService(self):
        Service.startService(self)
        self.start()

    def stopService(self):
        Service.stopService(self)
        self.stop()

    def start(self):
        """
        Start the refresh loop on the main reactor (none without monitors),
        and the periodic release of free memory (always).
        """
        self._releaser = FreeMemoryReleaser(self.reactor)
        self._releaser.start()
        if SHRINK_HEAP in self.actions:
            self._shrinkHeap = HeapShrinker(self.reactor, self._stats)
        if not self.resources:
            return
        self._lastRefresh = self.reactor.seconds()
        self._loop = LoopingCall(self.refresh)
        self._loop.clock = self.reactor
        self._loop.start(self.refreshInterval, now=False)

    _releaser = None

    def stop(self):
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        if self._releaser is not None:
            self._releaser.stop()
        if self._shrinkHeap is not None:
            self._shrinkHeap.stop()

    def refresh(self):
        """One update of every polled resource; post what changed."""
        now = self.reactor.seconds()
        if self._lastRefresh is not None:
            # Envoy records the time between two measurements, in ms.
            self._delay.recordValue((now - self._lastRefresh) * 1000.0)
        self._lastRefresh = now
        self._refreshing = True
        try:
            for resource in self.resources.values():
                resource.update()
        finally:
            self._refreshing = False
        if self._changed:
            self._publish()

    _changed = False
    _refreshing = False

    def _updateResourcePressure(self, name, pressure):
        for action in self._byResource.get(name, ()):
            if action.updateResourcePressure(name, pressure):
                log.info("Overload action {action} became {state}", action=action.name,
                         state="active" if action.state else "inactive")
                self._changed = True
        if self._changed and not self._refreshing:
            # A monitor that answered after its refresh: publish now.
            self._publish()

    def _publish(self):
        self._changed = False
        self.state = state = OverloadState(
            {name: a.state for name, a in self.actions.items() if a.state})
        for dispatcher in self._workers:
            dispatcher.post(dispatcher.overloadState.setState, state)
        if self._shrinkHeap is not None:
            self._shrinkHeap.setActive(state.isSaturated(SHRINK_HEAP))
