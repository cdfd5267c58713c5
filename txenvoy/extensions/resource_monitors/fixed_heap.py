# -*- test-case-name: tests.extensions.resource_monitors.test_fixed_heap -*-
"""
C{envoy.resource_monitors.fixed_heap}: memory in use as a fraction of
C{max_heap_size_bytes}.

Envoy measures its tcmalloc heap less the free and unmapped pages: the
memory the process really holds. For a Python process the same quantity is
its resident set size, read from C{/proc/self/statm}: one small read,
about 10 us, every C{refresh_interval}. The alternatives are worse:
C{tracemalloc} slows every allocation (and counts only Python objects, not
OpenSSL's or the allocator's own arenas), C{sys.getallocatedblocks} counts
blocks but not bytes, and glibc's C{mallinfo2} walks every arena under its
lock and misses what is mapped outside malloc. RSS is also what a container
memory limit or the OOM killer counts, which is what the operator sizes
C{max_heap_size_bytes} against. Where C{/proc} is missing the update fails
(C{overload.<name>.failed_updates}).
"""

import os

from zope.interface import implementer

from txenvoy.config.registry import Category, extension
from txenvoy.server.overload_manager import IResourceMonitor

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def residentBytes(path="/proc/self/statm"):
    """
    This process's resident set size in bytes.

    @raise OSError: where C{path} cannot be read.
    """
    with open(path, "rb") as f:
        fields = f.read().split()
    return int(fields[1]) * _PAGE_SIZE


@implementer(IResourceMonitor)
class FixedHeapMonitor:
    """
    @ivar maxHeapSizeBytes: the configured limit.
    """

    def __init__(self, maxHeapSizeBytes, measure=residentBytes):
        self.maxHeapSizeBytes = maxHeapSizeBytes
        self._measure = measure

    def updateResourceUsage(self, callbacks):
        try:
            used = self._measure()
        except (OSError, ValueError, IndexError) as e:
            callbacks.onFailure(e)
            return
        callbacks.onSuccess(used / float(self.maxHeapSizeBytes))


@extension(Category.RESOURCE_MONITOR,
           "envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig",
           "envoy.resource_monitors.fixed_heap")
def createFixedHeap(message, context):
    # Proto constraints (a limit above 0) are checked when the config loads.
    return FixedHeapMonitor(message.max_heap_size_bytes)
