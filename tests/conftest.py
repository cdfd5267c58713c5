"""
pytest-xdist's file scheduling (C{-n N --dist loadfile}, the suite's CI
command), with the files that take longest started first.

xdist hands out files with the most tests first, so a file of one long
test (the documentation build, a minute or more of CPU) starts last and
the whole run waits for it alone at the end. Starting the longest files
first lets the short ones fill in behind them.
"""

import pytest

#: Files whose tests take longest in all (the documentation build, the fuzz
#: targets, the descriptor walk, then the end-to-end files of most real
#: processes), longest first, as C{--durations=0} measured them on two
#: loaded cores; any file not listed follows in xdist's own order.
LONGEST_FIRST = [
    "tests/test_docs.py",
    "tests/e2e/test_overload.py",
    "tests/e2e/test_cli.py",
    "tests/fuzz/test_targets.py",
    "tests/e2e/test_http.py",
    "tests/e2e/test_l4.py",
    "tests/e2e/test_config_errors.py",
    "tests/e2e/test_daemon.py",
    "tests/e2e/test_xds_resources.py",
    "tests/e2e/test_hash_lb.py",
    "tests/e2e/test_grpc_xds.py",
    "tests/e2e/test_splice.py",
    "tests/e2e/test_drain.py",
    "tests/e2e/test_script.py",
    "tests/e2e/test_worker_processes.py",
    "tests/config/test_descriptor_walk.py",
]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class LongestFirst(LoadFileScheduling):
        _ordered = False

        def _assign_work_unit(self, node):
            # The work queue is complete when the first unit is assigned.
            if not self._ordered:
                self._ordered = True
                for scope in reversed(LONGEST_FIRST):
                    if scope in self.workqueue:
                        self.workqueue.move_to_end(scope, last=False)
            super()._assign_work_unit(node)

    return LongestFirst(config, log)
