"""
End to end: C{-l debug} tells the story of a connection and a request the
way Envoy 1.40's debug log does, with its C{[Tags: "ConnectionId":...]}
prefixes, and C{--component-log-level} / C{POST /logging} choose which
components speak.

The wording is copied from Envoy 1.40 run on the same kind of config
(C{envoy -l debug}, a request to a cluster whose port refuses), e.g.::

    [debug][conn_handler] [...] [Tags: "ConnectionId":"2"] new connection from 127.0.0.1:53232
    [debug][http] [...] [Tags: "ConnectionId":"2","StreamId":"1427..."] request headers complete (end_stream=true):
    [debug][router] [...] [Tags: ...] cluster 'refused' match for URL '/bad'
    [debug][pool] [...] queueing stream due to no available connections (ready=0 busy=0 connecting=0)
    [debug][pool] [...] creating a new connection (connecting=0)
    [debug][connection] [...] [Tags: "ConnectionId":"3"] connecting to 127.0.0.1:18404
    [debug][connection] [...] [Tags: "ConnectionId":"3"] delayed connect error: Connection refused
    [debug][connection] [...] [Tags: "ConnectionId":"3"] closing socket: 0
    [debug][router] [...] [Tags: ...] upstream reset: reset reason: remote connection failure, transport failure reason: delayed connect error: Connection refused
    [debug][http] [...] [Tags: ...] Sending local reply with details upstream_reset_before_response_started{...}
    [debug][http] [...] [Tags: ...] encoding headers via codec (end_stream=false):
"""

import re
import ssl
import signal
import socket
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.configs import bootstrap, cluster, httpListener
from tests.e2e.harness import Envoy, Upstream, freePort
from tests.e2e.test_ops import waitFor

_CONFIG = bootstrap(
    listeners=[
        httpListener("front", "%(http)d", routes="""
            - match: {prefix: "/ok"}
              route: {cluster: good}
            - match: {prefix: "/bad"}
              route: {cluster: refused}
            """, filterChain="""
            name: http_chain
            """),
        """
        - name: tcp
          address: {socket_address: {address: 127.0.0.1, port_value: %(tcp)d}}
          filter_chains:
          - filters:
            - name: envoy.filters.network.tcp_proxy
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
                stat_prefix: tcp
                cluster: refused
        """,
    ],
    clusters=[cluster("good"), cluster("refused")])

# [time][pid][level][logger] [file.py:line] message (a header dump spans
# several lines, up to the next line's time stamp).
_LINE = re.compile(r"^\[[\d\- :.]+\]\[\d+\]\[(\w+)\]\[(\w+)\] \[(txenvoy/[\w/]+\.py:\d+)\] "
                   r"((?:.|\n)*)$")
_ENTRY_START = re.compile(r"^(?=\[\d{4}-\d\d-\d\d )", re.M)
_CONN = r'\[Tags: "ConnectionId":"(\d+)"\] '
_STREAM = r'\[Tags: "ConnectionId":"(\d+)","StreamId":"(\d+)"\] '


def _keepAliveOrigin(conn):
    """Answer every request on the connection with 200 "ok", kept alive."""
    buf = b""
    while True:
        while b"\r\n\r\n" not in buf:
            data = conn.recv(65536)
            if not data:
                return
            buf += data
        _, _, buf = buf.partition(b"\r\n\r\n")
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")


def _get(port, paths):
    """GET each of C{paths} on one kept-alive connection; the raw responses."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    out = []
    try:
        for path in paths:
            s.sendall(b"GET " + path + b" HTTP/1.1\r\nhost: debug.test\r\n\r\n")
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += s.recv(65536)
            head, _, body = buf.partition(b"\r\n\r\n")
            length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
            while len(body) < length:
                body += s.recv(65536)
            out.append(head.split(b"\r\n")[0] + b" " + body)
    finally:
        s.close()
    return out


def _lines(text):
    """The parsed debug lines: (level, logger, location, message)."""
    entries = [e[:-1] if e.endswith("\n") else e for e in _ENTRY_START.split(text)]
    return [m.groups() for m in map(_LINE.match, entries) if m]


def _waitFor(envoy, predicate):
    """Wait until C{predicate(log text)} holds (10s at most)."""
    waitFor(lambda: predicate(envoy.output()[1]))


class _Deployment:

    def __init__(self, testCase, args):
        self.origin = Upstream(_keepAliveOrigin)
        testCase.addCleanup(self.origin.stop)
        self.http, self.tcp, admin, refused = freePort(), freePort(), freePort(), freePort()
        self.refused = refused
        config = _CONFIG % {"admin": admin, "http": self.http, "tcp": self.tcp,
                            "good": self.origin.port, "refused": refused}
        self.envoy = Envoy(config, args=("--concurrency", "1") + tuple(args), adminPort=admin)
        testCase.addCleanup(self.envoy.stop)
        self.envoy.waitReady()
        self.envoy.waitPort(self.http)

    def log(self):
        return self.envoy.output()[1]


class DebugStoryTests(SynchronousTestCase):
    """C{twistd -n envoy -l debug}: the story of each connection and request."""

    def test_refusedUpstream(self):
        """
        A request routed to a host that refuses: Envoy 1.40's lines from
        the new downstream connection to the 503 local reply, with the
        downstream connection id, one stream id for the whole request and
        the upstream connection's own id.
        """
        d = _Deployment(self, ["-l", "debug"])
        [response] = _get(d.http, [b"/bad/x"])
        self.assertTrue(response.startswith(b"HTTP/1.1 503 "), response)
        # Closed: the readiness probe's connection and the request's.
        _waitFor(d.envoy, lambda text: text.count("adding to cleanup list") >= 2)
        lines = _lines(d.log())
        story = [(logger, message) for level, logger, _, message in lines if level == "debug"]

        def find(logger, pattern, start=0):
            for i in range(start, len(story)):
                if story[i][0] == logger:
                    m = re.match(pattern, story[i][1])
                    if m:
                        return i, m
            self.fail("no %s line matching %r after line %d in:\n%s" % (
                logger, pattern, start, "\n".join("[%s] %s" % s for s in story)))

        # (The harness's readiness probe made a connection of its own.)
        i, m = find("http", _STREAM + r"request headers complete \(end_stream=true\):\n"
                    r"':authority', 'debug\.test'\n':path', '/bad/x'\n':method', 'GET'\n$")
        down, stream = m.groups()
        self.assertLess(int(stream), 2 ** 64)
        downTag = re.escape('[Tags: "ConnectionId":"%s"] ' % (down,))
        j, _ = find("conn_handler", downTag + r"new connection from 127\.0\.0\.1:\d+$")
        j, _ = find("conn_handler", downTag + r"filter chain 'http_chain' matched$", j)
        j, _ = find("http", downTag + "new stream$", j)
        self.assertLess(j, i)
        tag = '[Tags: "ConnectionId":"%s","StreamId":"%s"] ' % (down, stream)
        i, _ = find("router", re.escape(tag) + "cluster 'refused' match for URL '/bad/x'$", i)
        i, m = find("router", re.escape(tag) + r"router decoding headers:\n"
                    r"':authority', 'debug\.test'\n':path', '/bad/x'\n':method', 'GET'\n"
                    r"':scheme', 'http'\n(.|\n)*'x-request-id', ", i)
        i, _ = find("pool", r"queueing stream due to no available connections "
                    r"\(ready=0 busy=0 connecting=0\)$", i)
        i, _ = find("pool", r"creating a new connection \(connecting=0\)$", i)
        i, m = find("connection", _CONN + r"connecting to 127\.0\.0\.1:%d$" % (d.refused,), i)
        up = m.group(1)
        self.assertNotEqual(up, down)
        upTag = re.escape('[Tags: "ConnectionId":"%s"] ' % (up,))
        i, _ = find("connection", upTag + "delayed connect error: Connection refused$", i)
        i, _ = find("connection", upTag + "closing socket: 0$", i)
        i, _ = find("pool", upTag + "client disconnected, failure reason: "
                    "delayed connect error: Connection refused$", i)
        i, _ = find("router", re.escape(tag) + "upstream reset: reset reason: remote connection "
                    "failure, transport failure reason: delayed connect error: "
                    "Connection refused$", i)
        i, _ = find("http", re.escape(tag) + r"Sending local reply with details "
                    r"upstream_reset_before_response_started\{remote_connection_failure\|"
                    r"delayed_connect_error:_Connection_refused\}$", i)
        i, _ = find("http", re.escape(tag) + r"encoding headers via codec \(end_stream=false\):\n"
                    r"':status', '503'\n", i)
        i, _ = find("http", re.escape(tag) + r"Codec completed encoding stream\.$", i)
        i, _ = find("connection", downTag + "remote close$", i)
        i, _ = find("connection", downTag + "closing socket: 0$", i)
        find("conn_handler", downTag + "adding to cleanup list$", i)
        # Trace lines stay off at debug.
        self.assertEqual([l for l in lines if l[0] == "trace"], [])
        # Start-up and the admin (the harness asked for /ready).
        for logger, pattern in [
                ("config", r"Create listen socket for listener front on address "
                           r"127\.0\.0\.1:%d$" % (d.http,)),
                ("config", r"add active listener: name=front, address=127\.0\.0\.1:%d$"
                           % (d.http,)),
                ("upstream", "cm init: adding: cluster=refused$"),
                ("upstream", "adding TLS cluster refused$"),
                ("upstream", "membership update for TLS cluster refused added 1 removed 0$"),
                ("admin", _STREAM + "request complete: path: /ready$")]:
            find(logger, pattern)

    def test_poolReuseAndDrain(self):
        """
        C{-l trace}: two requests on one downstream connection: the first
        opens an upstream connection, the second finds it in the pool
        (Envoy's C{using existing fully connected connection}); SIGTERM
        drains the idle downstream connection. Trace adds the bytes parsed
        and written and the upstream's response headers.
        """
        d = _Deployment(self, ["-l", "trace", "--drain-time-s", "1",
                               "--drain-strategy", "immediate"])
        s = socket.create_connection(("127.0.0.1", d.http), timeout=10)
        self.addCleanup(s.close)
        for _ in range(2):
            s.sendall(b"GET /ok HTTP/1.1\r\nhost: a\r\n\r\n")
            buf = b""
            while not buf.endswith(b"ok"):
                buf += s.recv(65536)
        d.envoy.proc.send_signal(signal.SIGTERM)
        self.assertEqual(s.recv(10), b"")
        d.envoy.proc.wait(15)
        lines = _lines(d.log())
        story = [(logger, message) for level, logger, _, message in lines if level == "debug"]
        trace = [(logger, message) for level, logger, _, message in lines if level == "trace"]
        for logger, pattern in [
                ("http", _CONN + r"parsing \d+ bytes$"),
                ("router", _STREAM + r"end_stream: false, upstream response headers:\n"
                           r"':status', '200'\n'content-length', '2'\n"),
                ("connection", _CONN + r"writing \d+ bytes, end_stream false$"),
                ("http", _STREAM + r"encoding data via codec \(size=2 end_stream=true\)$")]:
            self.assertTrue(any(l == logger and re.match(pattern, m) for l, m in trace),
                            (logger, pattern))
        text = "\n".join("[%s] %s" % line for line in story)
        pool = [message for logger, message in story if logger == "pool"]
        self.assertEqual(sum("creating a new connection" in m for m in pool), 1, text)
        [reused] = [m for m in pool if m.endswith("using existing fully connected connection")]
        [attached] = re.findall(r"Attached upstream connection \[C(\d+)\] to downstream "
                                r"connection \[C(\d+)\]", text)[1:]
        self.assertIn('"ConnectionId":"%s"' % (attached[0],), reused)
        self.assertIn('[http] [Tags: "ConnectionId":"%s"] drain closing connection'
                      % (attached[1],), text)
        self.assertIn('[Tags: "ConnectionId":"%s"] closing socket: 1' % (attached[1],), text)

    def test_tcpProxyRefused(self):
        """tcp_proxy to a refusing host: Envoy's session lines, then the close."""
        d = _Deployment(self, ["-l", "debug"])
        s = socket.create_connection(("127.0.0.1", d.tcp), timeout=10)
        self.addCleanup(s.close)
        s.sendall(b"hello")
        try:
            self.assertEqual(s.recv(10), b"")
        except ConnectionResetError:
            pass
        _waitFor(d.envoy, lambda text: text.count("adding to cleanup list") >= 2)
        text = d.log()
        m = re.search(r'\[filter\] \[txenvoy/[\w/]+\.py:\d+\] \[Tags: "ConnectionId":"(\d+)"\] '
                      r"new tcp proxy session", text)
        self.assertIsNotNone(m, text)
        tag = '[Tags: "ConnectionId":"%s"] ' % (m.group(1),)
        for message in ("Creating connection to cluster refused",
                        "upstream connect failed: remote connection failure, "
                        "delayed connect error: Connection refused",
                        "closing socket: 1", "adding to cleanup list"):
            self.assertIn(tag + message, text)


class ComponentLevelTests(SynchronousTestCase):
    """C{--component-log-level} and C{POST /logging} choose who speaks."""

    def test_httpOnly(self):
        """
        C{-l info --component-log-level http:debug}: the http logger's
        debug lines and no one else's; then C{POST /logging?http=trace}
        adds its trace lines, C{?level=info} silences it again.
        """
        d = _Deployment(self, ["-l", "info", "--component-log-level", "http:debug"])
        _get(d.http, [b"/ok/1"])
        _waitFor(d.envoy, lambda text: "Codec completed encoding stream." in text)
        lines = _lines(d.log())
        self.assertEqual({(level, logger) for level, logger, _, _ in lines}, {("debug", "http")})
        self.assertTrue(any("request headers complete" in l[3] for l in lines))

        self.assertEqual(d.envoy.admin("/logging?http=trace", "POST")[0], 200)
        _get(d.http, [b"/ok/2"])
        _waitFor(d.envoy, lambda text: "encoding data via codec" in text)
        lines = _lines(d.log())
        self.assertEqual({(level, logger) for level, logger, _, _ in lines},
                         {("debug", "http"), ("trace", "http")})
        self.assertTrue(any(re.match(_STREAM + r"encoding data via codec \(size=2 "
                                     r"end_stream=true\)$", l[3]) for l in lines))

        self.assertEqual(d.envoy.admin("/logging?level=info", "POST")[0], 200)
        before = len(lines)
        _get(d.http, [b"/ok/3"])
        time.sleep(0.3)
        self.assertEqual(len(_lines(d.log())), before)


class TlsStoryTests(SynchronousTestCase):
    """The listener filter's decision, the chosen chain and a failed TLS handshake."""

    def test_handshakeFailure(self):
        from tests.e2e.test_l4 import l4Config, staticCluster
        from tests.e2e.test_tls import tlsChain

        origin = Upstream(_keepAliveOrigin)
        self.addCleanup(origin.stop)
        port, admin = freePort(), freePort()
        chain = tlsChain("domain1.example.com", "domain1", port, "origin")
        chain["name"] = "domain1"
        listener = {
            "name": "tls",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "listener_filters": [{"name": "envoy.filters.listener.tls_inspector", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3."
                         "TlsInspector"}}],
            "filter_chains": [chain],
        }
        envoy = Envoy(l4Config(admin, [listener], [staticCluster("origin", [origin.port])]),
                      args=("--concurrency", "1", "-l", "debug"), adminPort=admin)
        self.addCleanup(envoy.stop)
        envoy.waitReady()
        # A client that trusts nobody: it rejects the certificate and aborts.
        context = ssl.create_default_context()
        for name in ("domain1.example.com", "other.example.com"):
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            with self.assertRaises((ssl.SSLError, ConnectionResetError, OSError)):
                context.wrap_socket(raw, server_hostname=name)
            raw.close()
        _waitFor(envoy, lambda text: "no matching filter chain found" in text
                 and "TLS_error_end" in text)
        text = envoy.output()[1]
        m = re.search(r'\[conn_handler\] \[txenvoy/[\w/.]+:\d+\] \[Tags: "ConnectionId":"(\d+)"\] '
                      r"listener filter TlsInspector: continue after \d+ bytes", text)
        self.assertIsNotNone(m, text)
        tag = '[Tags: "ConnectionId":"%s"] ' % (m.group(1),)
        self.assertIn(tag + "filter chain 'domain1' matched", text)
        # Envoy 1.40's words for it.
        self.assertRegex(text, re.escape(tag) + r"remote address:127\.0\.0\.1:\d+,TLS_error:"
                                                r"\|\d+:SSL routines:OPENSSL_internal:"
                                                r"TLSV1_ALERT_UNKNOWN_CA:TLS_error_end\n")
        self.assertRegex(text, r"\[conn_handler\] \[[\w/.:]+\] closing connection from "
                               r"127\.0\.0\.1:\d+: no matching filter chain found")
