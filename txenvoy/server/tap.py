# -*- test-case-name: tests.server.test_tap -*-
"""
The C{twistd envoy} entry point (Envoy's C{main()} / C{MainCommon}).

This is the one module of txenvoy that uses the global reactor: twistd owns
it and hands it to the server as the main dispatcher's reactor.
"""

import signal
import sys

from twisted.application.service import MultiService
from twisted.logger import ILogObserver, Logger
from twisted.python import usage

from txenvoy.config.errors import ConfigError
from txenvoy.server.options import Options  # noqa: F401  (twistd reads tap.Options)

log = Logger(namespace="main")


def _fail(message):
    """Print one clear line for the user and exit 1, as Envoy does."""
    sys.stderr.write(message.rstrip("\n") + "\n")
    sys.stderr.flush()
    sys.exit(1)


class _TwistdRoot(MultiService):
    """
    The service twistd runs: the server plus what only a process entry
    point does (log observer, signals, fatal start-up errors).
    """

    def __init__(self, server, observer):
        MultiService.__init__(self)
        self.server = server
        self._observer = observer
        server.setServiceParent(self)

    def setServiceParent(self, parent):
        # twistd asks the application for its log observer after makeService.
        if self._observer is not None:
            parent.setComponent(ILogObserver, self._observer)
        MultiService.setServiceParent(self, parent)

    def privilegedStartService(self):
        from txenvoy.server.worker import BindError

        try:
            MultiService.privilegedStartService(self)
        except (BindError, ConfigError) as e:
            _fail("error initializing config '%s': %s" % (self.server.options.configPath, e))

    def startService(self):
        reactor = self.server.reactor
        # Envoy eats SIGHUP (hot restart is driven from outside) and reopens
        # access logs on SIGUSR1.
        signal.signal(signal.SIGHUP, lambda *a: reactor.callFromThread(
            log.warn, "caught and eating SIGHUP. See documentation for how to hot restart."))
        signal.signal(signal.SIGUSR1, lambda *a: reactor.callFromThread(self._reopenLogs))
        MultiService.startService(self)

    def stopService(self):
        # Envoy exits 0 after SIGTERM or SIGINT; twistd would re-raise the
        # signal after the reactor stops (exit status 143), so forget it.
        if getattr(self.server.reactor, "_exitSignal", None) is not None:
            self.server.reactor._exitSignal = None
        return MultiService.stopService(self)

    def _reopenLogs(self):
        log.warn("caught SIGUSR1. Reopening access logs.")
        self.server.accessLogManager.reopen()


def makeService(options):
    """
    Build the server from the command line; in C{validate} mode check the
    config and exit without binding anything.
    """
    from twisted.internet import reactor  # entry point

    from txenvoy.config.loader import loadBootstrap
    from txenvoy.server.logging import makeObserver
    from txenvoy.server.server import Server

    opts = options.serverOptions()
    try:
        bootstrap = loadBootstrap(opts.configPath or None, opts.configYaml or None,
                                  opts.serviceNode, opts.serviceCluster)
        server = Server(reactor, bootstrap, opts, validateOnly=(opts.mode == "validate"))
    except ConfigError as e:
        _fail("error initializing configuration '%s': %s" % (opts.configPath, e))
    if opts.mode == "validate":
        sys.stdout.write("configuration '%s' OK\n" % (opts.configPath,))
        sys.stdout.flush()
        sys.exit(0)
    server.logLevels.setAll(opts.logLevel)
    if opts.componentLogLevel:
        for pair in opts.componentLogLevel.split(","):
            name, _, level = pair.partition(":")
            server.logLevels.set(name, level)
    if opts.logPath:
        out = open(opts.logPath, "a")
    else:
        out = sys.stderr
    root = _TwistdRoot(server, makeObserver(out, server.logLevels))
    if opts.mode == "init_only":
        server.initializedHook = lambda: reactor.callLater(0, reactor.stop)
    return root


__all__ = ["Options", "makeService", "usage"]
