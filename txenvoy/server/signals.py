# -*- test-case-name: tests.server.test_signals -*-
"""
What the process does on a signal (Envoy's C{RunHelper} signal wiring).

 - SIGINT (Ctrl-C): exit at once, as Envoy does.
 - SIGTERM: stop accepting and let open connections finish, up to
   C{--shutdown-drain-time-s} (txenvoy's addition; Envoy exits at once);
   the exit comes as soon as the last connection closes.
 - A second SIGTERM or SIGINT while draining: exit at once.
 - SIGUSR1: reopen the log files (access logs and C{--log-path}), for
   logrotate without C{copytruncate}.
 - SIGHUP: logged and ignored, as Envoy does (hot restart is driven from
   outside).

Handlers only post to the main reactor; the work happens there.
"""

import signal

from twisted.logger import Logger

log = Logger(namespace="main")


class SignalHandlers:
    """
    @param reactor: the main reactor (C{callFromThread}, C{stop}).
    @param server: the L{txenvoy.server.server.Server}.
    @param reopenLogs: called on SIGUSR1, on the reactor.
    """

    def __init__(self, reactor, server, reopenLogs):
        self._reactor = reactor
        self._server = server
        self._reopenLogs = reopenLogs
        self.stopping = False

    def install(self, setSignal=signal.signal):
        """Replace the reactor's own SIGINT/SIGTERM handlers (main thread only)."""
        post = self._reactor.callFromThread
        setSignal(signal.SIGINT, lambda *a: post(self.interrupt))
        setSignal(signal.SIGTERM, lambda *a: post(self.terminate))
        setSignal(signal.SIGHUP, lambda *a: post(self.hangUp))
        setSignal(signal.SIGUSR1, lambda *a: post(self.userOne))

    def interrupt(self):
        """SIGINT: exit now."""
        log.warn("caught SIGINT")
        self._exitNow()

    def terminate(self):
        """SIGTERM: drain, then exit; a second one exits now."""
        if self.stopping:
            self._exitNow()
            return
        log.warn("caught ENVOY_SIGTERM: no longer accepting connections; a second SIGTERM "
                 "or SIGINT exits at once")
        self.stopping = True
        self._stopReactor()

    def hangUp(self):
        log.warn("caught and eating SIGHUP. See documentation for how to hot restart.")

    def userOne(self):
        log.warn("caught SIGUSR1. Reopening access logs.")
        self._reopenLogs()

    def _exitNow(self):
        if self.stopping:
            log.warn("exiting now: closing every open connection")
        self._server.exitNow()
        if not self.stopping:
            self.stopping = True
            self._stopReactor()

    def _stopReactor(self):
        if self._reactor.running:
            self._reactor.stop()
