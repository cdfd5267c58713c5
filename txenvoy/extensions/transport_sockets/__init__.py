"""
Transport sockets (Envoy's C{envoy.transport_sockets.*}), each registered
by its C{typed_config} C{@type}: what sits between a socket and its filter
chain (TLS).
"""

from txenvoy.extensions.transport_sockets import tls  # noqa: F401
from txenvoy.extensions.transport_sockets import upstream_tls  # noqa: F401
