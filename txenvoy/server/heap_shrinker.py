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

Since free memory is given back on that schedule, glibc is told not to do
it on every C{free} (L{holdFreedMemory}), as tcmalloc does not: a worker
thread's arena otherwise gave its top back (C{madvise}) each time a few
MiB of body buffers were freed, and the next reads took page faults and
zeroed pages to get it again, a fifth of the proxy's CPU on 1 MiB
responses (bench (c)).
"""

import ctypes
import ctypes.util

from twisted.internet.task import LoopingCall

SHRINK_INTERVAL = 10.0
RELEASE_INTERVAL = 5.0


def _libcFunction(name, *argtypes):
    # glibc's function, returning an int; None where there is none.
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        function = getattr(libc, name)
    except (OSError, AttributeError):
        return None
    function.argtypes = list(argtypes)
    function.restype = ctypes.c_int
    return function


_mallocTrim = _libcFunction("malloc_trim", ctypes.c_size_t)

#: glibc's C{mallopt} parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

#: A free arena top larger than this is given back at once; below, it
#: waits for L{FreeMemoryReleaser}.
TRIM_THRESHOLD = 64 * 1024 * 1024

#: Blocks this large or larger get their own mapping, given back when
#: freed; smaller ones (every body buffer) come from the arenas. Setting a
#: trim threshold fixes this one too (glibc stops adapting it), so it is
#: set with it, above C{per_connection_buffer_limit_bytes}'s default.
MMAP_THRESHOLD = 4 * 1024 * 1024


_mallopt = _libcFunction("mallopt", ctypes.c_int, ctypes.c_int)


def holdFreedMemory(mallopt=_mallopt):
    """
    Keep freed memory in glibc's arenas up to L{TRIM_THRESHOLD} instead of
    giving each free top back to the system at once, and serve blocks
    under L{MMAP_THRESHOLD} from the arenas. Process-wide.

    @return: whether both were set (C{False} without glibc).
    """
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) & bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


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

    Once started, it is what gives memory back: glibc no longer trims on
    every C{free} (L{holdFreedMemory}, through C{hold}).
    """

    def __init__(self, reactor, interval=RELEASE_INTERVAL, release=releaseFreeMemory,
                 hold=holdFreedMemory):
        self._loop = LoopingCall(release)
        self._loop.clock = reactor
        self.interval = interval
        self.enabled = _mallocTrim is not None or release is not releaseFreeMemory
        self._hold = hold

    def start(self):
        if self.enabled and not self._loop.running:
            self._hold()
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
