# -*- test-case-name: tests.config.test_node,tests.extensions.stat_sinks.test_metrics_service -*-
"""
The node as this proxy names itself to the services it talks to (xDS,
the gRPC access log and metrics services, C{/server_info}): the
bootstrap's C{node} with what Envoy fills in: C{user_agent_name},
C{user_agent_build_version} (the version, and metadata saying the build
type and the TLS library) and C{extensions}, every extension registered
(plugins included) by category, name and config type, so a control plane
can tell what this proxy can run.
"""

import txenvoy


def _buildMetadata(metadata):
    """Envoy's C{build.type} and C{ssl.version} keys, for this build."""
    from OpenSSL import SSL

    metadata["build.type"] = "RELEASE"
    metadata["ssl.version"] = SSL.SSLeay_version(SSL.SSLEAY_VERSION).decode("ascii", "replace")


def describeNode(node):
    """
    @param node: the bootstrap's C{envoy.config.core.v3.Node}, left as is.
    @return: a copy with C{user_agent_name} C{envoy},
        C{user_agent_build_version} txenvoy's version and build, and the
        C{extensions} registered added to those the bootstrap lists.
    """
    from txenvoy.config.registry import nodeExtensions

    described = type(node)()
    described.CopyFrom(node)
    described.user_agent_name = "envoy"
    build = described.user_agent_build_version
    build.version.major_number, build.version.minor_number, build.version.patch = (
        int(p) for p in txenvoy.__version__.split("."))
    _buildMetadata(build.metadata)
    for category, name, typeUrls in nodeExtensions():
        described.extensions.add(name=name, category=category, type_urls=typeUrls)
    return described
