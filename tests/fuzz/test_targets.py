"""
Short runs of every fuzz target (L{tests.fuzz}), as the test suite's part
of the fuzzing: each target runs its seed corpus and a bounded number of
inputs from the deterministic mutator in process, then a short
coverage-guided run under atheris in a child process, through the same
runner as the long runs.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import SharedFixture
from tests.fuzz import TARGETS, mutate
from tests.fuzz.run import seedDirectory

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def seeds(target):
    """The seed corpus of C{target}, sorted by file name."""
    directory = seedDirectory(target)
    names = sorted(os.listdir(directory))
    out = []
    for name in names:
        with open(os.path.join(directory, name), "rb") as f:
            out.append(f.read())
    return out


class SeedCorpusTests(SynchronousTestCase):
    """Every target has seeds, and a test below."""

    def test_everyTargetHasSeeds(self):
        for target in TARGETS:
            self.assertGreaterEqual(len(seeds(target)), 3, target)

    def test_everyTargetIsRun(self):
        for target in TARGETS:
            self.assertTrue(hasattr(MutatorTests, "test_" + target), target)
            self.assertTrue(hasattr(AtherisTests, "test_" + target), target)


class MutatorTests(SynchronousTestCase):
    """
    Each target on its seeds (crash inputs found so far among them) and
    then mutated inputs: at most C{COUNT} of them or C{SECONDS} of time.
    """

    COUNT = 2000
    SECONDS = 2.0

    def runTarget(self, target):
        from importlib import import_module

        module = import_module("tests.fuzz." + target)
        corpus = seeds(target)
        done = mutate.run(module.testOneInput, corpus, self.COUNT, self.SECONDS,
                          time.monotonic)
        self.assertGreaterEqual(done, len(corpus))

    def test_http_server(self):
        self.runTarget("http_server")

    def test_http_client(self):
        self.runTarget("http_client")

    def test_config_loader(self):
        self.runTarget("config_loader")

    def test_route_match(self):
        self.runTarget("route_match")

    def test_access_log_format(self):
        self.runTarget("access_log_format")

    def test_proxy_protocol(self):
        self.runTarget("proxy_protocol")

    def test_tls_client_hello(self):
        self.runTarget("tls_client_hello")


class AtherisTests(SharedFixture, SynchronousTestCase):
    """
    Each target for C{RUNS} inputs under atheris, with the command the
    README gives for long runs (instrumenting only what the target imports,
    to start quickly). The run must end without a crash, having covered
    something.

    The runs are mostly their interpreters starting, so all of them start
    together, before the first test, and each test reads its own.
    """

    RUNS = 300

    @classmethod
    def startFixture(cls):
        cls.work = tempfile.mkdtemp(prefix="txenvoy-atheris-")
        cls.runs = {}
        for target in TARGETS:
            work = os.path.join(cls.work, target)
            crashes = os.path.join(work, "crashes") + os.sep
            os.makedirs(crashes)
            command = [sys.executable, "-m", "tests.fuzz.run", target,
                       "--instrument=target", "-runs=%d" % (cls.RUNS,), "-seed=1",
                       # Deadlines only: the runs take seconds, a loaded
                       # machine may stretch them many times over.
                       "-max_total_time=300", "-artifact_prefix=" + crashes,
                       work, seedDirectory(target)]
            process = subprocess.Popen(command, cwd=REPO, stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            cls.runs[target] = (process, crashes)

    @classmethod
    def stopFixture(cls):
        for process, _ in cls.runs.values():
            if process.poll() is None:
                process.kill()
            process.wait()
            process.stdout.close()
        shutil.rmtree(cls.work, ignore_errors=True)

    def runAtheris(self, target):
        process, crashes = self.runs[target]
        stdout, _ = process.communicate(timeout=600)
        output = stdout.decode("utf-8", "replace")
        self.assertEqual(process.returncode, 0, output[-3000:])
        self.assertEqual(os.listdir(crashes), [], output[-3000:])
        self.assertIn("Done %d runs" % (self.RUNS,), output)
        coverage = [int(n) for n in re.findall(r"\bcov: (\d+)", output)]
        self.assertTrue(coverage and coverage[-1] > 0, output[-3000:])

    def test_http_server(self):
        self.runAtheris("http_server")

    def test_http_client(self):
        self.runAtheris("http_client")

    def test_config_loader(self):
        self.runAtheris("config_loader")

    def test_route_match(self):
        self.runAtheris("route_match")

    def test_access_log_format(self):
        self.runAtheris("access_log_format")

    def test_proxy_protocol(self):
        self.runAtheris("proxy_protocol")

    def test_tls_client_hello(self):
        self.runAtheris("tls_client_hello")
