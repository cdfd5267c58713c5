"""
Sphinx configuration of txenvoy's documentation: the narrative pages here,
the API reference built by pydoctor from the docstrings (as Twisted builds
its own), and pages generated from the running code (the command line and
the table of supported extensions) so they cannot drift.

Build with ``python -m sphinx -W -n -b html docs docs/_build/html``.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "_ext"))
# The extension table builds the test suite's configs.
sys.path.insert(0, REPO)

import txenvoy  # noqa: E402

project = "txenvoy"
author = "the txenvoy authors"
copyright = "the txenvoy authors"
version = release = txenvoy.__version__

extensions = ["sphinx.ext.intersphinx", "pydoctor.sphinx_ext.build_apidocs", "txenvoy_docs"]
# No network when the docs build (CI has none): nothing to fetch.
intersphinx_mapping = {}
exclude_patterns = ["_build", "_ext"]
html_theme = "alabaster"
html_static_path = []
nitpicky = True
# The API reference is pydoctor's; the narrative pages link to it by URL.
pydoctor_args = [
    "--project-name=txenvoy",
    "--project-version=" + release,
    "--docformat=epytext",
    "--html-output={outdir}/api",
    "--warnings-as-errors",
    os.path.join(REPO, "txenvoy"),
]
pydoctor_url_path = "api/"
