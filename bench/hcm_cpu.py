"""
CPU cost of the HTTP proxy path alone: N keep-alive GETs through the
connection manager, the router and a pooled upstream connection, all in
memory (C{txenvoy.testing.HttpProxyHarness}: fake transports, no sockets,
no load generator). Prints requests per CPU-second of this process, which
is steadier than a socket benchmark on a shared machine; run it a few
times, alternating the trees compared. Not a test.

    .venv/bin/python bench/hcm_cpu.py [N]
    PYTHONPATH=/tmp/other-tree .venv/bin/python bench/hcm_cpu.py 20000   # another build
"""

import gc
import sys
import time

REQUEST = b"GET /o/x HTTP/1.1\r\nhost: a\r\nuser-agent: bench\r\naccept: */*\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


def harness():
    try:
        from txenvoy.testing.proxy import HttpProxyHarness
    except ImportError:
        # Builds older than txenvoy.testing.proxy.
        from tests.http.hcm_harness import Harness

        class _Case:
            def addCleanup(self, f, *args, **kwargs):
                pass

        return Harness(_Case())
    # No access log, as in bench/configs/http.yaml (the harness's own
    # keeps every request's entry, which grows the heap).
    return HttpProxyHarness(accessLog=False)


def main(n):
    h = harness()
    down = h.connect()
    down.send(REQUEST)
    up = h.upstream()
    up.respond(RESPONSE)
    downstream, upstream = down.transport, up.transport
    if b"200 OK" not in downstream.value():
        raise SystemExit("no response: %r" % (downstream.value(),))
    # As the server does once live (txenvoy.server.gc_freeze).
    gc.collect()
    gc.freeze()
    start = time.process_time()
    for _ in range(n):
        downstream.clear()
        upstream.clear()
        down.send(REQUEST)
        up.respond(RESPONSE)
    used = time.process_time() - start
    if b"200 OK" not in downstream.value():
        raise SystemExit("no response: %r" % (downstream.value(),))
    print("%.0f requests per CPU-second" % (n / used,))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20000)
