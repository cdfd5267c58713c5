"""
CPU-seconds per GiB of the proxy process on bench (c)'s path: 1 MiB
responses from the nginx origin through the HTTP connection manager and
the router (C{bench/configs/http.yaml}), read by L{loadgen.discardLoad}.
The proxy is pinned to the first core, the origin and the loader to the
second; the proxy's utime + stime (C{/proc/<pid>/stat}) over the body bytes
delivered is steadier than throughput on a shared machine. Trees are run in
interleaved rounds (A B, B A, ...), each round in a fresh process, and the
medians printed. Not a test.

    .venv/bin/python bench/body_cpu.py [--rounds N] [--seconds S] TREE|envoy ...
    .venv/bin/python bench/body_cpu.py /tmp/main-tree .      # another build against this one
"""

import argparse
import os
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from bench import loadgen, workloads  # noqa: E402
from bench.origin import startHttpOrigin  # noqa: E402


def variant(name):
    """Real Envoy for C{envoy}, else txenvoy from the tree at path C{name}."""
    if name == "envoy":
        return workloads.Variant("envoy", "envoy")
    tree = os.path.abspath(name)
    return workloads.Variant("txenvoy", tree, env={"PYTHONPATH": tree})


def once(v, originPort, runDir, proxyCpu, seconds, connections):
    proxy = workloads.Proxy(v, "http.yaml", originPort, runDir, proxyCpu)
    try:
        proxy.waitReady()
        loadgen.discardLoad("127.0.0.1", proxy.listenPort, "/1m", connections, 1)
        before = proxy.cpuSeconds()
        r = loadgen.discardLoad("127.0.0.1", proxy.listenPort, "/1m", connections, seconds)
        used = proxy.cpuSeconds() - before
    finally:
        proxy.stop()
    if r["errors"] or r["non2xx"] or not r["requests"]:
        raise RuntimeError("%s: %d errors, %d non-2xx, %d responses"
                           % (v.label, r["errors"], r["non2xx"], r["requests"]))
    gib = r["bodyBytes"] / float(1 << 30)
    return used / gib, gib / r["duration"] * 1024


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("trees", nargs="+", help="source trees of txenvoy, or 'envoy'")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--connections", type=int, default=8)
    args = p.parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        sys.exit("needs two cores")
    proxyCpu, loadCpu = str(cpus[0]), str(cpus[1])
    os.sched_setaffinity(0, {cpus[1]})
    runDir = tempfile.mkdtemp(prefix="body-cpu-")
    origin = startHttpOrigin(runDir, cpus=loadCpu)
    variants = [variant(t) for t in args.trees]
    results = {v.label: [] for v in variants}
    try:
        for rnd in range(args.rounds):
            k = rnd % len(variants)
            for v in variants[k:] + variants[:k]:
                perGib, mibps = once(v, origin.port, runDir, proxyCpu, args.seconds,
                                     args.connections)
                results[v.label].append(perGib)
                print("round %d  %-40s %.3f CPU-s/GiB  %.0f MiB/s  (load %.1f)"
                      % (rnd + 1, v.label, perGib, mibps, os.getloadavg()[0]), flush=True)
    finally:
        origin.stop()
    base = statistics.median(results[variants[0].label])
    for v in variants:
        m = statistics.median(results[v.label])
        print("median %-40s %.3f CPU-s/GiB  (%.2fx the first)  runs %s"
              % (v.label, m, m / base, " ".join("%.3f" % x for x in results[v.label])))


if __name__ == "__main__":
    main()
