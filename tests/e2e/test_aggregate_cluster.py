"""
The aggregate cluster (C{envoy.clusters.aggregate}) through a real
C{twistd -n envoy} and real Envoy 1.40 on the same YAML: failover across
clusters by priority, as the share of requests each host gets.

C{agg} lists C{primary} (o1 and a host failing its health check: 70% of
the load by the overprovisioning factor), C{secondary} (o2, o3: the 30%
spilled), a cluster that does not exist and itself (both contribute
nothing). C{agg2} lists C{tiered}, whose P0 hosts all fail and whose P1
is o4, then C{secondary}: all load goes to C{tiered}'s P1, the second
level of the aggregate.
"""

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.test_priority_locality import OriginShares, routingConfig

TOLERANCE = 0.08

_HEALTH = """\
    health_checks:
    - timeout: 1s
      interval: 30s
      unhealthy_threshold: 1
      healthy_threshold: 1
      http_health_check: {path: /healthz}
"""

_STATIC = """\
  - name: %(name)s
    connect_timeout: 1s
%(health)s    load_assignment:
      cluster_name: %(name)s
      endpoints:
%(groups)s
"""

_GROUP = """\
      - priority: %d
        lb_endpoints:
%s"""
_EP = "        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}\n"

_AGGREGATE = """\
  - name: %(name)s
    connect_timeout: 1s
    lb_policy: CLUSTER_PROVIDED
    cluster_type:
      name: envoy.clusters.aggregate
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig
        clusters: [%(clusters)s]
"""

_ROUTE = """\
              - match: {prefix: "/%(name)s/"}
                route: {cluster: %(name)s}
"""

EXPECTED = {"agg": [0.7, 0.15, 0.15, 0.0], "agg2": [0.0, 0.0, 0.0, 1.0]}


def static(name, groups, health=True):
    return _STATIC % dict(name=name, health=_HEALTH if health else "", groups="".join(
        _GROUP % (p, "".join(_EP % port for port in ports)) for p, ports in groups))


def config(port, admin, origins, dead):
    o1, o2, o3, o4 = (o.port for o in origins)
    clusters = (
        _AGGREGATE % dict(name="agg", clusters="primary, secondary, nope, agg")
        + _AGGREGATE % dict(name="agg2", clusters="tiered, secondary")
        + static("primary", [(0, [o1, dead])])
        + static("secondary", [(0, [o2, o3])], health=False)
        + static("tiered", [(0, [dead, dead + 1]), (1, [o4])]))
    routes = "".join(_ROUTE % dict(name=n) for n in ("agg", "agg2"))
    return routingConfig(port, admin, routes, clusters)


class AggregateClusterTests(OriginShares, SynchronousTestCase):
    """Envoy 1.40 and txenvoy: which cluster and host gets each request."""

    originCount = 4
    config = staticmethod(config)

    def assertShares(self, name):
        expected = EXPECTED[name]
        for (port, _), who in zip(self.proxies, ("Envoy", "txenvoy")):
            got = self.shares(port, name)
            for i, (g, e) in enumerate(zip(got, expected)):
                self.assertLess(abs(g - e), TOLERANCE, "%s o%d: %r, expected %r" % (
                    who, i + 1, got, expected))

    def test_spillOverAcrossClusters(self):
        """70% to the half-healthy first cluster, 30% to the next."""
        self.assertShares("agg")

    def test_levelsLaidEndToEnd(self):
        """A cluster's P1 comes before the next cluster's P0."""
        self.assertShares("agg2")
