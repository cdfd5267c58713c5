"""
The documentation builds without a warning or a broken reference (Sphinx
C{-W -n}, and pydoctor's API reference with C{--warnings-as-errors}), its
generated pages say what the code does, and the tutorial's tests pass.
"""

import os
import subprocess
import sys
import tempfile

from twisted.trial.unittest import SynchronousTestCase

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")
sys.path.insert(0, os.path.join(DOCS, "tutorial"))

# The tutorial's own tests, run with the suite.
from test_apikey import ApiKeyTests  # noqa: E402,F401


class DocsBuildTests(SynchronousTestCase):

    def test_build(self):
        """
        The one documented command builds the site: the narrative pages,
        the API reference, the command line and the extension table.
        """
        out = tempfile.mkdtemp(prefix="txenvoy-docs-")
        result = subprocess.run(
            [sys.executable, "-m", "sphinx", "-W", "-n", "-q", "-b", "html", DOCS, out],
            # A hang guard: the build is some 50 s of CPU, many times that
            # on a loaded machine.
            capture_output=True, text=True, timeout=1800)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

        def page(name):
            with open(os.path.join(out, name), encoding="utf-8") as f:
                return f.read()

        extensions = page("extensions.html")
        self.assertIn("envoy.extensions.filters.http.router.v3.Router", extensions)
        # The refused fields of each extension's own message.
        self.assertIn("fields refused", extensions)
        self.assertIn("envoy.extensions.filters.http.composite.v3.Composite", extensions)
        self.assertIn("--config-path", page("cli.html"))
        self.assertIn("HttpProxyHarness", page("api/txenvoy.testing.html"))
        self.assertIn("ApiKeyFilter", page("tutorial/python-filter.html"))
