"""
xDS over gRPC ADS, txenvoy against Envoy 1.40 in the same run: the time
from a C{DiscoveryResponse} leaving the control plane to its ACK, the
proxy's memory after applying it, and the longest stall it causes to the
traffic a worker serves meanwhile. Not a test.

    python bench/xds_ack.py [--clusters 1000] [--endpoints 10000] [--rounds 3]
                            [--txenvoy-args "--concurrency 1"]

Each proxy (one worker) is driven by its own test control plane
(L{tests.xds.control_plane}). For each round, four responses are pushed:
C{--clusters} STATIC clusters (all new, then all changed), one cluster
holding C{--endpoints} endpoints in its C{load_assignment} (CDS), and a
C{ClusterLoadAssignment} of C{--endpoints} endpoints, all new, for an EDS
cluster that every CDS snapshot keeps (EDS over the same ADS stream; its
ACK is the EDS request answering that response). Meanwhile a
client sends keep-alive GETs to a listener of the worker, one at a time;
the stall is the longest request time from the push to 0.3 s after the
ACK, and apart the longest in the C{--window} seconds after that (2.5 s:
past the server's garbage freeze, which reclaims the configuration an
update replaced), beside the longest one before the push (the baseline). Memory is the
process's RSS after each kind of update (all rounds' largest) and after the last one. Medians
over the rounds.
"""

import argparse
import os
import socket
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from envoy.config.cluster.v3.cluster_pb2 import Cluster  # noqa: E402
from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment  # noqa: E402

from tests.e2e.harness import Envoy, RealEnvoy, freePort  # noqa: E402
from tests.e2e.test_grpc_xds import _BOOTSTRAP, _listener  # noqa: E402
from tests.xds.control_plane import CLUSTER, LISTENER, ControlPlane  # noqa: E402


def clusters(count, timeoutMs, endpoints=1, prefix="c"):
    out = []
    for i in range(count):
        c = Cluster(name="%s%05d" % (prefix, i), type=Cluster.STATIC)
        c.connect_timeout.FromMilliseconds(timeoutMs)
        c.load_assignment.cluster_name = c.name
        lb = c.load_assignment.endpoints.add()
        for j in range(endpoints):
            a = lb.lb_endpoints.add().endpoint.address.socket_address
            a.address = "127.0.%d.%d" % ((j // 250) % 250 + 1, j % 250 + 1)
            a.port_value = 10000 + i % 50000
        out.append(c)
    return out


ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
EDS_CLUSTER = "eds"


def edsCluster():
    """The EDS cluster every CDS snapshot carries, unchanged."""
    c = Cluster(name=EDS_CLUSTER, type=Cluster.EDS)
    c.connect_timeout.FromMilliseconds(1000)
    c.eds_cluster_config.eds_config.ads.SetInParent()
    c.eds_cluster_config.eds_config.resource_api_version = 2  # V3
    return c


def assignment(count, port):
    """A C{ClusterLoadAssignment} of C{count} endpoints, all on C{port}."""
    a = ClusterLoadAssignment(cluster_name=EDS_CLUSTER)
    lb = a.endpoints.add()
    for j in range(count):
        address = lb.lb_endpoints.add().endpoint.address.socket_address
        address.address = "127.1.%d.%d" % ((j // 250) % 250 + 1, j % 250 + 1)
        address.port_value = port
    return a


class Prober:
    """Keep-alive GETs, one at a time, each one's duration kept with its start."""

    def __init__(self, port):
        self.port = port
        self.samples = []
        self.running = True
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        request = b"GET / HTTP/1.1\r\nhost: a\r\n\r\n"
        sock = socket.create_connection(("127.0.0.1", self.port))
        while self.running:
            start = time.monotonic()
            sock.sendall(request)
            data = b""
            while not data.endswith(b"one"):
                chunk = sock.recv(65536)
                if not chunk:
                    sock = socket.create_connection(("127.0.0.1", self.port))
                    break
                data += chunk
            self.samples.append((start, time.monotonic() - start))
            time.sleep(0.001)
        sock.close()

    def worst(self, since, until):
        durations = [d for s, d in self.samples if since <= s <= until]
        return max(durations) if durations else float("nan")

    def stop(self):
        self.running = False
        self.thread.join(5)


def rss(pid):
    """The RSS of a process and its children (worker processes), MiB."""
    total = 0
    with open("/proc/%d/status" % (pid,)) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    for task in os.listdir("/proc/%d/task" % (pid,)):
        try:
            with open("/proc/%d/task/%s/children" % (pid, task)) as f:
                children = [int(c) for c in f.read().split()]
        except OSError:
            continue
        for child in children:
            total += rss(child) * 1024
    return total // 1024


def push(cp, version, messages, timeout=120.0, typeUrl=CLUSTER):
    """Push a snapshot of a type; return the seconds to its ACK."""
    before = set(cp.sentAt)
    cp.setResources(typeUrl, version, messages)
    [nonce] = set(cp.sentAt) - before
    cp.waitFor(lambda cp: nonce in cp.answeredAt, timeout=timeout)
    ack = [r for r in cp.requestsOf(typeUrl) if r.response_nonce == nonce][0]
    assert not ack.error_detail.code, ack.error_detail.message
    return cp.answeredAt[nonce] - cp.sentAt[nonce]


def run(real, args):
    cp = ControlPlane()
    admin, static, port = freePort(), freePort(), freePort()
    config = _BOOTSTRAP % {"admin": admin, "static": static, "xds": cp.port, "api": "GRPC",
                           "timeout": "5s", "tls": "", "validators": ""}
    cp.setResources(CLUSTER, "0", clusters(1, 1000, prefix="seed") + [edsCluster()])
    cp.setResources(ENDPOINT, "0", [assignment(1, 9)])
    cp.setResources(LISTENER, "l1", [_listener("l1", port, "one")])
    proxy = RealEnvoy(config) if real else Envoy(config, args=tuple(args.txenvoy_args.split()),
                                                 adminPort=admin)
    kinds = ("add", "modify", "endpoints", "eds")
    results = {"baseline": []}
    for kind in kinds:
        for prefix in ("", "stall_", "later_", "rss_"):
            results[prefix + kind] = []
    try:
        proxy.waitPort(port)
        prober = Prober(port)
        # Past the collection the server runs once it is live.
        time.sleep(3.0)
        version = 0
        for r in range(args.rounds):
            for key, typeUrl, messages in (
                    ("add", CLUSTER, clusters(args.clusters, 1000, prefix="r%d-" % r)),
                    ("modify", CLUSTER, clusters(args.clusters, 2000, prefix="r%d-" % r)),
                    ("endpoints", CLUSTER, clusters(1, 1000, endpoints=args.endpoints,
                                                    prefix="e%d-" % r)),
                    ("eds", ENDPOINT, [assignment(args.endpoints, 10000 + r)])):
                if typeUrl == CLUSTER:
                    messages.append(edsCluster())
                quiet = time.monotonic()
                time.sleep(0.3)
                start = time.monotonic()
                results["baseline"].append(prober.worst(quiet, start))
                version += 1
                results[key].append(push(cp, str(version), messages, typeUrl=typeUrl))
                time.sleep(0.3)
                applied = time.monotonic()
                results["stall_" + key].append(prober.worst(start, applied))
                # Long enough to see a collection the update brings on (the
                # server's garbage freeze, 2 s after an update).
                time.sleep(args.window)
                results["later_" + key].append(prober.worst(applied, time.monotonic()))
                results["rss_" + key].append(rss(proxy.proc.pid))
        prober.stop()
        memory = rss(proxy.proc.pid)
    finally:
        proxy.stop()
        cp.stop()
    out = {k: (max(v) if k.startswith("rss_") else statistics.median(v))
           for k, v in results.items()}
    out["rss_mb"] = memory
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=float, default=2.5,
                        help="seconds after each ACK in which requests count for the stall")
    parser.add_argument("--txenvoy-args", default="--concurrency 1",
                        help="txenvoy's command line options, e.g. "
                             "\"--concurrency 1 --worker-processes 2\"")
    args = parser.parse_args()
    envoy = run(True, args)
    tx = run(False, args)
    print("txenvoy %s; %d rounds, medians (RSS: largest)" % (args.txenvoy_args, args.rounds))
    print("%-36s %10s %10s %7s" % ("", "envoy", "txenvoy", "ratio"))
    rows = [("ACK, %d new clusters (ms)" % args.clusters, "add"),
            ("ACK, %d changed clusters (ms)" % args.clusters, "modify"),
            ("ACK, 1 cluster x %d endpoints (ms)" % args.endpoints, "endpoints"),
            ("ACK, EDS %d endpoints (ms)" % args.endpoints, "eds"),
            ("worst request, idle (ms)", "baseline"),
            ("worst request, adding (ms)", "stall_add"),
            ("worst request, changing (ms)", "stall_modify"),
            ("worst request, endpoints (ms)", "stall_endpoints"),
            ("worst request, EDS (ms)", "stall_eds"),
            ("worst request, 2.5 s after adding", "later_add"),
            ("worst request, 2.5 s after changing", "later_modify"),
            ("worst request, 2.5 s after endpoints", "later_endpoints"),
            ("worst request, 2.5 s after EDS", "later_eds")]
    for label, key in rows:
        e, t = envoy[key] * 1000, tx[key] * 1000
        print("%-36s %10.1f %10.1f %7.2f" % (label, e, t, t / e if e else float("nan")))
    for label, key in (("RSS after adding (MiB)", "rss_add"),
                       ("RSS after changing (MiB)", "rss_modify"),
                       ("RSS after endpoints (MiB)", "rss_endpoints"),
                       ("RSS after EDS (MiB)", "rss_eds"),
                       ("RSS at the end (MiB)", "rss_mb")):
        print("%-36s %10d %10d %7.2f" % (label, envoy[key], tx[key],
                                         tx[key] / max(envoy[key], 1)))


if __name__ == "__main__":
    main()
