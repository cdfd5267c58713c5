"""
Load generators for the benchmark suite.

 - L{runWrk}: wrk, run on its own core, with its output parsed.
 - L{PyHttpLoad}: a small epoll HTTP/1.1 client for machines without wrk
   (keep-alive or a new connection per request, fixed duration or fixed
   count). It is much slower than wrk, so its results say so.
 - L{bulkTransfer}: push N bytes through a TCP proxy to the sink origin and
   wait for the sink's byte count (the half-close carries the end).
 - L{openIdle}: open many idle TCP connections.

Every loop here is bounded in count and in time.
"""

import os
import re
import select
import shutil
import socket
import subprocess
import tempfile
import time

# wrk: stop the (single) thread after a fixed number of responses.
STOP_AFTER_LUA = """
local n = 0
local limit = tonumber(os.getenv("WRK_STOP_AFTER") or "10000")
function response(status, headers, body)
  n = n + 1
  if n >= limit then wrk.thread:stop() end
end
"""

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _seconds(text):
    m = re.match(r"([\d.]+)(us|ms|s|m|h)$", text.strip())
    if not m:
        return None
    return float(m.group(1)) * _UNITS[m.group(2)]


def parseWrk(output):
    """
    Parse wrk's report: requests/s, request count, latency percentiles
    (seconds) and errors.
    """
    out = {"requests": 0, "rps": 0.0, "latency": {}, "errors": 0, "non2xx": 0}
    m = re.search(r"^\s*(\d+) requests in ([\d.]+\w+)", output, re.M)
    if m:
        out["requests"] = int(m.group(1))
        out["duration"] = _seconds(m.group(2))
    m = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    if m:
        out["rps"] = float(m.group(1))
    for pct, value in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", output, re.M):
        out["latency"]["p" + pct] = _seconds(value)
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if m:
        out["errors"] = sum(int(x) for x in m.groups())
        out["socketErrors"] = dict(zip(("connect", "read", "write", "timeout"),
                                       map(int, m.groups())))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if m:
        out["non2xx"] = int(m.group(1))
    return out


def wrkPath():
    """The wrk binary, or None."""
    return shutil.which("wrk")


def runWrk(url, connections=32, duration=5, latency=True, headers=(), stopAfter=None,
           cpus=None, timeout=None):
    """
    Run wrk with one thread; returns L{parseWrk}'s dict (plus the raw
    output). C{stopAfter} ends the run after that many responses (wrk
    still waits out C{duration}, so pick it just long enough).
    """
    cmd = []
    if cpus and shutil.which("taskset"):
        cmd += ["taskset", "-c", cpus]
    cmd += [wrkPath(), "-t1", "-c%d" % (connections,), "-d%ds" % (duration,)]
    if latency:
        cmd.append("--latency")
    for h in headers:
        cmd += ["-H", h]
    env = dict(os.environ)
    script = None
    if stopAfter:
        fd, script = tempfile.mkstemp(suffix=".lua")
        with os.fdopen(fd, "w") as f:
            f.write(STOP_AFTER_LUA)
        cmd += ["-s", script]
        env["WRK_STOP_AFTER"] = str(stopAfter)
    cmd.append(url)
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env,
                           timeout=timeout or duration + 30)
    finally:
        if script:
            os.unlink(script)
    result = parseWrk(p.stdout)
    result["raw"] = p.stdout + p.stderr
    return result


class PyHttpLoad:
    """
    A fallback HTTP/1.1 load generator: C{connections} sockets, one request
    in flight each, on one epoll loop. C{close=True} sends
    C{Connection: close} and reconnects after each response.
    """

    def __init__(self, host, port, path="/", connections=32, close=False):
        self.addr = (host, port)
        closeHeader = "Connection: close\r\n" if close else ""
        self.request = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\n%s\r\n"
                        % (path, host, port, closeHeader)).encode()
        self.connections = connections
        self.close = close

    def run(self, duration=5.0, count=None):
        """Run for C{duration} seconds or until C{count} responses."""
        ep = select.epoll()
        socks = {}
        latencies = []
        errors = 0
        done = 0
        deadline = time.perf_counter() + duration

        def openOne():
            s = socket.socket()
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                s.connect(self.addr)
            except BlockingIOError:
                pass
            socks[s.fileno()] = [s, b"", None, time.perf_counter(), False]
            ep.register(s.fileno(), select.EPOLLOUT)

        def finish(fd):
            ep.unregister(fd)
            socks.pop(fd)[0].close()

        for _ in range(self.connections):
            openOne()
        start = time.perf_counter()
        while time.perf_counter() < deadline and (count is None or done < count):
            for fd, ev in ep.poll(0.1):
                st = socks.get(fd)
                if st is None:
                    continue
                s = st[0]
                if ev & select.EPOLLOUT and not st[4]:
                    try:
                        s.send(self.request)
                    except OSError:
                        errors += 1
                        finish(fd)
                        openOne()
                        continue
                    st[4] = True
                    st[3] = time.perf_counter()
                    ep.modify(fd, select.EPOLLIN)
                    continue
                try:
                    data = s.recv(1 << 20)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    errors += 1
                    finish(fd)
                    openOne()
                    continue
                st[1] += data
                length = _responseLength(st[1])
                if length is None or len(st[1]) < length:
                    continue
                latencies.append(time.perf_counter() - st[3])
                done += 1
                st[1] = st[1][length:]
                if self.close:
                    finish(fd)
                    openOne()
                else:
                    st[4] = False
                    ep.modify(fd, select.EPOLLOUT)
        elapsed = time.perf_counter() - start
        for fd in list(socks):
            finish(fd)
        ep.close()
        latencies.sort()

        def pct(p):
            if not latencies:
                return None
            return latencies[min(len(latencies) - 1, int(len(latencies) * p))]
        return {"requests": done, "duration": elapsed, "rps": done / elapsed if elapsed else 0.0,
                "latency": {"p50": pct(0.50), "p99": pct(0.99)}, "errors": errors,
                "non2xx": 0, "loader": "python"}


def _responseLength(buf):
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    m = re.search(rb"(?i)content-length:\s*(\d+)", buf[:end])
    return end + 4 + (int(m.group(1)) if m else 0)


def bulkTransfer(port, total, chunk=1 << 20, timeout=120.0):
    """
    Send C{total} bytes through 127.0.0.1:C{port} to the TCP sink origin,
    half-close, and wait for the sink's count. Returns Gbit/s.
    """
    data = memoryview(bytearray(chunk))
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        start = time.perf_counter()
        sent = 0
        while sent < total:
            n = min(chunk, total - sent)
            s.sendall(data[:n])
            sent += n
        s.shutdown(socket.SHUT_WR)
        reply = b""
        while not reply.endswith(b"\n"):
            more = s.recv(64)
            if not more:
                break
            reply += more
        elapsed = time.perf_counter() - start
    finally:
        s.close()
    if reply.strip() != str(total).encode():
        raise RuntimeError("sink counted %r bytes, expected %d" % (reply.strip(), total))
    return total * 8 / elapsed / 1e9


def openIdle(port, n, timeout=60.0):
    """
    Open C{n} idle connections to 127.0.0.1:C{port}, in batches so that the
    accept queue keeps up. Returns the sockets (the caller closes them).
    """
    socks = []
    deadline = time.time() + timeout
    try:
        while len(socks) < n:
            if time.time() > deadline:
                raise RuntimeError("opened only %d of %d connections in %ss"
                                   % (len(socks), n, timeout))
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            socks.append(s)
            if len(socks) % 500 == 0:
                time.sleep(0.05)
    except BaseException:
        closeAll(socks)
        raise
    return socks


def closeAll(socks):
    """Close sockets, ignoring errors."""
    for s in socks:
        try:
            s.close()
        except OSError:
            pass
