"""
What tracing costs the data path when the collector is dead: small
keep-alive GETs through txenvoy and through real Envoy (both
C{--concurrency 1}), with tracing off and with tracing at 100% sampling to
a collector cluster whose port refuses connections. Not a test.

    python bench/tracing_overhead.py [--duration 10] [--connections 50] [--rounds 3]
                                     [--provider zipkin|opentelemetry|datadog]

Prints each proxy's req/s with tracing off and on and the on/off ratio,
and the tracing stats after the traced run (spans sent and lost), which
show the reports failing while the requests go on. Uses C{wrk} when it is
installed, else http_small's generator.
"""

import argparse
import json
import os
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import http_small  # noqa: E402

ZIPKIN = """
          tracing:
            random_sampling: {value: 100}
            provider:
              name: envoy.tracers.zipkin
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig
                collector_cluster: collector
                collector_endpoint: /api/v2/spans
                collector_endpoint_version: HTTP_JSON
"""

OTEL = """
          tracing:
            random_sampling: {value: 100}
            provider:
              name: envoy.tracers.opentelemetry
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                service_name: bench
                http_service: {http_uri: {uri: "http://collector/v1/traces", cluster: collector, timeout: 1s}}
"""

DATADOG = """
          tracing:
            random_sampling: {value: 100}
            provider:
              name: envoy.tracers.datadog
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.DatadogConfig
                collector_cluster: collector
                service_name: bench
"""

PROVIDERS = {"zipkin": ZIPKIN, "opentelemetry": OTEL, "datadog": DATADOG}

COLLECTOR = """
  - name: collector
    connect_timeout: 1s
    type: STATIC
    load_assignment:
      cluster_name: collector
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %(dead)d}}}
"""


def proxyConfig(traced, provider, port, origin, dead, admin):
    text = http_small.PROXY % {"port": port, "origin": origin}
    if traced:
        text = text.replace("          stat_prefix: proxy\n",
                            "          stat_prefix: proxy\n" + (
                                PROVIDERS[provider]))
        text += COLLECTOR % {"dead": dead}
    return text + "admin:\n  address: {socket_address: {address: 127.0.0.1, port_value: %d}}\n" % (
        admin,)


def tracingStats(admin):
    with urllib.request.urlopen("http://127.0.0.1:%d/stats?format=json" % (admin,),
                                timeout=10) as r:
        stats = json.loads(r.read())["stats"]
    return {s["name"]: s["value"] for s in stats
            if "name" in s and s["name"].startswith(("tracing.", "http.proxy.tracing."))
            and s["value"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--provider", choices=sorted(PROVIDERS), default="zipkin")
    options = parser.parse_args()
    originPort = http_small.freePort()
    origin = http_small.startEnvoy(http_small.ORIGIN % {"port": originPort})
    dead = http_small.freePort()  # nothing listens there
    results = {}
    stats = {}
    try:
        http_small.waitPort(originPort, origin)
        for _ in range(options.rounds):
            for name, start in (("txenvoy", http_small.startTxenvoy),
                                ("envoy", http_small.startEnvoy)):
                for traced in (False, True):
                    port, admin = http_small.freePort(), http_small.freePort()
                    proc = start(proxyConfig(traced, options.provider, port, originPort, dead,
                                             admin))
                    try:
                        http_small.waitPort(port, proc)
                        http_small.load(port, 2, options.connections)
                        rps = http_small.load(port, options.duration, options.connections)
                        key = (name, traced)
                        results[key] = max(results.get(key, 0.0), rps)
                        if traced:
                            stats[name] = tracingStats(admin)
                    finally:
                        http_small.stop(proc)
    finally:
        http_small.stop(origin)
    print("small keep-alive GETs, %ds, %d connections, best of %d rounds; tracing: %s at "
          "100%% to a dead collector" % (options.duration, options.connections, options.rounds,
                                          options.provider))
    print("            off req/s    on req/s    on/off")
    for name in ("txenvoy", "envoy"):
        off, on = results[(name, False)], results[(name, True)]
        print("%-8s %12.0f %11.0f %9.3f" % (name, off, on, on / off))
    for name in ("txenvoy", "envoy"):
        print("%s stats after the traced run: %s" % (name, json.dumps(stats.get(name, {}),
                                                                    sort_keys=True)))


if __name__ == "__main__":
    main()
