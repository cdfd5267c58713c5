"""
Hot restart end to end: real C{twistd envoy} epochs driven by Envoy's own
C{restarter/hot-restarter.py}, unchanged (C{tests/e2e/restarter/}), running
the start script users run (C{conf/start_envoy.sh}): SIGHUP starts the next
epoch with C{RESTART_EPOCH}, SIGTERM stops them all, clients sending
requests all along.

Pinned Envoy 1.40 behaviour (observed with C{envoy --restart-epoch N
--base-id B --parent-shutdown-time-s 6 --drain-time-s 3} and the same
watcher): the old epoch logs C{shutting down admin due to child startup},
then C{closing and draining listeners}; a keep-alive client gets one
C{connection: close} and reconnects to the new epoch without an error; the
old epoch exits 0 C{--parent-shutdown-time-s} after the drain started; the
new epoch's counters include the old one's; C{server.hot_restart_epoch} is
the epoch and C{server.hot_restart_generation} counts the epochs.
"""

import hashlib
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.closing_origin import raceConfig
from tests.e2e.harness import (REPO, STARTUP_TIMEOUT, Envoy, adminStats, freePort, processEnv,
                                runTwistd, runTwistdAll, twistdCommand)
from tests.e2e.test_http_filters import Origin
from txenvoy.server.hot_restart import FINAL_STATS_WAIT_S

#: Envoy's restarter, and the SHA-256 of Envoy's file (its README says where from).
RESTARTER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "restarter",
                         "hot-restarter.py")
RESTARTER_SHA256 = "688cc4219c84b08a2dd5e8a200d270d4ba4e1a00a1c63a3efb6064cb6e60e321"
#: The start script the docs show, run as they say.
START_SCRIPT = os.path.join(REPO, "conf", "start_envoy.sh")

DRAIN_TIME_S = 1
PARENT_SHUTDOWN_TIME_S = 2


def baseId():
    """A base id no other test run on this host uses at the same time."""
    return 100000 + (os.getpid() * 7 + int(time.time() * 1000)) % 800000


class LoadClients:
    """
    Clients sending GETs in a loop until stopped (or C{maxSeconds}):
    C{keepAlive} of them reuse their connection (reconnecting after a
    C{connection: close}), C{fresh} of them open one per request.
    """

    def __init__(self, port, keepAlive=2, fresh=1, maxSeconds=40.0, timeout=10.0):
        self.port = port
        self.timeout = timeout
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.closes = 0
        self.errors = []
        #: How many of the clients have had a response (and, kept alive,
        #: hold a connection).
        self.served = 0
        self.deadline = time.time() + maxSeconds
        self.threads = [threading.Thread(target=self._run, args=(True,), daemon=True)
                        for _ in range(keepAlive)]
        self.threads += [threading.Thread(target=self._run, args=(False,), daemon=True)
                         for _ in range(fresh)]
        for t in self.threads:
            t.start()

    def _run(self, keepAlive):
        conn = None
        served = False
        while not self.stopping.is_set() and time.time() < self.deadline:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            try:
                conn.request("GET", "/")
                response = conn.getresponse()
                response.read()
                close = response.getheader("connection") == "close"
                with self.lock:
                    if response.status == 200:
                        self.ok += 1
                    else:
                        self.errors.append("status %d" % (response.status,))
                    self.closes += close
                    if not served:
                        served = True
                        self.served += 1
                if close or not keepAlive:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                with self.lock:
                    self.errors.append("%s: %s" % (type(e).__name__, e))
                conn.close()
                conn = None
            time.sleep(0.002)
        if conn is not None:
            conn.close()

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(self.timeout + 5)


def _timestamp(line):
    """Seconds since the epoch of a C{[YYYY-mm-dd HH:MM:SS.mmm]...} log line."""
    m = re.match(r"\[(\d+-\d+-\d+ \d+:\d+:\d+)\.(\d+)\]", line)
    return time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1e3


def _drainLine(lines):
    """The old epoch's first C{closing and draining listeners} line."""
    return next(l for l in lines if "closing and draining listeners" in l)


def _newEpochServingLine(lines):
    """
    Where, in the restarter's log, epoch 1's main process has heard both
    of its worker processes (indexes 0 and 1) say they serve.
    """
    pid = re.findall(r"forked new child process with PID=(\d+)", "\n".join(lines))[1]
    serving = set()
    for i, line in enumerate(lines):
        m = re.search(r"\]\[%s\]\[.*worker process (\d) .* serving" % (pid,), line)
        if m:
            serving.add(m.group(1))
            if serving == {"0", "1"}:
                return i
    raise AssertionError("epoch 1's worker processes never said they serve")


class HotRestartTests(SynchronousTestCase):
    """Two hot restarts under load, through the restarter, as Envoy's are run."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="txenvoy-hot-restart-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.origin = Origin()
        self.addCleanup(self.origin.stop)
        self.port, self.adminPort = freePort(), freePort()
        self.configPath = os.path.join(self.tmp, "envoy.yaml")
        with open(self.configPath, "w") as f:
            f.write(raceConfig(self.port, self.adminPort, self.origin.port))

    def _waitFor(self, predicate, timeout, what):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if predicate():
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.fail("%s not in %ss:\n%s" % (what, timeout, self._logs()))

    def _logs(self):
        """The restarter's log, which holds the epochs' logs too."""
        path = os.path.join(self.tmp, "restarter.log")
        if not os.path.exists(path):
            return ""
        with open(path) as f:
            return f.read()

    def _twistd(self):
        """
        The one word C{conf/start_envoy.sh} runs as C{$TWISTD}: this
        interpreter's C{twistd}, or a script that runs it.
        """
        command = twistdCommand()
        if len(command) == 1:
            return command[0]
        path = os.path.join(self.tmp, "twistd")
        with open(path, "w") as f:
            f.write("#!/bin/sh\nexec %s \"$@\"\n" % (" ".join(
                "'%s'" % (word,) for word in command),))
        os.chmod(path, 0o755)
        return path

    def test_restarterIsEnvoys(self):
        """
        The restarter the tests run is Envoy's file, byte for byte, and the
        start script is one it can run.
        """
        with open(RESTARTER, "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), RESTARTER_SHA256)
        self.assertTrue(os.access(START_SCRIPT, os.X_OK))

    def _epoch(self):
        return adminStats(self.adminPort).get("server.hot_restart_epoch")

    def test_twoRestartsUnderLoad(self):
        """
        No request fails and no connection is refused across two restarts;
        each old epoch exits 0 C{--parent-shutdown-time-s} after its drain
        began; the last epoch's counters hold every request.
        """
        self.restartUnderLoad(2)

    def test_restartWithWorkerProcesses(self):
        """
        The same with C{--worker-processes 2} in every epoch: each epoch's
        worker processes take over the previous epoch's sockets, the old
        ones drain, and what they counted carries over.

        The new epoch's worker processes are held back before they serve
        (L{tests.e2e.held_worker_start}) for longer than
        C{--parent-shutdown-time-s}: the old epoch is not told to drain and
        serves every request meanwhile (Envoy's child drains its parent
        only once its workers started); once they serve, it drains and
        exits on time. Meanwhile the new epoch's C{/stats} holds the old
        epoch's counts.
        """
        self.restartUnderLoad(1, "--worker-processes", "2",
                              "--import", "tests.e2e.held_worker_start",
                              gate=os.path.join(self.tmp, "gate"))

    def _holdNewWorkers(self, gate, clients):
        """
        The new epoch's two worker processes wait at C{gate}: past
        C{--parent-shutdown-time-s}, the old epoch still serves and was not
        asked to drain. Then let them go.
        """
        held = lambda: [n for n in os.listdir(self.tmp) if n.startswith("gate.held.")]
        self._waitFor(lambda: len(held()) >= 2, STARTUP_TIMEOUT,
                      "the new epoch's worker processes held")
        before = clients.ok
        time.sleep(PARENT_SHUTDOWN_TIME_S + 0.5)
        logs = self._logs()
        self.assertNotIn("closing and draining listeners", logs)
        self.assertNotIn("exited with code", logs)
        self.assertEqual(clients.errors, [])
        self.assertGreater(clients.ok, before)
        # The old epoch's admin is closed: its counts show in the new one's.
        self._waitFor(lambda: adminStats(self.adminPort).get("http.race.downstream_rq_2xx", 0)
                      >= before, 10, "the old epoch's counts in the new epoch's /stats")
        os.remove(gate)

    def restartUnderLoad(self, restarts, *extraArgs, gate=None):
        env = processEnv()
        if gate is not None:
            env["TXENVOY_TEST_WORKER_GATE"] = gate
        env.update(ENVOY_CONFIG=self.configPath, BASE_ID=str(baseId()),
                   DRAIN_TIME_S=str(DRAIN_TIME_S),
                   PARENT_SHUTDOWN_TIME_S=str(PARENT_SHUTDOWN_TIME_S),
                   TWISTD=self._twistd(), TXENVOY_ARGS=" ".join(extraArgs))
        # Envoy's restarter logs to stdout; the start script leaves the
        # epochs' logs on the same file.
        log = open(os.path.join(self.tmp, "restarter.log"), "w")
        self.addCleanup(log.close)
        restarter = subprocess.Popen([sys.executable, RESTARTER, START_SCRIPT], stdout=log,
                                     stderr=subprocess.STDOUT, env=env, cwd=self.tmp,
                                     start_new_session=True)

        def cleanup():
            if restarter.poll() is None:
                os.killpg(restarter.pid, signal.SIGKILL)
                restarter.wait(5)
        self.addCleanup(cleanup)

        self._waitFor(lambda: self._epoch() == 0, STARTUP_TIMEOUT, "epoch 0 serving")
        clients = LoadClients(self.port)
        self.addCleanup(clients.stop)
        # The kept-alive clients must hold a connection to the old epoch.
        self._waitFor(lambda: clients.served == len(clients.threads), STARTUP_TIMEOUT,
                      "every client served")
        for epoch in range(1, restarts + 1):
            if gate is not None:
                # Only the next epoch's worker processes are held.
                self._waitFor(lambda: len(re.findall(r"worker process \d .* serving",
                                                     self._logs())) >= 2,
                              STARTUP_TIMEOUT, "epoch 0's worker processes serving")
                with open(gate, "w"):
                    pass
            restarter.send_signal(signal.SIGHUP)
            if gate is not None:
                self._holdNewWorkers(gate, clients)
            self._waitFor(lambda: self._epoch() == epoch, STARTUP_TIMEOUT,
                          "epoch %d serving" % (epoch,))
            self._waitFor(lambda: self._logs().count("exited with code=0") == epoch,
                          PARENT_SHUTDOWN_TIME_S + 10, "epoch %d exiting" % (epoch - 1,))
        time.sleep(0.3)
        clients.stop()
        self.assertEqual(clients.errors, [])
        self.assertGreater(clients.ok, 50)
        self.assertGreaterEqual(clients.closes, restarts)

        logs = self._logs()
        lines = logs.splitlines()
        drains = [_timestamp(l) for l in lines if "closing and draining listeners" in l]
        stops = [_timestamp(l) for l in lines if "shutting down parent after drain" in l]
        exits = [_timestamp(l) for l in lines if "exited with code=0" in l]
        self.assertEqual(len(drains), restarts)
        if gate is not None:
            # Told to drain after the new epoch's worker processes serve.
            self.assertGreater(lines.index(_drainLine(lines)), _newEpochServingLine(lines))
        self.assertEqual(len(stops), restarts)
        for drained, stopped, exited in zip(drains, stops, exits):
            self.assertGreaterEqual(exited - drained, PARENT_SHUTDOWN_TIME_S - 0.1)
            # The new epoch stops the old one on time: after its last stats
            # (FINAL_STATS_WAIT_S at most). The old epoch's own exit then
            # takes what the machine gives it (its worker processes', the
            # interpreter's), bounded by the wait above.
            self.assertLess(stopped - drained, PARENT_SHUTDOWN_TIME_S + FINAL_STATS_WAIT_S + 1.0)
        self.assertIn("shutting down admin due to child startup", logs)
        self.assertIn("shutting down due to child request", logs)

        stats = adminStats(self.adminPort)
        self.assertEqual(stats["server.hot_restart_epoch"], restarts)
        self.assertEqual(stats["server.hot_restart_generation"], restarts + 1)
        if extraArgs:
            # The worker processes push their counts every half second.
            self._waitFor(lambda: adminStats(self.adminPort)["http.race.downstream_rq_2xx"]
                          >= clients.ok, 10, "the worker processes' last counts")
            stats = adminStats(self.adminPort)
        self.assertEqual(stats["http.race.downstream_rq_2xx"], clients.ok)
        self.assertEqual(stats.get("server.parent_connections", 0), 0)

        restarter.send_signal(signal.SIGTERM)
        self.assertEqual(restarter.wait(20), 0)
        self.assertIn("all children exited cleanly", self._logs())

    def test_badConfigLeavesOldEpochServing(self):
        """
        A new epoch whose config is bad exits 1 naming the field, before it
        speaks to the running epoch, which keeps its admin and listeners.
        """
        base = str(baseId())
        envoy = Envoy(configPath=self.configPath, cwd=self.tmp, adminPort=self.adminPort,
                      args=("--restart-epoch", "0", "--base-id", base))
        self.addCleanup(envoy.stop)
        envoy.waitReady()
        bad = os.path.join(self.tmp, "bad.yaml")
        with open(self.configPath) as f:
            text = f.read()
        with open(bad, "w") as f:
            f.write(text.replace("connect_timeout: 1s", "connect_timeout: soon"))
        rc, out, err = runTwistd(["-c", bad, "--restart-epoch", "1", "--base-id", base])
        self.assertEqual(rc, 1)
        self.assertIn("connect_timeout", err)
        self.assertNotIn("Traceback", err)
        self.assertEqual(envoy.admin("/ready"), (200, "LIVE\n"))
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        c.request("GET", "/")
        self.assertEqual(c.getresponse().status, 200)
        c.close()
        self.assertNotIn("shutting down admin", envoy.output()[1])

    def test_baseIdInUse(self):
        """
        A second epoch 0 on a base id in use exits 1 with Envoy's message;
        with C{--use-dynamic-base-id} it takes the next free one and writes
        it to C{--base-id-path}.
        """
        base = baseId()
        held = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(held.close)
        held.bind("\0envoy_domain_socket_parent_%d" % (base * 10,))
        path = os.path.join(self.tmp, "base-id")
        (rc, out, err), (rc2, out2, err2) = runTwistdAll([
            ["-c", self.configPath, "--mode", "init_only", "--restart-epoch", "0",
             "--base-id", str(base)],
            ["-c", self.configPath, "--mode", "init_only", "--use-dynamic-base-id",
             "--base-id", str(base), "--base-id-path", path]])
        self.assertEqual(rc, 1)
        self.assertIn("unable to bind domain socket with base_id=%d" % (base * 10,), err)
        self.assertIn("(see --base-id option)", err)
        self.assertEqual(rc2, 0, err2)
        with open(path) as f:
            self.assertEqual(f.read(), str(base + 1))
