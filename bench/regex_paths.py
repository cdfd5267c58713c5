"""
A regex route that would stall a backtracking engine, through real Envoy
and txenvoy with the same config: the latency of a path that makes
C{/(a+)+b} explore every split of 30 C{a}s, beside a plain prefix path.
Not a test.

    python bench/regex_paths.py [--requests 200] [--as N]

Both proxies answer with C{direct_response}, so the figures are the
proxies' own. Requests go one at a time on one keep-alive connection;
the median and the worst latency are printed for each path and proxy.
"""

import argparse
import socket
import statistics
import time

from http_small import freePort, startEnvoy, startTxenvoy, stop, waitPort

CONFIG = """
static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: %(port)d}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: rx
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
          route_config:
            virtual_hosts:
            - name: v
              domains: ["*"]
              routes:
              - match: {prefix: "/plain"}
                direct_response: {status: 200, body: {inline_string: ok}}
              - match: {safe_regex: {regex: "/(a+)+b"}}
                direct_response: {status: 200, body: {inline_string: ok}}
              - match: {prefix: "/"}
                direct_response: {status: 404, body: {inline_string: nomatch}}
"""


def latencies(port, path, n):
    """Seconds for each of C{n} GETs of C{path} on one connection."""
    out = []
    request = b"GET " + path + b" HTTP/1.1\r\nhost: bench\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
        for _ in range(n):
            started = time.perf_counter()
            s.sendall(request)
            data = b""
            while not data.endswith((b"ok", b"nomatch")):
                chunk = s.recv(4096)
                if not chunk:
                    raise SystemExit("connection closed")
                data += chunk
            out.append(time.perf_counter() - started)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--as", dest="count", type=int, default=30,
                        help="how many a's in the regex path")
    args = parser.parse_args()
    paths = [b"/plain", b"/" + b"a" * args.count]
    print("%-8s %-10s %12s %12s" % ("proxy", "path", "median ms", "max ms"))
    for name, start in (("envoy", startEnvoy), ("txenvoy", startTxenvoy)):
        port = freePort()
        proc = start(CONFIG % {"port": port})
        try:
            waitPort(port, proc)
            latencies(port, b"/plain", 20)  # warm up
            for path in paths:
                seconds = latencies(port, path, args.requests)
                label = path.decode() if len(path) < 10 else "/a*%d" % (args.count,)
                print("%-8s %-10s %12.3f %12.3f" % (name, label, statistics.median(seconds) * 1e3,
                                                    max(seconds) * 1e3))
        finally:
            stop(proc)


if __name__ == "__main__":
    main()
