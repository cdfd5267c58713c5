# -*- test-case-name: tests.e2e.test_hot_restart -*-
"""
An C{--import} module the hot restart tests give txenvoy: in a worker
process (not the main one), while the file C{$TXENVOY_TEST_WORKER_GATE}
names exists, the import waits, so the worker process does not serve
until the test removes the file; meanwhile the file's name with
C{.held.<pid>} appended exists. The test decides how long a new epoch's
worker processes take to start; no timing is assumed.
"""

import os
import sys
import time

#: Environment variable naming the gate file.
GATE_ENV = "TXENVOY_TEST_WORKER_GATE"

#: The longest a worker process waits (a test that failed leaves no
#: process waiting for ever).
LONGEST_WAIT_S = 60.0


def inWorkerProcess():
    """Worker processes run C{python -c ...}; the main process is C{twistd}."""
    return sys.argv[:1] == ["-c"]


def waitWhileGated(path, longest=LONGEST_WAIT_S):
    """Wait while C{path} exists, saying so with C{path.held.<pid>}."""
    held = "%s.held.%d" % (path, os.getpid())
    with open(held, "w"):
        pass
    deadline = time.monotonic() + longest
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)


if os.environ.get(GATE_ENV) and inWorkerProcess():
    waitWhileGated(os.environ[GATE_ENV])
