# -*- test-case-name: tests.extensions.filters.http.test_extension_with_matcher -*-
"""
C{envoy.extensions.common.matching.v3.ExtensionWithMatcher}: an HTTP
filter wrapped with Envoy's unified matcher, whose C{SkipFilter} action
leaves the filter out of a request.

The matcher (C{xds_matcher}) is compiled once, by the matcher compiler the
RBAC filters use (L{txenvoy.rbac.matcher.compileMatcher}), and evaluated on
the request headers: the request's headers
(C{HttpRequestHeaderMatchInput}) and the connection's network inputs. When
it yields C{SkipFilter} the wrapped filter is not run for that request, in
either direction; otherwise it runs as if configured directly. Around the
C{composite} filter (L{txenvoy.extensions.filters.http.composite}) the
C{ExecuteFilterAction} names the filter that runs in its place; that
action around any other filter, and any other action or input, is refused
with its path.
"""

from zope.interface import implementer

from txenvoy.config.errors import UnsupportedExtension, UnsupportedField
from txenvoy.config.fields import checkFields
from txenvoy.config.registry import Category, extension, typeNameOf, unpackAny
from txenvoy.extensions.filters.http.composite import (
    EXECUTE_FILTER_ACTION,
    CompositeConfig,
    CompositeFilter,
    compileExecuteFilterAction,
)
from txenvoy.http.filter import PassThroughFilter, filterMethod, filterRoles
from txenvoy.interfaces import IHttpFilterFactory, IStreamDecoderFilter, IStreamEncoderFilter
from txenvoy.rbac import RbacInput
from txenvoy.rbac.matcher import compileMatcher, headerInput, networkInputGetter

_HEADER_INPUT = "envoy.type.matcher.v3.HttpRequestHeaderMatchInput"
_SKIP = "envoy.extensions.filters.common.matcher.action.v3.SkipFilter"
_SKIP_FILTER = object()


def _input(typed, path):
    typeName = typeNameOf(typed.typed_config)
    getter = networkInputGetter(typeName)
    if getter is not None:
        return getter
    if typeName == _HEADER_INPUT:
        config = unpackAny(typed.typed_config, path + ".typed_config")
        return headerInput(config.header_name.lower().encode("utf-8"))
    raise UnsupportedExtension(path + ".typed_config", typeName, typed.name)


def _actionCompiler(context, composite):
    """
    The matcher's action compiler: C{SkipFilter}, and around the
    composite filter its C{ExecuteFilterAction}.
    """

    def action(typed, path):
        typeName = typeNameOf(typed.typed_config)
        if typeName == _SKIP:
            return _SKIP_FILTER
        if typeName == EXECUTE_FILTER_ACTION:
            if not composite:
                raise UnsupportedField(path + ".typed_config",
                                       "ExecuteFilterAction outside envoy.filters.http.composite")
            return compileExecuteFilterAction(
                unpackAny(typed.typed_config, path + ".typed_config"), context,
                path + ".typed_config")
        raise UnsupportedExtension(path + ".typed_config", typeName, typed.name)

    return action


def _evaluate(tree, callbacks, headers):
    """The matcher's action for a request, from its headers and connection."""
    remote = callbacks.streamInfo.downstreamRemoteAddress
    return tree(RbacInput.fromConnection(callbacks.connection, None, headers,
                                         remoteIp=remote[0] if remote else None))


@implementer(IHttpFilterFactory)
class ExtensionWithMatcherConfig:
    """
    The compiled wrapper: the wrapped filter's factory and the matcher.
    """

    def __init__(self, inner, tree):
        self.inner = inner
        self.tree = tree
        self.terminal = bool(getattr(inner, "terminal", False))

    def createFilter(self, callbacks):
        if isinstance(self.inner, CompositeConfig):
            tree = self.tree
            return CompositeFilter(self.inner, callbacks,
                                   lambda headers: _evaluate(tree, callbacks, headers))
        inner = self.inner.createFilter(callbacks)
        decoder, encoder = filterRoles(inner)
        if decoder and encoder:
            cls = _MatchingFilter
        elif decoder:
            cls = _MatchingDecoderFilter
        else:
            # An encoder alone never sees the request headers the matcher
            # reads: it runs unless the request side decided otherwise,
            # which it cannot; Envoy evaluates it on the response too.
            return inner
        return cls(self, callbacks, inner)


class _MatchingDecoderFilter(PassThroughFilter):
    """The wrapped decoder filter, run unless the matcher skips it."""

    def __init__(self, config, callbacks, inner):
        PassThroughFilter.__init__(self, callbacks)
        self._config = config
        self._inner = inner
        self._skip = False

    def decodeHeaders(self, headers, endStream):
        if _evaluate(self._config.tree, self.callbacks, headers) is _SKIP_FILTER:
            self._skip = True
            return PassThroughFilter.decodeHeaders(self, headers, endStream)
        return filterMethod(self._inner, "decodeHeaders")(self._inner, headers, endStream)

    def decodeData(self, data, endStream):
        if self._skip:
            return PassThroughFilter.decodeData(self, data, endStream)
        return filterMethod(self._inner, "decodeData")(self._inner, data, endStream)

    def decodeTrailers(self, trailers):
        if self._skip:
            return PassThroughFilter.decodeTrailers(self, trailers)
        return filterMethod(self._inner, "decodeTrailers")(self._inner, trailers)

    def onDestroy(self):
        filterMethod(self._inner, "onDestroy")(self._inner)


_MatchingDecoderFilter = implementer(IStreamDecoderFilter)(_MatchingDecoderFilter)


@implementer(IStreamDecoderFilter, IStreamEncoderFilter)
class _MatchingFilter(_MatchingDecoderFilter):
    """The wrapped filter of both directions, run unless the matcher skips it."""

    def encodeHeaders(self, headers, endStream):
        if self._skip:
            return PassThroughFilter.encodeHeaders(self, headers, endStream)
        return filterMethod(self._inner, "encodeHeaders")(self._inner, headers, endStream)

    def encodeData(self, data, endStream):
        if self._skip:
            return PassThroughFilter.encodeData(self, data, endStream)
        return filterMethod(self._inner, "encodeData")(self._inner, data, endStream)

    def encodeTrailers(self, trailers):
        if self._skip:
            return PassThroughFilter.encodeTrailers(self, trailers)
        return filterMethod(self._inner, "encodeTrailers")(self._inner, trailers)


@extension(Category.HTTP_FILTER, "envoy.extensions.common.matching.v3.ExtensionWithMatcher",
           "envoy.filters.http.match_delegate")
def createExtensionWithMatcher(message, context):
    """Compile an C{ExtensionWithMatcher} around the filter it wraps."""
    path = context.configPath
    # The deprecated "matcher" (envoy.config.common.matcher.v3) is refused.
    checkFields(message, ("xds_matcher", "extension_config"), path)
    inner = context.createExtension(Category.HTTP_FILTER, message.extension_config,
                                    path + ".extension_config")
    tree = compileMatcher(message.xds_matcher, path + ".xds_matcher", _input,
                          _actionCompiler(context, isinstance(inner, CompositeConfig)))
    return ExtensionWithMatcherConfig(inner, tree)
