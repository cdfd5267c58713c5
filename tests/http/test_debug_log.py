"""
The data path's debug and trace lines, with Twisted's fakes: the story the
connection manager, the router, the HTTP filters and the pool tell (Envoy
1.40's wording, pinned end to end in L{tests.e2e.test_debug_log}), and
nothing at all, not even a formatted header dump, when the level is off.
"""

import io
import re

from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.http import conn_manager
from txenvoy.router import router
from txenvoy.server.logging import LogLevels, makeObserver

from tests.http.hcm_harness import Harness

_BUFFER = {"name": "envoy.filters.http.buffer", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
    "max_request_bytes": 1024}}
_OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


class DataPathLogTests(SynchronousTestCase):

    def setUp(self):
        self.out = io.StringIO()
        self.levels = LogLevels("info")
        self.levels.bindLoggers()
        self.addCleanup(self.levels.unbindLoggers)
        observer = makeObserver(self.out, self.levels)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.h = Harness(self, extraFilters=[_BUFFER])

    def exchange(self, down, upstream=None):
        down.send(b"GET /o/x HTTP/1.1\r\nhost: a\r\n\r\n")
        if upstream is None:
            upstream = self.h.upstream()
        upstream.respond(_OK)
        self.assertEqual(down.response().status, 200)
        return upstream

    def test_trace(self):
        """
        At trace: each filter's call and status, the router's choice, a new
        upstream connection for the first request and the pooled one for
        the second, with the downstream connection's id (7 here) and the
        upstream's own.
        """
        self.levels.setAll("trace")
        down = self.h.connect()
        up = self.exchange(down)
        self.exchange(down, up)
        text = self.out.getvalue()
        self.assertIn('[Tags: "ConnectionId":"7"] new stream', text)
        self.assertRegex(text, r'\[trace\]\[http\] \[txenvoy/http/filter\.py:\d+\] '
                               r'\[Tags: "ConnectionId":"7","StreamId":"\d+"\] decode headers '
                               r'called: filter=envoy\.filters\.http\.buffer status=0\n')
        self.assertRegex(text, r"cluster 'origin' match for URL '/o/x'\n")
        self.assertEqual(text.count("creating a new connection (connecting=0)"), 1)
        self.assertEqual(text.count("] using existing fully connected connection"), 1)
        attached = r"Attached upstream connection \[C(\d+)\] to downstream connection \[C7\]"
        self.assertRegex(text, attached)
        self.assertEqual(len(set(re.findall(attached, text))), 1)
        self.assertEqual(text.count("Codec completed encoding stream."), 2)

    def test_connectRefused(self):
        """The refused connect and the 503 it becomes, at debug."""
        self.levels.setAll("debug")
        down = self.h.connect()
        down.send(b"GET /dead/x HTTP/1.1\r\nhost: a\r\n\r\n")
        self.h.upstream(connect=False).fail()
        self.assertEqual(down.response().status, 503)
        text = self.out.getvalue()
        for line in ["delayed connect error: Connection refused\n",
                     "client disconnected, failure reason: delayed connect error: "
                     "Connection refused\n",
                     "upstream reset: reset reason: remote connection failure, transport failure "
                     "reason: delayed connect error: Connection refused\n",
                     "Sending local reply with details upstream_reset_before_response_started"
                     "{remote_connection_failure|delayed_connect_error:_Connection_refused}\n"]:
            self.assertIn(line, text)
        self.assertNotIn("[trace]", text)
        # What %UPSTREAM_TRANSPORT_FAILURE_REASON% prints (Envoy 1.40:
        # delayed_connect_error:_Connection_refused).
        [(info, _, _)] = self.h.accessLog.entries
        self.assertEqual(info.upstreamTransportFailureReason,
                         "delayed connect error: Connection refused")

    def test_offCostsNoFormatting(self):
        """
        At info the data path prints nothing and formats nothing: the header
        dumps, the most expensive messages, are never built.
        """
        def refuse(*args):
            raise AssertionError("formatted while off")
        self.patch(conn_manager, "dumpRequestHeaders", refuse)
        self.patch(conn_manager, "dumpResponseHeaders", refuse)
        self.patch(router, "dumpRequestHeaders", refuse)
        self.patch(router, "dumpResponseHeaders", refuse)
        down = self.h.connect()
        up = self.exchange(down)
        self.exchange(down, up)
        self.assertEqual(self.out.getvalue(), "")

    def test_connectTimeoutAndReset(self):
        """
        A connect that times out, then a client that goes away while its
        request waits: the reasons Envoy gives for both.
        """
        self.levels.setAll("debug")
        down = self.h.connect()
        down.send(b"GET /o/x HTTP/1.1\r\nhost: a\r\n\r\n")
        self.h.upstream(connect=False)
        self.h.advance(1.1)
        self.assertEqual(down.response().status, 503)
        text = self.out.getvalue()
        self.assertRegex(text, r'\[Tags: "ConnectionId":"\d+"\] connect timeout\n')
        self.assertIn("upstream reset: reset reason: connection timeout, transport failure "
                      "reason: \n", text)
        self.assertIn("details upstream_reset_before_response_started{connection_timeout}\n",
                      text)
        down.send(b"GET /o/y HTTP/1.1\r\nhost: a\r\n\r\n")
        down.lose()
        self.assertIn("stream reset: reset reason: connection termination\n",
                      self.out.getvalue()[len(text):])

    def test_rbacDenied(self):
        """The RBAC filter's decision, in Envoy's words, on the stream's line."""
        self.levels.setAll("debug")
        h = Harness(self, extraFilters=[{"name": "envoy.filters.http.rbac", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {"action": "DENY", "policies": {"everyone": {
                "permissions": [{"any": True}], "principals": [{"any": True}]}}}}}])
        down = h.connect()
        down.send(b"GET /o/x HTTP/1.1\r\nhost: a\r\n\r\n")
        self.assertEqual(down.response().status, 403)
        self.assertRegex(self.out.getvalue(),
                         r'\[debug\]\[rbac\] \[txenvoy/extensions/filters/http/rbac\.py:\d+\] '
                         r'\[Tags: "ConnectionId":"7","StreamId":"\d+"\] enforced denied, '
                         r"matched policy everyone\n")

    def test_dispatchError(self):
        """
        A request the codec refuses: Envoy's local reply line, then the
        connection's C{dispatch error: http/1.1 protocol error: ...}.
        """
        self.levels.setAll("debug")
        down = self.h.connect()
        down.send(b"GE\x01T / HTTP/1.1\r\nhost: a\r\n\r\n")
        self.assertEqual(down.response().status, 400)
        self.assertRegex(self.out.getvalue(),
                         r'\[Tags: "ConnectionId":"7"\] Sending local reply with details '
                         r'http1\.[\w.]+\n.*\[Tags: "ConnectionId":"7"\] dispatch error: '
                         r"http/1\.1 protocol error: http1\.[\w.]+\n")
