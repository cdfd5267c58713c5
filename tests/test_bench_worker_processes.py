# -*- test-case-name: tests.test_bench_worker_processes -*-
"""
How L{bench.worker_processes} reads its runs: medians over interleaved
rounds, and the growth in CPU per request from one worker to two that
txenvoy's figure is set against Envoy's.
"""

import os
import sys

from twisted.trial import unittest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from bench.worker_processes import command, growth, medians  # noqa: E402


def _run(proxy, processes, cpu, rps=1000.0, share=None, errors=0):
    return {"proxy": proxy, "processes": processes, "rps": rps, "p99_ms": 10.0,
            "requests": 100, "counted": 100, "errors": errors, "cpu_us_per_rq": cpu,
            "main_share": share, "cpu_s": 1.0}


class MediansTests(unittest.TestCase):

    def test_onePerShapeInRunOrder(self):
        """
        One row per proxy and worker count, in the order the shapes first
        ran, each rate the median of its rounds.
        """
        runs = [_run("txenvoy", 1, 190.0), _run("txenvoy", 2, 210.0, share=0.01),
                _run("Envoy", 1, 120.0), _run("Envoy", 2, 150.0),
                _run("Envoy", 1, 100.0), _run("Envoy", 2, 140.0),
                _run("txenvoy", 1, 150.0), _run("txenvoy", 2, 160.0, share=0.03),
                _run("txenvoy", 1, 170.0), _run("txenvoy", 2, 180.0, share=0.02)]
        rows = medians(runs)
        self.assertEqual([(r["proxy"], r["processes"]) for r in rows],
                         [("txenvoy", 1), ("txenvoy", 2), ("Envoy", 1), ("Envoy", 2)])
        self.assertEqual(rows[0]["cpu_us_per_rq"], 170.0)
        self.assertEqual(rows[0]["cpu_range"], [190.0, 150.0, 170.0])
        self.assertEqual(rows[1]["main_share"], 0.02)
        self.assertEqual(rows[2]["cpu_us_per_rq"], 110.0)
        self.assertIsNone(rows[2]["main_share"])

    def test_countsSummed(self):
        """Requests and errors add up over the rounds, so one failed run shows."""
        rows = medians([_run("txenvoy", 2, 100.0), _run("txenvoy", 2, 100.0, errors=3)])
        self.assertEqual((rows[0]["requests"], rows[0]["errors"]), (200, 3))


class GrowthTests(unittest.TestCase):

    def test_mostOverFewest(self):
        """Growth is CPU per request with the most workers over the fewest."""
        rows = medians([_run("Envoy", 1, 120.0), _run("Envoy", 2, 150.0)])
        ratio, one, two = growth(rows, "Envoy")
        self.assertAlmostEqual(ratio, 1.25)
        self.assertEqual((one["processes"], two["processes"]), (1, 2))

    def test_oneShapeHasNoGrowth(self):
        """With a single worker count there is nothing to compare."""
        self.assertIsNone(growth(medians([_run("txenvoy", 1, 100.0)]), "txenvoy"))


class CommandTests(unittest.TestCase):

    def test_envoyWorkersAreThreads(self):
        """Envoy's counterpart of M worker processes is --concurrency M."""
        cmd = command("Envoy", "/tmp/c.yaml", 2)
        self.assertEqual(cmd[cmd.index("--concurrency") + 1], "2")
        self.assertIn("--disable-hot-restart", cmd)

    def test_txenvoyWorkerProcesses(self):
        """txenvoy runs M worker processes of one worker thread each."""
        cmd = command("txenvoy", "/tmp/c.yaml", 2)
        self.assertEqual(cmd[cmd.index("--worker-processes") + 1], "2")
        self.assertEqual(cmd[cmd.index("--concurrency") + 1], "1")
