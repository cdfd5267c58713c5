"""Tests for L{txenvoy.server.tap}: where logs go, the pidfile, --import."""

import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from txenvoy.server.options import ServerOptions
from txenvoy.server.tap import DAEMON_LOG_FILE, _logDestination, importModules, removeStalePidfile


class LogDestinationTests(SynchronousTestCase):

    def test_foregroundStderr(self):
        self.assertIsNone(_logDestination(ServerOptions(), {"nodaemon": True, "logfile": None}))

    def test_embeddedStderr(self):
        """The console script has no twistd config: stderr."""
        self.assertIsNone(_logDestination(ServerOptions(), None))

    def test_daemonTwistdLog(self):
        """A daemon's stderr is /dev/null: logs go to twistd.log."""
        self.assertEqual(_logDestination(ServerOptions(), {"nodaemon": False, "logfile": None}),
                         DAEMON_LOG_FILE)

    def test_logPathWins(self):
        self.assertEqual(_logDestination(ServerOptions(logPath="a.log"), {"nodaemon": False}),
                         "a.log")

    def test_twistdLogfile(self):
        self.assertEqual(_logDestination(ServerOptions(), {"logfile": "t.log"}), "t.log")
        self.assertIsNone(_logDestination(ServerOptions(), {"logfile": "-"}))


class StalePidfileTests(SynchronousTestCase):

    def test_stale(self):
        p = subprocess.Popen(["true"])
        p.wait()
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(str(p.pid))
        removeStalePidfile(path)
        self.assertFalse(os.path.exists(path))

    def test_liveKept(self):
        """A running process's pidfile is twistd's to refuse."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(str(os.getpid()))
        removeStalePidfile(path)
        self.assertTrue(os.path.exists(path))


class ImportTests(SynchronousTestCase):

    def test_imports(self):
        importModules(["json"])
        self.assertIn("json", sys.modules)

    def test_failureIsOneLine(self):
        err = self.assertRaises(SystemExit, importModules, ["txenvoy_no_such_module"])
        self.assertEqual(err.code, 1)
