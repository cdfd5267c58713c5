"""
Resource monitors (Envoy's C{envoy.resource_monitors.*}) for the overload
manager (L{txenvoy.server.overload_manager}): C{fixed_heap} and
C{global_downstream_max_connections}.
"""
