# -*- test-case-name: tests.extensions.filters.http.test_small_filters -*-
"""
C{envoy.filters.http.header_mutation}: add, overwrite and remove request
and response headers, in the order written, with Envoy's formatter
commands in the values.

Behaviour copied from Envoy 1.40 (checked against the binary, pinned in
C{tests/extensions/filters/http/test_small_filters.py} and
C{tests/e2e/test_small_filters.py}):

 - C{request_mutations} run when the request comes (before the route's
   own C{request_headers_to_add}); C{response_mutations} on every
   response, local replies included;
 - each mutation is C{remove} or C{append} (a C{HeaderValueOption}); an
   overwrite removes the header and adds the new value at the end;
 - a route's C{HeaderMutationPerRoute} runs after the filter's own
   mutations (before them with C{most_specific_header_mutations_wins}).

C{remove_on_match}, query parameter and trailer mutations are refused
with their path.
"""

from zope.interface import implementer

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2  # noqa: F401

from txenvoy.config.fields import checkFields
from txenvoy.config.registry import Category, extension
from txenvoy.http.filter import ConfiguredFilter, FilterHeadersStatus
from txenvoy.http.filter_config import RouteSpecificConfigs
from txenvoy.http.header_mutation import (
    APPEND_IF_EXISTS_OR_ADD,
    OVERWRITE_IF_EXISTS,
    OVERWRITE_IF_EXISTS_OR_ADD,
    FormatContext,
    compileHeaderMutation,
)
from txenvoy.interfaces import IHttpFilterFactory, IStreamDecoderFilter, IStreamEncoderFilter

__all__ = ["HeaderMutationConfig", "HeaderMutationFilter", "createHeaderMutation"]

_NAME = "envoy.filters.http.header_mutation"
_HEADER_MUTATION = "envoy.extensions.filters.http.header_mutation.v3.HeaderMutation"
_PER_ROUTE = "envoy.extensions.filters.http.header_mutation.v3.HeaderMutationPerRoute"


class _Remove:
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def apply(self, headers, context):
        headers.remove(self.name)


class _Overwrite:
    """Envoy 1.40's overwrite: the old values go, the new one is added at the end."""

    __slots__ = ("name", "mutation", "onlyIfPresent")

    def __init__(self, name, mutation, onlyIfPresent):
        self.name = name
        self.mutation = mutation
        self.onlyIfPresent = onlyIfPresent

    def apply(self, headers, context):
        if headers.get(self.name) is None:
            if self.onlyIfPresent:
                return
        else:
            headers.remove(self.name)
        self.mutation.apply(headers, context)


def _compileMutations(mutations, path):
    """A C{repeated HeaderMutation} as a list of operations, in order."""
    ops = []
    for i, mutation in enumerate(mutations):
        itemPath = "%s[%d]" % (path, i)
        checkFields(mutation, ("remove", "append"), itemPath)
        which = mutation.WhichOneof("action")
        if which == "remove":
            ops.append(_Remove(mutation.remove.lower().encode("utf-8")))
            continue
        option = base_pb2.HeaderValueOption()
        option.CopyFrom(mutation.append)
        action = option.append_action
        if option.HasField("append"):
            action = (APPEND_IF_EXISTS_OR_ADD if option.append.value
                      else OVERWRITE_IF_EXISTS_OR_ADD)
        if action in (OVERWRITE_IF_EXISTS_OR_ADD, OVERWRITE_IF_EXISTS):
            option.ClearField("append")
            option.append_action = APPEND_IF_EXISTS_OR_ADD
            compiled = compileHeaderMutation([option], addPath=itemPath + ".append")
            ops.append(_Overwrite(option.header.key.lower().encode("utf-8"), compiled,
                                  action == OVERWRITE_IF_EXISTS))
        else:
            ops.append(compileHeaderMutation([option], addPath=itemPath + ".append"))
    return ops


class _Mutations:
    """A compiled C{Mutations}."""

    def __init__(self, message, path):
        checkFields(message, ("request_mutations", "response_mutations"), path)
        self.request = _compileMutations(message.request_mutations, path + ".request_mutations")
        self.response = _compileMutations(message.response_mutations,
                                          path + ".response_mutations")


def _compilePerRoute(message):
    path = "typed_per_filter_config[%s]" % (_NAME,)
    checkFields(message, ("mutations",), path)
    return _Mutations(message.mutations, path + ".mutations")


@implementer(IHttpFilterFactory)
class HeaderMutationConfig:
    """The filter factory."""

    terminal = False

    def __init__(self, mutations, mostSpecificWins):
        self.mutations = mutations
        self.mostSpecificWins = mostSpecificWins
        self.routeConfigs = RouteSpecificConfigs(_NAME, (_PER_ROUTE,), _compilePerRoute)

    def createFilter(self, callbacks):
        """@return: a L{HeaderMutationFilter}."""
        return HeaderMutationFilter(self, callbacks)

    def levels(self, callbacks):
        """The mutations that apply to a request, in the order they run."""
        route = self.routeConfigs.mostSpecific(callbacks)
        if route is None:
            return (self.mutations,)
        if self.mostSpecificWins:
            return (route, self.mutations)
        return (self.mutations, route)


@implementer(IStreamDecoderFilter, IStreamEncoderFilter)
class HeaderMutationFilter(ConfiguredFilter):
    """The header mutations of one request."""

    _levels = None

    def decodeHeaders(self, headers, endStream):
        levels = self._levels = self.config.levels(self.callbacks)
        context = FormatContext(self.callbacks.streamInfo, headers)
        for level in levels:
            for op in level.request:
                op.apply(headers.headers, context)
        return FilterHeadersStatus.Continue

    def encodeHeaders(self, headers, endStream):
        callbacks = self.callbacks
        levels = self._levels
        if levels is None:
            levels = self.config.levels(callbacks)
        info = callbacks.streamInfo
        if info.responseCode is None:
            # What %RESPONSE_CODE% says while the response passes the filters.
            info.responseCode = headers.status
        context = FormatContext(info, callbacks.requestHeaders, headers)
        for level in levels:
            for op in level.response:
                op.apply(headers.headers, context)
        return FilterHeadersStatus.Continue


@extension(Category.HTTP_FILTER, _HEADER_MUTATION, _NAME,
           fields=("mutations", "most_specific_header_mutations_wins"))
def createHeaderMutation(message, context):
    """Compile a C{HeaderMutation}."""
    return HeaderMutationConfig(_Mutations(message.mutations,
                                           context.path + ".typed_config.mutations"),
                                message.most_specific_header_mutations_wins)
