# -*- test-case-name: tests.tracing.test_reporter -*-
"""
Finished spans, batched per worker and sent off the data path.

Each worker has its own L{BatchReporter} (as each Envoy worker has its own
Zipkin reporter): a finished span is appended to a list, nothing more. The
list is sent when it reaches C{minFlushSpans} or when the flush timer
fires, by an asynchronous POST on the worker's reactor. A collector that is
down, slow or answering errors costs bounded memory: at most
C{maxBufferedSpans} spans wait and at most C{maxInFlight} reports are on
the wire; beyond that a span or a batch is dropped and counted, and the
worker never waits.
"""

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from txenvoy.config.errors import ConfigError

log = Logger(namespace="tracing")

def checkCollectorCluster(context, name, path):
    """
    Refuse a collector cluster the bootstrap's static clusters do not have.

    @param path: the field's path, named in the error.
    @raise ConfigError: naming C{path} and the cluster.
    """
    bootstrap = context.bootstrap
    if bootstrap is not None and name not in {c.name for c in
                                              bootstrap.static_resources.clusters}:
        raise ConfigError("%s: unknown cluster '%s'" % (path, name))


#: Envoy's timeout for a report (its C{x-envoy-expected-rq-timeout-ms}).
REPORT_TIMEOUT = 5.0


@implementer(IBodyProducer)
class BytesProducer:
    """A request body already in memory, written at once (no cooperator)."""

    def __init__(self, body):
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer):
        consumer.write(self._body)
        return defer.succeed(None)

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass

    def stopProducing(self):
        pass


class HttpCollector:
    """
    POSTs reports to a collector cluster's host on one worker's reactor
    (Envoy sends them through its async client to C{collector_cluster}).

    @ivar hostHeader: the C{Host} sent (C{collector_hostname}, else the
        cluster's name, as Envoy).
    """

    def __init__(self, dispatcher, clusterName, path, contentType, hostHeader=None,
                 extraHeaders=(), timeout=REPORT_TIMEOUT, onResponseBody=None):
        self._onResponseBody = onResponseBody
        self._dispatcher = dispatcher
        self._reactor = dispatcher.reactor
        self.clusterName = clusterName
        self.path = path.encode("utf-8") if isinstance(path, str) else path
        self.hostHeader = (hostHeader or clusterName).encode("utf-8")
        self._headers = [(b"content-type", contentType)] + list(extraHeaders)
        self._timeout = timeout
        pool = HTTPConnectionPool(self._reactor, persistent=True)
        pool.maxPersistentPerHost = 2
        pool.retryAutomatically = False
        self._pool = pool
        self._agent = Agent(self._reactor, connectTimeout=timeout, pool=pool)

    def host(self):
        """@return: the chosen collector C{(ip, port)}, or C{None}: no such cluster or host."""
        manager = self._dispatcher.clusterManager
        cluster = manager.getThreadLocalCluster(self.clusterName) if manager else None
        if cluster is None:
            return None
        host = cluster.chooseHost()
        return None if host is None else host.address

    def post(self, address, body, headers=()):
        """
        @param headers: this report's own C{[(name, value)]}, after the
            collector's.
        @return: a Deferred firing with the response status: 503 when the
            collector cannot be reached, 504 when it does not answer within
            the timeout (Envoy's local replies).
        """
        ip, port = address
        hostText = ("[%s]" % (ip,) if ":" in ip else ip).encode("ascii")
        url = b"http://%s:%d%s" % (hostText, port, self.path)
        sent = Headers({b"host": [self.hostHeader]})
        for name, value in self._headers:
            sent.addRawHeader(name, value)
        for name, value in headers:
            sent.addRawHeader(name, value)
        d = self._agent.request(b"POST", url, sent, BytesProducer(body))
        onBody = self._onResponseBody

        def read(response):
            def got(data):
                if onBody is not None:
                    onBody(response.code, data)
                return response.code
            return readBody(response).addCallback(got)

        d.addCallback(read)
        timer = self._reactor.callLater(self._timeout, d.cancel)

        def done(result):
            if timer.active():
                timer.cancel()
            return result

        def localReply(reason):
            # Envoy's async client answers a collector it cannot reach with
            # its own 503, and one that does not answer in time with 504.
            log.debug("report to {cluster} failed: {reason}", cluster=self.clusterName,
                      reason=reason.getErrorMessage())
            return 504 if reason.check(defer.CancelledError) else 503

        return d.addBoth(done).addErrback(localReply)

    def close(self):
        """Close kept-alive collector connections."""
        return self._pool.closeCachedConnections()


class BatchReporter:
    """
    One worker's buffer of finished spans and its flushing.

    @param encode: C{encode(spans) -> bytes}, the report body.
    @param stats: a L{txenvoy.stats.per_worker.StatsStruct} with
        C{spans_sent}, C{spans_dropped} and C{timer_flushed}, and, when the
        provider counts reports as Envoy's Zipkin does, C{reports_sent},
        C{reports_dropped}, C{reports_failed} and
        C{reports_skipped_no_cluster}; without those, a lost report counts
        its spans in C{spans_dropped} (Envoy's OpenTelemetry stats).
    @param okStatus: the status that counts as sent (Zipkin: 202).
    @param reportHeaders: C{reportHeaders(spans) -> [(name, value)]}, a
        report's own headers (Datadog's C{x-datadog-trace-count}).
    """

    def __init__(self, reactor, collector, encode, stats, flushInterval=5.0, minFlushSpans=5,
                 maxBufferedSpans=1000, maxInFlight=4, okStatus=lambda code: code == 202,
                 reportHeaders=None):
        self._reportHeaders = reportHeaders
        self._reactor = reactor
        self.collector = collector
        self._encode = encode
        self.stats = stats
        self.flushInterval = flushInterval
        self.minFlushSpans = minFlushSpans
        self.maxBufferedSpans = maxBufferedSpans
        self.maxInFlight = maxInFlight
        self._ok = okStatus
        self.spans = []
        self.inFlight = 0
        self._timer = None

    def report(self, span):
        """Keep a finished span for the next report (never blocks)."""
        spans = self.spans
        if len(spans) >= self.maxBufferedSpans:
            self.stats.spans_dropped.inc()
            return
        spans.append(span)
        if self._timer is None:
            self._timer = self._reactor.callLater(self.flushInterval, self._onTimer)
        if len(spans) >= self.minFlushSpans:
            self.flush()

    def _onTimer(self):
        self._timer = None
        self._count("timer_flushed")
        self.flush()

    def flush(self):
        """Send what is buffered as one report, if a collector can take it."""
        spans = self.spans
        if not spans:
            return
        self.spans = []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        address = self.collector.host()
        if address is None:
            self._lost("reports_skipped_no_cluster", len(spans))
            return
        if self.inFlight >= self.maxInFlight:
            # The collector is slow: this batch goes, the worker does not wait.
            self._lost("reports_dropped", len(spans))
            if hasattr(self.stats, "reports_dropped"):
                self.stats.spans_dropped.inc(len(spans))
            return
        try:
            body = self._encode(spans)
        except Exception:
            log.failure("encoding {count} spans", count=len(spans))
            self.stats.spans_dropped.inc(len(spans))
            return
        self._count("spans_sent", len(spans))
        self.inFlight += 1
        if self._reportHeaders is None:
            d = self.collector.post(address, body)
        else:
            d = self.collector.post(address, body, self._reportHeaders(spans))
        d.addCallbacks(self._onResponse, self._onFailure, (len(spans),), None, (len(spans),))

    def _count(self, name, count=1):
        # Not every provider has every counter (Datadog: no spans_sent).
        counter = getattr(self.stats, name, None)
        if counter is not None:
            counter.inc(count)

    def _lost(self, name, count):
        counter = getattr(self.stats, name, None)
        if counter is not None:
            counter.inc()
        else:
            self.stats.spans_dropped.inc(count)

    def _onResponse(self, code, count):
        self.inFlight -= 1
        if self._ok(code):
            counter = getattr(self.stats, "reports_sent", None)
            if counter is not None:
                counter.inc()
        else:
            self._lost("reports_dropped", count)

    def _onFailure(self, reason, count):
        self.inFlight -= 1
        self._lost("reports_failed", count)
        log.debug("report to {cluster} failed: {reason}", cluster=self.collector.clusterName,
                  reason=reason.getErrorMessage())

    def stop(self):
        """Cancel the timer and close connections (the worker is stopping)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return self.collector.close()
