"""
Access loggers (Envoy's C{envoy.access_loggers.*}): file, stdout, stderr.
"""

from txenvoy.extensions.access_loggers import file, stream  # noqa: F401
