"""
Consistent-hash load balancing end to end: C{shared/envoy-examples/08}'s
RING_HASH and MAGLEV clusters, and real Envoy 1.40 beside txenvoy on the
same rings, tables and keys (every key must land on the same upstream),
plus the weighted ROUND_ROBIN and LEAST_REQUEST shares.
"""

import http.client
import os
import re
import socket
from collections import Counter

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.configs import bootstrap, httpListener
from tests.e2e.harness import (
    EXAMPLES,
    Envoy,
    RealEnvoy,
    SharedFixture,
    Upstream,
    adminStats,
    freePort,
)
from txenvoy.network.address import formatAddress
from txenvoy.upstream.hashing import uint64ToHex, xxHash64

EXAMPLE_08 = os.path.join(EXAMPLES, "08-health-outlier-circuit-breakers.yaml")


def taggedHandler(tag):
    """
    A keep-alive HTTP/1.1 origin answering every request with C{tag} as its
    body (requests carry no body in these tests).
    """
    body = tag.encode("ascii")
    response = (b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\ncontent-type: text/plain\r\n\r\n%s"
                % (len(body), body))

    def handler(conn):
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            _, _, buf = buf.partition(b"\r\n\r\n")
            conn.sendall(response)

    return handler


class Client:
    """One keep-alive connection; C{get} returns C{(body, headers)}."""

    def __init__(self, port):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def get(self, path, headers=None):
        self.conn.request("GET", path, headers=headers or {})
        r = self.conn.getresponse()
        return r.read().decode(), r

    def close(self):
        self.conn.close()


def waitPort(proxy, port):
    proxy.waitPort(port)


class ExampleHashTests(SynchronousTestCase):
    """
    C{shared/envoy-examples/08} unchanged: its README line says RING_HASH
    with a route C{hash_policy} (header C{x-user}) and MAGLEV (source IP).
    """

    def run08(self, real):
        origins = [Upstream(taggedHandler(str(p)), port=p) for p in (10080, 10081)]
        proxy = None
        try:
            if real:
                with open(EXAMPLE_08) as f:
                    proxy = RealEnvoy(f.read())
            else:
                proxy = Envoy(configPath=EXAMPLE_08, args=("--concurrency", "1"))
            proxy.waitPort(10015)
            client = Client(10015)
            users = ["user-%d" % i for i in range(40)]
            ring = {}
            for u in users:
                ring[u] = client.get("/hash", {"x-user": u})[0]
            again = {u: client.get("/hash/again", {"x-user": u})[0] for u in users}
            maglev = [client.get("/maglev")[0] for _ in range(10)]
            client.close()
            other = Client(10015)
            maglev += [other.get("/maglev")[0] for _ in range(10)]
            other.close()
            return ring, again, maglev
        finally:
            if proxy is not None:
                proxy.stop()
            for o in origins:
                o.stop()

    def test_hashClusters(self):
        """
        Each x-user sticks to one backend and users spread over both;
        every request of the one client (127.0.0.1) goes to one Maglev
        backend, on any connection; and real Envoy 1.40 on the same file
        makes exactly the same choices.
        """
        ring, again, maglev = self.run08(False)
        self.assertEqual(ring, again)
        self.assertEqual(set(ring.values()), {"10080", "10081"})
        self.assertEqual(len(set(maglev)), 1)
        self.assertEqual(self.run08(True), (ring, again, maglev))


HASH_CONFIG = bootstrap(
    listeners=[
        httpListener("l", "%(port)d", statPrefix="h", routes="""
            - match: {prefix: "/ring"}
              route: {cluster: ring, hash_policy: [{header: {header_name: x-key}}]}
            - match: {prefix: "/murmur"}
              route: {cluster: murmur, hash_policy: [{cookie: {name: k}}]}
            - match: {prefix: "/maglev"}
              route: {cluster: maglev, hash_policy: [{header: {header_name: x-key}}]}
            - match: {prefix: "/typedring"}
              route: {cluster: typedring, hash_policy: [{header: {header_name: x-key}}]}
            - match: {prefix: "/typed"}
              route:
                cluster: typed
                hash_policy:
                - query_parameter: {name: k}
                - header: {header_name: x-key}
                  terminal: true
                - header: {header_name: x-other}
            - match: {prefix: "/bounded"}
              route: {cluster: bounded, hash_policy: [{header: {header_name: x-key}}]}
            - match: {prefix: "/sticky"}
              route:
                cluster: ring
                hash_policy:
                - cookie:
                    name: sticky
                    ttl: 3600s
                    path: /sticky
                    attributes: [{name: SameSite, value: Lax}, {name: Secure}]
            - match: {prefix: "/rr"}
              route: {cluster: rr}
            - match: {prefix: "/lr"}
              route: {cluster: lr}
            """),
    ],
    clusters=[
        """
        - name: ring
          connect_timeout: 1s
          lb_policy: RING_HASH
          load_assignment: {cluster_name: ring, endpoints: [{lb_endpoints: %(weighted)s}]}
        """,
        """
        - name: murmur
          connect_timeout: 1s
          lb_policy: RING_HASH
          ring_hash_lb_config: {minimum_ring_size: 64, maximum_ring_size: 100, hash_function: MURMUR_HASH_2}
          load_assignment: {cluster_name: murmur, endpoints: [{lb_endpoints: %(plain)s}]}
        """,
        """
        - name: maglev
          connect_timeout: 1s
          lb_policy: MAGLEV
          load_assignment: {cluster_name: maglev, endpoints: [{lb_endpoints: %(keyed)s}]}
        """,
        """
        - name: typed
          connect_timeout: 1s
          load_balancing_policy:
            policies:
            - typed_extension_config:
                name: envoy.load_balancing_policies.maglev
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.load_balancing_policies.maglev.v3.Maglev
                  table_size: 1031
                  consistent_hashing_lb_config:
                    hash_policy: [{header: {header_name: x-lb}}]
          load_assignment: {cluster_name: typed, endpoints: [{lb_endpoints: %(weighted)s}]}
        """,
        """
        - name: typedring
          connect_timeout: 1s
          load_balancing_policy:
            policies:
            - typed_extension_config:
                name: envoy.load_balancing_policies.ring_hash
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.load_balancing_policies.ring_hash.v3.RingHash
                  hash_function: MURMUR_HASH_2
                  minimum_ring_size: 200
          load_assignment: {cluster_name: typedring, endpoints: [{lb_endpoints: %(weighted)s}]}
        """,
        """
        - name: bounded
          connect_timeout: 1s
          lb_policy: RING_HASH
          common_lb_config: {consistent_hashing_lb_config: {hash_balance_factor: 150}}
          load_assignment: {cluster_name: bounded, endpoints: [{lb_endpoints: %(plain)s}]}
        """,
        """
        - name: rr
          connect_timeout: 1s
          lb_policy: ROUND_ROBIN
          load_assignment: {cluster_name: rr, endpoints: [{lb_endpoints: %(weighted)s}]}
        """,
        """
        - name: lr
          connect_timeout: 1s
          lb_policy: LEAST_REQUEST
          load_assignment: {cluster_name: lr, endpoints: [{lb_endpoints: %(weighted)s}]}
        """,
    ])

WEIGHTS = (1, 2, 3, 1, 5)


def _endpoints(ports, weights=None, keyed=False):
    out = []
    for i, p in enumerate(ports):
        ep = "endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}" % (p,)
        if weights:
            ep += ", load_balancing_weight: %d" % (weights[i],)
        if keyed and i % 2 == 0:
            ep += ", metadata: {filter_metadata: {envoy.lb: {hash_key: key-%d}}}" % (i,)
        out.append("{" + ep + "}")
    return "[" + ", ".join(out) + "]"


class SideBySideHashTests(SharedFixture, SynchronousTestCase):
    """
    Real Envoy 1.40 and txenvoy, started once with the same clusters over
    the same five origins (weighted 1, 2, 3, 1, 5 where weighted).
    """

    @classmethod
    def startFixture(cls):
        cls.origins = [Upstream(taggedHandler("o%d" % i)) for i in range(len(WEIGHTS))]
        ports = [o.port for o in cls.origins]
        cls.tags = {"o%d" % i: i for i in range(len(ports))}
        cls.proxies = []
        cls.admins = []
        try:
            for real in (True, False):
                port, admin = freePort(), freePort()
                config = HASH_CONFIG % dict(
                    port=port, admin=admin, plain=_endpoints(ports),
                    weighted=_endpoints(ports, WEIGHTS), keyed=_endpoints(ports, keyed=True))
                proxy = RealEnvoy(config) if real else Envoy(
                    config, args=("--concurrency", "1"), adminPort=admin)
                cls.proxies.append((proxy, port))
                cls.admins.append(admin)
                proxy.waitPort(port)
        except BaseException:
            cls.stopFixture()
            raise

    @classmethod
    def stopFixture(cls):
        for proxy, _ in cls.proxies:
            proxy.stop()
        for o in cls.origins:
            o.stop()

    def both(self, requests):
        """Each C{(path, headers)} through Envoy then txenvoy: two lists of tags."""
        out = []
        for _, port in self.proxies:
            client = Client(port)
            try:
                out.append([client.get(path, headers)[0] for path, headers in requests])
            finally:
                client.close()
        return out

    def test_everyKeyLandsAlike(self):
        """
        Two hundred keys on each consistent-hash cluster (weighted ring,
        MurmurHash2 ring capped below its minimum with a cookie policy,
        Maglev with hash_key metadata, the Maglev load_balancing_policy
        extension whose own hash_policy replaces the route's query and
        header policies,
        the RingHash extension with MurmurHash2, a ring with bounded loads
        where every host is idle):
        Envoy and txenvoy choose the same upstream for every one.
        """
        keys = ["k%d-%x" % (i, i * 7919) for i in range(200)]
        requests = []
        for k in keys:
            requests.append(("/ring", {"x-key": k}))
            requests.append(("/murmur", {"cookie": "a=b; k=%s" % (k,)}))
            requests.append(("/maglev", {"x-key": k}))
            requests.append(("/typed?k=%s" % (k,), {"x-key": k[::-1], "x-other": k,
                                                    "x-lb": k[1:]}))
            requests.append(("/typedring", {"x-key": k}))
            requests.append(("/bounded", {"x-key": k}))
        envoy, txenvoy = self.both(requests)
        differ = [(requests[i], e, t) for i, (e, t) in enumerate(zip(envoy, txenvoy)) if e != t]
        self.assertEqual(differ[:5], [], "%d of %d differ" % (len(differ), len(requests)))
        for route in range(6):
            self.assertGreaterEqual(len(set(envoy[route::6])), 4)

    def test_tableGauges(self):
        """
        Envoy's C{ring_hash_lb.{size,min_hashes_per_host,max_hashes_per_host}}
        and C{maglev_lb.{min,max}_entries_per_host} gauges, alike.
        """
        stats = []
        for admin in self.admins:
            stats.append(dict((k, v) for k, v in adminStats(admin).items()
                              if "_lb." in k and k.startswith("cluster.")))
        self.assertEqual(stats[1], stats[0])
        self.assertEqual(stats[0]["cluster.murmur.ring_hash_lb.size"], 65)
        self.assertEqual(stats[0]["cluster.ring.ring_hash_lb.size"], 1032)
        self.assertIn("cluster.typed.maglev_lb.max_entries_per_host", stats[0])

    def test_generatedCookie(self):
        """
        A cookie policy with a ttl gives a client without the cookie
        Envoy's set-cookie (value: hex xxHash64 of the client's then the
        proxy's address; Max-Age, Path, the attributes, HttpOnly), and the
        request goes where that value hashes; sending it back sticks there,
        in both proxies alike.
        """
        results = []
        for _, port in self.proxies:
            sock = socket.create_connection(("127.0.0.1", port))
            local, peer = sock.getsockname(), sock.getpeername()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.sock = sock
            conn.request("GET", "/sticky")
            r = conn.getresponse()
            first = r.read().decode()
            cookie = r.getheader("set-cookie")
            expected = uint64ToHex(xxHash64(formatAddress(local) + formatAddress(peer)))
            self.assertEqual(cookie, 'sticky="%s"; Max-Age=3600; Path=/sticky; SameSite=Lax; '
                                     'Secure; HttpOnly' % (expected,))
            conn.request("GET", "/sticky", headers={"cookie": "sticky=%s" % (expected,)})
            r = conn.getresponse()
            self.assertEqual(r.read().decode(), first)
            self.assertIsNone(r.getheader("set-cookie"))
            conn.request("GET", "/sticky", headers={"cookie": "sticky=fixed"})
            r = conn.getresponse()
            results.append(r.read().decode())
            conn.close()
        self.assertEqual(results[0], results[1])

    def test_noHashSpreads(self):
        """A request the policies give no hash goes to a random host: all get some."""
        envoy, txenvoy = self.both([("/ring", {})] * 150)
        self.assertEqual(len(set(envoy)), 5)
        self.assertEqual(len(set(txenvoy)), 5)

    def test_weightedShares(self):
        """
        Weighted ROUND_ROBIN and LEAST_REQUEST (sequential requests, so
        every host is idle and weights alone decide) give each origin its
        weight's share in both proxies, within 3 points.
        """
        n = 600
        total = sum(WEIGHTS)
        for path in ("/rr", "/lr"):
            for tags in self.both([(path, {})] * n):
                counts = Counter(tags)
                for tag, i in self.tags.items():
                    share = 100.0 * counts[tag] / n
                    self.assertLess(abs(share - 100.0 * WEIGHTS[i] / total), 3,
                                    "%s %s: %r" % (path, tag, counts))


#: Bad (or surprising) hash load balancing input, as edits of example 08:
#: (name, old text, new text, the field path txenvoy names or None when
#: Envoy accepts it, a piece of Envoy's own message).
VALIDATION_CASES = [
    ("minAboveMax", "    lb_policy: RING_HASH\n",
     "    lb_policy: RING_HASH\n"
     "    ring_hash_lb_config: {minimum_ring_size: 2000, maximum_ring_size: 1000}\n",
     "static_resources.clusters[2].ring_hash_lb_config",
     "ring hash: minimum_ring_size (2000) > maximum_ring_size (1000)"),
    ("ringTooBig", "    lb_policy: RING_HASH\n",
     "    lb_policy: RING_HASH\n    ring_hash_lb_config: {minimum_ring_size: 9000000}\n",
     "static_resources.clusters[2].ring_hash_lb_config.minimum_ring_size",
     "value must be less than or equal to 8388608"),
    ("tableNotPrime", "    lb_policy: MAGLEV\n",
     "    lb_policy: MAGLEV\n    maglev_lb_config: {table_size: 65536}\n",
     "static_resources.clusters[3].maglev_lb_config.table_size",
     "The table size of maglev must be prime number"),
    ("unknownField", "    lb_policy: RING_HASH\n",
     "    lb_policy: RING_HASH\n    ring_hash_lb_config: {minimum_ring_size: 20, bogus: 1}\n",
     "static_resources.clusters[2].ring_hash_lb_config", "bogus"),
    ("emptyHashPolicy", "                  - header: { header_name: x-user }\n",
     "                  - {}\n", "hash_policy[0].policy_specifier",
     'field: "policy_specifier", reason: is required'),
    ("hashPolicyOnRoundRobin", "                route: { cluster: rr_http_hc }\n",
     "                route: { cluster: rr_http_hc, hash_policy: "
     "[ { header: { header_name: x-user } } ] }\n", None, None),
    ("otherPolicysConfig", "    lb_policy: RING_HASH\n",
     "    lb_policy: RING_HASH\n    maglev_lb_config: {table_size: 7}\n", None, None),
]


def validateInProcess(path):
    """
    What C{twistd envoy --mode validate} decides, without its process:
    C{(1, message)} or C{(0, "")}.
    """
    from twisted.internet.task import Clock

    from txenvoy.config.errors import ConfigError, collectErrors, describe
    from txenvoy.config.loader import loadBootstrap
    from txenvoy.server.server import Server

    try:
        with collectErrors():
            Server(Clock(), loadBootstrap(path), validateOnly=True)
    except ConfigError as e:
        return 1, describe(e)
    return 0, ""


class ValidationTests(SynchronousTestCase):
    """Bad input gets Envoy's answer: the same exit code, the field path."""

    def test_likeEnvoy(self):
        """
        Each case through C{envoy --mode validate} and txenvoy's: both exit
        1 (txenvoy naming the field path and Envoy's reason) or both accept:
        Envoy accepts a hash_policy on a ROUND_ROBIN route, and the other
        hash policy's settings on a cluster. The first case also goes through a
        real C{twistd} process.
        """
        import subprocess
        import tempfile
        from concurrent.futures import ThreadPoolExecutor

        from tests.e2e.harness import envoyBinary, runTwistd

        with open(EXAMPLE_08) as f:
            base = f.read()
        tmp = tempfile.mkdtemp(prefix="txenvoy-lbv-")
        paths = []
        for name, old, new, _, _ in VALIDATION_CASES:
            self.assertIn(old, base)
            path = os.path.join(tmp, name + ".yaml")
            with open(path, "w") as f:
                f.write(base.replace(old, new, 1))
            paths.append(path)
        processes = [paths[0]]
        with ThreadPoolExecutor(len(paths) + 2) as pool:
            envoys = pool.map(lambda p: subprocess.run(
                [envoyBinary(), "--mode", "validate", "-c", p], capture_output=True, text=True,
                timeout=60), paths)
            twistds = pool.map(lambda p: runTwistd(["--mode", "validate", "-c", p]), processes)
            ours = [validateInProcess(p) for p in paths]
            for p, (rc, out, err) in zip(processes, twistds):
                self.assertEqual((rc, err.strip() if rc else ""), ours[paths.index(p)][:1] + (
                    ("error initializing configuration '%s': %s" % (p, ours[paths.index(p)][1]))
                    if rc else "",))
        for (name, _, _, field, reason), (rc, err), envoy in zip(VALIDATION_CASES, ours,
                                                                  envoys):
            self.assertEqual(rc, envoy.returncode, (name, err, envoy.stdout + envoy.stderr))
            if field is None:
                self.assertEqual(rc, 0, (name, err))
            else:
                self.assertEqual(rc, 1, name)
                self.assertIn(reason, envoy.stdout + envoy.stderr, name)
                self.assertIn(field, err, name)
                self.assertIn(reason, err, name)
