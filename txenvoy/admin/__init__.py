"""
Envoy's admin interface (C{admin.address} in the bootstrap): C{/stats},
C{/stats/prometheus}, C{/clusters}, C{/config_dump}, C{/ready}, C{/logging}
and the rest of Envoy 1.40's paths, on the main reactor.
"""

from txenvoy.admin.admin import AdminServer, checkAdminConfig

__all__ = ["AdminServer", "checkAdminConfig"]
