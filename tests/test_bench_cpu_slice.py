# -*- test-case-name: tests.test_bench_cpu_slice -*-
"""
The CPU quota bench (d) gives each proxy (L{bench.cpu_slice}), written
against a cgroup tree laid out in a temporary directory: which files it
writes for cgroup v1 and v2, and what it says when neither is there.
"""

import os
import sys

from twisted.trial import unittest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from bench.cpu_slice import PERIOD_US, CpuSlice, CpuSliceUnavailable  # noqa: E402


def _read(*parts):
    with open(os.path.join(*parts)) as f:
        return f.read()


class CpuSliceTests(unittest.TestCase):

    def setUp(self):
        self.root = self.mktemp()
        self.v1 = os.path.join(self.root, "cpu")
        self.v2 = os.path.join(self.root, "unified")
        os.makedirs(self.v1)
        os.makedirs(self.v2)

    def test_v1Quota(self):
        """
        Under cgroup v1 the slice sets the period and a quota of C{share}
        of it, and takes a process by its pid.
        """
        open(os.path.join(self.v1, "cpu.cfs_quota_us"), "w").close()
        s = CpuSlice.create(0.5, name="b", v1=self.v1, v2=self.v2)
        self.assertEqual(s.share, 0.5)
        self.assertEqual(_read(s.path, "cpu.cfs_period_us"), str(PERIOD_US))
        self.assertEqual(_read(s.path, "cpu.cfs_quota_us"), str(PERIOD_US // 2))
        s.add(1234)
        self.assertEqual(_read(s.path, "cgroup.procs"), "1234")

    def test_v2Quota(self):
        """
        Under cgroup v2 the slice enables the cpu controller for the
        children of the root and writes C{cpu.max} as "quota period".
        """
        with open(os.path.join(self.v2, "cgroup.controllers"), "w") as f:
            f.write("cpuset cpu io memory pids\n")
        s = CpuSlice.create(0.25, name="b", v1=self.v1, v2=self.v2)
        self.assertEqual(_read(self.v2, "cgroup.subtree_control"), "+cpu")
        self.assertEqual(_read(s.path, "cpu.max"), "%d %d" % (PERIOD_US // 4, PERIOD_US))

    def test_removeGivesProcessesBack(self):
        """
        Removing the slice moves its processes back to the parent cgroup,
        one pid per write, as the kernel takes them.
        """
        open(os.path.join(self.v1, "cpu.cfs_quota_us"), "w").close()
        s = CpuSlice.create(0.5, name="b", v1=self.v1, v2=self.v2)
        with open(os.path.join(s.path, "cgroup.procs"), "w") as f:
            f.write("11\n12\n")
        s.remove()
        # A regular file keeps only the last write; cgroupfs appends each pid.
        self.assertEqual(_read(self.v1, "cgroup.procs"), "12")

    def test_noController(self):
        """Without a CPU controller, the error says so."""
        with open(os.path.join(self.v2, "cgroup.controllers"), "w") as f:
            f.write("memory pids\n")
        e = self.assertRaises(CpuSliceUnavailable, CpuSlice.create, 0.5,
                              v1=self.v1, v2=self.v2)
        self.assertIn("no cgroup CPU controller", str(e))

    def test_cannotWrite(self):
        """An unreadable tree (not root, no cgroupfs) says what failed."""
        e = self.assertRaises(CpuSliceUnavailable, CpuSlice.create, 0.5,
                              v1=self.v1, v2=os.path.join(self.root, "missing"))
        self.assertIn("cannot set a cgroup CPU quota", str(e))

    def test_shareBounds(self):
        """A share outside (0, 1] is a mistake, not a slice."""
        self.assertRaises(ValueError, CpuSlice.create, 0, v1=self.v1, v2=self.v2)
        self.assertRaises(ValueError, CpuSlice.create, 1.5, v1=self.v1, v2=self.v2)
