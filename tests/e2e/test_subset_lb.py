"""
Subset load balancing through a real C{twistd -n envoy} and real Envoy
1.40 on the same YAML: for routes with each kind of C{metadata_match}
(and a weighted cluster's own), which hosts the requests reach, and the
C{lb_subsets_*} stats.

Hosts (C{envoy.lb} metadata): o1 C{version v1, stage prod, tag [a, b]},
o2 C{version v2, stage prod, tag [b]}, o3 C{version v2, stage canary},
o4 none.
"""

from collections import Counter

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import SharedFixture, adminStats, freePort, startProxy
from tests.e2e.test_http import Client, Origin
from tests.e2e.test_priority_locality import routingConfig

_ENDPOINT = """\
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}
          metadata: {filter_metadata: {envoy.lb: {%s}}}
"""
_METADATA = ["version: v1, stage: prod, tag: [a, b]", "version: v2, stage: prod, tag: [b]",
             "version: v2, stage: canary", ""]

_CLUSTER = """\
  - name: %(name)s
    connect_timeout: 1s
    lb_subset_config:
%(subsets)s
    load_assignment:
      cluster_name: %(name)s
      endpoints:
      - lb_endpoints:
%(endpoints)s
"""

CLUSTERS = {
    "s": """\
      fallback_policy: DEFAULT_SUBSET
      default_subset: {version: v1}
      list_as_any: true
      subset_selectors:
      - keys: [version]
      - keys: [version, stage]
        fallback_policy: KEYS_SUBSET
        fallback_keys_subset: [version]
      - keys: [tag]
      - keys: [stage]
        single_host_per_subset: true""",
    "p": """\
      fallback_policy: DEFAULT_SUBSET
      default_subset: {version: v9}
      panic_mode_any: true
      subset_selectors:
      - keys: [version]""",
    "f": """\
      metadata_fallback_policy: FALLBACK_LIST
      subset_selectors:
      - keys: [version]
      - keys: [stage]
        fallback_policy: ANY_ENDPOINT""",
}

#: path prefix -> (cluster, route metadata_match, expected hosts of 4 requests)
ROUTES = {
    "v1": ("s", "{version: v1}", {"o1": 4}),
    "v2": ("s", "{version: v2}", {"o2": 2, "o3": 2}),
    "v2prod": ("s", "{version: v2, stage: prod}", {"o2": 4}),
    "v2beta": ("s", "{version: v2, stage: beta}", {"o2": 2, "o3": 2}),
    "v3": ("s", "{version: v3}", {"o1": 4}),
    "none": ("s", None, {"o1": 4}),
    "taga": ("s", "{tag: a}", {"o1": 4}),
    "tagb": ("s", "{tag: b}", {"o1": 2, "o2": 2}),
    "prod": ("s", "{stage: prod}", {"o1": 4}),
    "panic": ("p", "{version: v7}", {"o1": 1, "o2": 1, "o3": 1, "o4": 1}),
    "list": ("f", "{fallback_list: [{version: v3}, {version: v2}]}", {"o2": 2, "o3": 2}),
    "nofb": ("f", "{version: v7}", {503: 4}),
    "anystage": ("f", "{stage: qa}", {"o1": 1, "o2": 1, "o3": 1, "o4": 1}),
}

_ROUTE = """\
              - match: {prefix: "/%(prefix)s/"}
                route: {cluster: %(cluster)s%(match)s}
"""
_WEIGHTED_ROUTE = """\
              - match: {prefix: "/weighted/"}
                route:
                  metadata_match: {filter_metadata: {envoy.lb: {version: v1, stage: prod}}}
                  weighted_clusters:
                    clusters:
                    - name: s
                      weight: 100
                      metadata_match: {filter_metadata: {envoy.lb: {version: v2}}}
"""



def config(port, admin, origins):
    endpoints = "".join(_ENDPOINT % (o.port, m) for o, m in zip(origins, _METADATA))
    routes = "".join(
        _ROUTE % dict(prefix=prefix, cluster=cluster,
                      match=", metadata_match: {filter_metadata: {envoy.lb: %s}}" % (match,)
                      if match else "")
        for prefix, (cluster, match, _) in ROUTES.items()) + _WEIGHTED_ROUTE
    clusters = "".join(_CLUSTER % dict(name=n, subsets=s, endpoints=endpoints)
                       for n, s in CLUSTERS.items())
    return routingConfig(port, admin, routes, clusters)


class SubsetComparisonTests(SharedFixture, SynchronousTestCase):
    """Envoy 1.40 and txenvoy: which host each request with given metadata reaches."""

    @classmethod
    def startFixture(cls):
        cls.origins = [Origin() for _ in range(4)]
        cls.proxies = []
        try:
            for real in (True, False):
                port, admin = freePort(), freePort()
                cls.proxies.append((port, admin, startProxy(
                    real, config(port, admin, cls.origins), port, admin)))
        except BaseException:
            cls.stopFixture()
            raise

    @classmethod
    def stopFixture(cls):
        for _, _, proxy in cls.proxies:
            proxy.stop()
        for o in cls.origins:
            o.stop()

    def reached(self, port, prefix, n=4):
        """Send C{n} requests under C{/prefix/}; who answered each."""
        got = Counter()
        c = Client(port)
        try:
            for i in range(n):
                target = "/%s/%d/%d" % (prefix, port, i)
                r = c.request(path=target)
                if r.status != 200:
                    got[r.status] += 1
                    continue
                for name, o in zip(("o1", "o2", "o3", "o4"), self.origins):
                    with o.lock:
                        if any(t == target for _, _, t in o.requests):
                            got[name] += 1
        finally:
            c.close()
        return dict(got)

    def test_routes(self):
        """Each route's criteria reach the same hosts in Envoy and txenvoy."""
        results = []
        for port, _, _ in self.proxies:
            results.append({prefix: self.reached(port, prefix)
                            for prefix in list(ROUTES) + ["weighted"]})
        envoy, txenvoy = results
        self.assertEqual(txenvoy, envoy)
        expected = {prefix: hosts for prefix, (_, _, hosts) in ROUTES.items()}
        expected["weighted"] = {"o2": 4}
        self.assertEqual(envoy, expected)
        stats = []
        for _, admin, _ in self.proxies:
            s = adminStats(admin)
            stats.append({k: v for k, v in s.items()
                          if k.startswith("cluster.") and ".lb_subsets_" in k})
        envoy, txenvoy = stats
        # Envoy's main thread keeps a subset load balancer of its own
        # beside the worker's: with one worker, every subset is created
        # (and active) twice. txenvoy builds subsets on workers only.
        for k, v in list(envoy.items()):
            if k.endswith((".lb_subsets_created", ".lb_subsets_active")):
                envoy[k] = v // 2
        self.assertEqual(txenvoy, envoy)
        self.assertEqual((envoy["cluster.s.lb_subsets_created"],
                          envoy["cluster.s.lb_subsets_selected"],
                          envoy["cluster.s.lb_subsets_fallback"],
                          envoy["cluster.s.lb_subsets_single_host_per_subset_duplicate"],
                          envoy["cluster.p.lb_subsets_fallback_panic"]), (9, 32, 8, 1, 4))
