"""
Tests for L{txenvoy.extensions.config_validators.minimum_clusters}: the
validator itself, its config with field paths, and on a delta stream,
where Envoy counts the clusters the update would leave. (On a state of the
world stream against real Envoy: L{tests.e2e.test_grpc_xds}.)
"""

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.xds.test_delta_subscription import _delta, _fakeMux
from tests.xds.test_grpc_mux import FakeCall, ControlPlaneConfigTests
from txenvoy.config.errors import ConfigError
from txenvoy.extensions.config_validators.minimum_clusters import (
    MINIMUM_CLUSTERS_TYPE, MinimumClustersValidator)
from txenvoy.interfaces import IConfigValidator
from txenvoy.xds.resources import CLUSTER_TYPE
from txenvoy.xds.subscription import Subscription

_MESSAGE = "CDS update attempts to reduce clusters below configured minimum."


def _source(validator, api="GRPC"):
    source = {"api_type": api, "transport_api_version": "V3",
              "config_validators": [{"name": "v", "typed_config": validator}]}
    if api == "REST":
        source.update(cluster_names=["xds"], refresh_delay="1s")
    else:
        source["grpc_services"] = [{"envoy_grpc": {"cluster_name": "xds"}}]
    return {"cds_config": {"api_config_source": source}}


class MinimumClustersTests(SynchronousTestCase):

    def test_validator(self):
        """Distinct names count; fewer than the minimum is refused with Envoy's words."""
        validator = MinimumClustersValidator(2)
        verifyObject(IConfigValidator, validator)
        self.assertEqual(validator.typeUrl, CLUSTER_TYPE)
        validator.validate(["a", "b"])
        error = self.assertRaises(ValueError, validator.validate, ["a", "a"])
        self.assertEqual(str(error), _MESSAGE)

    def test_config(self):
        """Built from config_validators; an unknown field or validator names its path."""
        build = ControlPlaneConfigTests("build").build
        server = build(_source({"@type": "type.googleapis.com/" + MINIMUM_CLUSTERS_TYPE,
                                "min_clusters_num": 3}))
        self.assertIsNotNone(server.xds.cds)
        error = self.assertRaises(ConfigError, build, _source({
            "@type": "type.googleapis.com/envoy.extensions.config.validators.dynamic_modules"
                     ".v3.DynamicModuleConfigValidator"}))
        self.assertIn("dynamic_resources.cds_config.api_config_source.config_validators[0]"
                      ".typed_config", error.message)
        error = self.assertRaises(ConfigError, build, _source(
            {"@type": "type.googleapis.com/" + MINIMUM_CLUSTERS_TYPE, "min_clusters_num": 1},
            api="REST"))
        self.assertIn("api_config_source.config_validators: unsupported field", error.message)

    def test_delta(self):
        """
        On a delta stream the clusters held after the update count: a
        removal that leaves too few is NACKed and changes nothing.
        """
        _fakeMux(self)
        self.mux._validators = (MinimumClustersValidator(2),)
        updates = []
        Subscription(self.clock, self.shard.scope("cds."), CLUSTER_TYPE,
                     lambda resources, version: updates.append(version)).start(self.mux)
        call = FakeCall.calls[0]
        call.onMessage(_delta("1", [("a", "1"), ("b", "1")], system="s1"))
        call.onMessage(_delta("2", [("c", "1")], removed=["a", "b"], system="s2"))
        call.onMessage(_delta("3", [("c", "1")], removed=["a"], system="s3"))
        self.assertEqual(updates, ["s1", "s3"])
        self.assertEqual([(r.error_detail.code, r.error_detail.message) for r in call.sent[1:]],
                         [(0, ""), (13, _MESSAGE), (0, "")])
