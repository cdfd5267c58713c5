# -*- test-case-name: tests.e2e.test_script -*-
"""
The C{txenvoy} command (and C{python -m txenvoy}): the proxy in the
foreground, with no pidfile and C{twistd envoy}'s flags::

    txenvoy -c envoy.yaml

It runs the same service C{twistd -n --pidfile= envoy} runs; use twistd
for daemon mode, C{--uid}, another reactor and the like. Like
L{txenvoy.server.tap}, an entry point: it owns the global reactor.
"""

import sys

from twisted.application.service import Application, IService
from twisted.logger import ILogObserver, globalLogBeginner

from txenvoy.server import tap
from txenvoy.server.options import Options


class ScriptOptions(Options):
    synopsis = "Usage: txenvoy [options]"
    commandName = "txenvoy"


def main(argv=None):
    """
    Run the proxy until a signal stops it.

    @param argv: the arguments (default: C{sys.argv[1:]}).
    @return: the exit status (0 after SIGTERM or SIGINT, as Envoy).
    """
    options = ScriptOptions()
    options.parseOptions(sys.argv[1:] if argv is None else argv)
    root = tap.makeService(options)
    from twisted.internet import reactor  # entry point

    application = Application("txenvoy")
    root.setServiceParent(application)
    globalLogBeginner.beginLoggingTo([application.getComponent(ILogObserver)],
                                     redirectStandardIO=False)
    service = IService(application)
    service.privilegedStartService()
    service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()
    return 0


def run():
    """The console script."""
    sys.exit(main())


def runWorkerProcess():
    """
    A worker process's entry point (what
    L{txenvoy.server.worker_processes.WORKER_PROCESS_CODE} runs):
    the epoll reactor (L{txenvoy.privates.EPollReactor}), then
    L{txenvoy.server.worker_process.main} on it.
    """
    from twisted.internet.main import installReactor

    from txenvoy.privates import EPollReactor

    installReactor(EPollReactor())
    from twisted.internet import reactor  # entry point

    from txenvoy.server.worker_process import main as workerMain

    workerMain(reactor)
