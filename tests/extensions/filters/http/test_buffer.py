"""
Tests for L{txenvoy.extensions.filters.http.buffer}, and for the helpers
it shares with the other HTTP filters of its package.

Replies and headers were observed on Envoy 1.40 with C{max_request_bytes:
10} and routes carrying C{BufferPerRoute} (C{disabled}, and a limit of
20).
"""

from google.protobuf import any_pb2
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from envoy.extensions.filters.http.buffer.v3 import buffer_pb2
from txenvoy.config.errors import ConfigError
from txenvoy.extensions.filters.http.buffer import BufferConfig
from txenvoy.http.filter_config import RouteSpecificConfigs, WorkerStats, snapshotSource
from txenvoy.http.filter import FilterDataStatus, FilterHeadersStatus, FilterTrailersStatus
from txenvoy.interfaces import IHttpFilterFactory, IStreamDecoderFilter
from txenvoy.stats.store import StatsStore

from tests.extensions.filters.http.fakes import (
    BUFFER,
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
from tests.http.hcm_harness import ROUTER, Harness

ROUTES = """
virtual_hosts:
- name: all
  domains: ["*"]
  routes:
  - match: {prefix: "/nobuf"}
    route: {cluster: backend}
    typed_per_filter_config:
      envoy.filters.http.buffer:
        "@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute
        disabled: true
  - match: {prefix: "/bigbuf"}
    route: {cluster: backend}
    typed_per_filter_config:
      envoy.filters.http.buffer:
        "@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute
        buffer: {max_request_bytes: 20}
  - match: {prefix: "/"}
    route: {cluster: backend}
"""


def build(limit=10):
    return compileFilter(BUFFER, "max_request_bytes: %d" % (limit,))


def start(config, path="/", headers=(("content-length", "11"),), route=None, **kw):
    callbacks = FakeCallbacks(filterConfigName="envoy.filters.http.buffer", route=route, **kw)
    f = config.createFilter(callbacks)
    head = request("POST", path, headers)
    return f, callbacks, head


class BufferTests(SynchronousTestCase):

    def test_factory(self):
        config = build()
        self.assertIsInstance(config, BufferConfig)
        self.assertTrue(verifyObject(IHttpFilterFactory, config))
        f, _, _ = start(config)
        self.assertTrue(verifyObject(IStreamDecoderFilter, f))
        self.assertEqual(roles(f), (True, False))

    def test_maxRequestBytesRequired(self):
        e = self.assertRaises(ConfigError, compileFilter, BUFFER, "{}")
        self.assertIn("BufferValidationError.MaxRequestBytes: value is required", str(e))

    def test_headersOnly(self):
        """Envoy leaves a request without a body alone."""
        f, callbacks, head = start(build(), headers=())
        self.assertEqual(f.decodeHeaders(head, True), FilterHeadersStatus.Continue)

    def test_buffersWholeBody(self):
        """Headers and body wait until the body is complete."""
        f, callbacks, head = start(build(), headers=[("content-length", "10")])
        self.assertEqual(f.decodeHeaders(head, False), FilterHeadersStatus.StopIteration)
        self.assertEqual(f.decodeData(b"01234", False), FilterDataStatus.StopIterationAndBuffer)
        self.assertEqual(f.decodeData(b"56789", True), FilterDataStatus.Continue)
        self.assertEqual(head.headers.getAll(b"content-length"), [b"10"])
        self.assertEqual(callbacks.localReplies, [])

    def test_contentLengthAdded(self):
        """
        Envoy gives a body that came without a length (chunked) a
        C{content-length}, after the headers already there.
        """
        f, callbacks, head = start(build(), headers=[("referer", "x"),
                                                     ("x-request-id", "id")])
        f.decodeHeaders(head, False)
        f.decodeData(b"01234", False)
        f.decodeData(b"abc", True)
        self.assertEqual(head.headers.items()[-1], (b"content-length", b"8"))

    def test_contentLengthAtTrailers(self):
        f, callbacks, head = start(build(), headers=())
        f.decodeHeaders(head, False)
        f.decodeData(b"abc", False)
        self.assertEqual(f.decodeTrailers(object()), FilterTrailersStatus.Continue)
        self.assertEqual(head.headers.get(b"content-length"), b"3")

    def test_tooLarge(self):
        """
        Past C{max_request_bytes}: Envoy's 413 C{Payload Too Large}, details
        C{request_payload_too_large}, and
        C{http.<prefix>.downstream_rq_too_large}.
        """
        f, callbacks, head = start(build())
        f.decodeHeaders(head, False)
        self.assertEqual(f.decodeData(b"0123456789", False),
                         FilterDataStatus.StopIterationAndBuffer)
        self.assertEqual(f.decodeData(b"a", True), FilterDataStatus.StopIterationNoBuffer)
        [reply] = callbacks.localReplies
        self.assertEqual((reply.code, reply.body, reply.details),
                         (413, b"Payload Too Large", "request_payload_too_large"))
        self.assertEqual(callbacks.counter("http.ingress_http.downstream_rq_too_large"), 1)

    def test_exactlyTheLimit(self):
        f, callbacks, head = start(build())
        f.decodeHeaders(head, False)
        self.assertEqual(f.decodeData(b"0123456789", True), FilterDataStatus.Continue)
        self.assertEqual(callbacks.localReplies, [])

    def test_streamLimitSeam(self):
        """Envoy sets the stream's buffer limit to the filter's, when it can."""
        f, callbacks, head = start(build(4096))
        limits = []
        callbacks.setDecoderBufferLimit = limits.append
        f.decodeHeaders(head, False)
        self.assertEqual(limits, [4096])

    def test_routeDisabled(self):
        table = routeTable(ROUTES)
        f, callbacks, head = start(build(), "/nobuf", route=routeFor(table, b"/nobuf"))
        self.assertEqual(f.decodeHeaders(head, False), FilterHeadersStatus.Continue)
        self.assertEqual(f.decodeData(b"x" * 100, True), FilterDataStatus.Continue)
        self.assertEqual(callbacks.localReplies, [])

    def test_routeLimit(self):
        table = routeTable(ROUTES)
        f, callbacks, head = start(build(), "/bigbuf", route=routeFor(table, b"/bigbuf"))
        f.decodeHeaders(head, False)
        self.assertEqual(f.decodeData(b"x" * 15, True), FilterDataStatus.Continue)
        f, callbacks, head = start(build(), "/bigbuf", route=routeFor(table, b"/bigbuf"))
        f.decodeHeaders(head, False)
        f.decodeData(b"x" * 21, True)
        self.assertEqual(callbacks.localReplies[0].code, 413)


class ThroughConnectionManagerTests(SynchronousTestCase):
    """The buffer filter in a real connection manager, bytes on the wire."""

    def harness(self):
        return Harness(self, routes='[{match: {prefix: "/"}, route: {cluster: origin}}]',
                       filters=[{"name": "envoy.filters.http.buffer", "typed_config": {
                           "@type": "type.googleapis.com/" + BUFFER,
                           "max_request_bytes": 10}}, ROUTER])

    def test_chunkedGetsContentLength(self):
        """Envoy 1.40 sent the upstream C{content-length: 8} for a chunked 8-byte body."""
        h = self.harness()
        down = h.connect()
        down.send(b"POST /o HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n"
                  b"5\r\n01234\r\n")
        self.assertEqual(h.upstreams(), [])
        down.send(b"3\r\nabc\r\n0\r\n\r\n")
        up = h.upstream()
        line, headers = up.request()
        self.assertIn(("content-length", "8"), headers)
        self.assertNotIn("transfer-encoding", [n for n, _ in headers])
        self.assertTrue(up.received().endswith(b"\r\n\r\n01234abc"))

    def test_413(self):
        """Envoy 1.40's reply to 11 bytes with C{max_request_bytes: 10}."""
        h = self.harness()
        down = h.connect()
        down.send(b"POST /o HTTP/1.1\r\nhost: a\r\ncontent-length: 11\r\n\r\n0123456789a")
        response = down.responses()[0]
        self.assertEqual((response.status, response.body), (413, b"Payload Too Large"))
        self.assertEqual(response.names()[:2], ["content-length", "content-type"])
        self.assertEqual(h.stat("http.ingress.downstream_rq_too_large"), 1)
        self.assertEqual(h.upstreams(), [])


class RouteSpecificConfigsTests(SynchronousTestCase):
    """L{RouteSpecificConfigs}: route-level configs compiled once, by identity."""

    def setUp(self):
        self.calls = []

        def compile(message):
            self.calls.append(message)
            return ("compiled", message.max_request_bytes.value)

        self.configs = RouteSpecificConfigs(
            "envoy.filters.http.buffer", ("envoy.extensions.filters.http.buffer.v3.Buffer",),
            compile)

    def packed(self, limit):
        any_ = any_pb2.Any()
        any_.Pack(buffer_pb2.Buffer(max_request_bytes={"value": limit}))
        return any_

    def test_compiledOnce(self):
        any_ = self.packed(5)
        self.assertEqual(self.configs.compiled(any_), ("compiled", 5))
        self.assertEqual(self.configs.compiled(any_), ("compiled", 5))
        self.assertEqual(len(self.calls), 1)

    def test_identityNotEquality(self):
        """Two equal messages of two route tables are two configs (two buckets)."""
        first, second = self.packed(5), self.packed(5)
        self.configs.compiled(first)
        self.configs.compiled(second)
        self.assertEqual(len(self.calls), 2)

    def test_wrongType(self):
        """A config of another type is ignored (and logged)."""
        any_ = any_pb2.Any()
        any_.Pack(buffer_pb2.BufferPerRoute(disabled=True))
        self.assertIsNone(self.configs.compiled(any_))
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_forgetsConfigsOfDroppedTables(self):
        """
        Past C{sweepAt} entries, configs whose message nothing else holds
        (a replaced route table's) are forgotten; live ones are kept.
        """
        self.configs.sweepAt = 4
        live = [self.packed(i) for i in range(3)]
        for any_ in live:
            self.configs.compiled(any_)
        for i in range(3):
            self.configs.compiled(self.packed(100 + i))
        held = [entry[0] for entry in self.configs._cache.values()]
        self.assertTrue(all(any(a is h for h in held) for a in live))
        self.assertLessEqual(len(self.configs._cache), 5)
        del held
        before = len(self.calls)
        for any_ in live:
            self.configs.compiled(any_)
        self.assertEqual(len(self.calls), before)


class HelperTests(SynchronousTestCase):

    def test_workerStats(self):
        """Stat objects per worker shard; C{declare} shows them at zero on main."""
        store = StatsStore()
        stats = WorkerStats({"hits": "x.hits"}, {"active": "x.active"})
        stats.declare(makeContext(store=store, server=FakeServer(store)))
        self.assertEqual(store.snapshot().counters["x.hits"], 0)
        callbacks = FakeCallbacks(store=store)
        one = stats.forDispatcher(callbacks.dispatcher)
        self.assertIs(stats.forDispatcher(callbacks.dispatcher), one)
        one.hits.inc()
        one.active.inc()
        self.assertEqual(store.snapshot().counters["x.hits"], 1)
        self.assertEqual(store.snapshot().gauges["x.active"], 1)

    def test_snapshotWithoutRuntime(self):
        """Without a runtime every key is at its default."""
        snapshot = snapshotSource(makeContext())()
        self.assertEqual(snapshot.getInteger("fault.http.abort.abort_percent", 7), 7)

    def test_snapshotFollowsRuntime(self):
        runtime = runtimeWith({"a.b": 1})
        source = snapshotSource(makeContext(runtime=runtime))
        self.assertEqual(source().getInteger("a.b", 0), 1)
        runtime.mergeValues({"a.b": "2"})
        self.assertEqual(source().getInteger("a.b", 0), 2)
