# -*- test-case-name: tests.server.test_overload_manager -*-
"""
The C{shrink_heap} overload action (Envoy's C{HeapShrinker}): while it is
saturated, every 10 s give the allocator's free memory back to the system
and count C{overload.envoy.overload_actions.shrink_heap.shrink_count}.

Envoy asks tcmalloc to release free pages. CPython allocates through
glibc's malloc (its own small-object arenas are returned as soon as they
are empty), so the equivalent is glibc's C{malloc_trim(0)}, which gives
back the free tops and free pages of every malloc arena. Where there is no
glibc the shrink is counted and does nothing.
"""

import ctypes
import ctypes.util

from twisted.internet.task import LoopingCall

SHRINK_INTERVAL = 10.0
RELEASE_INTERVAL = 5.0


def _loadMallocTrim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_mallocTrim = _loadMallocTrim()


def releaseFreeMemory():
    """
    Return the allocator's free memory to the system (Envoy's
    C{Memory::Utils::releaseFreeMemory}).

    @return: whether anything was released (C{False} without glibc).
    """
    if _mallocTrim is None:
        return False
    return bool(_mallocTrim(0))


class FreeMemoryReleaser:
    """
    Gives free memory back every C{interval} seconds, overloaded or not.

    tcmalloc returns free pages to the system on its own over time; glibc
    keeps what a burst of requests freed (only the top of the main heap is
    ever trimmed by itself), so after 20,000 mutated requests a process
    kept about 8 MB it no longer used (C{bench/fuzz_memory.py}). A
    C{malloc_trim} costs well under a millisecond at this size.
    """

    def __init__(self, reactor, interval=RELEASE_INTERVAL, release=releaseFreeMemory):
        self._loop = LoopingCall(release)
        self._loop.clock = reactor
        self.interval = interval
        self.enabled = _mallocTrim is not None or release is not releaseFreeMemory

    def start(self):
        if self.enabled and not self._loop.running:
            self._loop.start(self.interval, now=False)

    def stop(self):
        if self._loop.running:
            self._loop.stop()


class HeapShrinker:
    """Runs L{releaseFreeMemory} every 10 s while the action is saturated."""

    def __init__(self, reactor, stats, interval=SHRINK_INTERVAL):
        self._count = stats.counter("overload.envoy.overload_actions.shrink_heap.shrink_count")
        self._loop = LoopingCall(self._shrink)
        self._loop.clock = reactor
        self._interval = interval

    def setActive(self, active):
        if active and not self._loop.running:
            self._loop.start(self._interval, now=False)
        elif not active and self._loop.running:
            self._loop.stop()

    def _shrink(self):
        releaseFreeMemory()
        self._count.inc()

    def stop(self):
        self.setActive(False)
