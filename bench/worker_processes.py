"""
Throughput and CPU per request of txenvoy with 1 and 2 worker processes
(C{--worker-processes}), small keep-alive GETs through the router to an
nginx origin (bench/configs/http.yaml). Not a test.

    python bench/worker_processes.py [--duration 10] [--connections 64] [--processes 1,2]

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
"""

import argparse
import os
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from loadgen import parseWrk, wrkPath  # noqa: E402
from origin import freePort, startHttpOrigin  # noqa: E402

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
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
            raise RuntimeError("txenvoy exited with %s" % (proc.returncode,))
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/ready" % (adminPort,),
                                        timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("txenvoy not ready")


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


def runOne(tmp, originPort, processes, args):
    port, adminPort = freePort(), freePort()
    with open(os.path.join(HERE, "configs", "http.yaml")) as f:
        text = string.Template(f.read()).substitute(
            ADMIN_PORT=adminPort, LISTEN_PORT=port, ORIGIN_PORT=originPort)
    path = os.path.join(tmp, "http-%d.yaml" % (processes,))
    with open(path, "w") as f:
        f.write(text)
    cmd = [TWISTD, "-n", "--pidfile=", "envoy", "-c", path, "-l", "critical",
           "--concurrency", "1", "--worker-processes", str(processes)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp)
    try:
        waitReady(adminPort, proc)
        deadline = time.time() + 20
        while len(children(proc.pid)) < (processes if processes > 1 else 0):
            if time.time() > deadline:
                raise RuntimeError("worker processes did not start")
            time.sleep(0.1)
        waitServing(port)
        wrk(port, args.connections, 2, processes)  # warm-up
        time.sleep(1.0)
        pids = children(proc.pid) if processes > 1 else []
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
        "processes": processes,
        "rps": result["rps"],
        "p99_ms": (result["latency"]["p99"] * 1e3 if result["latency"].get("p99") else None),
        "requests": requests,
        "counted": rqAfter - rqBefore,
        "errors": result["errors"] + result["non2xx"],
        "cpu_us_per_rq": total / requests * 1e6 if requests else None,
        "main_share": cpu[proc.pid] / total if total and processes > 1 else 0.0,
        "cpu_s": total,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--processes", default="1,2")
    args = parser.parse_args(argv)
    if not wrkPath():
        sys.exit("wrk is needed (apt-get install wrk)")
    tmp = tempfile.mkdtemp(prefix="txenvoy-bench-wp-")
    origin = startHttpOrigin(tmp)
    if origin.kind != "nginx":
        origin.stop()
        sys.exit("nginx is needed for the origin (apt-get install nginx)")
    rows = []
    try:
        for n in (int(x) for x in args.processes.split(",")):
            rows.append(runOne(tmp, origin.port, n, args))
    finally:
        origin.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print("%-10s %10s %9s %10s %10s %7s %14s %11s" % (
        "processes", "req/s", "p99 ms", "requests", "in /stats", "errors", "CPU us/req",
        "main share"))
    for r in rows:
        print("%-10d %10.0f %9s %10d %10d %7d %14.1f %10.1f%%" % (
            r["processes"], r["rps"], "%.1f" % r["p99_ms"] if r["p99_ms"] else "-",
            r["requests"], r["counted"], r["errors"], r["cpu_us_per_rq"] or 0,
            r["main_share"] * 100))
    for r in rows:
        if r["requests"] == 0 or r["errors"]:
            print("WARNING: %d process(es): %d requests, %d errors: the figures say nothing"
                  % (r["processes"], r["requests"], r["errors"]))
    if len(rows) == 2 and rows[0]["rps"] and rows[1]["cpu_us_per_rq"]:
        one, two = rows
        print("throughput %d/%d processes: %.2fx" % (two["processes"], one["processes"],
                                                     two["rps"] / one["rps"]))
        print("CPU per request, all processes: %.1f us with %d, %.1f us with %d: %.2fx"
              " (goal: <= 1.00x)" % (one["cpu_us_per_rq"], one["processes"],
                                    two["cpu_us_per_rq"], two["processes"],
                                    two["cpu_us_per_rq"] / one["cpu_us_per_rq"]))
        print("stats merging and admin (the main process's share of the CPU with %d"
              " processes): %.1f%% (goal: < 5%%)" % (two["processes"], two["main_share"] * 100))


if __name__ == "__main__":
    main()
