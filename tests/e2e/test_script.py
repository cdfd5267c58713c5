"""
End-to-end: the ways a user starts txenvoy besides C{twistd -n envoy}: the
C{txenvoy} console script, C{python -m txenvoy}, C{--import} of the user's
own filters, and the README's embedding examples, each a real process.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import REPO, STARTUP_TIMEOUT, freePort, processEnv, twistdCommand
from tests.e2e.test_daemon import echoListener
from tests.e2e.test_l4 import l4Config
from tests.e2e.test_ops import fileContents, waitFor

FILTERS = textwrap.dedent('''
    """A user's own network filter, registered with @extension."""
    from twisted.internet.protocol import Protocol
    from zope.interface import implementer

    from txenvoy.config.registry import Category, extension
    from txenvoy.interfaces import INetworkFilterFactory


    class Upper(Protocol):
        def dataReceived(self, data):
            self.transport.write(data.upper())


    @implementer(INetworkFilterFactory)
    class UpperFactory:
        terminal = True

        def buildFilter(self, connection, nextProtocol):
            return Upper()


    @extension(Category.NETWORK_FILTER, "mypkg.Upper", "mypkg.upper")
    def createUpper(value, context):
        return UpperFactory()
''')


def upperConfig(adminPort, port):
    return l4Config(adminPort, [{
        "name": "upper",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "mypkg.upper",
            "typed_config": {"@type": "type.googleapis.com/xds.type.v3.TypedStruct",
                             "type_url": "type.googleapis.com/mypkg.Upper", "value": {}},
        }]}],
    }], [])


def txenvoyCommand():
    """
    The C{txenvoy} console script; before the checkout is reinstalled, what
    that script runs.
    """
    script = os.path.join(os.path.dirname(sys.executable), "txenvoy")
    if os.path.exists(script):
        return [script]
    return [sys.executable, "-c", "from txenvoy.server.script import run; run()"]


def readmeBlock(after):
    """The first python code block in README.rst after the line C{after}."""
    with open(os.path.join(REPO, "README.rst")) as f:
        text = f.read()
    rest = text[text.index(after):]
    block = rest[rest.index(".. code-block:: python\n\n") + len(".. code-block:: python\n\n"):]
    lines = []
    for line in block.splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line)
    return textwrap.dedent("\n".join(lines))


def echoes(port, payload=b"ping"):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(payload)
    data = s.recv(len(payload))
    s.close()
    return data


class _Process(SynchronousTestCase):
    """A process started in a temporary folder holding envoy.yaml."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="txenvoy-script-")
        self.port, self.adminPort = freePort(), freePort()
        self.writeConfig(l4Config(self.adminPort, [echoListener("e", self.port)], []))

    def writeConfig(self, config):
        with open(os.path.join(self.dir, "envoy.yaml"), "w") as f:
            json.dump(config, f)

    def start(self, argv):
        self.err = open(os.path.join(self.dir, "stderr"), "w")
        self.addCleanup(self.err.close)
        self.proc = subprocess.Popen(argv, cwd=self.dir, env=processEnv(),
                                     stdout=subprocess.DEVNULL, stderr=self.err)
        self.addCleanup(self.kill)
        return self.proc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def waitPort(self, port):
        def up():
            self.assertIsNone(self.proc.poll(), self.stderr())
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False
        self.assertTrue(waitFor(up, STARTUP_TIMEOUT), self.stderr())

    def stderr(self):
        return fileContents(os.path.join(self.dir, "stderr"))


class ConsoleScriptTests(_Process):

    def test_declared(self):
        """pyproject declares the C{txenvoy} console script."""
        with open(os.path.join(REPO, "pyproject.toml")) as f:
            self.assertIn('txenvoy = "txenvoy.server.script:run"', f.read())

    def test_foregroundNoPidfile(self):
        """
        C{txenvoy -c envoy.yaml}: serves in the foreground, logs to stderr,
        writes no pidfile; Ctrl-C exits 0 at once.
        """
        self.start(txenvoyCommand() + ["-c", "envoy.yaml"])
        self.waitPort(self.port)
        self.assertEqual(echoes(self.port), b"ping")
        self.assertEqual(sorted(os.listdir(self.dir)), ["envoy.yaml", "stderr"])
        self.assertIn("[info][main] starting main dispatch loop", self.stderr())
        self.proc.send_signal(signal.SIGINT)
        self.assertEqual(self.proc.wait(10), 0)
        self.assertIn("caught SIGINT", self.stderr())

    def test_pythonDashM(self):
        """C{python -m txenvoy} is the same command."""
        p = subprocess.run([sys.executable, "-m", "txenvoy", "--version"], cwd=REPO,
                           env=processEnv(), capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("version: txenvoy/", p.stdout)
        p = subprocess.run([sys.executable, "-m", "txenvoy", "--mode", "validate", "-c",
                            "conf/demo.yaml"], cwd=REPO, env=processEnv(),
                           capture_output=True, text=True, timeout=60)
        self.assertEqual((p.returncode, p.stdout), (0, "configuration 'conf/demo.yaml' OK\n"),
                         p.stderr)

    def test_usage(self):
        p = subprocess.run(txenvoyCommand() + ["--help"], env=processEnv(),
                           capture_output=True, text=True, timeout=60)
        self.assertEqual((p.returncode, p.stderr), (0, ""))
        self.assertTrue(p.stdout.startswith("Usage: txenvoy [options]\n"), p.stdout)
        p = subprocess.run(txenvoyCommand() + ["--bogus"], env=processEnv(),
                           capture_output=True, text=True, timeout=60)
        self.assertEqual((p.returncode, p.stdout, p.stderr),
                         (1, "", "error: option --bogus not recognized (see: txenvoy --help)\n"))


class ImportTests(_Process):
    """C{--import}: a user's filters registered with @extension, from the command line."""

    def setUp(self):
        _Process.setUp(self)
        with open(os.path.join(self.dir, "myfilters.py"), "w") as f:
            f.write(FILTERS)
        self.writeConfig(upperConfig(self.adminPort, self.port))

    def test_twistd(self):
        self.start(twistdCommand() + ["-n", "--pidfile=", "envoy", "--import", "myfilters",
                                      "-c", "envoy.yaml"])
        self.waitPort(self.port)
        self.assertEqual(echoes(self.port, b"abc"), b"ABC")

    def test_consoleScript(self):
        self.start(txenvoyCommand() + ["--import", "json", "--import", "myfilters",
                                       "-c", "envoy.yaml"])
        self.waitPort(self.port)
        self.assertEqual(echoes(self.port, b"abc"), b"ABC")

    def test_withoutImportTheTypeIsUnknown(self):
        p = subprocess.run(txenvoyCommand() + ["-c", "envoy.yaml"], cwd=self.dir,
                           env=processEnv(), capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 1)
        self.assertIn("mypkg.Upper", p.stderr)

    def test_missingModule(self):
        p = subprocess.run(txenvoyCommand() + ["--import", "nosuchmodule", "-c", "envoy.yaml"],
                           cwd=self.dir, env=processEnv(), capture_output=True, text=True,
                           timeout=60)
        self.assertEqual((p.returncode, p.stdout), (1, ""))
        self.assertEqual(p.stderr, "error: --import nosuchmodule failed: ModuleNotFoundError: "
                                   "No module named 'nosuchmodule'\n")


class ReadmeEmbeddingTests(_Process):
    """The README's embedding examples run as written."""

    def test_plainScript(self):
        """C{startService()} plus C{reactor.run()}; SIGTERM stops it (exit 0)."""
        with open(os.path.join(self.dir, "app.py"), "w") as f:
            f.write(readmeBlock("From a plain script"))
        self.start([sys.executable, "app.py"])
        self.waitPort(self.port)
        self.assertEqual(echoes(self.port), b"ping")
        self.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.proc.wait(10), 0)

    def test_tac(self):
        """
        C{twistd -ny app.tac}; twistd ends a plain application by the
        signal it got, as for any Twisted application.
        """
        with open(os.path.join(self.dir, "app.tac"), "w") as f:
            f.write(readmeBlock("Or as a service of an application"))
        self.start(twistdCommand() + ["-ny", "app.tac", "--pidfile="])
        self.waitPort(self.port)
        self.assertEqual(echoes(self.port), b"ping")
        self.proc.send_signal(signal.SIGTERM)
        self.assertIn(self.proc.wait(10), (0, -signal.SIGTERM))


class ReadmeCommandsTests(SynchronousTestCase):

    def readmeCommands(self):
        with open(os.path.join(REPO, "README.rst")) as f:
            return re.findall(r"^    (python3 -m venv .*)$", f.read(), re.M)

    def test_ciRunsTheReadmeTestCommand(self):
        run, test = self.readmeCommands()[:2]
        with open(os.path.join(REPO, ".ci", "run")) as f:
            self.assertEqual(f.read().rstrip("\n").splitlines()[-1], test)
        self.assertIn("pytest", test)

    def test_runCommandInstallsNoTestExtras(self):
        """The run command installs what running needs, and runs txenvoy."""
        run = self.readmeCommands()[0]
        self.assertNotIn("[test]", run)
        self.assertNotIn("editable_mode=compat", run)
        self.assertIn("txenvoy -c conf/demo.yaml", run)
