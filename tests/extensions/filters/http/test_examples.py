"""
The conformance configs that use these HTTP filters build as
C{--mode validate} builds them (every object, no port bound); Envoy 1.40
validated and served all of them.
"""

import os

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.config.loader import loadBootstrap
from txenvoy.extensions.filters.http.buffer import BufferConfig
from txenvoy.extensions.filters.http.cors import CorsConfig
from txenvoy.extensions.filters.http.fault import FaultConfig
from txenvoy.extensions.filters.http.header_to_metadata import HeaderToMetadataConfig
from txenvoy.extensions.filters.http.health_check import HealthCheckConfig
from txenvoy.extensions.filters.http.local_ratelimit import LocalRateLimitConfig
from txenvoy.extensions.filters.http.rbac import RbacConfig
from txenvoy.router.router import RouterConfig
from txenvoy.server.server import Server

from tests.extensions.filters.http.fakes import EXAMPLES


def build(name):
    """Build an example from its directory (14's runtime path is relative)."""
    path = os.path.join(EXAMPLES, name)
    if not os.path.exists(path):
        raise AssertionError("missing example %s (expected the shared envoy-examples next to "
                             "the repository)" % (path,))
    here = os.getcwd()
    os.chdir(EXAMPLES)
    try:
        return Server(Clock(), loadBootstrap(name), validateOnly=True)
    finally:
        os.chdir(here)


def httpFilters(server, listener=0):
    """The HTTP filter factories of a listener's connection manager, in order."""
    chain = server.listenerManager.listeners[listener].filterChainManager.chains[0]
    [hcm] = chain.filterFactories
    return [(name, type(factory)) for name, factory in hcm.filterFactories]


class ExampleTests(SynchronousTestCase):

    def test_httpFilters(self):
        """11-http-filters.yaml: the whole chain, in config order."""
        self.assertEqual(httpFilters(build("11-http-filters.yaml")), [
            ("envoy.filters.http.health_check", HealthCheckConfig),
            ("envoy.filters.http.cors", CorsConfig),
            ("envoy.filters.http.fault", FaultConfig),
            ("envoy.filters.http.local_ratelimit", LocalRateLimitConfig),
            ("envoy.filters.http.buffer", BufferConfig),
            ("envoy.filters.http.header_to_metadata", HeaderToMetadataConfig),
            ("envoy.filters.http.router", RouterConfig)])

    def test_faultInjection(self):
        """14-fault-injection.yaml, its fault driven by the disk runtime layer."""
        server = build("14-fault-injection.yaml")
        self.assertEqual(httpFilters(server)[0], ("envoy.filters.http.fault", FaultConfig))
        snapshot = server.runtime.snapshot()
        self.assertEqual(snapshot.getInteger("fault.http.delay.fixed_duration_ms", 0), 3000)
        self.assertEqual(snapshot.getInteger("fault.http.abort.http_status", 0), 503)

    def test_localRateLimit(self):
        server = build("04-local-ratelimit.yaml")
        for listener in (0, 1):
            self.assertEqual(httpFilters(server, listener)[0],
                             ("envoy.filters.http.local_ratelimit", LocalRateLimitConfig))

    def test_rbacHttp(self):
        server = build("15-rbac-http.yaml")
        self.assertEqual(httpFilters(server)[0], ("envoy.filters.http.rbac", RbacConfig))
