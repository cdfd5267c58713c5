# -*- test-case-name: tests.tracing.test_custom_tags -*-
"""
C{custom_tags} (Envoy's C{Tracing::CustomTag} kinds): a literal, an
environment variable (read once, when the config loads, as Envoy does), a
request header, or a metadata value, each with its C{default_value}.
"""

import os

from txenvoy.config.errors import ConfigError, UnsupportedField
from txenvoy.config.fields import checkFields

_KINDS = ("literal", "environment", "request_header", "metadata")


class CustomTag:
    """
    One compiled custom tag.

    @ivar tag: the tag name, C{str}.
    """

    def __init__(self, tag, value=None, header=None, default=None, metadataKind=None,
                 metadataKey=None, metadataPath=()):
        self.tag = tag
        self._value = value
        self._header = header
        self._default = default
        self._metadataKind = metadataKind
        self._metadataKey = metadataKey
        self._metadataPath = metadataPath

    def apply(self, span, requestHeaders, streamInfo, route):
        """Set the tag on C{span}, if it has a value for this request."""
        if self._value is not None:
            span.setTag(self.tag, self._value)
            return
        if self._header is not None:
            raw = requestHeaders.headers.get(self._header) if requestHeaders is not None else None
            value = raw.decode("latin-1") if raw is not None else self._default
        else:
            value = self._metadataValue(streamInfo, route)
        if value:
            span.setTag(self.tag, value)

    def _metadataValue(self, streamInfo, route):
        if self._metadataKind == "route":
            metadata = route.entry.metadata if route is not None else None
            if metadata is None:
                return self._default
            if self._metadataKey not in metadata.filter_metadata:
                return self._default
            value = metadata.filter_metadata[self._metadataKey]
            for key in self._metadataPath:
                if key not in value.fields:
                    return self._default
                value = value.fields[key]
                kind = value.WhichOneof("kind")
                if kind == "struct_value":
                    value = value.struct_value
                else:
                    return _valueText(value, kind)
            return self._default
        # kind: request, the stream's dynamic metadata ({namespace: dict}).
        value = streamInfo.dynamicMetadata.get(self._metadataKey)
        for key in self._metadataPath:
            if not isinstance(value, dict) or key not in value:
                return self._default
            value = value[key]
        if value is None or isinstance(value, dict):
            return self._default
        return value if isinstance(value, str) else _pythonText(value)


def _valueText(value, kind):
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        return _pythonText(value.number_value)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    return None


def _pythonText(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return "%d" % (value,)
    return str(value)


def compileCustomTags(tags, path):
    """
    @param tags: repeated C{envoy.type.tracing.v3.CustomTag}.
    @return: a tuple of L{CustomTag}.
    """
    out = []
    for i, tag in enumerate(tags):
        tpath = "%s[%d]" % (path, i)
        checkFields(tag, frozenset(("tag",) + _KINDS), tpath)
        if not tag.tag:
            raise ConfigError("%s.tag: value length must be at least 1 characters" % (tpath,))
        kind = tag.WhichOneof("type")
        if kind == "literal":
            out.append(CustomTag(tag.tag, value=tag.literal.value))
        elif kind == "environment":
            env = tag.environment
            value = os.environ.get(env.name) or env.default_value
            if value:
                # Neither set nor defaulted: Envoy never sets the tag.
                out.append(CustomTag(tag.tag, value=value))
        elif kind == "request_header":
            out.append(CustomTag(tag.tag, header=tag.request_header.name.lower().encode("latin-1"),
                                 default=tag.request_header.default_value or None))
        elif kind == "metadata":
            md = tag.metadata
            which = md.kind.WhichOneof("kind")
            if which not in ("route", "request"):
                raise UnsupportedField("%s.metadata.kind" % (tpath,), "only route and request")
            out.append(CustomTag(
                tag.tag, metadataKind=which, metadataKey=md.metadata_key.key,
                metadataPath=tuple(p.key for p in md.metadata_key.path),
                default=md.default_value or None))
        else:
            raise ConfigError("%s: one of literal, environment, request_header or metadata is "
                              "required" % (tpath,))
    return tuple(out)
