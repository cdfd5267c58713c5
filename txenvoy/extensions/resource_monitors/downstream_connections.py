# -*- test-case-name: tests.server.test_overload_manager -*-
"""
C{envoy.resource_monitors.global_downstream_max_connections}: at most
C{max_active_downstream_connections} connections accepted at once, over
every listener and every worker (a listener with
C{ignore_global_conn_limit} does not count).

It is a proactive monitor: listeners take a unit from it as they accept
and give it back as the connection closes
(L{txenvoy.server.overload_manager.ProactiveResource}); a connection over
the limit is closed at once and counted in the listener's
C{downstream_global_cx_overflow} and in
C{overload.envoy.resource_monitors.global_downstream_max_connections.failed_updates}.
As in Envoy 1.40, only a monitor of that name may carry this config.
"""

from zope.interface import implementer

from txenvoy.config.registry import Category, extension
from txenvoy.server.overload_manager import IProactiveResourceMonitor


@implementer(IProactiveResourceMonitor)
class GlobalDownstreamMaxConnections:
    """@ivar maxResourceUsage: C{max_active_downstream_connections}."""

    def __init__(self, maxResourceUsage):
        self.maxResourceUsage = maxResourceUsage


@extension(Category.RESOURCE_MONITOR,
           "envoy.extensions.resource_monitors.downstream_connections.v3."
           "DownstreamConnectionsConfig",
           "envoy.resource_monitors.global_downstream_max_connections")
def createDownstreamConnections(message, context):
    # Proto constraints (a limit above 0) are checked when the config loads.
    return GlobalDownstreamMaxConnections(message.max_active_downstream_connections)
