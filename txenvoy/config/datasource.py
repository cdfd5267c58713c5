"""
Envoy's C{DataSource}: bytes from a file, inline text, inline bytes or an
environment variable, read once when the config loads.
"""

import os

from txenvoy.config.errors import ConfigError


def readDataSource(ds, path):
    """
    @param ds: an C{envoy.config.core.v3.DataSource}.
    @return: its bytes (C{b""} when unset).
    """
    which = ds.WhichOneof("specifier")
    if which is None:
        return b""
    if which == "filename":
        try:
            with open(ds.filename, "rb") as f:
                return f.read()
        except OSError as e:
            raise ConfigError("%s.filename: cannot read '%s': %s" % (path, ds.filename, e.strerror))
    if which == "inline_string":
        return ds.inline_string.encode("utf-8")
    if which == "inline_bytes":
        return ds.inline_bytes
    value = os.environ.get(ds.environment_variable)
    if value is None:
        raise ConfigError("%s.environment_variable: environment variable '%s' does not exist"
                          % (path, ds.environment_variable))
    return value.encode("utf-8")
