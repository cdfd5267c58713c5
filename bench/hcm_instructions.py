"""
Machine instructions per request on the HTTP proxy path of
C{bench/hcm_cpu.py} (in memory, no access log, the long-lived heap frozen),
counted by valgrind: the same on a busy machine as on a quiet one, so a
change of 1% shows where CPU time on a shared machine cannot tell 5%.
The count is the difference between a run of C{small} requests and one of
C{large}, divided by their difference: start-up does not count. Upstream
timers are the epoll reactor's own (C{callLater}, C{seconds}), as in the
server. Not a test; needs valgrind.

    .venv/bin/python bench/hcm_instructions.py [small large]
    PYTHONPATH=/tmp/other-tree .venv/bin/python bench/hcm_instructions.py   # another build
"""

import gc
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from hcm_cpu import REQUEST, RESPONSE, harness  # noqa: E402


def serve(n):
    """Run C{n} requests through the proxy path (in the process valgrind watches)."""
    from twisted.internet import epollreactor

    h = harness()
    reactor = epollreactor.EPollReactor()
    h.reactor.callLater = reactor.callLater
    h.reactor.seconds = reactor.seconds
    down = h.connect()
    down.send(REQUEST)
    up = h.upstream()
    up.respond(RESPONSE)
    downstream, upstream = down.transport, up.transport
    gc.collect()
    gc.freeze()
    for i in range(n):
        downstream.clear()
        upstream.clear()
        down.send(REQUEST)
        up.respond(RESPONSE)
        if not i & 15:
            reactor.runUntilCurrent()
    if b"200 OK" not in downstream.value():
        raise SystemExit("no response: %r" % (downstream.value(),))


def count(n):
    """Instructions valgrind counts for a whole run of C{n} requests."""
    env = dict(os.environ, PYTHONHASHSEED="0")
    out = subprocess.run(
        ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
         sys.executable, os.path.abspath(__file__), "--serve", str(n)],
        capture_output=True, text=True, env=env, check=True).stderr
    m = re.search(r"I\s+refs:\s+([\d,]+)", out)
    if m is None:
        raise SystemExit("no count from valgrind:\n" + out[-2000:])
    return int(m.group(1).replace(",", ""))


def main(argv):
    if argv[:1] == ["--serve"]:
        serve(int(argv[1]))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install -y valgrind)")
    small, large = (int(argv[0]), int(argv[1])) if len(argv) == 2 else (300, 2300)
    print("%.0f instructions per request" % ((count(large) - count(small)) / (large - small),))


if __name__ == "__main__":
    main(sys.argv[1:])
