"""
Fuzz target: the bootstrap loader (L{txenvoy.config.loader}) and the build
of every object from the config, as C{twistd envoy --mode validate
--config-yaml TEXT} does.

The input is the YAML text (bytes decoded as the command line's are, UTF-8
with C{surrogateescape}). It goes through L{loadBootstrap}, and a bootstrap
that loads is built into a L{Server} with C{validateOnly} on a
C{MemoryReactorClock} (with C{--concurrency 0}, so that no worker reactor
is made per input; the objects built from the config are the same).

Accepted: a server is built. A proper rejection is a L{ConfigError}: the
entry point prints its message on one line and exits 1. Anything else is a
crash: an exception other than L{ConfigError} (twistd would print a
traceback), or a L{ConfigError} made by the loader's last-resort
C{except Exception} ("invalid config: TypeError: ..."), which means the
code raised something it did not mean to and the user gets a Python
exception's name instead of a message naming the field.
"""

from twisted.internet.testing import MemoryReactorClock

from tests.fuzz.support import FuzzFailure
from txenvoy.config.errors import ConfigError
from txenvoy.config.loader import loadBootstrap
from txenvoy.server.options import ServerOptions
from txenvoy.server.server import Server

#: How the loader's last-resort handler starts its message.
LAST_RESORT = "invalid config: "


def testOneInput(data):
    """Load C{data} as C{--config-yaml} and build a server from it."""
    text = data.decode("utf-8", "surrogateescape")
    try:
        bootstrap = loadBootstrap(configYaml=text)
    except ConfigError as e:
        if str(e).startswith(LAST_RESORT):
            raise FuzzFailure("an internal error dressed as a config error: %s" % (e,))
        return
    options = ServerOptions(configYaml=text, mode="validate", concurrency=0)
    try:
        Server(MemoryReactorClock(), bootstrap, options, validateOnly=True)
    except ConfigError:
        return
