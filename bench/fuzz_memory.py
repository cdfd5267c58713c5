"""
Memory after a fuzz run: real Envoy (C{.venv/bin/envoy}) and C{twistd -n
envoy} on the same one-route config, each behind its own origin, both sent
the same mutated HTTP/1.1 requests (L{differential.makeInput}, fixed
seed), with each process's resident size (VmRSS) read before, right
after, and after a pause. Not a test.

    python bench/fuzz_memory.py [--count 20000] [--seed 1] [--workers 16]
                                [--timeout 0.5] [--settle 3]

What grows here and stays grown is memory the proxy keeps because of
what attackers send: caches keyed by request data, interned strings,
allocator arenas left fragmented.
"""

import argparse
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import differential  # noqa: E402


def makeInputs(count, seed):
    """
    C{count} inputs of L{differential.makeInput}; a draw the mutator cannot
    make (it truncates a one-byte input) is drawn again, deterministically.
    """
    rng = random.Random(seed)
    inputs = []
    for i in range(count):
        while True:
            try:
                inputs.append(differential.makeInput(rng, i))
                break
            except ValueError:
                continue
    return inputs


def rssBytes(pid):
    """A process's VmRSS, from /proc/<pid>/status."""
    with open("/proc/%d/status" % (pid,)) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise ValueError("no VmRSS for %d" % (pid,))


def send(proxies, inputs, workers, timeout):
    """Send every input to every proxy, C{workers} inputs at a time."""
    ports = [p.port for p in proxies]
    nextIndex = [0]
    lock = threading.Lock()

    def work():
        while True:
            with lock:
                i = nextIndex[0]
                if i >= len(inputs):
                    return
                nextIndex[0] += 1
            try:
                differential.firstOutcomes(ports, inputs[i][0], timeout, settle=0.05)
            except OSError:
                pass

    threads = [threading.Thread(target=work, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=0.5)
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds to wait before the last reading")
    args = parser.parse_args(argv)

    inputs = makeInputs(args.count, args.seed)
    proxies = [differential.Proxy(True), differential.Proxy(False)]
    try:
        # One valid request each, so that start-up allocations are behind us.
        send(proxies, [(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n", [])] * 20, 4, args.timeout)
        time.sleep(1.0)
        before = [rssBytes(p.proc.pid) for p in proxies]
        started = time.time()
        send(proxies, inputs, args.workers, args.timeout)
        elapsed = time.time() - started
        after = [rssBytes(p.proc.pid) for p in proxies]
        time.sleep(args.settle)
        settled = [rssBytes(p.proc.pid) for p in proxies]
        alive = [p.proc.poll() is None for p in proxies]
    finally:
        for p in proxies:
            p.stop()

    mb = 1024.0 * 1024.0
    print("%d mutated requests (seed %d) in %.1f s" % (args.count, args.seed, elapsed))
    print("%-8s %10s %10s %12s %8s" % ("proxy", "before MB", "after MB",
                                       "+%.0fs MB" % (args.settle,), "alive"))
    for p, b, a, s, ok in zip(proxies, before, after, settled, alive):
        print("%-8s %10.1f %10.1f %12.1f %8s" % (p.name, b / mb, a / mb, s / mb, ok))
    return 0


if __name__ == "__main__":
    sys.exit(main())
