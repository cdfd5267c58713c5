"""
Load generators for the benchmark suite.

 - L{runWrk}: wrk, run on its own core, with its output parsed.
 - L{PyHttpLoad}: a small epoll HTTP/1.1 client for machines without wrk
   (keep-alive or a new connection per request, fixed duration or fixed
   count). It is much slower than wrk, so its results say so.
 - L{discardLoad}: keep-alive GETs of large bodies that the client's
   kernel discards (C{MSG_TRUNC}) instead of copying them out, so that the
   load core has room to spare and the proxy's core is the bottleneck.
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


_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.I)


def discardLoad(host, port, path="/", connections=8, duration=5.0, readSize=1 << 20,
                timeout=30.0):
    """
    Keep-alive GETs of C{path} on C{connections} connections, one in
    flight on each, for C{duration} seconds. Each response head is read
    and checked (status, C{content-length}); its body is counted and
    dropped by the kernel (C{recv(MSG_TRUNC)} on TCP copies nothing out),
    up to C{readSize} bytes a call.

    Why not wrk: wrk reads 8 KiB at a time and copies every byte, and on
    loopback a reader also pays for part of its sender's TCP work (the
    window updates it sends clock the sender's queued segments out in its
    own context). With a proxy in between, wrk's core then ran out before
    the proxy's did (bench (c), issue 14). This reader costs a few system
    calls per MiB and no copy, so the load core keeps spare time.

    @return: a dict like L{parseWrk}'s: C{requests}, C{rps} (responses per
        second), C{bodyBytes}, C{duration}, C{errors}, C{non2xx}, with
        C{loader} naming this reader.
    """
    request = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (path, host, port)).encode()
    sink = bytearray(readSize)
    ep = select.epoll()
    # fd -> [socket, head bytes so far, body bytes left (None: in a head)]
    conns = {}
    errors = non2xx = done = bodyBytes = 0

    def openOne():
        s = socket.create_connection((host, port), timeout=timeout)
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conns[s.fileno()] = [s, b"", None]
        ep.register(s.fileno(), select.EPOLLIN)
        s.send(request)

    def drop(fd):
        ep.unregister(fd)
        conns.pop(fd)[0].close()

    trunc = socket.MSG_TRUNC
    start = time.perf_counter()
    deadline = start + duration
    try:
        for _ in range(connections):
            openOne()
        while True:
            now = time.perf_counter()
            if now >= deadline:
                break
            for fd, _ in ep.poll(deadline - now):
                st = conns.get(fd)
                if st is None:
                    continue
                s = st[0]
                # Bounded: a socket is read until it would block, at most
                # this many times per event.
                for _ in range(64):
                    left = st[2]
                    try:
                        if left is None:
                            data = s.recv(4096)
                            if not data:
                                raise ConnectionError("closed in a response head")
                            head = st[1] + data
                            end = head.find(b"\r\n\r\n")
                            if end < 0:
                                if len(head) > 65536:
                                    raise ConnectionError("response head too long")
                                st[1] = head
                                continue
                            m = _CONTENT_LENGTH.search(head, 0, end + 2)
                            if m is None:
                                raise ConnectionError("response without content-length")
                            if not head.startswith((b"HTTP/1.1 2", b"HTTP/1.0 2")):
                                non2xx += 1
                            st[1] = b""
                            already = len(head) - end - 4
                            left = int(m.group(1)) - already
                            bodyBytes += already
                            if left < 0:
                                raise ConnectionError("more bytes than the response has")
                        else:
                            n = s.recv_into(sink, min(left, readSize), trunc)
                            if not n:
                                raise ConnectionError("closed in a response body")
                            left -= n
                            bodyBytes += n
                    except BlockingIOError:
                        st[2] = left
                        break
                    except OSError:
                        errors += 1
                        drop(fd)
                        if time.perf_counter() < deadline:
                            openOne()
                        break
                    if left == 0:
                        done += 1
                        st[2] = None
                        s.send(request)
                    else:
                        st[2] = left
        elapsed = time.perf_counter() - start
    finally:
        for fd in list(conns):
            drop(fd)
        ep.close()
    return {"requests": done, "duration": elapsed, "rps": done / elapsed if elapsed else 0.0,
            "bodyBytes": bodyBytes, "latency": {}, "errors": errors, "non2xx": non2xx,
            "loader": "discard"}


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

    The sink drops what it reads without copying it (C{MSG_TRUNC}), so
    the load core, which runs this sender and the sink, has time to spare
    and the proxy's core is what limits the transfer. (Sending with
    C{sendfile} from memory was slower here than this one copying send:
    each call went through a selector and the kernel's internal pipe.)
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
