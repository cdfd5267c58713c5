"""
Worker processes end to end: C{twistd envoy --worker-processes 2}, real
clients and a real origin. One main process keeps the admin and the
merged stats; two worker processes serve the listener.
"""

import http.client
import os
import re
import signal
import socket
import time
import urllib.request

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.configs import bootstrap, cluster, httpListener
from tests.e2e.harness import STARTUP_TIMEOUT, Envoy, SharedFixture, adminStats, freePort
from tests.e2e.test_health_check import Origin as HealthCheckedOrigin
from tests.e2e.test_hot_restart import LoadClients
from tests.e2e.test_http_filters import Origin


def config(port, adminPort, originPort, checkedPorts):
    return bootstrap(
        listeners=[
            httpListener("front", "%(port)d", routes="""
                - match: {prefix: "/checked"}
                  route: {cluster: checked}
                - match: {prefix: "/spread"}
                  route: {cluster: spread}
                - match: {prefix: "/"}
                  route: {cluster: origin}
                """, httpFilters="""
                - name: envoy.filters.http.fault
                  typed_config:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
                    abort: {http_status: 503, percentage: {numerator: 0}}
                """),
        ],
        clusters=[
            cluster("origin"),
            cluster("spread", "%(origin)d"),
            cluster("checked", ["%(a)d", "%(b)d"], extra="""
                common_lb_config: {healthy_panic_threshold: {}}
                health_checks:
                - timeout: 1s
                  interval: 0.1s
                  no_traffic_interval: 0.1s
                  unhealthy_threshold: 1
                  healthy_threshold: 1
                  http_health_check: {path: /healthz}
                """),
        ],
        extra="""
        layered_runtime:
          layers:
          - name: admin
            admin_layer: {}
        """) % {"admin": adminPort, "port": port, "origin": originPort, "a": checkedPorts[0],
       "b": checkedPorts[1]}


def get(port, path="/"):
    """One GET on a new connection: (status, connection header, body)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.getheader("connection"), r.read()
    finally:
        c.close()


def post(adminPort, path):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (adminPort, path), method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.status


def workerPids(log):
    """The live worker processes' pids by index, from the main process's log."""
    pids = {}
    for index, pid in re.findall(r"started worker process (\d+) \(pid (\d+)\)", log):
        pids[int(index)] = int(pid)
    return pids


def waitUntil(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("%s not within %ss" % (what, timeout))


class CheckedOrigin(HealthCheckedOrigin):
    """A health checked origin that notes each check's client port."""

    def __init__(self, tag):
        HealthCheckedOrigin.__init__(self, tag)
        self.checkPorts = []
        handler = self.server.RequestHandlerClass
        origin = self

        class Handler(handler):
            def do_GET(self):
                if self.path == "/healthz":
                    origin.checkPorts.append(self.client_address[1])
                handler.do_GET(self)
        self.server.RequestHandlerClass = Handler


def _startEnvoy(origin, checked=(None, None)):
    port, adminPort = freePort(), freePort()
    checkedPorts = [o.port if o is not None else freePort() for o in checked]
    envoy = Envoy(config(port, adminPort, origin.port, checkedPorts), adminPort=adminPort,
                  args=("--worker-processes", "2", "--shutdown-drain-time-s", "2"))
    envoy.port = port
    envoy.waitReady()
    waitUntil(lambda: len(workerPids(envoy.output()[1])) == 2, 20, "two worker processes")
    # Each worker process serves once its listeners started.
    waitUntil(lambda: adminStats(adminPort).get("listener_manager.listener_create_success") == 2,
              20, "both worker processes listening")
    return envoy


class WorkerProcessTests(SharedFixture, SynchronousTestCase):

    @classmethod
    def startFixture(cls):
        cls.origin = Origin()
        cls.checked = [CheckedOrigin(b"a"), CheckedOrigin(b"b")]
        cls.envoy = _startEnvoy(cls.origin, cls.checked)

    @classmethod
    def stopFixture(cls):
        cls.envoy.stop()
        cls.origin.stop()
        for origin in cls.checked:
            origin.stop()

    def stats(self):
        return adminStats(self.envoy.adminPort)

    def test_spreadAndMerged(self):
        """
        The kernel spreads connections over both processes (C{worker_0} in
        one, C{worker_1} in the other), and C{/stats} shows every request,
        with Envoy's names, once each worker process pushed its counts
        (every half second).
        """
        # Only this test routes to the spread cluster: its count starts at 0.
        for _ in range(40):
            self.assertEqual(get(self.envoy.port, "/spread")[0], 200)
        waitUntil(lambda: self.stats().get("cluster.spread.upstream_rq_2xx") == 40,
                  10, "40 requests in /stats")
        stats = self.stats()
        self.assertEqual(stats["cluster.spread.upstream_rq_total"], 40)
        self.assertGreater(stats["listener.127.0.0.1_%d.worker_0.downstream_cx_total"
                                 % (self.envoy.port,)], 0)
        self.assertGreater(stats["listener.127.0.0.1_%d.worker_1.downstream_cx_total"
                                 % (self.envoy.port,)], 0)
        self.assertEqual(stats["server.worker_processes"], 2)
        # Histograms too: the worker processes' request times.
        _, body = self.envoy.admin("/stats?filter=^http.front.downstream_rq_time$")
        self.assertIn("P50(", body)
        self.assertNotIn("No recorded values", body)

    def test_adminActionsReachEveryWorker(self):
        """
        C{/healthcheck/fail}, C{/runtime_modify}, C{/logging} and
        C{/reset_counters} act in both worker processes: every connection,
        whichever process takes it, sees them.
        """
        # The main process passes each action on to the worker processes:
        # twelve new connections in a row (spread by the kernel over both)
        # all see it once both applied it.
        def answers(pick):
            return {pick(get(self.envoy.port)) for _ in range(12)}

        post(self.envoy.adminPort, "/healthcheck/fail")
        try:
            waitUntil(lambda: answers(lambda a: a[:2]) == {(200, "close")}, 10,
                      "connection: close from both worker processes")
        finally:
            post(self.envoy.adminPort, "/healthcheck/ok")
        waitUntil(lambda: answers(lambda a: a[1]) == {None}, 10, "keep-alive again")

        post(self.envoy.adminPort, "/runtime_modify?fault.http.abort.abort_percent=100")
        try:
            waitUntil(lambda: answers(lambda a: a[0]) == {503}, 10, "the abort in both")
        finally:
            post(self.envoy.adminPort, "/runtime_modify?fault.http.abort.abort_percent=")
        waitUntil(lambda: answers(lambda a: a[0]) == {200}, 10, "no abort in both")

        post(self.envoy.adminPort, "/logging?level=debug")
        try:
            # The log's thread ids; each worker process's are in /proc.
            def debugFromEach():
                for _ in range(12):
                    get(self.envoy.port)
                log = self.envoy.output()[1]
                debugThreads = set(re.findall(r"\]\[(\d+)\]\[debug\]", log))
                return all(set(os.listdir("/proc/%d/task" % (pid,))) & debugThreads
                           for pid in workerPids(log).values())
            waitUntil(debugFromEach, 10, "debug lines from each worker process")
        finally:
            post(self.envoy.adminPort, "/logging?level=info")

        # Counts a worker process pushes from before it applied the reset
        # are dropped by the main process, so the reset shows at once.
        post(self.envoy.adminPort, "/reset_counters")
        self.assertEqual(self.stats()["http.front.downstream_rq_2xx"], 0)
        for _ in range(5):
            get(self.envoy.port)
        waitUntil(lambda: self.stats()["http.front.downstream_rq_2xx"] == 5, 10,
                  "5 requests counted after the reset")

    def test_healthChecksFromMainOnly(self):
        """
        As Envoy's main thread, the main process alone checks the hosts:
        each origin sees one check connection however many worker processes
        serve, and while the main process is stopped the checks stop and
        the worker processes go on serving.
        """
        origin = self.checked[0]
        del origin.checkPorts[:]
        waitUntil(lambda: len(origin.checkPorts) >= 8, 10, "eight checks")
        # One checker: its connection's port runs on until a check times
        # out and it reconnects; several checkers' ports would interleave.
        ports = list(origin.checkPorts)
        runs = [p for i, p in enumerate(ports) if i == 0 or p != ports[i - 1]]
        self.assertEqual(len(runs), len(set(runs)), ports)

        os.kill(self.envoy.proc.pid, signal.SIGSTOP)
        try:
            # The checker sends a check once the last one was answered (and
            # noted): at most one, already sent, may still arrive.
            seen = len(origin.checkPorts)
            self.assertEqual({get(self.envoy.port)[0] for _ in range(4)}, {200})
            time.sleep(0.5)  # five check intervals
            self.assertLessEqual(len(origin.checkPorts), seen + 1, origin.checkPorts)
            seen = len(origin.checkPorts)
        finally:
            os.kill(self.envoy.proc.pid, signal.SIGCONT)
        waitUntil(lambda: len(origin.checkPorts) > seen, 10, "checks again")

    def test_failingHostLeavesEveryWorker(self):
        """
        A host failing its checks leaves the rotation of every worker
        process at once, and comes back in each when it passes again.
        """

        def served(n=24):
            # A new connection each: the kernel spreads them over both.
            return {get(self.envoy.port, "/checked")[2] for _ in range(n)}
        waitUntil(lambda: served() == {b"a", b"b"}, 5, "both hosts serving")
        self.checked[1].healthStatus = 503
        try:
            waitUntil(lambda: "/failed_active_hc" in self.envoy.admin("/clusters")[1], 10,
                      "the host marked failed")
            # The main process sends the host's health to each worker process.
            waitUntil(lambda: served() == {b"a"}, 10, "the host out of every worker")
        finally:
            self.checked[1].healthStatus = 200
        waitUntil(lambda: served() == {b"a", b"b"}, 10, "the host back in every worker")

    def test_stoppedWorkerDoesNotBlockMain(self):
        """
        A worker process that reads nothing (stopped here; stuck, or still
        starting, alike) does not stop the main process: admin actions
        for it queue while its channel is full and the admin answers; once
        it reads again it gets them all, in order, and is not replaced.
        """
        pid = workerPids(self.envoy.output()[1])[1]
        pad = "x" * 4000
        os.kill(pid, signal.SIGSTOP)
        try:
            # Far more than a channel holds: a blocking send would hang
            # the admin (each POST has 5 s).
            for i in range(120):
                post(self.envoy.adminPort, "/runtime_modify?txenvoy.test.pad=%d%s" % (i, pad))
            # (A new connection may be the stopped process's to accept.)
            self.assertEqual(self.stats()["server.worker_processes"], 2)
        finally:
            os.kill(pid, signal.SIGCONT)
        post(self.envoy.adminPort, "/runtime_modify?txenvoy.test.pad=")

        seen = []

        def answers():
            seen.append(sorted(get(self.envoy.port)[0] for _ in range(12)))
            return set(seen[-1])
        post(self.envoy.adminPort, "/runtime_modify?fault.http.abort.abort_percent=100")
        try:
            try:
                waitUntil(lambda: answers() == {503}, 30, "the abort in both")
            except AssertionError as e:
                raise AssertionError("%s: answers %s (of %d rounds); stats %s; log:\n%s" % (
                    e, seen[-3:], len(seen), {k: v for k, v in self.stats().items()
                                             if "worker" in k or "runtime" in k},
                    self.envoy.output()[1][-6000:]))
        finally:
            post(self.envoy.adminPort, "/runtime_modify?fault.http.abort.abort_percent=")
        waitUntil(lambda: answers() == {200}, 30, "no abort in both")
        self.assertEqual(workerPids(self.envoy.output()[1])[1], pid)
        self.assertNotIn("took no message", self.envoy.output()[1])

    def test_replacementKeepsRuntimeOverrides(self):
        """
        A worker process replacing a killed one starts with what
        C{/runtime_modify} set before: the admin layer is every worker's,
        so requests it serves are aborted as the other process's are.
        """
        def answers():
            return {get(self.envoy.port)[0] for _ in range(16)}
        post(self.envoy.adminPort, "/runtime_modify?fault.http.abort.abort_percent=100")
        try:
            waitUntil(lambda: answers() == {503}, 30, "the abort in both")
            pid = workerPids(self.envoy.output()[1])[1]
            os.kill(pid, signal.SIGKILL)

            def replacementServes():
                new = workerPids(self.envoy.output()[1])[1]
                return new != pid and (
                    "worker process 1 (pid %d) serving" % (new,)) in self.envoy.output()[1]
            waitUntil(replacementServes, STARTUP_TIMEOUT, "a new worker 1 serving")
            # The kernel spreads new connections over both processes.
            self.assertEqual(answers(), {503})
        finally:
            post(self.envoy.adminPort, "/runtime_modify?fault.http.abort.abort_percent=")
        waitUntil(lambda: answers() == {200}, 30, "no abort in both")

    def test_killedWorkerReplaced(self):
        """
        A worker process killed with SIGKILL under load is logged, counted
        and replaced; the listener keeps serving (no connection refused),
        and at most the requests it had in flight fail.
        """
        # A connection the kernel queued at the killed process's socket
        # waits for the new process, whose start is slow under load.
        clients = LoadClients(self.envoy.port, keepAlive=2, fresh=2, maxSeconds=20,
                              timeout=STARTUP_TIMEOUT)
        self.addCleanup(clients.stop)
        time.sleep(0.5)
        pid = workerPids(self.envoy.output()[1])[0]
        os.kill(pid, signal.SIGKILL)
        waitUntil(lambda: workerPids(self.envoy.output()[1])[0] != pid, 20, "a new worker 0")
        time.sleep(1.0)
        clients.stop()
        log = self.envoy.output()[1]
        self.assertIn("worker process 0 (pid %d) killed by signal 9" % (pid,), log)
        self.assertGreaterEqual(self.stats()["server.worker_process_restarts"], 1)
        refused = [e for e in clients.errors if "Refused" in e]
        self.assertEqual(refused, [])
        # Only the dead process's own in-flight requests: one per client.
        self.assertLessEqual(len(clients.errors), 4, clients.errors)
        self.assertGreater(clients.ok, 20)
        for _ in range(10):
            self.assertEqual(get(self.envoy.port)[0], 200)


class WorkerProcessShutdownTests(SynchronousTestCase):

    def test_drainThenStop(self):
        """
        C{/drain_listeners} closes the listener in every worker process
        (new connections are refused); SIGTERM stops the main process and
        its worker processes, all exiting 0.
        """
        origin = Origin()
        self.addCleanup(origin.stop)
        envoy = _startEnvoy(origin)
        self.addCleanup(envoy.stop)
        pids = list(workerPids(envoy.output()[1]).values())
        post(envoy.adminPort, "/drain_listeners")

        def refused():
            try:
                socket.create_connection(("127.0.0.1", envoy.port), timeout=1).close()
                return False
            except ConnectionRefusedError:
                return True
            except OSError:
                return False
        waitUntil(refused, 10, "the listener closed")
        self.assertEqual(envoy.stop(), 0)
        for pid in pids:
            self.assertFalse(os.path.exists("/proc/%d" % (pid,)) and
                             "zombie" not in open("/proc/%d/status" % (pid,)).read().lower(),
                             "worker %d still running" % (pid,))
