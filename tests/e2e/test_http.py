"""
End-to-end tests of the HTTP/1.1 proxy: a real C{twistd -n envoy} in front
of a real origin server (L{Origin}, below), driven by raw sockets so that
every byte on the wire can be checked; and the same requests sent to real
Envoy 1.40 with the same config, to show any difference as a failure.
"""

import collections
import json
import os
import re
import socket
import tempfile
import threading
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.configs import block, bootstrap, cluster, httpListener
from tests.e2e.harness import DeadPort, Envoy, RealEnvoy, SharedFixture, Upstream, freePort

# -- the origin --------------------------------------------------------------

FIXED_DATE = b"Mon, 01 Jan 2001 00:00:00 GMT"


class _Reader:
    """Buffered reads from a socket: lines, exact counts, chunked bodies."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _fill(self):
        data = self.sock.recv(1 << 20)
        if not data:
            raise EOFError()
        self.buf += data

    def readHead(self):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        return head

    def readExactly(self, n, sink=None):
        """Read C{n} bytes; with C{sink}, stream them to it (kept small)."""
        out = []
        while n:
            if not self.buf:
                self._fill()
            piece = self.buf[:n]
            self.buf = self.buf[len(piece):]
            n -= len(piece)
            if sink is None:
                out.append(piece)
            else:
                sink(piece)
        return b"".join(out)

    def readLine(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def readChunked(self, sink):
        while True:
            size = int(self.readLine().split(b";")[0], 16)
            if size == 0:
                while self.readLine():
                    pass
                return
            self.readExactly(size, sink)
            self.readLine()

    def readRest(self):
        """Everything until EOF."""
        try:
            while True:
                self._fill()
        except (EOFError, OSError):
            pass
        out, self.buf = self.buf, b""
        return out


def parseHead(head):
    """@return: C{(requestLine, [(name, value)])} with names lower-cased."""
    lines = head.split(b"\r\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name.strip().lower().decode("latin-1"),
                        value.strip().decode("latin-1")))
    return lines[0].decode("latin-1"), headers


_KEYWORDS = frozenset(["count", "status", "stall", "reset", "garbage", "big", "sum",
                       "close", "ws", "partial", "echo", "bare", "eof", "slowsum"])


def _originPath(target):
    """The path from the first keyword segment on (routes may prefix it)."""
    segments = target.split("?")[0].split("/")
    for i, segment in enumerate(segments):
        if segment in _KEYWORDS:
            return "/" + "/".join(segments[i:])
    return "/echo"


class Origin:
    """
    A small threaded HTTP/1.1 origin with keep-alive. By the path from its
    first keyword segment on (so C{/api/status/503} is C{/status/503}):

     - anything else (C{/echo}): 200, a JSON body echoing the request line, the
       headers (in order), the body length, the connection number and the
       request's number on its connection;
     - C{/status/<code>}: that status, body C{status <code>};
     - C{/count/<key>/...}: counts attempts per key in L{counts}, then
       carries on with the rest of the path;
     - C{/stall}: never answers; C{/reset}: closes without answering;
     - C{/garbage}: answers a garbage status line;
     - C{/big/<n>}: a body of C{n} bytes, sent in 64 KiB pieces;
     - C{/sum}: reads the body (any size) and answers its length;
       C{/slowsum} does the same, slowly;
     - C{/close}: answers with C{connection: close} and closes;
     - C{/ws}: an upgrade: 101, then echoes raw bytes;
     - C{/partial}: 200 with content-length 100000, 1000 bytes, then
       closes 0.2 s later (C{/partial/hold}: 3 s later);
     - C{/bare}: 200 with no C{date} or C{server}, body C{bare};
     - C{/eof}: 200 with a body delimited by the end of the connection.

    Every response carries C{date: Mon, 01 Jan 2001...} and
    C{server: origin}, so that what the proxy does to them shows.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.connections = 0
        self.requests = []
        self.counts = collections.Counter()
        self.server = Upstream(self._handle)
        self.port = self.server.port

    def stop(self):
        self.server.stop()

    def _handle(self, conn):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.lock:
            self.connections += 1
            index = self.connections
        reader = _Reader(conn)
        seq = 0
        try:
            while True:
                head = reader.readHead()
                seq += 1
                if not self._serve(conn, reader, head, index, seq):
                    return
        except (EOFError, OSError):
            return

    def _serve(self, conn, reader, head, index, seq):
        line, headers = parseHead(head)
        method, target, version = line.split(" ", 2)
        lower = dict(headers)
        path = _originPath(target)
        while path.startswith("/count/"):
            key, _, rest = path[len("/count/"):].partition("/")
            with self.lock:
                self.counts[key] += 1
            path = "/" + rest
        with self.lock:
            self.requests.append((index, method, target))
        size = [0]

        def count(piece):
            size[0] += len(piece)

        if path.startswith("/slowsum"):
            pass
        elif lower.get("transfer-encoding", "").lower() == "chunked":
            reader.readChunked(count)
        elif "content-length" in lower:
            reader.readExactly(int(lower["content-length"]), count)
        base = b"date: " + FIXED_DATE + b"\r\nserver: origin\r\n"

        if path.startswith("/stall"):
            time.sleep(30)
            return False
        if path.startswith("/reset"):
            return False
        if path.startswith("/garbage"):
            conn.sendall(b"HTTX/9 what\r\n\r\n")
            time.sleep(0.5)
            return False
        if path.startswith("/status/"):
            code = int(path.split("/")[2])
            body = b"status %d" % (code,)
            conn.sendall(b"HTTP/1.1 %d X\r\n%scontent-length: %d\r\n\r\n%s"
                         % (code, base, len(body), body))
            return True
        if path.startswith("/big/"):
            n = int(path.split("/")[2])
            conn.sendall(b"HTTP/1.1 200 OK\r\n%scontent-length: %d\r\n\r\n" % (base, n))
            piece = b"d" * 65536
            while n:
                k = min(n, len(piece))
                conn.sendall(piece[:k])
                n -= k
            return True
        if path.startswith("/slowsum"):
            # A slow reader: the proxy must stop reading its client.
            def slowCount(piece):
                size[0] += len(piece)
                time.sleep(0.0003)
            if "content-length" in lower:
                reader.readExactly(int(lower["content-length"]) - size[0], slowCount)
            body = b"%d" % (size[0],)
            conn.sendall(b"HTTP/1.1 200 OK\r\n%scontent-length: %d\r\n\r\n%s"
                         % (base, len(body), body))
            return True
        if path.startswith("/sum"):
            body = b"%d" % (size[0],)
            conn.sendall(b"HTTP/1.1 200 OK\r\n%scontent-length: %d\r\n\r\n%s"
                         % (base, len(body), body))
            return True
        if path.startswith("/partial"):
            conn.sendall(b"HTTP/1.1 200 OK\r\n%scontent-length: 100000\r\n\r\n%s"
                         % (base, b"p" * 1000))
            time.sleep(3.0 if path == "/partial/hold" else 0.2)
            return False
        if path.startswith("/bare"):
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nbare")
            return True
        if path.startswith("/eof"):
            conn.sendall(b"HTTP/1.1 200 OK\r\n%s\r\n%s" % (base, b"e" * 3000))
            return False
        if path.startswith("/ws"):
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n"
                         b"connection: Upgrade\r\n\r\n")
            if reader.buf:
                conn.sendall(reader.buf)
                reader.buf = b""
            while True:
                data = conn.recv(65536)
                if not data:
                    return False
                conn.sendall(data)
        body = json.dumps({
            "method": method, "target": target, "version": version, "headers": headers,
            "bodyLength": size[0], "connection": index, "seq": seq,
        }).encode()
        close = path.startswith("/close")
        conn.sendall(b"HTTP/1.1 200 OK\r\n%scontent-type: application/json\r\n"
                     b"%scontent-length: %d\r\n\r\n%s"
                     % (base, b"connection: close\r\n" if close else b"", len(body), body))
        return not close


# -- a client ------------------------------------------------------------------


class Response:
    """One parsed response: C{status}, C{reason}, C{headers} (ordered, lower-case names), C{body}."""

    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    def header(self, name):
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def names(self):
        return [n for n, _ in self.headers]

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<Response %d %r %r>" % (self.status, self.headers, self.body[:200])


class Client:
    """A raw-socket HTTP/1.1 client on one connection."""

    def __init__(self, port, timeout=20):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = _Reader(self.sock)

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def request(self, method="GET", path="/", headers=(), body=None, host="example.com"):
        lines = ["%s %s HTTP/1.1" % (method, path)]
        if host is not None:
            lines.append("host: %s" % (host,))
        for n, v in headers:
            lines.append("%s: %s" % (n, v))
        if body is not None:
            lines.append("content-length: %d" % (len(body),))
        self.send("\r\n".join(lines).encode() + b"\r\n\r\n" + (body or b""))
        return self.read(head=method == "HEAD")

    def read(self, head=False, sink=None):
        line, headers = parseHead(self.reader.readHead())
        _, status, reason = (line.split(" ", 2) + [""])[:3]
        lower = dict(headers)
        body = b""
        parts = []
        out = sink if sink is not None else parts.append
        status = int(status)
        if head or status in (204, 304) or 100 <= status < 200:
            pass
        elif lower.get("transfer-encoding") == "chunked":
            self.reader.readChunked(out)
        elif "content-length" in lower:
            self.reader.readExactly(int(lower["content-length"]), out)
        else:
            out(self.reader.readRest())
        body = b"".join(parts)
        return Response(status, reason, headers, body)

    def isClosed(self, timeout=2.0):
        """Whether the server closed the connection (EOF) within C{timeout}."""
        if self.reader.buf:
            return False
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except socket.timeout:
            return False
        except OSError:
            return True


# -- configs -------------------------------------------------------------------

_API_HOST = """
- name: api
  domains: ["api.example.com", "api.example.com:*"]
  routes:
  - match: {prefix: "/"}
    route: {cluster: origin, prefix_rewrite: "/echo/api/", host_rewrite_literal: api.internal}
"""

#: The catch-all virtual host's routes after the ones a test adds.
_ROUTES = """
- match: {prefix: "/direct"}
  direct_response: {status: 200, body: {inline_string: "hello\\n"}}
- match: {path: "/old"}
  redirect: {path_redirect: "/new"}
- match: {prefix: "/secure"}
  redirect: {https_redirect: true, response_code: FOUND}
- match: {prefix: "/dead/"}
  route: {cluster: dead}
- match: {prefix: "/deadretry/"}
  route: {cluster: dead, retry_policy: {retry_on: connect-failure, num_retries: 2}}
- match: {prefix: "/empty/"}
  route: {cluster: empty}
- match: {prefix: "/byheader/"}
  route: {cluster_header: x-cluster}
- match: {prefix: "/timeout/"}
  route: {cluster: origin, timeout: 1s}
- match: {prefix: "/retry/"}
  route:
    cluster: origin
    retry_policy: {retry_on: 5xx, num_retries: 2, retry_back_off: {base_interval: 0.01s}}
- match: {prefix: "/notimeout/"}
  route: {cluster: origin, timeout: 0s}
- match: {prefix: "/pertry/"}
  route:
    cluster: origin
    timeout: 5s
    retry_policy: {retry_on: 5xx, num_retries: 1, per_try_timeout: 0.5s}
- match: {prefix: "/o/"}
  route: {cluster: origin}
"""


def httpConfig(port, adminPort, originPort, deadPort, hcm="", routes="", router=True,
               accessLogPath=None):
    """
    A bootstrap in the style of C{09-routes-retries-timeouts.yaml}: one HTTP
    listener, an origin cluster, a cluster nothing listens on, and one with
    no hosts. C{hcm} (connection manager fields) and C{routes} are YAML
    fragments; C{routes} come before the built-in routes. No router if
    C{router} is false (C{http_filters: []}).
    """
    hcmFields = ["codec_type: AUTO", hcm]
    if accessLogPath is not None:
        hcmFields.append("""
            access_log:
            - name: envoy.access_loggers.file
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
                path: %s
            """ % (accessLogPath,))
    catchAll = '- name: catch_all\n  domains: ["*"]\n  routes:\n' + block(
        _ROUTES if not routes else block(routes, 0) + block(_ROUTES, 0), 2)
    return bootstrap(
        listeners=[httpListener("front", port, statPrefix="front_http", hcm=hcmFields,
                                routeConfig="name: front_routes",
                                virtualHosts=[_API_HOST, catchAll],
                                router="" if router else False)],
        clusters=[cluster("origin", originPort, "type: STATIC"),
                  cluster("dead", deadPort, "type: STATIC"),
                  "- name: empty\n  connect_timeout: 1s\n  type: STATIC\n"
                  "  load_assignment: {cluster_name: empty}\n"],
        admin=adminPort)


def _waitPortTx(envoy, port):
    envoy.waitPort(port)


class _Deployment:
    """An origin, a dead port, and a proxy (txenvoy or Envoy) in front."""

    def __init__(self, real, hcm="", routes="", router=True, args=(), accessLog=False):
        self.origin = Origin()
        self.port = freePort()
        self.adminPort = freePort()
        self._dead = DeadPort()
        self.deadPort = self._dead.port
        self.accessLogPath = None
        if accessLog:
            self.accessLogPath = os.path.join(tempfile.mkdtemp(prefix="txenvoy-log-"),
                                              "access.log")
        config = httpConfig(self.port, self.adminPort, self.origin.port, self.deadPort,
                            hcm=hcm, routes=routes, router=router,
                            accessLogPath=self.accessLogPath)
        try:
            if real:
                self.proxy = RealEnvoy(config)
            else:
                self.proxy = Envoy(config, args=("--concurrency", "1") + tuple(args),
                                   adminPort=self.adminPort)
            self.proxy.waitPort(self.port)
        except BaseException:
            self.origin.stop()
            self._dead.close()
            raise

    def client(self):
        return Client(self.port)

    def request(self, *args, **kwargs):
        c = self.client()
        try:
            return c.request(*args, **kwargs)
        finally:
            c.close()

    def stop(self):
        try:
            self.proxy.stop()
        finally:
            self.origin.stop()
            self._dead.close()


UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
CONNECT_FAILURE = (b"upstream connect error or disconnect/reset before headers. "
                   b"reset reason: remote connection failure")


class ProxyTests(SharedFixture, SynchronousTestCase):
    """
    The HTTP/1.1 proxy through a real C{twistd -n envoy}, one process for
    the whole class.
    """

    @classmethod
    def startFixture(cls):
        cls.d = _Deployment(False, accessLog=True)

    @classmethod
    def stopFixture(cls):
        cls.d.stop()

    def seen(self, response):
        """The request as the origin saw it: (request line parts, headers dict)."""
        echo = response.json()
        return echo, dict(echo["headers"])

    def test_getIsProxied(self):
        """
        Envoy 1.40 adds x-forwarded-proto, x-request-id (a UUID 4) and
        x-envoy-expected-rq-timeout-ms (the 15 s default route timeout) on
        the way up; overwrites server, keeps the upstream's date and adds
        x-envoy-upstream-service-time on the way down.
        """
        r = self.d.request("GET", "/o/thing?x=1", headers=[("user-agent", "t/1")])
        self.assertEqual(r.status, 200)
        echo, seen = self.seen(r)
        self.assertEqual((echo["method"], echo["target"], echo["version"]),
                         ("GET", "/o/thing?x=1", "HTTP/1.1"))
        self.assertEqual(seen["host"], "example.com")
        self.assertEqual(seen["x-forwarded-proto"], "http")
        self.assertEqual(seen["x-envoy-expected-rq-timeout-ms"], "15000")
        self.assertTrue(UUID.match(seen["x-request-id"]), seen["x-request-id"])
        self.assertNotIn("x-forwarded-for", seen)
        self.assertEqual(r.header("server"), "envoy")
        self.assertEqual(r.header("date"), FIXED_DATE.decode())
        self.assertTrue(r.header("x-envoy-upstream-service-time").isdigit())
        self.assertEqual(r.names(), ["date", "server", "content-type", "content-length",
                                     "x-envoy-upstream-service-time"])

    def test_postBody(self):
        body = b"x" * 100000
        r = self.d.request("POST", "/o/sum", body=body)
        self.assertEqual((r.status, r.body), (200, b"100000"))

    def test_keepAliveReuse(self):
        """Several requests on one downstream connection use one upstream connection."""
        c = self.d.client()
        self.addCleanup(c.close)
        connections = set()
        for i in range(4):
            r = c.request("GET", "/o/echo/%d" % (i,))
            self.assertEqual(r.status, 200)
            connections.add(r.json()["connection"])
        self.assertEqual(len(connections), 1)
        # Another client reuses the same idle upstream connection too.
        r = self.d.request("GET", "/o/echo/again")
        self.assertEqual(r.json()["connection"], connections.pop())

    def test_pipelined(self):
        """Pipelined requests are answered in order."""
        c = self.d.client()
        self.addCleanup(c.close)
        c.send(b"".join(b"GET /o/echo/%d HTTP/1.1\r\nhost: a\r\n\r\n" % (i,) for i in range(3)))
        for i in range(3):
            r = c.read()
            self.assertEqual(r.json()["target"], "/o/echo/%d" % (i,))

    def test_noRoute(self):
        """Envoy 1.40: 404, empty body, no content-type."""
        r = self.d.request("GET", "/nowhere")
        self.assertEqual((r.status, r.body), (404, b""))
        self.assertEqual(r.names(), ["date", "server", "content-length"])
        self.assertEqual(r.header("content-length"), "0")

    def test_directResponse(self):
        r = self.d.request("GET", "/direct")
        self.assertEqual((r.status, r.body), (200, b"hello\n"))
        self.assertEqual(r.names(), ["content-length", "content-type", "date", "server"])
        self.assertEqual(r.header("content-type"), "text/plain")

    def test_redirect(self):
        r = self.d.request("GET", "/old?a=b", host="www.example.org")
        self.assertEqual((r.status, r.body), (301, b""))
        self.assertEqual(r.header("location"), "http://www.example.org/new?a=b")
        self.assertEqual(r.names(), ["location", "date", "server", "content-length"])
        r = self.d.request("GET", "/secure/x", host="www.example.org:8080")
        self.assertEqual(r.status, 302)
        self.assertEqual(r.header("location"), "https://www.example.org:8080/secure/x")

    def test_noHealthyUpstream(self):
        r = self.d.request("GET", "/empty/x")
        self.assertEqual((r.status, r.body), (503, b"no healthy upstream"))

    def test_connectFailure(self):
        """Envoy 1.40's body, byte for byte."""
        r = self.d.request("GET", "/dead/x")
        self.assertEqual((r.status, r.body), (503, CONNECT_FAILURE))
        self.assertEqual(r.header("content-type"), "text/plain")
        self.assertEqual(r.header("content-length"), "98")

    def test_connectFailureRetried(self):
        r = self.d.request("GET", "/deadretry/x")
        self.assertEqual(r.status, 503)
        self.assertEqual(r.body, b"upstream connect error or disconnect/reset before headers. "
                                 b"retried and the latest reset reason: remote connection failure")

    def test_unknownCluster(self):
        """Envoy 1.40: 503 with an empty body (flag NC)."""
        r = self.d.request("GET", "/byheader/x", headers=[("x-cluster", "nosuch")])
        self.assertEqual((r.status, r.body), (503, b""))

    def test_routeTimeout(self):
        started = time.time()
        r = self.d.request("GET", "/timeout/stall")
        self.assertEqual((r.status, r.body), (504, b"upstream request timeout"))
        self.assertLess(time.time() - started, 5)

    def test_perTryTimeout(self):
        """Envoy 1.40: per-try timeouts use the retries, then 504 (URX,UT)."""
        key = "pt%f" % (time.time(),)
        r = self.d.request("GET", "/pertry/count/%s/stall" % (key,))
        self.assertEqual((r.status, r.body), (504, b"upstream request timeout"))
        self.assertEqual(self.d.origin.counts[key], 2)

    def test_retriesOn503(self):
        """Envoy 1.40: after num_retries the upstream's last 503 is passed on."""
        key = "r%f" % (time.time(),)
        r = self.d.request("GET", "/retry/count/%s/status/503" % (key,))
        self.assertEqual((r.status, r.body), (503, b"status 503"))
        self.assertEqual(self.d.origin.counts[key], 3)

    def test_resetBeforeHeaders(self):
        r = self.d.request("GET", "/o/reset")
        self.assertEqual((r.status, r.body), (503, b"upstream connect error or disconnect/reset "
                                                   b"before headers. reset reason: connection "
                                                   b"termination"))

    def test_upstreamProtocolError(self):
        r = self.d.request("GET", "/o/garbage")
        self.assertEqual((r.status, r.body), (502, b"upstream connect error or disconnect/reset "
                                                   b"before headers. reset reason: protocol "
                                                   b"error"))

    def test_resetAfterHeaders(self):
        """The host closes mid-body: the client gets what came, then a close."""
        c = self.d.client()
        self.addCleanup(c.close)
        c.send(b"GET /o/partial HTTP/1.1\r\nhost: a\r\n\r\n")
        head = c.reader.readHead()
        self.assertIn(b"content-length: 100000", head)
        rest = c.reader.readRest()
        self.assertEqual(rest, b"p" * 1000)

    def test_http10(self):
        """Envoy 1.40 refuses HTTP/1.0 by default: 426 and a close."""
        c = self.d.client()
        self.addCleanup(c.close)
        c.send(b"GET /o/x HTTP/1.0\r\n\r\n")
        r = c.read()
        self.assertEqual((r.status, r.body), (426, b"Upgrade Required"))
        self.assertTrue(c.isClosed())

    def test_expectContinue(self):
        """Envoy answers 100 Continue itself and does not forward Expect."""
        c = self.d.client()
        self.addCleanup(c.close)
        c.send(b"POST /o/echo HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n"
               b"expect: 100-continue\r\n\r\n")
        r = c.read()
        self.assertEqual(r.status, 100)
        c.send(b"abc")
        r = c.read()
        self.assertEqual(r.status, 200)
        echo, seen = self.seen(r)
        self.assertNotIn("expect", seen)
        self.assertEqual(echo["bodyLength"], 3)

    def test_rewrites(self):
        r = self.d.request("GET", "/v1/x?y", host="api.example.com")
        echo, seen = self.seen(r)
        self.assertEqual(echo["target"], "/echo/api/v1/x?y")
        self.assertEqual(seen["host"], "api.internal")
        self.assertEqual(seen["x-envoy-original-path"], "/v1/x?y")

    def test_download20MiB(self):
        """A 20 MiB response streams through (never whole in memory)."""
        size = 20 * 1024 * 1024
        c = self.d.client()
        self.addCleanup(c.close)
        c.send(b"GET /o/big/%d HTTP/1.1\r\nhost: a\r\n\r\n" % (size,))
        got = [0]

        def sink(piece):
            got[0] += len(piece)

        r = c.read(sink=sink)
        self.assertEqual((r.status, got[0]), (200, size))

    def test_upload20MiB(self):
        size = 20 * 1024 * 1024
        c = self.d.client()
        self.addCleanup(c.close)
        c.send(b"POST /o/sum HTTP/1.1\r\nhost: a\r\ncontent-length: %d\r\n\r\n" % (size,))
        piece = b"u" * (256 * 1024)
        for _ in range(size // len(piece)):
            c.send(piece)
        r = c.read()
        self.assertEqual((r.status, r.body), (200, b"%d" % (size,)))

    def rss(self):
        with open("/proc/%d/status" % (self.d.proxy.proc.pid,)) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024

    def test_uploadToSlowOriginBounded(self):
        """
        Back-pressure: a fast client uploading to a slow origin is read no
        faster than the origin reads, so the body never piles up in memory.
        """
        size = 128 * 1024 * 1024
        before = self.rss()
        c = self.d.client()
        self.addCleanup(c.close)
        c.send(b"POST /o/slowsum HTTP/1.1\r\nhost: a\r\ncontent-length: %d\r\n\r\n" % (size,))
        piece = b"u" * (256 * 1024)
        peak = before
        for i in range(size // len(piece)):
            c.send(piece)
            if i % 32 == 0:
                peak = max(peak, self.rss())
        r = c.read()
        self.assertEqual((r.status, r.body), (200, b"%d" % (size,)))
        self.assertLess(peak - before, 48 * 1024 * 1024)

    def test_downloadToSlowClientBounded(self):
        """Back-pressure: a slow client reads a fast origin's 128 MiB through little memory."""
        size = 128 * 1024 * 1024
        before = self.rss()
        c = self.d.client()
        self.addCleanup(c.close)
        c.send(b"GET /o/big/%d HTTP/1.1\r\nhost: a\r\n\r\n" % (size,))
        got = [0, before]

        def sink(piece):
            got[0] += len(piece)
            if got[0] % (4 * 1024 * 1024) < len(piece):
                got[1] = max(got[1], self.rss())
                time.sleep(0.05)

        r = c.read(sink=sink)
        self.assertEqual((r.status, got[0]), (200, size))
        self.assertLess(got[1] - before, 48 * 1024 * 1024)

    def test_websocketWithoutUpgradeConfig(self):
        """Envoy 1.40: an upgrade with no upgrade_configs gets 403 and a close."""
        c = self.d.client()
        self.addCleanup(c.close)
        c.send(b"GET /o/ws HTTP/1.1\r\nhost: a\r\nupgrade: websocket\r\n"
               b"connection: upgrade\r\n\r\n")
        r = c.read()
        self.assertEqual((r.status, r.body), (403, b""))
        self.assertEqual(r.names(), ["date", "server", "connection", "content-length"])
        self.assertTrue(c.isClosed())

    def test_stats(self):
        self.d.request("GET", "/direct")
        self.d.request("GET", "/nowhere")
        self.d.request("GET", "/o/stats")
        stats = self.d.proxy.stats()
        for name in ("http.front_http.downstream_rq_total", "http.front_http.downstream_rq_2xx",
                     "http.front_http.downstream_rq_4xx", "http.front_http.rq_total",
                     "http.front_http.no_route", "http.front_http.rq_direct_response",
                     "http.front_http.downstream_cx_total",
                     "http.front_http.downstream_rq_completed",
                     "http.front_http.downstream_cx_rx_bytes_total",
                     "cluster.origin.upstream_rq_total", "cluster.origin.upstream_rq_200",
                     "cluster.origin.upstream_rq_2xx", "cluster.origin.upstream_rq_completed",
                     "cluster.origin.upstream_cx_http1_total"):
            self.assertGreater(stats.get(name, 0), 0, name)
        self.assertIn("http.front_http.downstream_rq_active", stats)
        self.assertIn("http.front_http.downstream_cx_active", stats)


class AccessLogTests(SynchronousTestCase):
    """Envoy's default access log line for proxied and local responses."""

    def test_defaultFormat(self):
        d = _Deployment(False, accessLog=True)
        try:
            d.request("GET", "/o/logged", headers=[("user-agent", "t/1")])
            d.request("GET", "/nowhere")
            d.request("POST", "/dead/x", body=b"abc")
        finally:
            d.stop()
        with open(d.accessLogPath) as f:
            lines = f.read().splitlines()
        self.assertEqual(len(lines), 3, lines)
        pattern = (r'^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] "GET /o/logged HTTP/1.1" 200 - '
                   r'0 \d+ \d+ \d+ "-" "t/1" "[0-9a-f-]{36}" "example.com" '
                   r'"127.0.0.1:%d"$' % (d.origin.port,))
        self.assertTrue(re.match(pattern, lines[0]), lines[0])
        self.assertTrue(re.match(r'^\[.*\] "GET /nowhere HTTP/1.1" 404 NR 0 0 \d+ - "-" "-" '
                                 r'"[0-9a-f-]{36}" "example.com" "-"$', lines[1]), lines[1])
        self.assertTrue(re.match(r'^\[.*\] "POST /dead/x HTTP/1.1" 503 UF 3 98 \d+ - "-" "-" '
                                 r'"[0-9a-f-]{36}" "example.com" "127.0.0.1:%d"$'
                                 % (d.deadPort,), lines[2]), lines[2])


WEBSOCKET_HCM = """          upgrade_configs: [{upgrade_type: websocket}]"""


class WebSocketTests(SynchronousTestCase):
    """upgrade_configs: after a 101 both sides carry raw bytes."""

    def test_rawBytesBothWays(self):
        d = _Deployment(False, hcm=WEBSOCKET_HCM)
        self.addCleanup(d.stop)
        c = d.client()
        self.addCleanup(c.close)
        c.send(b"GET /o/ws HTTP/1.1\r\nhost: a\r\nupgrade: websocket\r\n"
               b"connection: upgrade\r\n\r\nearly")
        r = c.read()
        self.assertEqual(r.status, 101)
        self.assertEqual(r.header("upgrade"), "websocket")
        self.assertEqual(r.names(), ["upgrade", "connection", "date", "server"])
        self.assertEqual(c.reader.readExactly(5), b"early")
        for i in range(3):
            message = b"\x81\x05hello%d" % (i,)
            c.send(message)
            self.assertEqual(c.reader.readExactly(len(message)), message)


class DrainTests(SynchronousTestCase):
    """SIGTERM: the next response on a kept-alive connection says connection: close."""

    def test_sigtermConnectionClose(self):
        import signal
        d = _Deployment(False, args=("--drain-time-s", "10", "--drain-strategy", "immediate"))
        self.addCleanup(d.stop)
        c = d.client()
        self.addCleanup(c.close)
        c.send(b"GET /o/slow HTTP/1.1\r\nhost: a\r\n\r\n")
        r = c.read()
        self.assertEqual(r.header("connection"), None)
        c.send(b"GET /timeout/stall HTTP/1.1\r\nhost: a\r\n\r\n")
        time.sleep(0.3)
        d.proxy.proc.send_signal(signal.SIGTERM)
        r = c.read()
        self.assertEqual(r.status, 504)
        self.assertEqual(r.header("connection"), "close")
        self.assertTrue(c.isClosed())
        self.assertEqual(d.proxy.proc.wait(15), 0)


class EmptyFilterChainTests(SynchronousTestCase):
    """Envoy 1.40 accepts http_filters: []; requests then wait for stream_idle_timeout."""

    def test_streamTimeout(self):
        d = _Deployment(False, hcm="stream_idle_timeout: 1s", router=False)
        self.addCleanup(d.stop)
        started = time.time()
        r = d.request("GET", "/o/x")
        self.assertEqual((r.status, r.body), (504, b"stream timeout"))
        self.assertGreater(time.time() - started, 0.9)


# -- the same requests to Envoy 1.40 and to txenvoy ---------------------------------

_VOLATILE = {"date", "x-envoy-upstream-service-time"}


def _normalizeEcho(body):
    echo = json.loads(body)
    echo.pop("connection", None)
    echo.pop("seq", None)
    echo["headers"] = [[n, "<uuid>" if UUID.match(v) else v] for n, v in echo["headers"]]
    return echo


def exchange(port, raw, followUp=None, expectClose=False, responses=1):
    """
    Send C{raw} on a new connection and read C{responses} responses (a
    C{100 Continue} counts as one); then C{followUp} bytes, if any, and
    what comes back for them.

    @return: a comparable summary.
    """
    c = Client(port)
    try:
        c.send(raw)
        out = []
        method = raw.split(b" ", 1)[0]
        for _ in range(responses):
            r = c.read(head=method == b"HEAD")
            headers = []
            echo = None
            if r.header("content-type") == "application/json" and r.body:
                echo = _normalizeEcho(r.body)
            for n, v in r.headers:
                if n in _VOLATILE and v != FIXED_DATE.decode():
                    v = "<volatile>"
                elif n == "x-request-id" and UUID.match(v):
                    v = "<uuid>"
                elif n == "content-length" and echo is not None:
                    v = "<echo>"
                headers.append((n, v))
            out.append({"status": r.status, "reason": r.reason, "headers": headers,
                        "body": echo if echo is not None else r.body.decode("latin-1")})
            if r.status == 101:
                break
        if followUp is not None and out[-1]["status"] == 101:
            c.send(followUp)
            time.sleep(0.3)
            c.sock.settimeout(1)
            data = b""
            try:
                while True:
                    piece = c.sock.recv(65536)
                    if not piece:
                        break
                    data += piece
                    if len(data) >= len(followUp) + len(c.reader.buf):
                        break
            except socket.timeout:
                pass
            out.append({"raw": (c.reader.buf + data).decode("latin-1")})
        if expectClose:
            out.append({"closed": c.isClosed(3)})
        return out
    finally:
        c.close()


COMPARED_HCM_A = ""

COMPARED_HCM_B = """          use_remote_address: true
          via: edge-proxy
          server_name: txenvoy-front
          server_header_transformation: APPEND_IF_ABSENT
          upgrade_configs: [{upgrade_type: websocket}]
          local_reply_config:
            mappers:
            - filter: {status_code_filter: {comparison: {op: EQ, value: {default_value: 404, runtime_key: k}}}}
              status_code: 418
              body: {inline_string: "not here"}
            body_format:
              text_format: "%LOCAL_REPLY_BODY% (%RESPONSE_CODE%)\\n\""""

COMPARED_ROUTES = """              - match: {prefix: "/hdr/"}
                route: {cluster: origin}
                request_headers_to_add:
                - header: {key: x-added, value: "1"}
                response_headers_to_add:
                - header: {key: x-resp-added, value: "yes"}
                response_headers_to_remove: [x-gone]"""

# name -> (raw request, options)
COMPARED = {
    "get": (b"GET /o/echo?q=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8\r\n"
            b"Accept: */*\r\n\r\n", {}),
    "envoyHeaders": (
        b"GET /o/echo HTTP/1.1\r\nhost: a\r\nx-envoy-retry-on: 5xx\r\nx-envoy-max-retries: 3\r\n"
        b"x-envoy-upstream-rq-timeout-ms: 100\r\nx-envoy-foo: 1\r\nx-forwarded-for: 1.2.3.4\r\n"
        b"x-request-id: abc\r\nte: gzip, trailers\r\nkeep-alive: 1\r\nproxy-connection: x\r\n"
        b"x-envoy-internal: true\r\nx-envoy-original-path: /zz\r\n"
        b"x-envoy-decorator-operation: op\r\nx-envoy-expected-rq-timeout-ms: 5\r\n"
        b"x-envoy-external-address: 5.6.7.8\r\nx-forwarded-client-cert: abc\r\n\r\n", {}),
    "forwardedProto": (b"GET /o/echo HTTP/1.1\r\nhost: a\r\nx-forwarded-proto: https\r\n"
                       b"via: other\r\nx-request-id: \r\n\r\n", {}),
    "nominated": (b"GET /o/echo HTTP/1.1\r\nhost: a\r\nconnection: keep-alive, x-secret\r\n"
                  b"x-secret: 1\r\n\r\n", {}),
    "bare": (b"GET /o/bare HTTP/1.1\r\nhost: a\r\n\r\n", {}),
    "noRoute": (b"GET /nowhere HTTP/1.1\r\nhost: a\r\n\r\n", {}),
    "direct": (b"GET /direct HTTP/1.1\r\nhost: a\r\n\r\n", {}),
    "directHead": (b"HEAD /direct HTTP/1.1\r\nhost: a\r\n\r\n", {}),
    "redirect": (b"GET /old?a=b HTTP/1.1\r\nhost: www.example.org\r\n\r\n", {}),
    "httpsRedirect": (b"GET /secure/x HTTP/1.1\r\nhost: www.example.org:8080\r\n\r\n", {}),
    "dead": (b"GET /dead/x HTTP/1.1\r\nhost: a\r\n\r\n", {}),
    "deadRetried": (b"GET /deadretry/x HTTP/1.1\r\nhost: a\r\n\r\n", {}),
    "empty": (b"GET /empty/x HTTP/1.1\r\nhost: a\r\n\r\n", {}),
    "noCluster": (b"GET /byheader/x HTTP/1.1\r\nhost: a\r\nx-cluster: nosuch\r\n\r\n", {}),
    "noClusterHeader": (b"GET /byheader/x HTTP/1.1\r\nhost: a\r\n\r\n", {}),
    "retried503": (b"GET /retry/count/r/status/503 HTTP/1.1\r\nhost: a\r\n\r\n", {}),
    "retriedReset": (b"GET /retry/count/rr/reset HTTP/1.1\r\nhost: a\r\n\r\n", {}),
    "reset": (b"GET /o/reset HTTP/1.1\r\nhost: a\r\n\r\n", {}),
    "garbage": (b"GET /o/garbage HTTP/1.1\r\nhost: a\r\n\r\n", {}),
    "post": (b"POST /o/echo HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n"
             b"content-type: text/plain\r\n\r\nhello", {}),
    "postChunked": (b"POST /o/echo HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n"
                    b"5\r\nhello\r\n0\r\n\r\n", {}),
    "head": (b"HEAD /o/echo HTTP/1.1\r\nhost: a\r\n\r\n", {}),
    "rewrite": (b"GET /v1/x?y HTTP/1.1\r\nhost: api.example.com\r\n\r\n", {}),
    "continue": (b"POST /o/echo HTTP/1.1\r\nhost: a\r\ncontent-length: 2\r\n"
                 b"expect: 100-continue\r\n\r\nhi", {"responses": 2}),
    "noTimeout": (b"GET /notimeout/echo HTTP/1.1\r\nhost: a\r\n\r\n", {}),
    "perTryHeader": (b"GET /pertry/echo HTTP/1.1\r\nhost: a\r\n\r\n", {}),
    "upstreamClose": (b"GET /o/close HTTP/1.1\r\nhost: a\r\n\r\n", {}),
    "clientClose": (b"GET /o/echo HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
                    {"expectClose": True}),
    "eof": (b"GET /o/eof HTTP/1.1\r\nhost: a\r\n\r\n", {}),
    "http10": (b"GET /o/echo HTTP/1.0\r\n\r\n", {"expectClose": True}),
    "missingHost": (b"GET /o/echo HTTP/1.1\r\n\r\n", {"expectClose": True}),
    "headerMutations": (b"GET /hdr/echo HTTP/1.1\r\nhost: a\r\n\r\n", {}),
    "timeout": (b"GET /timeout/stall HTTP/1.1\r\nhost: a\r\n\r\n", {}),
    "websocket": (b"GET /o/ws HTTP/1.1\r\nhost: a\r\nupgrade: websocket\r\n"
                  b"connection: upgrade\r\nsec-websocket-key: k\r\n\r\n",
                  {"followUp": b"\x81\x02hi"}),
}


class SideBySide(SharedFixture):
    """
    Envoy 1.40 (C{cls.envoy}) and txenvoy (C{cls.txenvoy}) started once per
    class with the same config: the class's C{hcm} settings and C{routes}.
    """

    hcm = ""
    routes = ""

    @classmethod
    def startFixture(cls):
        cls.envoy = _Deployment(True, hcm=cls.hcm, routes=cls.routes)
        try:
            cls.txenvoy = _Deployment(False, hcm=cls.hcm, routes=cls.routes)
        except BaseException:
            cls.envoy.stop()
            raise

    @classmethod
    def stopFixture(cls):
        try:
            cls.envoy.stop()
        finally:
            cls.txenvoy.stop()


class _Comparison(SideBySide):
    """Runs every request of L{COMPARED} against Envoy and txenvoy, same config."""

    routes = COMPARED_ROUTES

    def compare(self, name):
        raw, options = COMPARED[name]
        expected = exchange(self.envoy.port, raw, **options)
        got = exchange(self.txenvoy.port, raw, **options)
        self.assertEqual(got, expected)


def _addComparisons(cls):
    for name in COMPARED:
        def test(self, name=name):
            self.compare(name)
        test.__name__ = "test_" + name
        test.__doc__ = "Envoy 1.40 and txenvoy answer %r alike." % (name,)
        setattr(cls, test.__name__, test)
    return cls


@_addComparisons
class CompareDefaultsTests(_Comparison, SynchronousTestCase):
    """Real Envoy and txenvoy, the same config, Envoy's defaults."""

    hcm = COMPARED_HCM_A


@_addComparisons
class CompareEdgeTests(_Comparison, SynchronousTestCase):
    """
    Real Envoy and txenvoy as an edge proxy: use_remote_address, via,
    server_name with APPEND_IF_ABSENT, a local reply mapper and format,
    WebSocket upgrades.
    """

    hcm = COMPARED_HCM_B


COMPARED_TIMEOUTS = {
    # Envoy 1.40: a partial head gets 408 "stream timeout" and a close.
    "partialHead": (b"GET /o/echo HTTP/1.1\r\nhost: a\r\n", {"expectClose": True}),
    # ... and so does a request whose body stops coming.
    "partialBody": (b"POST /o/echo HTTP/1.1\r\nhost: a\r\ncontent-length: 10\r\n\r\nhello",
                    {"expectClose": True}),
    # ... but a complete request whose response never comes gets 504.
    "stalledUpstream": (b"GET /notimeout/stall HTTP/1.1\r\nhost: a\r\n\r\n", {}),
}


class CompareTimeoutsTests(_Comparison, SynchronousTestCase):
    """Real Envoy and txenvoy with stream_idle_timeout: 1s."""

    hcm = "          stream_idle_timeout: 1s"

    def compare(self, name):
        raw, options = COMPARED_TIMEOUTS[name]
        expected = exchange(self.envoy.port, raw, **options)
        got = exchange(self.txenvoy.port, raw, **options)
        self.assertEqual(got, expected)

    def test_partialHead(self):
        self.compare("partialHead")

    def test_partialBody(self):
        self.compare("partialBody")

    def test_stalledUpstream(self):
        self.compare("stalledUpstream")


_LOG_VOLATILE = [
    (re.compile(r"^\[[^\]]+\]"), "[time]"),
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<uuid>"),
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:<port>"),
]


def _normalizeLogLine(line):
    for pattern, replacement in _LOG_VOLATILE:
        line = pattern.sub(replacement, line)
    fields = line.split(" ")
    # [time] "METHOD PATH PROTOCOL" CODE FLAGS RX TX DURATION SERVICE-TIME ...
    fields[8] = "<ms>"
    if fields[9] != "-":
        fields[9] = "<ms>"
    return " ".join(fields)


class CompareAccessLogTests(SynchronousTestCase):
    """
    Envoy's default access log line, from real Envoy and from txenvoy, for
    the same requests: codes, flags and byte counts must agree.
    """

    NAMES = ("missingHost", "get", "post", "noRoute", "direct", "directHead", "redirect", "dead", "deadRetried",
             "empty", "noCluster", "retried503", "retriedReset", "reset", "garbage", "http10",
             "eof", "head")

    def test_sameLines(self):
        envoy = _Deployment(True, accessLog=True, routes=COMPARED_ROUTES)
        try:
            txenvoy = _Deployment(False, accessLog=True, routes=COMPARED_ROUTES)
        except BaseException:
            envoy.stop()
            raise
        try:
            for name in self.NAMES:
                raw, options = COMPARED[name]
                exchange(envoy.port, raw, **options)
                exchange(txenvoy.port, raw, **options)
        finally:
            envoy.stop()
            txenvoy.stop()
        lines = []
        for d in (envoy, txenvoy):
            with open(d.accessLogPath) as f:
                lines.append([_normalizeLogLine(line) for line in f.read().splitlines()])
        self.assertEqual(len(lines[0]), len(self.NAMES))
        self.assertEqual(lines[1], lines[0])
