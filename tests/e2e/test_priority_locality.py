"""
Priorities and localities of a static C{load_assignment} through a real
C{twistd -n envoy} and real Envoy 1.40 on the same YAML, with hosts that
fail their health checks or are marked unhealthy: the share of requests
each host gets.

P0 has two localities, half their hosts unavailable, so it takes
140% x 2/4 = 70% of the load and spills 30% to P1 (Envoy's priority load
with the default overprovisioning factor). With
C{locality_weighted_lb_config}, P0's localities (weights 1 and 3, each
half available: effective 0.7 and 2.1) share its 70% as 1:3; without it
the locality weights are ignored and P0's two healthy hosts share it
evenly.
"""

import os
import socket

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.configs import bootstrap, httpListener
from tests.e2e.harness import SharedFixture, freePort, startProxy
from tests.e2e.test_http import Client, Origin

#: Requests sent per proxy and cluster.
N = 300
#: Allowed distance of a share from Envoy's expected one (about 3 standard
#: deviations of the priority draw at N requests).
TOLERANCE = 0.08

_ROUTE = """\
              - match: {prefix: "/%(name)s"}
                route: {cluster: %(name)s}
"""

_CLUSTER = """\
  - name: %(name)s
    connect_timeout: 1s
    common_lb_config: {%(common)s}
    health_checks:
    - timeout: 1s
      interval: 30s
      unhealthy_threshold: 1
      healthy_threshold: 1
      http_health_check: {path: /healthz}
    load_assignment:
      cluster_name: %(name)s
      endpoints:
      - locality: {zone: a}
        load_balancing_weight: 1
        lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %(o1)d}}}
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %(o5)d}}}
          health_status: UNHEALTHY
      - locality: {zone: b}
        load_balancing_weight: 3
        lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %(o2)d}}}
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %(dead)d}}}
      - locality: {zone: c}
        load_balancing_weight: 1
        priority: 1
        lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %(o3)d}}}
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %(o4)d}}}
"""

def routingConfig(port, admin, routes, clusters):
    """
    One HTTP listener routing to C{clusters} by C{routes} (both YAML list
    items); also used by test_aggregate_cluster and test_subset_lb.
    """
    return bootstrap([httpListener("l", port, routes=routes)], [clusters], admin=admin)


CLUSTERS = {"weighted": "locality_weighted_lb_config: {}", "plain": ""}

#: Envoy's expected shares per origin (o1..o5), per cluster.
EXPECTED = {
    "weighted": [0.7 * 0.25, 0.7 * 0.75, 0.15, 0.15, 0.0],
    "plain": [0.35, 0.35, 0.15, 0.15, 0.0],
}


def config(port, admin, origins, dead):
    ports = dict(("o%d" % (i + 1,), o.port) for i, o in enumerate(origins))
    ports["dead"] = dead
    return routingConfig(
        port, admin, "".join(_ROUTE % dict(name=n) for n in CLUSTERS),
        "".join(_CLUSTER % dict(ports, name=n, common=c) for n, c in CLUSTERS.items()))


class OriginShares(SharedFixture):
    """
    Envoy 1.40 and txenvoy running C{config(port, admin, origins, dead)}
    before the same C{originCount} origins: the share of requests each
    origin gets.
    """

    originCount = 5

    @classmethod
    def startFixture(cls):
        cls.origins = [Origin() for _ in range(cls.originCount)]
        cls.proxies = []
        dead = freePort()
        try:
            for real in (True, False):
                port, admin = freePort(), freePort()
                cls.proxies.append((port, startProxy(
                    real, cls.config(port, admin, cls.origins, dead), port, admin)))
        except BaseException:
            cls.stopFixture()
            raise

    @classmethod
    def stopFixture(cls):
        for _, proxy in cls.proxies:
            proxy.stop()
        for o in cls.origins:
            o.stop()

    def shares(self, port, name):
        """Send L{N} requests for cluster C{name}; each origin's share."""
        tag = "/%s/%d" % (name, port)
        c = Client(port)
        try:
            for _ in range(N):
                r = c.request(path=tag)
                self.assertEqual(r.status, 200)
        finally:
            c.close()
        counts = []
        for o in self.origins:
            with o.lock:
                counts.append(sum(1 for _, _, target in o.requests if target == tag))
        return [n / N for n in counts]


class PriorityLocalityTests(OriginShares, SynchronousTestCase):
    """Envoy 1.40 and txenvoy: who gets each request."""

    config = staticmethod(config)

    def assertShares(self, name):
        expected = EXPECTED[name]
        for (port, proxy), who in zip(self.proxies, ("Envoy", "txenvoy")):
            got = self.shares(port, name)
            self.assertEqual(round(sum(got) * N), N)
            for i, (g, e) in enumerate(zip(got, expected)):
                self.assertLess(abs(g - e), TOLERANCE, "%s o%d: %r, expected %r" % (
                    who, i + 1, got, expected))
            # An unhealthy host (EDS status or failed check) never gets one.
            self.assertEqual(got[4], 0.0)

    def test_localityWeighted(self):
        """
        Envoy's priority spill-over (70/30) and, within P0, locality
        weights times availability (1 x 0.7 : 3 x 0.7).
        """
        self.assertShares("weighted")

    def test_withoutLocalityWeighting(self):
        """Locality weights are ignored without locality_weighted_lb_config."""
        self.assertShares("plain")
