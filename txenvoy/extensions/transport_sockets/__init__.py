"""
Transport sockets (Envoy's C{envoy.transport_sockets.*}), each registered
by its C{typed_config} C{@type}: what sits between a socket and its filter
chain (TLS).
"""
