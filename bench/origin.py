"""
Local origins for the benchmark suite, on 127.0.0.1.

 - HTTP: nginx when it is installed (one worker, keep-alive without a
   request limit, no access log), else a small epoll HTTP/1.1 server in
   this file. Paths: C{/} answers a 12-byte body, C{/1m} a 1 MiB body.
 - TCP: a sink that reads each connection to EOF, then answers the byte
   count it read (ASCII, newline) and closes. It reads with C{MSG_TRUNC}:
   the kernel counts and drops the bytes instead of copying them out. The bulk workload times a
   transfer up to that answer, which also exercises half-close through
   the proxy; idle connections simply sit in it.

Run directly, C{python bench/origin.py http|tcp PORT} serves until
SIGTERM; L{startHttpOrigin} and L{startTcpOrigin} start one as a child
process and return a handle with C{port}, C{kind}, C{pid} and C{stop()}.
"""

import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time

SMALL_BODY = b"hello world\n"
LARGE_BODY = b"x" * (1 << 20)

NGINX_CONF = """
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log error;
worker_rlimit_nofile {nofile};
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 120s;
    keepalive_requests 100000000;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {tmp}/www;
        location = / {{ return 200 "hello world\\n"; }}
        location = /1m {{ try_files /1m =404; }}
    }}
}}
"""


class Origin:
    """A running origin process."""

    def __init__(self, kind, port, proc):
        self.kind = kind
        self.port = port
        self.proc = proc
        self.pid = proc.pid

    def cpuSeconds(self):
        """
        utime + stime of the origin and its children (nginx's worker), or
        C{None} when C{/proc} cannot tell.
        """
        total = 0.0
        pids = [self.pid]
        try:
            with open("/proc/%d/task/%d/children" % (self.pid, self.pid)) as f:
                pids += [int(p) for p in f.read().split()]
            for pid in pids:
                with open("/proc/%d/stat" % (pid,)) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None
        return total

    def stop(self):
        """Stop it (by its pid) and wait for it."""
        if self.proc.poll() is None:
            # nginx's master stops its worker on SIGTERM ("fast shutdown").
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def freePort():
    """A free TCP port on 127.0.0.1 (not one the tests reserve)."""
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if not (10000 <= port <= 10100 or port == 9901):
            return port


def waitListening(port, proc, timeout=15.0):
    """Wait until C{port} accepts connections, or fail if C{proc} died."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("origin exited with %s" % (proc.returncode,))
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("origin not listening on %d after %ss" % (port, timeout))


def _taskset(cpus):
    if cpus and shutil.which("taskset"):
        return ["taskset", "-c", cpus]
    return []


def startHttpOrigin(tmp, cpus=None, preferNginx=True, nofile=20000):
    """Start an HTTP origin: nginx if found (and preferred), else ours."""
    port = freePort()
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx")
                                      else None)
    if preferNginx and nginx:
        root = os.path.join(tmp, "nginx")
        os.makedirs(os.path.join(root, "www"), exist_ok=True)
        with open(os.path.join(root, "www", "1m"), "wb") as f:
            f.write(LARGE_BODY)
        # nginx's worker runs as an unprivileged user when started as root.
        for d in (tmp, root, os.path.join(root, "www")):
            os.chmod(d, 0o755)
        os.chmod(os.path.join(root, "www", "1m"), 0o644)
        conf = os.path.join(root, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(tmp=root, port=port, nofile=nofile,
                                      connections=max(1024, nofile // 2)))
        cmd = _taskset(cpus) + [nginx, "-p", root, "-e", os.path.join(root, "nginx-error.log"),
                                "-c", conf, "-g", "daemon off;"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        waitListening(port, proc)
        return Origin("nginx", port, proc)
    cmd = _taskset(cpus) + [sys.executable, os.path.abspath(__file__), "http", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    waitListening(port, proc)
    return Origin("python-epoll", port, proc)


def startTcpOrigin(cpus=None):
    """Start the TCP sink origin."""
    port = freePort()
    cmd = _taskset(cpus) + [sys.executable, os.path.abspath(__file__), "tcp", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    waitListening(port, proc)
    return Origin("tcp-sink", port, proc)


# --- the servers themselves (run in the child process) -------------------


def _raiseNofile():
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass


def _listen(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(4096)
    s.setblocking(False)
    return s


def _response(body, close):
    head = ("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n"
            % (len(body), "Connection: close\r\n" if close else ""))
    return head.encode() + body


def serveHttp(port):
    """A small epoll HTTP/1.1 origin: GETs only, keep-alive, pipelining."""
    _raiseNofile()
    listener = _listen(port)
    ep = select.epoll()
    ep.register(listener.fileno(), select.EPOLLIN)
    conns = {}       # fd -> [socket, inbuf, outbuf(memoryview list), closeAfter]
    running = [True]
    signal.signal(signal.SIGTERM, lambda *a: running.__setitem__(0, False))
    responses = {}

    def answer(path, close):
        key = (path, close)
        r = responses.get(key)
        if r is None:
            r = responses[key] = _response(LARGE_BODY if path == b"/1m" else SMALL_BODY, close)
        return r

    def drop(fd):
        ep.unregister(fd)
        conns.pop(fd)[0].close()

    while running[0]:
        try:
            events = ep.poll(0.5)
        except InterruptedError:
            continue
        for fd, ev in events:
            if fd == listener.fileno():
                while True:
                    try:
                        c, _ = listener.accept()
                    except BlockingIOError:
                        break
                    c.setblocking(False)
                    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    conns[c.fileno()] = [c, b"", b"", False]
                    ep.register(c.fileno(), select.EPOLLIN)
                continue
            state = conns.get(fd)
            if state is None:
                continue
            sock = state[0]
            if ev & select.EPOLLIN:
                try:
                    data = sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    data = None
                except OSError:
                    drop(fd)
                    continue
                if data == b"":
                    drop(fd)
                    continue
                if data:
                    buf = state[1] + data
                    out = []
                    while True:
                        end = buf.find(b"\r\n\r\n")
                        if end < 0:
                            break
                        head, buf = buf[:end], buf[end + 4:]
                        line, _, headers = head.partition(b"\r\n")
                        parts = line.split(b" ")
                        path = parts[1] if len(parts) > 1 else b"/"
                        close = b"connection: close" in headers.lower()
                        out.append(answer(path, close))
                        if close:
                            state[3] = True
                            break
                    state[1] = buf
                    state[2] += b"".join(out)
            if ev & (select.EPOLLERR | select.EPOLLHUP) and not ev & select.EPOLLIN:
                drop(fd)
                continue
            if state[2]:
                try:
                    n = sock.send(state[2])
                except (BlockingIOError, InterruptedError):
                    n = 0
                except OSError:
                    drop(fd)
                    continue
                state[2] = state[2][n:]
            if not state[2] and state[3]:
                drop(fd)
                continue
            ep.modify(fd, select.EPOLLIN | (select.EPOLLOUT if state[2] else 0))
    listener.close()


def serveTcpSink(port):
    """
    Read each connection to EOF, answer the byte count, close. The bytes
    are dropped by the kernel (C{MSG_TRUNC}), so the sink costs a few
    system calls per MiB and no copy (bench (d), issue 14).
    """
    _raiseNofile()
    listener = _listen(port)
    ep = select.epoll()
    ep.register(listener.fileno(), select.EPOLLIN)
    conns = {}
    buf = bytearray(1 << 20)
    running = [True]
    signal.signal(signal.SIGTERM, lambda *a: running.__setitem__(0, False))
    while running[0]:
        try:
            events = ep.poll(0.5)
        except InterruptedError:
            continue
        for fd, ev in events:
            if fd == listener.fileno():
                while True:
                    try:
                        c, _ = listener.accept()
                    except BlockingIOError:
                        break
                    c.setblocking(False)
                    conns[c.fileno()] = [c, 0]
                    ep.register(c.fileno(), select.EPOLLIN)
                continue
            state = conns.get(fd)
            if state is None:
                continue
            sock = state[0]
            eof = False
            try:
                for _ in range(16):
                    # Counted and dropped by the kernel: no copy out.
                    n = sock.recv_into(buf, len(buf), socket.MSG_TRUNC)
                    if not n:
                        eof = True
                        break
                    state[1] += n
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                eof = None
            if eof is False:
                continue
            ep.unregister(fd)
            del conns[fd]
            if eof:
                try:
                    sock.send(b"%d\n" % (state[1],))
                except OSError:
                    pass
            sock.close()
    listener.close()


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("http", "tcp"):
        sys.exit("usage: origin.py http|tcp PORT")
    (serveHttp if sys.argv[1] == "http" else serveTcpSink)(int(sys.argv[2]))
