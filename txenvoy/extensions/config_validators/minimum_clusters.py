# -*- test-case-name: tests.extensions.config_validators.test_minimum_clusters -*-
"""
C{envoy.config.validators.minimum_clusters_validator}: a CDS update that
would leave fewer clusters than C{min_clusters_num} is refused whole
(NACKed), with Envoy's words, and the clusters in use stay. Only the
clusters CDS gives count, not the static ones.
"""

import attr
from zope.interface import implementer

from txenvoy.config.registry import Category, extension
from txenvoy.interfaces import IConfigValidator
from txenvoy.xds.resources import CLUSTER_TYPE

MINIMUM_CLUSTERS_TYPE = ("envoy.extensions.config.validators.minimum_clusters.v3."
                         "MinimumClustersValidator")


@implementer(IConfigValidator)
@attr.s(frozen=True)
class MinimumClustersValidator:
    """@ivar minimum: C{min_clusters_num}."""

    minimum = attr.ib()
    typeUrl = CLUSTER_TYPE

    def validate(self, names):
        if len(set(names)) < self.minimum:
            raise ValueError("CDS update attempts to reduce clusters below configured "
                             "minimum.")


@extension(Category.CONFIG_VALIDATOR, MINIMUM_CLUSTERS_TYPE,
           "envoy.config.validators.minimum_clusters_validator", fields=("min_clusters_num",))
def createMinimumClusters(message, context):
    return MinimumClustersValidator(message.min_clusters_num)
