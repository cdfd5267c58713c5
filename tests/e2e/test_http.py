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
import subprocess
import sys
import tempfile
import threading
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import Envoy, Upstream, freePort

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
                       "close", "ws", "partial", "echo", "bare", "eof"])


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
     - C{/close}: answers with C{connection: close} and closes;
     - C{/ws}: an upgrade: 101, then echoes raw bytes;
     - C{/partial}: 200 with content-length 100000, 1000 bytes, then
       closes;
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

        if lower.get("transfer-encoding", "").lower() == "chunked":
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
        if path.startswith("/sum"):
            body = b"%d" % (size[0],)
            conn.sendall(b"HTTP/1.1 200 OK\r\n%scontent-length: %d\r\n\r\n%s"
                         % (base, len(body), body))
            return True
        if path.startswith("/partial"):
            conn.sendall(b"HTTP/1.1 200 OK\r\n%scontent-length: 100000\r\n\r\n%s"
                         % (base, b"p" * 1000))
            time.sleep(0.2)
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
