# -*- test-case-name: tests.extensions.filters.http.test_router -*-
"""
C{envoy.filters.http.router}: the terminal HTTP filter, compiled into a
L{txenvoy.router.router.RouterConfig}.
"""

from txenvoy.config.registry import Category, extension
from txenvoy.http.filter_config import snapshotSource
from txenvoy.router.router import RouterConfig

#: Router fields txenvoy honours, or that change nothing without tracing
#: (C{start_child_span}) or gRPC (C{suppress_grpc_request_failure_code_stats});
#: C{dynamic_stats} only adds stats.
SUPPORTED_FIELDS = frozenset(["dynamic_stats", "start_child_span", "suppress_envoy_headers",
                              "respect_expected_rq_timeout",
                              "suppress_grpc_request_failure_code_stats"])


@extension(Category.HTTP_FILTER, "envoy.extensions.filters.http.router.v3.Router",
           "envoy.filters.http.router", fields=SUPPORTED_FIELDS)
def createRouter(message, context):
    """Compile a C{Router} message."""
    return RouterConfig(getattr(context, "httpStatPrefix", "http.unknown."),
                        suppressEnvoyHeaders=message.suppress_envoy_headers,
                        respectExpectedRqTimeout=message.respect_expected_rq_timeout,
                        snapshot=snapshotSource(context))
