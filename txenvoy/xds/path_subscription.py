# -*- test-case-name: tests.xds.test_file_xds -*-
"""
A file subscription (Envoy's C{FilesystemSubscriptionImpl}): a
C{DiscoveryResponse} read from a file at start and again each time a file
is moved into place (an atomic rename onto the path, or into the watched
directory), as Envoy reacts only to C{MovedTo}.

On Linux the main reactor is told by C{inotify}; elsewhere a one-second
stat poll notices the file changed.

The subscription counts Envoy's C{<prefix>.update_attempt},
C{update_success}, C{update_failure} (the file could not be read or
parsed), C{update_rejected} (the handler refused what it holds),
C{version} (xxHash64 of C{version_info}) and C{update_time}, and logs the
reason of every failure. It never raises into the reactor.
"""

import contextlib
import os
import time

from twisted.logger import Logger

from txenvoy.config.errors import ConfigError, _collectors, collectErrors
from txenvoy.upstream.hashing import xxHash64
from txenvoy.xds.directory_watch import POLL_INTERVAL  # noqa: F401 (the tests' poll)

log = Logger(namespace="config")

class FileSubscription:
    """
    Watch one L{txenvoy.xds.config_source.FileSource}.

    @ivar lastVersion: the C{version_info} of the last accepted update.
    @ivar lastUpdated: its wall-clock time.
    """

    #: Called once stopped (the worker processes' relay forgets it).
    afterStop = None

    def __init__(self, reactor, source, scope, readResponse, onUpdate):
        """
        @param scope: the stats scope, e.g. C{listener_manager.lds.}.
        @param readResponse: C{f(path)} returning C{(versionInfo,
            resources)}; raises L{ConfigError} for a file it cannot read.
        @param onUpdate: C{f(resources, versionInfo)}; raises
            L{ConfigError} to reject the update whole.
        """
        self.reactor = reactor
        self.source = source
        self._read = readResponse
        self._onUpdate = onUpdate
        self.attempt = scope.counter("update_attempt")
        self.success = scope.counter("update_success")
        self.failure = scope.counter("update_failure")
        self.rejected = scope.counter("update_rejected")
        scope.counter("update_empty")
        scope.counter("init_fetch_timeout")
        self.version = scope.gauge("version")
        self.updateTime = scope.gauge("update_time")
        self.lastVersion = None
        self.lastUpdated = None
        self._watch = None
        self._stamp = None

    def refresh(self):
        """Read the file and hand its resources on; count what happened."""
        self.attempt.inc()
        path = self.source.path
        self._stamp = self._statStamp()
        if self._watch is not None:
            self._watch.seen(self._stamp)
        try:
            with _ownErrors():
                versionInfo, resources = self._read(path)
        except ConfigError as e:
            log.warn("Filesystem config update failure: {path}: {reason}",
                     path=path, reason=e.message)
            self.failure.inc()
            return False
        try:
            with _ownErrors():
                self._onUpdate(resources, versionInfo)
        except ConfigError as e:
            log.warn("Filesystem config update rejected: {path}: {reason}",
                     path=path, reason=e.message)
            self.rejected.inc()
            return False
        except Exception:
            log.failure("Filesystem config update rejected: {path}", path=path)
            self.rejected.inc()
            return False
        now = time.time()
        self.success.inc()
        self.updateTime.set(int(now * 1000))
        self.version.set(xxHash64(versionInfo))
        self.lastVersion = versionInfo
        self.lastUpdated = now
        return True

    # Watching.

    def start(self):
        """
        Begin watching (the first read is the caller's L{refresh}). A file
        moved into place between that read and the watch is read now.
        """
        from txenvoy.xds.directory_watch import MovedIntoWatch

        self._watch = MovedIntoWatch(self.reactor, self._directory(), self._moved,
                                     self._statStamp)
        self._watch.seen(self._stamp)
        self._watch.start()
        self._watch.check()

    def stop(self):
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.stop()
        if self.afterStop is not None:
            self.afterStop()

    def _directory(self):
        if self.source.watchedDirectory is not None:
            return self.source.watchedDirectory
        return os.path.dirname(os.path.abspath(self.source.path)) or "."

    def _moved(self, name):
        if (name is not None and self.source.watchedDirectory is None
                and name != os.path.basename(self.source.path)):
            return
        self.refresh()

    def _statStamp(self):
        try:
            st = os.stat(self.source.path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)


@contextlib.contextmanager
def _ownErrors():
    """
    Collect the errors of one update by themselves, raised together at the
    end, apart from any collection running around it (the bootstrap's, for
    the first read while the server is built).
    """
    active = _collectors()
    saved = active[:]
    del active[:]
    try:
        with collectErrors():
            yield
    finally:
        active[:] = saved
