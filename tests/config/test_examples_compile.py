"""
Every config of Envoy's example corpus either builds into a server (in
validate mode, binding nothing) or is refused only as "unsupported".
"""

import glob
import os

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import EXAMPLES
from txenvoy.config.errors import ConfigError
from txenvoy.config.loader import loadBootstrap
from txenvoy.server.server import Server


class ExampleCorpusTests(SynchronousTestCase):

    def test_everyExampleBuildsOrIsUnsupported(self):
        files = sorted(glob.glob(os.path.join(EXAMPLES, "*.yaml"))) + [
            os.path.join(EXAMPLES, "05-dynamic-fs", "envoy.yaml")]
        self.assertGreater(len(files), 10)
        cwd = os.getcwd()
        os.chdir(EXAMPLES)
        self.addCleanup(os.chdir, cwd)
        results = {}
        for path in files:
            name = os.path.relpath(path, EXAMPLES)
            try:
                Server(Clock(), loadBootstrap(name), validateOnly=True)
                results[name] = "OK"
            except ConfigError as e:
                self.assertIn("unsupported", str(e), name)
                results[name] = str(e)
        self.assertEqual(results["06-tcp-proxy.yaml"], "OK")
        self.assertEqual(results["12-bootstrap-ops.yaml"], "OK")
