# -*- test-case-name: tests.server.test_tap -*-
"""
The C{twistd envoy} entry point (Envoy's C{main()} / C{MainCommon}).

This is the one module of txenvoy that uses the global reactor: twistd owns
it and hands it to the server as the main dispatcher's reactor.
"""

import importlib
import os
import resource
import sys

from twisted.application.service import MultiService
from twisted.logger import ILogObserver, Logger
from twisted.python import usage

from txenvoy.config.errors import ConfigError, collectErrors, describe
from txenvoy.privates import forgetExitSignal
from txenvoy.server.logformat import compileLogFormat
from txenvoy.server.options import DEFAULT_LOG_FORMAT
from txenvoy.server.options import Options  # noqa: F401  (twistd reads tap.Options)
from txenvoy.server.signals import SignalHandlers

log = Logger(namespace="main")

#: Where logs go in daemon mode without C{--log-path} or twistd's
#: C{--logfile}: where a Twisted user looks first.
DAEMON_LOG_FILE = "twistd.log"


class StartError(Exception):
    """
    Start-up failed in daemon mode: raised (not C{SystemExit}) so that
    twistd's daemon hand-shake reports it to the launching terminal.
    """


def _fail(message):
    """Print one clear line for the user and exit 1, as Envoy does."""
    sys.stderr.write(message.rstrip("\n") + "\n")
    sys.stderr.flush()
    sys.exit(1)


class _TwistdRoot(MultiService):
    """
    The service twistd runs: the server plus what only a process entry
    point does (log observer, signals, fatal start-up errors).

    @ivar logPath: the application log file (reopened on SIGUSR1), or
        C{None} for a stream that is not ours to reopen.
    """

    def __init__(self, server, observer, logPath=None, daemon=False):
        MultiService.__init__(self)
        self.server = server
        self._observer = observer
        self.logPath = logPath
        self.daemon = daemon
        self._privilegedStarted = False
        self.signals = SignalHandlers(server.reactor, server, self._reopenLogs)
        server.setServiceParent(self)

    def setObserver(self, observer):
        """The application log observer twistd is to use."""
        self._observer = observer

    def setServiceParent(self, parent):
        # twistd asks the application for its log observer after makeService.
        if self._observer is not None:
            parent.setComponent(ILogObserver, self._observer)
        MultiService.setServiceParent(self, parent)

    def privilegedStartEarly(self):
        """
        Daemon mode: bind the listeners and the admin now, in the launching
        process, so that a port in use is reported in full on the user's
        terminal before twistd daemonizes (the sockets survive the fork;
        twistd's own report is cut at 100 bytes).
        """
        try:
            self._privilegedStart()
        except StartError as e:
            _fail(str(e))
        self._privilegedStarted = True

    def privilegedStartService(self):
        if self._privilegedStarted:
            return
        try:
            self._privilegedStart()
        except StartError as e:
            if self.daemon:
                log.critical("{message}", message=str(e))
                raise
            _fail(str(e))

    def _privilegedStart(self):
        from txenvoy.server.hot_restart_rpc import HotRestartError
        from txenvoy.server.worker import BindError

        try:
            MultiService.privilegedStartService(self)
        except HotRestartError as e:
            raise StartError("error: hot restart: %s" % (e,))
        except (BindError, ConfigError) as e:
            raise StartError(
                "error initializing config '%s': %s" % (self.server.options.configPath, e))

    def startService(self):
        # twistd calls this before reactor.run(), which installs the
        # reactor's own SIGINT/SIGTERM handlers; ours replace them after.
        self.server.reactor.callWhenRunning(self.signals.install)
        # Envoy's last lines.
        self.server.reactor.addSystemEventTrigger("after", "shutdown", _logExit)
        MultiService.startService(self)
        path = self.server.options.adminAddressPath
        if path and self.server.admin is not None:
            writeAdminAddress(path, self.server.admin)

    def stopService(self):
        # Envoy exits 0 after SIGTERM or SIGINT; twistd would re-raise the
        # signal after the reactor stops (exit status 143), so forget it.
        forgetExitSignal(self.server.reactor)
        return MultiService.stopService(self)

    def _reopenLogs(self):
        self.server.accessLogManager.reopen()
        if self.logPath and self._observer is not None:
            from txenvoy.server.logging import openLogOutput

            try:
                out = openLogOutput(self.logPath)
            except OSError as e:
                log.error("cannot reopen log file {path}: {error}", path=self.logPath,
                          error=e.strerror)
                return
            old = self._observer.setOutput(out)
            if old is not None and old not in (sys.stderr, sys.stdout):
                old.close()


def _logExit():
    log.info("main dispatch loop exited")
    log.info("exiting")


def removeStalePidfile(path):
    """
    Remove a pidfile whose process is gone, saying so once at warning
    level, before twistd's own check (which logs it twice, as critical).
    A live or unreadable pidfile is left for twistd to refuse.
    """
    if not path:
        return
    try:
        with open(path) as f:
            pid = int(f.read())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        try:
            os.remove(path)
        except OSError:
            return
        log.warn("removed stale pidfile {path} (process {pid} is not running)",
                 path=path, pid=pid)
    except OSError:
        pass


def warnUnknownFields(server, unknownFields):
    """
    C{--allow-unknown-static-fields}: each unknown field is a warning, and
    C{server.static_unknown_fields} counts the documents that had any, as
    Envoy counts them.
    """
    configLog = Logger(namespace="config")
    for document in unknownFields:
        server.mainStats.counter("server.static_unknown_fields").inc()
        for warning in document:
            configLog.warn("{warning}", warning=warning)
            if server.options.mode == "validate":
                # Before logging starts: say it where validate speaks.
                sys.stderr.write(warning + "\n")


def writeAdminAddress(path, admin):
    """C{--admin-address-path}: the admin's C{ip:port}, no newline, as Envoy writes it."""
    try:
        with open(path, "w") as f:
            if getattr(admin, "pipe", None) is not None:
                f.write(admin.pipe.path)
            else:
                f.write("%s:%d" % (admin.host, admin.port))
    except OSError as e:
        log.critical("cannot write the admin address to {path}: {error}", path=path,
                     error=e.strerror)


def importModules(names):
    """
    C{--import}: import each module, so that the extensions it registers
    are known before the config is read.
    """
    # As "python -m" and twistd's .tac files do: the working directory's
    # modules are importable.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as e:
            _fail("error: --import %s failed: %s: %s" % (name, type(e).__name__, e))


def enableCoreDump():
    """C{--enable-core-dump}: allow core files up to the hard limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))


def startHotRestart(server, opts):
    """
    Bind this epoch's hot restart sockets (after the config was read, so a
    bad config never disturbs the running epoch); exit 1 when the base id
    is taken.
    """
    from txenvoy.server.hot_restart import HotRestart
    from txenvoy.server.hot_restart_rpc import HotRestartError

    try:
        restart = HotRestart.create(opts.baseId, opts.restartEpoch, opts.useDynamicBaseId,
                                    opts.baseIdPath)
    except HotRestartError as e:
        _fail("error: %s" % (e,))
    opts.baseId = restart.baseId
    server.useHotRestart(restart)
    log.info("initializing epoch {epoch} (base id={baseId}, hot restart version={version})",
             epoch=restart.epoch, baseId=restart.baseId, version=restart.version)


def _logDestination(opts, twistdConfig):
    """
    Where the application log goes: C{--log-path}; else twistd's
    C{--logfile}; else stderr in the foreground and C{twistd.log} in
    daemon mode (whose stderr is /dev/null).

    @return: a path, or C{None} for stderr.
    """
    logfile = (twistdConfig or {}).get("logfile")
    if opts.logPath:
        if logfile and os.path.abspath(logfile) != os.path.abspath(opts.logPath):
            _fail("error: both twistd's --logfile (%s) and --log-path (%s) are given: "
                  "use --log-path alone" % (logfile, opts.logPath))
        return opts.logPath
    if logfile:
        return None if logfile == "-" else logfile
    if twistdConfig is not None and not twistdConfig.get("nodaemon"):
        return DAEMON_LOG_FILE
    return None


def makeService(options):
    """
    Build the server from the command line; in C{validate} mode check the
    config and exit without binding anything.
    """
    from twisted.internet import reactor  # entry point

    from txenvoy.config.loader import loadBootstrap
    from txenvoy.server.logging import makeObserver, openLogOutput
    from txenvoy.server.server import Server

    opts = options.serverOptions()
    twistdConfig = getattr(options, "parent", None)
    daemon = twistdConfig is not None and not twistdConfig.get("nodaemon")
    importModules(opts.imports)
    unknownFields = [] if opts.allowUnknownStaticFields else None
    try:
        # Every error in the config at once, not one a run.
        with collectErrors():
            bootstrap = loadBootstrap(opts.configPath or None, opts.configYaml or None,
                                      opts.serviceNode, opts.serviceCluster, unknownFields,
                                      opts.serviceZone)
            server = Server(reactor, bootstrap, opts, validateOnly=(opts.mode == "validate"))
    except ConfigError as e:
        _fail("error initializing configuration '%s': %s" % (opts.configPath, describe(e)))
    warnUnknownFields(server, unknownFields or [])
    if opts.mode == "validate":
        sys.stdout.write("configuration '%s' OK\n" % (opts.configPath,))
        sys.stdout.flush()
        sys.exit(0)
    if opts.hotRestart:
        startHotRestart(server, opts)
    server.logLevels.setAll(opts.logLevel)
    if opts.componentLogLevel:
        for pair in opts.componentLogLevel.split(","):
            name, _, level = pair.partition(":")
            server.logLevels.set(name, level)
    server.logLevels.bindLoggers()
    if opts.enableCoreDump:
        enableCoreDump()
    logPath = _logDestination(opts, twistdConfig)
    if logPath:
        # Reopened on SIGUSR1 after twistd's --rundir chdir: the same file.
        logPath = os.path.abspath(logPath)
    # Worker processes log where this process does (twistd.log when daemonized).
    server.logDestination = logPath or ""
    root = _TwistdRoot(server, None, logPath, daemon=daemon)
    if daemon:
        root.privilegedStartEarly()
    try:
        out = openLogOutput(logPath)
    except OSError as e:
        _fail("error: cannot open log file %s: %s" % (logPath, e.strerror))
    render = None
    if opts.logFormat != DEFAULT_LOG_FORMAT or opts.logFormatEscaped:
        render = compileLogFormat(opts.logFormat, opts.logFormatEscaped)
    root.setObserver(makeObserver(out, server.logLevels, render))
    if opts.mode == "init_only":
        server.initializedHook = lambda: reactor.callLater(0, reactor.stop)
    return root


__all__ = ["Options", "makeService", "usage"]
