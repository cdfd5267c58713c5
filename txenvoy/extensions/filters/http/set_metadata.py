# -*- test-case-name: tests.extensions.filters.http.test_small_filters -*-
"""
C{envoy.filters.http.set_metadata}: put fixed values in the request's
dynamic metadata, for the route, the access log and later filters
(C{%DYNAMIC_METADATA(ns:key)%}).

Behaviour copied from Envoy 1.40 (checked against the binary, pinned in
C{tests/extensions/filters/http/test_small_filters.py} and
C{tests/e2e/test_small_filters.py}): each C{metadata} entry sets its
namespace when the namespace is empty or C{allow_overwrite}; otherwise it
counts in C{http.<prefix>.set_metadata.overwrite_denied}. The deprecated
C{metadata_namespace} and C{value} merge into the namespace. C{typed_value}
is refused with its path.
"""

from google.protobuf import json_format
from zope.interface import implementer

from envoy.extensions.filters.http.set_metadata.v3 import set_metadata_pb2  # noqa: F401

from txenvoy.config.fields import checkFields
from txenvoy.config.registry import Category, extension
from txenvoy.http.filter import ConfiguredFilter, FilterHeadersStatus
from txenvoy.http.filter_config import WorkerStats, httpStatPrefix
from txenvoy.interfaces import IHttpFilterFactory, IStreamDecoderFilter

__all__ = ["SetMetadataConfig", "SetMetadataFilter", "createSetMetadata"]

_NAME = "envoy.filters.http.set_metadata"
_SET_METADATA = "envoy.extensions.filters.http.set_metadata.v3.Config"


def _merge(into, value):
    """Protobuf's Struct merge, as Envoy's legacy value: nested dicts merge."""
    for key, item in value.items():
        if isinstance(item, dict) and isinstance(into.get(key), dict):
            _merge(into[key], item)
        else:
            into[key] = item


@implementer(IHttpFilterFactory)
class SetMetadataConfig:
    """
    The filter factory.

    @ivar entries: C{(namespace, value, allowOverwrite)}, in order.
    @ivar legacy: C{(namespace, value)} of the deprecated fields, or C{None}.
    """

    terminal = False

    def __init__(self, entries, legacy, statPrefix):
        self.entries = entries
        self.legacy = legacy
        self.stats = WorkerStats({"overwrite_denied": statPrefix + "overwrite_denied"})

    def createFilter(self, callbacks):
        """@return: a L{SetMetadataFilter}."""
        return SetMetadataFilter(self, callbacks)


@implementer(IStreamDecoderFilter)
class SetMetadataFilter(ConfiguredFilter):
    """Sets the metadata of one request."""

    def decodeHeaders(self, headers, endStream):
        config = self.config
        metadata = self.callbacks.streamInfo.dynamicMetadata
        if config.legacy is not None:
            namespace, value = config.legacy
            _merge(metadata.setdefault(namespace, {}), value)
        for namespace, value, allowOverwrite in config.entries:
            if namespace in metadata and not allowOverwrite:
                config.stats.forDispatcher(self.callbacks.dispatcher).overwrite_denied.inc()
                continue
            metadata[namespace] = dict(value)
        return FilterHeadersStatus.Continue


@extension(Category.HTTP_FILTER, _SET_METADATA, _NAME,
           fields=("metadata_namespace", "value", "metadata"))
def createSetMetadata(message, context):
    """Compile a C{Config}."""
    path = context.path + ".typed_config"
    entries = []
    for i, entry in enumerate(message.metadata):
        checkFields(entry, ("metadata_namespace", "allow_overwrite", "value"),
                    "%s.metadata[%d]" % (path, i))
        entries.append((entry.metadata_namespace, json_format.MessageToDict(entry.value),
                        entry.allow_overwrite))
    legacy = None
    if message.metadata_namespace:
        legacy = (message.metadata_namespace, json_format.MessageToDict(message.value))
    config = SetMetadataConfig(entries, legacy, httpStatPrefix(context) + "set_metadata.")
    config.stats.declare(context)
    return config
