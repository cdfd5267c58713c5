"""
Tests for L{txenvoy.config.node}: the node as Envoy fills it in. (The same
against what real Envoy sends a control plane: L{tests.e2e.test_grpc_xds}.)
"""

from envoy.config.core.v3.base_pb2 import Node
from twisted.trial.unittest import SynchronousTestCase

import txenvoy
from txenvoy.config.node import describeNode


class DescribeNodeTests(SynchronousTestCase):

    def test_filledIn(self):
        """
        The user agent, the build version with Envoy's metadata keys, and
        every registered extension by category and name; the bootstrap's
        node is left as written.
        """
        node = Node(id="n")
        node.extensions.add(name="mine", category="custom")
        described = describeNode(node)
        self.assertEqual(len(node.extensions), 1)
        self.assertEqual(described.user_agent_name, "envoy")
        version = described.user_agent_build_version.version
        self.assertEqual("%d.%d.%d" % (version.major_number, version.minor_number,
                                       version.patch), txenvoy.__version__)
        self.assertEqual(sorted(described.user_agent_build_version.metadata.keys()),
                         ["build.type", "ssl.version"])
        entries = {(e.category, e.name): list(e.type_urls) for e in described.extensions}
        self.assertEqual(entries[("custom", "mine")], [])
        self.assertEqual(entries[("envoy.filters.http", "envoy.filters.http.router")],
                         ["envoy.extensions.filters.http.router.v3.Router"])
        self.assertEqual(entries[("envoy.clusters", "envoy.cluster.static")], [])
        self.assertEqual(
            entries[("envoy.config.validators",
                     "envoy.config.validators.minimum_clusters_validator")],
            ["envoy.extensions.config.validators.minimum_clusters.v3.MinimumClustersValidator"])
