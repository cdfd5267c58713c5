"""
Retry host selection through a real C{twistd -n envoy} and real Envoy
1.40 on the same YAML: with C{previous_hosts} (or C{omit_canary_hosts},
the dead host being the canary) and C{host_selection_retry_max_attempts},
a connect-failure retry never goes back to the dead host of a random
load balancer, so every request succeeds.
"""

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import SharedFixture, adminStats, freePort, startProxy
from tests.e2e.test_http import Client, Origin
from tests.e2e.test_priority_locality import routingConfig

N = 40

_ROUTE = """\
              - match: {prefix: "/%(name)s/"}
                route:
                  cluster: %(name)s
                  retry_policy:
                    retry_on: connect-failure
                    num_retries: 1
                    host_selection_retry_max_attempts: 40
                    retry_host_predicate:
                    - name: envoy.retry_host_predicates.%(predicate)s
                      typed_config:
                        "@type": type.googleapis.com/envoy.extensions.retry.host.%(predicate)s.v3.%(type)s
"""

_CLUSTER = """\
  - name: %(name)s
    connect_timeout: 1s
    lb_policy: RANDOM
    load_assignment:
      cluster_name: %(name)s
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %(dead)d}}}
          metadata: {filter_metadata: {envoy.lb: {canary: true}}}
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %(live)d}}}
"""

PREDICATES = {"previous": ("previous_hosts", "PreviousHostsPredicate"),
              "canary": ("omit_canary_hosts", "OmitCanaryHostsPredicate")}

_PRIORITY_ROUTE = """\
              - match: {prefix: "/priority/"}
                route:
                  cluster: priority
                  retry_policy:
                    retry_on: connect-failure
                    num_retries: 1
                    retry_priority:
                      name: envoy.retry_priorities.previous_priorities
                      typed_config:
                        "@type": type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig
                        update_frequency: 1
"""

_PRIORITY_CLUSTER = """\
  - name: priority
    connect_timeout: 1s
    load_assignment:
      cluster_name: priority
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %(dead)d}}}
      - priority: 1
        lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %(live)d}}}
"""


def config(port, admin, origin, dead):
    routes = "".join(_ROUTE % dict(name=n, predicate=p, type=t)
                     for n, (p, t) in PREDICATES.items()) + _PRIORITY_ROUTE
    clusters = "".join(_CLUSTER % dict(name=n, dead=dead, live=origin.port)
                       for n in PREDICATES) + _PRIORITY_CLUSTER % dict(dead=dead,
                                                                       live=origin.port)
    return routingConfig(port, admin, routes, clusters)


class RetryHostSelectionTests(SharedFixture, SynchronousTestCase):

    @classmethod
    def startFixture(cls):
        cls.origin = Origin()
        cls.proxies = []
        dead = freePort()
        try:
            for real in (True, False):
                port, admin = freePort(), freePort()
                cls.proxies.append((port, admin, startProxy(
                    real, config(port, admin, cls.origin, dead), port, admin)))
        except BaseException:
            cls.stopFixture()
            raise

    @classmethod
    def stopFixture(cls):
        for _, _, proxy in cls.proxies:
            proxy.stop()
        cls.origin.stop()

    def assertAllSucceed(self, name):
        for port, admin, proxy in self.proxies:
            c = Client(port)
            try:
                responses = [c.request(path="/%s/x" % (name,)) for _ in range(N)]
            finally:
                c.close()
            failures = [(i, r.status, r.body) for i, r in enumerate(responses)
                        if r.status != 200]
            self.assertEqual(failures, [], "%s: %r" % (type(proxy).__name__, failures))
            stats = adminStats(admin)
            # Some first attempts hit the dead host; each was retried once.
            failed = stats["cluster.%s.upstream_cx_connect_fail" % (name,)]
            self.assertGreater(failed, 0)
            self.assertEqual(stats["cluster.%s.upstream_rq_retry" % (name,)], failed)

    def test_previousHosts(self):
        """previous_hosts: a retry avoids the host already attempted."""
        self.assertAllSucceed("previous")

    def test_omitCanaryHosts(self):
        """omit_canary_hosts: a retry avoids hosts with canary metadata."""
        self.assertAllSucceed("canary")

    def test_previousPriorities(self):
        """
        previous_priorities: P0 (one dead host, never marked unhealthy)
        takes every first attempt; the retry's load goes to P1.
        """
        self.assertAllSucceed("priority")
        for _, admin, _ in self.proxies:
            self.assertEqual(adminStats(admin)["cluster.priority.upstream_rq_retry"], N)
