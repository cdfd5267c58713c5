# -*- test-case-name: tests.extensions.filters.http.test_compressor -*-
"""
Compression libraries (Envoy's C{envoy.compression.*} extensions), used by
the C{compressor} and C{decompressor} HTTP filters.
"""

from txenvoy.config.errors import ConfigError

__all__ = ["wrappedInRange"]


def wrappedInRange(message, name, default, low, high, path):
    """
    The value of the optional wrapped integer field C{name}, C{default}
    when unset; outside C{[low, high]} it fails as Envoy's proto
    validation does.

    @raise ConfigError: naming C{path.name}.
    """
    if not message.HasField(name):
        return default
    value = getattr(message, name).value
    if not low <= value <= high:
        raise ConfigError("%s.%s: Proto constraint validation failed (%sValidationError.%s: "
                          "value must be inside range [%d, %d])" % (
                              path, name, message.DESCRIPTOR.name,
                              "".join(p.title() for p in name.split("_")), low, high))
    return value
