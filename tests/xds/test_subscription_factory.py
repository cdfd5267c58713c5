"""
Tests for L{txenvoy.xds.subscription_factory}: which subscription a
C{ConfigSource} gets, and what is refused with its path.
"""

import os
import tempfile

from google.protobuf import json_format
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from envoy.config.core.v3.config_source_pb2 import ConfigSource
from txenvoy.config.errors import ConfigError
from txenvoy.stats.store import StatsStore
from txenvoy.xds.path_subscription import FileSubscription
from txenvoy.xds.resources import ROUTE_TYPE
from txenvoy.xds.subscription_factory import RemoteSubscription, SubscriptionFactory


def _source(data):
    return json_format.ParseDict(data, ConfigSource())


class _ControlPlanes:
    """Checks every source; records the subscriptions asked for."""

    def __init__(self):
        self.asked = []

    def check(self, source, path):
        return None

    def subscription(self, *args):
        self.asked.append(args)
        raise AssertionError("not started in these tests")


class FactoryTests(SynchronousTestCase):

    def setUp(self):
        self.scope = StatsStore().shard("main_thread").scope("x.")

    def subscribe(self, source, controlPlanes=None, validateOnly=False):
        factory = SubscriptionFactory(Clock(), controlPlanes, validateOnly=validateOnly)
        return factory.subscribe(_source(source), "p", self.scope, ROUTE_TYPE,
                                 lambda resources, version: None, "r")

    def test_file(self):
        path = os.path.join(tempfile.mkdtemp(), "rds.yaml")
        open(path, "w").close()
        self.assertIsInstance(self.subscribe({"path": path}), FileSubscription)
        self.assertIsNone(self.subscribe({"path": path}, validateOnly=True))

    def test_controlPlaneMadeWhenStarted(self):
        """A control-plane subscription asks its transport only when it starts."""
        planes = _ControlPlanes()
        subscription = self.subscribe({"ads": {}}, planes)
        self.assertIsInstance(subscription, RemoteSubscription)
        self.assertFalse(subscription.refresh())
        self.assertEqual(planes.asked, [])

    def test_controlPlaneNeedsDynamicResources(self):
        e = self.assertRaises(ConfigError, self.subscribe, {"ads": {}})
        self.assertIn("p: a control plane needs", e.message)

    def test_missingFile(self):
        e = self.assertRaises(ConfigError, self.subscribe, {"path": "/nonexistent/r.yaml"})
        self.assertIn("'/nonexistent/r.yaml' does not exist", e.message)
