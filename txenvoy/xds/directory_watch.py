# -*- test-case-name: tests.xds.test_file_xds,tests.xds.test_sds_api -*-
"""
Noticing files moved into a directory, as Envoy's filesystem watcher does
(C{MovedTo}: an atomic rename into place): on Linux the reactor is told by
C{inotify}; elsewhere, or when inotify cannot be had, a one-second poll
compares a stamp of what is watched.
"""

from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.filepath import FilePath

log = Logger(namespace="config")

#: How often the stat poll looks, where there is no inotify.
POLL_INTERVAL = 1.0


class MovedIntoWatch:
    """
    Calls C{onMoved(name)} with the name of each file moved into
    C{directory}, or C{onMoved(None)} when the poll saw C{stamp()} change.
    """

    def __init__(self, reactor, directory, onMoved, stamp):
        """
        @param stamp: C{f()} returning what the poll compares (the stat of
            the files that matter).
        """
        self.reactor = reactor
        self.directory = directory
        self._onMoved = onMoved
        self._stamp = stamp
        self._last = stamp()
        self._notifier = None
        self._poll = None

    def start(self):
        try:
            from twisted.internet import inotify
        except ImportError:
            inotify = None
        if inotify is not None and hasattr(self.reactor, "addReader"):
            try:
                self._notifier = inotify.INotify(reactor=self.reactor)
                self._notifier.startReading()
                self._notifier.watch(FilePath(self.directory), mask=inotify.IN_MOVED_TO,
                                     callbacks=[self._moved])
                return
            except Exception as e:
                log.info("inotify unavailable for {path} ({e}); polling", path=self.directory,
                         e=e)
                self._stopNotifier()
        self._poll = LoopingCall(self.check)
        self._poll.clock = self.reactor
        self._poll.start(POLL_INTERVAL, now=False)

    def stop(self):
        self._stopNotifier()
        if self._poll is not None and self._poll.running:
            self._poll.stop()
        self._poll = None

    def _stopNotifier(self):
        notifier, self._notifier = self._notifier, None
        if notifier is not None:
            notifier.loseConnection()

    def _moved(self, ignored, filepath, mask):
        import os

        self._last = self._stamp()
        self._onMoved(os.fsdecode(filepath.basename()))

    def check(self):
        """Compare the stamp now (the poll; also right after starting)."""
        stamp = self._stamp()
        if stamp != self._last:
            self._last = stamp
            self._onMoved(None)

    def seen(self, stamp):
        """The caller read the files as of C{stamp}: the poll compares with it."""
        self._last = stamp
