# -*- test-case-name: tests.config.test_typed_struct -*-
"""
C{xds.type.v3.TypedStruct} (and the older C{udpa.type.v1.TypedStruct}):
an extension's config written as a JSON C{value} with the C{type_url} of
its message beside it, as Envoy's C{with-type-url} documentation examples
wrap the C{http_connection_manager}.

Envoy converts such a struct into the message its C{type_url} names
(C{Config::Utility::translateOpaqueConfig}) and from then on treats it as
if it had been written directly. txenvoy does the same wherever it looks
inside a C{typed_config}: the loader's walk, the PGV validation, the
cross-checks and the registry. Errors keep the struct's own shape in their
path: a mistake in the HCM's C{stat_prefix} is at
C{...typed_config.value.stat_prefix}.

A C{type_url} that names no protobuf type is a config for an extension
with no schema of its own (a filter written in Python): its factory gets
the C{value} as a plain dict (L{txenvoy.config.registry}).
"""

from google.protobuf import json_format

from txenvoy.config import protos
from txenvoy.config.errors import ConfigError

#: The full names of Envoy's two TypedStruct messages.
TYPED_STRUCTS = ("xds.type.v3.TypedStruct", "udpa.type.v1.TypedStruct")


def isTypedStruct(typeName):
    """Whether the full message name C{typeName} is a TypedStruct."""
    return typeName in TYPED_STRUCTS


def innerTypeName(typeUrl):
    """The message name a TypedStruct's C{type_url} names."""
    return typeUrl.rsplit("/", 1)[-1].strip()


def messageClassFor(typeUrl):
    """
    The protobuf class a TypedStruct's C{type_url} names, or C{None} when
    it names no installed protobuf type (an extension with no schema).
    A TypedStruct naming another TypedStruct names no message to build.
    """
    name = innerTypeName(typeUrl)
    if not name or isTypedStruct(name):
        return None
    try:
        return protos.messageClass(name)
    except KeyError:
        return None


def toMessage(struct, path):
    """
    The message a TypedStruct stands for, as Envoy's
    C{translateOpaqueConfig} makes it.

    @param struct: a TypedStruct message whose C{type_url} names a known
        protobuf type (L{messageClassFor} is not C{None}).
    @param path: the field path of the struct (the C{typed_config}).
    @raise ConfigError: the C{value} is not that message's JSON, naming
        C{<path>.value}.
    """
    cls = messageClassFor(struct.type_url)
    message = cls()
    try:
        json_format.ParseDict(
            json_format.MessageToDict(struct.value), message, ignore_unknown_fields=False)
    except json_format.ParseError as e:
        raise ConfigError(
            "Unable to parse JSON as proto (INVALID_ARGUMENT: invalid JSON in %s: %s) @ %s.value"
            % (message.DESCRIPTOR.full_name, " ".join(str(e).split()), path))
    return message


def unwrap(message, path):
    """
    C{(message, path)} with a TypedStruct naming a known type replaced by
    that message at C{<path>.value}; anything else is returned as is.
    """
    if isTypedStruct(message.DESCRIPTOR.full_name) and messageClassFor(message.type_url):
        return toMessage(message, path), path + ".value"
    return message, path
