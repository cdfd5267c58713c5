"""
Route lookups per second on the route table of
09-routes-retries-timeouts.yaml (three virtual hosts: exact, wildcard and
"*" domains; prefix, safe_regex, header and query parameter matchers;
weighted clusters, redirects and direct responses).

    .venv/bin/python bench/route_bench.py [--requests 200000] [--runs 3]

Only L{RouteTable.route} is timed: the requests (Host, path, header map,
method) are built beforehand, as the HTTP/1 codec would hand them over.
"""

import argparse
import os
import random
import sys
import time

import yaml
from google.protobuf import json_format

# The connection manager's typed_config also carries an access log and the
# router filter; their message types must be known to parse it.
from envoy.extensions.access_loggers.file.v3 import file_pb2  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2,
)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from txenvoy.http.headers import HeaderMap  # noqa: E402
from txenvoy.router.config import RouteTable  # noqa: E402

CONFIG = "/work/shared/envoy-examples/09-routes-retries-timeouts.yaml"

# (Host, path, extra headers): one request per route of the config, plus
# misses, weighted towards the API traffic a front proxy mostly sees.
REQUESTS = [
    (b"api.example.com", b"/v1/users/17", [(b"x-canary", b"true")]),
    (b"api.example.com", b"/v1/users/17?expand=1", []),
    (b"api.example.com:8443", b"/v1/orders", []),
    (b"api.example.com", b"/v2/users/42", []),
    (b"api.example.com", b"/v2/users/42?fields=name", []),
    (b"api.example.com", b"/search?q=envoy&debug=1", []),
    (b"api.example.com", b"/search?q=envoy", []),  # no route: 404 NR
    (b"www.example.com", b"/old", []),
    (b"www.example.com", b"/secure/login", []),
    (b"www.example.com", b"/index.html", []),
    (b"shop.example.org", b"/cart", []),
    (b"localhost:10016", b"/healthz", []),
    (b"localhost:10016", b"/static/app.js", []),
]

COMMON = [(b"user-agent", b"curl/8.5.0"), (b"accept", b"*/*")]


def loadTable():
    with open(CONFIG) as f:
        doc = yaml.safe_load(f)
    typed = dict(doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
                 ["typed_config"])
    typed.pop("@type")
    hcm = json_format.ParseDict(typed, http_connection_manager_pb2.HttpConnectionManager())
    clusters = {c["name"] for c in doc["static_resources"]["clusters"]}
    return RouteTable.fromProto(hcm.route_config, "route_config", clusters,
                                rng=random.Random(1).random)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--requests", type=int, default=200000)
    parser.add_argument("--runs", type=int, default=3)
    options = parser.parse_args()

    started = time.perf_counter()
    table = loadTable()
    compileMs = (time.perf_counter() - started) * 1000

    requests = [(authority, path, HeaderMap(COMMON + extra), b"GET")
                for authority, path, extra in REQUESTS]
    work = [requests[i % len(requests)] for i in range(options.requests)]
    misses = [(a, p) for a, p, h, m in requests if table.route(a, p, h, m) is None]
    if misses != [(b"api.example.com", b"/search?q=envoy")]:
        raise SystemExit("unexpected routing: misses %r" % (misses,))

    route = table.route
    best = 0.0
    for run in range(options.runs):
        started = time.perf_counter()
        cpuStarted = time.process_time()
        for authority, path, headers, method in work:
            route(authority, path, headers, method)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpuStarted
        rate = len(work) / elapsed
        best = max(best, rate)
        # CPU time too: on a shared machine the wall clock also counts
        # other processes' turns.
        print("run %d: %d routes in %.3fs (%.3fs CPU): %.0f routes/s, %.0f per CPU second "
              "(%.2f us/route)" % (run + 1, len(work), elapsed, cpu, rate, len(work) / cpu,
                                   1e6 / rate))
    print("compile: %.1f ms; best: %.0f routes/s over %d request shapes"
          % (compileMs, best, len(requests)))


if __name__ == "__main__":
    main()
