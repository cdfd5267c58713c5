"""
The idle-close race through a proxy: an origin that closes each keep-alive
connection a few milliseconds after its response, and requests timed to
land around that close (see C{tests/e2e/closing_origin.py}).

    .venv/bin/python bench/pool_race.py [--trials 1000] [--envoy-trials 300]
        [--method GET] [--per-connection 1] [--max-idle-ms 3] [--max-delay-ms 4]

Runs the trials through txenvoy (C{twistd -n envoy --concurrency 1}) and
through real Envoy with the same config, and prints for each: the status
codes seen, the connections closed without a response, and (txenvoy) the
tracebacks in its log. Not a test: it takes seconds to a minute.
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from tests.e2e.closing_origin import ClosingOrigin, raceConfig, runRace  # noqa: E402
from tests.e2e.harness import adminStats, freePort, startProxy  # noqa: E402


def _stats(adminPort):
    return {name.split(".", 2)[2]: value for name, value in adminStats(adminPort).items()
            if name.startswith(("cluster.origin.upstream_cx_destroy",
                                "cluster.origin.upstream_cx_total",
                                "cluster.origin.upstream_rq_total"))}


def run(real, trials, args):
    origin = ClosingOrigin(maxIdle=args.max_idle_ms / 1000.0, perConnection=args.per_connection)
    port, adminPort = freePort(), freePort()
    config = raceConfig(port, adminPort, origin.port)
    try:
        proxy = startProxy(real, config, port, adminPort)
        started = time.time()
        result = runRace(port, trials, maxDelay=args.max_delay_ms / 1000.0,
                         method=args.method.encode())
        elapsed = time.time() - started
        stats = _stats(adminPort)
        tracebacks = None
        if not real:
            out, err = proxy.output()
            tracebacks = (out + err).count("Traceback")
        proxy.stop()
    finally:
        origin.stop()
    name = "envoy  " if real else "txenvoy"
    print("%s %4d trials in %.1fs: %s%s" % (
        name, result.trials, elapsed, result.summary(),
        "" if tracebacks is None else ", %d tracebacks" % (tracebacks,)))
    print("        origin: %d connections, %d requests; %s" % (
        origin.connections, origin.requests,
        " ".join("%s=%s" % kv for kv in sorted(stats.items()))))
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--envoy-trials", type=int, default=300)
    parser.add_argument("--method", default="GET")
    parser.add_argument("--per-connection", type=int, default=1)
    parser.add_argument("--max-idle-ms", type=float, default=3.0)
    parser.add_argument("--max-delay-ms", type=float, default=4.0)
    args = parser.parse_args(argv)
    if args.trials:
        run(False, args.trials, args)
    if args.envoy_trials:
        run(True, args.envoy_trials, args)


if __name__ == "__main__":
    main()
