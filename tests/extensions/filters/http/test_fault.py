"""
Tests for L{txenvoy.extensions.filters.http.fault}.

Replies, flags, stat names and runtime keys were observed on Envoy 1.40
with C{11-http-filters.yaml} (header faults), C{14-fault-injection.yaml}
(faults from a disk runtime layer, switched by swapping the layer's
symlink) and a route-level C{HTTPFault}.
"""

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from txenvoy.config.errors import ConfigError, UnsupportedField
from txenvoy.extensions.filters.http.fault import FaultConfig
from txenvoy.http.filter import FilterDataStatus, FilterHeadersStatus, FilterTrailersStatus
from txenvoy.interfaces import IHttpFilterFactory
from txenvoy.stats.store import StatsStore

from tests.extensions.filters.http.fakes import (
    FAULT,
    FakeCallbacks,
    FakeServer,
    compileFilter,
    makeContext,
    request,
    roles,
    routeFor,
    routeTable,
    runtimeWith,
)

ABORT_503 = "abort: {http_status: 503, percentage: {numerator: 100, denominator: HUNDRED}}"
DELAY_3S = "delay: {fixed_delay: 3s, percentage: {numerator: 100, denominator: HUNDRED}}"
HEADER_FAULTS = """
abort:
  header_abort: {}
  percentage: {numerator: 100, denominator: HUNDRED}
delay:
  header_delay: {}
  percentage: {numerator: 100, denominator: HUNDRED}
max_active_faults: 100
"""
# 14-fault-injection.yaml: both faults configured at 0%, the runtime decides.
EXAMPLE_14 = """
abort:
  http_status: 503
  percentage: {numerator: 0, denominator: HUNDRED}
delay:
  fixed_delay: 3s
  percentage: {numerator: 0, denominator: HUNDRED}
"""

ROUTES = """
virtual_hosts:
- name: all
  domains: ["*"]
  routes:
  - match: {prefix: "/special"}
    route: {cluster: backend}
    typed_per_filter_config:
      envoy.filters.http.fault:
        "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
        abort: {http_status: 451, percentage: {numerator: 100}}
  - match: {prefix: "/other"}
    route: {cluster: other}
  - match: {prefix: "/"}
    route: {cluster: backend}
"""


def build(text, runtime=None, store=None):
    store = store if store is not None else StatsStore()
    return compileFilter(FAULT, text, makeContext(store=store, runtime=runtime,
                                                  server=FakeServer(store)))


def run(config, path="/", headers=(), route=None, endStream=True, **kw):
    callbacks = FakeCallbacks(filterConfigName="envoy.filters.http.fault", route=route, **kw)
    f = config.createFilter(callbacks)
    status = f.decodeHeaders(request("GET", path, headers), endStream)
    return f, callbacks, status


class CompileTests(SynchronousTestCase):

    def test_factory(self):
        """The C{@type} compiles into an L{IHttpFilterFactory}, not terminal."""
        config = build(ABORT_503)
        self.assertIsInstance(config, FaultConfig)
        self.assertTrue(verifyObject(IHttpFilterFactory, config))
        self.assertFalse(config.terminal)

    def test_requestDirectionOnly(self):
        """The fault filter has nothing to do on responses: it is no encoder."""
        f, _, _ = run(build(ABORT_503))
        self.assertEqual(roles(f), (True, False))

    def test_statsAtZero(self):
        """
        Envoy shows C{http.<prefix>.fault.*} at zero from the start, with
        C{active_faults} a gauge.
        """
        store = StatsStore()
        build(ABORT_503, store=store)
        snapshot = store.snapshot()
        for name in ("aborts_injected", "delays_injected", "faults_overflow",
                     "response_rl_injected"):
            self.assertEqual(snapshot.counters["http.ingress_http.fault." + name], 0)
        self.assertEqual(snapshot.gauges["http.ingress_http.fault.active_faults"], 0)

    def test_badStatus(self):
        e = self.assertRaises(ConfigError, build, "abort: {http_status: 100}")
        self.assertIn("FaultAbortValidationError.HttpStatus", str(e))

    def test_abortNeedsErrorType(self):
        e = self.assertRaises(ConfigError, build, "abort: {percentage: {numerator: 1}}")
        self.assertIn("ErrorType: value is required", str(e))

    def test_unsupported(self):
        e = self.assertRaises(UnsupportedField, build,
                              "response_rate_limit: {fixed_limit: {limit_kbps: 1}}")
        self.assertIn("typed_config.response_rate_limit", str(e))
        e = self.assertRaises(UnsupportedField, build, "abort: {grpc_status: 5}")
        self.assertIn("typed_config.abort.grpc_status", str(e))


class AbortTests(SynchronousTestCase):

    def test_fixedAbort(self):
        """
        Envoy's abort: the configured status, body C{fault filter abort},
        details C{fault_filter_abort}, flag C{FI}, and
        C{http.<prefix>.fault.aborts_injected}.
        """
        f, callbacks, status = run(build(ABORT_503))
        self.assertEqual(status, FilterHeadersStatus.StopIteration)
        [reply] = callbacks.localReplies
        self.assertEqual((reply.code, reply.body, reply.details, reply.flags),
                         (503, b"fault filter abort", "fault_filter_abort", "FI"))
        self.assertEqual(callbacks.counter("http.ingress_http.fault.aborts_injected"), 1)
        self.assertEqual(callbacks.counter("http.ingress_http.fault.delays_injected"), 0)

    def test_headerAbort(self):
        """
        With C{header_abort}, C{x-envoy-fault-abort-request: 418} aborts with
        418 (Envoy answers C{HTTP/1.1 418 Unknown}).
        """
        _, callbacks, _ = run(build(HEADER_FAULTS),
                              headers=[("x-envoy-fault-abort-request", "418")])
        self.assertEqual(callbacks.localReplies[0].code, 418)

    def test_headerAbortOutOfRange(self):
        """Envoy takes a header status only in [200, 600) and as a number."""
        config = build(HEADER_FAULTS)
        for value in ("199", "600", "abc", "", "-500"):
            _, callbacks, status = run(config, headers=[("x-envoy-fault-abort-request", value)])
            self.assertEqual(status, FilterHeadersStatus.Continue, value)
            self.assertEqual(callbacks.localReplies, [])

    def test_headerAbortFirstValueOnly(self):
        """Envoy reads only the first value of the untrusted header."""
        _, callbacks, _ = run(build(HEADER_FAULTS),
                              headers=[("x-envoy-fault-abort-request", "abc"),
                                       ("x-envoy-fault-abort-request", "503")])
        self.assertEqual(callbacks.localReplies, [])

    def test_noHeaderNoFault(self):
        _, callbacks, status = run(build(HEADER_FAULTS))
        self.assertEqual(status, FilterHeadersStatus.Continue)
        self.assertEqual(callbacks.localReplies, [])
        self.assertEqual(callbacks.timers, [])

    def test_headerPercentageLowers(self):
        """
        C{x-envoy-fault-abort-request-percentage} lowers the configured
        numerator (never raises it).
        """
        config = build(HEADER_FAULTS)
        _, callbacks, _ = run(config, headers=[("x-envoy-fault-abort-request", "503"),
                                               ("x-envoy-fault-abort-request-percentage", "0")])
        self.assertEqual(callbacks.localReplies, [])
        config = build("abort: {header_abort: {}, percentage: {numerator: 0}}")
        _, callbacks, _ = run(config, headers=[("x-envoy-fault-abort-request", "503"),
                                               ("x-envoy-fault-abort-request-percentage",
                                                "100")])
        self.assertEqual(callbacks.localReplies, [])

    def test_headersMatch(self):
        """C{headers}: only matching requests are faulted."""
        config = build(ABORT_503 + "\nheaders: [{name: x-chaos, string_match: {exact: 'on'}}]")
        _, callbacks, _ = run(config)
        self.assertEqual(callbacks.localReplies, [])
        _, callbacks, _ = run(config, headers=[("x-chaos", "on")])
        self.assertEqual(callbacks.localReplies[0].code, 503)

    def test_upstreamCluster(self):
        """C{upstream_cluster}: only requests routed to that cluster."""
        table = routeTable(ROUTES)
        config = build(ABORT_503 + "\nupstream_cluster: other")
        _, callbacks, _ = run(config, route=routeFor(table, b"/x"))
        self.assertEqual(callbacks.localReplies, [])
        _, callbacks, _ = run(config, route=None)
        self.assertEqual(callbacks.localReplies, [])
        _, callbacks, _ = run(config, "/other", route=routeFor(table, b"/other"))
        self.assertEqual(callbacks.localReplies[0].code, 503)

    def test_downstreamNodes(self):
        """C{downstream_nodes}: only requests whose
        C{x-envoy-downstream-service-node} is listed."""
        config = build(ABORT_503 + "\ndownstream_nodes: [a, b]")
        _, callbacks, _ = run(config)
        self.assertEqual(callbacks.localReplies, [])
        _, callbacks, _ = run(config, headers=[("x-envoy-downstream-service-node", "c")])
        self.assertEqual(callbacks.localReplies, [])
        _, callbacks, _ = run(config, headers=[("x-envoy-downstream-service-node", "b")])
        self.assertEqual(callbacks.localReplies[0].code, 503)


class DelayTests(SynchronousTestCase):

    def test_fixedDelay(self):
        """
        A delay holds the request on the worker's reactor (flag C{DI},
        C{delays_injected}, C{active_faults} up), then lets it go on.
        """
        f, callbacks, status = run(build(DELAY_3S), endStream=False)
        self.assertEqual(status, FilterHeadersStatus.StopIteration)
        self.assertEqual(callbacks.streamInfo.responseFlags(), "DI")
        self.assertEqual(callbacks.counter("http.ingress_http.fault.delays_injected"), 1)
        self.assertEqual(callbacks.gauge("http.ingress_http.fault.active_faults"), 1)
        self.assertEqual(f.decodeData(b"body", False), FilterDataStatus.StopIterationAndWatermark)
        self.assertEqual(f.decodeTrailers(object()), FilterTrailersStatus.StopIteration)
        callbacks.clock.advance(2.999)
        self.assertEqual(callbacks.continued, 0)
        callbacks.clock.advance(0.001)
        self.assertEqual(callbacks.continued, 1)
        self.assertEqual(callbacks.localReplies, [])
        # A delay alone no longer counts as active once it is over.
        self.assertEqual(callbacks.gauge("http.ingress_http.fault.active_faults"), 0)
        self.assertEqual(f.decodeData(b"more", True), FilterDataStatus.Continue)
        f.onDestroy()
        self.assertEqual(callbacks.gauge("http.ingress_http.fault.active_faults"), 0)

    def test_headerDelay(self):
        """C{x-envoy-fault-delay-request} gives the delay in milliseconds."""
        _, callbacks, status = run(build(HEADER_FAULTS),
                                   headers=[("x-envoy-fault-delay-request", "300")])
        self.assertEqual(status, FilterHeadersStatus.StopIteration)
        callbacks.clock.advance(0.299)
        self.assertEqual(callbacks.continued, 0)
        callbacks.clock.advance(0.001)
        self.assertEqual(callbacks.continued, 1)

    def test_zeroDelay(self):
        """A delay of 0 ms is no delay."""
        _, callbacks, status = run(build(HEADER_FAULTS),
                                   headers=[("x-envoy-fault-delay-request", "0")])
        self.assertEqual(status, FilterHeadersStatus.Continue)
        self.assertEqual(callbacks.counter("http.ingress_http.fault.delays_injected"), 0)

    def test_delayThenAbort(self):
        """Envoy decides the abort after the delay: flags C{DI,FI}."""
        _, callbacks, _ = run(build(HEADER_FAULTS),
                              headers=[("x-envoy-fault-delay-request", "100"),
                                       ("x-envoy-fault-abort-request", "503")])
        self.assertEqual(callbacks.localReplies, [])
        callbacks.clock.advance(0.1)
        [reply] = callbacks.localReplies
        self.assertEqual((reply.code, reply.flags), (503, "DI,FI"))
        self.assertEqual(callbacks.continued, 0)
        self.assertEqual(callbacks.gauge("http.ingress_http.fault.active_faults"), 1)

    def test_resetDuringDelay(self):
        """A stream that ends while delayed cancels the timer and the active fault."""
        f, callbacks, _ = run(build(DELAY_3S), endStream=False)
        f.onDestroy()
        callbacks.clock.advance(5)
        self.assertEqual(callbacks.continued, 0)
        self.assertEqual(callbacks.gauge("http.ingress_http.fault.active_faults"), 0)
        self.assertEqual(callbacks.clock.getDelayedCalls(), [])

    def test_maxActiveFaults(self):
        """
        Past C{max_active_faults} (counted over every worker) a request is
        left alone and counted in C{faults_overflow}.
        """
        config = build(DELAY_3S + "\nmax_active_faults: 1")
        first, callbacks, _ = run(config)
        _, second, status = run(config, store=callbacks.store)
        self.assertEqual(status, FilterHeadersStatus.Continue)
        self.assertEqual(callbacks.counter("http.ingress_http.fault.faults_overflow"), 1)
        self.assertEqual(callbacks.counter("http.ingress_http.fault.delays_injected"), 1)
        first.onDestroy()
        _, third, status = run(config, store=callbacks.store)
        self.assertEqual(status, FilterHeadersStatus.StopIteration)

    def test_maxActiveFaultsRuntime(self):
        """C{fault.http.max_active_faults} overrides the config."""
        runtime = runtimeWith({"fault.http.max_active_faults": 0})
        config = build(DELAY_3S + "\nmax_active_faults: 10", runtime=runtime)
        _, callbacks, status = run(config)
        self.assertEqual(status, FilterHeadersStatus.Continue)
        self.assertEqual(callbacks.counter("http.ingress_http.fault.faults_overflow"), 1)


class RuntimeTests(SynchronousTestCase):
    """
    The runtime keys of Envoy's fault filter, read per request from the
    runtime snapshot (as 14-fault-injection.yaml's disk layer sets them).
    """

    def test_example14Off(self):
        """14-fault-injection.yaml with its runtime at 0: nothing happens."""
        runtime = runtimeWith({"fault.http.abort.abort_percent": 0,
                               "fault.http.delay.fixed_delay_percent": 0,
                               "fault.http.abort.http_status": 503,
                               "fault.http.delay.fixed_duration_ms": 3000})
        _, callbacks, status = run(build(EXAMPLE_14, runtime=runtime))
        self.assertEqual(status, FilterHeadersStatus.Continue)

    def test_abortPercentFromRuntime(self):
        """
        Writing C{abort_percent: 100} into the runtime makes every request
        fail with the configured code; the change is seen by the next
        request.
        """
        runtime = runtimeWith({"fault.http.abort.abort_percent": 0})
        config = build(EXAMPLE_14, runtime=runtime)
        _, callbacks, _ = run(config)
        self.assertEqual(callbacks.localReplies, [])
        runtime.mergeValues({"fault.http.abort.abort_percent": "100"})
        _, callbacks, _ = run(config)
        self.assertEqual(callbacks.localReplies[0].code, 503)

    def test_httpStatusFromRuntime(self):
        """C{fault.http.abort.http_status} replaces the status (header ones too)."""
        runtime = runtimeWith({"fault.http.abort.abort_percent": 100,
                               "fault.http.abort.http_status": 418})
        _, callbacks, _ = run(build(EXAMPLE_14, runtime=runtime))
        self.assertEqual(callbacks.localReplies[0].code, 418)
        _, callbacks, _ = run(build(HEADER_FAULTS, runtime=runtime),
                              headers=[("x-envoy-fault-abort-request", "503")])
        self.assertEqual(callbacks.localReplies[0].code, 418)

    def test_delayFromRuntime(self):
        """C{fixed_delay_percent} and C{fixed_duration_ms} from the runtime."""
        runtime = runtimeWith({"fault.http.delay.fixed_delay_percent": 100,
                               "fault.http.delay.fixed_duration_ms": 50})
        _, callbacks, status = run(build(EXAMPLE_14, runtime=runtime))
        self.assertEqual(status, FilterHeadersStatus.StopIteration)
        callbacks.clock.advance(0.05)
        self.assertEqual(callbacks.continued, 1)

    def test_runtimeAppliesToHeaderFaults(self):
        """
        The runtime keys are the same for every fault filter: Envoy answered
        a header abort with 200 while its runtime held C{abort_percent: 0}.
        """
        runtime = runtimeWith({"fault.http.abort.abort_percent": 0})
        _, callbacks, status = run(build(HEADER_FAULTS, runtime=runtime),
                                   headers=[("x-envoy-fault-abort-request", "418")])
        self.assertEqual(status, FilterHeadersStatus.Continue)
        self.assertEqual(callbacks.localReplies, [])

    def test_fractionalPercentInRuntime(self):
        """A runtime value may be a fractional percent."""
        runtime = runtimeWith({"fault.http.abort.abort_percent":
                               {"numerator": 1, "denominator": "HUNDRED"}},
                              rng=lambda: 0)
        _, callbacks, _ = run(build(EXAMPLE_14, runtime=runtime))
        self.assertEqual(callbacks.localReplies[0].code, 503)

    def test_renamedKeys(self):
        """C{abort_percent_runtime} and friends rename the keys."""
        runtime = runtimeWith({"chaos.abort": 100, "chaos.status": 502})
        config = build(EXAMPLE_14 + "\nabort_percent_runtime: chaos.abort"
                       "\nabort_http_status_runtime: chaos.status", runtime=runtime)
        _, callbacks, _ = run(config)
        self.assertEqual(callbacks.localReplies[0].code, 502)

    def test_downstreamCluster(self):
        """
        With C{x-envoy-downstream-service-cluster: web} the keys
        C{fault.http.web.*} decide, and C{fault.web.aborts_injected} counts.
        """
        runtime = runtimeWith({"fault.http.abort.abort_percent": 100,
                               "fault.http.web.abort.abort_percent": 0,
                               "fault.http.api.abort.abort_percent": 100,
                               "fault.http.api.abort.http_status": 504})
        config = build(EXAMPLE_14, runtime=runtime)
        _, callbacks, _ = run(config, headers=[("x-envoy-downstream-service-cluster", "web")])
        self.assertEqual(callbacks.localReplies, [])
        _, callbacks, _ = run(config, headers=[("x-envoy-downstream-service-cluster", "api")])
        self.assertEqual(callbacks.localReplies[0].code, 504)
        self.assertEqual(callbacks.counter("http.ingress_http.fault.api.aborts_injected"), 1)
        self.assertEqual(callbacks.counter("http.ingress_http.fault.aborts_injected"), 1)

    def test_disableDownstreamClusterStats(self):
        runtime = runtimeWith({"fault.http.api.abort.abort_percent": 100})
        config = build(EXAMPLE_14 + "\ndisable_downstream_cluster_stats: true", runtime=runtime)
        _, callbacks, _ = run(config, headers=[("x-envoy-downstream-service-cluster", "api")])
        self.assertEqual(callbacks.localReplies[0].code, 503)
        self.assertNotIn("http.ingress_http.fault.api.aborts_injected",
                         callbacks.store.snapshot().counters)


class PerRouteTests(SynchronousTestCase):

    def test_routeConfigReplaces(self):
        """A route's C{HTTPFault} replaces the filter's settings for that route."""
        table = routeTable(ROUTES)
        config = build("{}")
        _, callbacks, _ = run(config, "/special", route=routeFor(table, b"/special"))
        self.assertEqual(callbacks.localReplies[0].code, 451)
        _, callbacks, _ = run(config, "/x", route=routeFor(table, b"/x"))
        self.assertEqual(callbacks.localReplies, [])

    def test_runtimeStillApplies(self):
        """
        Envoy reads the runtime keys for route-level faults too: with
        C{abort_percent} 0 in the runtime the route's 100% abort is off.
        """
        table = routeTable(ROUTES)
        runtime = runtimeWith({"fault.http.abort.abort_percent": 0})
        _, callbacks, _ = run(build("{}", runtime=runtime), "/special",
                              route=routeFor(table, b"/special"))
        self.assertEqual(callbacks.localReplies, [])

    def test_compiledOnce(self):
        """A route's config is compiled once and shared by every request."""
        table = routeTable(ROUTES)
        config = build("{}")
        route = routeFor(table, b"/special")
        run(config, "/special", route=route)
        any_ = route.mostSpecificPerFilterConfig("envoy.filters.http.fault")
        first = config.routeConfigs.compiled(any_)
        run(config, "/special", route=routeFor(table, b"/special"))
        self.assertIs(config.routeConfigs.compiled(any_), first)
