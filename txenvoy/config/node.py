# -*- test-case-name: tests.extensions.stat_sinks.test_metrics_service -*-
"""
The node as this proxy names itself to the services it talks to (xDS,
the gRPC access log and metrics services, C{/server_info}): the
bootstrap's C{node} with the user agent filled in as Envoy fills it.
"""

import txenvoy


def describeNode(node):
    """
    @param node: the bootstrap's C{envoy.config.core.v3.Node}, left as is.
    @return: a copy with C{user_agent_name} C{envoy} and
        C{user_agent_build_version} txenvoy's version.
    """
    described = type(node)()
    described.CopyFrom(node)
    described.user_agent_name = "envoy"
    version = described.user_agent_build_version.version
    version.major_number, version.minor_number, version.patch = (
        int(p) for p in txenvoy.__version__.split("."))
    return described
