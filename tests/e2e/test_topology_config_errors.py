"""
Bad ORIGINAL_DST, aggregate and subset cluster configs get Envoy's answer:
each runs through C{envoy --mode validate} (Envoy 1.40) and
C{twistd -n envoy --mode validate}; both exit 1, and txenvoy says what
Envoy says, after the field path. The configs Envoy accepts (an
aggregate cluster naming itself or a missing cluster: it skips them when
it picks hosts) txenvoy accepts too.
"""

import os
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import envoyBinary, runTwistdAll

_HEAD = """\
static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 10999}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: t
          cluster: %s
  clusters:
"""
_CLUSTER = """\
  - name: %s
    connect_timeout: 1s
"""
_ENDPOINTS = """\
    load_assignment:
      cluster_name: c
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 1}}}
"""
_AGGREGATE = """\
    lb_policy: %s
    cluster_type:
      name: envoy.clusters.aggregate
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig
        clusters: %s
"""
_SUBSET = """\
    lb_subset_config:
      subset_selectors:
      - keys: [a, b]
        fallback_policy: %s
"""

P = "static_resources.clusters[%d]"

#: name -> (cluster body, field path, Envoy's message), or (body, None, None) when valid.
CASES = {
    "originalDstEndpoints": (
        "    type: ORIGINAL_DST\n    lb_policy: CLUSTER_PROVIDED\n" + _ENDPOINTS,
        P + ".load_assignment", "ORIGINAL_DST clusters must have no load assignment configured"),
    "originalDstRoundRobin": (
        "    type: ORIGINAL_DST\n    lb_policy: ROUND_ROBIN\n", P + ".lb_policy",
        "cluster: LB policy ROUND_ROBIN is not valid for Cluster type ORIGINAL_DST. Only "
        "'CLUSTER_PROVIDED' is allowed with cluster type 'ORIGINAL_DST'"),
    "originalDstHeaderName": (
        "    type: ORIGINAL_DST\n    lb_policy: CLUSTER_PROVIDED\n"
        "    original_dst_lb_config: {http_header_name: x-dst}\n",
        P + ".original_dst_lb_config.http_header_name",
        "ORIGINAL_DST cluster: invalid config http_header_name=x-dst and use_http_header is "
        "false. Set use_http_header to true if http_header_name is desired."),
    "clusterProvidedOnStatic": (
        "    lb_policy: CLUSTER_PROVIDED\n" + _ENDPOINTS, P + ".lb_policy",
        "cluster manager: cluster provided LB specified but cluster '%s' did not provide one. "
        "Check cluster documentation."),
    "aggregateRoundRobin": (
        _AGGREGATE % ("ROUND_ROBIN", "[d]"), P + ".lb_policy",
        "cluster manager: cluster provided LB not specified but cluster '%s' provided one. "
        "Check cluster documentation."),
    "aggregateEmpty": (
        _AGGREGATE % ("CLUSTER_PROVIDED", "[]"), P + ".cluster_type.typed_config.clusters",
        "ClusterConfigValidationError.Clusters: value must contain at least 1 item(s)"),
    "aggregateSelfAndMissing": (
        _AGGREGATE % ("CLUSTER_PROVIDED", "[aggregateSelfAndMissing, nope]"), None, None),
    "keysSubsetEmpty": (
        _SUBSET % "KEYS_SUBSET" + _ENDPOINTS,
        P + ".lb_subset_config.subset_selectors[0].fallback_keys_subset",
        "fallback_keys_subset cannot be empty"),
    "keysSubsetEqual": (
        _SUBSET % "KEYS_SUBSET" + "        fallback_keys_subset: [b, a]\n" + _ENDPOINTS,
        P + ".lb_subset_config.subset_selectors[0].fallback_keys_subset",
        "fallback_keys_subset cannot be equal to keys"),
    "unknownSelectorFallback": (
        _SUBSET % "SOMETIMES" + _ENDPOINTS,
        P + ".lb_subset_config.subset_selectors[0].fallback_policy",
        "SOMETIMES"),
}


def _envoyValidate(path):
    p = subprocess.run([envoyBinary(), "--mode", "validate", "-c", path, "-l", "critical"],
                       capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout + p.stderr


class TopologyConfigErrorTests(SynchronousTestCase):

    def test_envoysAnswers(self):
        """
        Envoy, one config per case (it stops at the first error); txenvoy,
        every case as one cluster of a single config (it reports every
        error of a run).
        """
        tmp = tempfile.mkdtemp(prefix="txenvoy-topology-errors-")
        names = list(CASES)
        paths = []
        for name in names:
            paths.append(os.path.join(tmp, name + ".yaml"))
            with open(paths[-1], "w") as f:
                f.write(_HEAD % (name,) + _CLUSTER % (name,) + CASES[name][0])
        # A bad enum or an empty aggregate list stops the load before
        # clusters are compiled: each gets a run of its own.
        apart = ("unknownSelectorFallback", "aggregateEmpty")
        combined = [n for n in names if n not in apart]
        together = os.path.join(tmp, "all.yaml")
        with open(together, "w") as f:
            f.write(_HEAD % (names[0],) + "".join(
                _CLUSTER % (name,) + CASES[name][0] for name in combined))
        with ThreadPoolExecutor(4) as pool:
            envoy = list(pool.map(_envoyValidate, paths))
        runs = runTwistdAll([["--mode", "validate", "-c", together]] + [
            ["--mode", "validate", "-c", paths[names.index(n)]] for n in apart])
        self.assertEqual([r[0] for r in runs], [1] * len(runs), runs)
        txErr = runs[0][2]
        for name, (rc, out) in zip(names, envoy):
            i = combined.index(name) if name in combined else 0
            err = txErr if name in combined else runs[1 + apart.index(name)][2]
            _, path, message = CASES[name]
            if path is None:
                self.assertEqual(rc, 0, (name, out))
                self.assertNotIn(P % (i,), err)
                continue
            if "%s" in message:
                message = message % (name,)
            self.assertEqual(rc, 1, (name, out))
            self.assertIn(message, out, name)
            line = [l for l in err.splitlines() if (path % (i,)) in l]
            self.assertEqual(len(line), 1, (name, err))
            self.assertIn(message, line[0], name)
