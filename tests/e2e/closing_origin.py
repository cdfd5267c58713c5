"""
The idle-close race, as a reproducible scenario: an origin on 127.0.0.1
that closes each keep-alive connection a few milliseconds after its
response, and a client that sends its next request through the proxy at
random moments around that close.

A proxy that hands out the closing connection either answers 503
(C{connection termination}) or, worse, closes the client's connection
without a response. L{runRace} counts both; L{raceConfig} is the bootstrap,
the same for txenvoy and real Envoy. Used by
C{tests/e2e/test_pool_race.py} and C{bench/pool_race.py}.
"""

import random
import socket
import threading
import time

from tests.e2e.configs import bootstrap, cluster, httpListener
from tests.e2e.harness import Upstream

RESPONSE = (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n"
            b"\r\nok")


class ClosingOrigin:
    """
    An HTTP/1.1 origin that answers each request with C{200 ok} on a
    keep-alive connection, then waits a random C{0..maxIdle} seconds for
    the next request on it and closes when none came, or after
    C{perConnection} requests.

    @ivar requests: requests answered.
    @ivar connections: connections accepted.
    """

    def __init__(self, maxIdle=0.003, perConnection=1, seed=1):
        self.maxIdle = maxIdle
        self.perConnection = perConnection
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.requests = 0
        self.server = Upstream(self._handle)
        self.port = self.server.port

    @property
    def connections(self):
        return self.server.accepted

    def _handle(self, conn):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        served = 0
        while True:
            while b"\r\n\r\n" not in buf:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            head, _, buf = buf.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(buf) < length:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            buf = buf[length:]
            conn.sendall(RESPONSE)
            served += 1
            with self.lock:
                self.requests += 1
                idle = self.rng.uniform(0, self.maxIdle)
            if served >= self.perConnection or buf:
                time.sleep(idle)
                return
            conn.settimeout(idle)
            try:
                data = conn.recv(65536)
            except socket.timeout:
                return
            finally:
                conn.settimeout(30)
            if not data:
                return
            buf += data

    def stop(self):
        self.server.stop()


def raceConfig(port, adminPort, originPort, idleTimeout=None):
    """One listener routing everything to the origin; no retries."""
    options = ""
    if idleTimeout is not None:
        options = """
            typed_extension_protocol_options:
              envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
                "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
                common_http_protocol_options: {idle_timeout: %s}
                explicit_http_config: {http_protocol_options: {}}
            """ % (idleTimeout,)
    return bootstrap([httpListener("front", port, statPrefix="race")],
                     [cluster("origin", originPort, ["type: STATIC", options])], admin=adminPort)


class RaceResult:
    """
    What the client saw: C{codes} (status -> count) and C{silent} (the
    proxy closed the connection with no response).
    """

    def __init__(self):
        self.codes = {}
        self.silent = 0
        self.trials = 0

    def count(self, code):
        self.codes[code] = self.codes.get(code, 0) + 1

    def summary(self):
        parts = ["%d x %d" % (n, code) for code, n in sorted(self.codes.items())]
        parts.append("%d silent close" % (self.silent,))
        return ", ".join(parts)


def _readResponse(sock, buf):
    """
    Read one response with a content-length body.

    @return: C{(status, rest)}, or C{(None, b"")} on EOF before a full
        response.
    """
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            return None, b""
        buf += data
    head, _, buf = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(buf) < length:
        data = sock.recv(65536)
        if not data:
            return None, b""
        buf += data
    return status, buf[length:]


def runRace(port, trials, maxDelay=0.004, seed=2, method=b"GET", timeout=10.0):
    """
    Send C{trials} requests on keep-alive connections to C{port}, each
    after a random pause of C{0..maxDelay} seconds following the previous
    response, so that they land around the origin's idle closes.

    @return: a L{RaceResult}.
    """
    rng = random.Random(seed)
    result = RaceResult()
    body = b"x" * 16 if method in (b"POST", b"PUT") else b""
    request = (b"%s /race HTTP/1.1\r\nhost: race.example\r\n%s\r\n%s"
               % (method, b"content-length: %d\r\n" % (len(body),) if body else b"", body))
    sock = None
    buf = b""
    try:
        for _ in range(trials):
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                buf = b""
            result.trials += 1
            try:
                sock.sendall(request)
                status, buf = _readResponse(sock, buf)
            except (ConnectionError, socket.timeout):
                status = None
            if status is None:
                result.silent += 1
                sock.close()
                sock = None
                continue
            result.count(status)
            if status != 200:
                # Envoy closes nothing after a 503 on keep-alive; start
                # afresh anyway so that one trial cannot leak into the next.
                sock.close()
                sock = None
            time.sleep(rng.uniform(0, maxDelay))
    finally:
        if sock is not None:
            sock.close()
    return result
