"""
A share of one core for a proxy, enforced by a cgroup CPU quota.

Bulk TCP (workload d) is cheap per byte for the proxy, so on a two-core
machine the load core (sender and sink) runs out before the proxy's core
does, and the ratio measures the rig. Giving each proxy the same fraction
of its core (a slower core, in effect) makes the proxy what runs out: its
throughput is then bytes per CPU-second, the per-core figure issue 14 asks
for. Needs root and a cgroup CPU controller (v1 C{cpu} or v2 C{cpu.max});
L{CpuSlice.create} says why not otherwise.
"""

import os

#: The quota's period. Short, so that a throttled proxy stalls for
#: milliseconds at a time, which its socket buffers absorb, not for the
#: default 100 ms.
PERIOD_US = 10000

_V1 = "/sys/fs/cgroup/cpu"
_V2 = "/sys/fs/cgroup"


class CpuSliceUnavailable(Exception):
    """No cgroup CPU quota can be set here; the message says why."""


class CpuSlice:
    """
    One cgroup whose processes share C{share} of a core.

    @ivar share: the fraction of a core, 0 < share <= 1.
    """

    def __init__(self, path, share):
        self.path = path
        self.share = share

    @classmethod
    def create(cls, share, name=None, v1=_V1, v2=_V2):
        """
        A new cgroup with the quota set, under the cgroup v1 C{cpu}
        hierarchy C{v1} or else the v2 one C{v2}; L{CpuSliceUnavailable}
        if neither can have one.
        """
        if not 0 < share <= 1:
            raise ValueError("share must be in (0, 1], not %r" % (share,))
        name = name or "txenvoy-bench-%d" % (os.getpid(),)
        quota = int(share * PERIOD_US)
        try:
            if os.path.exists(os.path.join(v1, "cpu.cfs_quota_us")):
                path = os.path.join(v1, name)
                os.makedirs(path, exist_ok=True)
                _write(os.path.join(path, "cpu.cfs_period_us"), PERIOD_US)
                _write(os.path.join(path, "cpu.cfs_quota_us"), quota)
            elif "cpu" in _read(os.path.join(v2, "cgroup.controllers")).split():
                _write(os.path.join(v2, "cgroup.subtree_control"), "+cpu")
                path = os.path.join(v2, name)
                os.makedirs(path, exist_ok=True)
                _write(os.path.join(path, "cpu.max"), "%d %d" % (quota, PERIOD_US))
            else:
                raise CpuSliceUnavailable("no cgroup CPU controller")
        except OSError as e:
            raise CpuSliceUnavailable("cannot set a cgroup CPU quota: %s" % (e,))
        return cls(path, share)

    def add(self, pid):
        """Move process C{pid}, all its threads and its later children, into the slice."""
        _write(os.path.join(self.path, "cgroup.procs"), pid)

    def remove(self):
        """Give the slice's processes back to the root cgroup and delete it."""
        root = os.path.dirname(self.path)
        for pid in _read(os.path.join(self.path, "cgroup.procs")).split():
            try:
                _write(os.path.join(root, "cgroup.procs"), pid)
            except OSError:
                pass                             # it exited meanwhile
        try:
            os.rmdir(self.path)
        except OSError:
            pass


def _read(path):
    with open(path) as f:
        return f.read()


def _write(path, value):
    with open(path, "w") as f:
        f.write(str(value))
