# -*- test-case-name: tests.accesslog.test_buffered -*-
"""
What the loggers that send records over the network share (OpenTelemetry,
gRPC access log service, Fluentd): records made on any worker thread wait
in one buffer under a lock, and the main thread sends them every
C{flushInterval} seconds, or as soon as C{bufferSizeBytes} wait. The
buffer is bounded: past C{maxBufferedBytes} a record is dropped, never
waited for.
"""

import threading

from twisted.internet.task import LoopingCall


class RecordBuffer:
    """
    One logger's waiting records.

    @param flush: what the main thread calls to send them (it calls
        L{take}).
    @param taken: the counter of records kept; C{dropped}, of those the
        full buffer cost.
    @ivar bufferedBytes: the size of what waits.
    """

    def __init__(self, reactor, flush, taken, dropped, flushInterval=1.0,
                 bufferSizeBytes=16384, maxBufferedBytes=None):
        self._reactor = reactor
        self._flush = flush
        self._taken = taken
        self._dropped = dropped
        self.flushInterval = flushInterval
        self.bufferSizeBytes = bufferSizeBytes
        self.maxBufferedBytes = (maxBufferedBytes if maxBufferedBytes is not None
                                 else 2 * bufferSizeBytes)
        self._lock = threading.Lock()
        self._records = []
        self.bufferedBytes = 0
        self._flushPending = False
        self._loop = None

    def start(self):
        """Start the flush timer on the main reactor."""
        self._loop = LoopingCall(self._flush)
        self._loop.clock = self._reactor
        self._loop.start(self.flushInterval, now=False)

    def stop(self):
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def add(self, record, size):
        """
        Keep a record (any thread; never blocks): dropped and counted when
        the buffer is full; a full enough buffer is flushed at once.

        @return: whether it was kept.
        """
        with self._lock:
            if self.bufferedBytes + size > self.maxBufferedBytes:
                self._dropped.inc()
                return False
            self._records.append(record)
            self.bufferedBytes += size
            self._taken.inc()
            if self.bufferedBytes < self.bufferSizeBytes or self._flushPending:
                return True
            self._flushPending = True
        self._reactor.callFromThread(self._flush)
        return True

    def waiting(self):
        """Whether records wait."""
        with self._lock:
            return bool(self._records)

    def take(self):
        """@return: every waiting record, oldest first (the buffer is empty after)."""
        with self._lock:
            records, self._records = self._records, []
            self.bufferedBytes = 0
            self._flushPending = False
        return records

    def drop(self, count):
        """Count C{count} taken records as lost (they could not be sent)."""
        with self._lock:
            self._dropped.inc(count)
