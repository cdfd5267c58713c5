# -*- test-case-name: tests.extensions.filters.http.test_composite -*-
"""
C{envoy.filters.http.composite}: a filter slot whose filter is chosen per
request by the matcher of the C{ExtensionWithMatcher} that wraps it.

Alone it does nothing. Wrapped, the matcher's C{ExecuteFilterAction}
names the filter that runs in its place for that request (its
C{typed_config}, any registered HTTP filter, compiled once when the config
loads), in both directions from the request headers on; C{sample_percent}
(a runtime fraction) leaves a request out of the delegation, so that it
passes as if no action had matched. Each delegation counts
C{http.<stat_prefix>.composite.filter_delegation_success}, as Envoy's does.
The action's C{dynamic_config} (ECDS) and C{filter_chain} are refused with
their path.
"""

from zope.interface import implementer

from txenvoy.config.fields import checkFields
from txenvoy.config.registry import Category, extension
from txenvoy.http.filter import PassThroughFilter, filterMethod, filterRoles
from txenvoy.http.filter_config import WorkerStats, httpStatPrefix, snapshotSource
from txenvoy.interfaces import IHttpFilterFactory, IStreamDecoderFilter, IStreamEncoderFilter
from txenvoy.runtime.runtime import RuntimeFractionalPercent

EXECUTE_FILTER_ACTION = "envoy.extensions.filters.http.composite.v3.ExecuteFilterAction"
_COUNTERS = ("filter_delegation_error", "filter_delegation_success")


@implementer(IHttpFilterFactory)
class CompositeConfig:
    """
    The compiled C{Composite} filter: its stats. Its filters come from the
    actions of the matcher around it (L{ExecuteFilter}).
    """

    terminal = False

    def __init__(self, statPrefix):
        prefix = statPrefix + "composite."
        self.stats = WorkerStats({name: prefix + name for name in _COUNTERS})

    def createFilter(self, callbacks):
        # Not wrapped in a matcher: nothing is ever delegated to.
        return PassThroughFilter(callbacks)


class ExecuteFilter:
    """
    A compiled C{ExecuteFilterAction}: the delegated filter's factory and
    its sampling.
    """

    def __init__(self, factory, sample, snapshot):
        self.factory = factory
        self._sample = sample
        self._snapshot = snapshot

    def sampled(self):
        """Whether this request is delegated (C{sample_percent}, if any)."""
        return self._sample is None or self._sample.enabled(self._snapshot())


def compileExecuteFilterAction(action, context, path):
    """
    Compile an C{ExecuteFilterAction} message at C{path} (its
    C{typed_config} field path).
    """
    checkFields(action, ("typed_config", "sample_percent"), path)
    factory = context.createExtension(Category.HTTP_FILTER, action.typed_config,
                                      path + ".typed_config")
    sample = (RuntimeFractionalPercent(action.sample_percent)
              if action.HasField("sample_percent") else None)
    return ExecuteFilter(factory, sample, snapshotSource(context))


@implementer(IStreamDecoderFilter, IStreamEncoderFilter)
class CompositeFilter(PassThroughFilter):
    """
    One request's composite filter: the action the matcher gives on the
    request headers decides which filter, if any, runs here.

    @param choose: C{choose(headers)} gives the matcher's action for the
        request, or C{None}.
    """

    def __init__(self, config, callbacks, choose):
        PassThroughFilter.__init__(self, callbacks)
        self._config = config
        self._choose = choose
        self._decoder = self._encoder = None

    def decodeHeaders(self, headers, endStream):
        action = self._choose(headers)
        if isinstance(action, ExecuteFilter) and action.sampled():
            delegate = action.factory.createFilter(self.callbacks)
            decoder, encoder = filterRoles(delegate)
            self._decoder = delegate if decoder else None
            self._encoder = delegate if encoder else None
            self._delegate = delegate
            stats = self._config.stats.forDispatcher(self.callbacks.dispatcher)
            stats.filter_delegation_success.inc()
        return self._decode("decodeHeaders", headers, endStream)

    _delegate = None

    def _decode(self, name, *args):
        d = self._decoder
        if d is None:
            return getattr(PassThroughFilter, name)(self, *args)
        return filterMethod(d, name)(d, *args)

    def _encode(self, name, *args):
        e = self._encoder
        if e is None:
            return getattr(PassThroughFilter, name)(self, *args)
        return filterMethod(e, name)(e, *args)

    def decodeData(self, data, endStream):
        return self._decode("decodeData", data, endStream)

    def decodeTrailers(self, trailers):
        return self._decode("decodeTrailers", trailers)

    def encodeHeaders(self, headers, endStream):
        return self._encode("encodeHeaders", headers, endStream)

    def encodeData(self, data, endStream):
        return self._encode("encodeData", data, endStream)

    def encodeTrailers(self, trailers):
        return self._encode("encodeTrailers", trailers)

    def onDestroy(self):
        if self._delegate is not None:
            filterMethod(self._delegate, "onDestroy")(self._delegate)


@extension(Category.HTTP_FILTER, "envoy.extensions.filters.http.composite.v3.Composite",
           "envoy.filters.http.composite", fields=())
def createComposite(message, context):
    config = CompositeConfig(httpStatPrefix(context))
    config.stats.declare(context)
    return config
