"""
End-to-end: C{twistd envoy} without C{-n} (daemon mode), and the log file
an operator rotates: a busy port fails the launcher on its terminal, logs go
somewhere, the pidfile is handled once, SIGUSR1 reopens C{--log-path}.
"""

import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import STARTUP_TIMEOUT, Envoy, freePort, processEnv, twistdCommand
from tests.e2e.test_l4 import l4Config
from tests.e2e.test_ops import fileContents, waitFor


def echoListener(name, port):
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.echo",
            "typed_config": {"@type": "type.googleapis.com/"
                                      "envoy.extensions.filters.network.echo.v3.Echo"}}]}],
    }


def pidAlive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class DaemonTests(SynchronousTestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="txenvoy-daemon-")
        self.port, self.adminPort = freePort(), freePort()
        self.config = os.path.join(self.dir, "envoy.yaml")
        with open(self.config, "w") as f:
            json.dump(l4Config(self.adminPort, [echoListener("e", self.port)], []), f)
        self.pidfile = os.path.join(self.dir, "twistd.pid")

    def launch(self, *args, twistdArgs=()):
        """Run the daemon launcher to completion; stops the daemon at cleanup."""
        p = subprocess.run(
            twistdCommand() + ["--pidfile", self.pidfile] + list(twistdArgs)
            + ["envoy", "-c", self.config] + list(args),
            cwd=self.dir, env=processEnv(), capture_output=True, text=True,
            timeout=2 * STARTUP_TIMEOUT)
        self.addCleanup(self.stopDaemon)
        return p.returncode, p.stdout, p.stderr

    def daemonPid(self):
        with open(self.pidfile) as f:
            return int(f.read())

    def stopDaemon(self, sig=signal.SIGTERM):
        if not os.path.exists(self.pidfile):
            return
        pid = self.daemonPid()
        if pidAlive(pid):
            os.kill(pid, sig)
            if not waitFor(lambda: not pidAlive(pid), 15):
                os.kill(pid, signal.SIGKILL)

    def echo(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        s.sendall(b"ping")
        data = s.recv(4)
        s.close()
        return data

    def test_busyPortFailsTheLauncher(self):
        """
        A port in use: the launcher exits 1 with the address on its
        terminal, leaving no pidfile and no process behind.
        """
        busy = socket.socket()
        busy.bind(("127.0.0.1", self.port))
        busy.listen(1)
        self.addCleanup(busy.close)
        start = time.monotonic()
        rc, out, err = self.launch()
        self.assertEqual(rc, 1, (out, err))
        # No wait beyond a start's (a loaded machine's).
        self.assertLess(time.monotonic() - start, STARTUP_TIMEOUT)
        self.assertIn("cannot bind '127.0.0.1:%d': Address already in use" % (self.port,), err)
        self.assertFalse(os.path.exists(self.pidfile))
        self.assertFalse(os.path.exists(os.path.join(self.dir, "twistd.log")))

    def test_busyAdminPortFailsTheLauncher(self):
        """The admin's port in use: the whole message on the terminal, exit 1."""
        busy = socket.socket()
        busy.bind(("127.0.0.1", self.adminPort))
        busy.listen(1)
        self.addCleanup(busy.close)
        rc, out, err = self.launch()
        self.assertEqual((rc, out), (1, ""))
        self.assertIn("cannot bind '127.0.0.1:%d'" % (self.adminPort,), err)
        self.assertTrue(err.endswith("Address already in use\n"), err)
        self.assertFalse(os.path.exists(self.pidfile))

    def test_startAndStopLogsToTwistdLog(self):
        """
        Without --log-path, the daemon logs to twistd.log, as any twistd
        application; SIGTERM stops it and removes the pidfile.
        """
        rc, out, err = self.launch()
        self.assertEqual((rc, out, err), (0, "", ""))
        self.assertEqual(self.echo(), b"ping")
        with urllib.request.urlopen("http://127.0.0.1:%d/ready" % (self.adminPort,),
                                    timeout=5) as r:
            self.assertEqual(r.read(), b"LIVE\n")
        logPath = os.path.join(self.dir, "twistd.log")
        self.assertTrue(waitFor(lambda: "[info][main] starting main dispatch loop"
                                in fileContents(logPath)), fileContents(logPath))
        pid = self.daemonPid()
        os.kill(pid, signal.SIGTERM)
        self.assertTrue(waitFor(lambda: not pidAlive(pid), 10))
        self.assertFalse(os.path.exists(self.pidfile))
        self.assertIn("caught ENVOY_SIGTERM", fileContents(logPath))

    def test_twistdLogfile(self):
        """twistd's own --logfile gets the application log."""
        rc, _, err = self.launch(twistdArgs=["--logfile", "app.log"])
        self.assertEqual(rc, 0, err)
        logPath = os.path.join(self.dir, "app.log")
        self.assertTrue(waitFor(lambda: "starting main dispatch loop" in fileContents(logPath)))

    def test_logfileAndLogPathRefused(self):
        rc, out, err = self.launch("--log-path", "b.log", twistdArgs=["--logfile", "a.log"])
        self.assertEqual((rc, out), (1, ""))
        self.assertIn("both twistd's --logfile (a.log) and --log-path (b.log) are given: "
                      "use --log-path alone", err)

    def test_stalePidfileOnceAtWarning(self):
        """A stale pidfile is removed with one warning, not two criticals."""
        dead = subprocess.Popen(["true"])
        dead.wait()
        with open(self.pidfile, "w") as f:
            f.write(str(dead.pid))
        rc, out, err = self.launch("--log-path", "app.log")
        self.assertEqual((rc, out, err), (0, "", ""))
        logPath = os.path.join(self.dir, "app.log")
        self.assertTrue(waitFor(lambda: "starting main dispatch loop" in fileContents(logPath)))
        text = fileContents(logPath)
        self.assertEqual(text.count("stale pidfile"), 1, text)
        self.assertIn("[warning][main] removed stale pidfile", text)
        self.assertNotIn("critical", text)


class LogReopenTests(SynchronousTestCase):

    def test_sigusr1ReopensLogPath(self):
        """
        logrotate without copytruncate: the log file is moved away, SIGUSR1
        makes txenvoy write to a new file at --log-path.
        """
        tmp = tempfile.mkdtemp(prefix="txenvoy-log-")
        logPath = os.path.join(tmp, "app.log")
        adminPort = freePort()
        envoy = Envoy(l4Config(adminPort, [], []), args=("--log-path", logPath),
                      adminPort=adminPort)
        self.addCleanup(envoy.stop)
        envoy.waitReady()
        self.assertTrue(waitFor(lambda: "starting main dispatch loop" in fileContents(logPath)))
        os.rename(logPath, logPath + ".1")
        envoy.proc.send_signal(signal.SIGUSR1)
        self.assertTrue(waitFor(lambda: os.path.exists(logPath)))
        envoy.proc.send_signal(signal.SIGTERM)
        self.assertEqual(envoy.proc.wait(10), 0)
        self.assertIn("shutting down server instance", fileContents(logPath))
        self.assertNotIn("shutting down server instance", fileContents(logPath + ".1"))
        self.assertIn("caught SIGUSR1. Reopening access logs.", fileContents(logPath + ".1"))


class AdminAddressPathTests(SynchronousTestCase):

    def test_adminAddressPath(self):
        """
        Envoy: --admin-address-path holds the admin's ip:port (no newline)
        once it listens.
        """
        tmp = tempfile.mkdtemp(prefix="txenvoy-admin-")
        path = os.path.join(tmp, "admin")
        config = l4Config(0, [], [])
        envoy = Envoy(config, args=("--admin-address-path", path))
        self.addCleanup(envoy.stop)
        self.assertTrue(waitFor(lambda: re.match(r"127\.0\.0\.1:[1-9]\d*$", fileContents(path))),
                        envoy.output())
        host, _, port = fileContents(path).rpartition(":")
        self.assertEqual(host, "127.0.0.1")
        envoy.adminPort = int(port)
        envoy.waitReady()


class LogFormatTests(SynchronousTestCase):

    def test_logFormat(self):
        """Envoy's --log-format changes the application log's lines."""
        adminPort = freePort()
        envoy = Envoy(l4Config(adminPort, [], []), args=("--log-format", "%L|%l|%n|%v"),
                      adminPort=adminPort)
        self.addCleanup(envoy.stop)
        envoy.waitReady()
        self.assertIn("I|info|main|starting main dispatch loop\n", envoy.output()[1])
